//! The IVF recall–throughput curve: a synthetic clustered corpus, the flat
//! index's exact results and queries/s, then an `IvfIndex` trained on it and
//! searched at each `nprobe` — recall@10 against the flat index beside
//! queries/s for one query (median of 31) and for a batch, grouped by list
//! and not — with the training time, the k-means objective and the device
//! and host memory.
//!
//! The corpus: `--clusters` centres drawn from N(0, diag(s²)) and each vector
//! a centre plus `--spread`·N(0, diag(s²)), where s_j = (1 + j)^(−1/2): a
//! power-law spectrum like that of sentence embeddings (a few directions
//! carry most of the variance). Spread 0.5 gives well-separated clusters,
//! 1.0 overlapping ones.
//!
//! `cargo run --release --example ivf_curve -- --n 1000000 --dim 128 --nlist 4096`

use std::time::Instant;

use clap::{Parser, ValueEnum};
use flashdot::ops::search::{
    FlatIndex, IndexOptions, IvfIndex, IvfOptions, IvfSearchParams, KMeansOptions, Storage,
};
use flashdot::ops::similarity::Metric;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StorageArg {
    F32,
    F16,
    Int8,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MetricArg {
    Ip,
    Cosine,
    L2,
}

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
    /// reads them).
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

/// splitmix64 and Box–Muller: the same corpus on every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let a = self.unit().max(1e-12);
        let b = self.unit();
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    }
}

/// `n` vectors around `centres` (`[clusters, dim]`), scaled by `scale`.
fn draw(r: &mut Rng, n: usize, centres: &[f32], scale: &[f32], spread: f32) -> Vec<f32> {
    let d = scale.len();
    let nc = centres.len() / d;
    let mut v = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = ((r.unit() * nc as f64) as usize).min(nc - 1);
        v.extend((0..d).map(|j| centres[c * d + j] + spread * scale[j] * r.normal()));
    }
    v
}

/// Writes `rows` (`[n, dim]`) as `.fvecs`: per vector its dim (i32) and
/// its values (f32), little-endian.
fn write_fvecs(path: &std::path::Path, rows: &[f32], dim: usize) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(rows.len() / dim * (dim + 1) * 4);
    for row in rows.chunks_exact(dim) {
        bytes.extend_from_slice(&(dim as i32).to_le_bytes());
        row.iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    }
    std::fs::write(path, bytes)
}

/// The median of `reps` timings of `f`, in seconds.
fn median(reps: usize, mut f: impl FnMut(usize) -> flashdot::Result<()>) -> flashdot::Result<f64> {
    let mut t = Vec::with_capacity(reps);
    for i in 0..reps {
        let s = Instant::now();
        f(i)?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[reps / 2])
}

fn main() -> flashdot::Result<()> {
    let a = Args::parse();
    let d = a.dim;
    let metric = match a.metric {
        MetricArg::Ip => Metric::InnerProduct,
        MetricArg::Cosine => Metric::Cosine,
        MetricArg::L2 => Metric::L2,
    };
    let storage = match a.storage {
        StorageArg::F32 => Storage::F32,
        StorageArg::F16 => Storage::F16,
        StorageArg::Int8 => Storage::Int8,
    };
    let ctx = flashdot::Context::new()?;
    println!("adapter: {}", ctx.info().name);
    let scale: Vec<f32> = (0..d).map(|j| (1.0 + j as f32).powf(-0.5)).collect();
    let mut r = Rng(7);
    let centres: Vec<f32> = (0..a.clusters * d)
        .map(|i| scale[i % d] * r.normal())
        .collect();
    let corpus = draw(&mut r, a.n, &centres, &scale, a.spread);
    let queries = draw(&mut r, a.batch.max(31), &centres, &scale, a.spread);
    let (batch, one) = (&queries[..a.batch * d], |i: usize| {
        &queries[i * d..(i + 1) * d]
    });
    if let Some(dir) = &a.write {
        let io = |e: std::io::Error| flashdot::Error::InvalidArgument {
            op: "ivf_curve",
            detail: format!("writing {}: {e}", dir.display()),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        write_fvecs(&dir.join("corpus.fvecs"), &corpus, d).map_err(io)?;
        write_fvecs(&dir.join("queries.fvecs"), batch, d).map_err(io)?;
    }
    println!(
        "corpus: {} x {d}, {} clusters, spread {}; queries: {}",
        a.n, a.clusters, a.spread, a.batch
    );

    let mut flat = FlatIndex::new(&ctx, d, IndexOptions::default().metric(metric))?;
    for part in corpus.chunks(50_000 * d) {
        flat.add(part)?;
    }
    // Warm: the first call of each kernel compiles it.
    flat.search(one(0), 10)?;
    flat.search(batch, 10)?;
    let t = Instant::now();
    let exact = flat.search(batch, 10)?;
    let flat_batch = t.elapsed().as_secs_f64();
    let flat_one = median(11, |i| flat.search(one(i), 10).map(|_| ()))?;
    println!(
        "flat f32: 1 query {:.2} ms ({:.1} q/s); batch {:.0} ms ({:.0} q/s)",
        flat_one * 1e3,
        1.0 / flat_one,
        flat_batch * 1e3,
        a.batch as f64 / flat_batch
    );

    let km = KMeansOptions::default()
        .niter(a.niter)
        .max_points_per_centroid(a.points_per_list);
    let opts = IvfOptions::new(a.nlist)
        .metric(metric)
        .storage(storage)
        .kmeans(km);
    let mut ivf = IvfIndex::new(&ctx, d, opts)?;
    let t = Instant::now();
    ivf.train(&corpus)?;
    let train = t.elapsed().as_secs_f64();
    if let Some(tr) = ivf.training() {
        println!(
            "train: {} lists in {train:.1} s ({} iterations, {} points a list), objective {:.6e}, imbalance {:.3}",
            a.nlist,
            a.niter,
            a.points_per_list,
            tr.objective.last().copied().unwrap_or(f64::NAN),
            tr.imbalance
        );
    }
    let t = Instant::now();
    ivf.add(&corpus)?;
    println!(
        "add: {:.1} s, list imbalance {:.3}",
        t.elapsed().as_secs_f64(),
        ivf.imbalance()
    );
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
        flat.bytes() as f64 / (1 << 20) as f64,
        ivf.bytes() as f64 / (1 << 20) as f64,
        hwm.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
    println!(
        "nprobe  recall@10  1-query ms (x flat)  grouped batch ms (x flat)  ungrouped batch ms"
    );
    for &np in a.nprobe.iter().filter(|&&p| p <= a.nlist) {
        let p = IvfSearchParams::nprobe(np);
        // Warm every kernel this nprobe uses.
        ivf.search_with(one(0), 10, p)?;
        for g in [true, false] {
            ivf.search_with(batch, 10, p.group_queries(g))?;
        }
        let t = Instant::now();
        let got = ivf.search_with(batch, 10, p.group_queries(true))?;
        let grouped = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ivf.search_with(batch, 10, p.group_queries(false))?;
        let ungrouped = t.elapsed().as_secs_f64();
        let single = median(31, |i| ivf.search_with(one(i), 10, p).map(|_| ()))?;
        let hits: usize = got
            .ids
            .chunks(10)
            .zip(exact.ids.chunks(10))
            .map(|(g, e)| g.iter().filter(|x| e.contains(x)).count())
            .sum();
        println!(
            "{np:6}  {:9.3}  {:9.2} ({:5.1}x)  {:8.1} ({:5.1}x)  {:8.1}",
            hits as f64 / exact.ids.len() as f64,
            single * 1e3,
            flat_one / single,
            grouped * 1e3,
            flat_batch / grouped,
            ungrouped * 1e3
        );
    }
    Ok(())
}
