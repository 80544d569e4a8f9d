//! The IVF recall–throughput curve: a synthetic clustered corpus, the flat
//! index's exact results and queries/s, then an `IvfIndex` trained on it and
//! searched at each `nprobe` — recall@10 against the flat index beside
//! queries/s for one query (median of 31) and for a batch, grouped by list
//! and not — with the training time, the k-means objective and the device
//! and host memory.
//!
//! The corpus and the measurement are `examples/common/ivf_curve.rs`'s (the
//! comparison report runs the same): `--clusters` centres with a power-law
//! spectrum, each vector a centre plus `--spread` times its noise.
//!
//! `cargo run --release --example ivf_curve -- --n 1000000 --dim 128 --nlist 4096`

#[path = "common/ivf_curve.rs"]
mod curve;
#[path = "common/search_args.rs"]
mod search_args;

use clap::Parser;
use curve::{measure, Corpus, CurveOptions};
use flashdot::ops::search::Storage;
use flashdot::ops::similarity::Metric;
use search_args::{MetricArg, StorageArg};

#[derive(Parser, Debug)]
#[command(about = "IVF recall@10 and queries/s against the flat index, per nprobe")]
struct Args {
    /// Corpus vectors.
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// IVF lists.
    #[arg(long, default_value_t = 512)]
    nlist: usize,
    /// The IVF lists' storage (the flat index stays f32: recall is against
    /// exact f32 search).
    #[arg(long, value_enum, default_value_t = StorageArg::F32)]
    storage: StorageArg,
    #[arg(long, value_enum, default_value_t = MetricArg::L2)]
    metric: MetricArg,
    /// Clusters the corpus is drawn around.
    #[arg(long, default_value_t = 2000)]
    clusters: usize,
    /// Spread of each cluster, relative to the centres' own.
    #[arg(long, default_value_t = 0.5)]
    spread: f32,
    /// k-means training points per list (FAISS: 256).
    #[arg(long, default_value_t = 256)]
    points_per_list: usize,
    /// k-means iterations (FAISS: 25).
    #[arg(long, default_value_t = 25)]
    niter: usize,
    /// Queries in the batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Also write the corpus and the batch's queries to DIR/corpus.fvecs
    /// and DIR/queries.fvecs (the FAISS baseline, scripts/faiss-ivf.py,
    /// reads them), and k-means' training points, initial centroids and
    /// objectives to DIR/train.fvecs, init.fvecs, objective.txt
    /// (scripts/faiss-kmeans.py runs FAISS's k-means from the same start).
    #[arg(long)]
    write: Option<std::path::PathBuf>,
    /// The nprobe values, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64,128,256"
    )]
    nprobe: Vec<usize>,
}

fn main() -> flashdot::Result<()> {
    let a = Args::parse();
    let metric = Metric::from(a.metric);
    let storage = Storage::from(a.storage);
    let ctx = flashdot::Context::new()?;
    println!("adapter: {}", ctx.info().name);
    let c = Corpus::clustered(a.n, a.dim, a.clusters, a.spread, a.batch);
    if let Some(dir) = &a.write {
        c.write(dir).map_err(|e| flashdot::Error::InvalidArgument {
            op: "ivf_curve",
            detail: format!("writing {}: {e}", dir.display()),
        })?;
    }
    println!(
        "corpus: {} x {}, {} clusters, spread {}; queries: {}",
        a.n, a.dim, a.clusters, a.spread, a.batch
    );
    let opts = CurveOptions {
        nlist: a.nlist,
        metric,
        storage,
        niter: a.niter,
        points_per_list: a.points_per_list,
        nprobe: a.nprobe.clone(),
        write_training: a.write.clone(),
    };
    let curve = measure(&ctx, &c, &opts, &mut |line| println!("{line}"))?;
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!(
        "device: flat {:.1} MiB, IVF {:.1} MiB; host peak {}",
        curve.flat_bytes as f64 / (1 << 20) as f64,
        curve.ivf_bytes as f64 / (1 << 20) as f64,
        hwm.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
    print!("{}", curve.table());
    Ok(())
}
