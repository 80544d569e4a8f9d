//! GPT-2's parts as Hugging Face names them (`wte`, `wpe`, `h.{i}` with
//! `ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`,
//! then `ln_f`): each loads its own tensors from its name prefix (with the
//! init GPT-2 gives it) next to the code that runs it on flashdot's
//! kernels, into a [`Gpt2Activations`].

use super::activations::{BlockActs, Gpt2Activations};
use super::config::Gpt2Config;
use super::grads::Scratch;
use super::params::{Init, Param, Prefix};
use crate::error::Result;
use crate::ops::attention::{
    attention_backward_into, attention_into, kv_append, AttentionOptions, Causal, GradientsInto,
    Layout, PagedKv,
};
use crate::ops::embedding::{embedding_into, EmbeddingTables};
use crate::ops::grad::{
    accumulate, activation_into, add_into, embedding_backward_into, layer_norm_backward_into,
    linear_backward_into, EmbeddingGrads, LinearGradsInto, NormGrads,
};
use crate::ops::matmul::{linear_into, Activation, MatmulOptions};
use crate::ops::norm::layer_norm_into;
use crate::{DType, Tensor};

/// A layer norm over `n_embd`: `weight` (γ, init 1) and `bias` (β, init 0).
#[derive(Debug)]
struct LayerNorm {
    weight: Param,
    bias: Param,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &Prefix, c: &Gpt2Config) -> Result<Self> {
        let e = c.n_embd;
        Ok(LayerNorm {
            weight: w.get("weight", &[e], Init::Ones)?,
            bias: w.get("bias", &[e], Init::Zeros)?,
            eps: c.layer_norm_epsilon as f32,
        })
    }

    fn forward(&self, x: &Tensor, out: &Tensor) -> Result<()> {
        layer_norm_into(
            x,
            None,
            &self.weight.tensor,
            &self.bias.tensor,
            self.eps,
            out,
        )
    }

    fn params(&self) -> [&Param; 2] {
        [&self.weight, &self.bias]
    }

    /// The gradient `dy` of `forward(x)` back into `dx`, and into `g`
    /// (γ's, β's).
    fn backward(&self, x: &Tensor, dy: &Tensor, dx: &Tensor, g: &[Tensor]) -> Result<()> {
        let grads = NormGrads {
            dx,
            dgamma: &g[0],
            dbeta: &g[1],
        };
        layer_norm_backward_into(x, None, &self.weight.tensor, self.eps, dy, grads)
    }
}

/// Hugging Face's `Conv1D`: `y = x · W + b` with `W [in, out]` in the file,
/// held as `[out, in]` for [`linear_into`]; bias init 0.
#[derive(Debug)]
struct Conv1d {
    weight: Param,
    bias: Param,
}

impl Conv1d {
    fn load(w: &Prefix, inp: usize, out: usize, std: f64) -> Result<Self> {
        Ok(Conv1d {
            weight: w.conv1d("weight", inp, out, Init::Normal(std))?,
            bias: w.get("bias", &[out], Init::Zeros)?,
        })
    }

    /// `out = act(x · W + b)`.
    fn forward(&self, x: &Tensor, act: Activation, out: &Tensor) -> Result<()> {
        let (w, b) = (&self.weight.tensor, &self.bias.tensor);
        linear_into(x, w, Some(b), act, &MatmulOptions::default(), out)
    }

    fn params(&self) -> [&Param; 2] {
        [&self.weight, &self.bias]
    }

    /// The gradient `dy` of `act(x · W + b)` (`pre`: the kept `x · W + b`)
    /// back into `dx` (unless `None`) and into `g` (W's, b's).
    fn backward(
        &self,
        x: &Tensor,
        dy: &Tensor,
        (act, pre): (Activation, Option<&Tensor>),
        dx: Option<&Tensor>,
        g: &[Tensor],
    ) -> Result<()> {
        let grads = LinearGradsInto {
            dx,
            dw: Some(&g[0]),
            db: Some(&g[1]),
        };
        linear_backward_into(x, &self.weight.tensor, dy, act, pre, grads)
    }
}

/// Causal self-attention: `c_attn` (q, k and v in one projection), every
/// head over its sequence's earlier tokens, `c_proj`.
#[derive(Debug)]
struct Attention {
    c_attn: Conv1d,
    c_proj: Conv1d,
    heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Attention {
    fn load(w: &Prefix, c: &Gpt2Config) -> Result<Self> {
        let (e, std) = (c.n_embd, c.initializer_range);
        Ok(Attention {
            c_attn: Conv1d::load(&w.pp("c_attn"), e, 3 * e, std)?,
            c_proj: Conv1d::load(&w.pp("c_proj"), e, e, proj_std(c))?,
            heads: c.n_head,
            head_dim: c.head_dim(),
            scale: c.attn_scale() as f32,
        })
    }

    /// `a.ln_1` through `c_attn` into `a.qkv`, attention into `a.attn`
    /// (and `a.lse`), `c_proj` into `a.proj`.
    /// With `kv` (decoding), k and v are appended to block `kv.1`'s cache
    /// and the queries attend over it instead.
    fn forward(&self, a: &BlockActs, kv: Option<(&Cached, usize)>) -> Result<()> {
        self.c_attn.forward(&a.ln_1, Activation::None, &a.qkv)?;
        let (b, s) = (a.attn.shape()[0], a.attn.shape()[1]);
        let (h, d) = (self.heads, self.head_dim);
        let [q, k, v] = self.heads_of(&a.qkv, (b, s))?;
        match kv {
            None => attention_into(&q, &k, &v, &self.options(), &a.attn, a.lse.as_ref())?,
            Some((c, layer)) => {
                let (kc, vc) = &c.layers[layer];
                let (k, v) = (k.contiguous()?, v.contiguous()?);
                kv_append(kc, vc, &k, &v, c.lens, Layout::Bshd, c.paged)?;
                // Each sequence's new queries are the last s of its kv_len
                // keys (padding rows of shorter chunks come after its real
                // ones, so no real query sees them).
                let mut opts = self.options().causal(Causal::BottomRight).kv_len(c.kv_len);
                opts.paged = c.paged;
                attention_into(&q, kc, vc, &opts, &a.attn, None)?;
            }
        }
        let attn = a.attn.reshape(&[b * s, h * d])?;
        self.c_proj.forward(&attn, Activation::None, &a.proj)
    }

    /// q, k and v as `[b, s, heads, d]` views of `qkv [b · s, 3 · e]`: each
    /// row is `[q | k | v]`, each `[heads, d]`, so as `[b, s, 3 · heads, d]`
    /// they are the heads from 0, `heads` and `2 · heads` (strided: the
    /// attention reads each through one gather copy).
    fn heads_of(&self, qkv: &Tensor, (b, s): (usize, usize)) -> Result<[Tensor; 3]> {
        let (h, d) = (self.heads, self.head_dim);
        let qkv = qkv.reshape(&[b, s, 3 * h, d])?;
        Ok([
            qkv.narrow(2, 0, h)?,
            qkv.narrow(2, h, h)?,
            qkv.narrow(2, 2 * h, h)?,
        ])
    }

    fn options(&self) -> AttentionOptions<'static> {
        AttentionOptions::default()
            .layout(Layout::Bshd)
            .causal(Causal::TopLeft)
            .scale(self.scale)
    }

    fn params(&self) -> [&Param; 4] {
        let [w, b] = self.c_attn.params();
        let [pw, pb] = self.c_proj.params();
        [w, b, pw, pb]
    }

    /// The gradient `dy` of the block's attention (its `c_proj`'s output)
    /// back into `dln` (of `ln_1`'s output) and into `g` (in `params`'
    /// order), through `s`.
    fn backward(
        &self,
        a: &BlockActs,
        dy: &Tensor,
        dln: &Tensor,
        s: &Scratch,
        g: &[Tensor],
    ) -> Result<()> {
        let none = (Activation::None, None);
        let [b, seq, h, d] = *a.attn.shape() else {
            unreachable!("the attention output is [b, s, h, d]")
        };
        let attn = a.attn.reshape(&[b * seq, h * d])?;
        let dattn = s.attn.reshape(&[b * seq, h * d])?;
        self.c_proj
            .backward(&attn, dy, none, Some(&dattn), &g[2..4])?;
        let [q, k, v] = self.heads_of(&a.qkv, (b, seq))?;
        let into = GradientsInto {
            dq: &s.dq,
            dk: &s.dk,
            dv: &s.dv,
            dbias: None,
        };
        let opts = self.options();
        attention_backward_into(&q, &k, &v, &a.attn, &s.attn, a.lse.as_ref(), &opts, &into)?;
        let dqkv = self.heads_of(&s.qkv, (b, seq))?;
        for (part, grad) in dqkv.iter().zip([&s.dq, &s.dk, &s.dv]) {
            part.copy_from(grad)?;
        }
        self.c_attn
            .backward(&a.ln_1, &s.qkv, none, Some(dln), &g[0..2])
    }
}

/// GPT-2's init of the projections into the residual stream: std
/// `initializer_range / √(2 · n_layer)` (two residual adds a block).
fn proj_std(c: &Gpt2Config) -> f64 {
    c.initializer_range / (2.0 * c.n_layer.max(1) as f64).sqrt()
}

/// The feed-forward: `c_fc` with the activation (fused, unless the
/// pre-activation is kept for a backward), `c_proj`.
#[derive(Debug)]
struct Mlp {
    c_fc: Conv1d,
    c_proj: Conv1d,
    act: Activation,
}

impl Mlp {
    fn load(w: &Prefix, c: &Gpt2Config, act: Activation) -> Result<Self> {
        let (e, f) = (c.n_embd, c.inner());
        Ok(Mlp {
            c_fc: Conv1d::load(&w.pp("c_fc"), e, f, c.initializer_range)?,
            c_proj: Conv1d::load(&w.pp("c_proj"), f, e, proj_std(c))?,
            act,
        })
    }

    /// `a.ln_2` through `c_fc` into `a.fc` (and `a.fc_pre`), `c_proj` into
    /// `a.mlp`.
    fn forward(&self, a: &BlockActs) -> Result<()> {
        match &a.fc_pre {
            Some(pre) => {
                self.c_fc.forward(&a.ln_2, Activation::None, pre)?;
                activation_into(pre, self.act, &a.fc)?;
            }
            None => self.c_fc.forward(&a.ln_2, self.act, &a.fc)?,
        }
        self.c_proj.forward(&a.fc, Activation::None, &a.mlp)
    }

    fn params(&self) -> [&Param; 4] {
        let [w, b] = self.c_fc.params();
        let [pw, pb] = self.c_proj.params();
        [w, b, pw, pb]
    }

    /// The gradient `dy` of the feed-forward's output back into `dln` (of
    /// `ln_2`'s output) and into `g`, through `s`.
    fn backward(
        &self,
        a: &BlockActs,
        dy: &Tensor,
        dln: &Tensor,
        s: &Scratch,
        g: &[Tensor],
    ) -> Result<()> {
        let none = (Activation::None, None);
        self.c_proj
            .backward(&a.fc, dy, none, Some(&s.fc), &g[2..4])?;
        let act = (self.act, a.fc_pre.as_ref());
        self.c_fc.backward(&a.ln_2, &s.fc, act, Some(dln), &g[0..2])
    }
}

/// One pre-LN transformer block: `x + attn(ln_1(x))`, then that `+
/// mlp(ln_2(·))`.
#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(w: &Prefix, c: &Gpt2Config, act: Activation) -> Result<Self> {
        Ok(Block {
            ln_1: LayerNorm::load(&w.pp("ln_1"), c)?,
            attn: Attention::load(&w.pp("attn"), c)?,
            ln_2: LayerNorm::load(&w.pp("ln_2"), c)?,
            mlp: Mlp::load(&w.pp("mlp"), c, act)?,
        })
    }

    /// The stream `x` through the block into `out`, through `a`.
    fn forward(
        &self,
        x: &Tensor,
        a: &BlockActs,
        out: &Tensor,
        kv: Option<(&Cached, usize)>,
    ) -> Result<()> {
        self.ln_1.forward(x, &a.ln_1)?;
        self.attn.forward(a, kv)?;
        add_into(x, &a.proj, &a.mid)?;
        self.ln_2.forward(&a.mid, &a.ln_2)?;
        self.mlp.forward(a)?;
        add_into(&a.mid, &a.mlp, out)
    }

    fn params(&self) -> impl Iterator<Item = &Param> {
        let ln = self.ln_1.params().into_iter();
        ln.chain(self.attn.params())
            .chain(self.ln_2.params())
            .chain(self.mlp.params())
    }

    /// Parameters a block has (the length of `params`).
    const PARAMS: usize = 12;

    /// The gradient `dy` of the block's output back into `dx` (of its input
    /// stream `x`) and into `g` (in `params`' order), through `s`.
    fn backward(
        &self,
        x: &Tensor,
        a: &BlockActs,
        dy: &Tensor,
        dx: &Tensor,
        s: &Scratch,
        g: &[Tensor],
    ) -> Result<()> {
        // out = mid + mlp(ln_2(mid)): mid's gradient is dy plus the
        // feed-forward's share.
        self.mlp.backward(a, dy, &s.ln, s, &g[8..12])?;
        self.ln_2.backward(&a.mid, &s.ln, &s.mid, &g[6..8])?;
        accumulate(&s.mid, dy)?;
        // mid = x + attn(ln_1(x)): likewise for x.
        self.attn.backward(a, &s.mid, &s.ln, s, &g[2..6])?;
        self.ln_1.backward(x, &s.ln, dx, &g[0..2])?;
        accumulate(dx, &s.mid)
    }
}

/// One decoding call's view of a KV cache (checked by the cache): each
/// block's K and V (contiguous `[batch, capacity, heads, d]` or page pools),
/// each sequence's length before the call and after it (padding included),
/// the block table, the new tokens' positions `[batch, s]` u32, and a zero
/// `[n_positions, n_embd]` table.
pub(super) struct Cached<'a> {
    pub layers: &'a [(Tensor, Tensor)],
    pub lens: &'a [u32],
    pub kv_len: &'a [u32],
    pub paged: Option<PagedKv<'a>>,
    pub positions: &'a Tensor,
    pub zeros: &'a Tensor,
}

/// The whole model: embeddings, the blocks, `ln_f`, and the LM head tied to
/// `wte`.
#[derive(Debug)]
pub(super) struct Transformer {
    /// `[vocab, n_embd]`, init normal(`initializer_range`).
    wte: Param,
    /// `[n_positions, n_embd]`, likewise.
    wpe: Param,
    /// A zero `[1, n_embd]` token-type table: the embedding op adds one
    /// (GPT-2 has none; adding 0 changes no value).
    no_types: Tensor,
    h: Vec<Block>,
    ln_f: LayerNorm,
}

impl Transformer {
    /// Loads (or draws) the model's tensors from the root `w`, in the order
    /// `wte`, `wpe`, each block's `ln_1`, `attn.c_attn`, `attn.c_proj`,
    /// `ln_2`, `mlp.c_fc`, `mlp.c_proj` (weight then bias), `ln_f`: a
    /// random init draws them in that order.
    ///
    /// Errors: as [`Prefix::get`], for the first tensor that fails.
    pub fn load(w: &Prefix, c: &Gpt2Config, act: Activation) -> Result<Self> {
        let (e, std) = (c.n_embd, c.initializer_range);
        let wte = w.get("wte.weight", &[c.vocab_size, e], Init::Normal(std))?;
        let no_types = Tensor::zeros(wte.tensor.context(), &[1, e], DType::F32)?;
        Ok(Transformer {
            wpe: w.get("wpe.weight", &[c.n_positions, e], Init::Normal(std))?,
            wte,
            no_types,
            h: (0..c.n_layer)
                .map(|i| Block::load(&w.pp("h").pp(i), c, act))
                .collect::<Result<_>>()?,
            ln_f: LayerNorm::load(&w.pp("ln_f"), c)?,
        })
    }

    /// The gradient `s.logits` of the logits of the forward into `acts` (of
    /// token `ids`, the host copy of the forward's) back into every
    /// parameter's gradient `g` (in [`params`](Self::params)' order, device
    /// layouts), through `s`.
    pub fn backward(
        &self,
        ids: &[u32],
        acts: &Gpt2Activations,
        s: &Scratch,
        g: &[Tensor],
    ) -> Result<()> {
        let (b, seq, layers) = (acts.batch, acts.seq, self.h.len());
        let e = self.wte.tensor.shape()[1];
        // The tied head: logits = ln_f · wteᵀ, its wte gradient written first.
        let head = LinearGradsInto {
            dx: Some(&s.ln_f),
            dw: Some(&g[0]),
            db: None,
        };
        let none = Activation::None;
        linear_backward_into(&acts.ln_f, &self.wte.tensor, &s.logits, none, None, head)?;
        let last = 2 + Block::PARAMS * layers;
        self.ln_f.backward(
            acts.stream(layers),
            &s.ln_f,
            &s.stream[layers % 2],
            &g[last..],
        )?;
        for (i, block) in self.h.iter().enumerate().rev() {
            let g = &g[2 + Block::PARAMS * i..][..Block::PARAMS];
            let (dy, dx) = (&s.stream[(i + 1) % 2], &s.stream[i % 2]);
            block.backward(acts.stream(i), acts.block(i), dy, dx, s, g)?;
        }
        let grads = EmbeddingGrads {
            word: Some(&s.wte),
            pos: Some(&g[1]),
            types: None,
        };
        embedding_backward_into(ids, None, &s.stream[0].reshape(&[b, seq, e])?, grads)?;
        accumulate(&g[0], &s.wte)
    }

    /// Every parameter, in load order.
    pub fn params(&self) -> Vec<&Param> {
        let mut p = vec![&self.wte, &self.wpe];
        p.extend(self.h.iter().flat_map(Block::params));
        p.extend(self.ln_f.params());
        p
    }

    /// Token `ids [batch, seq]` u32 through the model into `acts` (their
    /// shape and the model's checked by the caller): the embeddings into
    /// stream 0, block `i` from stream `i` into stream `i + 1`, `ln_f`, and
    /// the logits `ln_f · wteᵀ`. With `kv` (decoding: the checked call of
    /// the cache), the tokens sit at its positions and every block attends
    /// over its cache.
    pub fn forward(&self, ids: &Tensor, acts: &Gpt2Activations, kv: Option<&Cached>) -> Result<()> {
        let (b, s) = (acts.batch, acts.seq);
        let e = self.wte.tensor.shape()[1];
        let stream = acts.stream(0).reshape(&[b, s, e])?;
        match kv {
            None => {
                let tables = EmbeddingTables {
                    word: &self.wte.tensor,
                    pos: &self.wpe.tensor,
                    types: &self.no_types,
                };
                embedding_into(ids, None, tables, &stream)?;
            }
            Some(c) => {
                // Each token's position is its sequence's length so far plus
                // its index: the embedding op's type-id slot looks it up in
                // wpe, its position slot in a zero table. The sum is the
                // forward's bit for bit: (w + 0) + p = (w + p) + 0.
                let tables = EmbeddingTables {
                    word: &self.wte.tensor,
                    pos: c.zeros,
                    types: &self.wpe.tensor,
                };
                embedding_into(ids, Some(c.positions), tables, &stream)?;
            }
        }
        for (i, block) in self.h.iter().enumerate() {
            let kv = kv.map(|c| (c, i));
            block.forward(acts.stream(i), acts.block(i), acts.stream(i + 1), kv)?;
        }
        self.ln_f.forward(acts.stream(self.h.len()), &acts.ln_f)?;
        let opts = MatmulOptions::default();
        let none = Activation::None;
        linear_into(
            &acts.ln_f,
            &self.wte.tensor,
            None,
            none,
            &opts,
            acts.logits(),
        )
    }
}
