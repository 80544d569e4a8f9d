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

/// Index helpers shared by the forward and backward references.
struct Geometry<'a> {
    a: &'a AttentionRef<'a>,
    scale: f64,
    /// Query heads per key/value head.
    group: usize,
}

impl<'a> Geometry<'a> {
    fn new(a: &'a AttentionRef<'a>) -> Self {
        let [_, hq, hkv, _, _, d, _] = a.dims;
        Geometry {
            a,
            scale: a.scale.map_or(1.0 / (d as f64).sqrt(), |s| s as f64),
            group: hq / hkv.max(1),
        }
    }

    fn idx(&self, bb: usize, h: usize, heads: usize, s: usize, seq: usize, dim: usize) -> usize {
        match self.a.layout {
            Layout::Bhsd => ((bb * heads + h) * seq + s) * dim,
            Layout::Bshd => ((bb * seq + s) * heads + h) * dim,
        }
    }

    /// Offset of (bb, h, i, j) in a `[b|1, hq|1, sq, sk]` broadcast tensor.
    fn bcast(&self, shape: [usize; 4], bb: usize, h: usize, i: usize, j: usize) -> usize {
        let [_, _, _, sq, sk, _, _] = self.a.dims;
        let bi =
            (if shape[0] == 1 { 0 } else { bb }) * shape[1] + if shape[1] == 1 { 0 } else { h };
        (bi * sq + i) * sk + j
    }

    /// Query i of (bb, h)'s scores over the keys (−∞ where not visible) and
    /// the soft cap's derivative at each (1 without a cap); returns whether
    /// any key is visible and whether a score is NaN. Visibility: kv_len,
    /// causal, window, sink tokens, mask; the score: scale, soft cap,
    /// ALiBi, bias.
    fn row(
        &self,
        bb: usize,
        h: usize,
        i: usize,
        scores: &mut [f64],
        dcap: &mut [f64],
    ) -> (bool, bool) {
        let a = self.a;
        let [_, hq, hkv, sq, sk, d, _] = a.dims;
        let hk = h / self.group;
        let kvend = a.kv_len.map_or(sk, |l| (l[bb] as usize).min(sk));
        // The diagonal: key i + diag is query i's own. Aligned to this
        // sequence's keys except under TopLeft: with kv_len, its last query
        // is key kv_len[b] − 1 (FlashAttention's convention for a padded KV
        // cache).
        let diag = match a.causal {
            Causal::TopLeft => 0,
            _ => kvend as i64 - sq as i64,
        };
        let dg = i as i64 + diag;
        let visible = |j: usize| {
            let jj = j as i64;
            j < kvend
                && (a.causal == Causal::None || jj <= dg)
                && a.window.1.is_none_or(|r| jj <= dg + r as i64)
                && (a.window.0.is_none_or(|l| jj >= dg - l as i64) || j < a.sink_tokens)
                && a.mask.is_none_or(|(m, ms)| m[self.bcast(ms, bb, h, i, j)])
        };
        let qo = self.idx(bb, h, hq, i, sq, d);
        let (mut seen, mut nan) = (false, false);
        for j in 0..sk {
            scores[j] = f64::NEG_INFINITY;
            dcap[j] = 1.0;
            if !visible(j) {
                continue;
            }
            seen = true;
            let ko = self.idx(bb, hk, hkv, j, sk, d);
            let mut acc = 0.0;
            for t in 0..d {
                acc += a.q[qo + t] as f64 * a.k[ko + t] as f64;
            }
            acc *= self.scale;
            if let Some(cap) = a.softcap {
                let th = (acc / cap as f64).tanh();
                acc = cap as f64 * th;
                dcap[j] = 1.0 - th * th;
            }
            if let Some(sl) = a.alibi {
                acc -= sl[h] as f64 * (dg - j as i64).abs() as f64;
            }
            if let Some((bias, bs)) = a.bias {
                acc += bias[self.bcast(bs, bb, h, i, j)] as f64;
            }
            scores[j] = acc;
            nan |= acc.is_nan();
        }
        (seen, nan)
    }

    /// The row's softmax in place (scores → probabilities, 0 where not
    /// visible; the sink logit in the denominator) and its LSE; `None` for
    /// a row with nothing visible (or only −∞ scores).
    fn softmax(&self, h: usize, p: &mut [f64]) -> Option<f64> {
        let sink = self.a.sinks.map(|s| s[h] as f64);
        let mx = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if mx == f64::NEG_INFINITY {
            return None;
        }
        let mx = sink.map_or(mx, |s| mx.max(s));
        let sum: f64 =
            p.iter().map(|s| (s - mx).exp()).sum::<f64>() + sink.map_or(0.0, |s| (s - mx).exp());
        p.iter_mut().for_each(|s| *s = (*s - mx).exp() / sum);
        Some(mx + sum.ln())
    }
}

/// Returns (output in `layout`, lse `[b, hq, sq]`). Fully masked rows give zeros
/// and an LSE of −∞ (the sink logit with sinks); a row with a NaN score
/// (`f64::max` would skip it) gives NaN throughout. Written from the definition,
/// key by key: visibility (kv_len, causal, window, sink tokens, mask), then the
/// score (scale, soft cap, ALiBi, bias), then the softmax with the sink in the
/// denominator.
pub fn attention(a: &AttentionRef) -> (Vec<f64>, Vec<f64>) {
    let [b, hq, hkv, sq, sk, _, dv] = a.dims;
    let g = Geometry::new(a);
    let mut out = vec![0.0f64; b * hq * sq * dv];
    let mut lse = vec![f64::NEG_INFINITY; b * hq * sq];
    let (mut p, mut dcap) = (vec![0.0f64; sk], vec![0.0f64; sk]);
    for bb in 0..b {
        for h in 0..hq {
            let hk = h / g.group;
            for i in 0..sq {
                let (seen, nan) = g.row(bb, h, i, &mut p, &mut dcap);
                let li = (bb * hq + h) * sq + i;
                let oo = g.idx(bb, h, hq, i, sq, dv);
                if nan {
                    // A NaN score (a NaN in q, or in a visible key) makes
                    // the row's softmax NaN, with or without a soft cap.
                    out[oo..oo + dv].fill(f64::NAN);
                    lse[li] = f64::NAN;
                    continue;
                }
                let sink = a.sinks.map(|s| s[h] as f64);
                // Keys with a −∞ score are skipped (not 0·v: v may be ±∞).
                let live: Vec<bool> = p.iter().map(|s| *s != f64::NEG_INFINITY).collect();
                let Some(l) = seen.then(|| g.softmax(h, &mut p)).flatten() else {
                    lse[li] = sink.unwrap_or(f64::NEG_INFINITY);
                    continue;
                };
                lse[li] = l;
                for (j, &pj) in p.iter().enumerate() {
                    if !live[j] {
                        continue;
                    }
                    let vo = g.idx(bb, hk, hkv, j, sk, dv);
                    for t in 0..dv {
                        out[oo + t] += pj * a.v[vo + t] as f64;
                    }
                }
            }
        }
    }
    (out, lse)
}

/// What [`attention_backward`] returns: the gradients of a loss with
/// respect to q, k, v (in their layouts) and, when the inputs have a
/// bias, to the bias (its broadcast shape: summed over the dimensions it
/// is broadcast along).
#[derive(Debug, Clone)]
pub struct AttentionGrads {
    /// `[b, hq, sq, d]` (or `[b, sq, hq, d]`).
    pub dq: Vec<f64>,
    /// `[b, hkv, sk, d]`.
    pub dk: Vec<f64>,
    /// `[b, hkv, sk, dv]`.
    pub dv: Vec<f64>,
    /// The bias's shape `[b|1, hq|1, sq, sk]`, when there is a bias.
    pub dbias: Option<Vec<f64>>,
}

/// The gradients of attention given `d_out` (the loss's gradient with
/// respect to the output, in `layout`), from the definition: with P the
/// row's probabilities and dP_ij = dO_i · v_j, dS_ij = P_ij (dP_ij − D_i)
/// where D_i = Σ_j P_ij dP_ij (= dO_i · O_i); through the soft cap
/// (× 1 − tanh²) and the scale to q and k; dv_j = Σ_i P_ij dO_i. GQA sums
/// dk and dv over each group's query heads. Fully masked rows contribute
/// nothing (zero gradients, not NaN); a row with a NaN score makes its dq
/// NaN and adds nothing to dk and dv.
pub fn attention_backward(a: &AttentionRef, d_out: &[f32]) -> AttentionGrads {
    let [b, hq, hkv, sq, sk, d, dv] = a.dims;
    let g = Geometry::new(a);
    let mut gr = AttentionGrads {
        dq: vec![0.0; b * hq * sq * d],
        dk: vec![0.0; b * hkv * sk * d],
        dv: vec![0.0; b * hkv * sk * dv],
        dbias: a.bias.map(|(bias, _)| vec![0.0; bias.len()]),
    };
    let (mut p, mut dcap) = (vec![0.0f64; sk], vec![0.0f64; sk]);
    for bb in 0..b {
        for h in 0..hq {
            let hk = h / g.group;
            for i in 0..sq {
                let (seen, nan) = g.row(bb, h, i, &mut p, &mut dcap);
                let oo = g.idx(bb, h, hq, i, sq, dv);
                let qo = g.idx(bb, h, hq, i, sq, d);
                if nan {
                    gr.dq[qo..qo + d].fill(f64::NAN);
                    continue;
                }
                let live: Vec<bool> = p.iter().map(|s| *s != f64::NEG_INFINITY).collect();
                if !seen || g.softmax(h, &mut p).is_none() {
                    continue;
                }
                let dov = |t: usize| d_out[oo + t] as f64;
                let dp: Vec<f64> = (0..sk)
                    .map(|j| {
                        if !live[j] {
                            return 0.0;
                        }
                        let vo = g.idx(bb, hk, hkv, j, sk, dv);
                        (0..dv).map(|t| dov(t) * a.v[vo + t] as f64).sum()
                    })
                    .collect();
                let dd: f64 = p.iter().zip(&dp).map(|(pj, dpj)| pj * dpj).sum();
                for j in 0..sk {
                    if !live[j] {
                        continue;
                    }
                    let ds = p[j] * (dp[j] - dd);
                    if let (Some(db), Some((_, bs))) = (gr.dbias.as_mut(), a.bias) {
                        db[g.bcast(bs, bb, h, i, j)] += ds;
                    }
                    let dt = ds * dcap[j] * g.scale;
                    let ko = g.idx(bb, hk, hkv, j, sk, d);
                    for t in 0..d {
                        gr.dq[qo + t] += dt * a.k[ko + t] as f64;
                        gr.dk[ko + t] += dt * a.q[qo + t] as f64;
                    }
                    let vo = g.idx(bb, hk, hkv, j, sk, dv);
                    for t in 0..dv {
                        gr.dv[vo + t] += p[j] * dov(t);
                    }
                }
            }
        }
    }
    gr
}
