//! Scaled-dot-product attention, `O = softmax(Q·Kᵀ·scale + bias + mask)·V`, as
//! PyTorch's `scaled_dot_product_attention` and FlashAttention define it.
//! Kernel source: the `.wgsl` files beside the launchers.
//!
//! Shapes (layout [`Layout::Bhsd`]): q `[batch, heads_q, seq_q, d]`,
//! k `[batch, heads_kv, seq_k, d]`, v `[batch, heads_kv, seq_k, d_v]`,
//! out `[batch, heads_q, seq_q, d_v]`; [`Layout::Bshd`] swaps the seq and head axes
//! of all four. `heads_q` must be a multiple of `heads_kv` (GQA / MQA): query head
//! `h` reads kv head `h / (heads_q / heads_kv)`. `d`, `d_v` from 1 to 256.
//!
//! Masking: keys at or past `kv_len[b]` are masked; causal masking in either
//! convention ([`Causal`]); an additive f32 bias `[batch|1, heads_q|1, seq_q, seq_k]`;
//! a boolean mask ([`BoolMask`], true = attend).
//! **A query row whose keys are all masked outputs zeros** (not NaN, as PyTorch
//! would), and its log-sum-exp is −∞ (the sink logit with [`AttentionOptions::sinks`]).
//!
//! For inference engines (as FlashAttention's `flash_attn_with_kvcache`, vLLM
//! and llama.cpp use attention): a KV cache padded to capacity with per-sequence
//! lengths ([`AttentionOptions::kv_len`], to which [`Causal::BottomRight`]
//! aligns), a paged KV cache ([`PagedKv`], filled by [`kv_append`]), a sliding
//! window ([`Window`]) with StreamingLLM sink tokens, logit soft-capping, ALiBi
//! and learned attention sinks. Each score goes
//! `s = q·k·scale → cap·tanh(s/cap) → − slope·|i + diag − j| → + bias`, masked
//! keys are dropped, then the softmax (with the sink logit in its denominator).
//!
//! The diagonal `diag` that the causal mask, the window and ALiBi align to:
//! key `i` for query `i` under [`Causal::TopLeft`]; key `i + kv_len[b] − seq_q`
//! otherwise (bottom-right, FlashAttention's convention, also with
//! [`Causal::None`]).

//!
//! One route for every call: [`attention`], [`attention_into`] and [`plan`]
//! check the operands once (views of q, k and v included), plan once, and
//! the calls then copy any view into a bindable tensor and run the plan.

mod backward;
mod backward_call;
mod backward_naive;
mod backward_plan;
mod call;
mod check;
mod flash;
mod kv_cache;
mod kv_texels;
mod naive;
mod options;
mod params;
mod plan;
#[cfg(test)]
mod reachable;
mod spec;
mod split_kv;

pub use backward::{
    attention_backward, attention_backward_into, attention_backward_plan, AttentionGradients,
};
pub use backward_call::GradientsInto;
pub use backward_plan::BackwardPlan;
pub use kv_cache::kv_append;
pub use options::{
    AttentionOptions, AttentionVariant, BackwardVariant, BoolMask, Causal, FlashSchedule, KvReads,
    Layout, PagedKv, Window, MAX_HEAD_DIM,
};
pub use plan::AttentionPlan;

use crate::error::Result;
use crate::tensor::{DType, Tensor};
use call::Call;
use check::{Dims, Inputs};
use options::OP;
use plan::Launch;
#[cfg(test)]
pub(crate) use reachable::reachable as reachable_specs;
#[cfg(test)]
pub(crate) use spec::AttentionParams;

/// Result of [`attention`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttentionOutput {
    /// `[batch, heads_q, seq_q, d_v]` (or `[batch, seq_q, heads_q, d_v]`), the dtype of q.
    pub out: Tensor,
    /// `[batch, heads_q, seq_q]` f32 when requested.
    pub lse: Option<Tensor>,
}

/// Runs attention and returns the output (and the log-sum-exp if asked).
/// q, k and v may be views ([`Tensor::narrow`], e.g. of one fused QKV
/// projection): strided or misaligned ones are read through one gather copy
/// each.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) naming all three shapes;
/// [`Error::DType`](crate::Error::DType) unless q, k and v are all f32 or
/// all f16 (and the bias f32); [`Error::InvalidArgument`](crate::Error::InvalidArgument)
/// for bad option values, tensors of two contexts, or a bias or mask view
/// the kernels cannot bind; [`Error::Unsupported`](crate::Error::Unsupported)
/// for head dims over 256 or beyond the adapter's workgroup memory, and for
/// a forced variant, schedule or source that cannot serve the call;
/// [`Error::TooLarge`](crate::Error::TooLarge) for the naive kernel's score
/// matrix or a tensor past one storage binding.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<AttentionOutput> {
    let x = Inputs { q, k, v, opts };
    let dims = check::check(&x)?;
    let plan = plan::plan_for(q.context().profile(), &dims, opts, opts.return_lse)?;
    let ctx = q.context();
    let out = Tensor::empty(ctx, &dims.out_shape(opts.layout), dims.dtype)?;
    let lse = match opts.return_lse {
        true => Some(Tensor::empty(ctx, &dims.lse_shape(), DType::F32)?),
        false => None,
    };
    run(&x, &dims, &plan, &out, lse.as_ref())?;
    Ok(AttentionOutput { out, lse })
}

/// [`attention`] writing into `out` (and `lse`, `[batch, heads_q, seq_q]`
/// f32, if given; `opts.return_lse` is not read). The outputs must be
/// bindable as they are (not strided or misaligned views) and in buffers of
/// their own.
///
/// Errors: as [`attention`]; [`Error::Shape`](crate::Error::Shape) or
/// [`Error::DType`](crate::Error::DType) for outputs of another shape or
/// dtype; [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an
/// output sharing a buffer with an input, or on another context.
pub fn attention_into(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let x = Inputs { q, k, v, opts };
    let dims = check::check(&x)?;
    check::outputs(&x, &dims, out, lse)?;
    let plan = plan::plan_for(q.context().profile(), &dims, opts, lse.is_some())?;
    run(&x, &dims, &plan, out, lse)
}

/// The plan an [`attention`] call with these operands and options would run:
/// the variant, the flash schedule or split-KV source, and why.
///
/// Errors: as [`attention`], before anything runs (views are checked, not
/// copied); a forced variant, schedule or source that cannot serve the call
/// is [`Error::Unsupported`](crate::Error::Unsupported).
pub fn plan(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<AttentionPlan> {
    let x = Inputs { q, k, v, opts };
    let dims = check::check(&x)?;
    plan::plan_for(q.context().profile(), &dims, opts, opts.return_lse)
}

/// Runs a checked call's plan into `out` (and `lse`): views of q, k and v
/// become bindable copies, then the planned kernels run.
fn run(
    x: &Inputs,
    dims: &Dims,
    plan: &AttentionPlan,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    if let Launch::Empty = plan.launch {
        return fill_empty(x, dims, out, lse);
    }
    let (q, k, v) = (&x.q.contiguous()?, &x.k.contiguous()?, &x.v.contiguous()?);
    let ctx = q.context();
    let mut params = params::params(dims, x.opts);
    let aux = params::aux_table(dims, x.opts, &mut params);
    let call = Call {
        ctx,
        q,
        k,
        v,
        bias: x.opts.bias,
        mask: x.opts.mask.map(|m| m.words()),
        out,
        lse,
        dims,
        opts: x.opts,
        params,
        aux: ctx.table(&aux),
    };
    match &plan.launch {
        Launch::Naive => naive::run(&call),
        Launch::Flash(l) => flash::run(&call, l),
        Launch::Rows(l) => flash::run_rows(&call, l),
        Launch::SplitKv(l) => split_kv::run(&call, l),
        // Filled above.
        Launch::Empty => Ok(()),
    }
}

/// A call with no keys: every row is fully masked, so zeros and an LSE of
/// −∞ (the head's sink logit with learned sinks, as the kernels give).
fn fill_empty(x: &Inputs, dims: &Dims, out: &Tensor, lse: Option<&Tensor>) -> Result<()> {
    if !out.is_empty() {
        let ctx = out.context();
        ctx.scoped(OP, || {
            let mut enc = ctx.encoder();
            enc.clear_buffer(out.buffer(), out.offset(), Some(out.padded_bytes()));
            ctx.submit(enc);
            Ok(())
        })?;
    }
    if let Some(l) = lse.filter(|l| !l.is_empty()) {
        let row_lse = |h: usize| x.opts.sinks.map_or(f32::NEG_INFINITY, |s| s[h]);
        let vals: Vec<f32> = (0..l.len())
            .map(|i| row_lse(i / dims.sq.max(1) % dims.hq.max(1)))
            .collect();
        l.write(&vals)?;
    }
    Ok(())
}
