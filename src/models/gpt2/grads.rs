//! What a backward through the model writes: the scratch gradients of the
//! activations ([`Scratch`], one set reused by every block, since the
//! backward runs block by block) and a tensor per parameter for its
//! gradient and AdamW's moments ([`zeros_like`], in the parameters' load
//! order and device layouts).

use super::config::Gpt2Config;
use crate::error::Result;
use crate::{Context, DType, Tensor};

/// The activations' gradients of one backward over `rows = batch · seq`
/// tokens, f32.
#[derive(Debug)]
pub(super) struct Scratch {
    /// `[rows, vocab]`: the loss's gradient of the logits.
    pub logits: Tensor,
    /// `[rows, e]`: of `ln_f`'s output.
    pub ln_f: Tensor,
    /// `[rows, e]` each: of the residual stream after a block and before it
    /// (used in turn from the last block down).
    pub stream: [Tensor; 2],
    /// `[rows, e]`: of a layer norm's output (`ln_2`, then `ln_1`).
    pub ln: Tensor,
    /// `[rows, e]`: of the stream after the attention (`mid`).
    pub mid: Tensor,
    /// `[rows, n_inner]`: of `c_fc`'s activated output.
    pub fc: Tensor,
    /// `[batch, seq, n_head, head_dim]`: of the attention's output.
    pub attn: Tensor,
    /// `[batch, seq, n_head, head_dim]` each: of q, k and v (the attention
    /// backward writes tensors of their own).
    pub dq: Tensor,
    pub dk: Tensor,
    pub dv: Tensor,
    /// `[rows, 3 · e]`: of `c_attn`'s output, q, k and v copied into their
    /// columns.
    pub qkv: Tensor,
    /// `[vocab, e]`: the embedding lookup's share of `wte`'s gradient (the
    /// LM head's is written first, into the parameter's gradient).
    pub wte: Tensor,
}

impl Scratch {
    pub fn new(ctx: &Context, c: &Gpt2Config, batch: usize, seq: usize) -> Result<Self> {
        let (rows, e) = (batch * seq, c.n_embd);
        let t = |shape: &[usize]| Tensor::zeros(ctx, shape, DType::F32);
        let heads = [batch, seq, c.n_head, c.head_dim()];
        Ok(Scratch {
            logits: t(&[rows, c.vocab_size])?,
            ln_f: t(&[rows, e])?,
            stream: [t(&[rows, e])?, t(&[rows, e])?],
            ln: t(&[rows, e])?,
            mid: t(&[rows, e])?,
            fc: t(&[rows, c.inner()])?,
            attn: t(&heads)?,
            dq: t(&heads)?,
            dk: t(&heads)?,
            dv: t(&heads)?,
            qkv: t(&[rows, 3 * e])?,
            wte: t(&[c.vocab_size, e])?,
        })
    }
}

/// A zero f32 tensor of each of `params`' shapes, in their order: a
/// parameter's gradient, or one of AdamW's moments (device layouts,
/// `Conv1D` weights `[out, in]`); each part of the model takes its own run
/// of them, in the order its `params` lists.
pub(super) fn zeros_like<'a>(
    ctx: &Context,
    params: impl Iterator<Item = &'a Tensor>,
) -> Result<Vec<Tensor>> {
    params
        .map(|p| Tensor::zeros(ctx, p.shape(), DType::F32))
        .collect()
}
