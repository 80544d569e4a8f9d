//! Elementwise activations (`activation.wgsl`): the forward `act(x)` that a
//! training loop saves the pre-activation for, and the backward
//! `dy · act'(pre)` of every [`Activation`] the matmul epilogue fuses.

use super::spec::{GradKernel, GradSpec};
use super::{fit_binding, run, same_shape, Pass};
use crate::context::Bind;
use crate::error::{expect_dtype, Result};
use crate::ops::matmul::Activation;
use crate::tensor::{DType, Tensor};

crate::shader::params! {
    /// Mirrors `Params` in `ops/grad/activation.wgsl`.
    pub(crate) struct ActParams {
        /// Elements.
        n: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

/// `out = act(x)` elementwise, as the matmul epilogue computes it (so
/// `activation_into(linear(x, w, b, None))` is `linear(x, w, b, act)`: a
/// forward that keeps the pre-activation for [`activation_backward_into`]).
/// `x` and `out` of one shape and float dtype.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) naming both shapes;
/// [`Error::DType`](crate::Error::DType) for u32 or mixed dtypes;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for `out`
/// sharing a buffer with `x` or tensors of two contexts;
/// [`Error::TooLarge`](crate::Error::TooLarge) past one storage binding.
pub fn activation_into(x: &Tensor, act: Activation, out: &Tensor) -> Result<()> {
    elementwise("activation", x, None, act, out)
}

/// `dx = dy · act'(pre)` elementwise, for `pre` the saved pre-activation
/// (the input of `act` in the forward) and `dy` the gradient of `act(pre)`;
/// all three of one shape and float dtype. ReLU passes `dy` where
/// `pre > 0` (and where `pre` is NaN, as PyTorch's `threshold_backward`);
/// GELU (erf and tanh forms) and SiLU use their exact derivatives (the tanh
/// form's where the forward clamps its tanh argument is 0 or 1);
/// [`Activation::None`] copies `dy`.
///
/// Errors: as [`activation_into`], for `dy` too.
pub fn activation_backward_into(
    pre: &Tensor,
    dy: &Tensor,
    act: Activation,
    dx: &Tensor,
) -> Result<()> {
    elementwise("activation_backward", pre, Some(dy), act, dx)
}

fn elementwise(
    op: &'static str,
    x: &Tensor,
    dy: Option<&Tensor>,
    act: Activation,
    out: &Tensor,
) -> Result<()> {
    let mut ins = vec![("x", x)];
    ins.extend(dy.map(|t| ("dy", t)));
    Tensor::disjoint(op, &[("out", out)], &ins)?;
    ins.push(("out", out));
    Tensor::same_context(op, &ins)?;
    expect_dtype(op, "x", x.dtype(), &DType::FLOAT)?;
    for (name, t) in &ins[1..] {
        expect_dtype(op, name, t.dtype(), &[x.dtype()])?;
        same_shape(op, ("x", x), (name, t))?;
    }
    fit_binding(op, &ins)?;
    if x.is_empty() {
        return Ok(());
    }
    let ctx = x.context();
    let spec = GradSpec {
        dtype: x.dtype(),
        kernel: GradKernel::Activation {
            act,
            backward: dy.is_some(),
        },
    };
    let p = ActParams {
        n: x.len() as u32,
        ..Default::default()
    };
    let mut binds: Vec<(u32, Bind)> = vec![(1, x.bind()), (3, out.bind())];
    binds.extend(dy.map(|t| (2, t.bind())));
    run(ctx, op, &[Pass::new(ctx, spec, &p, binds, x.len(), 256)])
}
