//! Semantic-search demo. By default builds a deterministic synthetic corpus of
//! 500,000 × 768 normalised vectors with cluster structure, indexes it, searches
//! queries drawn near known items, prints the top-k with scores and timings, and
//! checks one query against the CPU reference. With a path it loads a real corpus
//! instead: `.npy` (f32 [n, d], C order) or `.fvecs` (the ANN benchmarks' format).
//!
//! `--index ivf --nlist N --nprobe P` builds an inverted-file index instead
//! (k-means-trained lists, `nprobe` of them scanned per query) and prints its
//! training time and its recall@k against the flat index beside queries/s.
//! Every index is held as a `Box<dyn Index>`: the flat, sharded and IVF runs
//! share every step but the build.

#[path = "common/mod.rs"]
mod common;
#[path = "common/search_args.rs"]
mod search_args;
#[path = "common/vectors.rs"]
mod vectors;

use std::time::Instant;

use clap::{Parser, ValueEnum};
use flashdot::ops::search::{
    FlatIndex, Index, IndexOptions, IvfIndex, IvfOptions, KMeansOptions, SearchResult,
    ShardedIndex, Storage,
};
use flashdot::ops::similarity::Metric;
use flashdot::reference;
use search_args::{MetricArg, StorageArg};

/// The index type.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum IndexArg {
    /// Exact: every query against every vector.
    Flat,
    /// Inverted file: k-means lists, `--nprobe` of them scanned per query.
    Ivf,
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
    /// Index type: exact (flat), or an inverted file (ivf) trained by
    /// k-means on the corpus, whose recall is measured against a flat index.
    #[arg(long, value_enum, default_value_t = IndexArg::Flat)]
    index: IndexArg,
    /// IVF lists [default: √n, at least 1].
    #[arg(long)]
    nlist: Option<usize>,
    /// IVF lists scanned per query [default: 8, at most nlist].
    #[arg(long)]
    nprobe: Option<usize>,
    /// IVF training: k-means iterations [default: 25, FAISS's].
    #[arg(long)]
    niter: Option<usize>,
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
    let opts = IndexOptions::default().metric(metric).storage(storage);
    let index = open_index(a, &ctx, &corpus, d, opts)?;
    let exact = match a.index {
        IndexArg::Ivf => Some(exact_index(&ctx, &corpus, d, opts)?),
        IndexArg::Flat => None,
    };
    let (sources, queries) = make_queries(&corpus, d, a.batch);
    let mut bench = Bench {
        index,
        exact,
        queries,
        n: corpus.len() / d,
        d,
        k: a.k,
    };
    bench.warm_up()?;
    bench.print_queries(&sources)?;
    let one = bench.time_m1(a.batch)?;
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
    let storage = Storage::from(a.storage);
    let metric = Metric::from(a.metric);
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
    if a.index == IndexArg::Ivf && (a.shards > 1 || a.save.is_some() || a.load.is_some()) {
        return Err(
            "--shards, --save and --load take a flat index: use them with --index flat".into(),
        );
    }
    if a.index == IndexArg::Flat && (a.nlist.is_some() || a.nprobe.is_some() || a.niter.is_some()) {
        return Err(
            "--nlist, --nprobe and --niter set up an IVF index: use them with --index ivf".into(),
        );
    }
    Ok((storage, metric))
}

/// The index: loaded from `--load` (which must hold this corpus's shape), or
/// built from the corpus (flat on one context or `--shards` of them, or IVF).
/// Prints its settings, device size and build or load time, then where
/// `--save` wrote it.
fn open_index(
    a: &Args,
    ctx: &flashdot::Context,
    corpus: &[f32],
    d: usize,
    opts: IndexOptions,
) -> Result<Box<dyn Index>, String> {
    let n = corpus.len() / d;
    let t = Instant::now();
    let mut saved = None;
    let (index, kind, how, secs): (Box<dyn Index>, String, &str, f64) = match (&a.load, a.index) {
        (Some(p), _) => {
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
            let secs = t.elapsed().as_secs_f64();
            (Box::new(ix), "1 shard(s)".into(), "loaded", secs)
        }
        (None, IndexArg::Ivf) => {
            let (ix, kind) = build_ivf(a, ctx, corpus, d, opts)?;
            (ix, kind, "built", t.elapsed().as_secs_f64())
        }
        (None, IndexArg::Flat) if a.shards > 1 => {
            let ctxs = (0..a.shards)
                .map(|_| common::context(a.backend))
                .collect::<Result<Vec<_>, _>>()
                .map_err(msg)?;
            let mut ix = ShardedIndex::new(&ctxs, d, opts).map_err(msg)?;
            fill(&mut ix, corpus, d)?;
            let kind = format!("{} shard(s)", a.shards);
            (Box::new(ix), kind, "built", t.elapsed().as_secs_f64())
        }
        (None, IndexArg::Flat) => {
            let mut ix = FlatIndex::new(ctx, d, opts).map_err(msg)?;
            fill(&mut ix, corpus, d)?;
            let secs = t.elapsed().as_secs_f64();
            // Saved before it goes behind the trait (files are the flat
            // index's own API); reported after the index line.
            if let Some(p) = &a.save {
                saved = Some(save_index(p, &ix)?);
            }
            (Box::new(ix), "1 shard(s)".into(), "built", secs)
        }
    };
    println!(
        "index: {:?}, {:?}, {kind}, {:.0} MiB on the device ({how} in {secs:.1} s)",
        opts.storage,
        opts.metric,
        index.bytes() as f64 / (1 << 20) as f64,
    );
    if let Some(line) = saved {
        println!("{line}");
    }
    Ok(index)
}

/// Adds `corpus` to `ix` in chunks of 50,000 rows with a progress bar.
fn fill(ix: &mut dyn Index, corpus: &[f32], d: usize) -> Result<(), String> {
    let bar = common::progress(corpus.len() / d, "indexing");
    for part in corpus.chunks(50_000 * d) {
        ix.add(part).map_err(msg)?;
        bar.inc((part.len() / d) as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// An IVF index over `corpus`: trained by k-means on the corpus (of a
/// sample of at most 256 points per list, as FAISS trains), then filled.
/// Prints the training; returns the index and its description for the
/// index line.
fn build_ivf(
    a: &Args,
    ctx: &flashdot::Context,
    corpus: &[f32],
    d: usize,
    opts: IndexOptions,
) -> Result<(Box<dyn Index>, String), String> {
    let n = corpus.len() / d;
    let nlist = a
        .nlist
        .unwrap_or_else(|| ((n as f64).sqrt().round() as usize).max(1));
    let nprobe = a.nprobe.unwrap_or(8.min(nlist));
    let mut km = KMeansOptions::default();
    if let Some(niter) = a.niter {
        km = km.niter(niter);
    }
    let ivf_opts = IvfOptions::new(nlist)
        .metric(opts.metric)
        .storage(opts.storage)
        .nprobe(nprobe)
        .kmeans(km);
    let mut ix = IvfIndex::new(ctx, d, ivf_opts).map_err(msg)?;
    let t = Instant::now();
    {
        let _spin = common::wait(format!("training: k-means into {nlist} lists"));
        ix.train(corpus).map_err(msg)?;
    }
    let train_s = t.elapsed().as_secs_f64();
    if let Some(km) = ix.training() {
        println!(
            "train: k-means of {} x {d} into {nlist} lists in {train_s:.2} s ({} iterations, \
             objective {:.6e}, imbalance {:.2})",
            km.sample.as_ref().map_or(n, Vec::len),
            km.objective.len(),
            km.objective.last().copied().unwrap_or(f64::NAN),
            km.imbalance
        );
    }
    fill(&mut ix, corpus, d)?;
    let kind = format!(
        "IVF {nlist} lists, nprobe {nprobe} (list imbalance {:.2})",
        ix.imbalance()
    );
    Ok((Box::new(ix), kind))
}

/// The flat index of the same corpus and options, for the IVF index's
/// recall; prints its size and build time.
fn exact_index(
    ctx: &flashdot::Context,
    corpus: &[f32],
    d: usize,
    opts: IndexOptions,
) -> Result<Box<dyn Index>, String> {
    let t = Instant::now();
    let mut ix = FlatIndex::new(ctx, d, opts).map_err(msg)?;
    fill(&mut ix, corpus, d)?;
    println!(
        "flat index for the recall: {:?}, {:?}, {:.0} MiB on the device (built in {:.1} s)",
        opts.storage,
        opts.metric,
        ix.bytes() as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    Ok(Box::new(ix))
}

/// Writes `ix` to `path`; returns the line that reports the file's size and
/// the time taken.
fn save_index(path: &std::path::Path, ix: &FlatIndex) -> Result<String, String> {
    let t = Instant::now();
    ix.save(path).map_err(msg)?;
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    Ok(format!(
        "saved to {}: {:.0} MiB in {:.2} s",
        path.display(),
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    ))
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
    index: Box<dyn Index>,
    /// With `--index ivf`: the flat index of the same corpus and options,
    /// whose results the IVF ones are scored against.
    exact: Option<Box<dyn Index>>,
    queries: Vec<f32>,
    /// Corpus rows.
    n: usize,
    d: usize,
    k: usize,
}

/// Queries searched one at a time for the m=1 recall (each a whole m=1
/// search: a few, so the flat index's answers come from one batch).
const RECALL_M1: usize = 64;

/// Recall@k of `got` against `want` (`[m, k]` ids each): the share of
/// `want`'s ids (−1 padding aside) that `got` found in the same row.
fn recall(got: &[i64], want: &[i64], k: usize) -> f64 {
    let (mut hits, mut total) = (0, 0);
    for (g, w) in got.chunks(k).zip(want.chunks(k)) {
        for id in w.iter().filter(|&&id| id >= 0) {
            total += 1;
            hits += usize::from(g.contains(id));
        }
    }
    hits as f64 / total.max(1) as f64
}

impl Bench {
    /// The first query's top-k.
    fn search_first(&self) -> Result<SearchResult, String> {
        self.index
            .search(&self.queries[..self.d], self.k)
            .map_err(msg)
    }

    /// Seconds per first-query search of `ix`, over [`REPS`] searches.
    fn mean_m1(&self, ix: &dyn Index) -> Result<f64, String> {
        let t = Instant::now();
        for _ in 0..REPS {
            ix.search(&self.queries[..self.d], self.k).map_err(msg)?;
        }
        Ok(t.elapsed().as_secs_f64() / REPS as f64)
    }

    /// The first search compiles the m=1 kernels: untimed, behind a spinner.
    fn warm_up(&self) -> Result<(), String> {
        let _spin = common::wait("first search (compiles its kernels)");
        self.search_first()?;
        if let Some(exact) = &self.exact {
            exact.search(&self.queries[..self.d], self.k).map_err(msg)?;
        }
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

    /// Times and prints the m=1 search; returns its seconds per query. With
    /// a flat index to compare with, also its recall over up to
    /// [`RECALL_M1`] of the `batch` queries, each searched alone, and the
    /// flat index's m=1 time.
    fn time_m1(&self, batch: usize) -> Result<f64, String> {
        let one = self.mean_m1(&*self.index)?;
        let Some(exact) = &self.exact else {
            let bytes = self.index.bytes() as f64;
            println!(
                "m=1: {:.1} ms/query, {:.0} queries/s, {:.2} GB/s of corpus scanned",
                one * 1e3,
                1.0 / one,
                bytes / one / 1e9
            );
            return Ok(one);
        };
        let (d, k) = (self.d, self.k);
        let m = batch.min(RECALL_M1);
        let spin = common::wait(format!("recall of {m} single-query searches"));
        let mut got = Vec::with_capacity(m * k);
        for q in self.queries[..m * d].chunks_exact(d) {
            got.extend(self.index.search(q, k).map_err(msg)?.ids);
        }
        let want = exact.search(&self.queries[..m * d], k).map_err(msg)?.ids;
        let flat_one = self.mean_m1(&**exact)?;
        spin.finish_and_clear();
        println!(
            "m=1: {:.1} ms/query, {:.0} queries/s, recall@{k} {:.3} over {m} queries against \
             the flat index ({:.1} ms/query there: {:.1}x its queries/s)",
            one * 1e3,
            1.0 / one,
            recall(&got, &want, k),
            flat_one * 1e3,
            flat_one / one
        );
        Ok(one)
    }

    /// Seconds of one batched search of the first `m` queries on `ix`, after
    /// an untimed one of up to 64 that builds the batched kernels (per
    /// query-block size) so that their compile is not timed; and its ids.
    fn timed_batch(&self, ix: &dyn Index, m: usize) -> Result<(f64, Vec<i64>), String> {
        let d = self.d;
        ix.search(&self.queries[..m.min(64) * d], self.k)
            .map_err(msg)?;
        let t = Instant::now();
        let r = ix.search(&self.queries[..m * d], self.k).map_err(msg)?;
        Ok((t.elapsed().as_secs_f64(), r.ids))
    }

    /// Times and prints one batched search of `m` queries against `one`, the
    /// m=1 seconds per query; with a flat index to compare with, also the
    /// batch's recall and the flat index's batch time.
    fn time_batched(&self, m: usize, one: f64) -> Result<(), String> {
        let spin = common::wait(format!(
            "batched search of {m} queries (compiles its kernels first)"
        ));
        let (bt, got) = self.timed_batch(&*self.index, m)?;
        let line = format!(
            "m={m}: {:.1} ms/batch, {:.0} queries/s ({:.1}x m=1)",
            bt * 1e3,
            m as f64 / bt,
            m as f64 / bt * one
        );
        let Some(exact) = &self.exact else {
            spin.finish_and_clear();
            println!("{line}");
            return Ok(());
        };
        let (ft, want) = self.timed_batch(&**exact, m)?;
        spin.finish_and_clear();
        println!(
            "{line}, recall@{} {:.3} against the flat index ({:.0} queries/s there: {:.1}x)",
            self.k,
            recall(&got, &want, self.k),
            m as f64 / ft,
            ft / bt
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
        self.index.search_filtered(q, k, &allow).map_err(msg)?;
        let t = Instant::now();
        let mut got = None;
        for _ in 0..REPS {
            got = Some(self.index.search_filtered(q, k, &allow).map_err(msg)?);
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
    /// rows) and prints the agreement; a flat f32 index must agree on every
    /// id.
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
        // IVF is approximate: its recall is measured against the flat index.
        if storage == Storage::F32 && self.exact.is_none() && overlap != k {
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
        let after = self.mean_m1(&*self.index)?;
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
