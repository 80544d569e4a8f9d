// Masked mean pooling: out[b, j] = mean of x[b, t, j] over the sequence's
// first len[b] tokens (the others are padding); a sequence of length 0 pools
// to zeros. One invocation per output element, summing in f32.

struct Params {
    batch: u32,
    seq: u32,
    h: u32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> lens: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn mean_pool(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= P.batch * P.h) {
        return;
    }
    let b = i / P.h;
    let j = i - b * P.h;
    let n = min(lens[b], P.seq);
    var s = 0.0;
    for (var t = 0u; t < n; t++) {
        s += f32(x[(b * P.seq + t) * P.h + j]);
    }
    out[i] = select(0.0, s / f32(n), n > 0u);
}
