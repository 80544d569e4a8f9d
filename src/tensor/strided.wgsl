// Strided copy: gathers a view (up to 4 dims, innermost last, element
// strides) into a new contiguous tensor. Works on 32-bit words, so one
// kernel serves every dtype; with HALF each output word packs two 16-bit
// elements read from their halfwords. With SCATTER (32-bit elements only)
// it runs the other way: a contiguous tensor into a view, each element to
// its place (`src` is then the contiguous tensor, `dst` the view's window).

struct Params {
    /// Output elements.
    n: u32,
    /// The view's first element, counted from its binding's start.
    src_off: u32,
    _p0: u32,
    _p1: u32,
    shape: vec4<u32>,
    strides: vec4<u32>,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// Where contiguous element i lives in the view.
fn source_of(i: u32) -> u32 {
    var r = i;
    var at = P.src_off;
    for (var d = 3; d >= 0; d--) {
        let c = r % P.shape[d];
        r = r / P.shape[d];
        at += c * P.strides[d];
    }
    return at;
}

//#if HALF
fn element(i: u32) -> u32 {
    if (i >= P.n) {
        return 0u;
    }
    let e = source_of(i);
    return (src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
}
//#endif

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 256u;
//#if HALF
    if (w >= (P.n + 1u) / 2u) {
        return;
    }
    dst[w] = element(2u * w) | (element(2u * w + 1u) << 16u);
//#else
    if (w >= P.n) {
        return;
    }
//#if SCATTER
    dst[source_of(w)] = src[w];
//#else
    dst[w] = src[source_of(w)];
//#endif
//#endif
}
