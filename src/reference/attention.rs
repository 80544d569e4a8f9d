//! CPU reference for attention (f64 scores, softmax and accumulation).

use crate::ops::attention::{Causal, Layout};

/// Inputs of [`attention`]; tensors as flat f32 slices in `layout`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionRef<'a> {
    /// `[b, hq, sq, d]` (or `[b, sq, hq, d]`).
    pub q: &'a [f32],
    /// `[b, hkv, sk, d]`.
    pub k: &'a [f32],
    /// `[b, hkv, sk, dv]`.
    pub v: &'a [f32],
    /// batch, heads_q, heads_kv, seq_q, seq_k, d, d_v.
    pub dims: [usize; 7],
    /// Layout of q, k, v and the output.
    pub layout: Layout,
    /// Causal convention.
    pub causal: Causal,
    /// Scale (`None`: 1/√d).
    pub scale: Option<f32>,
    /// Per-batch key lengths.
    pub kv_len: Option<&'a [u32]>,
    /// Bias values and its shape `[b|1, hq|1, sq, sk]`.
    pub bias: Option<(&'a [f32], [usize; 4])>,
    /// Window (left, right) around the diagonal; `None` unbounded.
    pub window: (Option<usize>, Option<usize>),
    /// Sink tokens: the first keys, visible whatever the left window.
    pub sink_tokens: usize,
    /// Soft cap of the scaled scores.
    pub softcap: Option<f32>,
    /// ALiBi slopes `[hq]`.
    pub alibi: Option<&'a [f32]>,
    /// Learned sink logits `[hq]`.
    pub sinks: Option<&'a [f32]>,
    /// Boolean mask (true = attend) and its shape `[b|1, hq|1, sq, sk]`.
    pub mask: Option<(&'a [bool], [usize; 4])>,
}

/// Returns (output in `layout`, lse `[b, hq, sq]`). Fully masked rows give zeros
/// and an LSE of −∞ (the sink logit with sinks); a row with a NaN score
/// (`f64::max` would skip it) gives NaN throughout. Written from the definition,
/// key by key: visibility (kv_len, causal, window, sink tokens, mask), then the
/// score (scale, soft cap, ALiBi, bias), then the softmax with the sink in the
/// denominator.
pub fn attention(a: &AttentionRef) -> (Vec<f64>, Vec<f64>) {
    let [b, hq, hkv, sq, sk, d, dv] = a.dims;
    let g = hq / hkv.max(1);
    let scale = a.scale.map_or(1.0 / (d as f64).sqrt(), |s| s as f64);
    let idx = |bb: usize, h: usize, heads: usize, s: usize, seq: usize, dim: usize| match a.layout {
        Layout::Bhsd => ((bb * heads + h) * seq + s) * dim,
        Layout::Bshd => ((bb * seq + s) * heads + h) * dim,
    };
    let mut out = vec![0.0f64; b * hq * sq * dv];
    let mut lse = vec![f64::NEG_INFINITY; b * hq * sq];
    let mut scores = vec![0.0f64; sk];
    let bcast = |shape: [usize; 4], bb: usize, h: usize, i: usize, j: usize| {
        let bi =
            (if shape[0] == 1 { 0 } else { bb }) * shape[1] + if shape[1] == 1 { 0 } else { h };
        (bi * sq + i) * sk + j
    };
    for bb in 0..b {
        let kvend = a.kv_len.map_or(sk, |l| (l[bb] as usize).min(sk));
        // The diagonal: key i + diag is query i's own. Aligned to this
        // sequence's keys except under TopLeft: with kv_len, its last query
        // is key kv_len[b] − 1 (FlashAttention's convention for a padded KV
        // cache).
        let diag = match a.causal {
            Causal::TopLeft => 0,
            _ => kvend as i64 - sq as i64,
        };
        for h in 0..hq {
            let hk = h / g;
            for i in 0..sq {
                let dg = i as i64 + diag;
                let visible = |j: usize| {
                    let jj = j as i64;
                    j < kvend
                        && (a.causal == Causal::None || jj <= dg)
                        && a.window.1.is_none_or(|r| jj <= dg + r as i64)
                        && (a.window.0.is_none_or(|l| jj >= dg - l as i64) || j < a.sink_tokens)
                        && a.mask.is_none_or(|(m, ms)| m[bcast(ms, bb, h, i, j)])
                };
                let qo = idx(bb, h, hq, i, sq, d);
                let mut mx = f64::NEG_INFINITY;
                let mut seen = false;
                let mut nan = false;
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = f64::NEG_INFINITY;
                    if !visible(j) {
                        continue;
                    }
                    seen = true;
                    let ko = idx(bb, hk, hkv, j, sk, d);
                    let mut acc = 0.0;
                    for t in 0..d {
                        acc += a.q[qo + t] as f64 * a.k[ko + t] as f64;
                    }
                    acc *= scale;
                    if let Some(cap) = a.softcap {
                        acc = cap as f64 * (acc / cap as f64).tanh();
                    }
                    if let Some(sl) = a.alibi {
                        acc -= sl[h] as f64 * (dg - j as i64).abs() as f64;
                    }
                    if let Some((bias, bs)) = a.bias {
                        acc += bias[bcast(bs, bb, h, i, j)] as f64;
                    }
                    *s = acc;
                    nan |= acc.is_nan();
                    mx = mx.max(acc);
                }
                let sink = a.sinks.map(|s| s[h] as f64);
                if nan {
                    // A NaN score (a NaN in q, or in a visible key) makes
                    // the row's softmax NaN, with or without a soft cap.
                    let oo = idx(bb, h, hq, i, sq, dv);
                    out[oo..oo + dv].fill(f64::NAN);
                    lse[(bb * hq + h) * sq + i] = f64::NAN;
                    continue;
                }
                if !seen || mx == f64::NEG_INFINITY {
                    lse[(bb * hq + h) * sq + i] = sink.unwrap_or(f64::NEG_INFINITY);
                    continue;
                }
                let mx = sink.map_or(mx, |s| mx.max(s));
                let sum: f64 = scores.iter().map(|s| (s - mx).exp()).sum::<f64>()
                    + sink.map_or(0.0, |s| (s - mx).exp());
                lse[(bb * hq + h) * sq + i] = mx + sum.ln();
                let oo = idx(bb, h, hq, i, sq, dv);
                for (j, s) in scores.iter().enumerate() {
                    if *s == f64::NEG_INFINITY {
                        continue;
                    }
                    let p = (s - mx).exp() / sum;
                    let vo = idx(bb, hk, hkv, j, sk, dv);
                    for t in 0..dv {
                        out[oo + t] += p * a.v[vo + t] as f64;
                    }
                }
            }
        }
    }
    (out, lse)
}
