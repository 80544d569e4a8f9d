// Masked mean pooling backward: dx[b, t, j] = dy[b, j] / n_b for t < n_b,
// else 0, where n_b = min(len[b], seq) (a sequence of length 0 gets zeros).
// One invocation per element of dx.

struct Params {
    batch: u32,
    seq: u32,
    h: u32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> lens: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;

@compute @workgroup_size(256)
fn mean_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.batch * P.seq * P.h) {
        return;
    }
    let row = i / P.h;
    let j = i - row * P.h;
    let b = row / P.seq;
    let t = row - b * P.seq;
    let n = min(lens[b], P.seq);
    var g = 0.0;
    if (t < n) {
        g = dy[b * P.h + j] / f32(n);
    }
    dx[i] = T(g);
}
