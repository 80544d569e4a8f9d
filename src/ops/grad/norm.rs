//! Layer-norm backward (`norm.wgsl`) for the forward
//! [`layer_norm_into`](crate::ops::norm::layer_norm_into), which saves no
//! statistics: each row's mean and rstd are recomputed as the forward
//! computes them. Three steps in one submission: dx per row (and the row's
//! statistics, in a scratch buffer), partial dγ and dβ per block of rows
//! and column, and a column sum over the blocks (no atomics).

use super::colsum::{self, ColumnSumVariant, Sum};
use super::spec::{GradKernel, GradSpec};
use super::{fit_binding, run, same_shape, scratch, Pass};
use crate::context::Bind;
use crate::error::{expect_dtype, Error, Result};
use crate::ops::norm::NormVariant;
use crate::tensor::{shape_str, DType, Tensor};

const OP: &str = "layer_norm_backward";

crate::shader::params! {
    /// Mirrors `Params` in `ops/grad/norm.wgsl`.
    pub(crate) struct NormGradParams {
        rows: u32,
        h: u32,
        /// Added to the variance, as in the forward.
        eps: f32,
        /// Rows per block of the partials kernel.
        block: u32,
    }
}

/// Where [`layer_norm_backward_into`] writes: `dx` of `x`'s shape and
/// dtype (the gradient of `z = x + residual`, so of `x` and of the residual
/// alike), `dgamma` and `dbeta` `[h]`, f32 or f16 each.
#[derive(Debug, Clone, Copy)]
pub struct NormGrads<'a> {
    /// `[…, h]`, `x`'s shape and dtype.
    pub dx: &'a Tensor,
    /// `[h]`.
    pub dgamma: &'a Tensor,
    /// `[h]`.
    pub dbeta: &'a Tensor,
}

/// The gradients of `y = layer_norm(z) · gamma + beta`, `z = x` (or
/// `x + residual`), over the last dimension `h` of `x [.., h]`, given `dy`
/// of `x`'s shape and the forward's `gamma [h]` and `eps` (beta does not
/// enter): `dz = rstd · (g − mean(g) − x̂ · mean(g · x̂))` with `g = dy · γ`,
/// `dγ = Σ_rows dy · x̂`, `dβ = Σ_rows dy`. f32 or f16 storage, f32
/// statistics and sums; zero rows give zero `dgamma` and `dbeta`.
///
/// Errors: as [`layer_norm_backward_with`].
pub fn layer_norm_backward_into(
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    eps: f32,
    dy: &Tensor,
    grads: NormGrads<'_>,
) -> Result<()> {
    layer_norm_backward_with(x, residual, gamma, eps, dy, NormVariant::Auto, grads)
}

/// [`layer_norm_backward_into`] with an explicit per-row schedule (as the
/// forward's: both serve every shape).
///
/// Errors: [`Error::Shape`] naming the mismatched tensors (residual, dy or
/// dx not `x`'s shape, gamma, dgamma or dbeta not `[h]`); [`Error::DType`]
/// for u32 data, residual, gamma, dy or dx not of `x`'s dtype;
/// [`Error::InvalidArgument`] for a gradient sharing a buffer with an input,
/// tensors of two contexts, or a non-finite or
/// negative `eps`; [`Error::TooLarge`] past one storage binding.
pub fn layer_norm_backward_with(
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    eps: f32,
    dy: &Tensor,
    variant: NormVariant,
    grads: NormGrads<'_>,
) -> Result<()> {
    let NormGrads { dx, dgamma, dbeta } = grads;
    let mut ins = vec![("x", x), ("gamma", gamma), ("dy", dy)];
    ins.extend(residual.map(|r| ("residual", r)));
    let outs = [("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)];
    Tensor::disjoint(OP, &outs, &ins)?;
    let mut all = ins.clone();
    all.extend(outs);
    Tensor::same_context(OP, &all)?;
    expect_dtype(OP, "x", x.dtype(), &DType::FLOAT)?;
    for (name, t) in [("residual", residual), ("dy", Some(dy)), ("dx", Some(dx))] {
        if let Some(t) = t {
            expect_dtype(OP, name, t.dtype(), &[x.dtype()])?;
            same_shape(OP, ("x", x), (name, t))?;
        }
    }
    expect_dtype(OP, "gamma", gamma.dtype(), &[x.dtype()])?;
    for (name, t) in [("dgamma", dgamma), ("dbeta", dbeta)] {
        expect_dtype(OP, name, t.dtype(), &DType::FLOAT)?;
    }
    let Some(&h) = x.shape().last() else {
        return Err(Error::Shape {
            op: OP,
            detail: format!("x must be [.., h], got {}", shape_str(x.shape())),
        });
    };
    for (name, t) in [("gamma", gamma), ("dgamma", dgamma), ("dbeta", dbeta)] {
        if t.shape() != [h] {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "{name} is {}, expected [{h}] for x {}",
                    shape_str(t.shape()),
                    shape_str(x.shape())
                ),
            });
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: format!("eps must be finite and ≥ 0, got {eps}"),
        });
    }
    fit_binding(OP, &all)?;
    if h == 0 {
        return Ok(());
    }
    let ctx = x.context();
    let rows = x.len() / h;
    let res = residual.is_some();
    let per_row = variant.per_row(ctx.profile());
    let two = ColumnSumVariant::Auto.two_pass(ctx.profile(), rows, h);
    let block = if two { colsum::BLOCK } else { rows.max(1) };
    let blocks = rows.div_ceil(block).max(1);
    let stats = scratch(ctx, OP, 2 * rows, "layer-norm statistics")?;
    let part = scratch(ctx, OP, 2 * blocks * h, "layer-norm dγ/dβ partials")?;
    let p = NormGradParams {
        rows: rows as u32,
        h: h as u32,
        eps,
        block: block as u32,
    };
    let spec = |kernel| GradSpec {
        dtype: x.dtype(),
        kernel,
    };
    let mut common: Vec<(u32, Bind)> = vec![(1, x.bind()), (4, dy.bind())];
    common.extend(residual.map(|r| (2, r.bind())));
    let mut passes = Vec::new();
    if rows > 0 {
        let mut binds = common.clone();
        binds.extend([(3, gamma.bind()), (5, dx.bind()), (6, Bind::whole(&stats))]);
        let kernel = GradKernel::NormRows {
            residual: res,
            rows: per_row,
        };
        let (items, wg) = if per_row { (rows, 64) } else { (rows * 64, 64) };
        passes.push(Pass::new(ctx, spec(kernel), &p, binds, items, wg));
    }
    let mut binds = common;
    binds.extend([(6, Bind::whole(&stats)), (7, Bind::whole(&part))]);
    let kernel = GradKernel::NormPartials { residual: res };
    passes.push(Pass::new(ctx, spec(kernel), &p, binds, blocks * h, 64));
    for (k, out) in [dgamma, dbeta].into_iter().enumerate() {
        let sum = Sum {
            src: Bind::whole(&part),
            input: DType::F32,
            in_offset: k * blocks * h,
            rows: blocks,
            cols: h,
            dst: out.bind(),
            output: out.dtype(),
        };
        passes.extend(colsum::passes(ctx, sum, None));
    }
    run(ctx, OP, &passes)
}
