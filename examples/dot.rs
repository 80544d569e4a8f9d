//! Batched dot products at scale: every dot variant on `[n, d]` rows, GB/s read
//! and the error against the CPU reference (f64). The comparison with a
//! multithreaded CPU scan is in the comparison report (`--example compare`).

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use flashdot::ops::dot::{dot_into, DotVariant};
use flashdot::{f16, reference, verify, DType, Element, Tensor};

#[derive(Parser)]
#[command(about = "flashdot dot demo: row-wise dot products over a large [n, d] batch")]
struct Args {
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    /// Rows [default: 1000000; 200000 on a software adapter].
    #[arg(long)]
    n: Option<usize>,
    /// Row length.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Storage.
    #[arg(long, value_enum, default_value = "f16")]
    dtype: common::FloatType,
    /// Timed repetitions.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// Deterministic inputs, generated straight into their storage type (at the
/// GPU default, two f32 copies of both inputs would need 12 GB of host memory).
fn inputs<T: Element>(n: usize, d: usize, cast: impl Fn(f32) -> T) -> (Vec<T>, Vec<T>) {
    let x = (0..n * d)
        .map(|i| cast(((i * 7919) % 1000) as f32 / 1000.0 - 0.5))
        .collect();
    let y = (0..n * d)
        .map(|i| cast(((i * 104_729) % 997) as f32 / 997.0 - 0.5))
        .collect();
    (x, y)
}

fn run(a: &Args) -> flashdot::Result<()> {
    let ctx = common::open(a.backend)?;
    let mut sizes = common::Sizes::new(&ctx);
    let (n, d) = (sizes.pick("--n", a.n, 1_000_000, 200_000), a.dim);
    sizes.report();
    if n == 0 || d == 0 {
        return Err(flashdot::Error::InvalidArgument {
            op: "dot demo",
            detail: format!("nothing to measure in [{n}, {d}]: --n and --dim must be at least 1"),
        });
    }
    let spin = common::wait(format!(
        "generating two [{n}, {d}] inputs and the CPU reference"
    ));
    // The reference reads the stored (rounded) values, as the kernels do.
    let (t1, t2, want) = match DType::from(a.dtype) {
        DType::F16 => {
            let (x, y) = inputs(n, d, f16::from_f32);
            let want = chunked_reference(&x, &y, d);
            let (t1, t2) = (
                Tensor::from_slice(&ctx, &x, &[n, d])?,
                Tensor::from_slice(&ctx, &y, &[n, d])?,
            );
            (t1, t2, want)
        }
        _ => {
            let (x, y) = inputs(n, d, |v| v);
            let want = reference::dot::dot(&x, &y, d);
            let (t1, t2) = (
                Tensor::from_slice(&ctx, &x, &[n, d])?,
                Tensor::from_slice(&ctx, &y, &[n, d])?,
            );
            (t1, t2, want)
        }
    };
    spin.finish_and_clear();
    let bytes = (t1.bytes() + t2.bytes()) as f64;
    println!(
        "dot [{n}, {d}] {}: {:.0} MB read per call",
        t1.dtype(),
        bytes / 1e6
    );
    println!(
        "{:<10} {:>10} {:>9} {:>10} {:>10}",
        "variant", "median ms", "GB/s", "first ms", "rel L2"
    );
    let out = Tensor::zeros(&ctx, &[n], DType::F32)?;
    for v in DotVariant::ALL {
        out.poison()?;
        let tm = common::time(&ctx, a.reps, &format!("{v:?}"), || {
            dot_into(&t1, &t2, v, &out)
        })?;
        let rep = verify::compare(&out.to_vec::<f32>()?, &want);
        if !rep.passes(1e-5) {
            return Err(flashdot::Error::InvalidArgument {
                op: "dot demo",
                detail: format!("{v:?}: {rep}"),
            });
        }
        let s = tm.median.as_secs_f64();
        println!(
            "{:<10} {:>10.1} {:>9.2} {:>10.0} {:>10.1e}",
            format!("{v:?}"),
            s * 1e3,
            bytes / s / 1e9,
            tm.first.as_secs_f64() * 1e3,
            rep.rel_l2
        );
    }
    Ok(())
}

/// The reference on f16 storage, widened 4,096 rows at a time (not whole
/// f32 copies of both inputs).
fn chunked_reference(x: &[f16], y: &[f16], d: usize) -> Vec<f64> {
    let widen = |h: &[f16]| h.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
    x.chunks(4096 * d)
        .zip(y.chunks(4096 * d))
        .flat_map(|(x, y)| reference::dot::dot(&widen(x), &widen(y), d))
        .collect()
}

fn main() {
    env_logger::init();
    common::exit_on_error(run(&Args::parse()));
}
