//! A linear layer `[4096, 768] × [3072, 768]ᵀ + bias, GELU` through every matmul
//! variant: time, GFLOP/s and error against the CPU reference (on sampled rows).
//! `--sweep` instead measures the square and transformer shapes of the README's
//! performance table, including the first call (pipeline build) in a fresh context.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use clap::Parser;
use flashdot::ops::matmul::*;
use flashdot::reference::matmul::LinearArgs;
use flashdot::{f16, reference, verify, Context, DType, Tensor};

#[derive(Parser)]
#[command(about = "flashdot matmul demo: a linear layer through every kernel variant")]
struct Args {
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    /// Rows of x [default: 4096; 512 on a software adapter].
    #[arg(long)]
    rows: Option<usize>,
    /// in_features.
    #[arg(long, default_value_t = 768)]
    inp: usize,
    /// out_features.
    #[arg(long, default_value_t = 3072)]
    out: usize,
    /// Timed repetitions per variant.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Measure the performance table (square 1024/2048, transformer shapes, f32/f16).
    #[arg(long)]
    sweep: bool,
}

fn upload(ctx: &Context, x: &[f32], shape: &[usize], dtype: DType) -> flashdot::Result<Tensor> {
    match dtype {
        DType::F16 => {
            let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            Tensor::from_slice(ctx, &h, shape)
        }
        _ => Tensor::from_slice(ctx, x, shape),
    }
}

fn demo(ctx: &Context, a: &Args) -> flashdot::Result<()> {
    let mut sizes = common::Sizes::new(ctx);
    let (rows, inp, outf) = (sizes.pick("--rows", a.rows, 4096, 512), a.inp, a.out);
    sizes.report();
    if rows == 0 || inp == 0 || outf == 0 {
        return Err(flashdot::Error::InvalidArgument {
            op: "matmul demo",
            detail: "--rows, --inp and --out must be at least 1".into(),
        });
    }
    let x = common::data(rows * inp, 1);
    let w = common::data(outf * inp, 2);
    let bias = common::data(outf, 3);
    let gx = Tensor::from_slice(ctx, &x, &[rows, inp])?;
    let gw = Tensor::from_slice(ctx, &w, &[outf, inp])?;
    let gb = Tensor::from_slice(ctx, &bias, &[outf])?;
    let out = Tensor::zeros(ctx, &[rows, outf], DType::F32)?;
    // Reference on 64 sampled rows: the full product takes minutes in f64 loops.
    let sample: Vec<usize> = (0..64.min(rows)).map(|i| i * rows / 64.min(rows)).collect();
    let xs: Vec<f32> = sample
        .iter()
        .flat_map(|&r| x[r * inp..(r + 1) * inp].to_vec())
        .collect();
    let want = reference::matmul::linear(
        &xs,
        &w,
        Some(&bias),
        LinearArgs::new(sample.len(), inp, outf).act(Activation::GeluTanh),
    );
    let flop = 2.0 * (rows * inp * outf) as f64;
    println!("linear [{rows}, {inp}] x [{outf}, {inp}]^T + bias, GELU(tanh), f32");
    println!(
        "{:<34} {:>10} {:>10} {:>9} {:>10}",
        "variant", "median ms", "GFLOP/s", "vs naive", "rel L2"
    );
    let mut naive = None;
    for v in MatmulVariant::all(ctx) {
        let opts = MatmulOptions::default().variant(v);
        let t = common::time(ctx, a.reps, &v.to_string(), || {
            linear_into(&gx, &gw, Some(&gb), Activation::GeluTanh, &opts, &out)
        })?;
        let got = out.to_vec::<f32>()?;
        let gs: Vec<f32> = sample
            .iter()
            .flat_map(|&r| got[r * outf..(r + 1) * outf].to_vec())
            .collect();
        let rep = verify::compare(&gs, &want);
        let secs = t.median.as_secs_f64();
        let base = *naive.get_or_insert(secs);
        println!(
            "{:<34} {:>10.2} {:>10.2} {:>8.1}x {:>10.2e}",
            v.to_string(),
            secs * 1e3,
            flop / secs / 1e9,
            base / secs,
            rep.rel_l2
        );
        if !rep.passes(1e-5) {
            eprintln!("error: {v} disagrees with the reference: {rep}");
            std::process::exit(1);
        }
    }
    Ok(())
}

fn sweep(a: &Args) -> flashdot::Result<()> {
    println!(
        "{:<18} {:<5} {:<34} {:>10} {:>10}",
        "m x k x n", "dtype", "variant", "GFLOP/s", "first s"
    );
    for dtype in [DType::F32, DType::F16] {
        for (m, k, n) in [
            (1024, 1024, 1024),
            (2048, 2048, 2048),
            (2048, 768, 3072),
            (2048, 3072, 768),
        ] {
            for v in [MatmulVariant::Auto, MatmulVariant::Autotune] {
                // A fresh context per row so that "first" includes pipeline
                // creation and autotuning.
                let ctx = common::open(a.backend)?;
                let ta = upload(&ctx, &common::data(m * k, 1), &[m, k], dtype)?;
                let tb = upload(&ctx, &common::data(k * n, 2), &[k, n], dtype)?;
                let opts = MatmulOptions::default().variant(v);
                let t0 = Instant::now();
                let out = matmul_with(&ta, &tb, &opts)?;
                ctx.synchronize()?;
                let first = t0.elapsed().as_secs_f64();
                let t = common::time(&ctx, a.reps, &format!("{m}x{k}x{n}"), || {
                    matmul_into(&ta, &tb, &opts, &out)
                })?;
                let gf = 2.0 * (m * n * k) as f64 / t.median.as_secs_f64() / 1e9;
                let name = match v {
                    MatmulVariant::Autotune => {
                        format!(
                            "autotune -> {}",
                            tuned_config(&ta, &tb, &opts)
                                .map(|c| c.to_string())
                                .unwrap_or_default()
                        )
                    }
                    _ => format!("auto ({})", plan(&ta, &tb, &opts)?.kernel),
                };
                println!(
                    "{:<18} {:<5} {:<34} {:>10.2} {:>10.2}",
                    format!("{m}x{k}x{n}"),
                    dtype.to_string(),
                    name,
                    gf,
                    first
                );
            }
        }
    }
    Ok(())
}

fn main() {
    env_logger::init();
    let a = Args::parse();
    if a.sweep {
        common::exit_on_error(sweep(&a));
    } else {
        let ctx = common::exit_on_error(common::open(a.backend));
        common::exit_on_error(demo(&ctx, &a));
    }
}
