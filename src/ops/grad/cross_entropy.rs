//! Softmax cross-entropy fused with its gradient (`cross_entropy.wgsl`):
//! PyTorch's `F.cross_entropy(logits, targets, ignore_index=…,
//! reduction="mean")` and its backward in one kernel per row, then the
//! mean of the row losses in one workgroup (no atomics).

use super::spec::{GradKernel, GradSpec};
use super::{fit_binding, fit_words, run, write_zeros, Pass};
use crate::context::Bind;
use crate::error::{expect_dtype, Error, Result};
use crate::ops::norm::NormVariant;
use crate::tensor::{shape_str, DType, Tensor};

const OP: &str = "cross_entropy";

/// PyTorch's default `ignore_index`, −100, as the u32 it becomes
/// (`-100i32 as u32`, so targets converted from i32 or i64 with `as u32`
/// keep it).
pub const IGNORE_INDEX: u32 = -100i32 as u32;

crate::shader::params! {
    /// Mirrors `Params` in `ops/grad/cross_entropy.wgsl`.
    pub(crate) struct CrossEntropyParams {
        rows: u32,
        classes: u32,
        /// 1 / (rows not ignored); 0 when every row is.
        scale: f32,
        _p0: u32,
    }
}

/// Options of [`cross_entropy_into`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossEntropyOptions {
    /// Rows whose target is this are ignored: no loss, a zero gradient,
    /// not counted in the mean. Default [`IGNORE_INDEX`] (PyTorch's −100);
    /// `None` ignores nothing.
    pub ignore_index: Option<u32>,
    /// The per-row schedule, as layer norm's: a workgroup per row or an
    /// invocation per row (Auto: what the device profile prefers).
    pub variant: NormVariant,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions {
            ignore_index: Some(IGNORE_INDEX),
            variant: NormVariant::Auto,
        }
    }
}

/// The loss of [`cross_entropy_into`], on the device.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CrossEntropy {
    /// `[1]` f32: the mean of the row losses over the rows not ignored
    /// (0 when every row is ignored, or there are none: PyTorch gives NaN).
    pub loss: Tensor,
    /// `[n]` f32: each row's `logsumexp(logits) − logits[target]`, 0 for
    /// an ignored row (PyTorch's `reduction="none"`).
    pub row_losses: Tensor,
    /// The rows not ignored (the mean's divisor).
    pub count: usize,
}

/// Softmax cross-entropy of `logits [n, classes]` (f32 or f16) against
/// host `targets` (`n` class indices), mean reduction, with its gradient
/// written into `dlogits` (`logits`' shape and dtype) in the same kernel:
/// `(softmax(logits) − onehot(target)) / count` per row, zeros for ignored
/// rows. Numerically stable (each row is shifted by its maximum); f32
/// arithmetic; NaN logits make their row's loss and gradient NaN.
///
/// Errors: [`Error::Shape`] for logits not 2-D, `targets` not `n` long or
/// `dlogits` of another shape (naming the shapes); [`Error::DType`] for u32
/// logits or `dlogits` not of their dtype; [`Error::InvalidArgument`] for a
/// target past the classes that is not the ignore index (naming the row),
/// `dlogits` sharing a buffer with `logits`, or tensors of two contexts;
/// [`Error::TooLarge`] past one storage binding.
pub fn cross_entropy_into(
    logits: &Tensor,
    targets: &[u32],
    opts: &CrossEntropyOptions,
    dlogits: &Tensor,
) -> Result<CrossEntropy> {
    Tensor::disjoint(OP, &[("dlogits", dlogits)], &[("logits", logits)])?;
    Tensor::same_context(OP, &[("logits", logits), ("dlogits", dlogits)])?;
    expect_dtype(OP, "logits", logits.dtype(), &DType::FLOAT)?;
    expect_dtype(OP, "dlogits", dlogits.dtype(), &[logits.dtype()])?;
    let [n, classes] = *logits.shape() else {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "logits must be [n, classes], got {}",
                shape_str(logits.shape())
            ),
        });
    };
    if targets.len() != n || dlogits.shape() != logits.shape() {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "logits {} need {n} targets (got {}) and dlogits of their shape (got {})",
                shape_str(logits.shape()),
                targets.len(),
                shape_str(dlogits.shape())
            ),
        });
    }
    fit_binding(OP, &[("logits", logits), ("dlogits", dlogits)])?;
    // The targets' table and the row losses: a word per row each.
    fit_words(logits.context(), OP, n, "the targets and row losses")?;
    // The kernel's targets: ignored rows become u32::MAX (≥ classes).
    let mut table = Vec::with_capacity(n);
    for (r, &t) in targets.iter().enumerate() {
        if opts.ignore_index == Some(t) {
            table.push(u32::MAX);
        } else if t as usize >= classes {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!(
                    "row {r} has target {t}, past the {classes} classes (and not the ignore \
                     index {:?})",
                    opts.ignore_index
                ),
            });
        } else {
            table.push(t);
        }
    }
    let count = table.iter().filter(|&&t| t != u32::MAX).count();
    let ctx = logits.context();
    let out = CrossEntropy {
        loss: Tensor::empty(ctx, &[1], DType::F32)?,
        row_losses: Tensor::empty(ctx, &[n], DType::F32)?,
        count,
    };
    if n == 0 {
        write_zeros(&out.loss)?;
        return Ok(out);
    }
    let per_row = opts.variant.per_row(ctx.profile());
    let p = CrossEntropyParams {
        rows: n as u32,
        classes: classes as u32,
        scale: if count == 0 { 0.0 } else { 1.0 / count as f32 },
        ..Default::default()
    };
    let targets = ctx.table(&table);
    let binds: Vec<(u32, Bind)> = vec![
        (1, logits.bind()),
        (2, targets.bind()),
        (3, dlogits.bind()),
        (4, out.row_losses.bind()),
    ];
    let spec = GradSpec {
        dtype: logits.dtype(),
        kernel: GradKernel::CrossEntropy { rows: per_row },
    };
    let (items, wg) = if per_row { (n, 64) } else { (n * 64, 64) };
    let rows = Pass::new(ctx, spec, &p, binds, items, wg);
    let sum = GradSpec {
        dtype: DType::F32,
        kernel: GradKernel::LossSum,
    };
    let binds = vec![(4, out.row_losses.bind()), (5, out.loss.bind())];
    let mean = Pass::new(ctx, sum, &p, binds, 64, 64);
    run(ctx, OP, &[rows, mean])?;
    Ok(out)
}
