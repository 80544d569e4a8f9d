//! Sums of gradients (`add.wgsl`). The gradient of a residual `y = a + b` is
//! `dy` for both operands; what a training loop adds is the two gradients
//! that reach one tensor (the residual stream from the block and from the
//! skip connection): `out = a + b`, or in place `acc += g`.

use super::spec::{GradKernel, GradSpec};
use super::{fit_binding, run, same_shape, Pass};
use crate::context::Bind;
use crate::error::{expect_dtype, Result};
use crate::tensor::{DType, Tensor};

crate::shader::params! {
    /// Mirrors `Params` in `ops/grad/add.wgsl`.
    pub(crate) struct AddParams {
        /// Elements.
        n: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

/// `out = a + b` elementwise (added in f32, rounded once to the storage
/// type), all three of one shape and float dtype.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) naming both shapes;
/// [`Error::DType`](crate::Error::DType) for u32 or mixed dtypes;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for `out`
/// sharing a buffer with an input or tensors of two contexts;
/// [`Error::TooLarge`](crate::Error::TooLarge) past one storage binding.
pub fn add_into(a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    sum("add", Some(a), b, out)
}

/// `acc += g` elementwise, in place (gradient accumulation), `acc` and `g`
/// of one shape and float dtype.
///
/// Errors: as [`add_into`] (`acc` and `g` may not share a buffer).
pub fn accumulate(acc: &Tensor, g: &Tensor) -> Result<()> {
    sum("accumulate", None, g, acc)
}

fn sum(op: &'static str, a: Option<&Tensor>, b: &Tensor, out: &Tensor) -> Result<()> {
    let mut ins: Vec<(&str, &Tensor)> = a.map(|t| ("a", t)).into_iter().collect();
    ins.push(("b", b));
    Tensor::disjoint(op, &[("out", out)], &ins)?;
    ins.push(("out", out));
    Tensor::same_context(op, &ins)?;
    expect_dtype(op, "out", out.dtype(), &DType::FLOAT)?;
    for (name, t) in &ins {
        expect_dtype(op, name, t.dtype(), &[out.dtype()])?;
        same_shape(op, ("out", out), (name, t))?;
    }
    fit_binding(op, &ins)?;
    if out.is_empty() {
        return Ok(());
    }
    let ctx = out.context();
    let spec = GradSpec {
        dtype: out.dtype(),
        kernel: GradKernel::Add {
            accumulate: a.is_none(),
        },
    };
    let p = AddParams {
        n: out.len() as u32,
        ..Default::default()
    };
    let mut binds: Vec<(u32, Bind)> = vec![(2, b.bind()), (3, out.bind())];
    binds.extend(a.map(|t| (1, t.bind())));
    run(ctx, op, &[Pass::new(ctx, spec, &p, binds, out.len(), 256)])
}
