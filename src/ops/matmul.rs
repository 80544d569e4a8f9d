//! Batched matrix multiplication and the linear layer, with bias and activation
//! fused into the kernel's epilogue. Kernel source: `shaders/matmul.wgsl`.
//!
//! `matmul(a [.., m, k], b [.., k, n]) -> [.., m, n]`; leading dimensions
//! broadcast NumPy-style; either operand may be read transposed (a flag, not a
//! copy). f32 or f16 inputs (f16 needs `SHADER_F16`), f32 accumulation, f32 or f16
//! output.

use std::time::Instant;

use crate::context::{Bind, Context};
use crate::error::{Error, Result};
use crate::shader;
use crate::tensor::{shape_str, DType, Tensor};
use crate::texels::{vec4_format, vec4_texture, TexelGrid};

const SRC: &str = include_str!("../../shaders/matmul.wgsl");

/// Mirrors `Params` in `shaders/matmul.wgsl` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    /// Rows of C.
    pub m: u32,
    /// Columns of C.
    pub n: u32,
    /// Reduction length.
    pub k: u32,
    /// Scale applied to A·B before the bias.
    pub alpha: f32,
}

/// Activation fused into the epilogue, applied after `alpha` and the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
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

    fn define(self) -> Option<&'static str> {
        match self {
            Activation::None => None,
            Activation::Relu => Some("ACT_RELU"),
            Activation::GeluTanh => Some("ACT_GELU_TANH"),
            Activation::GeluErf => Some("ACT_GELU_ERF"),
            Activation::Silu => Some("ACT_SILU"),
        }
    }
}

/// How a tiled kernel is organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileConfig {
    /// No workgroup memory, no barriers: a workgroup of `wg` invocations owns `tm`
    /// rows (read as uniform broadcasts) and `wg·tn` columns (coalesced); each
    /// invocation keeps `tm·tn` accumulators in registers.
    Broadcast {
        /// Invocations per workgroup.
        wg: u32,
        /// Rows per workgroup (and per invocation).
        tm: u32,
        /// Columns per invocation, strided by `wg`.
        tn: u32,
    },
    /// Like `Broadcast`, with vec4 loads: A along K, B along N (or along K when B
    /// is transposed). Needs `k % 4 == 0` (and `n % 4 == 0` unless B is
    /// transposed) and A not transposed; other shapes run the `Broadcast` kernel
    /// with the same `wg`, `tm`, `tn`.
    Vec4 {
        /// Invocations per workgroup.
        wg: u32,
        /// Rows per workgroup.
        tm: u32,
        /// Column groups per invocation: vec4 groups (B [K, N]) or single
        /// columns (B transposed).
        tn: u32,
    },
    /// The `Vec4` scheme with A and B first copied into 2-D array textures and
    /// read by texel fetches (on CPU adapters a fetch is a vectorised gather, a
    /// storage load a per-lane loop: 20-30x faster on lavapipe); with subgroups of
    /// 8 or more lanes each row of A is fetched once per 8 invocations and shared
    /// by subgroup broadcast. Costs a device copy of A and B for the call. Needs
    /// A not transposed, `k % 4 == 0`, `n % 4 == 0` unless B is transposed, and
    /// textures that fit the adapter's limits; other shapes run
    /// [`TileConfig::heuristic`]'s storage-buffer kernel for CPU adapters.
    Texel {
        /// Invocations per workgroup (at least 8).
        wg: u32,
        /// Rows per workgroup.
        tm: u32,
        /// Columns per invocation (a multiple of 4), strided by `wg` (in
        /// groups of 4 adjacent columns when B is not transposed).
        tn: u32,
    },
    /// A and B tiles staged in workgroup memory per `bk`-slice of K; a `wx × wy`
    /// workgroup computes a `(wy·tm) × (wx·4)` tile, each invocation `tm` rows ×
    /// 4 columns in vec4 registers.
    Shared {
        /// Workgroup width.
        wx: u32,
        /// Workgroup height.
        wy: u32,
        /// Rows per invocation.
        tm: u32,
        /// K-slice staged per step.
        bk: u32,
    },
}

impl TileConfig {
    /// The configurations the autotuner tries (filtered by the adapter's limits).
    pub const CANDIDATES: [TileConfig; 7] = [
        TileConfig::Texel {
            wg: 8,
            tm: 32,
            tn: 8,
        },
        TileConfig::Vec4 {
            wg: 8,
            tm: 24,
            tn: 2,
        },
        TileConfig::Vec4 {
            wg: 16,
            tm: 16,
            tn: 2,
        },
        TileConfig::Vec4 {
            wg: 64,
            tm: 8,
            tn: 1,
        },
        TileConfig::Broadcast {
            wg: 64,
            tm: 8,
            tn: 4,
        },
        TileConfig::Shared {
            wx: 16,
            wy: 16,
            tm: 4,
            bk: 16,
        },
        TileConfig::Shared {
            wx: 16,
            wy: 8,
            tm: 8,
            bk: 16,
        },
    ];

    /// The shortlist the autotuner times on this adapter: the fitting
    /// candidates of the kernel kinds that suit its device type (barrier-free
    /// vec4 kernels on CPU adapters, shared-memory tiles and the vec4 kernel on
    /// GPUs). Pruning by device type keeps a first autotuned call short: every
    /// candidate is a pipeline build, seconds each on a software adapter.
    pub fn candidates(ctx: &Context) -> Vec<TileConfig> {
        let cpu = ctx.info().is_cpu();
        TileConfig::CANDIDATES
            .iter()
            .copied()
            .filter(|c| c.fits(ctx))
            .filter(|c| match c {
                TileConfig::Vec4 { wg, .. } => !cpu || *wg <= 16,
                TileConfig::Texel { .. } => cpu,
                TileConfig::Broadcast { .. } => false,
                TileConfig::Shared { .. } => !cpu,
            })
            .collect()
    }

    /// Rows and columns of C one workgroup computes.
    pub fn tile(self) -> (u32, u32) {
        match self {
            TileConfig::Broadcast { wg, tm, tn } => (tm, wg * tn),
            TileConfig::Vec4 { wg, tm, tn } => (tm, wg * tn * 4),
            TileConfig::Texel { wg, tm, tn } => (tm, wg * tn),
            TileConfig::Shared { wx, wy, tm, .. } => (wy * tm, wx * 4),
        }
    }

    fn invocations(self) -> u32 {
        match self {
            TileConfig::Broadcast { wg, .. }
            | TileConfig::Vec4 { wg, .. }
            | TileConfig::Texel { wg, .. } => wg,
            TileConfig::Shared { wx, wy, .. } => wx * wy,
        }
    }

    fn workgroup_bytes(self) -> u32 {
        match self {
            TileConfig::Broadcast { .. } | TileConfig::Vec4 { .. } | TileConfig::Texel { .. } => 0,
            TileConfig::Shared { bk, .. } => {
                let (bm, bn) = self.tile();
                4 * bk * (bm + bn)
            }
        }
    }

    /// Whether the adapter's limits allow this configuration.
    pub fn fits(self, ctx: &Context) -> bool {
        let l = &ctx.info().limits;
        let (wx, wy) = match self {
            TileConfig::Broadcast { wg, .. }
            | TileConfig::Vec4 { wg, .. }
            | TileConfig::Texel { wg, .. } => (wg, 1),
            TileConfig::Shared { wx, wy, .. } => (wx, wy),
        };
        if matches!(self, TileConfig::Texel { wg, tn, .. } if wg < 8 || tn % 4 != 0) {
            return false;
        }
        self.invocations() <= l.max_compute_invocations_per_workgroup
            && wx <= l.max_compute_workgroup_size_x
            && wy <= l.max_compute_workgroup_size_y
            && self.workgroup_bytes() <= l.max_compute_workgroup_storage_size
    }

    /// The configuration chosen without timing, from what the adapter reports.
    /// Software (CPU) adapters get the texel kernel: there a texel fetch is a
    /// vectorised gather while a storage-buffer load is a per-lane loop, and a
    /// workgroup runs as SIMD slices where every barrier is a context switch
    /// (measured on lavapipe: see the README). Problems the texel kernel does
    /// not take, and GPUs, get [`TileConfig::buffer_heuristic`].
    pub fn heuristic(ctx: &Context) -> TileConfig {
        // 32 x 8 outputs an invocation: 256 accumulators, the most that still
        // compiles in ~2 s on lavapipe (32 x 16 takes 4x longer).
        let texel = TileConfig::Texel {
            wg: 8,
            tm: 32,
            tn: 8,
        };
        if ctx.info().is_cpu() && texel.fits(ctx) {
            texel
        } else {
            TileConfig::buffer_heuristic(ctx)
        }
    }

    /// The pick among the kernels that read storage buffers: the barrier-free
    /// vec4 broadcast kernel on CPU adapters, shared-memory tiling on GPUs.
    pub fn buffer_heuristic(ctx: &Context) -> TileConfig {
        let pick = if ctx.info().is_cpu() {
            // 8 invocations (one SIMD slice on lavapipe) keep each workgroup's
            // strip of B at 64 columns, which stays in a core's L2 at K = 2048.
            TileConfig::Vec4 {
                wg: 8,
                tm: 24,
                tn: 2,
            }
        } else {
            TileConfig::Shared {
                wx: 16,
                wy: 16,
                tm: 4,
                bk: 16,
            }
        };
        if pick.fits(ctx) {
            pick
        } else {
            TileConfig::Broadcast {
                wg: 32,
                tm: 4,
                tn: 1,
            }
        }
    }
}

impl std::fmt::Display for TileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TileConfig::Broadcast { wg, tm, tn } => write!(f, "broadcast wg{wg} {tm}x{tn}"),
            TileConfig::Vec4 { wg, tm, tn } => write!(f, "vec4 wg{wg} {tm}x{tn}"),
            TileConfig::Texel { wg, tm, tn } => write!(f, "texel wg{wg} {tm}x{tn}"),
            TileConfig::Shared { wx, wy, tm, bk } => {
                write!(f, "shared {wx}x{wy} tm{tm} bk{bk}")
            }
        }
    }
}

/// Matmul kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// One output per invocation from global memory: the baseline.
    Naive,
    /// A tiled kernel with an explicit configuration.
    Tiled(TileConfig),
    /// The configuration [`TileConfig::heuristic`] picks for this adapter. The default.
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
                .filter(|c| c.fits(ctx))
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

/// Shapes after the checks: batch count, per-batch (a, b) element offsets, m, n, k, out shape.
struct Plan {
    m: usize,
    n: usize,
    k: usize,
    offsets: Vec<u32>,
    out_shape: Vec<usize>,
}

fn plan(op: &'static str, a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<Plan> {
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
    Ok(Plan {
        m,
        n,
        k: ka,
        offsets,
        out_shape,
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
    let p = plan(op, a, b, opts)?;
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
            });
        }
    }
    let config = match opts.variant {
        MatmulVariant::Naive => None,
        MatmulVariant::Tiled(c) => {
            if !c.fits(ctx) {
                return Err(Error::Unsupported {
                    op,
                    detail: format!("tile configuration {c} exceeds this adapter's limits"),
                });
            }
            Some(c)
        }
        MatmulVariant::Auto => Some(TileConfig::heuristic(ctx)),
        MatmulVariant::Autotune => Some(autotune(op, a, b, bias, act, opts, &p, &out)?),
    };
    launch(op, ctx, a, b, bias, act, opts, &p, config, &out)?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn launch(
    op: &'static str,
    ctx: &Context,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
    p: &Plan,
    config: Option<TileConfig>,
    out: &Tensor,
) -> Result<()> {
    let nbatch = p.offsets.len() / 2;
    let mut defines: Vec<&str> = Vec::new();
    if opts.trans_a {
        defines.push("TRANS_A");
    }
    if opts.trans_b {
        defines.push("TRANS_B");
    }
    if bias.is_some() {
        defines.push("BIAS");
    }
    if let Some(d) = act.define() {
        defines.push(d);
    }
    if opts.out_dtype == DType::F16 {
        defines.push("OUT_F16");
        defines.push("ENABLE_F16");
    }
    // The texel kernel's texture layout, when it takes this problem.
    let texels = match config {
        Some(TileConfig::Texel { .. }) => texel_grid(ctx, a, b, opts, p),
        _ => None,
    };
    let (entry, consts, groups) = match config {
        None => ("mm_naive", vec![], (p.n.div_ceil(8), p.m.div_ceil(8))),
        Some(c) => {
            let c = match c {
                TileConfig::Texel { .. } if texels.is_none() => TileConfig::buffer_heuristic(ctx),
                c => c,
            };
            let c = match c {
                TileConfig::Vec4 { wg, tm, tn }
                    if opts.trans_a
                        || !p.k.is_multiple_of(4)
                        || (!opts.trans_b && !p.n.is_multiple_of(4)) =>
                {
                    TileConfig::Broadcast { wg, tm, tn }
                }
                c => c,
            };
            let (bm, bn) = match c {
                TileConfig::Vec4 { wg, tm, tn } if opts.trans_b => (tm, wg * tn),
                c => c.tile(),
            };
            if p.m.is_multiple_of(bm as usize) && p.n.is_multiple_of(bn as usize) {
                match c {
                    TileConfig::Shared { bk, .. } if !p.k.is_multiple_of(bk as usize) => {}
                    _ => defines.push("ALIGNED"),
                }
            }
            let groups = (p.n.div_ceil(bn as usize), p.m.div_ceil(bm as usize));
            match c {
                TileConfig::Broadcast { wg, tm, tn } => {
                    defines.push("KIND_BROADCAST");
                    (
                        "mm_broadcast",
                        vec![("WG", wg), ("TM", tm), ("TN", tn)],
                        groups,
                    )
                }
                TileConfig::Vec4 { wg, tm, tn } => {
                    defines.push("KIND_VEC4");
                    let swapped = (groups.1, groups.0);
                    ("mm_vec4", vec![("WG", wg), ("TM", tm), ("TN", tn)], swapped)
                }
                TileConfig::Texel { wg, tm, tn } => {
                    defines.extend(["KIND_VEC4", "TEXEL"]);
                    let grid = texels.expect("a texel config runs only with its grid");
                    // The kernel's TN counts vec4 column groups when B is not
                    // transposed.
                    let tn = if opts.trans_b { tn } else { tn / 4 };
                    let mut consts = vec![
                        ("WG", wg),
                        ("TM", tm),
                        ("TN", tn),
                        ("WSH", grid.wsh),
                        ("LSH", grid.lsh),
                    ];
                    if ctx.info().has_subgroups_of(8) {
                        defines.push("SG");
                        consts.push(("TMF", tm.div_ceil(8)));
                    }
                    let swapped = (groups.1, groups.0);
                    ("mm_vec4", consts, swapped)
                }
                TileConfig::Shared { wx, wy, tm, bk } => {
                    defines.push("KIND_SHARED");
                    (
                        "mm_shared",
                        vec![("WX", wx), ("WY", wy), ("TM", tm), ("BK", bk)],
                        groups,
                    )
                }
            }
        }
    };
    let max = ctx.info().limits.max_compute_workgroups_per_dimension as usize;
    for (what, g) in [
        ("column tiles", groups.0),
        ("row tiles", groups.1),
        ("batches", nbatch),
    ] {
        if g > max {
            return Err(Error::TooLarge {
                op,
                what: format!("workgroups over {what}"),
                size: g as u64,
                limit: max as u64,
            });
        }
    }
    let dtype = a.dtype();
    let key = format!("{entry}:{dtype}:{consts:?}:{}", defines.join(","));
    let pipeline = ctx.pipeline(("matmul", key), || {
        (
            shader::expand_full(SRC, dtype, &defines, &consts),
            entry,
            vec![],
        )
    })?;
    let params = MatmulParams {
        m: p.m as u32,
        n: p.n as u32,
        k: p.k as u32,
        alpha: opts.alpha,
    };
    ctx.scoped(op, || {
        use wgpu::util::DeviceExt;
        let ubuf = ctx.uniform(&params);
        let offs = ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("batch offsets"),
                contents: bytemuck::cast_slice(&p.offsets),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let mut enc = ctx.encoder();
        let format = vec4_format(a.dtype());
        let made = texels.map(|grid| {
            [a, b].map(|t| {
                let n = t.len() as u64 / 4;
                vec4_texture(
                    ctx,
                    &mut enc,
                    t.buffer(),
                    n,
                    format,
                    grid,
                    "matmul operand texels",
                )
            })
        });
        let mut binds = match &made {
            Some([(av, _), (bv, _)]) => vec![Bind::texture(av), Bind::texture(bv)],
            None => vec![Bind::whole(a.buffer()), Bind::whole(b.buffer())],
        };
        binds.push(Bind::whole(&offs));
        binds.push(Bind::whole(out.buffer()));
        if let Some(bias) = bias {
            binds.push(Bind::whole(bias.buffer()));
        }
        ctx.encode3(
            &mut enc,
            &pipeline,
            &ubuf,
            &binds,
            (groups.0 as u32, groups.1 as u32, nbatch as u32),
        );
        ctx.submit(enc);
        Ok(())
    })
}

/// The texture layout of A and B for the texel kernel, if it takes this
/// problem (see [`TileConfig::Texel`]): shapes it reads as vec4 rows, textures
/// within the adapter's limits.
fn texel_grid(
    ctx: &Context,
    a: &Tensor,
    b: &Tensor,
    opts: &MatmulOptions,
    p: &Plan,
) -> Option<TexelGrid> {
    let shaped = !opts.trans_a && p.k.is_multiple_of(4) && (opts.trans_b || p.n.is_multiple_of(4));
    shaped
        .then(|| TexelGrid::new(ctx, &[a.len() as u64 / 4, b.len() as u64 / 4]))
        .flatten()
}

/// Shape class for the autotuner cache: dtype, transposes, and each of m, n, k
/// rounded up to a power of two.
fn shape_class(a: &Tensor, opts: &MatmulOptions, p: &Plan) -> String {
    format!(
        "matmul:{}:{}{}:{}x{}x{}",
        a.dtype(),
        opts.trans_a as u8,
        opts.trans_b as u8,
        p.m.next_power_of_two(),
        p.n.next_power_of_two(),
        p.k.next_power_of_two()
    )
}

/// Times each shortlisted candidate on a row-slice (at most 96 rows of the first
/// batch) of the real problem and caches the winner, so that tuning a 2048³
/// product costs a fraction of one full call plus the pipeline builds.
#[allow(clippy::too_many_arguments)]
fn autotune(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
    p: &Plan,
    out: &Tensor,
) -> Result<TileConfig> {
    let ctx = a.context();
    let class = shape_class(a, opts, p);
    if let Some(hit) = ctx.lock_tuning().get(&class) {
        if let Some(c) = TileConfig::CANDIDATES
            .iter()
            .find(|c| c.to_string() == *hit)
        {
            return Ok(*c);
        }
    }
    // Row slices keep every column and all of K, so memory behaviour along N
    // and K is the real one. With transposed A rows are strided: keep all.
    let slice = |rows: usize| Plan {
        m: if opts.trans_a { p.m } else { p.m.min(rows) },
        n: p.n,
        k: p.k,
        offsets: p.offsets[..2].to_vec(),
        out_shape: vec![p.m.min(rows), p.n],
    };
    let (warm, timed) = (slice(8), slice(96));
    let candidates = TileConfig::candidates(ctx);
    // Pipeline builds dominate tuning on slow compilers: run the warm-up
    // (which builds each pipeline) for all candidates on parallel threads.
    let built: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = candidates
            .iter()
            .map(|&c| {
                let warm = &warm;
                s.spawn(move || launch(op, ctx, a, b, bias, act, opts, warm, Some(c), out))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::InvalidArgument {
                        op,
                        detail: "autotune worker panicked".into(),
                    })
                })
            })
            .collect()
    });
    for r in built {
        r?;
    }
    ctx.synchronize()?;
    let mut best: Option<(f64, TileConfig)> = None;
    for c in candidates {
        // Best of two: a software adapter shares the CPU with everything else.
        let mut dt = f64::INFINITY;
        for _ in 0..2 {
            let t = Instant::now();
            launch(op, ctx, a, b, bias, act, opts, &timed, Some(c), out)?;
            ctx.synchronize()?;
            dt = dt.min(t.elapsed().as_secs_f64());
        }
        log::debug!("autotune {class}: {c} {:.3} ms", dt * 1e3);
        if best.is_none_or(|(b, _)| dt < b) {
            best = Some((dt, c));
        }
    }
    let winner = best
        .map(|b| b.1)
        .unwrap_or_else(|| TileConfig::heuristic(ctx));
    ctx.lock_tuning().insert(class, winner.to_string());
    Ok(winner)
}

/// The configuration the autotuner cached for this problem, if it has run.
pub fn tuned_config(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Option<String> {
    let p = plan("matmul", a, b, opts).ok()?;
    a.context()
        .lock_tuning()
        .get(&shape_class(a, opts, &p))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_wgsl() {
        assert_eq!(std::mem::size_of::<MatmulParams>(), 16);
    }
}
