//! CPU reference of a BERT-style sentence encoder (all-MiniLM-L6-v2 and its
//! family), in f64 from the checkpoint's f32 weights, stage by stage so that
//! a mismatch can be located: [`embeddings`], each [`layer`], [`pool`].
//! Weights are named as in the Hugging Face checkpoint
//! (`embeddings.word_embeddings.weight`, `encoder.layer.{i}.attention.self.query.weight`, …);
//! the sizes are the model's own [`EncoderDims`] (hence feature `models`).

use std::collections::HashMap;

use super::matmul::erf;
use crate::models::EncoderDims;

/// Checkpoint tensors by name, as f32 row-major.
pub type Weights = HashMap<String, Vec<f32>>;

fn w<'a>(weights: &'a Weights, name: &str) -> &'a [f32] {
    weights
        .get(name)
        .unwrap_or_else(|| panic!("reference encoder: no weight {name}"))
}

/// `x [rows, in] · wᵀ + b` for `w [out, in]`, in f64. Four partial sums per
/// dot product let the compiler vectorise (the reference runs whole
/// 256-token sentences through six layers in the tests).
fn linear(x: &[f64], wt: &[f32], b: &[f32], inp: usize) -> Vec<f64> {
    let out = b.len();
    let w64: Vec<f64> = wt.iter().map(|&v| v as f64).collect();
    let mut y = Vec::with_capacity(x.len() / inp * out);
    for row in x.chunks_exact(inp) {
        for o in 0..out {
            let wr = &w64[o * inp..(o + 1) * inp];
            let mut acc = [0.0f64; 4];
            let (rc, wc) = (row.chunks_exact(4), wr.chunks_exact(4));
            let (rr, wrr) = (rc.remainder(), wc.remainder());
            for (a, w) in rc.zip(wc) {
                for l in 0..4 {
                    acc[l] += a[l] * w[l];
                }
            }
            let tail: f64 = rr.iter().zip(wrr).map(|(a, w)| a * w).sum();
            y.push((acc[0] + acc[1]) + (acc[2] + acc[3]) + tail + b[o] as f64);
        }
    }
    y
}

/// The input embeddings after their layer norm, `[batch · seq, hidden]`, for
/// token `ids` (`[batch, seq]`, token type 0).
pub fn embeddings(weights: &Weights, d: &EncoderDims, ids: &[u32], seq: usize) -> Vec<f64> {
    let h = d.hidden;
    let e = super::embedding::embedding(
        ids,
        None,
        (
            w(weights, "embeddings.word_embeddings.weight"),
            w(weights, "embeddings.position_embeddings.weight"),
            w(weights, "embeddings.token_type_embeddings.weight"),
        ),
        seq,
        h,
    );
    super::norm::layer_norm_f64(
        &e,
        w(weights, "embeddings.LayerNorm.weight"),
        w(weights, "embeddings.LayerNorm.bias"),
        d.eps,
        h,
    )
}

/// Transformer layer `i` on `x [batch · seq, hidden]`: self-attention over
/// each sequence's first `lengths[b]` keys (padding masked), output
/// projection, residual + layer norm, GELU (erf) feed-forward, residual +
/// layer norm.
pub fn layer(
    weights: &Weights,
    d: &EncoderDims,
    i: usize,
    x: &[f64],
    lengths: &[u32],
    seq: usize,
) -> Vec<f64> {
    let h = d.hidden;
    let dh = h / d.heads;
    let p = |s: &str| format!("encoder.layer.{i}.{s}");
    let lin = |x: &[f64], name: &str, inp: usize| {
        linear(
            x,
            w(weights, &p(&format!("{name}.weight"))),
            w(weights, &p(&format!("{name}.bias"))),
            inp,
        )
    };
    let q = lin(x, "attention.self.query", h);
    let k = lin(x, "attention.self.key", h);
    let v = lin(x, "attention.self.value", h);
    let scale = 1.0 / (dh as f64).sqrt();
    let mut ctx = vec![0.0; x.len()];
    let mut scores = vec![0.0; seq];
    for (b, &len) in lengths.iter().enumerate() {
        let n = (len as usize).min(seq);
        for hd in 0..d.heads {
            for t in 0..seq {
                let qr = &q[(b * seq + t) * h + hd * dh..][..dh];
                let mut max = f64::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate().take(n) {
                    let kr = &k[(b * seq + j) * h + hd * dh..][..dh];
                    *s = qr.iter().zip(kr).map(|(a, b)| a * b).sum::<f64>() * scale;
                    max = max.max(*s);
                }
                let mut sum = 0.0;
                for s in scores.iter_mut().take(n) {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let o = &mut ctx[(b * seq + t) * h + hd * dh..][..dh];
                for (j, s) in scores.iter().enumerate().take(n) {
                    let vr = &v[(b * seq + j) * h + hd * dh..][..dh];
                    for c in 0..dh {
                        o[c] += s / sum * vr[c];
                    }
                }
            }
        }
    }
    let attn = lin(&ctx, "attention.output.dense", h);
    let z: Vec<f64> = attn.iter().zip(x).map(|(a, b)| a + b).collect();
    let x1 = super::norm::layer_norm_f64(
        &z,
        w(weights, &p("attention.output.LayerNorm.weight")),
        w(weights, &p("attention.output.LayerNorm.bias")),
        d.eps,
        h,
    );
    let ff: Vec<f64> = lin(&x1, "intermediate.dense", h)
        .into_iter()
        .map(|v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)))
        .collect();
    let ff_in = ff.len() / (x.len() / h).max(1);
    let ff2 = lin(&ff, "output.dense", ff_in);
    let z: Vec<f64> = ff2.iter().zip(&x1).map(|(a, b)| a + b).collect();
    super::norm::layer_norm_f64(
        &z,
        w(weights, &p("output.LayerNorm.weight")),
        w(weights, &p("output.LayerNorm.bias")),
        d.eps,
        h,
    )
}

/// Masked mean pooling of the last layer's states, then L2 normalisation:
/// the sentence embeddings `[batch, hidden]`.
pub fn pool(x: &[f64], lengths: &[u32], seq: usize, hidden: usize) -> Vec<f64> {
    let mut e = super::pooling::mean_pool(x, lengths, seq, hidden);
    for row in e.chunks_exact_mut(hidden.max(1)) {
        let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
    e
}

/// The whole encoder: embeddings, every layer, pooling.
pub fn encode(
    weights: &Weights,
    d: &EncoderDims,
    ids: &[u32],
    lengths: &[u32],
    seq: usize,
) -> Vec<f64> {
    let mut x = embeddings(weights, d, ids, seq);
    for i in 0..d.layers {
        x = layer(weights, d, i, &x, lengths, seq);
    }
    pool(&x, lengths, seq, d.hidden)
}
