//! Attention backward demo: the forward (with its LSE), the flash backward
//! and the naive composed backward on one transformer-shaped input (batch 1,
//! 8 heads, seq 1024, d 64) — time per call, GFLOP/s, the backward's ratio to
//! its own forward and to the naive one, peak device memory of each, and the
//! gradients' error against the f64 CPU reference on the first head (and
//! the flash gradients' against the naive ones).
//!
//! FLOP: the forward 4·h·sq·sk·d; the backward FlashAttention-2's 10·h·sq·sk·d
//! (2.5× the forward's matmul work; flashdot's split dQ kernel recomputes S
//! and dP, 14·h·sq·sk·d done); both halved when causal.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use flashdot::ops::attention::*;
use flashdot::{verify, Context, DType, Tensor};

#[derive(Parser)]
#[command(about = "flashdot attention backward: flash vs naive, time and memory")]
struct Args {
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    #[arg(long, default_value_t = 8)]
    heads: usize,
    #[arg(long, default_value_t = 1024)]
    seq: usize,
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Causal (bottom-right).
    #[arg(long)]
    causal: bool,
    /// f16 storage.
    #[arg(long)]
    f16: bool,
    /// Timed repetitions.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Skip the naive backward.
    #[arg(long)]
    no_naive: bool,
}

fn tensor(ctx: &Context, shape: &[usize], dtype: DType, salt: usize) -> flashdot::Result<Tensor> {
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|i| (((i + salt) * 7919 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    match dtype {
        DType::F16 => {
            let h: Vec<flashdot::f16> = x.iter().map(|&v| flashdot::f16::from_f32(v)).collect();
            Tensor::from_slice(ctx, &h, shape)
        }
        _ => Tensor::from_slice(ctx, &x, shape),
    }
}

fn main() {
    let args = Args::parse();
    // `RUST_LOG=flashdot=info` names every kernel whose compile took > 1 s.
    let _ = env_logger::try_init();
    common::exit_on_error(run(&args));
}

fn run(a: &Args) -> flashdot::Result<()> {
    let ctx = common::open(a.backend)?;
    let dtype = if a.f16 { DType::F16 } else { DType::F32 };
    let (h, s, d) = (a.heads, a.seq, a.dim);
    let shape = [1, h, s, d];
    let q = tensor(&ctx, &shape, dtype, 1)?;
    let k = tensor(&ctx, &shape, dtype, 2)?;
    let v = tensor(&ctx, &shape, dtype, 3)?;
    let d_out = tensor(&ctx, &shape, dtype, 4)?;
    let causal = if a.causal {
        Causal::BottomRight
    } else {
        Causal::None
    };
    let opts = AttentionOptions::default().causal(causal).return_lse(true);
    let half = if a.causal { 2.0 } else { 1.0 };
    let pairs = (h * s * s * d) as f64 / half;
    println!(
        "shape: 1 × {h} heads × {s} × d {d}, {dtype}, {}",
        if a.causal { "causal" } else { "not causal" }
    );
    println!("forward plan: {}", plan(&q, &k, &v, &opts)?);
    let fwd = attention(&q, &k, &v, &opts)?;
    let lse = fwd.lse.as_ref();
    let mut fwd_call = || attention_into(&q, &k, &v, &opts, &fwd.out, lse).map(|_| ());
    let tf = common::time(&ctx, a.reps, "forward", &mut fwd_call)?;
    let gflops = |flop: f64, t: std::time::Duration| flop / t.as_secs_f64() / 1e9;
    println!(
        "forward:        {:>9.2} ms  {:>6.1} GFLOP/s",
        ms(tf.median),
        gflops(4.0 * pairs, tf.median)
    );
    let mut results = Vec::new();
    let variants: &[BackwardVariant] = if a.no_naive {
        &[BackwardVariant::Flash]
    } else {
        &[BackwardVariant::Flash, BackwardVariant::Naive]
    };
    for &var in variants {
        let o = opts.backward_variant(var);
        let p = attention_backward_plan(&q, &k, &v, &fwd.out, &d_out, lse, &o)?;
        println!("backward plan: {p}");
        let g = attention_backward(&q, &k, &v, &fwd.out, &d_out, lse, &o)?;
        let into = GradientsInto {
            dq: &g.dq,
            dk: &g.dk,
            dv: &g.dv,
            dbias: None,
        };
        ctx.synchronize()?;
        ctx.reset_peak_memory();
        let before = ctx.memory_stats().live_bytes;
        attention_backward_into(&q, &k, &v, &fwd.out, &d_out, lse, &o, &into)?;
        ctx.synchronize()?;
        let peak = ctx.memory_stats().peak_bytes - before;
        let t = common::time(&ctx, a.reps, &format!("backward {var:?}"), || {
            attention_backward_into(&q, &k, &v, &fwd.out, &d_out, lse, &o, &into)
        })?;
        println!(
            "backward {:<6} {:>9.2} ms  {:>6.1} GFLOP/s (FA2's 10·n²d)  {:.2}× the forward  \
             scratch {:.1} MiB",
            format!("{var:?}:"),
            ms(t.median),
            gflops(10.0 * pairs, t.median),
            t.median.as_secs_f64() / tf.median.as_secs_f64(),
            peak as f64 / (1 << 20) as f64
        );
        check_head0(a, &[&q, &k, &v, &d_out], &g, dtype)?;
        results.push((var, t.median, peak, g));
    }
    if let [(_, tf, mf, gf), (_, tn, mn, gn)] = &results[..] {
        println!(
            "flash vs naive: {:.2}× faster, {:.1}× less scratch memory",
            tn.as_secs_f64() / tf.as_secs_f64(),
            *mn as f64 / (*mf).max(1) as f64
        );
        for (name, x, y) in [
            ("dq", &gf.dq, &gn.dq),
            ("dk", &gf.dk, &gn.dk),
            ("dv", &gf.dv, &gn.dv),
        ] {
            let (x, y) = (read(x)?, read(y)?);
            let yr: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            println!("{name}: flash vs naive {}", verify::compare(&x, &yr));
        }
    }
    Ok(())
}

/// The gradients of head 0 against the f64 reference (which takes seconds
/// per head on a CPU): its error printed, and past the storage precision's
/// bound an error.
fn check_head0(
    a: &Args,
    inputs: &[&Tensor; 4],
    g: &AttentionGradients,
    dtype: DType,
) -> flashdot::Result<()> {
    let n = a.seq * a.dim;
    let head0 = |t: &Tensor| -> flashdot::Result<Vec<f32>> { Ok(read(t)?[..n].to_vec()) };
    let [q, k, v, d_out] = [inputs[0], inputs[1], inputs[2], inputs[3]].map(head0);
    let (q, k, v, d_out) = (q?, k?, v?, d_out?);
    let r = flashdot::reference::attention::AttentionRef {
        q: &q,
        k: &k,
        v: &v,
        dims: [1, 1, 1, a.seq, a.seq, a.dim, a.dim],
        layout: Layout::Bhsd,
        causal: if a.causal {
            Causal::BottomRight
        } else {
            Causal::None
        },
        ..Default::default()
    };
    let want = flashdot::reference::attention::attention_backward(&r, &d_out);
    let tol = if dtype == DType::F16 { 1e-2 } else { 1e-4 };
    for (name, got, want) in [
        ("dq", &g.dq, &want.dq),
        ("dk", &g.dk, &want.dk),
        ("dv", &g.dv, &want.dv),
    ] {
        let report = verify::compare(&head0(got)?, want);
        println!("  {name} (head 0) vs the f64 reference: {report}");
        if !report.passes(tol) {
            return Err(flashdot::Error::InvalidArgument {
                op: "attention_backward demo",
                detail: format!("{name} differs from the reference past {tol:e}"),
            });
        }
    }
    Ok(())
}

fn read(t: &Tensor) -> flashdot::Result<Vec<f32>> {
    Ok(match t.dtype() {
        DType::F16 => t
            .to_vec::<flashdot::f16>()?
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        _ => t.to_vec::<f32>()?,
    })
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
