//! Masked mean pooling backward (`pooling.wgsl`), for the forward
//! [`mean_pool_into`](crate::ops::pooling::mean_pool_into).

use super::spec::{GradKernel, GradSpec};
use super::{fit_binding, run, Pass};
use crate::context::Bind;
use crate::error::{expect_dtype, Error, Result};
// The forward's params: the backward's WGSL declares the same struct.
use crate::ops::pooling::PoolParams;
use crate::tensor::{shape_str, DType, Tensor};

const OP: &str = "mean_pool_backward";

/// `dx[b, t, j] = dy[b, j] / n_b` for `t < n_b`, else 0, where
/// `n_b = min(lengths[b], seq)`: the gradient of the mean over each
/// sequence's first `n_b` tokens (a sequence of length 0 gets zeros). `dy`
/// is `[batch, h]` f32 (the forward's output), `dx` `[batch, seq, h]` f32 or
/// f16 (the forward input's dtype), `lengths` `batch` long.
///
/// Errors: [`Error::Shape`] for `dx` not 3-D, `dy` not `[batch, h]` or
/// `lengths` not `batch` long (naming the shapes); [`Error::DType`] for `dy`
/// not f32 or `dx` not float; [`Error::InvalidArgument`] for `dx` sharing a
/// buffer with `dy` or tensors of two contexts; [`Error::TooLarge`] past
/// one storage binding.
pub fn mean_pool_backward_into(dy: &Tensor, lengths: &[u32], dx: &Tensor) -> Result<()> {
    Tensor::disjoint(OP, &[("dx", dx)], &[("dy", dy)])?;
    Tensor::same_context(OP, &[("dy", dy), ("dx", dx)])?;
    expect_dtype(OP, "dy", dy.dtype(), &[DType::F32])?;
    expect_dtype(OP, "dx", dx.dtype(), &DType::FLOAT)?;
    let s = dx.shape();
    if s.len() != 3 || dy.shape() != [s[0], s[2]] || lengths.len() != s[0] {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "dx {} must be [batch, seq, h] with dy [batch, h] and batch lengths, got dy {} \
                 and {} lengths",
                shape_str(s),
                shape_str(dy.shape()),
                lengths.len()
            ),
        });
    }
    fit_binding(OP, &[("dy", dy), ("dx", dx)])?;
    if dx.is_empty() {
        return Ok(());
    }
    let ctx = dx.context();
    let spec = GradSpec {
        dtype: dx.dtype(),
        kernel: GradKernel::PoolBackward,
    };
    let p = PoolParams {
        batch: s[0] as u32,
        seq: s[1] as u32,
        h: s[2] as u32,
        ..Default::default()
    };
    let lens = ctx.table(lengths);
    let binds: Vec<(u32, Bind)> = vec![(1, dy.bind()), (2, lens.bind()), (3, dx.bind())];
    run(ctx, OP, &[Pass::new(ctx, spec, &p, binds, dx.len(), 256)])
}
