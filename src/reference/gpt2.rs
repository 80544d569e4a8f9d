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
//!
//! The stages read either the checkpoint's f32 tensors ([`Weights`]) or f64
//! ones (the parameters of [`gpt2_train`](super::gpt2_train)'s training
//! loop): one forward, generic over the element ([`Elem`]). [`trace`] keeps
//! every intermediate a backward reads.

use std::collections::HashMap;

use crate::models::Gpt2Config;

/// Checkpoint tensors by name, as f32 row-major in the file's layout.
pub type Weights = HashMap<String, Vec<f32>>;

/// An element the reference reads tensors of: f32 (a checkpoint) or f64
/// (a training loop's parameters). Every product is taken in f64.
pub trait Elem: Copy {
    /// The value in f64 (exact for f32).
    fn f64(self) -> f64;
}

impl Elem for f32 {
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Elem for f64 {
    fn f64(self) -> f64 {
        self
    }
}

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

/// A layer norm's output `[rows, n]` with the per-row statistics its
/// backward reads.
#[derive(Debug, Clone)]
pub struct Norm {
    /// `(x − mean) · rstd · γ + β`.
    pub y: Vec<f64>,
    /// `[rows]`: each row's mean.
    pub mean: Vec<f64>,
    /// `[rows]`: `1 / √(var + eps)`, the biased variance.
    pub rstd: Vec<f64>,
}

/// What block `i` computes on its input, `[batch · seq, width]` unless
/// said: every intermediate its backward reads.
#[derive(Debug, Clone)]
pub struct BlockTrace {
    /// `ln_1` of the block's input.
    pub ln_1: Norm,
    /// `c_attn`'s output `[rows, 3 · n_embd]` (q, k, v side by side).
    pub qkv: Vec<f64>,
    /// The heads' outputs `[rows, n_embd]` (head `h` at columns `h · d ..`).
    pub attn: Vec<f64>,
    /// The attention's log-sum-exp `[batch, n_head, seq]` (its backward
    /// recomputes the probabilities from it).
    pub lse: Vec<f64>,
    /// The stream after the attention: input + `c_proj(attn)`.
    pub mid: Vec<f64>,
    /// `ln_2` of `mid`.
    pub ln_2: Norm,
    /// `c_fc`'s output before the activation, `[rows, n_inner]`.
    pub pre: Vec<f64>,
    /// The activation of `pre`, `[rows, n_inner]`.
    pub fc: Vec<f64>,
    /// The block's output: `mid + c_proj(fc)`.
    pub out: Vec<f64>,
}

/// Every intermediate of a forward ([`trace`]).
#[derive(Debug, Clone)]
pub struct Trace {
    /// The embeddings `[batch · seq, n_embd]`: the first block's input.
    pub embeddings: Vec<f64>,
    /// Each block's, in order (block `i`'s input is block `i − 1`'s `out`).
    pub blocks: Vec<BlockTrace>,
    /// `ln_f` of the last stream.
    pub ln_f: Norm,
    /// `[batch · seq, vocab]`.
    pub logits: Vec<f64>,
}

fn w<'a, T>(weights: &'a HashMap<String, Vec<T>>, name: &str) -> &'a [T] {
    weights
        .get(name)
        .unwrap_or_else(|| panic!("reference GPT-2: no tensor {name}"))
}

/// Hugging Face's `Conv1D`: `x [rows, inp] · W [inp, out] + b [out]`.
fn conv1d<T: Elem>(x: &[f64], wt: &[T], b: &[T], inp: usize) -> Vec<f64> {
    let out = b.len();
    let mut y = Vec::with_capacity(x.len() / inp.max(1) * out);
    for row in x.chunks_exact(inp) {
        let mut acc: Vec<f64> = b.iter().map(|&v| v.f64()).collect();
        for (k, &xk) in row.iter().enumerate() {
            for (a, &wk) in acc.iter_mut().zip(&wt[k * out..(k + 1) * out]) {
                *a += xk * wk.f64();
            }
        }
        y.extend(acc);
    }
    y
}

/// Layer norm of each `n`-row: `(x − mean) / √(var + eps) · γ + β` with the
/// biased variance (PyTorch's `nn.LayerNorm`).
fn layer_norm<T: Elem>(x: &[f64], gamma: &[T], beta: &[T], eps: f64) -> Norm {
    let n = gamma.len();
    let rows = x.len() / n.max(1);
    let mut out = Norm {
        y: Vec::with_capacity(x.len()),
        mean: Vec::with_capacity(rows),
        rstd: Vec::with_capacity(rows),
    };
    for row in x.chunks_exact(n) {
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps).sqrt();
        out.y.extend(
            row.iter()
                .zip(gamma.iter().zip(beta))
                .map(|(v, (&g, &b))| (v - mean) * inv * g.f64() + b.f64()),
        );
        out.mean.push(mean);
        out.rstd.push(inv);
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
pub fn embeddings<T: Elem>(
    weights: &HashMap<String, Vec<T>>,
    c: &Gpt2Config,
    ids: &[u32],
    seq: usize,
) -> Vec<f64> {
    let e = c.n_embd;
    let (wte, wpe) = (w(weights, "wte.weight"), w(weights, "wpe.weight"));
    let mut x = Vec::with_capacity(ids.len() * e);
    for (i, &id) in ids.iter().enumerate() {
        let (tok, pos) = (id as usize * e, (i % seq) * e);
        x.extend((0..e).map(|j| wte[tok + j].f64() + wpe[pos + j].f64()));
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

/// Block `i` on the stream `x [batch · seq, n_embd]` with every
/// intermediate: `m = x + c_proj(attn(c_attn(ln_1(x))))`, then
/// `m + c_proj(act(c_fc(ln_2(m))))`.
pub fn block_trace<T: Elem>(
    weights: &HashMap<String, Vec<T>>,
    c: &Gpt2Config,
    i: usize,
    x: &[f64],
    batch: usize,
    seq: usize,
) -> BlockTrace {
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
    let ln_1 = layer_norm(x, t("ln_1.weight"), t("ln_1.bias"), eps);
    let qkv = lin(&ln_1.y, "attn.c_attn", e);
    let (attn, lse) = attention(&qkv, c, batch, seq);
    let proj = lin(&attn, "attn.c_proj", e);
    let mid: Vec<f64> = x.iter().zip(&proj).map(|(x, p)| x + p).collect();
    let ln_2 = layer_norm(&mid, t("ln_2.weight"), t("ln_2.bias"), eps);
    let pre = lin(&ln_2.y, "mlp.c_fc", e);
    let fc: Vec<f64> = pre
        .iter()
        .map(|&v| activation(&c.activation_function, v))
        .collect();
    let mlp = lin(&fc, "mlp.c_proj", c.inner());
    let out = mid.iter().zip(&mlp).map(|(m, y)| m + y).collect();
    BlockTrace {
        ln_1,
        qkv,
        attn,
        lse,
        mid,
        ln_2,
        pre,
        fc,
        out,
    }
}

/// Block `i` on the stream `x [batch · seq, n_embd]` ([`block_trace`]):
/// the block's output and its attention's log-sum-exp.
pub fn block<T: Elem>(
    weights: &HashMap<String, Vec<T>>,
    c: &Gpt2Config,
    i: usize,
    x: &[f64],
    batch: usize,
    seq: usize,
) -> (Vec<f64>, Vec<f64>) {
    let b = block_trace(weights, c, i, x, batch, seq);
    (b.out, b.lse)
}

/// `ln_f` of the last stream `x`, and its product with `wteᵀ` (the tied LM
/// head): the logits `[batch · seq, vocab]`.
fn head<T: Elem>(weights: &HashMap<String, Vec<T>>, c: &Gpt2Config, x: &[f64]) -> (Norm, Vec<f64>) {
    let e = c.n_embd;
    let xf = layer_norm(
        x,
        w(weights, "ln_f.weight"),
        w(weights, "ln_f.bias"),
        c.layer_norm_epsilon,
    );
    let wte = w(weights, "wte.weight");
    let mut out = Vec::with_capacity(x.len() / e * c.vocab_size);
    for row in xf.y.chunks_exact(e) {
        out.extend(
            wte.chunks_exact(e)
                .map(|tok| row.iter().zip(tok).map(|(a, &b)| a * b.f64()).sum::<f64>()),
        );
    }
    (xf, out)
}

/// `ln_f` of the last stream `x`, times `wteᵀ` (the tied LM head): the
/// logits `[batch · seq, vocab]`.
pub fn logits<T: Elem>(weights: &HashMap<String, Vec<T>>, c: &Gpt2Config, x: &[f64]) -> Vec<f64> {
    head(weights, c, x).1
}

/// The whole model on `ids` (`[batch, seq]` row-major, each below
/// `vocab_size`, `seq ≤ n_positions`) with every intermediate.
pub fn trace<T: Elem>(
    weights: &HashMap<String, Vec<T>>,
    c: &Gpt2Config,
    ids: &[u32],
    batch: usize,
    seq: usize,
) -> Trace {
    let embeddings = embeddings(weights, c, ids, seq);
    let mut blocks: Vec<BlockTrace> = Vec::with_capacity(c.n_layer);
    for i in 0..c.n_layer {
        let x = blocks.last().map_or(&embeddings, |b| &b.out);
        let b = block_trace(weights, c, i, x, batch, seq);
        blocks.push(b);
    }
    let last = blocks.last().map_or(&embeddings, |b| &b.out);
    let (ln_f, logits) = head(weights, c, last);
    Trace {
        embeddings,
        blocks,
        ln_f,
        logits,
    }
}

/// The whole model on `ids` (`[batch, seq]` row-major, each below
/// `vocab_size`, `seq ≤ n_positions`): every stage ([`trace`], less what
/// only a backward reads).
pub fn forward<T: Elem>(
    weights: &HashMap<String, Vec<T>>,
    c: &Gpt2Config,
    ids: &[u32],
    batch: usize,
    seq: usize,
) -> Forward {
    let t = trace(weights, c, ids, batch, seq);
    let mut hidden = vec![t.embeddings];
    let mut lse = Vec::with_capacity(c.n_layer);
    for b in t.blocks {
        hidden.push(b.out);
        lse.push(b.lse);
    }
    Forward {
        hidden,
        lse,
        logits: t.logits,
    }
}
