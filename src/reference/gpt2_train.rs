//! CPU reference of training the GPT-2 model of [`reference::gpt2`](super::gpt2)
//! in f64: the loss and the gradient of every parameter
//! ([`loss_and_grads`]), written from the definition on the forward's
//! intermediates ([`gpt2::trace`]), and an AdamW loop with its own f64
//! moments ([`TrainerRef`]). The ground truth a device training step is
//! checked against.
//!
//! Parameters and gradients are named and laid out as in the Hugging Face
//! checkpoint (`Conv1D` weights `[in, out]`, applied as `x · W + b`); the
//! LM head is `wte` (tied), so `wte.weight`'s gradient is the head's plus
//! the embedding's. Which parameters weight decay applies to is
//! [`decays`]; their shapes are [`param_shapes`].

use std::collections::HashMap;

use crate::models::Gpt2Config;
use crate::ops::grad::{AdamWOptions, IGNORE_INDEX};
use crate::reference::gpt2::{self, BlockTrace, Norm, Weights};
use crate::reference::grad::activation_grad;

/// Parameters (or their gradients) by checkpoint name, f64 row-major in the
/// checkpoint's layout.
pub type Params = HashMap<String, Vec<f64>>;

/// Whether AdamW's weight decay applies to a parameter of this shape: to
/// the 2-D ones (`wte`, `wpe` and the `Conv1D` weights `attn.c_attn`,
/// `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`), not to biases nor the layer
/// norms' γ and β. nanoGPT's rule (`p.dim() >= 2`) and Hugging Face
/// Trainer's (no decay for `bias` and `LayerNorm.weight`), which agree on
/// GPT-2. The device trainer's rule ([`Gpt2Trainer::decays`](crate::models::Gpt2Trainer::decays)),
/// used here so that the two cannot drift apart.
pub fn decays(shape: &[usize]) -> bool {
    crate::models::Gpt2Trainer::decays(shape)
}

/// The model's parameters for `c`, in Hugging Face's names (no
/// `transformer.` prefix) and shapes (`Conv1D` weights `[in, out]`), in
/// load order.
pub fn param_shapes(c: &Gpt2Config) -> Vec<(String, Vec<usize>)> {
    let (e, inner) = (c.n_embd, c.inner());
    let mut out = vec![
        ("wte.weight".to_string(), vec![c.vocab_size, e]),
        ("wpe.weight".to_string(), vec![c.n_positions, e]),
    ];
    for i in 0..c.n_layer {
        for (name, shape) in [
            ("ln_1.weight", vec![e]),
            ("ln_1.bias", vec![e]),
            ("attn.c_attn.weight", vec![e, 3 * e]),
            ("attn.c_attn.bias", vec![3 * e]),
            ("attn.c_proj.weight", vec![e, e]),
            ("attn.c_proj.bias", vec![e]),
            ("ln_2.weight", vec![e]),
            ("ln_2.bias", vec![e]),
            ("mlp.c_fc.weight", vec![e, inner]),
            ("mlp.c_fc.bias", vec![inner]),
            ("mlp.c_proj.weight", vec![inner, e]),
            ("mlp.c_proj.bias", vec![e]),
        ] {
            out.push((format!("h.{i}.{name}"), shape));
        }
    }
    out.push(("ln_f.weight".to_string(), vec![e]));
    out.push(("ln_f.bias".to_string(), vec![e]));
    out
}

/// The checkpoint's f32 tensors as f64 parameters (exact).
pub fn to_f64(weights: &Weights) -> Params {
    weights
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|&x| x as f64).collect()))
        .collect()
}

fn w<'a>(params: &'a Params, name: &str) -> &'a [f64] {
    params
        .get(name)
        .unwrap_or_else(|| panic!("reference GPT-2 training: no tensor {name}"))
}

/// Gradients accumulated by name; every parameter starts at 0, so one the
/// loss does not reach (a `wpe` row past `seq`) stays 0.
struct Grads(Params);

impl Grads {
    fn add(&mut self, name: &str, g: &[f64]) {
        let t = self
            .0
            .get_mut(name)
            .unwrap_or_else(|| panic!("reference GPT-2 training: no tensor {name}"));
        t.iter_mut().zip(g).for_each(|(t, g)| *t += g);
    }
}

/// Mean softmax cross-entropy over the rows whose target is not
/// [`IGNORE_INDEX`], and its gradient in the logits (0 for ignored rows;
/// all 0, loss 0, when every row is).
fn cross_entropy(logits: &[f64], targets: &[u32], vocab: usize) -> (f64, Vec<f64>) {
    let count = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    let mut d = vec![0.0; logits.len()];
    let mut sum = 0.0;
    for (r, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        let row = &logits[r * vocab..][..vocab];
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        sum += lse - row[t as usize];
        for (j, (dj, x)) in d[r * vocab..][..vocab].iter_mut().zip(row).enumerate() {
            *dj = ((x - lse).exp() - f64::from(j == t as usize)) / count as f64;
        }
    }
    (if count == 0 { 0.0 } else { sum / count as f64 }, d)
}

/// The gradients of `y = x [rows, inp] · W [inp, out] + b` for `dy [rows,
/// out]`: `(dx = dy · Wᵀ, dW = xᵀ · dy, db = Σ_rows dy)`.
fn conv1d_backward(
    x: &[f64],
    wt: &[f64],
    dy: &[f64],
    inp: usize,
    out: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; wt.len()], vec![0.0; out]);
    for (xr, (dyr, dxr)) in x
        .chunks_exact(inp)
        .zip(dy.chunks_exact(out).zip(dx.chunks_exact_mut(inp)))
    {
        db.iter_mut().zip(dyr).for_each(|(b, d)| *b += d);
        for k in 0..inp {
            let wk = &wt[k * out..][..out];
            dxr[k] = wk.iter().zip(dyr).map(|(w, d)| w * d).sum();
            let dwk = &mut dw[k * out..][..out];
            dwk.iter_mut().zip(dyr).for_each(|(g, d)| *g += xr[k] * d);
        }
    }
    (dx, dw, db)
}

/// The gradients of a layer norm of `x [rows, n]` (its forward's `norm`)
/// for `dy`: with `x̂ = (x − mean) · rstd` and `g = dy · γ`,
/// `dx = rstd · (g − mean(g) − x̂ · mean(g · x̂))`, `dγ = Σ dy · x̂`,
/// `dβ = Σ dy`.
fn layer_norm_backward(
    x: &[f64],
    norm: &Norm,
    gamma: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = gamma.len();
    let (mut dx, mut dg, mut db) = (Vec::with_capacity(x.len()), vec![0.0; n], vec![0.0; n]);
    for (r, (xr, dyr)) in x.chunks_exact(n).zip(dy.chunks_exact(n)).enumerate() {
        let xh: Vec<f64> = xr
            .iter()
            .map(|v| (v - norm.mean[r]) * norm.rstd[r])
            .collect();
        let g: Vec<f64> = dyr.iter().zip(gamma).map(|(d, g)| d * g).collect();
        let mg = g.iter().sum::<f64>() / n as f64;
        let mgx = g.iter().zip(&xh).map(|(g, x)| g * x).sum::<f64>() / n as f64;
        dx.extend(
            g.iter()
                .zip(&xh)
                .map(|(g, x)| norm.rstd[r] * (g - mg - x * mgx)),
        );
        for j in 0..n {
            dg[j] += dyr[j] * xh[j];
            db[j] += dyr[j];
        }
    }
    (dx, dg, db)
}

/// The gradient in `qkv` of the causal attention for `dattn [rows,
/// n_embd]`, the probabilities recomputed from the forward's log-sum-exp:
/// `P_tj = exp(s_tj − lse_t)`, `dV += Pᵀ dO`, `dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O))`
/// (`dO · O = Σ_j P_tj dO · v_j`), `dQ = scale · dS K`, `dK = scale · dSᵀ Q`.
fn attention_backward(
    qkv: &[f64],
    lse: &[f64],
    dattn: &[f64],
    c: &Gpt2Config,
    batch: usize,
    seq: usize,
) -> Vec<f64> {
    let (e, heads, d, scale) = (c.n_embd, c.n_head, c.head_dim(), c.attn_scale());
    let at = |b: usize, t: usize, part: usize, h: usize| (b * seq + t) * 3 * e + part * e + h * d;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut dqkv = vec![0.0; qkv.len()];
    let (mut p, mut dp) = (vec![0.0; seq], vec![0.0; seq]);
    for b in 0..batch {
        for h in 0..heads {
            for t in 0..seq {
                let q = &qkv[at(b, t, 0, h)..][..d];
                let dout = &dattn[(b * seq + t) * e + h * d..][..d];
                let l = lse[(b * heads + h) * seq + t];
                for j in 0..=t {
                    p[j] = (dot(q, &qkv[at(b, j, 1, h)..][..d]) * scale - l).exp();
                    dp[j] = dot(dout, &qkv[at(b, j, 2, h)..][..d]);
                }
                let delta: f64 = (0..=t).map(|j| p[j] * dp[j]).sum();
                for j in 0..=t {
                    let ds = p[j] * (dp[j] - delta) * scale;
                    for x in 0..d {
                        let (k, qx) = (qkv[at(b, j, 1, h) + x], q[x]);
                        dqkv[at(b, t, 0, h) + x] += ds * k;
                        dqkv[at(b, j, 1, h) + x] += ds * qx;
                        dqkv[at(b, j, 2, h) + x] += p[j] * dout[x];
                    }
                }
            }
        }
    }
    dqkv
}

/// `Conv1D` `name`'s backward for `dy` at its input `x`: adds `dW` and
/// `db` to `grads`, returns `dx`.
fn conv1d_grads(
    params: &Params,
    grads: &mut Grads,
    name: &str,
    x: &[f64],
    dy: &[f64],
    (inp, out): (usize, usize),
) -> Vec<f64> {
    let weight = format!("{name}.weight");
    let (dx, dw, db) = conv1d_backward(x, w(params, &weight), dy, inp, out);
    grads.add(&weight, &dw);
    grads.add(&format!("{name}.bias"), &db);
    dx
}

/// Layer norm `name`'s backward for `dy` at its input `x`: adds `dγ` and
/// `dβ` to `grads`, returns `dx`.
fn norm_grads(
    params: &Params,
    grads: &mut Grads,
    name: &str,
    x: &[f64],
    norm: &Norm,
    dy: &[f64],
) -> Vec<f64> {
    let weight = format!("{name}.weight");
    let (dx, dg, db) = layer_norm_backward(x, norm, w(params, &weight), dy);
    grads.add(&weight, &dg);
    grads.add(&format!("{name}.bias"), &db);
    dx
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

/// Block `i`'s backward: adds its parameters' gradients for `dout` (of its
/// output) to `grads` and returns the gradient of its input `x`.
#[allow(clippy::too_many_arguments)]
fn block_backward(
    params: &Params,
    c: &Gpt2Config,
    i: usize,
    x: &[f64],
    tr: &BlockTrace,
    dout: &[f64],
    grads: &mut Grads,
    (batch, seq): (usize, usize),
) -> Vec<f64> {
    let (e, inner) = (c.n_embd, c.inner());
    let n = |s: &str| format!("h.{i}.{s}");
    let act = c
        .activation()
        .unwrap_or_else(|e| panic!("reference GPT-2 training: {e}"));
    let dfc = conv1d_grads(params, grads, &n("mlp.c_proj"), &tr.fc, dout, (inner, e));
    let dpre: Vec<f64> = dfc
        .iter()
        .zip(&tr.pre)
        .map(|(d, &z)| d * activation_grad(z, act))
        .collect();
    let dln_2 = conv1d_grads(params, grads, &n("mlp.c_fc"), &tr.ln_2.y, &dpre, (e, inner));
    let dm = norm_grads(params, grads, &n("ln_2"), &tr.mid, &tr.ln_2, &dln_2);
    // The residuals: `mid` reaches the output directly and through ln_2,
    // `x` reaches `mid` directly and through ln_1.
    let dmid = add(&dm, dout);
    let dheads = conv1d_grads(params, grads, &n("attn.c_proj"), &tr.attn, &dmid, (e, e));
    let dqkv = attention_backward(&tr.qkv, &tr.lse, &dheads, c, batch, seq);
    let dln_1 = conv1d_grads(
        params,
        grads,
        &n("attn.c_attn"),
        &tr.ln_1.y,
        &dqkv,
        (e, 3 * e),
    );
    let dx = norm_grads(params, grads, &n("ln_1"), x, &tr.ln_1, &dln_1);
    add(&dx, &dmid)
}

/// The mean softmax cross-entropy of the model with `params` on `ids`
/// (`[batch, seq]` row-major, each below `vocab_size`, `seq ≤
/// n_positions`) against `targets` (`[batch, seq]`; rows whose target is
/// [`IGNORE_INDEX`] are left out of the mean; loss 0 and every gradient 0
/// when all are), and the gradient of every parameter in `params` (same
/// names and shapes: `wte.weight` gets the tied head's and the embedding's,
/// `wpe` rows past `seq` and tensors the model does not read get 0).
///
/// Panics for inputs of the wrong length, `seq` past `n_positions` or a
/// tensor the model needs missing from `params`.
pub fn loss_and_grads(
    params: &Params,
    c: &Gpt2Config,
    ids: &[u32],
    targets: &[u32],
    batch: usize,
    seq: usize,
) -> (f64, Params) {
    assert!(
        ids.len() == batch * seq && targets.len() == ids.len() && seq <= c.n_positions,
        "reference GPT-2 training: {} ids and {} targets for batch {batch} × seq {seq} \
         (n_positions {})",
        ids.len(),
        targets.len(),
        c.n_positions
    );
    let mut grads = Grads(
        params
            .iter()
            .map(|(k, v)| (k.clone(), vec![0.0; v.len()]))
            .collect(),
    );
    let e = c.n_embd;
    let tr = gpt2::trace(params, c, ids, batch, seq);
    let (loss, dlogits) = cross_entropy(&tr.logits, targets, c.vocab_size);
    // The head: logits = ln_f(x) · wteᵀ, so d wte = dlogitsᵀ · ln_f(x).
    let wte = w(params, "wte.weight");
    let mut dwte = vec![0.0; wte.len()];
    let mut dxf = vec![0.0; tr.ln_f.y.len()];
    for (dl, (xf, dx)) in dlogits
        .chunks_exact(c.vocab_size)
        .zip(tr.ln_f.y.chunks_exact(e).zip(dxf.chunks_exact_mut(e)))
    {
        for (v, &g) in dl.iter().enumerate() {
            let (row, drow) = (&wte[v * e..][..e], &mut dwte[v * e..][..e]);
            for j in 0..e {
                dx[j] += g * row[j];
                drow[j] += g * xf[j];
            }
        }
    }
    grads.add("wte.weight", &dwte);
    let last = tr.blocks.last().map_or(&tr.embeddings, |b| &b.out);
    let mut dx = norm_grads(params, &mut grads, "ln_f", last, &tr.ln_f, &dxf);
    for (i, b) in tr.blocks.iter().enumerate().rev() {
        let x = if i == 0 {
            &tr.embeddings
        } else {
            &tr.blocks[i - 1].out
        };
        dx = block_backward(params, c, i, x, b, &dx, &mut grads, (batch, seq));
    }
    let (mut dwte, mut dwpe) = (
        vec![0.0; wte.len()],
        vec![0.0; w(params, "wpe.weight").len()],
    );
    for (r, (&id, d)) in ids.iter().zip(dx.chunks_exact(e)).enumerate() {
        let (tok, pos) = (id as usize * e, (r % seq) * e);
        dwte[tok..tok + e]
            .iter_mut()
            .zip(d)
            .for_each(|(g, d)| *g += d);
        dwpe[pos..pos + e]
            .iter_mut()
            .zip(d)
            .for_each(|(g, d)| *g += d);
    }
    grads.add("wte.weight", &dwte);
    grads.add("wpe.weight", &dwpe);
    (loss, grads.0)
}

/// AdamW (`torch.optim.AdamW` without amsgrad, as
/// [`reference::grad::adamw_step`](super::grad::adamw_step)) at step `t ≥
/// 1`, in f64, with weight decay `wd`.
fn adamw(
    p: &mut [f64],
    m: &mut [f64],
    v: &mut [f64],
    g: &[f64],
    t: u64,
    o: &AdamWOptions,
    wd: f64,
) {
    let (b1, b2) = o.betas;
    let t = t.min(i32::MAX as u64) as i32;
    let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    for i in 0..p.len() {
        let decayed = p[i] - o.lr * wd * p[i];
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        p[i] = decayed - o.lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + o.eps);
    }
}

/// Trains the model in f64: parameters initialised from a checkpoint's f32
/// tensors, AdamW with its own f64 moments (zero at the start), weight
/// decay only on the parameters [`decays`] applies to.
#[derive(Debug, Clone)]
pub struct TrainerRef {
    config: Gpt2Config,
    params: Params,
    m: Params,
    v: Params,
    /// The parameters [`decays`] applies to, by name.
    decayed: HashMap<String, bool>,
    grads: Option<Params>,
    steps: u64,
}

impl TrainerRef {
    /// A trainer at step 0 from `weights` (HF names and layouts, e.g.
    /// [`Gpt2::tensors`](crate::models::Gpt2::tensors) by name) for `c`.
    ///
    /// Panics unless `weights` holds exactly the tensors of
    /// [`param_shapes`], each of its length.
    pub fn new(weights: &Weights, c: &Gpt2Config) -> Self {
        let shapes = param_shapes(c);
        for (name, shape) in &shapes {
            let n: usize = shape.iter().product();
            let got = weights.get(name).map(Vec::len);
            assert!(
                got == Some(n),
                "reference GPT-2 training: {name} {shape:?} wants {n} values, got {got:?}"
            );
        }
        if let Some(extra) = weights
            .keys()
            .find(|k| !shapes.iter().any(|(n, _)| n == *k))
        {
            panic!("reference GPT-2 training: {extra} is not a parameter of the model");
        }
        let params = to_f64(weights);
        let zeros: Params = params
            .iter()
            .map(|(k, v)| (k.clone(), vec![0.0; v.len()]))
            .collect();
        TrainerRef {
            config: c.clone(),
            params,
            m: zeros.clone(),
            v: zeros,
            decayed: shapes.iter().map(|(n, s)| (n.clone(), decays(s))).collect(),
            grads: None,
            steps: 0,
        }
    }

    /// One training step on `ids` and `targets` (as [`loss_and_grads`]):
    /// returns the loss of the parameters before the update, then applies
    /// AdamW at step `steps() + 1` (the first is 1), weight decay
    /// `opts.weight_decay` on the parameters [`decays`] applies to and 0 on
    /// the others.
    ///
    /// Panics as [`loss_and_grads`].
    pub fn step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        opts: &AdamWOptions,
    ) -> f64 {
        let (loss, grads) = loss_and_grads(&self.params, &self.config, ids, targets, batch, seq);
        self.steps += 1;
        for (name, p) in self.params.iter_mut() {
            let wd = if self.decayed[name] {
                opts.weight_decay
            } else {
                0.0
            };
            let (m, v) = (self.m.get_mut(name), self.v.get_mut(name));
            let (m, v) = (m.expect("moments per param"), v.expect("moments per param"));
            adamw(p, m, v, &grads[name], self.steps, opts, wd);
        }
        self.grads = Some(grads);
        loss
    }

    /// The parameters (f64, the checkpoint's names and layouts).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The gradients the last [`step`](Self::step) took (at the parameters
    /// before it); `None` before the first.
    pub fn grads(&self) -> Option<&Params> {
        self.grads.as_ref()
    }

    /// AdamW's first and second moments, by parameter name.
    pub fn moments(&self) -> (&Params, &Params) {
        (&self.m, &self.v)
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameters rounded to f32: a checkpoint for
    /// [`reference::gpt2`](super::gpt2) or the device model.
    pub fn weights(&self) -> Weights {
        self.params
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|&x| x as f32).collect()))
            .collect()
    }
}
