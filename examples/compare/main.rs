//! The kernel comparison report (in the spirit of llm.c's dev/cuda files): for
//! each kernel family and a sweep of sizes, validates every variant against the
//! CPU reference, then times them all (warm-up, median of repeats; GPU
//! timestamp queries where the adapter has them, wall clock around a device sync
//! otherwise) and prints one table per family with the ratio to the
//! family's first variant and the speed-up over a native CPU baseline measured
//! in the same run (multithreaded: the `gemm` crate for matmul and attention,
//! a scoped-thread scan for dots and search; wall clock against wall clock).
//! `--out DIR` also writes `results.json` (run metadata, then one record per
//! measurement) and one SVG chart per family (throughput vs the swept size, a
//! line per variant and one for the CPU). `--quick` runs a small sweep (the
//! default on a software adapter, where the full one takes minutes and ~9 GB),
//! `--full` the full one. Last, the IVF index's recall–throughput curve
//! against the flat index (`ivf.rs`), with FAISS's as baseline where it is
//! installed.

//!
//! Files: `families.rs` (each family's sweep, validation and timing),
//! `report.rs` (the tables, `results.json` and the SVG charts), `ivf.rs` (the
//! IVF curve, measured by `examples/common/ivf_curve.rs`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/cpu.rs"]
mod cpu;
#[path = "../common/ivf_curve.rs"]
mod curve;
mod families;
mod ivf;
mod report;

use clap::Parser;

use families::{attention_family, dot_family, matmul_family, search_family};
use report::{json, svg, table, Meta};

#[derive(Parser)]
#[command(about = "flashdot kernel comparison: validate, time and chart every variant")]
struct Args {
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    /// Small sweep (under a minute on a software adapter) [default on a software adapter].
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Full sweep [default on a GPU].
    #[arg(long)]
    full: bool,
    /// Folder for results.json and the SVG charts.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Timed repetitions per measurement.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

#[derive(Debug, Clone)]
struct Record {
    family: &'static str,
    variant: String,
    shape: String,
    size: f64,
    dtype: String,
    median_ms: f64,
    min_ms: f64,
    throughput: f64,
    unit: &'static str,
    rel_l2: f64,
    timer: &'static str,
    /// Median wall time of a call and its sync, ms (the CPU comparison's basis).
    wall_ms: f64,
    /// The family's native CPU baseline (not a kernel).
    cpu: bool,
}

/// What each family's chart sweeps and measures.
struct Family {
    name: &'static str,
    x_title: &'static str,
    y_title: &'static str,
}

const FAMILIES: [Family; 4] = [
    Family {
        name: "dot",
        x_title: "rows n (two [n, 768] f32 inputs, one dot per row)",
        y_title: "GB/s read (higher is better)",
    },
    Family {
        name: "matmul",
        x_title: "n of an n × n × n f32 product",
        y_title: "GFLOP/s (higher is better)",
    },
    Family {
        name: "attention",
        x_title: "sequence length (batch 1, 8 heads, d 64, f32, not causal)",
        y_title: "GFLOP/s (higher is better)",
    },
    Family {
        name: "search",
        x_title: "corpus rows n (d 768, 1 query, top 10)",
        y_title: "queries/s (higher is better)",
    },
];

/// The CPU baseline's name, with its thread count.
fn cpu_name(what: &str) -> String {
    format!("CPU {what}, {} threads", cpu::threads())
}

type R<T> = Result<T, flashdot::Error>;

fn fail(what: String) -> flashdot::Error {
    flashdot::Error::InvalidArgument {
        op: "compare",
        detail: what,
    }
}

fn run(a: &Args) -> R<()> {
    let ctx = common::open(a.backend)?;
    let software = ctx.info().device_type == flashdot::wgpu::DeviceType::Cpu;
    let quick = a.quick || (software && !a.full);
    if quick && !a.quick {
        println!("software adapter: the quick sweep (--full for the full one)");
    }
    let a = &Args {
        quick,
        out: a.out.clone(),
        ..*a
    };
    let meta = Meta::new(&ctx);
    let mut recs = Vec::new();
    dot_family(&ctx, a, &mut recs)?;
    matmul_family(&ctx, a, &mut recs)?;
    attention_family(&ctx, a, &mut recs)?;
    search_family(&ctx, a, &mut recs)?;
    println!(
        "# flashdot kernel comparison\n\n{} ({}, {}) · host {} · {}{} · {} repetitions{}",
        meta.adapter,
        meta.backend,
        meta.driver.trim(),
        meta.host_cpu,
        meta.date,
        meta.commit
            .as_ref()
            .map(|c| format!(" · commit {c}"))
            .unwrap_or_default(),
        a.reps,
        if a.quick { " · quick sweep" } else { "" }
    );
    for f in &FAMILIES {
        print!("{}", table(&recs, f));
    }
    print!("{}", ivf::ivf_section(&ctx, a)?);
    if let Some(dir) = &a.out {
        let io = |e: std::io::Error| fail(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::write(dir.join("results.json"), json(&recs, &meta, a)).map_err(io)?;
        for f in &FAMILIES {
            std::fs::write(dir.join(format!("{}.svg", f.name)), svg(&recs, f, &meta))
                .map_err(io)?;
        }
        println!(
            "\nwrote {}/results.json and one SVG per family",
            dir.display()
        );
    }
    Ok(())
}

fn main() {
    env_logger::init();
    let a = Args::parse();
    common::exit_on_error(run(&a));
}
