//! The matmul autotuner: times the device's shortlist of tile configurations
//! on a slice of the real problem, once per shape class, and caches the winner
//! in the context.

use std::time::Instant;

use super::plan::{plan_for, MatmulPlan};
use super::tiles::TileConfig;
use super::{launch, problem, Activation, MatmulOptions, MatmulVariant, Problem};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Shape class for the autotuner cache: dtype, transposes, each of m, n, k
/// rounded up to a power of two, and whether k and n are multiples of 4
/// (which decides the kernels that can serve the shape at all).
fn shape_class(a: &Tensor, opts: &MatmulOptions, p: &Problem) -> String {
    format!(
        "matmul:{}:{}{}:{}x{}x{}:{}{}",
        a.dtype(),
        opts.trans_a as u8,
        opts.trans_b as u8,
        p.m.next_power_of_two(),
        p.n.next_power_of_two(),
        p.k.next_power_of_two(),
        p.k.is_multiple_of(4) as u8,
        p.n.is_multiple_of(4) as u8,
    )
}

/// The tuned configuration for this problem's class, if tuning has run.
pub(super) fn cached(a: &Tensor, opts: &MatmulOptions, p: &Problem) -> Option<MatmulVariant> {
    let hit = a
        .context()
        .lock_tuning()
        .get(&shape_class(a, opts, p))
        .cloned()?;
    TileConfig::CANDIDATES
        .iter()
        .find(|c| c.to_string() == hit)
        .map(|&c| MatmulVariant::Tiled(c))
}

/// Times each shortlisted candidate that can serve the problem on a
/// row-slice (at most 96 rows of the first batch) of it and caches the
/// winner, so that tuning a 2048³ product costs a fraction of one full call
/// plus the pipeline builds. Returns the winner's plan for the whole problem.
#[allow(clippy::too_many_arguments)]
pub(super) fn autotune(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    opts: &MatmulOptions,
    p: &Problem,
    out: &Tensor,
) -> Result<MatmulPlan> {
    let ctx = a.context();
    let profile = ctx.profile();
    if cached(a, opts, p).is_none() {
        // Tuning times candidates now, which a recording would defer.
        ctx.not_recording("matmul autotune")?;
    }
    let full = |v: MatmulVariant| plan_for(op, profile, p, opts, v, a.dtype(), bias.is_some(), act);
    if let Some(v) = cached(a, opts, p) {
        return full(v);
    }
    // Row slices keep every column and all of K, so memory behaviour along N
    // and K is the real one. With transposed A rows are strided: keep all.
    let slice = |rows: usize| Problem {
        m: if opts.trans_a { p.m } else { p.m.min(rows) },
        offsets: p.offsets[..2].to_vec(),
        out_shape: vec![p.m.min(rows), p.n],
        ..p.clone()
    };
    let (warm, timed) = (slice(8), slice(96));
    let on = |q: &Problem, c: TileConfig| {
        plan_for(
            op,
            profile,
            q,
            opts,
            MatmulVariant::Tiled(c),
            a.dtype(),
            bias.is_some(),
            act,
        )
    };
    // Candidates that cannot serve this shape are left out, not substituted.
    let candidates: Vec<TileConfig> = TileConfig::candidates(profile)
        .into_iter()
        .filter(|&c| on(p, c).is_ok())
        .collect();
    // Pipeline builds dominate tuning on slow compilers: run the warm-up
    // (which builds each pipeline) for all candidates on parallel threads.
    let built: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = candidates
            .iter()
            .map(|&c| {
                let warm = &warm;
                s.spawn(move || launch(op, ctx, a, b, bias, warm, &on(warm, c)?, out))
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
        let plan = on(&timed, c)?;
        // Best of two: a software adapter shares the CPU with everything else.
        let mut dt = f64::INFINITY;
        for _ in 0..2 {
            let t = Instant::now();
            launch(op, ctx, a, b, bias, &timed, &plan, out)?;
            ctx.synchronize()?;
            dt = dt.min(t.elapsed().as_secs_f64());
        }
        log::debug!(
            "autotune {}: {c} {:.3} ms",
            shape_class(a, opts, p),
            dt * 1e3
        );
        if best.is_none_or(|(b, _)| dt < b) {
            best = Some((dt, c));
        }
    }
    let Some((_, winner)) = best else {
        return full(MatmulVariant::Auto);
    };
    ctx.lock_tuning()
        .insert(shape_class(a, opts, p), winner.to_string());
    full(MatmulVariant::Tiled(winner))
}

/// The configuration the autotuner cached for this problem, if it has run.
pub fn tuned_config(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Option<String> {
    let p = problem("matmul", a, b, opts).ok()?;
    a.context()
        .lock_tuning()
        .get(&shape_class(a, opts, &p))
        .cloned()
}
