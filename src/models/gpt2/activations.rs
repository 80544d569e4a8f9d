//! The activations of a forward over `batch × seq` tokens
//! ([`Gpt2Activations`]): the tensors every block writes, either one set
//! reused by every block (inference: only the logits are wanted) or a set
//! per block kept to the end (what a backward reads, and what the tests
//! compare stage by stage).

use super::config::Gpt2Config;
use crate::error::{Error, Result};
use crate::{Context, DType, Tensor};

/// What one block writes, `[batch · seq, width]` f32 unless said.
#[derive(Debug)]
pub(super) struct BlockActs {
    /// `ln_1` of the block's input.
    pub ln_1: Tensor,
    /// `c_attn`'s output `[rows, 3 · n_embd]`: q, k and v side by side,
    /// each `[n_head, head_dim]` per row (the attention reads them as
    /// views).
    pub qkv: Tensor,
    /// The attention's output, `[batch, seq, n_head, head_dim]` (Bshd).
    pub attn: Tensor,
    /// Its log-sum-exp `[batch, n_head, seq]`, when kept (the attention
    /// backward recomputes the probabilities from it).
    pub lse: Option<Tensor>,
    /// The attention's `c_proj`.
    pub proj: Tensor,
    /// The residual stream after the attention: input + `proj`.
    pub mid: Tensor,
    /// `ln_2` of `mid`.
    pub ln_2: Tensor,
    /// `c_fc` before its activation, `[rows, n_inner]`, when kept (the
    /// activation's backward reads it; else the activation is fused).
    pub fc_pre: Option<Tensor>,
    /// `c_fc` with its activation, `[rows, n_inner]`.
    pub fc: Tensor,
    /// The feed-forward's `c_proj`.
    pub mlp: Tensor,
}

impl BlockActs {
    fn new(ctx: &Context, c: &Gpt2Config, batch: usize, seq: usize, keep: bool) -> Result<Self> {
        let (rows, e) = (batch * seq, c.n_embd);
        let t = |shape: &[usize]| Tensor::zeros(ctx, shape, DType::F32);
        Ok(BlockActs {
            ln_1: t(&[rows, e])?,
            qkv: t(&[rows, 3 * e])?,
            attn: t(&[batch, seq, c.n_head, c.head_dim()])?,
            lse: keep.then(|| t(&[batch, c.n_head, seq])).transpose()?,
            proj: t(&[rows, e])?,
            mid: t(&[rows, e])?,
            ln_2: t(&[rows, e])?,
            fc_pre: keep.then(|| t(&[rows, c.inner()])).transpose()?,
            fc: t(&[rows, c.inner()])?,
            mlp: t(&[rows, e])?,
        })
    }
}

/// The tensors a [`Gpt2::forward_into`](super::Gpt2::forward_into) over
/// `batch × seq` tokens writes, made by
/// [`Gpt2::activations`](super::Gpt2::activations) for one model and reused
/// by every forward of that shape. Reuse is safe across calls: a forward's
/// writes and reads of them are commands of one submission, and submissions
/// run in order.
///
/// With `keep`, every block has its own tensors, each block's feed-forward
/// pre-activation is kept too (what a backward reads), and the residual
/// stream after each block and each block's attention log-sum-exp stay
/// readable ([`hidden`](Self::hidden), [`lse`](Self::lse)); without, one set
/// serves every block and only the logits are defined after a forward.
#[derive(Debug)]
pub struct Gpt2Activations {
    pub(super) batch: usize,
    pub(super) seq: usize,
    /// The model shape these were made for (vocab, n_embd, n_inner,
    /// n_head, n_layer).
    pub(super) made_for: [usize; 5],
    keep: bool,
    /// The residual stream `[rows, n_embd]`: the embeddings, then the
    /// output of each block (`n_layer + 1` kept, else two used in turn).
    stream: Vec<Tensor>,
    /// One per block kept, else one for all.
    blocks: Vec<BlockActs>,
    /// `ln_f` of the last stream.
    pub(super) ln_f: Tensor,
    /// `[batch, seq, vocab]`.
    logits: Tensor,
}

impl Gpt2Activations {
    /// Allocates (zeroed) the activations of `batch × seq` tokens for a
    /// model of config `c` (checked already).
    ///
    /// Errors: [`Error::Shape`] for `seq` past `n_positions`; GPU errors
    /// (a buffer too large for the adapter is [`Error::TooLarge`]).
    pub(super) fn new(
        ctx: &Context,
        c: &Gpt2Config,
        batch: usize,
        seq: usize,
        keep: bool,
    ) -> Result<Self> {
        check_seq(c, seq)?;
        let rows = batch.checked_mul(seq).ok_or_else(|| Error::Shape {
            op: "Gpt2::activations",
            detail: format!("batch {batch} × seq {seq} overflows"),
        })?;
        let (streams, sets) = match keep {
            true => (c.n_layer + 1, c.n_layer),
            false => (2, c.n_layer.min(1)),
        };
        let e = c.n_embd;
        Ok(Gpt2Activations {
            batch,
            seq,
            made_for: shape_of(c),
            keep,
            stream: (0..streams)
                .map(|_| Tensor::zeros(ctx, &[rows, e], DType::F32))
                .collect::<Result<_>>()?,
            blocks: (0..sets)
                .map(|_| BlockActs::new(ctx, c, batch, seq, keep))
                .collect::<Result<_>>()?,
            ln_f: Tensor::zeros(ctx, &[rows, e], DType::F32)?,
            logits: Tensor::zeros(ctx, &[batch, seq, c.vocab_size], DType::F32)?,
        })
    }

    /// Sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Tokens per sequence.
    pub fn seq(&self) -> usize {
        self.seq
    }
    /// Whether every block's activations are kept.
    pub fn keeps(&self) -> bool {
        self.keep
    }

    /// The logits `[batch, seq, vocab]` f32 of the last forward.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// The residual stream `[batch · seq, n_embd]` f32 entering block `i`
    /// (`0`: the token + position embeddings; `n_layer`: the last block's
    /// output, before `ln_f`); `None` unless kept, or for `i > n_layer`.
    pub fn hidden(&self, i: usize) -> Option<&Tensor> {
        self.keep.then(|| self.stream.get(i)).flatten()
    }

    /// Block `i`'s attention log-sum-exp `[batch, n_head, seq]` f32 (natural
    /// log, of the scaled scores); `None` unless kept.
    pub fn lse(&self, i: usize) -> Option<&Tensor> {
        self.blocks.get(i).and_then(|b| b.lse.as_ref())
    }

    /// The stream block `i` reads (block `i − 1` writes it).
    pub(super) fn stream(&self, i: usize) -> &Tensor {
        &self.stream[i % self.stream.len()]
    }

    /// The tensors block `i` writes.
    pub(super) fn block(&self, i: usize) -> &BlockActs {
        &self.blocks[i % self.blocks.len()]
    }

    /// The logits as `[batch · seq, vocab]` rows.
    pub(super) fn logit_rows(&self) -> Result<Tensor> {
        let v = self.logits.shape()[2];
        self.logits.reshape(&[self.batch * self.seq, v])
    }
}

/// The shape a model's activations are made for.
pub(super) fn shape_of(c: &Gpt2Config) -> [usize; 5] {
    [c.vocab_size, c.n_embd, c.inner(), c.n_head, c.n_layer]
}

/// Refuses a sequence longer than the position table.
pub(super) fn check_seq(c: &Gpt2Config, seq: usize) -> Result<()> {
    if seq > c.n_positions {
        return Err(Error::Shape {
            op: "Gpt2::forward",
            detail: format!(
                "seq {seq} is past the model's {} positions (n_positions)",
                c.n_positions
            ),
        });
    }
    Ok(())
}
