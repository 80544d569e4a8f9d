//! CPU references for the gradients of [`crate::ops::grad`] (f64), written
//! from the definitions: the derivative of each forward reference (checked
//! against central finite differences of those forwards in
//! `tests/grad_reference.rs`), and AdamW's update as the textbook states it.

use crate::ops::grad::AdamWOptions;
use crate::ops::matmul::Activation;
use crate::reference::matmul::erf;

/// `d act / dx` at `x`. ReLU's is 0 at 0 (PyTorch's); the GELUs' and
/// SiLU's are exact (`Φ(x) + x φ(x)` for GELU's erf form).
pub fn activation_grad(x: f64, act: Activation) -> f64 {
    use std::f64::consts::{PI, SQRT_2};
    match act {
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::GeluTanh => {
            let k = (2.0 / PI).sqrt();
            let t = (k * (x + 0.044715 * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)
        }
        Activation::GeluErf => {
            0.5 * (1.0 + erf(x / SQRT_2)) + x * (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
        }
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }
        _ => 1.0,
    }
}

/// `dy · act'(pre)` elementwise.
pub fn activation_backward(pre: &[f32], dy: &[f32], act: Activation) -> Vec<f64> {
    pre.iter()
        .zip(dy)
        .map(|(&p, &g)| g as f64 * activation_grad(p as f64, act))
        .collect()
}

/// `a + b` elementwise.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as f64 + y as f64)
        .collect()
}

/// `out[j] = Σ_r x[r, j]` over the rows of `x [rows, cols]`.
pub fn column_sum(x: &[f32], cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; cols];
    for row in x.chunks_exact(cols.max(1)) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v as f64;
        }
    }
    out
}

/// The gradients of a linear layer (f64).
#[derive(Debug, Clone)]
pub struct LinearGradsRef {
    /// `[rows, in]`.
    pub dx: Vec<f64>,
    /// `[out, in]`.
    pub dw: Vec<f64>,
    /// `[out]`.
    pub db: Vec<f64>,
}

/// The gradients of `y = act(x · wᵀ + b)` for `x [rows, in]`, `w [out, in]`,
/// `dy [rows, out]` and the pre-activation `pre [rows, out]` (unused for
/// [`Activation::None`]): `dz = dy · act'(pre)`, `dx = dz · w`,
/// `dw = dzᵀ · x`, `db = Σ_rows dz`. `dims` is `(rows, in, out)`.
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    pre: Option<&[f32]>,
    act: Activation,
    (rows, inp, out): (usize, usize, usize),
) -> LinearGradsRef {
    let dz: Vec<f64> = match pre {
        Some(p) if act != Activation::None => activation_backward(p, dy, act),
        _ => dy.iter().map(|&v| v as f64).collect(),
    };
    let mut g = LinearGradsRef {
        dx: vec![0.0; rows * inp],
        dw: vec![0.0; out * inp],
        db: vec![0.0; out],
    };
    for r in 0..rows {
        for o in 0..out {
            let d = dz[r * out + o];
            g.db[o] += d;
            for i in 0..inp {
                g.dx[r * inp + i] += d * w[o * inp + i] as f64;
                g.dw[o * inp + i] += d * x[r * inp + i] as f64;
            }
        }
    }
    g
}

/// The gradients of a layer norm (f64).
#[derive(Debug, Clone)]
pub struct NormGradsRef {
    /// Of `z = x (+ residual)`: `x`'s shape.
    pub dx: Vec<f64>,
    /// `[h]`.
    pub dgamma: Vec<f64>,
    /// `[h]`.
    pub dbeta: Vec<f64>,
}

/// The gradients of [`layer_norm`](crate::reference::norm::layer_norm)
/// (biased variance, `eps` inside the root) for `dy` of `x`'s shape: with
/// `x̂ = (z − μ) / σ`, `σ = √(var + eps)` and `g = dy · γ`,
/// `dz = (g − mean(g) − x̂ · mean(g · x̂)) / σ`, `dγ = Σ dy · x̂`, `dβ = Σ dy`.
pub fn layer_norm_backward(
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    eps: f64,
    dy: &[f32],
    h: usize,
) -> NormGradsRef {
    let mut g = NormGradsRef {
        dx: Vec::with_capacity(x.len()),
        dgamma: vec![0.0; h],
        dbeta: vec![0.0; h],
    };
    let n = h as f64;
    for (r, row) in x.chunks_exact(h.max(1)).enumerate() {
        let z: Vec<f64> = (0..h)
            .map(|j| row[j] as f64 + residual.map_or(0.0, |res| res[r * h + j] as f64))
            .collect();
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let sigma = (var + eps).sqrt();
        let xh: Vec<f64> = z.iter().map(|v| (v - mean) / sigma).collect();
        let d: Vec<f64> = dy[r * h..(r + 1) * h].iter().map(|&v| v as f64).collect();
        let gg: Vec<f64> = (0..h).map(|j| d[j] * gamma[j] as f64).collect();
        let mg = gg.iter().sum::<f64>() / n;
        let mgx = (0..h).map(|j| gg[j] * xh[j]).sum::<f64>() / n;
        g.dx.extend((0..h).map(|j| (gg[j] - mg - xh[j] * mgx) / sigma));
        for j in 0..h {
            g.dgamma[j] += d[j] * xh[j];
            g.dbeta[j] += d[j];
        }
    }
    g
}

/// The gradients of the embedding tables (f64).
#[derive(Debug, Clone)]
pub struct EmbeddingGradsRef {
    /// `[vocab, h]`.
    pub word: Vec<f64>,
    /// `[npos, h]`.
    pub pos: Vec<f64>,
    /// `[ntypes, h]`.
    pub types: Vec<f64>,
}

/// The gradients of [`embedding`](crate::reference::embedding::embedding)'s
/// tables for `dy [rows, h]` (`rows = batch · seq` tokens): each table row
/// sums the `dy` rows of the tokens that read it. `tables` is `(vocab, npos,
/// ntypes)`; every id is within its table.
pub fn embedding_backward(
    ids: &[u32],
    type_ids: Option<&[u32]>,
    dy: &[f32],
    seq: usize,
    h: usize,
    (vocab, npos, ntypes): (usize, usize, usize),
) -> EmbeddingGradsRef {
    let mut g = EmbeddingGradsRef {
        word: vec![0.0; vocab * h],
        pos: vec![0.0; npos * h],
        types: vec![0.0; ntypes * h],
    };
    for (r, &id) in ids.iter().enumerate() {
        let rows = [
            (&mut g.word, id as usize),
            (&mut g.pos, r % seq.max(1)),
            (&mut g.types, type_ids.map_or(0, |t| t[r]) as usize),
        ];
        for (table, row) in rows {
            for j in 0..h {
                table[row * h + j] += dy[r * h + j] as f64;
            }
        }
    }
    g
}

/// The gradient of [`mean_pool`](crate::reference::pooling::mean_pool) for
/// `dy [batch, h]`: `[batch, seq, h]`, `dy[b] / n_b` on each sequence's
/// first `n_b = min(len, seq)` tokens, zero elsewhere.
pub fn mean_pool_backward(dy: &[f32], lengths: &[u32], seq: usize, h: usize) -> Vec<f64> {
    let mut dx = vec![0.0; lengths.len() * seq * h];
    for (b, &len) in lengths.iter().enumerate() {
        let n = (len as usize).min(seq);
        for t in 0..n {
            for j in 0..h {
                dx[(b * seq + t) * h + j] = dy[b * h + j] as f64 / n as f64;
            }
        }
    }
    dx
}

/// The mean softmax cross-entropy of `logits [n, classes]` against
/// `targets` over the rows whose target is not `ignore` (0 when there are
/// none): `Σ (log Σ_j exp(x_j) − x_t) / count`.
pub fn cross_entropy_loss(
    logits: &[f32],
    targets: &[u32],
    classes: usize,
    ignore: Option<u32>,
) -> f64 {
    let mut sum = 0.0;
    let mut count = 0;
    for (r, &t) in targets
        .iter()
        .enumerate()
        .filter(|&(_, &t)| Some(t) != ignore)
    {
        let row = &logits[r * classes..(r + 1) * classes];
        let m = row
            .iter()
            .map(|&v| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        sum += m + s.ln() - row[t as usize] as f64;
        count += 1;
    }
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// Softmax cross-entropy with its gradient (f64).
#[derive(Debug, Clone)]
pub struct CrossEntropyRef {
    /// The mean over the rows not ignored (0 when there are none).
    pub loss: f64,
    /// Each row's `logsumexp − x_t` (0 when ignored).
    pub row_losses: Vec<f64>,
    /// `(softmax − onehot) / count` per row, zero for ignored rows.
    pub dlogits: Vec<f64>,
    /// Rows not ignored.
    pub count: usize,
}

/// [`cross_entropy_loss`] and its gradient in the logits.
pub fn cross_entropy(
    logits: &[f32],
    targets: &[u32],
    classes: usize,
    ignore: Option<u32>,
) -> CrossEntropyRef {
    let count = targets.iter().filter(|&&t| Some(t) != ignore).count();
    let mut out = CrossEntropyRef {
        loss: 0.0,
        row_losses: vec![0.0; targets.len()],
        dlogits: vec![0.0; logits.len()],
        count,
    };
    for (r, &t) in targets.iter().enumerate() {
        if Some(t) == ignore {
            continue;
        }
        let row: Vec<f64> = logits[r * classes..(r + 1) * classes]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let lse = m + s.ln();
        out.row_losses[r] = lse - row[t as usize];
        for (j, v) in row.iter().enumerate() {
            let onehot = if j == t as usize { 1.0 } else { 0.0 };
            out.dlogits[r * classes + j] = ((v - lse).exp() - onehot) / count as f64;
        }
    }
    if count > 0 {
        out.loss = out.row_losses.iter().sum::<f64>() / count as f64;
    }
    out
}

/// AdamW's state in f64: the parameters and both moments.
#[derive(Debug, Clone)]
pub struct AdamWState {
    /// Parameters.
    pub param: Vec<f64>,
    /// First moment.
    pub m: Vec<f64>,
    /// Second moment.
    pub v: Vec<f64>,
}

/// One AdamW step (Loshchilov & Hutter; `torch.optim.AdamW` without
/// amsgrad) at step `t ≥ 1`: `p ← p − lr·wd·p`, `m ← β1 m + (1 − β1) g`,
/// `v ← β2 v + (1 − β2) g²`, `m̂ = m / (1 − β1^t)`, `v̂ = v / (1 − β2^t)`,
/// `p ← p − lr · m̂ / (√v̂ + eps)`.
pub fn adamw_step(s: &mut AdamWState, grad: &[f32], t: u64, o: &AdamWOptions) {
    let (b1, b2) = o.betas;
    let t = t.min(i32::MAX as u64) as i32;
    for (i, &g) in grad.iter().enumerate() {
        let g = g as f64;
        let p = s.param[i] - o.lr * o.weight_decay * s.param[i];
        s.m[i] = b1 * s.m[i] + (1.0 - b1) * g;
        s.v[i] = b2 * s.v[i] + (1.0 - b2) * g * g;
        let mh = s.m[i] / (1.0 - b1.powi(t));
        let vh = s.v[i] / (1.0 - b2.powi(t));
        s.param[i] = p - o.lr * mh / (vh.sqrt() + o.eps);
    }
}
