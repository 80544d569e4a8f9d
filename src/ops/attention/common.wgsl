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
// Q/K and V/O), BQ, BKV, SK; MASKS declares the aux table (kv_len, block
// table, per-head slopes and sinks), the bias and the mask functions. EXT
// turns on the inference options (window, sink tokens, ALiBi, learned sinks;
// SOFTCAP the soft cap), BOOL_MASK a bit-packed boolean mask, PAGED K/V read through a block
// table: each kernel calls the same functions whatever is on, and with an
// option off its function folds to the plain case.

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
    // EXT: window left / right (−1: unbounded), sink tokens (the first keys,
    // visible whatever the left window), softcap (0: off).
    win_l: i32, win_r: i32, sink_tok: u32, softcap: f32,
    // flags: 1 ALiBi, 2 learned sinks. aux offsets of the block table and of
    // the per-head table (ALiBi slopes, then sink logits, as f32 bits).
    flags: u32, tab_off: u32, head_off: u32, max_pages: u32,
    // PAGED: tokens per page, pages in the pool. BOOL_MASK: word strides
    // (batch, head, row; 0 where broadcast).
    page: u32, npages: u32, mask_sb: u32, mask_sh: u32,
    // page_shift: log2 of a power-of-two page size, else 32.
    mask_ss: u32, page_shift: u32, _p6: u32, _p7: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

// Initial running max: finite, so a fully masked chunk never computes inf - inf.
const NEG: f32 = -1.0e30;
// Score of a masked key where a kernel keeps scores rather than flags.
const MASKED: f32 = -3.0e38;

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
// aux: kv_len[b] at 0, the block table at tab_off, the per-head table at
// head_off.
@group(0) @binding(5) var<storage, read> aux: array<u32>;
//#if BIAS
@group(0) @binding(6) var<storage, read> bias: array<f32>;
//#endif
//#if BOOL_MASK
@group(0) @binding(11) var<storage, read> maskw: array<u32>;
//#endif

// Keys of sequence b (its kv_len, at most seq_k).
fn kv_end(b: u32) -> u32 {
    return min(P.sk, aux[b]);
}

// The diagonal of sequence b: query row i's own key is i + diag(b). Causal 1
// is top-left (offset causal_off); otherwise bottom-right aligned to the
// sequence's own key count, so that in a cache padded to capacity the last
// query is key kv_len[b] - 1, not key seq_k - 1 (windows and ALiBi align to
// it without a causal mask too, as FlashAttention does).
fn diag(b: u32) -> i32 {
    if (P.causal == 1u) {
        return P.causal_off;
    }
    return i32(kv_end(b)) - i32(P.sq);
}

// Exclusive end of the keys query `row` of batch `b` may see: kv_len, the
// causal mask and the right window.
fn key_end(b: u32, row: u32) -> u32 {
    let kvend = kv_end(b);
    let dg = i32(row) + diag(b);
    var e = i32(kvend);
    if (P.causal != 0u) {
        e = min(e, dg + 1);
    }
//#if EXT
    if (P.win_r >= 0) {
        e = min(e, dg + P.win_r + 1);
    }
//#endif
    return u32(clamp(e, 0, i32(kvend)));
}

// First key of the left window of query `row` (0 without one). Starts and
// ends grow with the row, so a block's first row bounds its start and its
// last row its end.
fn key_start(b: u32, row: u32) -> u32 {
//#if EXT
    if (P.win_l >= 0) {
        return u32(clamp(i32(row) + diag(b) - P.win_l, 0, i32(kv_end(b))));
    }
//#endif
    return 0u;
}

// The key (or tile start) a walk goes on from at t: the keys between the sink
// tokens and a window's start are jumped over, never loaded.
fn skip_gap(t: u32, start: u32) -> u32 {
//#if EXT
    if (t >= P.sink_tok && t < start) {
        return start;
    }
//#endif
    return t;
}

// Whether query `row` (head h) sees key j, given its key_start `rs` and
// key_end `re`.
fn visible(b: u32, h: u32, row: u32, j: u32, rs: u32, re: u32) -> bool {
    var ok = j < re;
//#if EXT
    ok = ok && (j >= rs || j < P.sink_tok);
//#endif
//#if BOOL_MASK
    if (ok) {
        let w = maskw[b * P.mask_sb + h * P.mask_sh + row * P.mask_ss + (j >> 5u)];
        ok = ((w >> (j & 31u)) & 1u) != 0u;
    }
//#endif
    return ok;
}

// (ALiBi slope, diagonal) of head h of sequence b, for ext_score.
fn head_ext(b: u32, h: u32) -> vec2<f32> {
//#if EXT
    var slope = 0.0;
    if ((P.flags & 1u) != 0u) {
        slope = bitcast<f32>(aux[P.head_off + h]);
    }
    return vec2<f32>(slope, f32(diag(b)));
//#else
    return vec2<f32>(0.0);
//#endif
}

// A scaled score after the soft cap (cap·tanh(s / cap)) and ALiBi
// (−slope·|i + diag − j|), before the additive bias. The cap as
// cap − 2·cap / (1 + e^(2s/cap)): one exp and one division a score (the
// cost that matters), its absolute error cap·ε like the score's own
// rounding; the exponent is clamped so that e stays finite (a divisor
// past 2^126 has no precision bound in Vulkan). The clamp would turn a NaN
// score into the cap (min(NaN, 80) is 80 on most adapters), so a NaN score
// is selected through, found by its bits (an adapter may fold a float
// comparison that only NaN fails), and propagates as without a cap.
// The cap is compiled in (SOFTCAP) and ALiBi is arithmetic (slope 0 when
// off): a run-time branch per score would split the kernels' unrolled score
// blocks.
fn ext_score(hx: vec2<f32>, row: u32, j: u32, s: f32) -> f32 {
    return capped(s) - alibi(hx, row, j);
}

// The soft cap of a scaled score (the score itself without SOFTCAP).
fn capped(s: f32) -> f32 {
//#if SOFTCAP
    let e = exp(min(s * (2.0 / P.softcap), 80.0));
    let nan = (bitcast<u32>(s) & 0x7fffffffu) > 0x7f800000u;
    return select(P.softcap - 2.0 * P.softcap / (1.0 + e), s, nan);
//#else
    return s;
//#endif
}

// ALiBi's term −(slope·|i + diag − j|) taken off a score (0 without EXT).
fn alibi(hx: vec2<f32>, row: u32, j: u32) -> f32 {
//#if EXT
    return hx.x * abs(f32(row) + hx.y - f32(j));
//#else
    return 0.0;
//#endif
}

// (output factor, LSE) of a row with running max m and sum l: the output is
// acc · factor. A learned sink logit joins the denominator (and the LSE); a
// row that saw no key outputs zeros; a NaN sum (a NaN score) stays NaN.
fn fin(h: u32, m: f32, l: f32) -> vec2<f32> {
//#if EXT
    if ((P.flags & 2u) != 0u) {
        let sk = bitcast<f32>(aux[P.head_off + P.hq + h]);
        if (!(l <= 0.0)) {
            let mm = max(m, sk);
            let c = exp(m - mm);
            let ll = l * c + exp(sk - mm);
            return vec2<f32>(c / ll, mm + log(ll));
        }
        return vec2<f32>(0.0, sk);
    }
//#endif
    return vec2<f32>(select(0.0, 1.0 / l, !(l <= 0.0)),
                     select(bitcast<f32>(0xff800000u), m + log(l), !(l <= 0.0)));
}

// Where key j of sequence b lives: (outer index, position) of K and V, the
// batch and j, or with PAGED the block table's page and the offset in it
// (pages past the pool read its last one: reads stay in bounds).
fn kv_loc(b: u32, j: u32) -> vec2<u32> {
//#if PAGED
    // Pages of a power-of-two size divide by a shift: integer division is
    // a scalar loop per lane on CPU adapters.
    var q = 0u;
    var r = 0u;
    if (P.page_shift < 32u) {
        q = j >> P.page_shift;
        r = j & (P.page - 1u);
    } else {
        q = j / P.page;
        r = j % P.page;
    }
    let pg = aux[P.tab_off + b * P.max_pages + q];
    return vec2<u32>(min(pg, P.npages - 1u), r);
//#else
    return vec2<u32>(b, j);
//#endif
}

// kv_loc of key kc ≥ j0 given l0 = kv_loc(b, j0): without a table lookup
// while kc is on j0's page (a step of consecutive keys mostly is).
fn kv_loc_from(b: u32, j0: u32, l0: vec2<u32>, kc: u32) -> vec2<u32> {
//#if PAGED
    if (kc - j0 + l0.y < P.page) {
        return vec2<u32>(l0.x, l0.y + kc - j0);
    }
    return kv_loc(b, kc);
//#else
    return vec2<u32>(b, kc);
//#endif
}

// Element offsets of a key's K and V rows (kv head hk), and texel offsets of
// its K and V texels.
fn k_at(l: vec2<u32>, hk: u32) -> u32 { return l.x * P.k_sb + hk * P.k_sh + l.y * P.k_ss; }
fn v_at(l: vec2<u32>, hk: u32) -> u32 { return l.x * P.v_sb + hk * P.v_sh + l.y * P.v_ss; }
fn kt_at(l: vec2<u32>, hk: u32) -> u32 { return l.x * P.kt_sb + hk * P.kt_sh + l.y * P.kt_ss; }
fn vt_at(l: vec2<u32>, hk: u32) -> u32 { return l.x * P.vt_sb + hk * P.vt_sh + l.y * P.vt_ss; }
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

