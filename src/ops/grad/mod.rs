//! Gradients of a transformer block, for training: the backward of the
//! linear layer and its fused activations, layer norm, residual adds, the
//! embedding lookup and masked mean pooling, a fused softmax cross-entropy
//! (loss and gradient), and an AdamW step. Each kernel's WGSL sits beside its
//! launcher (`colsum.rs` + `colsum.wgsl`, …); the family's one spec type is
//! in `spec.rs`, the f64 references in [`crate::reference::grad`].
//!
//! WGSL has no float atomics, so every sum over rows is a gather, never a
//! scatter: column sums (db, dγ, dβ) run an invocation per (block of rows,
//! column) and then a pass over the blocks; the embedding's scatter-add is
//! a CSR of token positions per table row, sorted on the host, summed by an
//! invocation per (row, column) in a fixed order. Every result is
//! deterministic. Storage is f32 or f16 where the forward takes f16
//! (accumulation in f32); f16 on an adapter without `SHADER_F16` is
//! [`Error::Unsupported`] when the tensor is made.

mod activation;
mod adamw;
mod add;
mod colsum;
mod cross_entropy;
mod embedding;
mod linear;
mod norm;
mod pooling;
mod spec;
mod transpose;

pub use activation::{activation_backward_into, activation_into};
pub use adamw::{adamw_step, AdamWOptions};
pub use add::{accumulate, add_into};
pub use colsum::{column_sum_into, column_sum_with, ColumnSumVariant};
pub use cross_entropy::{cross_entropy_into, CrossEntropy, CrossEntropyOptions, IGNORE_INDEX};
pub use embedding::{embedding_backward_into, EmbeddingGrads};
pub use linear::{linear_backward, linear_backward_into, LinearGrads, LinearGradsInto};
pub use norm::{layer_norm_backward_into, layer_norm_backward_with, NormGrads};
pub use pooling::mean_pool_backward_into;

#[cfg(test)]
pub(crate) use activation::ActParams;
#[cfg(test)]
pub(crate) use adamw::AdamWParams;
#[cfg(test)]
pub(crate) use add::AddParams;
#[cfg(test)]
pub(crate) use colsum::ColSumParams;
#[cfg(test)]
pub(crate) use cross_entropy::CrossEntropyParams;
#[cfg(test)]
pub(crate) use embedding::EmbeddingGradParams;
#[cfg(test)]
pub(crate) use norm::NormGradParams;
#[cfg(test)]
pub(crate) use spec::{reachable as reachable_specs, GradKernel, GradSpec};
#[cfg(test)]
pub(crate) use transpose::TransposeParams;

use crate::context::{Bind, Context, Tracked};
use crate::error::{Error, Result};
use crate::tensor::{shape_str, DType, Tensor};
use spec::GradSpec as Kernel;

/// Fails with [`Error::TooLarge`] for a tensor one storage binding cannot
/// hold (every kernel of the family binds each operand whole).
fn fit_binding(op: &'static str, tensors: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in tensors {
        let max = t.context().max_binding();
        if t.padded_bytes() > max {
            return Err(Error::TooLarge {
                op,
                what: format!("{name} {}", shape_str(t.shape())),
                size: t.padded_bytes(),
                limit: max,
                kind: crate::Limit::StorageBinding,
            });
        }
    }
    Ok(())
}

/// Fails with [`Error::Shape`] naming both tensors unless `b` has `a`'s shape.
fn same_shape(op: &'static str, (an, a): (&str, &Tensor), (bn, b): (&str, &Tensor)) -> Result<()> {
    if a.shape() == b.shape() {
        return Ok(());
    }
    Err(Error::Shape {
        op,
        detail: format!(
            "{bn} is {} {}, {an} is {} {}: they must have one shape",
            b.dtype(),
            shape_str(b.shape()),
            a.dtype(),
            shape_str(a.shape())
        ),
    })
}

/// Fails with [`Error::TooLarge`] for a buffer of `elems` 4-byte words
/// (f32 scratch, a u32 table) past one storage binding.
fn fit_words(ctx: &Context, op: &'static str, elems: usize, what: &str) -> Result<u64> {
    let bytes = (elems as u64).saturating_mul(4);
    if bytes > ctx.max_binding() {
        return Err(Error::TooLarge {
            op,
            what: what.to_string(),
            size: bytes,
            limit: ctx.max_binding(),
            kind: crate::Limit::StorageBinding,
        });
    }
    Ok(bytes)
}

/// A device-only f32 scratch buffer of `elems` elements.
fn scratch(ctx: &Context, op: &'static str, elems: usize, what: &str) -> Result<Tracked> {
    let bytes = fit_words(ctx, op, elems, what)?;
    Ok(ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some(op),
        size: bytes.max(16),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    }))
}

/// Zeros written into `t` from the host (in order with recorded ops): the
/// gradients of a call with nothing to sum.
fn write_zeros(t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F16 => t.write(&vec![half::f16::ZERO; t.len()]),
        DType::U32 => t.write(&vec![0u32; t.len()]),
        DType::F32 => t.write(&vec![0f32; t.len()]),
    }
}

/// The (x, y, 1) grid of `items` invocations in workgroups of `wg`.
///
/// Counted in usize: a workgroup-per-row kernel passes `rows · 64` items,
/// which passes u32 long before the group count does. The group count
/// itself fits: every caller's items are bounded by a bound binding's
/// elements (times 64 at most), far under 2³² · wg.
fn grid(ctx: &Context, items: usize, wg: u32) -> (u32, u32, u32) {
    let groups = items.div_ceil(wg as usize).min(u32::MAX as usize) as u32;
    let (gx, gy) = ctx.grid(groups);
    (gx, gy, 1)
}

/// One dispatch of a launch: the kernel, its params' bytes, its bindings
/// and its grid.
struct Pass<'a> {
    spec: Kernel,
    params: Vec<u8>,
    binds: Vec<(u32, Bind<'a>)>,
    groups: (u32, u32, u32),
}

impl<'a> Pass<'a> {
    /// `spec` over `items` invocations in workgroups of `wg`.
    fn new<P: bytemuck::Pod>(
        ctx: &Context,
        spec: Kernel,
        p: &P,
        binds: Vec<(u32, Bind<'a>)>,
        items: usize,
        wg: u32,
    ) -> Pass<'a> {
        Pass {
            spec,
            params: bytemuck::bytes_of(p).to_vec(),
            binds,
            groups: grid(ctx, items, wg),
        }
    }
}

/// Records `passes` in order into one encoder (each in its own compute
/// pass, so each sees the writes of those before it) and submits them, in
/// an error scope.
fn run(ctx: &Context, op: &'static str, passes: &[Pass<'_>]) -> Result<()> {
    let pipes = passes
        .iter()
        .map(|p| ctx.pipeline(&p.spec))
        .collect::<Result<Vec<_>>>()?;
    ctx.scoped(op, || {
        // The encoder holds the parameter arena until it is submitted.
        let mut enc = ctx.encoder();
        for (p, pipe) in passes.iter().zip(&pipes) {
            let ubuf = ctx.param_bytes(&p.params);
            ctx.dispatch(&mut enc, pipe, &ubuf, &p.binds, p.groups);
        }
        ctx.submit(enc);
        Ok(())
    })
}
