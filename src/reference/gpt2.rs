//! CPU reference of a GPT-2-architecture language model, in f64 from the
//! checkpoint's f32 tensors, written from the model's definition
//! (Radford et al. 2019; Hugging Face's `GPT2LMHeadModel`), stage by stage
//! so that a mismatch can be located: [`embeddings`], each [`block`],
//! [`logits`], or all of them in [`forward`].
//!
//! Tensors are named and laid out as in the Hugging Face checkpoint: the
//! `Conv1D` weights are `[in, out]` and applied as `x · W + b`, as the file
//! holds them (the device model transposes them on load; this reference
//! does not, so that a wrong transposition shows). The sizes and options
//! are the model's [`Gpt2Config`] (hence feature `models`).

use std::collections::HashMap;

use crate::models::Gpt2Config;

/// Checkpoint tensors by name, as f32 row-major in the file's layout.
pub type Weights = HashMap<String, Vec<f32>>;

/// Every stage of a [`forward`].
#[derive(Debug, Clone)]
pub struct Forward {
    /// The residual stream `[batch · seq, n_embd]` entering each block, then
    /// the last block's output (`n_layer + 1` of them).
    pub hidden: Vec<Vec<f64>>,
    /// Each block's attention log-sum-exp `[batch, n_head, seq]` (natural
    /// log of the sum of `exp` of the scaled scores a query sees).
    pub lse: Vec<Vec<f64>>,
    /// `[batch, seq, vocab]`.
    pub logits: Vec<f64>,
}

fn w<'a>(weights: &'a Weights, name: &str) -> &'a [f32] {
    weights
        .get(name)
        .unwrap_or_else(|| panic!("reference GPT-2: no tensor {name}"))
}

/// Hugging Face's `Conv1D`: `x [rows, inp] · W [inp, out] + b [out]`.
fn conv1d(x: &[f64], wt: &[f32], b: &[f32], inp: usize) -> Vec<f64> {
    let out = b.len();
    let mut y = Vec::with_capacity(x.len() / inp.max(1) * out);
    for row in x.chunks_exact(inp) {
        let mut acc: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        for (k, &xk) in row.iter().enumerate() {
            for (a, &wk) in acc.iter_mut().zip(&wt[k * out..(k + 1) * out]) {
                *a += xk * wk as f64;
            }
        }
        y.extend(acc);
    }
    y
}

/// Layer norm of each `n`-row: `(x − mean) / √(var + eps) · γ + β` with the
/// biased variance (PyTorch's `nn.LayerNorm`).
fn layer_norm(x: &[f64], gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f64> {
    let n = gamma.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps).sqrt();
        out.extend(
            row.iter()
                .zip(gamma.iter().zip(beta))
                .map(|(v, (&g, &b))| (v - mean) * inv * g as f64 + b as f64),
        );
    }
    out
}

/// The activation Hugging Face's `ACT2FN` names.
fn activation(name: &str, x: f64) -> f64 {
    match name {
        // GPT-2's: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        "gelu_new" | "gelu_pytorch_tanh" => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
            0.5 * x * (1.0 + u.tanh())
        }
        "gelu" => 0.5 * x * (1.0 + super::matmul::erf(x / std::f64::consts::SQRT_2)),
        "relu" => x.max(0.0),
        "silu" | "swish" => x / (1.0 + (-x).exp()),
        other => panic!("reference GPT-2: activation {other} not implemented"),
    }
}

/// The token + position embeddings `[batch · seq, n_embd]` of `ids`
/// (`[batch, seq]` row-major): `wte[id] + wpe[t]`.
pub fn embeddings(weights: &Weights, c: &Gpt2Config, ids: &[u32], seq: usize) -> Vec<f64> {
    let e = c.n_embd;
    let (wte, wpe) = (w(weights, "wte.weight"), w(weights, "wpe.weight"));
    let mut x = Vec::with_capacity(ids.len() * e);
    for (i, &id) in ids.iter().enumerate() {
        let (tok, pos) = (id as usize * e, (i % seq) * e);
        x.extend((0..e).map(|j| wte[tok + j] as f64 + wpe[pos + j] as f64));
    }
    x
}

/// Causal multi-head attention of `qkv [batch · seq, 3 · n_embd]` (q, k, v
/// side by side, head `h` at columns `h · d ..`): query `t` sees keys
/// `0 ..= t` of its sequence. Returns the heads' outputs `[batch · seq,
/// n_embd]` and the log-sum-exp `[batch, n_head, seq]`.
fn attention(qkv: &[f64], c: &Gpt2Config, batch: usize, seq: usize) -> (Vec<f64>, Vec<f64>) {
    let (e, heads, d) = (c.n_embd, c.n_head, c.head_dim());
    let scale = c.attn_scale();
    let at = |b: usize, t: usize, part: usize, h: usize| (b * seq + t) * 3 * e + part * e + h * d;
    let mut out = vec![0.0; batch * seq * e];
    let mut lse = vec![0.0; batch * heads * seq];
    let mut p = vec![0.0; seq];
    for b in 0..batch {
        for h in 0..heads {
            for t in 0..seq {
                let q = &qkv[at(b, t, 0, h)..][..d];
                for (j, pj) in p.iter_mut().enumerate().take(t + 1) {
                    let k = &qkv[at(b, j, 1, h)..][..d];
                    *pj = q.iter().zip(k).map(|(x, y)| x * y).sum::<f64>() * scale;
                }
                let max = p[..=t].iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
                let sum: f64 = p[..=t].iter().map(|s| (s - max).exp()).sum();
                lse[(b * heads + h) * seq + t] = max + sum.ln();
                let o = &mut out[(b * seq + t) * e + h * d..][..d];
                for (j, &s) in p.iter().enumerate().take(t + 1) {
                    let v = &qkv[at(b, j, 2, h)..][..d];
                    let pj = (s - max).exp() / sum;
                    o.iter_mut().zip(v).for_each(|(o, v)| *o += pj * v);
                }
            }
        }
    }
    (out, lse)
}

/// Block `i` on the stream `x [batch · seq, n_embd]`: `m = x +
/// c_proj(attn(c_attn(ln_1(x))))`, then `m + c_proj(act(c_fc(ln_2(m))))`.
/// Returns the block's output and its attention's log-sum-exp.
pub fn block(
    weights: &Weights,
    c: &Gpt2Config,
    i: usize,
    x: &[f64],
    batch: usize,
    seq: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (e, eps) = (c.n_embd, c.layer_norm_epsilon);
    let t = |s: &str| w(weights, &format!("h.{i}.{s}"));
    let lin = |x: &[f64], name: &str, inp: usize| {
        conv1d(
            x,
            t(&format!("{name}.weight")),
            t(&format!("{name}.bias")),
            inp,
        )
    };
    let a = layer_norm(x, t("ln_1.weight"), t("ln_1.bias"), eps);
    let qkv = lin(&a, "attn.c_attn", e);
    let (heads, lse) = attention(&qkv, c, batch, seq);
    let proj = lin(&heads, "attn.c_proj", e);
    let m: Vec<f64> = x.iter().zip(&proj).map(|(x, p)| x + p).collect();
    let f: Vec<f64> = lin(
        &layer_norm(&m, t("ln_2.weight"), t("ln_2.bias"), eps),
        "mlp.c_fc",
        e,
    )
    .into_iter()
    .map(|v| activation(&c.activation_function, v))
    .collect();
    let mlp = lin(&f, "mlp.c_proj", c.inner());
    (m.iter().zip(&mlp).map(|(m, y)| m + y).collect(), lse)
}

/// `ln_f` of the last stream `x`, times `wteᵀ` (the tied LM head): the
/// logits `[batch · seq, vocab]`.
pub fn logits(weights: &Weights, c: &Gpt2Config, x: &[f64]) -> Vec<f64> {
    let e = c.n_embd;
    let xf = layer_norm(
        x,
        w(weights, "ln_f.weight"),
        w(weights, "ln_f.bias"),
        c.layer_norm_epsilon,
    );
    let wte = w(weights, "wte.weight");
    let mut out = Vec::with_capacity(x.len() / e * c.vocab_size);
    for row in xf.chunks_exact(e) {
        out.extend(
            wte.chunks_exact(e)
                .map(|tok| row.iter().zip(tok).map(|(a, &b)| a * b as f64).sum::<f64>()),
        );
    }
    out
}

/// The whole model on `ids` (`[batch, seq]` row-major, each below
/// `vocab_size`, `seq ≤ n_positions`): every stage.
pub fn forward(
    weights: &Weights,
    c: &Gpt2Config,
    ids: &[u32],
    batch: usize,
    seq: usize,
) -> Forward {
    let mut hidden = vec![embeddings(weights, c, ids, seq)];
    let mut lse = Vec::with_capacity(c.n_layer);
    for i in 0..c.n_layer {
        let (x, l) = block(weights, c, i, &hidden[i], batch, seq);
        hidden.push(x);
        lse.push(l);
    }
    let logits = logits(weights, c, &hidden[c.n_layer]);
    Forward {
        hidden,
        lse,
        logits,
    }
}
