//! The main demo: transformer-shaped causal self-attention (batch 1, 12 heads,
//! seq 2048, d 64; 8 heads × 1024 on a software adapter) through every attention variant — time per call, GFLOP/s, peak
//! device memory, error against the CPU reference on sampled rows — then a decode
//! step (one query over a 16,384-key cache).
//!
//! With the inference options (`--window N`, `--softcap CAP`, `--alibi`,
//! `--paged PAGE`) it then times each against plain attention in the same run:
//! the self-attention with each of window, soft cap and ALiBi vs without, and
//! the decode step on a paged cache vs the contiguous one.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use flashdot::ops::attention::*;
use flashdot::{reference, verify, Context, Tensor};

#[derive(Parser)]
#[command(about = "flashdot attention demo: every kernel variant on a transformer-shaped input")]
struct Args {
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    /// Heads [default: 12; 8 on a software adapter].
    #[arg(long)]
    heads: Option<usize>,
    /// Sequence length of the self-attention [default: 2048; 1024 on a software adapter].
    #[arg(long)]
    seq: Option<usize>,
    /// Head dim.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Keys in the decode step's cache.
    #[arg(long, default_value_t = 16384)]
    cache: usize,
    /// Timed repetitions.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Not causal.
    #[arg(long)]
    full: bool,
    /// Run only these variants (comma-separated, e.g. `naive,flash`; default all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also time a sliding window of this many keys before the diagonal
    /// against plain causal attention.
    #[arg(long)]
    window: Option<usize>,
    /// Also time logit soft-capping at this cap against plain attention.
    #[arg(long)]
    softcap: Option<f32>,
    /// Also time ALiBi (the standard geometric slopes) against plain attention.
    #[arg(long)]
    alibi: bool,
    /// Also time the decode step on a paged cache of this many tokens a page
    /// against the contiguous cache.
    #[arg(long)]
    paged: Option<usize>,
    /// Skip the every-variant tables (with the option flags: only their
    /// comparisons).
    #[arg(long)]
    options_only: bool,
}

/// One inference option of the comparison tables.
#[derive(Clone, Copy, Default)]
struct Opt<'a> {
    window: Option<usize>,
    softcap: Option<f32>,
    alibi: Option<&'a [f32]>,
}

impl<'a> Opt<'a> {
    fn apply(&self, o: AttentionOptions<'a>) -> AttentionOptions<'a> {
        let mut o = o;
        if let Some(w) = self.window {
            o = o.window(Window::left(w));
        }
        if let Some(c) = self.softcap {
            o = o.softcap(c);
        }
        if let Some(s) = self.alibi {
            o = o.alibi_slopes(s);
        }
        o
    }
}

/// The host inputs of a timed call whose rows [`check_rows`] samples: q, k
/// and v `[1, h, seq, d]`, (seq_q, seq_k, d) and the causal convention.
struct Host<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dims: (usize, usize, usize),
    causal: Causal,
}

/// Checks sampled rows of head 0 of `got` (`[1, h, sq, d]`, bottom-right
/// aligned when causal) against the reference on `host` with option `x`;
/// returns the worst rel L2.
fn check_rows(name: &str, got: &[f32], host: &Host, x: &Opt) -> flashdot::Result<f64> {
    let Host {
        q,
        k,
        v,
        dims: (sq, sk, d),
        causal,
    } = *host;
    let mut worst = 0.0f64;
    for r in [0, sq / 3, sq / 2, sq - 1] {
        // Row r alone over the keys it may see: with bottom-right alignment
        // its diagonal is its last key, as in the full call.
        let end = match causal {
            Causal::None => sk,
            _ => ((r + 1 + sk) as i64 - sq as i64).clamp(0, sk as i64) as usize,
        };
        let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
            q: &q[r * d..(r + 1) * d],
            k: &k[..end * d],
            v: &v[..end * d],
            dims: [1, 1, 1, 1, end, d, d],
            layout: Layout::Bhsd,
            causal: if causal == Causal::None {
                Causal::None
            } else {
                Causal::BottomRight
            },
            scale: Some(1.0 / (d as f32).sqrt()),
            window: (x.window, x.window.map(|_| 0)),
            softcap: x.softcap,
            alibi: x.alibi.map(|s| &s[..1]),
            ..Default::default()
        });
        let rep = verify::compare(&got[r * d..(r + 1) * d], &want);
        if !rep.passes(1e-4) {
            return Err(flashdot::Error::InvalidArgument {
                op: "attention demo",
                detail: format!("{name} row {r} disagrees with the reference: {rep}"),
            });
        }
        worst = worst.max(rep.rel_l2);
    }
    Ok(worst)
}

/// The option comparisons: self-attention plain vs each option (and all
/// together), then decode contiguous vs paged; ratios from this one run.
fn options(ctx: &Context, a: &Args, h: usize, seq: usize) -> flashdot::Result<()> {
    let slopes: Vec<f32> = (0..h)
        .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
        .collect();
    let cases = option_cases(a, &slopes);
    let wanted: Vec<AttentionVariant> = variants(a)
        .into_iter()
        .filter(|&v| v != AttentionVariant::Naive || a.only.iter().any(|o| o == "naive"))
        .collect();
    if cases.len() > 1 {
        options_table(ctx, a, (h, seq), &cases, &wanted)?;
    }
    if let Some(page) = a.paged {
        paged_decode(ctx, a, h, page, &wanted)?;
    }
    Ok(())
}

/// The table's rows: plain causal, each option given, and all of them
/// together when more than one is.
fn option_cases<'a>(a: &Args, slopes: &'a [f32]) -> Vec<(String, Opt<'a>)> {
    let given = Opt {
        window: a.window,
        softcap: a.softcap,
        alibi: a.alibi.then_some(slopes),
    };
    let mut cases: Vec<(String, Opt)> = vec![("plain causal".into(), Opt::default())];
    if let Some(w) = a.window {
        cases.push((
            format!("window {w}"),
            Opt {
                window: Some(w),
                ..Opt::default()
            },
        ));
    }
    if let Some(c) = a.softcap {
        cases.push((
            format!("softcap {c}"),
            Opt {
                softcap: Some(c),
                ..Opt::default()
            },
        ));
    }
    if a.alibi {
        cases.push((
            "alibi".into(),
            Opt {
                alibi: Some(slopes),
                ..Opt::default()
            },
        ));
    }
    let n_given = [a.window.is_some(), a.softcap.is_some(), a.alibi]
        .iter()
        .filter(|&&x| x)
        .count();
    if n_given > 1 {
        cases.push(("all of these".into(), given));
    }
    cases
}

/// Times each of `cases` with each variant of `wanted` on the
/// self-attention (`h` heads, `seq` long), relative to plain causal.
fn options_table(
    ctx: &Context,
    a: &Args,
    (h, seq): (usize, usize),
    cases: &[(String, Opt)],
    wanted: &[AttentionVariant],
) -> flashdot::Result<()> {
    let d = a.dim;
    let q = common::data(h * seq * d, 1);
    let k = common::data(h * seq * d, 2);
    let v = common::data(h * seq * d, 3);
    let t = |x: &[f32]| Tensor::from_slice(ctx, x, &[1, h, seq, d]);
    let (gq, gk, gv) = (t(&q)?, t(&k)?, t(&v)?);
    let out = Tensor::zeros(ctx, &[1, h, seq, d], flashdot::DType::F32)?;
    println!(
        "
options: batch 1, heads {h}, seq {seq}, d {d}, causal (bottom-right)"
    );
    println!(
        "{:<22} {:<10} {:>11} {:>12} {:>10}  plan",
        "option", "variant", "median ms", "vs plain", "rel L2"
    );
    for &var in wanted {
        // Each case warmed and checked first, then timed interleaved.
        let mut ready = Vec::new();
        for (label, x) in cases {
            let opts = x.apply(
                AttentionOptions::default()
                    .causal(Causal::BottomRight)
                    .variant(var),
            );
            let name = format!("{label} {var:?}");
            if let Err(e) = common::time(ctx, 1, &name, || {
                attention_into(&gq, &gk, &gv, &opts, &out, None)
            }) {
                println!(
                    "{label:<22} {:<10} cannot run this shape: {e}",
                    format!("{var:?}")
                );
                continue;
            }
            let host = Host {
                q: &q,
                k: &k,
                v: &v,
                dims: (seq, seq, d),
                causal: Causal::BottomRight,
            };
            let worst = check_rows(&name, &out.to_vec::<f32>()?, &host, x)?;
            ready.push((
                label.clone(),
                opts,
                plan_line(&plan(&gq, &gk, &gv, &opts)?),
                worst,
            ));
        }
        let (gq, gk, gv, out) = (&gq, &gk, &gv, &out);
        let mut calls: Vec<_> = ready
            .iter()
            .map(|(_, opts, ..)| move || attention_into(gq, gk, gv, opts, out, None))
            .collect();
        let ms = interleaved(ctx, a.reps, &format!("options {var:?}"), &mut calls)?;
        let base = ms.first().copied().unwrap_or(1.0);
        for ((label, _, plan, worst), ms) in ready.iter().zip(&ms) {
            println!(
                "{label:<22} {:<10} {ms:>11.2} {:>11.2}x {worst:>10.2e}  {plan}",
                format!("{var:?}"),
                ms / base,
            );
        }
    }
    println!("(vs plain: time relative to plain causal attention with the same variant)");
    Ok(())
}

/// Decode (one query) over `--cache` keys: the contiguous cache, then the
/// same keys in a pool of `page`-token pages in shuffled order.
fn paged_decode(
    ctx: &Context,
    a: &Args,
    h: usize,
    page: usize,
    wanted: &[AttentionVariant],
) -> flashdot::Result<()> {
    let (d, sk) = (a.dim, a.cache);
    let maxp = sk.div_ceil(page);
    let q = common::data(h * d, 1);
    let k = common::data(h * sk * d, 2);
    let v = common::data(h * sk * d, 3);
    // Pages in a scrambled order, as a long-running cache's are: every 7th
    // (a permutation when 7 does not divide the page count), else reversed.
    let table: Vec<u32> = if maxp % 7 != 0 {
        (0..maxp).map(|i| (i * 7 % maxp) as u32).collect()
    } else {
        (0..maxp as u32).rev().collect()
    };
    // Pool [pages, heads, page, d] (the Bhsd layout of the cache).
    let pool = |x: &[f32]| {
        let mut p = vec![0.0f32; maxp * h * page * d];
        for hh in 0..h {
            for j in 0..sk {
                let pg = table[j / page] as usize;
                let dst = ((pg * h + hh) * page + j % page) * d;
                p[dst..dst + d].copy_from_slice(&x[(hh * sk + j) * d..][..d]);
            }
        }
        p
    };
    let gq = Tensor::from_slice(ctx, &q, &[1, h, 1, d])?;
    let gk = Tensor::from_slice(ctx, &k, &[1, h, sk, d])?;
    let gv = Tensor::from_slice(ctx, &v, &[1, h, sk, d])?;
    let pk = Tensor::from_slice(ctx, &pool(&k), &[maxp, h, page, d])?;
    let pv = Tensor::from_slice(ctx, &pool(&v), &[maxp, h, page, d])?;
    let out = Tensor::zeros(ctx, &[1, h, 1, d], flashdot::DType::F32)?;
    let kv_len = [sk as u32];
    println!(
        "
paged decode: heads {h}, one query over {sk} keys, d {d}, pages of {page} ({maxp} pages)"
    );
    println!(
        "{:<22} {:<10} {:>11} {:>12} {:>10}  plan",
        "cache", "variant", "median ms", "vs contig.", "rel L2"
    );
    for &var in wanted {
        let mut ready = Vec::new();
        for paged in [false, true] {
            let mut opts = AttentionOptions::default()
                .causal(Causal::BottomRight)
                .variant(var)
                .kv_len(&kv_len);
            let (kk, vv) = if paged {
                opts = opts.paged(PagedKv {
                    block_table: &table,
                    max_pages: maxp,
                });
                (&pk, &pv)
            } else {
                (&gk, &gv)
            };
            let label = if paged { "paged" } else { "contiguous" };
            let plan = match plan(&gq, kk, vv, &opts) {
                Ok(p) => p,
                Err(e) => {
                    println!("{label:<22} {:<10} cannot run: {e}", format!("{var:?}"));
                    continue;
                }
            };
            common::time(ctx, 1, &format!("{label} decode {var:?}"), || {
                attention_into(&gq, kk, vv, &opts, &out, None)
            })?;
            let host = Host {
                q: &q,
                k: &k,
                v: &v,
                dims: (1, sk, d),
                causal: Causal::BottomRight,
            };
            let worst = check_rows(label, &out.to_vec::<f32>()?, &host, &Opt::default())?;
            ready.push((label, opts, kk, vv, plan_line(&plan), worst));
        }
        let (gq, out) = (&gq, &out);
        let mut calls: Vec<_> = ready
            .iter()
            .map(|(_, opts, kk, vv, ..)| move || attention_into(gq, kk, vv, opts, out, None))
            .collect();
        let ms = interleaved(ctx, a.reps, &format!("decode {var:?}"), &mut calls)?;
        let base = ms.first().copied().unwrap_or(1.0);
        for ((label, _, _, _, plan, worst), ms) in ready.iter().zip(&ms) {
            println!(
                "{label:<22} {:<10} {ms:>11.3} {:>11.2}x {worst:>10.2e}  {plan}",
                format!("{var:?}"),
                ms / base,
            );
        }
    }
    Ok(())
}

/// The kernel a plan runs: the flash schedule or split-KV source.
fn plan_line(p: &AttentionPlan) -> String {
    p.schedule
        .map(|s| format!("{s:?}"))
        .or(p.kv_reads.map(|r| format!("{r:?}")))
        .unwrap_or_default()
}

/// Median ms per call of `calls`, timed in `reps` interleaved rounds (each
/// round calls each once, in turn), so that a slow spell of a shared host
/// weighs on every call alike. GPU timestamps where the adapter has them,
/// else wall time around a sync. The calls are warmed by the caller.
fn interleaved<F: FnMut() -> flashdot::Result<()>>(
    ctx: &Context,
    reps: usize,
    label: &str,
    calls: &mut [F],
) -> flashdot::Result<Vec<f64>> {
    let spin = common::wait(format!("{label}: timing {} calls interleaved", calls.len()));
    let mut times = vec![Vec::new(); calls.len()];
    for _ in 0..reps.max(1) {
        for (f, t) in calls.iter_mut().zip(&mut times) {
            let timing = ctx.start_gpu_timer()?;
            let w = std::time::Instant::now();
            f()?;
            ctx.synchronize()?;
            let wall = w.elapsed();
            t.push(match (timing, ctx.stop_gpu_timer()?) {
                (true, Some(d)) => d,
                _ => wall,
            });
        }
    }
    spin.finish_and_clear();
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2].as_secs_f64() * 1e3
        })
        .collect())
}

/// The variants `--only` names (default: all).
fn variants(a: &Args) -> Vec<AttentionVariant> {
    AttentionVariant::ALL
        .into_iter()
        .filter(|var| {
            a.only.is_empty()
                || a.only
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(&format!("{var:?}")))
        })
        .collect()
}

fn run(
    ctx: &Context,
    a: &Args,
    h: usize,
    sq: usize,
    sk: usize,
    causal: Causal,
    label: &str,
) -> flashdot::Result<()> {
    let d = a.dim;
    let q = common::data(h * sq * d, 1);
    let k = common::data(h * sk * d, 2);
    let v = common::data(h * sk * d, 3);
    let gq = Tensor::from_slice(ctx, &q, &[1, h, sq, d])?;
    let gk = Tensor::from_slice(ctx, &k, &[1, h, sk, d])?;
    let gv = Tensor::from_slice(ctx, &v, &[1, h, sk, d])?;
    let out = Tensor::zeros(ctx, &[1, h, sq, d], flashdot::DType::F32)?;
    // Causal self-attention computes half the scores; a decode query sees
    // every key.
    let half = causal != Causal::None && sq > 1;
    let flop = 4.0 * (h * sq * sk * d) as f64 / if half { 2.0 } else { 1.0 };
    println!("\n{label}: batch 1, heads {h}, seq_q {sq}, seq_k {sk}, d {d}, {causal:?}");
    println!(
        "{:<17} {:>11} {:>9} {:>9} {:>14} {:>10} {:>10}",
        "variant", "median ms", "GFLOP/s", "vs naive", "peak dev MiB", "rel L2", "first ms"
    );
    let mut naive_ms = None;
    let mut ran = 0;
    // SplitKv once per K/V source, so both are compared in one run.
    let runs = AttentionVariant::ALL.into_iter().flat_map(|var| {
        let reads = match var {
            AttentionVariant::SplitKv => KvReads::ALL.map(Some).to_vec(),
            _ => vec![None],
        };
        reads.into_iter().map(move |r| (var, r))
    });
    let wanted = |var: AttentionVariant| {
        a.only.is_empty()
            || a.only
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&format!("{var:?}")))
    };
    for (var, reads) in runs.filter(|r| wanted(r.0)) {
        let mut opts = AttentionOptions::default().causal(causal).variant(var);
        opts.split_kv_reads = reads;
        let name = match reads {
            Some(r) => format!("{var:?}/{r:?}"),
            None => format!("{var:?}"),
        };
        ctx.reset_peak_memory();
        let t = match common::time(ctx, a.reps, &name, || {
            attention_into(&gq, &gk, &gv, &opts, &out, None)
        }) {
            Ok(t) => t,
            Err(e) => {
                let hint = match e {
                    flashdot::Error::TooLarge { .. } => " (--heads or --seq smaller fit)",
                    _ => "",
                };
                println!("{name:<17} cannot run this shape: {e}{hint}");
                continue;
            }
        };
        // Read before the check below adds its own readback buffer.
        let peak = ctx.memory_stats().peak_bytes;
        let got = out.to_vec::<f32>()?;
        let host = Host {
            q: &q,
            k: &k,
            v: &v,
            dims: (sq, sk, d),
            causal,
        };
        let worst = check_rows(&name, &got, &host, &Opt::default())?;
        ran += 1;
        let ms = t.median.as_secs_f64() * 1e3;
        if var == AttentionVariant::Naive {
            naive_ms = Some(ms);
        }
        let ratio = naive_ms.map_or("-".to_string(), |b| format!("{:.2}x", b / ms));
        println!(
            "{:<17} {:>11.2} {:>9.2} {:>9} {:>14.1} {:>10.2e} {:>10.0}",
            name,
            ms,
            flop / ms / 1e6,
            ratio,
            peak as f64 / (1 << 20) as f64,
            worst,
            t.first.as_secs_f64() * 1e3
        );
    }
    if ran == 0 {
        // A demo that measured nothing must not look like a success.
        return Err(flashdot::Error::InvalidArgument {
            op: "attention demo",
            detail: format!("no variant could run the {label}: each one's reason is above"),
        });
    }
    Ok(())
}

fn main() {
    env_logger::init();
    let a = Args::parse();
    for o in &a.only {
        if !AttentionVariant::ALL
            .iter()
            .any(|v| o.eq_ignore_ascii_case(&format!("{v:?}")))
        {
            eprintln!("error: --only {o}: not a variant (naive, flash, splitkv, auto)");
            std::process::exit(2);
        }
    }
    let ctx = common::exit_on_error(common::open(a.backend));
    let mut sizes = common::Sizes::new(&ctx);
    let heads = sizes.pick("--heads", a.heads, 12, 8);
    let seq = sizes.pick("--seq", a.seq, 2048, 1024);
    sizes.report();
    if heads == 0 || seq == 0 || a.dim == 0 || a.cache == 0 {
        eprintln!("error: --heads, --seq, --dim and --cache must be at least 1");
        std::process::exit(2);
    }
    if a.paged == Some(0) {
        eprintln!("error: --paged must be at least 1 token a page");
        std::process::exit(2);
    }
    if a.window.is_some() && a.full {
        eprintln!("error: --window is timed against causal attention: drop --full");
        std::process::exit(2);
    }
    if let Some(c) = a.softcap {
        if !(c.is_finite() && c > 0.0) {
            eprintln!("error: --softcap must be positive and finite, got {c}");
            std::process::exit(2);
        }
    }
    let causal = if a.full {
        Causal::None
    } else {
        Causal::BottomRight
    };
    if !a.options_only {
        common::exit_on_error(run(&ctx, &a, heads, seq, seq, causal, "self-attention"));
        common::exit_on_error(run(
            &ctx,
            &a,
            heads,
            1,
            a.cache,
            Causal::BottomRight,
            "decode step",
        ));
    }
    common::exit_on_error(options(&ctx, &a, heads, seq));
}
