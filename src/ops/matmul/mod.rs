//! Batched matrix multiplication and the linear layer, with bias and activation
//! fused into the kernel's epilogue. Kernel source: `matmul.wgsl`.
//!
//! `matmul(a [.., m, k], b [.., k, n]) -> [.., m, n]`; leading dimensions
//! broadcast NumPy-style; either operand may be read transposed (a flag, not a
//! copy). f32 or f16 inputs (f16 needs `SHADER_F16`), f32 accumulation, f32 or f16
//! output.
//!
//! A call is a `Gemm` (operands, epilogue, options, in `problem.rs`); its
//! checks make a `Problem` (`problem.rs`), the planner turns that into a
//! [`MatmulPlan`] from the device profile (`plan.rs`, or the autotuner in
//! `autotune.rs`), and `launch.rs` records it.

mod autotune;
mod launch;
mod options;
mod plan;
mod problem;
mod tiles;

pub use autotune::tuned_config;
pub use options::{Activation, MatmulOptions, MatmulVariant};
pub use plan::MatmulPlan;
pub use tiles::TileConfig;

use crate::error::{Error, Result};
use crate::tensor::{shape_str, Tensor};
use launch::launch;
#[cfg(test)]
pub(crate) use plan::{reachable as reachable_specs, MatmulParams};
use problem::Gemm;

/// `a [.., m, k] · b [.., k, n] -> [.., m, n]` (f32 output, Auto kernel).
///
/// Errors: as [`matmul_with`].
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_with(a, b, &MatmulOptions::default())
}

/// [`matmul`] with transposes, alpha, kernel and output type.
///
/// Errors: [`Error::DType`] unless `a` and `b` are both f32 or both f16 and
/// the output type is f32 or f16; [`Error::Shape`] for shapes that do not
/// multiply or broadcast; [`Error::InvalidArgument`] for a non-finite alpha
/// or tensors of two contexts; [`Error::Unsupported`] for f16 without
/// `SHADER_F16`, or a forced tile configuration that cannot read the shape;
/// [`Error::TooLarge`] for an operand past one storage binding; GPU errors.
pub fn matmul_with(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<Tensor> {
    gemm(&Gemm::matmul(a, b, opts), None)
}

/// Writes `a · b` into `out` (which must have the result's shape and `opts.out_dtype`).
///
/// Errors: as [`matmul_with`]; [`Error::Shape`] or [`Error::DType`] for an
/// `out` of another shape or dtype, [`Error::InvalidArgument`] for one
/// overlapping an operand.
pub fn matmul_into(a: &Tensor, b: &Tensor, opts: &MatmulOptions, out: &Tensor) -> Result<()> {
    gemm(&Gemm::matmul(a, b, opts), Some(out)).map(|_| ())
}

/// PyTorch `nn.Linear`: `x [.., in] · wᵀ + bias`, then `act`. `w` is
/// `[out_features, in_features]`, `bias` `[out_features]`; returns `[.., out_features]`.
///
/// Errors: as [`matmul_with`]; [`Error::Shape`] for a bias not
/// `[out_features]`, [`Error::DType`] for one not of `x`'s dtype.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    linear_with(x, w, bias, act, &MatmulOptions::default())
}

/// [`linear`] with explicit kernel / output type (`trans_*` in `opts` are ignored).
///
/// Errors: as [`linear`].
pub fn linear_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
) -> Result<Tensor> {
    linear_impl(x, w, bias, act, opts, None)
}

/// [`linear_with`] writing into `out` (`[.., out_features]`).
///
/// Errors: as [`linear`] and, for `out`, [`matmul_into`].
pub fn linear_into(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
    out: &Tensor,
) -> Result<()> {
    linear_impl(x, w, bias, act, opts, Some(out)).map(|_| ())
}

fn linear_impl(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
    out: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "linear";
    let (xs, ws) = (x.shape(), w.shape());
    if xs.is_empty() || ws.len() != 2 || xs[xs.len() - 1] != ws[1] {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "x {} must be [.., in] and w {} [out, in] with the same in",
                shape_str(xs),
                shape_str(ws)
            ),
        });
    }
    let rows: usize = xs[..xs.len() - 1].iter().product();
    let x2 = x.reshape(&[rows, ws[1]])?;
    let o = MatmulOptions {
        trans_a: false,
        trans_b: true,
        ..*opts
    };
    let out2 = out.map(|t| t.reshape(&[rows, ws[0]])).transpose();
    let out2 = match out2 {
        Ok(o) => o,
        Err(_) => {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "out {} does not hold [{rows}, {}]",
                    shape_str(out.map(|t| t.shape()).unwrap_or(&[])),
                    ws[0]
                ),
            })
        }
    };
    let call = Gemm {
        op: OP,
        a: &x2,
        b: w,
        bias,
        act,
        opts: &o,
    };
    let r = gemm(&call, out2.as_ref())?;
    let mut shape = xs[..xs.len() - 1].to_vec();
    shape.push(ws[0]);
    r.reshape(&shape)
}

/// Checks, plans and records call `g`, into `out` or a new tensor.
fn gemm(g: &Gemm, out: Option<&Tensor>) -> Result<Tensor> {
    let p = g.check(out)?;
    let out = g.output(&p, out)?;
    if out.is_empty() {
        return Ok(out);
    }
    g.check_bindings(&out)?;
    let plan = match g.opts.variant {
        MatmulVariant::Autotune => autotune::autotune(g, &p, &out)?,
        v => plan::plan_for(g.op, g.a.context().profile(), &p, v)?,
    };
    launch(g, &p, &plan, &out)?;
    Ok(out)
}

/// The plan a [`matmul_with`] call with these operands would run (for
/// `Autotune`, the winner once tuned, else what `Auto` runs).
///
/// Errors: as [`matmul_with`], before anything runs; a forced variant that
/// cannot serve the shape is [`Error::Unsupported`].
pub fn plan(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<MatmulPlan> {
    let g = Gemm::matmul(a, b, opts);
    let p = g.check(None)?;
    let variant = match opts.variant {
        MatmulVariant::Autotune => {
            autotune::cached(a.context(), &p).map_or(MatmulVariant::Auto, MatmulVariant::Tiled)
        }
        v => v,
    };
    plan::plan_for(g.op, a.context().profile(), &p, variant)
}
