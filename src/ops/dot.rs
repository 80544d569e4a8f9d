//! Batched dot products: `a [.., d]`, `b [.., d]` -> `[..]` with
//! `out[i] = Σ_j a[i, j] · b[i, j]`. f32 or f16 inputs, f32 accumulation and output.
//! Kernel source: `ops/dot.wgsl`.

use std::fmt;

use crate::context::{Bind, DeviceProfile, Spec};
use crate::error::{expect_dtype, Error, Result};
use crate::shader;
use crate::tensor::{shape_str, DType, Tensor};

const SRC: &str = include_str!("dot.wgsl");
const WG: u32 = 64;

crate::shader::params! {
    /// Mirrors `Params` in `ops/dot.wgsl`.
    pub(crate) struct DotParams {
        /// Rows in this window.
        rows: u32,
        /// Row length in loaded units (`d`, or `d / 4` on the vec4 path).
        dv: u32,
        /// Offset of the window's first `a` element in its binding (loaded units).
        a_off: u32,
        /// Same for `b`.
        b_off: u32,
        /// Offset of the window's first output in its binding (f32 elements).
        out_off: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

/// Binding slots of `ops/dot.wgsl` (0 is the params).
mod slot {
    pub const A: u32 = 1;
    pub const B: u32 = 2;
    pub const OUT: u32 = 3;
}

crate::shader::defines! {
    /// Defines of `ops/dot.wgsl`.
    pub(crate) enum DotDefine {
        Vec4 = "VEC4",
        Subgroup = "SUBGROUP",
    }
}

/// One dot kernel specialisation: the pipeline-cache key and the only input
/// to its WGSL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DotSpec {
    /// `Naive` or `Workgroup`.
    pub kernel: DotVariant,
    pub dtype: DType,
    /// Rows read as vec4 (`d % 4 == 0`).
    pub vec4: bool,
    /// Subgroup sums in the reduction.
    pub subgroups: bool,
}

impl Spec for DotSpec {
    fn family(&self) -> &'static str {
        "dot"
    }
    fn entry(&self) -> &'static str {
        match self.kernel {
            DotVariant::Naive => "dot_naive",
            _ => "dot_workgroup",
        }
    }
    fn source(&self) -> Result<String> {
        let mut defines = Vec::new();
        if self.vec4 {
            defines.push(DotDefine::Vec4);
        }
        if self.subgroups {
            defines.push(DotDefine::Subgroup);
        }
        shader::render(self, SRC, self.dtype, false, &defines, &[])
    }
}

impl DotSpec {
    /// Every spec a planner can produce (for the WGSL validation test).
    #[cfg(test)]
    pub(crate) fn reachable() -> Vec<DotSpec> {
        let mut v = Vec::new();
        for kernel in [DotVariant::Naive, DotVariant::Workgroup] {
            for dtype in [DType::F32, DType::F16] {
                for vec4 in [false, true] {
                    for subgroups in [false, true] {
                        v.push(DotSpec {
                            kernel,
                            dtype,
                            vec4,
                            subgroups,
                        });
                    }
                }
            }
        }
        v
    }
}

/// Dot-product kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DotVariant {
    /// One invocation per row reading straight from global memory: the baseline.
    Naive,
    /// One workgroup per row: coalesced (vec4 where `d % 4 == 0`) loads and a
    /// reduction in workgroup memory, with subgroup sums where the adapter has them.
    Workgroup,
    /// Picks by device profile and shape: `Workgroup` for rows of at least 64
    /// elements unless the profile prefers barrier-free kernels
    /// ([`DeviceProfile::texel_reads`]), else `Naive`.
    Auto,
}

impl DotVariant {
    /// Every concrete variant (for tests and benchmarks).
    pub const ALL: [DotVariant; 3] = [DotVariant::Naive, DotVariant::Workgroup, DotVariant::Auto];
}

/// What a dot call will run: the kernel, its specialisation and the windows
/// the rows are bound in. From [`plan`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DotPlan {
    /// The kernel that runs (`Naive` or `Workgroup`).
    pub kernel: DotVariant,
    /// Why this kernel.
    pub reason: &'static str,
    /// Rows bound per dispatch (a tensor larger than one storage binding is
    /// bound in windows of rows).
    pub rows_per_window: usize,
    pub(crate) spec: DotSpec,
}

impl fmt::Display for DotPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dot: {:?} ({}), {}{}, {} rows per window",
            self.kernel,
            self.reason,
            self.spec.dtype,
            if self.spec.vec4 { " vec4" } else { "" },
            self.rows_per_window
        )
    }
}

/// Resolves a call into a plan from the device profile and the shapes alone.
fn plan_for(
    profile: &DeviceProfile,
    n: usize,
    d: usize,
    dtype: DType,
    variant: DotVariant,
) -> Result<DotPlan> {
    const OP: &str = "dot";
    let (kernel, reason) = match variant {
        DotVariant::Auto if d >= 64 && !profile.texel_reads => (
            DotVariant::Workgroup,
            "rows of 64 or more on a GPU: a workgroup per row",
        ),
        DotVariant::Auto if profile.texel_reads => (
            DotVariant::Naive,
            "barrier-free kernel preferred by this device profile",
        ),
        DotVariant::Auto => (DotVariant::Naive, "short rows: an invocation per row"),
        v => (v, "forced by the caller"),
    };
    // Rows per window: a window's binding starts up to one offset-alignment
    // before its first element, so that slack is reserved.
    let row_bytes = d as u64 * dtype.size();
    let slack = profile.storage_offset_alignment as u64;
    let cap = profile.max_storage_binding.saturating_sub(slack);
    let rows_cap = cap.checked_div(row_bytes).unwrap_or(n as u64);
    if rows_cap == 0 {
        return Err(Error::TooLarge {
            op: OP,
            what: format!("one row of {d} {dtype} elements"),
            size: row_bytes,
            limit: cap,
            kind: crate::Limit::StorageBinding,
        });
    }
    let rows_per_window = rows_cap.min(cap / 4).min(1 << 24).min(n.max(1) as u64) as usize;
    Ok(DotPlan {
        kernel,
        reason,
        rows_per_window,
        spec: DotSpec {
            kernel,
            dtype,
            vec4: d.is_multiple_of(4) && d > 0,
            subgroups: profile.subgroups,
        },
    })
}

/// The plan a [`dot_with`] call with these operands would run.
///
/// Errors: as [`dot_with`], before anything runs.
pub fn plan(a: &Tensor, b: &Tensor, variant: DotVariant) -> Result<DotPlan> {
    let shape = out_shape("dot", a, b)?;
    let d = *a.shape().last().unwrap_or(&0);
    plan_for(
        a.context().profile(),
        shape.iter().product(),
        d,
        a.dtype(),
        variant,
    )
}

fn out_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    Tensor::same_context(op, &[("a", a), ("b", b)])?;
    if a.shape() != b.shape() || a.shape().is_empty() {
        return Err(Error::Shape {
            op,
            detail: format!(
                "a {} and b {} must have the same shape [.., d]",
                shape_str(a.shape()),
                shape_str(b.shape())
            ),
        });
    }
    expect_dtype(op, "a", a.dtype(), &DType::FLOAT)?;
    expect_dtype(op, "b (a's dtype)", b.dtype(), &[a.dtype()])?;
    Ok(a.shape()[..a.shape().len() - 1].to_vec())
}

/// Row-wise dot products with the default (`Auto`) kernel. Returns an f32 tensor of
/// shape `a.shape()[..-1]`. Errors: [`Error::Shape`] when shapes differ;
/// [`Error::DType`] unless `a` and `b` are both f32 or both f16.
pub fn dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    dot_with(a, b, DotVariant::Auto)
}

/// [`dot`] with an explicit kernel.
pub fn dot_with(a: &Tensor, b: &Tensor, variant: DotVariant) -> Result<Tensor> {
    let shape = out_shape("dot", a, b)?;
    let out = Tensor::empty(a.context(), &shape, DType::F32)?;
    dot_into(a, b, variant, &out)?;
    Ok(out)
}

/// Writes the row-wise dot products of `a` and `b` into `out` (f32, shape
/// `a.shape()[..-1]`).
pub fn dot_into(a: &Tensor, b: &Tensor, variant: DotVariant, out: &Tensor) -> Result<()> {
    const OP: &str = "dot";
    let shape = out_shape(OP, a, b)?;
    Tensor::same_context(OP, &[("a", a), ("out", out)])?;
    Tensor::disjoint(OP, &[("out", out)], &[("a", a), ("b", b)])?;
    expect_dtype(OP, "out", out.dtype(), &[DType::F32])?;
    if out.shape() != shape.as_slice() {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "out is {} {}, expected f32 {}",
                out.dtype(),
                shape_str(out.shape()),
                shape_str(&shape)
            ),
        });
    }
    let d = *a.shape().last().unwrap_or(&0);
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(());
    }
    let ctx = a.context();
    let plan = plan_for(ctx.profile(), n, d, a.dtype(), variant)?;
    let pipeline = ctx.pipeline(&plan.spec)?;
    let lanes = if plan.spec.vec4 { 4 } else { 1 };
    let eb = a.dtype().size();
    ctx.scoped(OP, || {
        let mut enc = ctx.encoder();
        let mut r0 = 0usize;
        while r0 < n {
            let rows = plan.rows_per_window.min(n - r0);
            let (first, count) = ((r0 * d) as u64, (rows * d) as u64);
            // Windows count from the start of each buffer; a tensor's own
            // offset is aligned, so a whole number of elements.
            let at = |t: &Tensor, e: u64| t.offset() / e;
            let wa = ctx.window(a.buffer().size(), eb, at(a, eb) + first, count);
            let wb = ctx.window(b.buffer().size(), eb, at(b, eb) + first, count);
            let wo = ctx.window(out.buffer().size(), 4, at(out, 4) + r0 as u64, rows as u64);
            let (Some(wa), Some(wb), Some(wo)) = (wa, wb, wo) else {
                return Err(Error::TooLarge {
                    op: OP,
                    what: format!("a window of {rows} rows"),
                    size: count * eb,
                    limit: ctx.max_binding(),
                    kind: crate::Limit::StorageBinding,
                });
            };
            let params = DotParams {
                rows: rows as u32,
                dv: (d / lanes) as u32,
                a_off: wa.elem_offset / lanes as u32,
                b_off: wb.elem_offset / lanes as u32,
                out_off: wo.elem_offset,
                ..Default::default()
            };
            let groups = match plan.kernel {
                DotVariant::Naive => (rows as u32).div_ceil(WG),
                _ => rows as u32,
            };
            let ubuf = ctx.uniform(&params);
            let (gx, gy) = ctx.grid(groups);
            ctx.dispatch(
                &mut enc,
                &pipeline,
                &ubuf,
                &[
                    (slot::A, Bind::window(a.buffer(), &wa)),
                    (slot::B, Bind::window(b.buffer(), &wb)),
                    (slot::OUT, Bind::window(out.buffer(), &wo)),
                ],
                (gx, gy, 1),
            );
            r0 += rows;
        }
        ctx.submit(enc);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::{dot_into, DotVariant};
    use crate::{Context, DType, Tensor};

    /// The context's bind-group cache, seen from an op: a repeated dispatch
    /// reuses its group; freeing a tensor drops the groups
    /// that bind it, so the cache never keeps a freed tensor's memory.
    #[test]
    fn groups_are_reused_and_purged_with_their_buffers() {
        let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
        let a = Tensor::from_slice(&ctx, &[1.0f32; 64], &[4, 16]).unwrap();
        let out = Tensor::zeros(&ctx, &[4], DType::F32).unwrap();
        dot_into(&a, &a, DotVariant::Auto, &out).unwrap();
        let after_one = ctx.bind_groups_cached();
        assert!(after_one >= 1);
        dot_into(&a, &a, DotVariant::Auto, &out).unwrap();
        assert_eq!(
            ctx.bind_groups_cached(),
            after_one,
            "a repeated call reuses its group"
        );
        drop(a);
        assert_eq!(ctx.bind_groups_cached(), after_one - 1);
        assert_eq!(out.to_vec::<f32>().unwrap(), vec![16.0; 4]);
    }
}
