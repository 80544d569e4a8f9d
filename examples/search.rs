//! Semantic-search demo. By default builds a deterministic synthetic corpus of
//! 500,000 × 768 normalised vectors with cluster structure, indexes it, searches
//! queries drawn near known items, prints the top-k with scores and timings, and
//! checks one query against the CPU reference. With a path it loads a real corpus
//! instead: `.npy` (f32 [n, d], C order) or `.fvecs` (the ANN benchmarks' format).

#[path = "common/mod.rs"]
mod common;
#[path = "common/vectors.rs"]
mod vectors;

use std::time::Instant;

use clap::{Parser, ValueEnum};
use flashdot::ops::search::{FlatIndex, IndexOptions, SearchResult, ShardedIndex, Storage};
use flashdot::ops::similarity::Metric;
use flashdot::reference;

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

/// One index, or one split over several contexts.
enum Index {
    One(FlatIndex),
    Shards(ShardedIndex),
}

impl Index {
    fn add(&mut self, x: &[f32]) -> flashdot::Result<()> {
        match self {
            Index::One(i) => i.add(x),
            Index::Shards(i) => i.add(x),
        }
    }
    fn search(&self, q: &[f32], k: usize) -> flashdot::Result<SearchResult> {
        match self {
            Index::One(i) => i.search(q, k),
            Index::Shards(i) => i.search(q, k),
        }
    }
    fn search_filtered(
        &self,
        q: &[f32],
        k: usize,
        allow: impl Fn(u64) -> bool + Sync,
    ) -> flashdot::Result<SearchResult> {
        match self {
            Index::One(i) => i.search_filtered(q, k, allow),
            Index::Shards(i) => i.search_filtered(q, k, allow),
        }
    }
    fn remove_ids(&mut self, ids: &[u64]) -> flashdot::Result<usize> {
        match self {
            Index::One(i) => i.remove_ids(ids),
            Index::Shards(i) => i.remove_ids(ids),
        }
    }
    /// Waits for every shard's device work.
    fn synchronize(&self) -> flashdot::Result<()> {
        match self {
            Index::One(i) => i.context().synchronize(),
            Index::Shards(i) => i
                .shards()
                .iter()
                .try_for_each(|s| s.context().synchronize()),
        }
    }
    fn bytes(&self) -> u64 {
        match self {
            Index::One(i) => i.bytes(),
            Index::Shards(i) => i.shards().iter().map(FlatIndex::bytes).sum(),
        }
    }
}

#[derive(Parser)]
#[command(about = "flashdot search demo: exact top-k over a large embedding corpus")]
struct Args {
    /// Corpus file (.npy f32 [n, d] or .fvecs); default: synthetic.
    path: Option<std::path::PathBuf>,
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    /// Synthetic corpus size [default: 500000; 200000 on a software adapter].
    #[arg(long)]
    n: Option<usize>,
    /// Synthetic dimension.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Storage type of the index.
    #[arg(long, value_enum, default_value_t = StorageArg::F16)]
    storage: StorageArg,
    /// Queries in the batched-throughput measurement.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Similarity.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    metric: MetricArg,
    /// Split the index over this many contexts (GPUs; on one adapter, several
    /// contexts of it).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Write the index to this file after building it.
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    /// Search the index saved in this file instead of building one (the
    /// corpus is still generated or read, for the queries and the check).
    #[arg(long)]
    load: Option<std::path::PathBuf>,
    /// Also search with a random allow-list of this share of the ids (a
    /// filter applied inside the scan).
    #[arg(long)]
    filter: Option<f64>,
    /// At the end, remove this share of the vectors (compacted on the
    /// device) and time it.
    #[arg(long, default_value_t = 0.0)]
    remove: f64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
    fn gauss(&mut self) -> f32 {
        (self.next() + self.next() + self.next() + self.next()) * 1.7
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Items are noisy copies of 2,000 cluster centres.
fn synthetic(n: usize, d: usize) -> Vec<f32> {
    let mut r = Rng(0x5EED);
    let centres: Vec<f32> = (0..2000 * d).map(|_| r.gauss()).collect();
    let mut out = Vec::with_capacity(n * d);
    let bar = common::progress(n, "generating the corpus");
    for i in 0..n {
        let c = (i * 7919) % 2000;
        let start = out.len();
        for j in 0..d {
            out.push(centres[c * d + j] + 0.6 * r.gauss());
        }
        normalize(&mut out[start..]);
        if (i + 1) % 4096 == 0 {
            bar.set_position(i as u64 + 1);
        }
    }
    out
}

/// Timed repetitions of the m=1 search (and of the filtered and
/// post-removal ones), after one untimed warm-up.
const REPS: usize = 5;

/// A flashdot error as the demo's one-line message.
fn msg(e: flashdot::Error) -> String {
    e.to_string()
}

fn run(a: &Args) -> Result<(), String> {
    let ctx = common::open(a.backend).map_err(msg)?;
    let (corpus, d) = read_corpus(a, &ctx)?;
    let (storage, metric) = index_settings(a)?;
    let index = open_index(a, &ctx, &corpus, d, storage, metric)?;
    save_index(a, &index)?;
    let (sources, queries) = make_queries(&corpus, d, a.batch);
    let mut bench = Bench {
        index,
        queries,
        n: corpus.len() / d,
        d,
        k: a.k,
    };
    bench.warm_up()?;
    bench.print_queries(&sources)?;
    let one = bench.time_m1()?;
    bench.time_batched(a.batch, one)?;
    if let Some(share) = a.filter {
        bench.time_filtered(share, one)?;
    }
    let (cn, qn) = bench.check_reference(&corpus, storage, metric)?;
    cpu_baselines(&cn, &qn, d, one);
    if a.remove > 0.0 {
        bench.time_removal(a.remove)?;
    }
    Ok(())
}

/// The corpus (generated, or read from the path) as rows of `d` values;
/// prints its size and how long it took. Refuses empty inputs.
fn read_corpus(a: &Args, ctx: &flashdot::Context) -> Result<(Vec<f32>, usize), String> {
    let t = Instant::now();
    let (corpus, d) = match &a.path {
        Some(p) => {
            let _spin = common::wait(format!("reading {}", p.display()));
            vectors::load(p)?
        }
        None => {
            let mut sizes = common::Sizes::new(ctx);
            let n = sizes.pick("--n", a.n, 500_000, 200_000);
            sizes.report();
            (synthetic(n, a.dim), a.dim)
        }
    };
    if corpus.is_empty() || d == 0 || a.k == 0 || a.batch == 0 {
        return Err(
            "nothing to search: the corpus, --dim, --k and --batch must not be empty".into(),
        );
    }
    let n = corpus.len() / d;
    println!("corpus: {n} x {d} ({:.1} s)", t.elapsed().as_secs_f64());
    Ok((corpus, d))
}

/// The index's storage and metric from the flags, after checking the flags
/// that shape the run (shards, removal and filter shares, save/load).
fn index_settings(a: &Args) -> Result<(Storage, Metric), String> {
    let storage = match a.storage {
        StorageArg::F32 => Storage::F32,
        StorageArg::F16 => Storage::F16,
        StorageArg::Int8 => Storage::Int8,
    };
    let metric = match a.metric {
        MetricArg::Ip => Metric::InnerProduct,
        MetricArg::Cosine => Metric::Cosine,
        MetricArg::L2 => Metric::L2,
    };
    if a.shards == 0
        || !(0.0..1.0).contains(&a.remove)
        || a.filter.is_some_and(|f| !(f > 0.0 && f <= 1.0))
    {
        return Err(
            "--shards must be at least 1, --remove in [0, 1) and --filter in (0, 1]".into(),
        );
    }
    if a.shards > 1 && (a.save.is_some() || a.load.is_some()) {
        return Err("--save and --load take one index: use them with --shards 1".into());
    }
    Ok((storage, metric))
}

/// The index: loaded from `--load` (which must hold this corpus's shape), or
/// built from the corpus on one context or `--shards` of them. Prints its
/// settings, device size and build or load time.
fn open_index(
    a: &Args,
    ctx: &flashdot::Context,
    corpus: &[f32],
    d: usize,
    storage: Storage,
    metric: Metric,
) -> Result<Index, String> {
    let n = corpus.len() / d;
    let t = Instant::now();
    let index = match &a.load {
        Some(p) => {
            let _spin = common::wait(format!("loading {}", p.display()));
            let ix = FlatIndex::load(ctx, p).map_err(msg)?;
            if ix.dim() != d || ix.len() != n {
                return Err(format!(
                    "{} holds {} x {}, the corpus is {n} x {d}: pass the --n/--dim it was saved with",
                    p.display(),
                    ix.len(),
                    ix.dim()
                ));
            }
            Index::One(ix)
        }
        None => build_index(
            a,
            ctx,
            corpus,
            d,
            IndexOptions::default().metric(metric).storage(storage),
        )?,
    };
    println!(
        "index: {storage:?}, {metric:?}, {} shard(s), {:.0} MiB on the device ({} in {:.1} s)",
        a.shards,
        index.bytes() as f64 / (1 << 20) as f64,
        if a.load.is_some() { "loaded" } else { "built" },
        t.elapsed().as_secs_f64()
    );
    Ok(index)
}

/// A new index over `corpus`, added in chunks of 50,000 rows with a progress
/// bar.
fn build_index(
    a: &Args,
    ctx: &flashdot::Context,
    corpus: &[f32],
    d: usize,
    opts: IndexOptions,
) -> Result<Index, String> {
    let mut ix = if a.shards > 1 {
        let ctxs = (0..a.shards)
            .map(|_| common::context(a.backend))
            .collect::<Result<Vec<_>, _>>()
            .map_err(msg)?;
        Index::Shards(ShardedIndex::new(&ctxs, d, opts).map_err(msg)?)
    } else {
        Index::One(FlatIndex::new(ctx, d, opts).map_err(msg)?)
    };
    let bar = common::progress(corpus.len() / d, "indexing");
    for part in corpus.chunks(50_000 * d) {
        ix.add(part).map_err(msg)?;
        bar.inc((part.len() / d) as u64);
    }
    bar.finish_and_clear();
    Ok(ix)
}

/// Writes the index to `--save` (one index only) and prints the file's size
/// and the time taken.
fn save_index(a: &Args, index: &Index) -> Result<(), String> {
    if let (Some(p), Index::One(ix)) = (&a.save, index) {
        let t = Instant::now();
        ix.save(p).map_err(msg)?;
        let size = std::fs::metadata(p).map_or(0, |m| m.len());
        println!(
            "saved to {}: {:.0} MiB in {:.2} s",
            p.display(),
            size as f64 / (1 << 20) as f64,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Queries: known items plus noise, so each should find its source near the
/// top. Returns the source rows and the queries (`max(batch, 4)` rows of `d`).
fn make_queries(corpus: &[f32], d: usize, batch: usize) -> (Vec<usize>, Vec<f32>) {
    let n = corpus.len() / d;
    let mut r = Rng(42);
    let sources: Vec<usize> = (0..batch.max(4)).map(|i| (i * 104_729 + 17) % n).collect();
    let queries: Vec<f32> = sources
        .iter()
        .flat_map(|&s| {
            corpus[s * d..(s + 1) * d]
                .iter()
                .map(|v| v + 0.02 * r.gauss())
                .collect::<Vec<_>>()
        })
        .collect();
    (sources, queries)
}

/// The index under test with its queries: the timed steps of the demo.
struct Bench {
    index: Index,
    queries: Vec<f32>,
    /// Corpus rows.
    n: usize,
    d: usize,
    k: usize,
}

impl Bench {
    /// The first query's top-k.
    fn search_first(&self) -> Result<SearchResult, String> {
        self.index
            .search(&self.queries[..self.d], self.k)
            .map_err(msg)
    }

    /// Seconds per first-query search, over [`REPS`] searches.
    fn mean_m1(&self) -> Result<f64, String> {
        let t = Instant::now();
        for _ in 0..REPS {
            self.search_first()?;
        }
        Ok(t.elapsed().as_secs_f64() / REPS as f64)
    }

    /// The first search compiles the m=1 kernels: untimed, behind a spinner.
    fn warm_up(&self) -> Result<(), String> {
        let _spin = common::wait("first search (compiles its kernels)");
        self.search_first()?;
        Ok(())
    }

    /// Prints the top-k of the first three queries with their latency.
    fn print_queries(&self, sources: &[usize]) -> Result<(), String> {
        let (d, k) = (self.d, self.k);
        for (qi, &src) in sources.iter().take(3).enumerate() {
            let t = Instant::now();
            let res = self
                .index
                .search(&self.queries[qi * d..(qi + 1) * d], k)
                .map_err(msg)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let list: Vec<String> = res
                .ids
                .iter()
                .zip(&res.scores)
                .map(|(i, s)| format!("{i}:{s:.3}"))
                .collect();
            println!(
                "query near item {src}: {ms:.1} ms  top-{k}: {}",
                list.join(" ")
            );
        }
        Ok(())
    }

    /// Times and prints the m=1 search; returns its seconds per query.
    fn time_m1(&self) -> Result<f64, String> {
        let one = self.mean_m1()?;
        let bytes = self.index.bytes() as f64;
        println!(
            "m=1: {:.1} ms/query, {:.0} queries/s, {:.2} GB/s of corpus scanned",
            one * 1e3,
            1.0 / one,
            bytes / one / 1e9
        );
        Ok(one)
    }

    /// Times and prints one batched search of `m` queries against `one`, the
    /// m=1 seconds per query.
    fn time_batched(&self, m: usize, one: f64) -> Result<(), String> {
        let d = self.d;
        // Warm-up: builds the batched kernels (per query-block size) so that
        // their compile is not timed.
        let spin = common::wait(format!(
            "batched search of {m} queries (compiles its kernels first)"
        ));
        self.index
            .search(&self.queries[..m.min(64) * d], self.k)
            .map_err(msg)?;
        let t = Instant::now();
        self.index
            .search(&self.queries[..m * d], self.k)
            .map_err(msg)?;
        let bt = t.elapsed().as_secs_f64();
        spin.finish_and_clear();
        println!(
            "m={m}: {:.1} ms/batch, {:.0} queries/s ({:.1}x m=1)",
            bt * 1e3,
            m as f64 / bt,
            m as f64 / bt * one
        );
        Ok(())
    }

    /// Times and prints the m=1 search with a random allow-list keeping
    /// `share` of the ids, against the unfiltered `one`.
    fn time_filtered(&self, share: f64, one: f64) -> Result<(), String> {
        let (d, k) = (self.d, self.k);
        // A random allow-list: ids whose hash falls below the share.
        let allow = |id: u64| {
            let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
            (h as f64 / (1u64 << 53) as f64) < share
        };
        let passing = (0..self.n as u64).filter(|&id| allow(id)).count();
        let q = &self.queries[..d];
        self.index.search_filtered(q, k, allow).map_err(msg)?;
        let t = Instant::now();
        let mut got = None;
        for _ in 0..REPS {
            got = Some(self.index.search_filtered(q, k, allow).map_err(msg)?);
        }
        let ft = t.elapsed().as_secs_f64() / REPS as f64;
        let hits = got.map_or(0, |g| g.ids.iter().filter(|&&i| i >= 0).count());
        println!(
            "filter keeping {:.1}% ({passing} ids): m=1 {:.1} ms/query ({:.2}x unfiltered), {hits}/{k} results",
            100.0 * share,
            ft * 1e3,
            ft / one
        );
        Ok(())
    }

    /// Checks query 0 against the CPU reference (cosine = dot of normalised
    /// rows) and prints the agreement; an f32 index must agree on every id.
    /// Returns the host corpus and query 0 as compared (normalised for
    /// cosine), for the host baselines.
    fn check_reference(
        &self,
        corpus: &[f32],
        storage: Storage,
        metric: Metric,
    ) -> Result<(Vec<f32>, Vec<f32>), String> {
        let (d, k) = (self.d, self.k);
        let spin = common::wait("CPU reference and host baselines");
        let cosine = metric == Metric::Cosine;
        let qn: Vec<f32> = {
            let mut q = self.queries[..d].to_vec();
            if cosine {
                normalize(&mut q);
            }
            q
        };
        let cn: Vec<f32> = corpus
            .chunks_exact(d)
            .flat_map(|row| {
                let mut v = row.to_vec();
                if cosine {
                    normalize(&mut v);
                }
                v
            })
            .collect();
        let want = if metric == Metric::L2 {
            vec![l2_topk(&qn, &cn, d, k)]
        } else {
            reference::search::topk(&qn, &cn, d, k)
        };
        let got = self.search_first()?;
        let want_ids: Vec<i64> = want[0].iter().map(|x| x.1 as i64).collect();
        let overlap = got.ids.iter().filter(|i| want_ids.contains(i)).count();
        let max_err = got
            .scores
            .iter()
            .zip(&want[0])
            .map(|(g, w)| (*g as f64 - w.0).abs())
            .fold(0.0, f64::max);
        spin.finish_and_clear();
        println!(
            "CPU reference check, query 0: {overlap}/{k} ids agree, max score error {max_err:.2e}"
        );
        if storage == Storage::F32 && overlap != k {
            return Err("f32 index disagrees with the CPU reference".into());
        }
        Ok((cn, qn))
    }

    /// Removes every (1/`fraction`)-th id, spread over every chunk, times
    /// the compaction and the m=1 search after it, and prints both.
    fn time_removal(&mut self, fraction: f64) -> Result<(), String> {
        let n = self.n;
        let step = (1.0 / fraction).round().max(1.0) as usize;
        let gone: Vec<u64> = (0..n as u64).step_by(step).collect();
        let t = Instant::now();
        let removed = self.index.remove_ids(&gone).map_err(msg)?;
        self.index.synchronize().map_err(msg)?;
        let rt = t.elapsed().as_secs_f64();
        self.search_first()?;
        let after = self.mean_m1()?;
        println!(
            "removed {removed} vectors ({:.0}%) with compaction on the device in {:.2} s; m=1 search now {:.1} ms",
            100.0 * removed as f64 / n as f64,
            rt,
            after * 1e3
        );
        Ok(())
    }
}

/// The `k` nearest rows of `corpus` to `q` by squared L2 distance in f64,
/// nearest first, ties by the lower row: (distance, row).
fn l2_topk(q: &[f32], corpus: &[f32], d: usize, k: usize) -> Vec<(f64, u32)> {
    let mut all: Vec<(f64, u32)> = corpus
        .chunks_exact(d)
        .enumerate()
        .map(|(i, x)| {
            let dist = x
                .iter()
                .zip(q)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum();
            (dist, i as u32)
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    all
}

/// What the host CPU does with the same f32 corpus, one thread per core: a plain
/// read (the memory bandwidth the scan is compared to) and a dot-product scan
/// that keeps the best score (the single-threaded-per-core baseline).
fn cpu_baselines(corpus: &[f32], q: &[f32], d: usize, gpu_one: f64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = corpus.len() / d;
    let per = rows.div_ceil(threads) * d;
    let timed = |f: &(dyn Fn(&[f32]) -> f32 + Sync)| {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let r: f32 = std::thread::scope(|sc| {
                let hs: Vec<_> = corpus.chunks(per).map(|c| sc.spawn(move || f(c))).collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
            });
            std::hint::black_box(r);
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    };
    let read = timed(&|c: &[f32]| {
        let mut acc = [0.0f32; 16];
        for ch in c.chunks_exact(16) {
            for (a, x) in acc.iter_mut().zip(ch) {
                *a += x;
            }
        }
        acc.iter().sum()
    });
    let scan = timed(&|c: &[f32]| {
        let mut best = f32::NEG_INFINITY;
        for row in c.chunks_exact(d) {
            let mut acc = [0.0f32; 8];
            for (rc, qc) in row.chunks(8).zip(q.chunks(8)) {
                for ((a, x), y) in acc.iter_mut().zip(rc).zip(qc) {
                    *a += x * y;
                }
            }
            best = best.max(acc.iter().sum());
        }
        best
    });
    let bytes = (rows * d * 4) as f64;
    println!(
        "host, {threads} threads over the f32 corpus: memory read {:.1} GB/s; dot scan {:.1} ms ({:.1} GB/s); this index's m=1 search: {:.1} ms",
        bytes / read / 1e9,
        scan * 1e3,
        bytes / scan / 1e9,
        gpu_one * 1e3
    );
}

fn main() {
    env_logger::init();
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
