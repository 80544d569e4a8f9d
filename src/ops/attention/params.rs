//! The uniform params and the aux table of a call: strides, masks, the
//! inference options' values, and the per-sequence and per-head tables.

use super::check::Dims;
use super::options::{AttentionOptions, Causal, Layout};
use super::spec::AttentionParams;

/// The uniform params of a call (texture addressing is set by
/// [`KvTextures::set_params`](super::kv_texels::KvTextures::set_params),
/// split counts by the split-KV launcher).
pub(crate) fn params(dims: &Dims, opts: &AttentionOptions) -> AttentionParams {
    let l = opts.layout;
    let (bias_sb, bias_sh) = match opts.bias {
        Some(bias) => {
            let s = bias.shape();
            let sh = if s[1] == 1 { 0 } else { dims.sq * dims.sk };
            let sb = if s[0] == 1 {
                0
            } else {
                s[1] * dims.sq * dims.sk
            };
            (sb as u32, sh as u32)
        }
        None => (0, 0),
    };
    let (causal, off) = match opts.causal {
        Causal::None => (0u32, 0i64),
        Causal::TopLeft => (1, 0),
        // The offset is the sequence's key count minus seq_q, taken in the
        // kernel from kv_len[b] (seq_k without kv_len).
        Causal::BottomRight => (2, 0),
    };
    let strides = |heads, seq, dim| strides(l, heads, seq, dim);
    let [q_sb, q_sh, q_ss] = strides(dims.hq, dims.sq, dims.d);
    let [k_sb, k_sh, k_ss] = strides(dims.hkv, dims.kv_rows, dims.d);
    let [v_sb, v_sh, v_ss] = strides(dims.hkv, dims.kv_rows, dims.dv);
    let (mask_sb, mask_sh, mask_ss) = match opts.mask {
        Some(m) => {
            let s = m.shape();
            let wpr = dims.sk.div_ceil(32);
            let sh = if s[1] == 1 { 0 } else { dims.sq * wpr };
            let sb = if s[0] == 1 { 0 } else { s[1] * dims.sq * wpr };
            (sb as u32, sh as u32, wpr as u32)
        }
        None => (0, 0, 0),
    };
    let win = |w: Option<usize>| w.map_or(-1, |w| w as i32);
    let [o_sb, o_sh, o_ss] = strides(dims.hq, dims.sq, dims.dv);
    AttentionParams {
        b: dims.b as u32,
        hq: dims.hq as u32,
        hkv: dims.hkv as u32,
        sq: dims.sq as u32,
        sk: dims.sk as u32,
        d: dims.d as u32,
        dv: dims.dv as u32,
        group: (dims.hq / dims.hkv.max(1)) as u32,
        q_sb,
        q_sh,
        q_ss,
        k_sb,
        k_sh,
        k_ss,
        v_sb,
        v_sh,
        v_ss,
        o_sb,
        o_sh,
        o_ss,
        bias_sb,
        bias_sh,
        causal,
        causal_off: off.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        scale: opts.scale.unwrap_or(1.0 / (dims.d as f32).sqrt()),
        win_l: win(opts.window.left),
        win_r: win(opts.window.right),
        sink_tok: opts.sink_tokens as u32,
        softcap: opts.softcap.unwrap_or(0.0),
        max_pages: opts.paged.map_or(0, |pk| pk.max_pages as u32),
        page: dims.kv_rows as u32,
        page_shift: page_shift(dims.kv_rows),
        npages: dims.kv_outer as u32,
        mask_sb,
        mask_sh,
        mask_ss,
        ..Default::default()
    }
}

/// Element strides (batch, head, seq) of a `[batch, heads, seq, dim]`
/// tensor (or `[batch, seq, heads, dim]`) in `layout`.
pub(crate) fn strides(layout: Layout, heads: usize, seq: usize, dim: usize) -> [u32; 3] {
    let s = match layout {
        Layout::Bhsd => [heads * seq * dim, seq * dim, dim],
        Layout::Bshd => [seq * heads * dim, dim, heads * dim],
    };
    s.map(|x| x as u32)
}

/// log2 of a power-of-two page size, else 32 (the kernels divide then).
pub(crate) fn page_shift(page: usize) -> u32 {
    if page.is_power_of_two() {
        page.trailing_zeros()
    } else {
        32
    }
}

/// The kernels' aux table (kv_len, block table, ALiBi slopes, sink logits),
/// with its offsets and flags set in `p`.
pub(crate) fn aux_table(dims: &Dims, opts: &AttentionOptions, p: &mut AttentionParams) -> Vec<u32> {
    let mut aux = match opts.kv_len {
        Some(l) => l.to_vec(),
        None => vec![dims.sk as u32; dims.b],
    };
    p.tab_off = aux.len() as u32;
    if let Some(pk) = opts.paged {
        aux.extend_from_slice(pk.block_table);
    }
    p.head_off = aux.len() as u32;
    let zeros = vec![0.0f32; dims.hq];
    if opts.alibi_slopes.is_some() {
        p.flags |= 1;
    }
    if opts.sinks.is_some() {
        p.flags |= 2;
    }
    for xs in [opts.alibi_slopes, opts.sinks] {
        aux.extend(xs.unwrap_or(&zeros).iter().map(|x| x.to_bits()));
    }
    aux
}
