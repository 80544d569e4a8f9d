//! The main demo: transformer-shaped causal self-attention (batch 1, 12 heads,
//! seq 2048, d 64; 8 heads × 1024 on a software adapter) through every attention variant — time per call, GFLOP/s, peak
//! device memory, error against the CPU reference on sampled rows — then a decode
//! step (one query over a 16,384-key cache).

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
    // Reference on 4 rows of head 0.
    let rows: Vec<usize> = vec![0, sq / 3, sq / 2, sq - 1];
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
        let mut worst = 0.0f64;
        for &r in &rows {
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
                causal: Causal::None,
                scale: Some(1.0 / (d as f32).sqrt()),
                kv_len: None,
                bias: None,
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
    let causal = if a.full {
        Causal::None
    } else {
        Causal::BottomRight
    };
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
