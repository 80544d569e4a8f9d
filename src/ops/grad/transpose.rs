//! The 2-D transpose (`transpose.wgsl`) the linear backward runs before
//! `dzᵀ · x` where the matmul reads a transposed A slowly.

use super::spec::{GradKernel, GradSpec};
use super::{run, Pass};
use crate::context::Bind;
use crate::error::Result;
use crate::tensor::Tensor;

crate::shader::params! {
    /// Mirrors `Params` in `ops/grad/transpose.wgsl`.
    pub(crate) struct TransposeParams {
        rows: u32,
        cols: u32,
        _p0: u32,
        _p1: u32,
    }
}

/// `dst [cols, rows] = srcᵀ` for `src [rows, cols]`, one dtype; the caller
/// checked the shapes, contexts and bindings.
pub(super) fn transpose_into(op: &'static str, src: &Tensor, dst: &Tensor) -> Result<()> {
    let (rows, cols) = (src.shape()[0], src.shape()[1]);
    if rows * cols == 0 {
        return Ok(());
    }
    let ctx = src.context();
    let spec = GradSpec {
        dtype: src.dtype(),
        kernel: GradKernel::Transpose,
    };
    let p = TransposeParams {
        rows: rows as u32,
        cols: cols as u32,
        ..Default::default()
    };
    let binds: Vec<(u32, Bind)> = vec![(1, src.bind()), (2, dst.bind())];
    run(
        ctx,
        op,
        &[Pass::new(ctx, spec, &p, binds, rows * cols, 256)],
    )
}
