//! The BERT encoder's parts, as Hugging Face names them (embeddings, self
//! attention, the output projections with their residual layer norms, the
//! feed-forward, the layer): each loads its own tensors from its name
//! prefix next to the code that runs them, and runs on flashdot's kernels
//! into a [`Workspace`] of activations reused across calls.

use super::config::BertConfig;
use super::weights::Prefix;
use crate::error::Result;
use crate::models::files::model_error;
use crate::ops::attention::{attention_into, AttentionOptions, Layout};
use crate::ops::embedding::{embedding_into, EmbeddingTables};
use crate::ops::matmul::{linear_into, Activation, MatmulOptions};
use crate::ops::norm::layer_norm_into;
use crate::{Context, DType, Tensor};

/// Activation tensors for batches of `n × seq` tokens, `[n · seq, width]`
/// in the weights' dtype: the hidden state `x`, the state after the
/// attention block `x1`, and each part's scratch.
#[derive(Debug)]
pub(super) struct Workspace {
    pub n: usize,
    pub seq: usize,
    /// The embedding lookup, `[n, seq, hidden]`.
    emb: Tensor,
    /// The hidden state: the input of each layer and its output.
    pub x: Tensor,
    x1: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    att: Tensor,
    a: Tensor,
    /// The feed-forward's inner activation, `[n · seq, intermediate]`.
    f: Tensor,
    f2: Tensor,
}

impl Workspace {
    pub fn new(ctx: &Context, c: &BertConfig, dtype: DType, n: usize, seq: usize) -> Result<Self> {
        let (rows, h) = (n * seq, c.hidden_size);
        let z = |shape: &[usize]| Tensor::empty(ctx, shape, dtype);
        Ok(Workspace {
            n,
            seq,
            emb: z(&[n, seq, h])?,
            x: z(&[rows, h])?,
            x1: z(&[rows, h])?,
            q: z(&[rows, h])?,
            k: z(&[rows, h])?,
            v: z(&[rows, h])?,
            att: z(&[rows, h])?,
            a: z(&[rows, h])?,
            f: z(&[rows, c.intermediate_size])?,
            f2: z(&[rows, h])?,
        })
    }
}

/// What every part's forward reads of the call besides its tensors.
pub(super) struct Step<'a> {
    /// Keeps activations in the weights' dtype (matmul defaults to f32 out).
    mm: MatmulOptions,
    /// Bshd over each sentence's own tokens (`kv_len`: padding is never
    /// attended).
    attn: AttentionOptions<'a>,
}

impl<'a> Step<'a> {
    /// A step over sentences of `lengths` real tokens, in `dtype`.
    pub fn new(lengths: &'a [u32], dtype: DType) -> Self {
        Step {
            mm: MatmulOptions::default().out_dtype(dtype),
            attn: AttentionOptions::default()
                .layout(Layout::Bshd)
                .kv_len(lengths),
        }
    }
}

/// PyTorch `nn.Linear`: `weight [out, in]`, `bias [out]`.
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(w: &Prefix, out: usize, inp: usize) -> Result<Self> {
        Ok(Linear {
            weight: w.get("weight", &[out, inp])?,
            bias: w.get("bias", &[out])?,
        })
    }

    /// `out = act(x · weightᵀ + bias)`.
    fn forward(&self, x: &Tensor, act: Activation, s: &Step, out: &Tensor) -> Result<()> {
        linear_into(x, &self.weight, Some(&self.bias), act, &s.mm, out)
    }
}

/// A layer norm over the hidden size: `weight` (γ) and `bias` (β).
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &Prefix, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        Ok(LayerNorm {
            weight: w.get("weight", &[h])?,
            bias: w.get("bias", &[h])?,
            eps: c.layer_norm_eps as f32,
        })
    }

    /// `out = norm(x + residual)`.
    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, out: &Tensor) -> Result<()> {
        layer_norm_into(x, residual, &self.weight, &self.bias, self.eps, out)
    }
}

/// Token, position and token-type tables, summed, then a layer norm.
#[derive(Debug)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(w: &Prefix, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Embeddings {
            word: w.get("word_embeddings.weight", &[c.vocab_size, h])?,
            position: w.get(
                "position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_type: w.get("token_type_embeddings.weight", &[c.type_vocab_size, h])?,
            norm: LayerNorm::load(&w.pp("LayerNorm"), c)?,
        })
    }

    /// Token `ids [n, seq]` (token type 0) into the hidden state `ws.x`.
    fn forward(&self, ids: &Tensor, ws: &Workspace) -> Result<()> {
        let tables = EmbeddingTables {
            word: &self.word,
            pos: &self.position,
            types: &self.token_type,
        };
        embedding_into(ids, None, tables, &ws.emb)?;
        self.norm
            .forward(&ws.emb.reshape(ws.x.shape())?, None, &ws.x)
    }
}

/// The query, key and value projections and attention of every head.
#[derive(Debug)]
struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: usize,
}

impl SelfAttention {
    fn load(w: &Prefix, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        Ok(SelfAttention {
            query: Linear::load(&w.pp("query"), h, h)?,
            key: Linear::load(&w.pp("key"), h, h)?,
            value: Linear::load(&w.pp("value"), h, h)?,
            heads: c.num_attention_heads,
        })
    }

    /// Attention of the hidden state `ws.x` into `ws.att` (through `ws.q`,
    /// `ws.k`, `ws.v`).
    fn forward(&self, ws: &Workspace, s: &Step) -> Result<()> {
        let none = Activation::None;
        self.query.forward(&ws.x, none, s, &ws.q)?;
        self.key.forward(&ws.x, none, s, &ws.k)?;
        self.value.forward(&ws.x, none, s, &ws.v)?;
        let h = ws.x.shape()[1];
        let heads = |t: &Tensor| t.reshape(&[ws.n, ws.seq, self.heads, h / self.heads]);
        attention_into(
            &heads(&ws.q)?,
            &heads(&ws.k)?,
            &heads(&ws.v)?,
            &s.attn,
            &heads(&ws.att)?,
            None,
        )
    }
}

/// A projection back to the hidden size, then a layer norm of it plus the
/// residual (Hugging Face's `BertSelfOutput` after the attention and
/// `BertOutput` after the feed-forward).
#[derive(Debug)]
struct Output {
    dense: Linear,
    norm: LayerNorm,
}

impl Output {
    fn load(w: &Prefix, c: &BertConfig, inp: usize) -> Result<Self> {
        Ok(Output {
            dense: Linear::load(&w.pp("dense"), c.hidden_size, inp)?,
            norm: LayerNorm::load(&w.pp("LayerNorm"), c)?,
        })
    }

    /// `out = norm(dense(x) + residual)`, through `scratch`.
    fn forward(
        &self,
        x: &Tensor,
        residual: &Tensor,
        s: &Step,
        scratch: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.dense.forward(x, Activation::None, s, scratch)?;
        self.norm.forward(scratch, Some(residual), out)
    }
}

/// One transformer layer: self-attention and its output, the feed-forward's
/// widening projection with the activation, and its output.
#[derive(Debug)]
struct Layer {
    attention: SelfAttention,
    attention_output: Output,
    intermediate: Linear,
    act: Activation,
    output: Output,
}

impl Layer {
    /// Tensors each layer holds (a config's layer count is checked against
    /// the file with it).
    const TENSORS: usize = 16;

    fn load(w: &Prefix, c: &BertConfig, act: Activation) -> Result<Self> {
        let (h, f) = (c.hidden_size, c.intermediate_size);
        Ok(Layer {
            attention: SelfAttention::load(&w.pp("attention.self"), c)?,
            attention_output: Output::load(&w.pp("attention.output"), c, h)?,
            intermediate: Linear::load(&w.pp("intermediate.dense"), f, h)?,
            act,
            output: Output::load(&w.pp("output"), c, f)?,
        })
    }

    /// The hidden state `ws.x` through the layer, back into `ws.x`.
    fn forward(&self, ws: &Workspace, s: &Step) -> Result<()> {
        self.attention.forward(ws, s)?;
        self.attention_output
            .forward(&ws.att, &ws.x, s, &ws.a, &ws.x1)?;
        self.intermediate.forward(&ws.x1, self.act, s, &ws.f)?;
        self.output.forward(&ws.f, &ws.x1, s, &ws.f2, &ws.x)
    }
}

/// The embeddings and every layer.
#[derive(Debug)]
pub(super) struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Encoder {
    /// Loads the encoder from the checkpoint root `w` (`embeddings.…`,
    /// `encoder.layer.{i}.…`), with `act` in the feed-forward.
    ///
    /// Errors: [`Error::Model`](crate::Error::Model) naming the file and
    /// tensor for one missing or of the wrong shape, or a layer count the
    /// file cannot hold; GPU errors.
    pub fn load(w: &Prefix, c: &BertConfig, act: Activation) -> Result<Self> {
        // Refused before anything is sized from the claim.
        if c.num_hidden_layers > w.tensors() / Layer::TENSORS {
            return Err(model_error(
                w.path(),
                format!(
                    "config.json gives {} layers, but the file holds {} tensors ({} a layer)",
                    c.num_hidden_layers,
                    w.tensors(),
                    Layer::TENSORS
                ),
            ));
        }
        let layers = w.pp("encoder.layer");
        Ok(Encoder {
            embeddings: Embeddings::load(&w.pp("embeddings"), c)?,
            layers: (0..c.num_hidden_layers)
                .map(|i| Layer::load(&layers.pp(i), c, act))
                .collect::<Result<_>>()?,
        })
    }

    /// Token `ids [n, seq]` through the embeddings and every layer into the
    /// hidden state `ws.x`, calling `state` on it after the embeddings and
    /// after each layer.
    pub fn forward(
        &self,
        ids: &Tensor,
        ws: &Workspace,
        s: &Step,
        mut state: impl FnMut(&Tensor) -> Result<()>,
    ) -> Result<()> {
        self.embeddings.forward(ids, ws)?;
        state(&ws.x)?;
        for layer in &self.layers {
            layer.forward(ws, s)?;
            state(&ws.x)?;
        }
        Ok(())
    }
}
