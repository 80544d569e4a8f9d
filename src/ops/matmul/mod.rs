//! Batched matrix multiplication and the linear layer, with bias and activation
//! fused into the kernel's epilogue. Kernel source: `matmul.wgsl`.
//!
//! `matmul(a [.., m, k], b [.., k, n]) -> [.., m, n]`; leading dimensions
//! broadcast NumPy-style; either operand may be read transposed (a flag, not a
//! copy). f32 or f16 inputs (f16 needs `SHADER_F16`), f32 accumulation, f32 or f16
//! output.

mod autotune;
mod plan;
mod tiles;

pub use autotune::tuned_config;
pub use plan::MatmulPlan;
pub use tiles::TileConfig;

use crate::context::{vec4_format, vec4_texture};
use crate::context::{Bind, Context};
use crate::error::{Error, Result};
use crate::tensor::{shape_str, DType, Tensor};
#[cfg(test)]
pub(crate) use plan::reachable as reachable_specs;
use plan::slot;
pub(crate) use plan::MatmulParams;

/// Activation fused into the epilogue, applied after `alpha` and the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// max(x, 0).
    Relu,
    /// GELU, tanh approximation (PyTorch `approximate="tanh"`).
    GeluTanh,
    /// GELU, exact erf form (PyTorch default).
    GeluErf,
    /// SiLU / swish: x·σ(x).
    Silu,
}

impl Activation {
    /// Every activation (for tests).
    pub const ALL: [Activation; 5] = [
        Activation::None,
        Activation::Relu,
        Activation::GeluTanh,
        Activation::GeluErf,
        Activation::Silu,
    ];
}

/// Matmul kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MatmulVariant {
    /// One output per invocation from global memory: the baseline.
    Naive,
    /// A tiled kernel with an explicit configuration.
    Tiled(TileConfig),
    /// The configuration the planner picks from the device profile and the
    /// shape ([`TileConfig::heuristic`], or the buffer kernel for shapes the
    /// texel kernel does not take). The default.
    Auto,
    /// Times the adapter's shortlist ([`TileConfig::candidates`]) once per shape
    /// class on this adapter and caches the winner for the context's lifetime.
    Autotune,
}

impl MatmulVariant {
    /// Naive, every fitting tile configuration, Auto and Autotune.
    pub fn all(ctx: &Context) -> Vec<MatmulVariant> {
        let mut v = vec![MatmulVariant::Naive];
        v.extend(
            TileConfig::CANDIDATES
                .iter()
                .filter(|c| c.fits(ctx.profile()))
                .map(|&c| MatmulVariant::Tiled(c)),
        );
        v.push(MatmulVariant::Auto);
        v.push(MatmulVariant::Autotune);
        v
    }
}

impl std::fmt::Display for MatmulVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatmulVariant::Naive => f.write_str("naive"),
            MatmulVariant::Tiled(c) => write!(f, "tiled ({c})"),
            MatmulVariant::Auto => f.write_str("auto"),
            MatmulVariant::Autotune => f.write_str("autotune"),
        }
    }
}

/// Options of [`matmul_with`] / [`linear_with`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct MatmulOptions {
    /// Read A as stored `[.., k, m]`.
    pub trans_a: bool,
    /// Read B as stored `[.., n, k]`.
    pub trans_b: bool,
    /// Scale on A·B (before bias and activation).
    pub alpha: f32,
    /// Kernel.
    pub variant: MatmulVariant,
    /// Output type: f32 (default) or f16 (needs `SHADER_F16`).
    pub out_dtype: DType,
}

impl MatmulOptions {
    /// Options with `variant` as the kernel.
    pub fn variant(mut self, variant: MatmulVariant) -> Self {
        self.variant = variant;
        self
    }
    /// Options that read A (`trans_a`) and B (`trans_b`) transposed.
    pub fn transpose(mut self, trans_a: bool, trans_b: bool) -> Self {
        self.trans_a = trans_a;
        self.trans_b = trans_b;
        self
    }
    /// Options with `alpha` as the scale on A·B.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    /// Options with `out_dtype` as the output type.
    pub fn out_dtype(mut self, out_dtype: DType) -> Self {
        self.out_dtype = out_dtype;
        self
    }
}

impl Default for MatmulOptions {
    fn default() -> Self {
        MatmulOptions {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            variant: MatmulVariant::Auto,
            out_dtype: DType::F32,
        }
    }
}

/// `a [.., m, k] · b [.., k, n] -> [.., m, n]` (f32 output, Auto kernel).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_with(a, b, &MatmulOptions::default())
}

/// [`matmul`] with transposes, alpha, kernel and output type.
pub fn matmul_with(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<Tensor> {
    gemm("matmul", a, b, None, Activation::None, opts, None)
}

/// Writes `a · b` into `out` (which must have the result's shape and `opts.out_dtype`).
pub fn matmul_into(a: &Tensor, b: &Tensor, opts: &MatmulOptions, out: &Tensor) -> Result<()> {
    gemm("matmul", a, b, None, Activation::None, opts, Some(out)).map(|_| ())
}

/// PyTorch `nn.Linear`: `x [.., in] · wᵀ + bias`, then `act`. `w` is
/// `[out_features, in_features]`, `bias` `[out_features]`; returns `[.., out_features]`.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    linear_with(x, w, bias, act, &MatmulOptions::default())
}

/// [`linear`] with explicit kernel / output type (`trans_*` in `opts` are ignored).
pub fn linear_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
) -> Result<Tensor> {
    linear_impl(x, w, bias, act, opts, None)
}

/// [`linear_with`] writing into `out` (`[.., out_features]`).
pub fn linear_into(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
    out: &Tensor,
) -> Result<()> {
    linear_impl(x, w, bias, act, opts, Some(out)).map(|_| ())
}

fn linear_impl(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
    out: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "linear";
    let (xs, ws) = (x.shape(), w.shape());
    if xs.is_empty() || ws.len() != 2 || xs[xs.len() - 1] != ws[1] {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "x {} must be [.., in] and w {} [out, in] with the same in",
                shape_str(xs),
                shape_str(ws)
            ),
        });
    }
    let rows: usize = xs[..xs.len() - 1].iter().product();
    let x2 = x.reshape(&[rows, ws[1]])?;
    let o = MatmulOptions {
        trans_a: false,
        trans_b: true,
        ..*opts
    };
    let out2 = out.map(|t| t.reshape(&[rows, ws[0]])).transpose();
    let out2 = match out2 {
        Ok(o) => o,
        Err(_) => {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "out {} does not hold [{rows}, {}]",
                    shape_str(out.map(|t| t.shape()).unwrap_or(&[])),
                    ws[0]
                ),
            })
        }
    };
    let r = gemm(OP, &x2, w, bias, act, &o, out2.as_ref())?;
    let mut shape = xs[..xs.len() - 1].to_vec();
    shape.push(ws[0]);
    r.reshape(&shape)
}

/// Shapes after the checks: per-batch (a, b) element offsets, m, n, k, the
/// out shape and the operands' element counts.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub offsets: Vec<u32>,
    pub out_shape: Vec<usize>,
    pub a_len: usize,
    pub b_len: usize,
    /// Scale on A·B (the kernel's `alpha`).
    pub alpha: f32,
}

fn problem(op: &'static str, a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<Problem> {
    // An f16 output needs f16 tensors: refused here, by the plan too.
    Tensor::check_dtype(a.context(), opts.out_dtype, op)?;
    let (sa, sb) = (a.shape(), b.shape());
    let bad = |why: &str| Error::Shape {
        op,
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
    let nd = ba.len().max(bb.len());
    let dim = |s: &[usize], i: usize| -> usize {
        // Right-aligned, missing leading dims are 1.
        if i + s.len() < nd {
            1
        } else {
            s[i + s.len() - nd]
        }
    };
    let mut batch = Vec::with_capacity(nd);
    for i in 0..nd {
        let (x, y) = (dim(ba, i), dim(bb, i));
        if x != y && x != 1 && y != 1 {
            return Err(bad(&format!(
                "batch dimensions {x} and {y} do not broadcast"
            )));
        }
        batch.push(if x == 1 { y } else { x });
    }
    let nbatch: usize = batch.iter().product();
    let mut offsets = Vec::with_capacity(2 * nbatch);
    let (sza, szb) = ((m * ka) as u64, (ka * n) as u64);
    for z in 0..nbatch {
        // Decompose z over the output batch shape, then re-flatten per operand.
        let (mut rem, mut ia, mut ib, mut sa_, mut sb_) = (z, 0usize, 0usize, 1usize, 1usize);
        for i in (0..nd).rev() {
            let idx = rem % batch[i];
            rem /= batch[i];
            let (x, y) = (dim(ba, i), dim(bb, i));
            if x != 1 {
                ia += idx * sa_;
            }
            if y != 1 {
                ib += idx * sb_;
            }
            sa_ *= x;
            sb_ *= y;
        }
        offsets.push((ia as u64 * sza) as u32);
        offsets.push((ib as u64 * szb) as u32);
    }
    let mut out_shape = batch;
    out_shape.push(m);
    out_shape.push(n);
    Ok(Problem {
        m,
        n,
        k: ka,
        offsets,
        out_shape,
        a_len: a.len(),
        b_len: b.len(),
        alpha: opts.alpha,
    })
}

fn gemm(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
    out: Option<&Tensor>,
) -> Result<Tensor> {
    let mut operands = vec![("a", a), ("b", b)];
    operands.extend(bias.map(|t| ("bias", t)));
    if let Some(o) = out {
        Tensor::disjoint(op, &[("out", o)], &operands)?;
        operands.push(("out", o));
    }
    Tensor::same_context(op, &operands)?;
    let ctx = a.context();
    if a.dtype() != b.dtype() || a.dtype() == DType::U32 {
        return Err(Error::InvalidArgument {
            op,
            detail: format!(
                "a is {} and b is {}; both must be f32 or both f16",
                a.dtype(),
                b.dtype()
            ),
        });
    }
    if opts.out_dtype == DType::U32 {
        return Err(Error::InvalidArgument {
            op,
            detail: "output must be f32 or f16".into(),
        });
    }
    if !opts.alpha.is_finite() {
        return Err(Error::InvalidArgument {
            op,
            detail: format!("alpha must be finite, got {}", opts.alpha),
        });
    }
    let p = problem(op, a, b, opts)?;
    if let Some(bias) = bias {
        if bias.shape() != [p.n] || bias.dtype() != a.dtype() {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "bias is {} {}, expected {} [{}]",
                    bias.dtype(),
                    shape_str(bias.shape()),
                    a.dtype(),
                    p.n
                ),
            });
        }
    }
    let out = match out {
        Some(o) => {
            if o.shape() != p.out_shape.as_slice() || o.dtype() != opts.out_dtype {
                return Err(Error::Shape {
                    op,
                    detail: format!(
                        "out is {} {}, expected {} {}",
                        o.dtype(),
                        shape_str(o.shape()),
                        opts.out_dtype,
                        shape_str(&p.out_shape)
                    ),
                });
            }
            o.clone()
        }
        None => Tensor::empty(ctx, &p.out_shape, opts.out_dtype)?,
    };
    if out.is_empty() {
        return Ok(out);
    }
    for (name, t) in [("a", a), ("b", b), ("out", &out)] {
        if t.bytes() > ctx.max_binding() {
            return Err(Error::TooLarge {
                op,
                what: format!(
                    "operand {name} {} ({} bytes)",
                    shape_str(t.shape()),
                    t.bytes()
                ),
                size: t.bytes(),
                limit: ctx.max_binding(),
                kind: crate::Limit::StorageBinding,
            });
        }
    }
    let plan = match opts.variant {
        MatmulVariant::Autotune => autotune::autotune(op, a, b, bias, act, opts, &p, &out)?,
        v => plan::plan_for(
            op,
            ctx.profile(),
            &p,
            opts,
            v,
            a.dtype(),
            bias.is_some(),
            act,
        )?,
    };
    launch(op, ctx, a, b, bias, &p, &plan, &out)?;
    Ok(out)
}

/// The plan a [`matmul_with`] call with these operands would run (for
/// `Autotune`, the winner once tuned, else what `Auto` runs).
///
/// Errors: as [`matmul_with`], before anything runs; a forced variant that
/// cannot serve the shape is [`Error::Unsupported`].
pub fn plan(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<MatmulPlan> {
    let p = problem("matmul", a, b, opts)?;
    let variant = match opts.variant {
        MatmulVariant::Autotune => autotune::cached(a, opts, &p).unwrap_or(MatmulVariant::Auto),
        v => v,
    };
    plan::plan_for(
        "matmul",
        a.context().profile(),
        &p,
        opts,
        variant,
        a.dtype(),
        false,
        Activation::None,
    )
}

/// Records and submits `plan` for problem `p`.
#[allow(clippy::too_many_arguments)]
fn launch(
    op: &'static str,
    ctx: &Context,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    p: &Problem,
    plan: &MatmulPlan,
    out: &Tensor,
) -> Result<()> {
    let pipeline = ctx.pipeline(&plan.spec)?;
    let params = MatmulParams {
        m: p.m as u32,
        n: p.n as u32,
        k: p.k as u32,
        alpha: p.alpha,
    };
    ctx.scoped(op, || {
        let ubuf = ctx.uniform(&params);
        let offs = ctx.table(&p.offsets);
        let mut enc = ctx.encoder();
        let format = vec4_format(a.dtype());
        let made = plan.texels.map(|grid| {
            [a, b].map(|t| {
                let n = t.len() as u64 / 4;
                vec4_texture(
                    ctx,
                    &mut enc,
                    (t.buffer(), t.offset()),
                    n,
                    format,
                    grid,
                    "matmul operand texels",
                )
            })
        });
        let mut binds = match &made {
            Some([at, bt]) => {
                vec![(slot::A, Bind::pooled(at)), (slot::B, Bind::pooled(bt))]
            }
            None => vec![(slot::A, a.bind()), (slot::B, b.bind())],
        };
        binds.push((slot::OFFSETS, offs.bind()));
        binds.push((slot::OUT, out.bind()));
        if let Some(bias) = bias {
            binds.push((slot::BIAS, bias.bind()));
        }
        ctx.dispatch(&mut enc, &pipeline, &ubuf, &binds, plan.groups);
        ctx.submit(enc);
        Ok(())
    })
}
