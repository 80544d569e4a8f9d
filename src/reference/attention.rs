//! CPU reference for attention (f64 scores, softmax and accumulation).

use crate::ops::attention::{Causal, Layout};

/// Inputs of [`attention`]; tensors as flat f32 slices in `layout`.
#[derive(Debug, Clone, Copy)]
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
}

/// Returns (output in `layout`, lse `[b, hq, sq]`). Fully masked rows give zeros
/// and an LSE of −∞.
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
    for bb in 0..b {
        let kvend = a.kv_len.map_or(sk, |l| (l[bb] as usize).min(sk));
        for h in 0..hq {
            let hk = h / g;
            for i in 0..sq {
                let end = match a.causal {
                    Causal::None => kvend,
                    Causal::TopLeft => (i + 1).min(kvend),
                    // Aligned to this sequence's keys: with kv_len, its
                    // last query sees key kv_len[b] − 1 (FlashAttention's
                    // convention for a padded KV cache).
                    Causal::BottomRight => {
                        ((i + 1 + kvend) as i64 - sq as i64).clamp(0, kvend as i64) as usize
                    }
                };
                let qo = idx(bb, h, hq, i, sq, d);
                let mut mx = f64::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate().take(end) {
                    let ko = idx(bb, hk, hkv, j, sk, d);
                    let mut acc = 0.0;
                    for t in 0..d {
                        acc += a.q[qo + t] as f64 * a.k[ko + t] as f64;
                    }
                    acc *= scale;
                    if let Some((bias, bs)) = a.bias {
                        let bi = (if bs[0] == 1 { 0 } else { bb }) * bs[1]
                            + if bs[1] == 1 { 0 } else { h };
                        acc += bias[(bi * sq + i) * sk + j] as f64;
                    }
                    *s = acc;
                    mx = mx.max(acc);
                }
                if end == 0 || mx == f64::NEG_INFINITY {
                    continue;
                }
                let sum: f64 = scores[..end].iter().map(|s| (s - mx).exp()).sum();
                lse[(bb * hq + h) * sq + i] = mx + sum.ln();
                let oo = idx(bb, h, hq, i, sq, dv);
                for (j, s) in scores.iter().enumerate().take(end) {
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
