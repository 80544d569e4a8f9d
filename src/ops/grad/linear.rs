//! The linear layer's backward, for the forward
//! [`linear`](crate::ops::matmul::linear) (`y = act(x · wᵀ + b)`, `w`
//! `[out, in]`): `dz = dy · act'(pre)`, `dx = dz · w`, `dw = dzᵀ · x`,
//! `db = Σ_rows dz`. The two products run through the tiled matmul with its
//! transpose flag (no GEMM of its own; where that flag sends A to a slow
//! kernel, dz is transposed into a copy first); `db` is a column sum.

use super::activation::activation_backward_into;
use super::colsum::column_sum_into;
use super::transpose::transpose_into;
use super::{fit_binding, write_zeros};
use crate::context::DeviceProfile;
use crate::error::{expect_dtype, Error, Result};
use crate::ops::matmul::{matmul_into, Activation, MatmulOptions};
use crate::tensor::{shape_str, DType, Tensor};

const OP: &str = "linear_backward";

/// The gradients of a linear layer (f32: what an optimizer takes).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LinearGrads {
    /// `[.., in]`, `x`'s shape.
    pub dx: Tensor,
    /// `[out, in]`, `w`'s shape.
    pub dw: Tensor,
    /// `[out]`.
    pub db: Tensor,
}

/// Where [`linear_backward_into`] writes each gradient; `None` skips it
/// (the first layer needs no `dx`, a layer without bias no `db`). Each is
/// f32 or f16 (rounded from the f32 accumulation).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinearGradsInto<'a> {
    /// `[.., in]`, `x`'s shape.
    pub dx: Option<&'a Tensor>,
    /// `[out, in]`, `w`'s shape.
    pub dw: Option<&'a Tensor>,
    /// `[out]`.
    pub db: Option<&'a Tensor>,
}

/// The gradients of `y = act(x · wᵀ + b)` ([`linear`](crate::ops::matmul::linear))
/// for `x [.., in]`, `w [out, in]` and `dy [.., out]` (the leading
/// dimensions of `x`), as new f32 tensors. `pre` is the saved
/// pre-activation `x · wᵀ + b` (`dy`'s shape; see
/// [`activation_into`](super::activation_into)), needed unless `act` is
/// [`Activation::None`] (then ignored). `x`, `w`, `dy` and `pre` share one float dtype.
///
/// Errors: as [`linear_backward_into`].
pub fn linear_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    act: Activation,
    pre: Option<&Tensor>,
) -> Result<LinearGrads> {
    let ctx = x.context();
    // Allocated after the checks, so that bad shapes are Shape errors.
    let (_, o, i) = check(x, w, dy, act, pre)?;
    let grads = LinearGrads {
        dx: Tensor::empty(ctx, x.shape(), DType::F32)?,
        dw: Tensor::empty(ctx, &[o, i], DType::F32)?,
        db: Tensor::empty(ctx, &[o], DType::F32)?,
    };
    let into = LinearGradsInto {
        dx: Some(&grads.dx),
        dw: Some(&grads.dw),
        db: Some(&grads.db),
    };
    linear_backward_into(x, w, dy, act, pre, into)?;
    Ok(grads)
}

/// [`linear_backward`] into the tensors of `grads`.
///
/// Errors: [`Error::Shape`] naming the shapes that do not fit (`w` not 2-D,
/// `x` not `[.., in]`, `dy` not `[.., out]` with `x`'s leading dimensions,
/// `pre` not `dy`'s shape, a gradient not of its operand's shape);
/// [`Error::DType`] for operands not of one float dtype or u32 gradients;
/// [`Error::InvalidArgument`] for a missing `pre` with an activation,
/// tensors of two contexts, or a gradient sharing a buffer with an operand;
/// [`Error::TooLarge`] past one storage binding; GPU errors.
pub fn linear_backward_into(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    act: Activation,
    pre: Option<&Tensor>,
    grads: LinearGradsInto<'_>,
) -> Result<()> {
    let (rows, o, i) = check(x, w, dy, act, pre)?;
    let mut ins = vec![("x", x), ("w", w), ("dy", dy)];
    ins.extend(pre.map(|p| ("pre", p)));
    let outs: Vec<(&str, &Tensor)> = [("dx", grads.dx), ("dw", grads.dw), ("db", grads.db)]
        .into_iter()
        .filter_map(|(n, t)| t.map(|t| (n, t)))
        .collect();
    Tensor::disjoint(OP, &outs, &ins)?;
    let mut all = ins.clone();
    all.extend(&outs);
    Tensor::same_context(OP, &all)?;
    // Every step binds its operands whole, and dz (and its transposed copy)
    // has dy's shape and dtype: checked here, so that a call past a binding
    // fails before it writes any gradient.
    fit_binding(OP, &all)?;
    let shapes: [(&str, Option<&Tensor>, Vec<usize>); 3] = [
        ("dx", grads.dx, x.shape().to_vec()),
        ("dw", grads.dw, vec![o, i]),
        ("db", grads.db, vec![o]),
    ];
    for (name, t, want) in &shapes {
        if let Some(t) = t {
            expect_dtype(OP, name, t.dtype(), &DType::FLOAT)?;
            if t.shape() != want.as_slice() {
                return Err(Error::Shape {
                    op: OP,
                    detail: format!(
                        "{name} is {}, expected {} for x {} and w {}",
                        shape_str(t.shape()),
                        shape_str(want),
                        shape_str(x.shape()),
                        shape_str(w.shape())
                    ),
                });
            }
        }
    }
    let ctx = x.context();
    if rows == 0 {
        // Nothing flows back: dw and db are zero (dx is empty).
        for t in [grads.dw, grads.db].into_iter().flatten() {
            write_zeros(t)?;
        }
        return Ok(());
    }
    // check() made sure an activation comes with its pre-activation.
    let dz = match pre.filter(|_| act != Activation::None) {
        Some(pre) => {
            let dz = Tensor::empty(ctx, dy.shape(), dy.dtype())?;
            activation_backward_into(pre, dy, act, &dz).map_err(rename)?;
            dz.reshape(&[rows, o])?
        }
        None => dy.reshape(&[rows, o])?,
    };
    let x2 = x.reshape(&[rows, i])?;
    if let Some(dx) = grads.dx {
        let opts = MatmulOptions::default().out_dtype(dx.dtype());
        matmul_into(&dz, w, &opts, &dx.reshape(&[rows, i])?).map_err(rename)?;
    }
    if let Some(dw) = grads.dw {
        let opts = MatmulOptions::default().out_dtype(dw.dtype());
        if transpose_first(ctx.profile(), rows, i) {
            let dzt = Tensor::empty(ctx, &[o, rows], dz.dtype())?;
            transpose_into(OP, &dz, &dzt)?;
            matmul_into(&dzt, &x2, &opts, dw).map_err(rename)?;
        } else {
            matmul_into(&dz, &x2, &opts.transpose(true, false), dw).map_err(rename)?;
        }
    }
    if let Some(db) = grads.db {
        column_sum_into(&dz, db).map_err(rename)?;
    }
    Ok(())
}

/// Whether `dw = dzᵀ · x` runs on a transposed copy of dz: where the
/// matmul's fast kernel takes A only as stored (the texel kernel of CPU
/// adapters, for k = rows and n = in multiples of 4). There the transposed
/// read is a scalar kernel (DESIGN.md has the measured gap); the copy costs
/// two passes over dz.
fn transpose_first(profile: &DeviceProfile, rows: usize, inp: usize) -> bool {
    profile.texel_reads && rows.is_multiple_of(4) && inp.is_multiple_of(4)
}

/// An error of a step, reported as this op's.
fn rename(e: Error) -> Error {
    match e {
        Error::TooLarge {
            what,
            size,
            limit,
            kind,
            ..
        } => Error::TooLarge {
            op: OP,
            what,
            size,
            limit,
            kind,
        },
        Error::Unsupported { detail, .. } => Error::Unsupported { op: OP, detail },
        e => e,
    }
}

/// The operands' checks; `(rows, out, in)`.
fn check(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    act: Activation,
    pre: Option<&Tensor>,
) -> Result<(usize, usize, usize)> {
    let mut ins = vec![("x", x), ("w", w), ("dy", dy)];
    ins.extend(pre.map(|p| ("pre", p)));
    Tensor::same_context(OP, &ins)?;
    expect_dtype(OP, "x", x.dtype(), &DType::FLOAT)?;
    for (name, t) in &ins[1..] {
        expect_dtype(OP, name, t.dtype(), &[x.dtype()])?;
    }
    let (xs, ws, ds) = (x.shape(), w.shape(), dy.shape());
    let bad = || Error::Shape {
        op: OP,
        detail: format!(
            "x {} must be [.., in], w {} [out, in] and dy {} [.., out] with x's leading \
             dimensions",
            shape_str(xs),
            shape_str(ws),
            shape_str(ds)
        ),
    };
    let [o, i] = *ws else { return Err(bad()) };
    if xs.last() != Some(&i) || ds.last() != Some(&o) || xs[..xs.len() - 1] != ds[..ds.len() - 1] {
        return Err(bad());
    }
    match (act, pre) {
        (Activation::None, _) => {}
        (_, None) => {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("{act:?} needs the saved pre-activation (pre), got none"),
            })
        }
        (_, Some(p)) if p.shape() != ds => {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "pre is {}, dy is {}: they must have one shape",
                    shape_str(p.shape()),
                    shape_str(ds)
                ),
            })
        }
        _ => {}
    }
    // The product overflows only for empty tensors of in = out = 0, whose
    // gradients are all empty: rows 0 then.
    let rows = xs[..xs.len() - 1]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(0);
    Ok((rows, o, i))
}
