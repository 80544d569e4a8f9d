//! One matmul or linear call ([`Gemm`]: its operands, epilogue and
//! options) and its checks, which turn it into the [`Problem`] the planner
//! and the kernels read: sizes, per-batch offsets, transposes, dtypes and
//! epilogue.

use super::options::{Activation, MatmulOptions};
use crate::error::{expect_dtype, Error, Result};
use crate::tensor::{shape_str, DType, Tensor};

/// One matmul or linear call: `a · b` (each read transposed as `opts`
/// says), scaled by `opts.alpha`, plus `bias`, then `act`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gemm<'a> {
    /// The public op, for errors.
    pub op: &'static str,
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    /// `[n]`, in A's dtype.
    pub bias: Option<&'a Tensor>,
    pub act: Activation,
    pub opts: &'a MatmulOptions,
}

/// A call after its checks: what the planner and the kernels read.
#[derive(Debug, Clone)]
pub(super) struct Problem {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Per-batch (a, b) element offsets, interleaved.
    pub offsets: Vec<u32>,
    /// `[..batch, m, n]`.
    pub out_shape: Vec<usize>,
    /// Elements of A and of B.
    pub a_len: usize,
    pub b_len: usize,
    /// Scale on A·B (the kernel's `alpha`).
    pub alpha: f32,
    /// A read as stored `[.., k, m]`.
    pub trans_a: bool,
    /// B read as stored `[.., n, k]`.
    pub trans_b: bool,
    /// A's and B's dtype.
    pub dtype: DType,
    pub out_dtype: DType,
    /// Whether a bias is added.
    pub bias: bool,
    pub act: Activation,
}

impl Gemm<'_> {
    /// A plain matmul of `a` and `b`: no bias, no activation.
    pub fn matmul<'a>(a: &'a Tensor, b: &'a Tensor, opts: &'a MatmulOptions) -> Gemm<'a> {
        Gemm {
            op: "matmul",
            a,
            b,
            bias: None,
            act: Activation::None,
            opts,
        }
    }

    /// Every check of the call but the output's shape and dtype (see
    /// [`output`](Self::output)): contexts, dtypes, alpha, shapes, the bias.
    ///
    /// Errors: [`Error::InvalidArgument`] for tensors of another context,
    /// `out` overlapping an operand, or a non-finite alpha; [`Error::DType`]
    /// for operands, bias or output type not of one float dtype;
    /// [`Error::Unsupported`] for f16 without `SHADER_F16`; [`Error::Shape`]
    /// for shapes that do not multiply or broadcast, or a bias not `[n]`.
    pub fn check(&self, out: Option<&Tensor>) -> Result<Problem> {
        let (op, a) = (self.op, self.a);
        let mut operands = vec![("a", a), ("b", self.b)];
        operands.extend(self.bias.map(|t| ("bias", t)));
        if let Some(o) = out {
            Tensor::disjoint(op, &[("out", o)], &operands)?;
            operands.push(("out", o));
        }
        Tensor::same_context(op, &operands)?;
        expect_dtype(op, "a", a.dtype(), &DType::FLOAT)?;
        expect_dtype(op, "b", self.b.dtype(), &[a.dtype()])?;
        expect_dtype(op, "the output type", self.opts.out_dtype, &DType::FLOAT)?;
        if !self.opts.alpha.is_finite() {
            return Err(Error::InvalidArgument {
                op,
                detail: format!("alpha must be finite, got {}", self.opts.alpha),
            });
        }
        let p = self.problem()?;
        if let Some(bias) = self.bias {
            expect_dtype(op, "bias", bias.dtype(), &[a.dtype()])?;
            if bias.shape() != [p.n] {
                return Err(Error::Shape {
                    op,
                    detail: format!("bias is {}, expected [{}]", shape_str(bias.shape()), p.n),
                });
            }
        }
        Ok(p)
    }

    /// `out`, checked to be of the problem's shape and output dtype, or a
    /// new tensor when there is none.
    ///
    /// Errors: [`Error::Shape`] for a wrong shape, [`Error::DType`] for a
    /// wrong dtype; GPU errors.
    pub fn output(&self, p: &Problem, out: Option<&Tensor>) -> Result<Tensor> {
        let Some(o) = out else {
            return Tensor::empty(self.a.context(), &p.out_shape, p.out_dtype);
        };
        expect_dtype(self.op, "out", o.dtype(), &[p.out_dtype])?;
        if o.shape() != p.out_shape.as_slice() {
            return Err(Error::Shape {
                op: self.op,
                detail: format!(
                    "out is {}, expected {}",
                    shape_str(o.shape()),
                    shape_str(&p.out_shape)
                ),
            });
        }
        Ok(o.clone())
    }

    /// Refuses an operand or output one storage binding cannot hold.
    pub fn check_bindings(&self, out: &Tensor) -> Result<()> {
        let max = self.a.context().max_binding();
        for (name, t) in [("a", self.a), ("b", self.b), ("out", out)] {
            if t.bytes() > max {
                return Err(Error::TooLarge {
                    op: self.op,
                    what: format!(
                        "operand {name} {} ({} bytes)",
                        shape_str(t.shape()),
                        t.bytes()
                    ),
                    size: t.bytes(),
                    limit: max,
                    kind: crate::Limit::StorageBinding,
                });
            }
        }
        Ok(())
    }

    /// The sizes, batch broadcast and offsets of `a · b`, after the output
    /// type is checked against the device.
    fn problem(&self) -> Result<Problem> {
        let (a, b, opts) = (self.a, self.b, self.opts);
        // An f16 output needs f16 tensors: refused here, by the plan too.
        Tensor::check_dtype(a.context(), opts.out_dtype, self.op)?;
        let (sa, sb) = (a.shape(), b.shape());
        let bad = |why: &str| Error::Shape {
            op: self.op,
            detail: format!(
                "a {}{} and b {}{}: {why}",
                shape_str(sa),
                if opts.trans_a { " (transposed)" } else { "" },
                shape_str(sb),
                if opts.trans_b { " (transposed)" } else { "" },
            ),
        };
        if sa.len() < 2 || sb.len() < 2 {
            return Err(bad("both need at least 2 dimensions"));
        }
        let (ra, ca) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (rb, cb) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        let (m, ka) = if opts.trans_a { (ca, ra) } else { (ra, ca) };
        let (kb, n) = if opts.trans_b { (cb, rb) } else { (rb, cb) };
        if ka != kb {
            return Err(bad(&format!("inner dimensions differ ({ka} vs {kb})")));
        }
        let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
        let batch = broadcast(ba, bb).map_err(|why| bad(&why))?;
        let offsets = batch_offsets(&batch, ba, bb, ((m * ka) as u64, (ka * n) as u64));
        let mut out_shape = batch;
        out_shape.extend([m, n]);
        Ok(Problem {
            m,
            n,
            k: ka,
            offsets,
            out_shape,
            a_len: a.len(),
            b_len: b.len(),
            alpha: opts.alpha,
            trans_a: opts.trans_a,
            trans_b: opts.trans_b,
            dtype: a.dtype(),
            out_dtype: opts.out_dtype,
            bias: self.bias.is_some(),
            act: self.act,
        })
    }
}

/// Dimension `i` of batch shape `s` right-aligned to `nd` dimensions
/// (missing leading dimensions are 1).
fn dim(s: &[usize], nd: usize, i: usize) -> usize {
    if i + s.len() < nd {
        1
    } else {
        s[i + s.len() - nd]
    }
}

/// The output batch shape of batch shapes `ba` and `bb`, broadcast
/// NumPy-style, or why they do not broadcast.
fn broadcast(ba: &[usize], bb: &[usize]) -> std::result::Result<Vec<usize>, String> {
    let nd = ba.len().max(bb.len());
    (0..nd)
        .map(|i| match (dim(ba, nd, i), dim(bb, nd, i)) {
            (x, y) if x != y && x != 1 && y != 1 => {
                Err(format!("batch dimensions {x} and {y} do not broadcast"))
            }
            (1, y) => Ok(y),
            (x, _) => Ok(x),
        })
        .collect()
}

/// The (a, b) element offsets of each output batch, interleaved, for
/// operand batch shapes `ba` and `bb` of `sizes` elements a matrix.
fn batch_offsets(batch: &[usize], ba: &[usize], bb: &[usize], sizes: (u64, u64)) -> Vec<u32> {
    let nd = batch.len();
    let nbatch: usize = batch.iter().product();
    let mut offsets = Vec::with_capacity(2 * nbatch);
    for z in 0..nbatch {
        // Decompose z over the output batch shape, then re-flatten per operand.
        let (mut rem, mut ia, mut ib, mut sa, mut sb) = (z, 0usize, 0usize, 1usize, 1usize);
        for i in (0..nd).rev() {
            let idx = rem % batch[i];
            rem /= batch[i];
            let (x, y) = (dim(ba, nd, i), dim(bb, nd, i));
            if x != 1 {
                ia += idx * sa;
            }
            if y != 1 {
                ib += idx * sb;
            }
            sa *= x;
            sb *= y;
        }
        offsets.push((ia as u64 * sizes.0) as u32);
        offsets.push((ib as u64 * sizes.1) as u32);
    }
    offsets
}
