//! Layer norm over the last dimension, with an optional fused residual add
//! (`layer_norm(x + residual)`, a transformer block's post-norm). Kernel
//! source: `ops/norm.wgsl`.

use crate::context::{Bind, DeviceProfile, Spec};
use crate::error::{expect_dtype, Error, Result};
use crate::shader;
use crate::tensor::{shape_str, DType, Tensor};

const SRC: &str = include_str!("norm.wgsl");
/// The x (+ residual) bindings and `z()` both layer-norm templates read.
pub(crate) const Z_SRC: &str = include_str!("norm_z.wgsl");
const OP: &str = "layer_norm";

crate::shader::params! {
    /// Mirrors `Params` in `ops/norm.wgsl`.
    pub(crate) struct NormParams {
        /// Rows and values per row.
        rows: u32,
        h: u32,
        /// Added to the variance.
        eps: f32,
        _p0: u32,
    }
}

crate::shader::defines! {
    /// Defines of `ops/norm.wgsl`.
    pub(crate) enum NormDefine {
        Residual = "RESIDUAL",
        Rows = "ROWS",
    }
}

/// Layer-norm schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NormVariant {
    /// What the device profile prefers: [`NormVariant::Rows`] where it
    /// prefers barrier-free kernels (CPU adapters), else
    /// [`NormVariant::Workgroup`].
    #[default]
    Auto,
    /// A workgroup of 64 per row, reducing in workgroup memory.
    Workgroup,
    /// An invocation per row, no barriers.
    Rows,
}

impl NormVariant {
    /// Whether this schedule runs an invocation per row on `profile`'s
    /// adapter (the one place `Auto` is resolved, for the forward, its
    /// backward and the row-wise cross-entropy).
    pub(crate) fn per_row(self, profile: &DeviceProfile) -> bool {
        match self {
            NormVariant::Auto => profile.texel_reads,
            NormVariant::Workgroup => false,
            NormVariant::Rows => true,
        }
    }
}

/// One layer-norm specialisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NormSpec {
    pub dtype: DType,
    pub residual: bool,
    /// The per-row schedule ([`NormVariant::Rows`]).
    pub rows: bool,
}

impl Spec for NormSpec {
    fn family(&self) -> &'static str {
        "norm"
    }
    fn entry(&self) -> &'static str {
        if self.rows {
            "layer_norm_rows"
        } else {
            "layer_norm"
        }
    }
    fn source(&self) -> Result<String> {
        let mut d = Vec::new();
        if self.residual {
            d.push(NormDefine::Residual);
        }
        if self.rows {
            d.push(NormDefine::Rows);
        }
        shader::render(self, &[Z_SRC, SRC].concat(), self.dtype, false, &d, &[])
    }
}

impl NormSpec {
    #[cfg(test)]
    pub(crate) fn reachable() -> Vec<NormSpec> {
        [DType::F32, DType::F16]
            .into_iter()
            .flat_map(|dtype| {
                [(false, false), (false, true), (true, false), (true, true)].map(
                    |(residual, rows)| NormSpec {
                        dtype,
                        residual,
                        rows,
                    },
                )
            })
            .collect()
    }
}

/// `out = (z − mean(z)) / √(var(z) + eps) · gamma + beta` over the last
/// dimension `h` of `z = x` (or `x + residual`), for `x` of any shape
/// `[…, h]`; `gamma` and `beta` are `[h]`; `out` has `x`'s shape. f32 or f16
/// (statistics in f32).
///
/// Errors: [`Error::Shape`] naming the mismatched tensors (residual or out
/// not `x`'s shape, gamma/beta not `[h]`); [`Error::DType`] for u32 data or
/// a tensor whose dtype is not `x`'s;
/// [`Error::InvalidArgument`] for an output that shares a buffer with an
/// input, tensors of two contexts, or a non-finite or negative `eps`;
/// [`Error::TooLarge`] past one storage binding.
pub fn layer_norm_into(
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    out: &Tensor,
) -> Result<()> {
    layer_norm_with(x, residual, gamma, beta, eps, NormVariant::Auto, out)
}

/// [`layer_norm_into`] with an explicit schedule (both serve every shape).
///
/// Errors: as [`layer_norm_into`].
pub fn layer_norm_with(
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    variant: NormVariant,
    out: &Tensor,
) -> Result<()> {
    let mut ins = vec![("x", x), ("gamma", gamma), ("beta", beta)];
    ins.extend(residual.map(|r| ("residual", r)));
    Tensor::disjoint(OP, &[("out", out)], &ins)?;
    ins.push(("out", out));
    Tensor::same_context(OP, &ins)?;
    let bad = |detail: String| Err(Error::Shape { op: OP, detail });
    let h = x.shape().last().copied().unwrap_or(0);
    expect_dtype(OP, "x", x.dtype(), &DType::FLOAT)?;
    for (name, t) in [("residual", residual), ("out", Some(out))] {
        if let Some(t) = t {
            expect_dtype(OP, name, t.dtype(), &[x.dtype()])?;
        }
    }
    expect_dtype(OP, "gamma", gamma.dtype(), &[x.dtype()])?;
    expect_dtype(OP, "beta", beta.dtype(), &[x.dtype()])?;
    if x.shape().is_empty() {
        return bad(format!(
            "x must be [.., h] f32 or f16, got {} {}",
            x.dtype(),
            shape_str(x.shape())
        ));
    }
    for (name, t) in [("residual", residual), ("out", Some(out))] {
        if let Some(t) = t {
            if t.shape() != x.shape() {
                return bad(format!(
                    "{name} is {} {}, x is {} {}",
                    t.dtype(),
                    shape_str(t.shape()),
                    x.dtype(),
                    shape_str(x.shape())
                ));
            }
        }
    }
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape() != [h] {
            return bad(format!(
                "{name} is {} {}, expected {} [{h}] for x {}",
                t.dtype(),
                shape_str(t.shape()),
                x.dtype(),
                shape_str(x.shape())
            ));
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: format!("eps must be finite and ≥ 0, got {eps}"),
        });
    }
    let ctx = x.context();
    if x.padded_bytes() > ctx.max_binding() {
        return Err(Error::TooLarge {
            op: OP,
            what: format!("x {}", shape_str(x.shape())),
            size: x.padded_bytes(),
            limit: ctx.max_binding(),
            kind: crate::Limit::StorageBinding,
        });
    }
    let rows = x.len().checked_div(h).unwrap_or(0);
    if rows == 0 {
        return Ok(());
    }
    let rows_kernel = variant.per_row(ctx.profile());
    let pipe = ctx.pipeline(&NormSpec {
        dtype: x.dtype(),
        residual: residual.is_some(),
        rows: rows_kernel,
    })?;
    let p = NormParams {
        rows: rows as u32,
        h: h as u32,
        eps,
        ..Default::default()
    };
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let mut binds: Vec<(u32, Bind)> = vec![
            (1, x.bind()),
            (3, gamma.bind()),
            (4, beta.bind()),
            (5, out.bind()),
        ];
        if let Some(r) = residual {
            binds.push((2, r.bind()));
        }
        let mut enc = ctx.encoder();
        let groups = if rows_kernel {
            (rows as u32).div_ceil(64)
        } else {
            rows as u32
        };
        let (gx, gy) = ctx.grid(groups);
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })
}
