// A row-major [rows, cols] matrix transposed into [cols, rows]: one
// invocation per output element (consecutive invocations write consecutive
// elements and read a column). The linear backward uses it where the matmul
// reads a transposed operand slowly (CPU adapters: the texel kernel takes A
// only as stored), so dW = dzᵀ · x runs on the fast kernel.

struct Params {
    rows: u32,
    cols: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(256)
fn transpose(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.rows * P.cols) {
        return;
    }
    // dst[c, r] = src[r, c]
    let c = i / P.rows;
    let r = i - c * P.rows;
    dst[i] = src[r * P.cols + c];
}
