//! Column sums without atomics (`colsum.wgsl`): `out[j] = Σ_r x[r, j]`, the
//! bias gradient of a linear layer and the last pass of layer norm's dγ and
//! dβ. One pass (an invocation per column walks every row) or two (an
//! invocation per block of rows and column writes an f32 partial, then one
//! per column adds the blocks): both sum in a fixed order.

use super::spec::GradSpec;
use super::{fit_binding, run, scratch, Pass};
use crate::context::{Bind, Context, DeviceProfile, Tracked};
use crate::error::{expect_dtype, Error, Result};
use crate::tensor::{shape_str, DType, Tensor};

const OP: &str = "column_sum";

/// Rows per block of the two-pass schedule's first pass.
pub(super) const BLOCK: usize = 64;

crate::shader::params! {
    /// Mirrors `Params` in `ops/grad/colsum.wgsl`.
    pub(crate) struct ColSumParams {
        rows: u32,
        cols: u32,
        /// Rows per block (at least 1).
        block: u32,
        /// Element offset of the matrix in the source binding.
        in_offset: u32,
    }
}

/// Column-sum schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ColumnSumVariant {
    /// What the device profile prefers for the shape: see
    /// [`ColumnSumVariant::TwoPass`].
    #[default]
    Auto,
    /// An invocation per column sums every row (`cols` invocations).
    OnePass,
    /// An invocation per (block of 64 rows, column) writes an f32 partial
    /// sum, a second pass adds the blocks: `rows / 64` times the
    /// parallelism, for an extra `rows / 64 · cols` f32 written and read.
    TwoPass,
}

impl ColumnSumVariant {
    /// Whether this schedule runs two passes over `rows` rows of `cols`
    /// columns on `profile`. Auto: two passes where one would leave most of
    /// the device idle (fewer than 16,384 invocations for more than one
    /// block of rows) on GPUs; on CPU adapters, whose few threads one pass
    /// already fills, one pass unless the columns are too few to share out.
    pub(super) fn two_pass(self, profile: &DeviceProfile, rows: usize, cols: usize) -> bool {
        match self {
            ColumnSumVariant::OnePass => false,
            ColumnSumVariant::TwoPass => true,
            ColumnSumVariant::Auto if rows <= BLOCK => false,
            ColumnSumVariant::Auto if profile.texel_reads => cols < 256,
            ColumnSumVariant::Auto => cols < 16384,
        }
    }
}

/// One column sum to record: `rows × cols` elements of `input` type from
/// element `in_offset` of `src`, summed into `cols` elements of `output`
/// type in `dst`.
pub(super) struct Sum<'a> {
    pub src: Bind<'a>,
    pub input: DType,
    pub in_offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub dst: Bind<'a>,
    pub output: DType,
}

/// The f32 scratch a two-pass sum of `rows × cols` needs (`None` for one
/// pass).
pub(super) fn partials(
    ctx: &Context,
    op: &'static str,
    two_pass: bool,
    rows: usize,
    cols: usize,
) -> Result<Option<Tracked>> {
    if !two_pass {
        return Ok(None);
    }
    scratch(
        ctx,
        op,
        rows.div_ceil(BLOCK).max(1) * cols,
        "column-sum partials",
    )
    .map(Some)
}

/// The passes of `s`: one, or two through `part` (from [`partials`]).
pub(super) fn passes<'a>(ctx: &Context, s: Sum<'a>, part: Option<&'a Tracked>) -> Vec<Pass<'a>> {
    let one = |src, input, in_offset, rows| {
        let p = ColSumParams {
            rows: rows as u32,
            cols: s.cols as u32,
            block: (rows as u32).max(1),
            in_offset: in_offset as u32,
        };
        let binds = vec![(1, src), (2, s.dst)];
        Pass::new(
            ctx,
            GradSpec::column_sum(input, s.output),
            &p,
            binds,
            s.cols,
            64,
        )
    };
    let Some(part) = part else {
        return vec![one(s.src, s.input, s.in_offset, s.rows)];
    };
    let blocks = s.rows.div_ceil(BLOCK).max(1);
    let p = ColSumParams {
        rows: s.rows as u32,
        cols: s.cols as u32,
        block: BLOCK as u32,
        in_offset: s.in_offset as u32,
    };
    let first = Pass::new(
        ctx,
        GradSpec::column_sum(s.input, DType::F32),
        &p,
        vec![(1, s.src), (2, Bind::whole(part))],
        blocks * s.cols,
        64,
    );
    let mut second = one(Bind::whole(part), DType::F32, 0, blocks);
    second.binds[1] = (2, s.dst);
    vec![first, second]
}

/// `out[j] = Σ_r x[r, j]` over every row of `x [.., cols]` (the leading
/// dimensions flattened into rows), for `x` f32 or f16 and `out [cols]` f32
/// or f16; accumulates in f32, zero rows sum to zeros. Deterministic: the
/// same input gives the same bits.
///
/// Errors: as [`column_sum_with`].
pub fn column_sum_into(x: &Tensor, out: &Tensor) -> Result<()> {
    column_sum_with(x, ColumnSumVariant::Auto, out)
}

/// [`column_sum_into`] with an explicit schedule (each serves every shape).
///
/// Errors: [`Error::Shape`] for `x` of no dimension or `out` not `[cols]`;
/// [`Error::DType`] for u32 tensors; [`Error::InvalidArgument`] for `out`
/// sharing a buffer with `x` or tensors of two contexts;
/// [`Error::TooLarge`] past one storage binding.
pub fn column_sum_with(x: &Tensor, variant: ColumnSumVariant, out: &Tensor) -> Result<()> {
    Tensor::disjoint(OP, &[("out", out)], &[("x", x)])?;
    Tensor::same_context(OP, &[("x", x), ("out", out)])?;
    expect_dtype(OP, "x", x.dtype(), &DType::FLOAT)?;
    expect_dtype(OP, "out", out.dtype(), &DType::FLOAT)?;
    let cols = x.shape().last().copied();
    if cols.is_none() || out.shape() != [cols.unwrap_or(0)] {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "x {} must be [.., cols] and out [cols], got out {}",
                shape_str(x.shape()),
                shape_str(out.shape())
            ),
        });
    }
    fit_binding(OP, &[("x", x), ("out", out)])?;
    let cols = cols.unwrap_or(0);
    if cols == 0 {
        return Ok(());
    }
    let rows = x.len() / cols;
    let ctx = x.context();
    let two = variant.two_pass(ctx.profile(), rows, cols);
    let part = partials(ctx, OP, two, rows, cols)?;
    let sum = Sum {
        src: x.bind(),
        input: x.dtype(),
        in_offset: 0,
        rows,
        cols,
        dst: out.bind(),
        output: out.dtype(),
    };
    run(ctx, OP, &passes(ctx, sum, part.as_ref()))
}
