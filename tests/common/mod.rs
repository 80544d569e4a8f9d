//! Shared test helpers: the context, a fresh seed per run (printed on failure),
//! random data.
#![allow(dead_code)]

use std::sync::OnceLock;

use flashdot::{f16, Context, ContextOptions};
use rand::{Rng, SeedableRng};

pub type Rng64 = rand::rngs::SmallRng;

/// The context every test shares. Fails (never skips) when no adapter exists,
/// with the NoAdapter message that says how to install one.
pub fn ctx() -> Context {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    // Every call runs the kernel it names, not a quick-compiling stand-in.
    let opts = ContextOptions::default().wait_for_best_kernels(true);
    // `RUST_LOG=flashdot=info` names every kernel whose compile took > 1 s.
    let _ = env_logger::builder().is_test(true).try_init();
    match CTX.get_or_init(|| Context::with_options(opts).map_err(|e| e.to_string())) {
        Ok(c) => c.clone(),
        Err(e) => panic!("flashdot tests need a GPU adapter: {e}"),
    }
}

/// A context with subgroup operations turned off, for the kernels' schedules
/// that adapters without subgroups run (the shared context uses subgroups
/// where the adapter has them).
pub fn ctx_without_subgroups() -> Context {
    let opts = ContextOptions::default()
        .wait_for_best_kernels(true)
        .without_features(wgpu::Features::SUBGROUP);
    let ctx = Context::with_options(opts)
        .unwrap_or_else(|e| panic!("flashdot tests need a GPU adapter: {e}"));
    assert!(!ctx.info().has_subgroups());
    ctx
}

/// The float dtypes a test runs on `ctx`: f32, and f16 where the adapter
/// has `SHADER_F16`. Where it has not (the GL backend, some app devices),
/// f16 is checked to be refused with `Unsupported` instead, and that is
/// said on stderr: the test still runs every f32 case.
pub fn float_dtypes(ctx: &Context) -> Vec<flashdot::DType> {
    if ctx.info().has_f16() {
        return vec![flashdot::DType::F32, flashdot::DType::F16];
    }
    f16_refused(ctx);
    vec![flashdot::DType::F32]
}

/// Asserts that `ctx` refuses f16 tensors with `Unsupported` (an adapter
/// without `SHADER_F16`) and says so.
pub fn f16_refused(ctx: &Context) {
    let e = flashdot::Tensor::zeros(ctx, &[2], flashdot::DType::F16).unwrap_err();
    assert!(
        matches!(e, flashdot::Error::Unsupported { .. }),
        "an adapter without SHADER_F16 must refuse f16 with Unsupported: {e}"
    );
    eprintln!("f16: Unsupported on this adapter (no SHADER_F16); f16 cases checked to be refused");
}

/// The seed of CI runs (`CI` set): fixed, so a red CI run replays exactly.
pub const CI_SEED: u64 = 20261129;

/// `FLASHDOT_SEED` if set (to replay a run), else [`CI_SEED`] under CI, else a
/// fresh seed per run. Failures print it.
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("FLASHDOT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .or_else(|| std::env::var_os("CI").map(|_| CI_SEED))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    })
}

/// An RNG for one test case, derived from the run's seed and a case label.
pub fn rng(case: &str) -> Rng64 {
    let mut h = seed();
    for b in case.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    Rng64::seed_from_u64(h)
}

/// Uniform values in [-1, 1).
pub fn uniform(rng: &mut Rng64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Rounds through f16 (what an f16 tensor stores).
pub fn to_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

/// The f16 values back as f32 (the reference's inputs for f16 kernels).
pub fn from_f16(x: &[f16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// Uploads `x` as a `dtype` tensor of `shape`; returns it with the values the
/// GPU holds (rounded through f16 for f16), which the reference must be fed.
pub fn upload(x: &[f32], shape: &[usize], dtype: flashdot::DType) -> (flashdot::Tensor, Vec<f32>) {
    upload_to(&ctx(), x, shape, dtype)
}

/// [`upload`] to a given context.
pub fn upload_to(
    ctx: &Context,
    x: &[f32],
    shape: &[usize],
    dtype: flashdot::DType,
) -> (flashdot::Tensor, Vec<f32>) {
    match dtype {
        flashdot::DType::F16 => {
            let h = to_f16(x);
            (
                flashdot::Tensor::from_slice(ctx, &h, shape).unwrap(),
                from_f16(&h),
            )
        }
        _ => (
            flashdot::Tensor::from_slice(ctx, x, shape).unwrap(),
            x.to_vec(),
        ),
    }
}

/// Reads an f32 or f16 tensor back as f32.
pub fn read(t: &flashdot::Tensor) -> Vec<f32> {
    match t.dtype() {
        flashdot::DType::F16 => from_f16(&t.to_vec::<f16>().unwrap()),
        _ => t.to_vec::<f32>().unwrap(),
    }
}

/// Fails with the seed and the case in the message.
#[track_caller]
pub fn check(report: &flashdot::verify::Report, tol: f64, case: &str) {
    assert!(
        report.passes(tol),
        "{case}: tolerance {tol:.1e} exceeded (replay with FLASHDOT_SEED={}):\n{report}",
        seed()
    );
}

/// Fails unless every element of `got` is within `atol + rtol·|want|` of
/// `want` (NaN where `want` is NaN, the same infinity where it is infinite),
/// with the first mismatches, the seed and the case in the message: the
/// per-element bound a kernel's arithmetic gives, where a relative L2
/// ([`check`]) bounds the whole.
#[track_caller]
pub fn check_elements(got: &[f32], want: &[f64], (atol, rtol): (f64, f64), case: &str) {
    let within = |o: f64, r: f64| {
        if r.is_nan() {
            o.is_nan()
        } else if r.is_infinite() {
            o == r
        } else {
            o.is_finite() && (o - r).abs() <= atol + rtol * r.abs()
        }
    };
    let bad: Vec<(usize, f32, f64)> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|&(_, (&o, &r))| !within(o as f64, r))
        .map(|(i, (&o, &r))| (i, o, r))
        .collect();
    let first: String = bad
        .iter()
        .take(8)
        .map(|(i, o, r)| {
            format!(
                "\n  [{i}] out={o:.6e} ref={r:.6e} |diff|={:.3e}",
                (*o as f64 - r).abs()
            )
        })
        .collect();
    assert!(
        bad.is_empty() && got.len() == want.len(),
        "{case}: {} of {} elements past {atol:.2e} + {rtol:.2e}·|ref| (lengths {} and {}; replay \
         with FLASHDOT_SEED={}):{first}",
        bad.len(),
        got.len().min(want.len()),
        got.len(),
        want.len(),
        seed()
    );
}

/// Tolerance (relative L2) for f32 dot products of rows of `d` against their
/// f64 reference `want`: Higham & Mary's probabilistic bound on f32
/// accumulation (λ = 2), |err_i| ≤ 2·√d·u·Σ_j |a_ij·b_ij|, at least 1e-6. The
/// bound only matters where rows cancel (a few rows, a small dot of large terms).
pub fn dot_tolerance(a: &[f32], b: &[f32], d: usize, want: &[f64]) -> f64 {
    let abs_sum: Vec<f64> = flashdot::reference::dot::dot(
        &a.iter().map(|x| x.abs()).collect::<Vec<_>>(),
        &b.iter().map(|x| x.abs()).collect::<Vec<_>>(),
        d,
    );
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let u = f32::EPSILON as f64 / 2.0;
    let bound = 2.0 * (d as f64).sqrt() * u * norm(&abs_sum) / norm(want).max(f64::MIN_POSITIVE);
    bound.max(1e-6)
}

/// Tolerance (relative L2) for f32 cosines of rows of `d` against their f64
/// reference `want`: a cosine is the dot product of the unit rows, so
/// [`dot_tolerance`] of the normalised rows, plus a few roundings of the
/// norms and the division (4u relative). Where cosines are near 0 (nearly
/// orthogonal rows), the dot's absolute error dominates the relative one.
pub fn cosine_tolerance(a: &[f32], b: &[f32], d: usize, want: &[f64]) -> f64 {
    let unit = |x: &[f32]| -> Vec<f32> {
        flashdot::reference::similarity::normalize(x, d)
            .iter()
            .map(|&v| v as f32)
            .collect()
    };
    dot_tolerance(&unit(a), &unit(b), d, want) + 4.0 * f32::EPSILON as f64 / 2.0
}

/// The message of a caught panic (`catch_unwind`'s error), or "".
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A standard normal (Box–Muller).
pub fn normal(r: &mut Rng64) -> f32 {
    let (u, v): (f64, f64) = (r.random::<f64>().max(1e-300), r.random());
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

/// `n` points of `dim` around `blobs` centres (uniform in ±`spread`),
/// standard deviation `sd`.
pub fn blobs(r: &mut Rng64, n: usize, dim: usize, blobs: usize, spread: f32, sd: f32) -> Vec<f32> {
    let centres: Vec<f32> = (0..blobs * dim)
        .map(|_| r.random_range(-spread..spread))
        .collect();
    (0..n)
        .flat_map(|i| {
            let c = (i % blobs) * dim;
            (0..dim)
                .map(|j| centres[c + j] + sd * normal(r))
                .collect::<Vec<_>>()
        })
        .collect()
}
