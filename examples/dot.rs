//! Batched dot products at scale: every dot variant on `[n, d]` rows, GB/s read
//! and the ratio to the CPU reference's time (f64 loops, one thread), with the
//! error against it.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use clap::Parser;
use flashdot::ops::dot::{dot_into, DotVariant};
use flashdot::{f16, reference, verify, DType, Tensor};

#[derive(Parser)]
#[command(about = "flashdot dot demo: row-wise dot products over a large [n, d] batch")]
struct Args {
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    /// Rows.
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    /// Row length.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Storage: f32 or f16.
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// Timed repetitions.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

fn run(a: &Args) -> flashdot::Result<()> {
    let ctx = common::open(a.backend)?;
    let (n, d) = (a.n, a.dim);
    let x: Vec<f32> = (0..n * d)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let y: Vec<f32> = (0..n * d)
        .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
        .collect();
    let (t1, t2, x, y) = match a.dtype.as_str() {
        "f16" => {
            let hx: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let hy: Vec<f16> = y.iter().map(|&v| f16::from_f32(v)).collect();
            let back = |h: &[f16]| h.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
            (
                Tensor::from_slice(&ctx, &hx, &[n, d])?,
                Tensor::from_slice(&ctx, &hy, &[n, d])?,
                back(&hx),
                back(&hy),
            )
        }
        "f32" => (
            Tensor::from_slice(&ctx, &x, &[n, d])?,
            Tensor::from_slice(&ctx, &y, &[n, d])?,
            x,
            y,
        ),
        other => {
            return Err(flashdot::Error::InvalidArgument {
                op: "dot demo",
                detail: format!("dtype {other}: use f32 or f16"),
            })
        }
    };
    let t = Instant::now();
    let want = reference::dot::dot(&x, &y, d);
    let cpu = t.elapsed().as_secs_f64();
    let bytes = (t1.bytes() + t2.bytes()) as f64;
    println!(
        "dot [{n}, {d}] {}: {:.0} MB read per call",
        t1.dtype(),
        bytes / 1e6
    );
    println!("CPU reference: {:.1} ms", cpu * 1e3);
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>10}",
        "variant", "median ms", "GB/s", "vs CPU", "rel L2"
    );
    let out = Tensor::zeros(&ctx, &[n], DType::F32)?;
    for v in DotVariant::ALL {
        out.poison()?;
        let tm = common::time(&ctx, a.reps, || dot_into(&t1, &t2, v, &out))?;
        let rep = verify::compare(&out.to_vec::<f32>()?, &want);
        if !rep.passes(1e-5) {
            return Err(flashdot::Error::InvalidArgument {
                op: "dot demo",
                detail: format!("{v:?}: {rep}"),
            });
        }
        let s = tm.median.as_secs_f64();
        println!(
            "{:<10} {:>10.1} {:>9.2} {:>8.2}x {:>10.1e}",
            format!("{v:?}"),
            s * 1e3,
            bytes / s / 1e9,
            cpu / s,
            rep.rel_l2
        );
    }
    Ok(())
}

fn main() {
    env_logger::init();
    common::exit_on_error(run(&Args::parse()));
}
