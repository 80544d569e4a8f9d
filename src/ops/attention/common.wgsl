// Attention kernels' shared part: params, bindings, loads, masks, stores.
// Each kernel's file (flash, kv_texels, split_kv, naive) is appended to it.
//
// Scaled-dot-product attention, O = softmax(Q·Kᵀ·scale + bias + mask)·V, per
// batch and query head; kv head = h / group (GQA / MQA). Scores, running max,
// running sum and accumulators are f32 whatever T is.
//
// Tensors are addressed through (batch, head, seq) strides in elements, so both
// [B, H, S, D] and [B, S, H, D] layouts run the same code; the last dim is
// contiguous. Template parameters: KIND_* selects the kernel; VEC reads vec4s
// (d and dv multiples of 4); BIAS, LSE; consts D4 / DV4 (vec4s per row of
// Q/K and V/O), BQ, BKV, SK; MASKS declares kv_len, bias and key_end().

struct Params {
    b: u32, hq: u32, hkv: u32, sq: u32,
    sk: u32, d: u32, dv: u32, group: u32,
    q_sb: u32, q_sh: u32, q_ss: u32, _p0: u32,
    k_sb: u32, k_sh: u32, k_ss: u32, _p1: u32,
    v_sb: u32, v_sh: u32, v_ss: u32, _p2: u32,
    o_sb: u32, o_sh: u32, o_ss: u32, _p3: u32,
    // bias strides (0 where broadcast); its rows are seq_k long.
    bias_sb: u32, bias_sh: u32, causal: u32, causal_off: i32,
    // lsh: log2 of the lines per layer of the K/V textures.
    scale: f32, nsplit: u32, chunk: u32, lsh: u32,
    // K/V texture addressing: texel strides (batch, head, seq) and log2 of
    // the texels per line.
    kt_sb: u32, kt_sh: u32, kt_ss: u32, wsh: u32,
    vt_sb: u32, vt_sh: u32, vt_ss: u32, _p4: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

// Initial running max: finite, so a fully masked chunk never computes inf - inf.
const NEG: f32 = -1.0e30;

//#if HAS_INPUTS
//#if VEC
@group(0) @binding(1) var<storage, read> q: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<T>>;
fn ld_q(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(q[base / 4u + c]); }
fn ld_k(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(k[base / 4u + c]); }
fn ld_v(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(v[base / 4u + c]); }
//#else
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
// Elements past the row length read as 0, so padded vec4 lanes add nothing.
fn ld_q(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.d) { r[i] = f32(q[base + 4u * c + i]); }
    }
    return r;
}
fn ld_k(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.d) { r[i] = f32(k[base + 4u * c + i]); }
    }
    return r;
}
fn ld_v(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.dv) { r[i] = f32(v[base + 4u * c + i]); }
    }
    return r;
}
//#endif
//#endif

//#if MASKS
// Masking inputs shared by the fused kernels and the naive path's softmax.
@group(0) @binding(5) var<storage, read> kvlen: array<u32>;
//#if BIAS
@group(0) @binding(6) var<storage, read> bias: array<f32>;
//#endif

// Exclusive end of the keys query `row` of batch `b` may see. Causal 1 is
// top-left (offset causal_off, 0); causal 2 is bottom-right aligned to the
// sequence's own key count, so that in a cache padded to capacity the last
// query sees key kv_len[b] - 1, not key seq_k - 1.
fn key_end(b: u32, row: u32) -> u32 {
    let kvend = min(P.sk, kvlen[b]);
    if (P.causal == 0u) {
        return kvend;
    }
    var off = P.causal_off;
    if (P.causal == 2u) {
        off = i32(kvend) - i32(P.sq);
    }
    return u32(clamp(i32(row) + off + 1, 0, i32(kvend)));
}
//#endif

//#if OUT_DIRECT
//#if OUT_F16
@group(0) @binding(4) var<storage, read_write> o: array<f16>;
fn st_o(i: u32, x: f32) { o[i] = f16(x); }
//#else
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
fn st_o(i: u32, x: f32) { o[i] = x; }
//#endif
//#if LSE
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;
//#endif
fn st_row(base: u32, c: u32, x: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.dv) { st_o(base + 4u * c + i, x[i]); }
    }
}
//#endif

