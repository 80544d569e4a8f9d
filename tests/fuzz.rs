//! The fuzz tier: seeded random calls of every public op with inputs biased
//! to edges (sizes 0, 1, odd, huge, overflowing products, mismatched shapes,
//! dtypes, NaN/Inf/subnormal values, k = 0 or > n, kv_len/bias/GQA errors,
//! forced variants and tile configs). Every call runs inside `catch_unwind`
//! and must return `Ok` (then, with finite inputs, match the f64 reference)
//! or a typed `Error` — never panic. Counts per op and outcome are printed; a
//! failing case prints a one-line reproduction, and the slowest cases are
//! named. The fast tier runs 5,000 cases, the long tier (`--ignored`)
//! 200,000 with every forced kernel and f16.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::*;
use flashdot::ops::attention::{attention, AttentionOptions, AttentionVariant, Causal, Layout};
use flashdot::ops::dot::{dot_with, DotVariant};
use flashdot::ops::embedding::{embedding_into, EmbeddingTables};
use flashdot::ops::matmul::{
    linear, matmul_with, Activation, MatmulOptions, MatmulVariant, TileConfig,
};
use flashdot::ops::norm::layer_norm_into;
use flashdot::ops::pooling::mean_pool_into;
use flashdot::ops::search::{FlatIndex, IndexOptions, Storage, MAX_ID};
use flashdot::ops::similarity::{cosine, normalize, scores, Metric};
use flashdot::{reference, verify, DType, Error, Tensor};
use rand::Rng;

/// A size biased to the edges.
fn size(r: &mut Rng64) -> usize {
    match r.random_range(0..20) {
        0 => 0,
        1..=3 => 1,
        4..=12 => r.random_range(2..9),
        13..=16 => [3, 5, 7, 31, 33, 59, 64, 127][r.random_range(0..8)],
        17 => r.random_range(100..400),
        18 => [1 << 20, 1 << 31, 1 << 40][r.random_range(0..3)],
        _ => usize::MAX / [1, 2, 3][r.random_range(0..3)],
    }
}

/// f32 or u32 (refused by the float ops), and f16 with `all_kernels`.
fn dtype(r: &mut Rng64, all_kernels: bool) -> DType {
    if all_kernels {
        [DType::F32, DType::F32, DType::F16, DType::U32][r.random_range(0..4)]
    } else {
        [DType::F32, DType::F32, DType::U32][r.random_range(0..3)]
    }
}

/// A value: mostly ordinary, sometimes NaN, ±Inf, subnormal, huge or zero.
fn value(r: &mut Rng64, special: bool) -> f32 {
    if !special || r.random_range(0..40) > 0 {
        return r.random_range(-1.0..1.0);
    }
    [f32::NAN, f32::INFINITY, -f32::INFINITY, 1e-40, 3e38, 0.0][r.random_range(0..6)]
}

/// Marks a case whose valid tensors would be too large to run quickly here
/// (counted as "large", not run): the fuzz tier tests refusals and edges,
/// not throughput.
const LARGE: &str = "fuzz: a valid tensor too large to run in the tier";

/// A tensor of `shape`, or the error creating it returned. Shapes of more
/// than 2^16 elements are created only when they exceed the adapter's
/// buffer limit (so that creation refuses them); others are [`LARGE`].
fn tensor(
    ctx: &flashdot::Context,
    r: &mut Rng64,
    shape: &[usize],
    dt: DType,
    special: bool,
) -> flashdot::Result<(Tensor, Vec<f32>)> {
    let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
    match n {
        Some(n) if n <= 1 << 16 => {
            let v: Vec<f32> = (0..n).map(|_| value(r, special)).collect();
            let t = match dt {
                DType::F32 => Tensor::from_slice(ctx, &v, shape)?,
                DType::F16 => Tensor::from_slice(ctx, &to_f16(&v), shape)?,
                DType::U32 => {
                    let u: Vec<u32> = v.iter().map(|x| (x.abs() * 10.0) as u32).collect();
                    Tensor::from_slice(ctx, &u, shape)?
                }
            };
            let host = match dt {
                DType::F16 => from_f16(&to_f16(&v)),
                DType::U32 => v.iter().map(|x| (x.abs() * 10.0) as u32 as f32).collect(),
                DType::F32 => v,
            };
            Ok((t, host))
        }
        Some(n) if (n as u64).saturating_mul(dt.size()) <= ctx.info().limits.max_buffer_size => {
            Err(Error::InvalidArgument {
                op: "fuzz",
                detail: LARGE.into(),
            })
        }
        _ => Ok((Tensor::zeros(ctx, shape, dt)?, Vec::new())),
    }
}

/// [`LARGE`] for a call whose output of `dims` would be a valid tensor of
/// more than 2^22 elements (inputs with a zero dimension can ask for one of
/// gigabytes: allowed, but zero-filling it is not what the tier is for).
/// Outputs over the adapter's limits still run, to test their refusal.
fn large_output(ctx: &flashdot::Context, dims: &[usize]) -> flashdot::Result<()> {
    let n = dims.iter().try_fold(1u64, |a, &b| a.checked_mul(b as u64));
    match n {
        Some(n) if n > 1 << 22 && n.saturating_mul(4) <= ctx.info().limits.max_buffer_size => {
            Err(Error::InvalidArgument {
                op: "fuzz",
                detail: LARGE.into(),
            })
        }
        _ => Ok(()),
    }
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Shape { .. } => "Shape",
        Error::DType { .. } => "DType",
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::Unsupported { .. } => "Unsupported",
        Error::TooLarge { .. } => "TooLarge",
        Error::Gpu { .. } => "Gpu",
        Error::DeviceLost(_) => "DeviceLost",
        Error::Readback(_) => "Readback",
        _ => "other",
    }
}

const OPS: [&str; 12] = [
    "tensor",
    "dot",
    "cosine",
    "normalize",
    "scores",
    "matmul",
    "linear",
    "attention",
    "index",
    "embedding",
    "layer_norm",
    "mean_pool",
];

/// Runs case `i`: returns the op name and the outcome, or a failure message.
/// `all_kernels`: forced tile configs and attention variants, every index
/// dim class (the long tier); the fast tier keeps to the kernels `Auto`
/// picks, so that its compiles stay few on a cold shader cache.
fn case(
    ctx: &flashdot::Context,
    i: u64,
    all_kernels: bool,
) -> (&'static str, Result<&'static str, String>) {
    let mut r = rng(&format!("fuzz case {i}"));
    let op = OPS[r.random_range(0..OPS.len())];
    let sp = r.random_range(0..4) == 0;
    let out = catch_unwind(AssertUnwindSafe(|| -> flashdot::Result<Option<String>> {
        match op {
            "tensor" => {
                let shape: Vec<usize> = (0..r.random_range(0..4)).map(|_| size(&mut r)).collect();
                let dt = dtype(&mut r, all_kernels);
                let (t, _) = tensor(ctx, &mut r, &shape, dt, sp)?;
                let new: Vec<usize> = (0..r.random_range(0..4)).map(|_| size(&mut r)).collect();
                let _ = t.reshape(&new);
                if !shape.is_empty() {
                    let dim = r.random_range(0..shape.len() + 1);
                    let v = t.narrow(dim, size(&mut r), size(&mut r))?;
                    if v.len() <= 1 << 16 {
                        v.contiguous()?;
                    }
                }
                Ok(None)
            }
            "dot" | "cosine" | "normalize" => {
                let (n, d) = (size(&mut r), size(&mut r));
                let dt = dtype(&mut r, all_kernels);
                let (a, av) = tensor(ctx, &mut r, &[n, d], dt, sp)?;
                let (n2, d2) = if r.random_range(0..5) == 0 {
                    (size(&mut r), size(&mut r))
                } else {
                    (n, d)
                };
                let (b, bv) = tensor(ctx, &mut r, &[n2, d2], dt, sp)?;
                let finite = !sp && dt == DType::F32 && (n2, d2) == (n, d) && !av.is_empty();
                match op {
                    "dot" => {
                        let got = dot_with(
                            &a,
                            &b,
                            if all_kernels {
                                DotVariant::ALL[r.random_range(0..3)]
                            } else {
                                DotVariant::Auto
                            },
                        )?
                        .to_vec::<f32>()?;
                        if finite {
                            let want = reference::dot::dot(&av, &bv, d);
                            let tol = dot_tolerance(&av, &bv, d, &want);
                            if !verify::compare(&got, &want).passes(tol) {
                                return Ok(Some(format!(
                                    "dot [{n}, {d}] differs from the reference"
                                )));
                            }
                        }
                    }
                    "cosine" => {
                        let got = cosine(&a, &b)?.to_vec::<f32>()?;
                        let want = reference::similarity::cosine(&av, &bv, d);
                        if finite
                            && !verify::compare(&got, &want)
                                .passes(cosine_tolerance(&av, &bv, d, &want))
                        {
                            return Ok(Some(format!(
                                "cosine [{n}, {d}] differs from the reference"
                            )));
                        }
                    }
                    _ => {
                        let got = normalize(&a)?;
                        if finite
                            && !verify::compare(
                                &got.to_vec::<f32>()?,
                                &reference::similarity::normalize(&av, d),
                            )
                            .passes(1e-5)
                        {
                            return Ok(Some(format!(
                                "normalize [{n}, {d}] differs from the reference"
                            )));
                        }
                    }
                }
                Ok(None)
            }
            "scores" => {
                let (m, n, d) = (size(&mut r), size(&mut r), size(&mut r));
                let dt = dtype(&mut r, all_kernels);
                let (q, _) = tensor(ctx, &mut r, &[m, d], dt, sp)?;
                let d2 = if r.random_range(0..5) == 0 {
                    size(&mut r)
                } else {
                    d
                };
                let (c, _) = tensor(ctx, &mut r, &[n, d2], dt, sp)?;
                let metric =
                    [Metric::Cosine, Metric::InnerProduct, Metric::L2][r.random_range(0..3)];
                large_output(ctx, &[m, n])?;
                scores(&q, &c, metric)?;
                Ok(None)
            }
            "matmul" | "linear" => {
                let (m, k, n) = (size(&mut r), size(&mut r), size(&mut r));
                let dt = dtype(&mut r, all_kernels);
                let k2 = if r.random_range(0..5) == 0 {
                    size(&mut r)
                } else {
                    k
                };
                let (a, av) = tensor(ctx, &mut r, &[m, k], dt, sp)?;
                large_output(ctx, &[m, n])?;
                if op == "linear" {
                    let (w, _) = tensor(ctx, &mut r, &[n, k2], dt, sp)?;
                    let nb = if r.random_range(0..5) == 0 {
                        size(&mut r)
                    } else {
                        n
                    };
                    let (b, _) = tensor(ctx, &mut r, &[nb], dt, sp)?;
                    let act = Activation::ALL[r.random_range(0..Activation::ALL.len())];
                    linear(&a, &w, r.random::<bool>().then_some(&b), act)?;
                    return Ok(None);
                }
                let (b, bv) = tensor(ctx, &mut r, &[k2, n], dt, sp)?;
                // Forced configs: a candidate (compiled once), or one with a
                // zero or odd field (refused before any compile).
                let bad = |r: &mut Rng64| [0u32, 3, 5, 1 << 20][r.random_range(0..4)];
                let variant = match r.random_range(0..8) {
                    0 => MatmulVariant::Naive,
                    1 | 2 if all_kernels => MatmulVariant::Tiled(
                        TileConfig::CANDIDATES[r.random_range(0..TileConfig::CANDIDATES.len())],
                    ),
                    3 => MatmulVariant::Tiled(TileConfig::Broadcast {
                        wg: bad(&mut r),
                        tm: 4,
                        tn: 4,
                    }),
                    4 => MatmulVariant::Tiled(TileConfig::Shared {
                        wx: 8,
                        wy: 8,
                        tm: bad(&mut r),
                        bk: 8,
                    }),
                    5 => MatmulVariant::Tiled(TileConfig::Texel {
                        wg: 8,
                        tm: 32,
                        tn: bad(&mut r),
                    }),
                    _ => MatmulVariant::Auto,
                };
                let alpha = if r.random_range(0..10) == 0 {
                    value(&mut r, true)
                } else {
                    1.0
                };
                let opts = MatmulOptions::default().variant(variant).alpha(alpha);
                let got = matmul_with(&a, &b, &opts)?;
                let fine = !sp
                    && alpha == 1.0
                    && dt == DType::F32
                    && k2 == k
                    && !av.is_empty()
                    && !bv.is_empty();
                if fine {
                    let want = reference::matmul::matmul(&av, &bv, m, k, n, false, false);
                    if !verify::compare(&got.to_vec::<f32>()?, &want).passes(1e-5) {
                        return Ok(Some(format!(
                            "matmul {m}x{k}x{n} {variant:?} differs from the reference"
                        )));
                    }
                }
                Ok(None)
            }
            "attention" => {
                let small = |r: &mut Rng64| {
                    if r.random_range(0..6) == 0 {
                        size(r)
                    } else {
                        r.random_range(0..9)
                    }
                };
                let (b, hq, sq, sk) = (small(&mut r), small(&mut r), small(&mut r), small(&mut r));
                // Head dims 8, or one the plan refuses: each valid head dim
                // compiles its own kernels (seconds each on a software
                // adapter), and head dims are the attention tests' grid.
                let head_dim = |r: &mut Rng64| {
                    if r.random_range(0..8) == 0 {
                        [0, 257, 1 << 20, usize::MAX][r.random_range(0..4)]
                    } else {
                        8
                    }
                };
                let d = head_dim(&mut r);
                let hkv = if r.random() { hq } else { small(&mut r) };
                let dt = dtype(&mut r, all_kernels);
                let (q, _) = tensor(ctx, &mut r, &[b, hq, sq, d], dt, sp)?;
                let (k, _) = tensor(ctx, &mut r, &[b, hkv, sk, d], dt, sp)?;
                let dv = if r.random_range(0..8) == 0 {
                    head_dim(&mut r)
                } else {
                    d
                };
                let (v, _) = tensor(ctx, &mut r, &[b, hkv, sk, dv], dt, sp)?;
                let nl = small(&mut r).min(64);
                let lens: Vec<u32> = (0..nl).map(|_| r.random_range(0..12)).collect();
                let (bias, _) = tensor(ctx, &mut r, &[1, 1, sq, sk], DType::F32, sp)?;
                let mut opts = AttentionOptions::default()
                    .causal(
                        [Causal::None, Causal::TopLeft, Causal::BottomRight][r.random_range(0..3)],
                    )
                    .variant(if all_kernels {
                        [
                            AttentionVariant::Auto,
                            AttentionVariant::Naive,
                            AttentionVariant::Flash,
                            AttentionVariant::SplitKv,
                        ][r.random_range(0..4)]
                    } else {
                        AttentionVariant::Auto
                    })
                    .return_lse(r.random());
                if r.random() {
                    opts = opts.layout(Layout::Bshd);
                }
                if r.random_range(0..3) == 0 {
                    opts = opts.kv_len(&lens);
                }
                if r.random_range(0..4) == 0 {
                    opts = opts.bias(&bias);
                }
                if r.random_range(0..8) == 0 {
                    opts = opts.scale(value(&mut r, true));
                }
                large_output(ctx, &[b, hq, sq, dv])?;
                attention(&q, &k, &v, &opts)?;
                Ok(None)
            }
            "index" => {
                // Dims from a few classes (each dim is its own scan kernel).
                let dims: &[usize] = if all_kernels {
                    &[0, 1, 3, 8, 59, 1 << 40, usize::MAX]
                } else {
                    &[0, 3, 8, 1 << 40, usize::MAX]
                };
                let dim = dims[r.random_range(0..dims.len())];
                let storage = [Storage::F32, Storage::F16, Storage::Int8][r.random_range(0..3)];
                // L2 and filters on two dims only: each (dim, k class,
                // storage, metric, filter) is its own scan kernel, and their
                // compiles made the index cases most of the long tier.
                let narrow = dim == 8 || (all_kernels && dim == 3);
                let metric = [Metric::Cosine, Metric::InnerProduct, Metric::L2]
                    [r.random_range(0..if narrow { 3 } else { 2 })];
                let mut idx = FlatIndex::new(
                    ctx,
                    dim,
                    IndexOptions::default().storage(storage).metric(metric),
                )?;
                let rows = r.random_range(0..40usize);
                let len = if r.random_range(0..6) == 0 {
                    r.random_range(0..300)
                } else {
                    rows.saturating_mul(dim).min(1 << 16)
                };
                let data: Vec<f32> = (0..len).map(|_| value(&mut r, sp)).collect();
                // Ids from a small range, so that repeats and removals of
                // stored ids happen; now and then one past MAX_ID.
                let id = |r: &mut Rng64| match r.random_range(0..50) {
                    0 => MAX_ID + 1,
                    1 => u64::MAX,
                    x => x as u64,
                };
                if r.random_range(0..3) == 0 {
                    let n = len / dim.max(1) + usize::from(r.random_range(0..8) == 0);
                    let ids: Vec<u64> = (0..n.min(64)).map(|_| id(&mut r)).collect();
                    idx.add_with_ids(&data, &ids)?;
                } else {
                    idx.add(&data)?;
                }
                if r.random_range(0..3) == 0 {
                    let gone: Vec<u64> = (0..r.random_range(0..8)).map(|_| id(&mut r)).collect();
                    idx.remove_ids(&gone)?;
                    idx.reconstruct(id(&mut r))?;
                }
                let ql = if r.random_range(0..6) == 0 {
                    r.random_range(0..50)
                } else {
                    dim.min(1 << 12)
                };
                let q: Vec<f32> = (0..ql).map(|_| value(&mut r, sp)).collect();
                // Each k class and query block is its own kernel: a few
                // of each (k > n, k > 16, k past workgroup memory).
                let k = [0, 1, 5, 17, 1025, usize::MAX][r.random_range(0..6)];
                if narrow && r.random() {
                    let keep = r.random_range(1..5u64);
                    idx.search_filtered(&q, k, |id| id % keep == 0)?;
                } else {
                    idx.search(&q, k)?;
                }
                Ok(None)
            }
            "embedding" => {
                let (b, s, h, vocab) = (size(&mut r), size(&mut r), size(&mut r), size(&mut r));
                let dt = dtype(&mut r, all_kernels);
                let id_dt = if r.random_range(0..5) > 0 {
                    DType::U32
                } else {
                    dt
                };
                let (ids, _) = tensor(ctx, &mut r, &[b, s], id_dt, false)?;
                let (word, _) = tensor(ctx, &mut r, &[vocab, h], dt, sp)?;
                let npos = size(&mut r);
                let (pos, _) = tensor(ctx, &mut r, &[npos, h], dt, sp)?;
                let (types, _) = tensor(ctx, &mut r, &[2, h], dt, sp)?;
                let (out, _) = tensor(ctx, &mut r, &[b, s, h], dt, false)?;
                embedding_into(
                    &ids,
                    None,
                    EmbeddingTables {
                        word: &word,
                        pos: &pos,
                        types: &types,
                    },
                    &out,
                )?;
                Ok(None)
            }
            "layer_norm" => {
                let (rows, h) = (size(&mut r), size(&mut r));
                let dt = dtype(&mut r, all_kernels);
                let (x, xv) = tensor(ctx, &mut r, &[rows, h], dt, sp)?;
                let h2 = if r.random_range(0..5) == 0 {
                    size(&mut r)
                } else {
                    h
                };
                let (g, gv) = tensor(ctx, &mut r, &[h2], dt, sp)?;
                let (bt, bv) = tensor(ctx, &mut r, &[h2], dt, sp)?;
                let (out, _) = tensor(ctx, &mut r, &[rows, h], dt, false)?;
                let eps = if r.random_range(0..8) == 0 {
                    value(&mut r, true)
                } else {
                    1e-5
                };
                layer_norm_into(&x, None, &g, &bt, eps, &out)?;
                if !sp && dt == DType::F32 && h2 == h && eps == 1e-5 && !xv.is_empty() {
                    let want = reference::norm::layer_norm(&xv, None, &gv, &bv, 1e-5, h);
                    if !verify::compare(&out.to_vec::<f32>()?, &want).passes(1e-4) {
                        return Ok(Some(format!(
                            "layer_norm [{rows}, {h}] differs from the reference"
                        )));
                    }
                }
                Ok(None)
            }
            _ => {
                let (b, s, h) = (size(&mut r), size(&mut r), size(&mut r));
                let dt = dtype(&mut r, all_kernels);
                let (x, _) = tensor(ctx, &mut r, &[b, s, h], dt, sp)?;
                let nl = if r.random_range(0..5) == 0 {
                    size(&mut r).min(64)
                } else {
                    b.min(1 << 12)
                };
                let lens: Vec<u32> = (0..nl)
                    .map(|_| r.random_range(0..2 * s.clamp(1, 1000) as u32))
                    .collect();
                let (out, _) = tensor(ctx, &mut r, &[b, h], DType::F32, false)?;
                mean_pool_into(&x, &lens, &out)?;
                Ok(None)
            }
        }
    }));
    let outcome = match out {
        Ok(Ok(None)) => Ok("Ok"),
        Ok(Ok(Some(wrong))) => Err(format!("wrong result: {wrong}")),
        Ok(Err(e)) if kind(&e) == "DeviceLost" => Err(format!("device lost: {e}")),
        Ok(Err(Error::InvalidArgument { detail, .. })) if detail == LARGE => Ok("large (not run)"),
        Ok(Err(e)) => Ok(kind(&e)),
        Err(p) => Err(format!("panic: {}", panic_message(&*p))),
    };
    (op, outcome)
}

fn run(cases: u64, all_kernels: bool) {
    let ctx = ctx();
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut seconds: BTreeMap<&str, f64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut slowest: Vec<(f64, u64, &str)> = Vec::new();
    let start = std::time::Instant::now();
    // FLASHDOT_FUZZ_CASE=i replays one case (with the seed it printed).
    let only: Option<u64> = std::env::var("FLASHDOT_FUZZ_CASE")
        .ok()
        .and_then(|v| v.parse().ok());
    for i in (0..cases).filter(|i| only.is_none_or(|o| o == *i)) {
        let t = std::time::Instant::now();
        let (op, outcome) = case(&ctx, i, all_kernels);
        // Each case's device work is charged to it (a case that queues much
        // work without reading it back would otherwise bill the next one).
        let _ = ctx.synchronize();
        let secs = t.elapsed().as_secs_f64();
        *seconds.entry(op).or_default() += secs;
        slowest.push((secs, i, op));
        slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
        slowest.truncate(5);
        if (i + 1) % 20_000 == 0 {
            eprintln!(
                "fuzz: {} cases in {:.0} s, flashdot device memory {:.1} MiB live",
                i + 1,
                start.elapsed().as_secs_f64(),
                ctx.memory_stats().live_bytes as f64 / (1 << 20) as f64
            );
        }
        match outcome {
            Ok(k) => *counts.entry((op, k)).or_default() += 1,
            Err(msg) => {
                *counts.entry((op, "FAILED")).or_default() += 1;
                failures.push(format!(
                    "FLASHDOT_SEED={} FLASHDOT_FUZZ_CASE={i} cargo test --release --test fuzz -- --include-ignored ({op}): {msg}",
                    seed()
                ));
            }
        }
    }
    let mut table = String::new();
    for op in OPS {
        let row: Vec<String> = counts
            .iter()
            .filter(|((o, _), _)| *o == op)
            .map(|((_, k), n)| format!("{k} {n}"))
            .collect();
        let secs = seconds.get(op).copied().unwrap_or(0.0);
        table.push_str(&format!("  {op:<11} {} ({secs:.1} s)\n", row.join(", ")));
    }
    let slow: Vec<String> = slowest
        .iter()
        .map(|(s, i, op)| format!("{i} ({op}, {s:.2} s)"))
        .collect();
    eprintln!(
        "fuzz: {cases} cases, seed {}\n{table}  slowest cases (first compiles included): {}",
        seed(),
        slow.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fuzz_fast_tier() {
    run(5_000, false);
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn fuzz_long_tier() {
    run(200_000, true);
}
