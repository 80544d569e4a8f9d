//! A checked attention-backward call on its way to the kernels (what the
//! flash and naive backward passes take) and the pieces both use: where
//! dS goes for the bias gradient, the bias sum, the 1-D grid.

use super::call::Call;
use super::spec::slot;
use crate::context::Context;
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// Where [`attention_backward_into`](super::attention_backward_into) writes: tensors of q's, k's and v's
/// shapes and dtype (and of the bias's shape, f32, with
/// [`AttentionOptions::bias_grad`](super::AttentionOptions::bias_grad)), bindable as they are and in buffers
/// of their own.
#[derive(Debug, Clone, Copy)]
pub struct GradientsInto<'a> {
    /// q's shape and dtype.
    pub dq: &'a Tensor,
    /// k's shape and dtype.
    pub dk: &'a Tensor,
    /// v's shape and dtype.
    pub dv: &'a Tensor,
    /// The bias's shape, f32 (exactly when `bias_grad` is set).
    pub dbias: Option<&'a Tensor>,
}

/// A checked backward call's operands, bindable, and its scratch.
pub(crate) struct Bwd<'a> {
    pub call: Call<'a>,
    pub d_out: &'a Tensor,
    pub lse: &'a Tensor,
    pub grads: &'a GradientsInto<'a>,
}

/// Where dS goes for the bias gradient: straight into dbias when the bias
/// is not broadcast, else a full `[b, hq, sq, sk]` scratch then summed.
pub(crate) fn ds_target(bwd: &Bwd, summed: bool) -> Result<Option<Tensor>> {
    let (d, ctx) = (bwd.call.dims, bwd.call.ctx);
    match (bwd.grads.dbias, summed) {
        (Some(_), true) => Ok(Some(Tensor::empty(
            ctx,
            &[d.b, d.hq, d.sq, d.sk],
            DType::F32,
        )?)),
        _ => Ok(None),
    }
}

/// Sums dS (`full`, `[b, hq, sq, sk]`) over the bias's broadcast
/// dimensions into `dbias`.
pub(crate) fn bias_sum(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    pipe: &wgpu::ComputePipeline,
    ubuf: &crate::context::Param<'_>,
    full: &Tensor,
    dbias: &Tensor,
) {
    let n = dbias.len() as u32;
    ctx.dispatch(
        enc,
        pipe,
        ubuf,
        &[(slot::IN1, full.bind()), (slot::DBIAS, dbias.bind())],
        grid(ctx, n.div_ceil(64)),
    );
}

/// `groups` workgroups of 64 over (x, y) within the per-dimension limit
/// (the kernels rebuild the id as `x + y · num_workgroups.x · 64`).
pub(crate) fn grid(ctx: &Context, groups: u32) -> (u32, u32, u32) {
    let (x, y) = ctx.grid(groups.max(1));
    (x, y, 1)
}
