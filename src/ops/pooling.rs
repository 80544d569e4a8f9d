//! Masked mean pooling over the valid tokens of each sequence (a sentence
//! embedding from a padded batch of token states). Kernel source:
//! `ops/pooling.wgsl`.

use crate::context::{Bind, Spec};
use crate::error::{expect_dtype, Error, Result};
use crate::shader;
use crate::tensor::{shape_str, DType, Tensor};

const SRC: &str = include_str!("pooling.wgsl");
const OP: &str = "mean_pool";

crate::shader::params! {
    /// Mirrors `Params` in `ops/pooling.wgsl`.
    pub(crate) struct PoolParams {
        batch: u32,
        seq: u32,
        h: u32,
        _p0: u32,
    }
}

crate::shader::defines! {
    /// Defines of `ops/pooling.wgsl` (none).
    pub(crate) enum PoolDefine {}
}

/// One pooling specialisation: the input dtype.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolSpec {
    pub dtype: DType,
}

impl Spec for PoolSpec {
    fn family(&self) -> &'static str {
        "pooling"
    }
    fn entry(&self) -> &'static str {
        "mean_pool"
    }
    fn source(&self) -> Result<String> {
        shader::render::<PoolDefine>(self, SRC, self.dtype, false, &[], &[])
    }
}

impl PoolSpec {
    #[cfg(test)]
    pub(crate) fn reachable() -> Vec<PoolSpec> {
        vec![
            PoolSpec { dtype: DType::F32 },
            PoolSpec { dtype: DType::F16 },
        ]
    }
}

/// `out[b, j]` = the mean of `x[b, t, j]` over `t < lengths[b]` (the rest is
/// padding), for `x [batch, seq, h]` f32 or f16 and `out [batch, h]` f32; a
/// length over `seq` counts as `seq`, a length of 0 pools to zeros.
///
/// Errors: [`Error::Shape`] for `x` not 3-D, `lengths` not `batch` long, or
/// `out` not `[batch, h]`; [`Error::DType`] for `x` not float or `out` not
/// f32; [`Error::InvalidArgument`] for an
/// output sharing a buffer with `x` or tensors of two contexts;
/// [`Error::TooLarge`] past one storage binding.
pub fn mean_pool_into(x: &Tensor, lengths: &[u32], out: &Tensor) -> Result<()> {
    Tensor::disjoint(OP, &[("out", out)], &[("x", x)])?;
    Tensor::same_context(OP, &[("x", x), ("out", out)])?;
    let s = x.shape();
    expect_dtype(OP, "x", x.dtype(), &DType::FLOAT)?;
    expect_dtype(OP, "out", out.dtype(), &[DType::F32])?;
    if s.len() != 3 {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "x must be [batch, seq, h] f32 or f16, got {} {}",
                x.dtype(),
                shape_str(s)
            ),
        });
    }
    let (batch, seq, h) = (s[0], s[1], s[2]);
    if lengths.len() != batch || out.shape() != [batch, h] {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "x {} needs {batch} lengths (got {}) and out f32 [{batch}, {h}] (got {} {})",
                shape_str(s),
                lengths.len(),
                out.dtype(),
                shape_str(out.shape())
            ),
        });
    }
    let ctx = x.context();
    if x.padded_bytes() > ctx.max_binding() {
        return Err(Error::TooLarge {
            op: OP,
            what: format!("x {}", shape_str(s)),
            size: x.padded_bytes(),
            limit: ctx.max_binding(),
            kind: crate::Limit::StorageBinding,
        });
    }
    if out.is_empty() {
        return Ok(());
    }
    let pipe = ctx.pipeline(&PoolSpec { dtype: x.dtype() })?;
    let p = PoolParams {
        batch: batch as u32,
        seq: seq as u32,
        h: h as u32,
        ..Default::default()
    };
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let lens = ctx.table(lengths);
        let mut enc = ctx.encoder();
        let (gx, gy) = ctx.grid(((batch * h) as u32).div_ceil(64));
        let binds: Vec<(u32, Bind)> = vec![(1, x.bind()), (2, lens.bind()), (3, out.bind())];
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })
}
