//! The matmul autotuner: times the device's shortlist of tile configurations
//! on a slice of the real problem, once per shape class
//! ([`MatmulAutotuneKey`]), and caches the winner in the context.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use super::launch::launch;
use super::options::{MatmulOptions, MatmulVariant};
use super::plan::{plan_for, MatmulPlan};
use super::problem::{Gemm, Problem};
use super::tiles::TileConfig;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// The autotuner's cache key, a problem's shape class: the operands' dtype,
/// the transposes, each of m, n, k rounded up to a power of two, and
/// whether k and n are multiples of 4 (which decides the kernels that can
/// serve the shape at all). The epilogue (bias, activation, output type) is
/// left out: it costs the same in every tile configuration, so linear
/// layers and plain products of a class share one tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MatmulAutotuneKey {
    dtype: DType,
    trans_a: bool,
    trans_b: bool,
    /// m, n, k, each rounded up to a power of two.
    m: usize,
    n: usize,
    k: usize,
    k_vec4: bool,
    n_vec4: bool,
}

impl MatmulAutotuneKey {
    fn new(p: &Problem) -> Self {
        MatmulAutotuneKey {
            dtype: p.dtype,
            trans_a: p.trans_a,
            trans_b: p.trans_b,
            m: p.m.next_power_of_two(),
            n: p.n.next_power_of_two(),
            k: p.k.next_power_of_two(),
            k_vec4: p.k.is_multiple_of(4),
            n_vec4: p.n.is_multiple_of(4),
        }
    }
}

impl fmt::Display for MatmulAutotuneKey {
    /// E.g. `f32 a·bᵀ m ≤ 128, n ≤ 512, k ≤ 64 (k, n multiples of 4)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |on: bool| if on { "ᵀ" } else { "" };
        write!(
            f,
            "{} a{}·b{} m ≤ {}, n ≤ {}, k ≤ {}",
            self.dtype,
            t(self.trans_a),
            t(self.trans_b),
            self.m,
            self.n,
            self.k
        )?;
        match (self.k_vec4, self.n_vec4) {
            (true, true) => f.write_str(" (k, n multiples of 4)"),
            (true, false) => f.write_str(" (k a multiple of 4)"),
            (false, true) => f.write_str(" (n a multiple of 4)"),
            (false, false) => Ok(()),
        }
    }
}

/// One context's winners (its typed tuning table).
type Winners = HashMap<MatmulAutotuneKey, TileConfig>;

/// The tuned configuration for this problem's class, if tuning has run.
pub(super) fn cached(ctx: &Context, p: &Problem) -> Option<TileConfig> {
    let key = MatmulAutotuneKey::new(p);
    ctx.with_tuning(|w: &mut Winners| w.get(&key).copied())
}

/// Times each shortlisted candidate that can serve the problem on a
/// row-slice (at most 96 rows of the first batch) of it and caches the
/// winner, so that tuning a 2048³ product costs a fraction of one full call
/// plus the pipeline builds. Returns the winner's plan for the whole problem.
pub(super) fn autotune(g: &Gemm, p: &Problem, out: &Tensor) -> Result<MatmulPlan> {
    let ctx = g.a.context();
    let profile = ctx.profile();
    let plan = |q: &Problem, v: MatmulVariant| plan_for(g.op, profile, q, v);
    if let Some(c) = cached(ctx, p) {
        return plan(p, MatmulVariant::Tiled(c));
    }
    // Tuning times candidates now, which a recording would defer.
    ctx.not_recording("matmul autotune")?;
    // Row slices keep every column and all of K, so memory behaviour along N
    // and K is the real one. With transposed A rows are strided: keep all.
    let slice = |rows: usize| Problem {
        m: if p.trans_a { p.m } else { p.m.min(rows) },
        offsets: p.offsets[..2].to_vec(),
        out_shape: vec![p.m.min(rows), p.n],
        ..p.clone()
    };
    let (warm, timed) = (slice(8), slice(96));
    // Candidates that cannot serve this shape are left out, not substituted.
    let candidates: Vec<TileConfig> = TileConfig::candidates(profile)
        .into_iter()
        .filter(|&c| plan(p, MatmulVariant::Tiled(c)).is_ok())
        .collect();
    let warm_plans = candidates
        .iter()
        .map(|&c| plan(&warm, MatmulVariant::Tiled(c)))
        .collect::<Result<Vec<_>>>()?;
    build_all(g, &warm, &warm_plans, out)?;
    let key = MatmulAutotuneKey::new(p);
    let mut best: Option<(f64, TileConfig)> = None;
    for c in candidates {
        let dt = time(g, &timed, &plan(&timed, MatmulVariant::Tiled(c))?, out)?;
        log::debug!("autotune {key}: {c} {:.3} ms", dt * 1e3);
        if best.is_none_or(|(b, _)| dt < b) {
            best = Some((dt, c));
        }
    }
    let Some((_, winner)) = best else {
        return plan(p, MatmulVariant::Auto);
    };
    ctx.with_tuning(|w: &mut Winners| w.insert(key, winner));
    plan(p, MatmulVariant::Tiled(winner))
}

/// Runs each of `plans` once on `warm`, on parallel threads, and waits:
/// pipeline builds dominate tuning on slow compilers, and each run builds
/// its pipeline.
fn build_all(g: &Gemm, warm: &Problem, plans: &[MatmulPlan], out: &Tensor) -> Result<()> {
    let built: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| s.spawn(move || launch(g, warm, plan, out)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::InvalidArgument {
                        op: g.op,
                        detail: "autotune worker panicked".into(),
                    })
                })
            })
            .collect()
    });
    built.into_iter().collect::<Result<()>>()?;
    g.a.context().synchronize()
}

/// Seconds `plan` takes on `timed`, best of two: a software adapter shares
/// the CPU with everything else.
fn time(g: &Gemm, timed: &Problem, plan: &MatmulPlan, out: &Tensor) -> Result<f64> {
    let ctx = g.a.context();
    let mut dt = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        launch(g, timed, plan, out)?;
        ctx.synchronize()?;
        dt = dt.min(t.elapsed().as_secs_f64());
    }
    Ok(dt)
}

/// The configuration the autotuner cached for the class of `a · b` under
/// `opts`, if it has run (on any call of that class, matmul or linear).
pub fn tuned_config(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Option<TileConfig> {
    let p = Gemm::matmul(a, b, opts).check(None).ok()?;
    cached(a.context(), &p)
}
