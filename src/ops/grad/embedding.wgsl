// Embedding backward without atomics: the gradient of each table row is the
// sum of the dy rows of the tokens that read it. The host sorts the token
// positions by row (a stable counting sort: CSR offsets, then positions in
// increasing order), so one invocation per (table row, column) adds its
// rows in a fixed order: deterministic, and a row no token read is zero.

struct Params {
    /// Rows of the table's gradient and values per row.
    rows: u32,
    h: u32,
    /// Where this table's offsets (rows + 1) and positions start in `csr`.
    offsets: u32,
    positions: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> csr: array<u32>;
@group(0) @binding(2) var<storage, read> dy: array<T>;
@group(0) @binding(3) var<storage, read_write> grad: array<T>;

@compute @workgroup_size(64)
fn embedding_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= P.rows * P.h) {
        return;
    }
    let r = i / P.h;
    let j = i - r * P.h;
    let start = csr[P.offsets + r];
    let end = csr[P.offsets + r + 1u];
    var s = 0.0;
    for (var k = start; k < end; k++) {
        s += f32(dy[csr[P.positions + k] * P.h + j]);
    }
    grad[i] = T(s);
}
