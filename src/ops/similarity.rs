//! Similarity: L2 normalisation, row-wise cosine similarity and the all-pairs
//! score matrix. Kernel source: `ops/similarity.wgsl` (the score matrix
//! runs on the matmul kernels).
//!
//! **An all-zero row normalises to zero, and its cosine with anything is 0**
//! (no NaN). Rows are scaled by their largest magnitude before their norm is
//! taken (as BLAS `nrm2` does), so rows of tiny (1e-30) or huge (1e30) values
//! normalise like any other; so do rows of subnormal values (below 1.2e-38)
//! on adapters that keep subnormals (lavapipe does). WGSL lets an adapter
//! flush them to zero: there a row of only subnormals normalises to zero, as
//! an all-zero row does.

use crate::context::{Bind, Spec};
use crate::error::{expect_dtype, Error, Result};
use crate::ops::matmul::{self, MatmulOptions};
use crate::shader;
use crate::tensor::{shape_str, DType, Tensor};

const SRC: &str = include_str!("similarity.wgsl");

crate::shader::params! {
    /// Mirrors `Params` in `ops/similarity.wgsl`.
    pub(crate) struct SimilarityParams {
        /// Rows.
        rows: u32,
        /// Row length.
        d: u32,
        _p0: u32,
        _p1: u32,
    }
}

/// Binding slots of `ops/similarity.wgsl`: inputs from 1, the output last.
mod slot {
    pub const FIRST_INPUT: u32 = 1;
}

crate::shader::defines! {
    /// Defines of `ops/similarity.wgsl`: which kernel.
    pub(crate) enum SimilarityKernel {
        Normalize = "KIND_NORMALIZE",
        Cosine = "KIND_COSINE",
    }
}

/// One similarity kernel specialisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SimilaritySpec {
    pub kernel: SimilarityKernel,
    pub dtype: DType,
}

impl Spec for SimilaritySpec {
    fn family(&self) -> &'static str {
        "similarity"
    }
    fn entry(&self) -> &'static str {
        match self.kernel {
            SimilarityKernel::Normalize => "normalize",
            SimilarityKernel::Cosine => "cosine",
        }
    }
    fn source(&self) -> Result<String> {
        shader::render(self, SRC, self.dtype, false, &[self.kernel], &[])
    }
}

impl SimilaritySpec {
    /// Every spec the ops can produce (for the WGSL validation test).
    #[cfg(test)]
    pub(crate) fn reachable() -> Vec<SimilaritySpec> {
        let kernels = [SimilarityKernel::Normalize, SimilarityKernel::Cosine];
        kernels
            .iter()
            .flat_map(|&kernel| {
                [DType::F32, DType::F16].map(|dtype| SimilaritySpec { kernel, dtype })
            })
            .collect()
    }
}

/// Similarity measure of [`scores`] (and the search index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Metric {
    /// Inner product `a·b`.
    #[default]
    InnerProduct,
    /// Cosine similarity `a·b / (‖a‖ ‖b‖)`.
    Cosine,
    /// Squared Euclidean distance `‖a − b‖²`, smaller is nearer (the search
    /// index; [`scores`] returns [`Error::Unsupported`] for it).
    L2,
}

fn rows_of(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    let s = x.shape();
    expect_dtype(op, "x", x.dtype(), &DType::FLOAT)?;
    if s.len() != 2 {
        return Err(Error::Shape {
            op,
            detail: format!(
                "expected an f32/f16 [n, d] tensor, got {} {}",
                x.dtype(),
                shape_str(s)
            ),
        });
    }
    if x.bytes() > x.context().max_binding() {
        return Err(Error::TooLarge {
            op,
            what: format!("tensor {}", shape_str(s)),
            size: x.bytes(),
            limit: x.context().max_binding(),
            kind: crate::Limit::StorageBinding,
        });
    }
    Ok((s[0], s[1]))
}

fn run(
    op: &'static str,
    kernel: SimilarityKernel,
    x: &Tensor,
    binds: &[&Tensor],
    rows: usize,
    d: usize,
) -> Result<()> {
    let ctx = x.context();
    // Rows of zero length normalise to rows of zero length: nothing to write
    // (and `rows` may be any size then, as the tensor holds no bytes).
    if rows == 0 || (kernel == SimilarityKernel::Normalize && d == 0) {
        return Ok(());
    }
    let Ok(rows32) = u32::try_from(rows) else {
        return Err(Error::TooLarge {
            op,
            what: format!("{rows} rows"),
            size: rows as u64,
            limit: u32::MAX as u64,
            kind: crate::Limit::U32Index,
        });
    };
    let pipe = ctx.pipeline(&SimilaritySpec {
        kernel,
        dtype: x.dtype(),
    })?;
    let p = SimilarityParams {
        rows: rows32,
        d: d as u32,
        ..Default::default()
    };
    ctx.scoped(op, || {
        let ubuf = ctx.uniform(&p);
        let b: Vec<(u32, Bind)> = (slot::FIRST_INPUT..)
            .zip(binds.iter().map(|t| t.bind()))
            .collect();
        let mut enc = ctx.encoder();
        let (gx, gy) = ctx.grid(rows32.div_ceil(64));
        ctx.dispatch(&mut enc, &pipe, &ubuf, &b, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })
}

/// L2-normalises each row of `x [n, d]` into a new tensor of the same dtype.
pub fn normalize(x: &Tensor) -> Result<Tensor> {
    let out = Tensor::empty(x.context(), x.shape(), x.dtype())?;
    normalize_into(x, &out)?;
    Ok(out)
}

/// L2-normalises each row of `x [n, d]` into `out` (same shape and dtype; may
/// not be `x` itself — use [`normalize_in_place`] for that).
pub fn normalize_into(x: &Tensor, out: &Tensor) -> Result<()> {
    const OP: &str = "normalize";
    let (n, d) = rows_of(OP, x)?;
    Tensor::same_context(OP, &[("x", x), ("out", out)])?;
    Tensor::disjoint(OP, &[("out", out)], &[("x", x)])?;
    expect_dtype(OP, "out (x's dtype)", out.dtype(), &[x.dtype()])?;
    if out.shape() != x.shape() {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "out {} {} must match x {} {}",
                out.dtype(),
                shape_str(out.shape()),
                x.dtype(),
                shape_str(x.shape())
            ),
        });
    }
    run(OP, SimilarityKernel::Normalize, x, &[x, out], n, d)
}

/// L2-normalises each row of `x [n, d]` in place.
pub fn normalize_in_place(x: &Tensor) -> Result<()> {
    // Each invocation reads its row fully before writing it, but one buffer
    // cannot be bound read-only and read-write at once: go through a copy.
    let tmp = normalize(x)?;
    let ctx = x.context();
    ctx.scoped("normalize", || {
        let mut enc = ctx.encoder();
        let n = x.padded_bytes();
        enc.copy_buffer_to_buffer(tmp.buffer(), tmp.offset(), x.buffer(), x.offset(), n);
        ctx.submit(enc);
        Ok(())
    })
}

/// Row-wise cosine similarity of `a [n, d]` and `b [n, d]` → f32 `[n]`.
pub fn cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = Tensor::empty(
        a.context(),
        &a.shape()[..1.min(a.shape().len())],
        DType::F32,
    )?;
    cosine_into(a, b, &out)?;
    Ok(out)
}

/// [`cosine`] into `out` (f32 `[n]`).
pub fn cosine_into(a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    const OP: &str = "cosine";
    let (n, d) = rows_of(OP, a)?;
    Tensor::same_context(OP, &[("a", a), ("b", b), ("out", out)])?;
    Tensor::disjoint(OP, &[("out", out)], &[("a", a), ("b", b)])?;
    expect_dtype(OP, "b (a's dtype)", b.dtype(), &[a.dtype()])?;
    expect_dtype(OP, "out", out.dtype(), &[DType::F32])?;
    if a.shape() != b.shape() {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "a {} {} and b {} {} must match",
                a.dtype(),
                shape_str(a.shape()),
                b.dtype(),
                shape_str(b.shape())
            ),
        });
    }
    if out.shape() != [n] {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "out is {} {}, expected f32 [{n}]",
                out.dtype(),
                shape_str(out.shape())
            ),
        });
    }
    run(OP, SimilarityKernel::Cosine, a, &[a, b, out], n, d)
}

/// All-pairs scores of `queries [m, d]` against `corpus [n, d]` → f32 `[m, n]`:
/// inner products, or cosines (both sides normalised first).
pub fn scores(queries: &Tensor, corpus: &Tensor, metric: Metric) -> Result<Tensor> {
    const OP: &str = "scores";
    let (_, dq) = rows_of(OP, queries)?;
    let (_, dc) = rows_of(OP, corpus)?;
    if dq != dc {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "queries {} and corpus {} have different dims",
                shape_str(queries.shape()),
                shape_str(corpus.shape())
            ),
        });
    }
    let opts = MatmulOptions {
        trans_b: true,
        ..Default::default()
    };
    match metric {
        Metric::InnerProduct => matmul::matmul_with(queries, corpus, &opts),
        Metric::Cosine => matmul::matmul_with(&normalize(queries)?, &normalize(corpus)?, &opts),
        Metric::L2 => Err(Error::Unsupported {
            op: OP,
            detail: "all-pairs L2 distances are not a scores metric: search a FlatIndex with \
                     Metric::L2"
                .into(),
        }),
    }
}
