// Layer-norm backward for the forward in ops/norm.wgsl: z = x (+ residual),
// y = x̂ · γ + β with x̂ = (z − mean) · rstd, rstd = 1 / √(var + eps). The
// forward saves nothing, so the mean and rstd are recomputed here as the
// forward computes them (the mean, then the variance of z − mean). With
// g = dy · γ:
//   dz = rstd · (g − mean(g) − x̂ · mean(g · x̂)),
//   dγ = Σ_rows dy · x̂,  dβ = Σ_rows dy.
// The row kernels write dz and each row's (mean, rstd); the partials kernel
// reads them back and sums dγ and dβ over a block of rows per column (no
// atomics), writing [2, blocks, h] f32 that a column-sum pass finishes.
// Σ g · (z − mean) is gathered in the variance pass (it needs no rstd), so a
// row is read three times. Accumulates in f32.
// x, res and z() are norm_z.wgsl's, concatenated before this file.

struct Params {
    rows: u32,
    h: u32,
    eps: f32,
    /// Rows per block of the partials kernel.
    block: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(4) var<storage, read> dy: array<T>;
//#if PARTIALS
@group(0) @binding(6) var<storage, read> stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> part: array<f32>;
//#else
@group(0) @binding(3) var<storage, read> gamma: array<T>;
@group(0) @binding(5) var<storage, read_write> dx: array<T>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
//#endif

//#if PARTIALS
@compute @workgroup_size(64)
fn layer_norm_backward_partials(@builtin(global_invocation_id) gid: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let blocks = max((P.rows + P.block - 1u) / P.block, 1u);
    if (i >= blocks * P.h) {
        return;
    }
    let b = i / P.h;
    let j = i - b * P.h;
    let r0 = b * P.block;
    let r1 = min(P.rows, r0 + P.block);
    var sg = 0.0;
    var sb = 0.0;
    for (var r = r0; r < r1; r++) {
        let d = f32(dy[r * P.h + j]);
        let xh = (z(r * P.h + j) - stats[2u * r]) * stats[2u * r + 1u];
        sg += d * xh;
        sb += d;
    }
    part[i] = sg;
    part[blocks * P.h + i] = sb;
}
//#else

fn dz(i: u32, j: u32, mean: f32, rstd: f32, c: vec2<f32>) -> T {
    let xh = (z(i) - mean) * rstd;
    let g = f32(dy[i]) * f32(gamma[j]);
    return T(rstd * (g - c.x - xh * c.y));
}

//#if ROWS
// An invocation per row, no barriers (CPU adapters).
@compute @workgroup_size(64)
fn layer_norm_backward_rows(@builtin(global_invocation_id) gid: vec3<u32>,
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
    var sums = vec3<f32>(0.0);
    for (var j = 0u; j < P.h; j++) {
        let d = z(base + j) - mean;
        let g = f32(dy[base + j]) * f32(gamma[j]);
        sums += vec3<f32>(d * d, g, g * d);
    }
    let n = f32(P.h);
    let rstd = inverseSqrt(sums.x / n + P.eps);
    // (mean(g), mean(g · x̂))
    let c = vec2<f32>(sums.y / n, sums.z * rstd / n);
    stats[2u * row] = mean;
    stats[2u * row + 1u] = rstd;
    for (var j = 0u; j < P.h; j++) {
        dx[base + j] = dz(base + j, j, mean, rstd, c);
    }
}
//#else
// A workgroup of 64 per row, reducing in workgroup memory (GPUs).
const WG: u32 = 64u;
var<workgroup> red: array<vec3<f32>, 64>;

// Sum of `v` over the workgroup (every invocation gets it).
fn workgroup_sum(lid: u32, v: vec3<f32>) -> vec3<f32> {
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
fn layer_norm_backward(@builtin(workgroup_id) wid: vec3<u32>,
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
    let mean = workgroup_sum(lid, vec3<f32>(s, 0.0, 0.0)).x / f32(P.h);
    var sums = vec3<f32>(0.0);
    for (var j = lid; j < P.h; j += WG) {
        let d = z(base + j) - mean;
        let g = f32(dy[base + j]) * f32(gamma[j]);
        sums += vec3<f32>(d * d, g, g * d);
    }
    sums = workgroup_sum(lid, sums);
    let n = f32(P.h);
    let rstd = inverseSqrt(sums.x / n + P.eps);
    let c = vec2<f32>(sums.y / n, sums.z * rstd / n);
    if (lid == 0u) {
        stats[2u * row] = mean;
        stats[2u * row + 1u] = rstd;
    }
    for (var j = lid; j < P.h; j += WG) {
        dx[base + j] = dz(base + j, j, mean, rstd, c);
    }
}
//#endif
//#endif
