//! The fuzz tier: seeded random calls of every public op with inputs biased
//! to edges (sizes 0, 1, odd, huge, overflowing products, mismatched shapes,
//! dtypes, NaN/Inf/subnormal values, k = 0 or > n, kv_len/bias/GQA errors,
//! forced variants and tile configs; the IVF index's nprobe 0 or past nlist,
//! search before training; the training kernels' ids and targets past their
//! tables and bad optimizer settings). Every call runs inside `catch_unwind`
//! and must return `Ok` (then, with finite inputs, match the f64 reference)
//! or a typed `Error` — never panic. Counts per op and outcome are printed; a
//! failing case prints a one-line reproduction, and the slowest cases are
//! named. The fast tier runs 5,000 cases, the long tier (`--ignored`)
//! 200,000 with every forced kernel and f16. The inputs are in
//! `fuzz/inputs.rs`, one generator/checker per op in `fuzz/ops.rs` (the
//! attention backward's in `fuzz/backward.rs`, the `grad` family's in
//! `fuzz/grad.rs`).

#[path = "fuzz/backward.rs"]
mod backward;
mod common;
#[path = "fuzz/grad.rs"]
mod grad;
#[path = "common/grad_bounds.rs"]
mod grad_bounds;
#[path = "fuzz/inputs.rs"]
mod inputs;
#[path = "fuzz/ops.rs"]
mod ops;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::*;
use flashdot::Error;
use inputs::LARGE;
use ops::{Env, OPS};
use rand::Rng;

/// The table's name for a typed error.
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
    let (op, check) = OPS[r.random_range(0..OPS.len())];
    let env = Env {
        ctx,
        sp: r.random_range(0..4) == 0,
        all_kernels,
    };
    let out = catch_unwind(AssertUnwindSafe(|| check(env, &mut r)));
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
    for (op, _) in OPS {
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
