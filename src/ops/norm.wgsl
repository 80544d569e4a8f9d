// Layer norm over rows of h values, with an optional fused residual add:
// y = (z - mean(z)) / sqrt(var(z) + eps) * gamma + beta, z = x (+ residual).
// Mean first, then the variance of z - mean (two passes: no cancellation in
// E[z²] - E[z]²); accumulates in f32. Two schedules: a workgroup per row
// (each invocation sums a strided slice, a tree in workgroup memory reduces:
// GPUs), or an invocation per row (no barriers: CPU adapters, where a
// barrier switches among the workgroup's SIMD slices).
// x, res and z() are norm_z.wgsl's, concatenated before this file.

struct Params {
    rows: u32,
    h: u32,
    eps: f32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(3) var<storage, read> gamma: array<T>;
@group(0) @binding(4) var<storage, read> beta: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;

//#if ROWS
@compute @workgroup_size(64)
fn layer_norm_rows(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.h;
    var s = 0.0;
    for (var j = 0u; j < P.h; j++) {
        s += z(base + j);
    }
    let mean = s / f32(P.h);
    var v = 0.0;
    for (var j = 0u; j < P.h; j++) {
        let d = z(base + j) - mean;
        v += d * d;
    }
    let inv = inverseSqrt(v / f32(P.h) + P.eps);
    for (var j = 0u; j < P.h; j++) {
        y[base + j] = T((z(base + j) - mean) * inv * f32(gamma[j]) + f32(beta[j]));
    }
}
//#else
const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

// Sum of `v` over the workgroup (every invocation gets it).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (lid < off) {
            red[lid] += red[lid + off];
        }
        workgroupBarrier();
    }
    let s = red[0];
    workgroupBarrier();
    return s;
}

@compute @workgroup_size(64)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.h;
    var s = 0.0;
    for (var j = lid; j < P.h; j += WG) {
        s += z(base + j);
    }
    let mean = workgroup_sum(lid, s) / f32(P.h);
    var v = 0.0;
    for (var j = lid; j < P.h; j += WG) {
        let d = z(base + j) - mean;
        v += d * d;
    }
    let inv = inverseSqrt(workgroup_sum(lid, v) / f32(P.h) + P.eps);
    for (var j = lid; j < P.h; j += WG) {
        y[base + j] = T((z(base + j) - mean) * inv * f32(gamma[j]) + f32(beta[j]));
    }
}
//#endif
