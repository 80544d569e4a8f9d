// Column sums of a row-major [rows, cols] matrix, without atomics:
// dst[b, j] = sum of src[in_offset + r * cols + j] over the rows r of block b
// (rows b * block .. min(rows, (b + 1) * block)). One invocation per (block,
// column): neighbouring invocations read neighbouring columns. With
// block = rows this is the whole sum in one pass; with a smaller block it
// writes f32 partial sums [blocks, cols] that a second dispatch (block =
// blocks) adds up. Every sum runs in a fixed order, so the result does not
// depend on scheduling. Accumulates in f32; zero rows sum to zeros.

//#if IN_F16
alias IN = f16;
//#else
alias IN = f32;
//#endif
//#if OUT_F16
alias OUT = f16;
//#else
alias OUT = f32;
//#endif

struct Params {
    rows: u32,
    cols: u32,
    /// Rows per block (at least 1).
    block: u32,
    /// Element offset of the matrix in `src`.
    in_offset: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<IN>;
@group(0) @binding(2) var<storage, read_write> dst: array<OUT>;

@compute @workgroup_size(64)
fn column_sum(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let blocks = max((P.rows + P.block - 1u) / P.block, 1u);
    if (i >= blocks * P.cols) {
        return;
    }
    let b = i / P.cols;
    let j = i - b * P.cols;
    let r0 = b * P.block;
    let r1 = min(P.rows, r0 + P.block);
    var s = 0.0;
    for (var r = r0; r < r1; r++) {
        s += f32(src[P.in_offset + r * P.cols + j]);
    }
    dst[i] = OUT(s);
}
