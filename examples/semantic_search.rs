//! Semantic search with all-MiniLM-L6-v2 on flashdot: embeds a real corpus
//! (the Python documentation and license texts this machine ships, one
//! sentence per line in `models/corpus.txt`, made by
//! `scripts/fetch-model.sh`), adds the embeddings to a `FlatIndex` straight
//! from the device tensor, then answers the queries given on the command
//! line with the top-k sentences, their scores and timings.
//!
//! `--index ivf [--nlist N] [--nprobe P]` answers from an inverted-file index
//! instead, trained by k-means on the corpus embeddings, and prints its
//! recall@10 against the flat index.
//!
//! `cargo run --release --example semantic_search -- "How do I open a file?" "license of the software"`

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use clap::{Parser, ValueEnum};
use flashdot::models::{default_model_dir, SentenceEncoder};
use flashdot::ops::search::{FlatIndex, Index, IndexOptions, IvfIndex, IvfOptions, Storage};
use flashdot::ops::similarity::Metric;
use flashdot::DType;

/// The index the queries are answered from.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum IndexArg {
    /// Exact: every query against every sentence.
    Flat,
    /// Inverted file: k-means lists, `--nprobe` of them scanned per query.
    Ivf,
}

#[derive(Parser)]
#[command(about = "semantic search over a real corpus with all-MiniLM-L6-v2 on flashdot")]
struct Args {
    /// Queries (default: three examples).
    queries: Vec<String>,
    /// The corpus: one sentence per line.
    #[arg(long)]
    corpus: Option<std::path::PathBuf>,
    /// Embed only N sentences, taken evenly across the corpus [default: all;
    /// 500 on a software adapter, where all 2,668 take minutes].
    #[arg(long)]
    limit: Option<usize>,
    /// Results per query.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Weights and activations.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: common::FloatType,
    /// The checkpoint folder (default: models/all-MiniLM-L6-v2, or FLASHDOT_MODEL_DIR).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    /// Also measure recall@10 of f16 and int8 indexes against the exact f32
    /// index, every corpus sentence a query (its own entry left out).
    #[arg(long)]
    recall: bool,
    /// Answer from the exact flat index, or from an IVF index trained on the
    /// corpus embeddings (its recall@10 against the flat one is printed).
    #[arg(long, value_enum, default_value_t = IndexArg::Flat)]
    index: IndexArg,
    /// IVF lists [default: √n, at least 1].
    #[arg(long)]
    nlist: Option<usize>,
    /// IVF lists scanned per query [default: 8, at most nlist].
    #[arg(long)]
    nprobe: Option<usize>,
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let dtype = DType::from(a.dtype);
    if a.batch == 0 || a.k == 0 {
        return Err("--batch and --k must be at least 1".into());
    }
    if a.index == IndexArg::Flat && (a.nlist.is_some() || a.nprobe.is_some()) {
        return Err("--nlist and --nprobe set up an IVF index: use them with --index ivf".into());
    }
    let dir = a.model.clone().unwrap_or_else(default_model_dir);
    let corpus_path = a
        .corpus
        .clone()
        .unwrap_or_else(|| dir.parent().unwrap_or(&dir).join("corpus.txt"));
    let text = std::fs::read_to_string(&corpus_path).map_err(|e| {
        format!(
            "{}: {e} (make it with `bash scripts/fetch-model.sh`, or pass --corpus)",
            corpus_path.display()
        )
    })?;
    let mut corpus: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let ctx = common::open(a.backend)?;
    let mut sizes = common::Sizes::new(&ctx);
    let limit = sizes.pick("--limit", a.limit, usize::MAX, 500);
    sizes.report();
    if limit < corpus.len() {
        // Evenly spaced, so that every part of the corpus keeps its share.
        let n = corpus.len();
        corpus = (0..limit).map(|i| corpus[i * n / limit]).collect();
    }
    if corpus.is_empty() {
        return Err(format!("{}: no sentences", corpus_path.display()).into());
    }
    let t = Instant::now();
    let enc = SentenceEncoder::load(&ctx, &dir, dtype)?;
    println!(
        "model {} ({dtype}) loaded in {:.2} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );

    let (flat, host) = embed_corpus(&enc, &corpus, &corpus_path, a)?;
    let ivf = match a.index {
        IndexArg::Ivf => Some(build_ivf(&ctx, &host, enc.dim(), a)?),
        IndexArg::Flat => None,
    };
    // The one line that picks the index the queries see.
    let index: &dyn Index = match &ivf {
        Some(ivf) => ivf,
        None => &flat,
    };
    answer(&enc, index, &corpus, &queries(a), a.k)?;
    let d = enc.dim();
    if let Some(ivf) = &ivf {
        let hits = recall_of(&top10(ivf, &host, d)?, &top10(&flat, &host, d)?);
        println!(
            "recall@10 of the IVF index against the flat index, {} queries (each sentence, \
             itself left out): {hits:.4}",
            corpus.len()
        );
    }
    if a.recall {
        recall(&ctx, &flat, &host, d)?;
    }
    Ok(())
}

/// An IVF index of the corpus embeddings `host` (`[n, d]`, ids their corpus
/// positions, as the flat index's): trained by k-means on them (at most 256
/// per list sampled, as FAISS trains), then added. Prints the training and
/// the add times.
fn build_ivf(
    ctx: &flashdot::Context,
    host: &[f32],
    d: usize,
    a: &Args,
) -> Result<IvfIndex, Box<dyn std::error::Error>> {
    let n = host.len() / d;
    let nlist = a
        .nlist
        .unwrap_or_else(|| ((n as f64).sqrt().round() as usize).max(1));
    let nprobe = a.nprobe.unwrap_or(8.min(nlist));
    let opts = IvfOptions::new(nlist).metric(Metric::Cosine).nprobe(nprobe);
    let mut ivf = IvfIndex::new(ctx, d, opts)?;
    let t = Instant::now();
    {
        let _spin = common::wait(format!(
            "training the IVF index: k-means into {nlist} lists"
        ));
        ivf.train(host)?;
    }
    let train_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ids: Vec<u64> = (0..n as u64).collect();
    ivf.add_with_ids(host, &ids)?;
    ctx.synchronize()?;
    println!(
        "IVF index: {nlist} lists, nprobe {nprobe}; trained in {train_s:.2} s (k-means of {n} x {d}), \
         {n} embeddings added in {:.3} s (list imbalance {:.2})",
        t.elapsed().as_secs_f64(),
        ivf.imbalance()
    );
    Ok(ivf)
}

/// The corpus (read from `source`) embedded `a.batch` sentences at a time into a cosine
/// `FlatIndex` (ids: corpus positions), with the embeddings on the host in
/// corpus order when `--recall` or `--index ivf` wants them (else empty).
fn embed_corpus(
    enc: &SentenceEncoder,
    corpus: &[&str],
    source: &std::path::Path,
    a: &Args,
) -> Result<(FlatIndex, Vec<f32>), Box<dyn std::error::Error>> {
    let ctx = enc.context();
    // Sentences sorted by length share batches with their peers (little
    // padding), as sentence-transformers does; ids keep the corpus order.
    let mut order: Vec<usize> = (0..corpus.len()).collect();
    order.sort_by_key(|&i| corpus[i].len());
    let mut index = FlatIndex::new(
        ctx,
        enc.dim(),
        IndexOptions::default().metric(Metric::Cosine),
    )?;
    let keep = a.recall || a.index == IndexArg::Ivf;
    let mut host = vec![0.0f32; if keep { corpus.len() * enc.dim() } else { 0 }];
    let t = Instant::now();
    let (mut embed_s, mut add_s) = (0.0, 0.0);
    let bar = common::progress(corpus.len(), "embedding the corpus");
    for chunk in order.chunks(a.batch) {
        let sentences: Vec<&str> = chunk.iter().map(|&i| corpus[i]).collect();
        let s = Instant::now();
        let e = enc.embed(&sentences)?;
        // Waits for the forward pass, so that the two steps are timed apart.
        ctx.synchronize()?;
        embed_s += s.elapsed().as_secs_f64();
        let s = Instant::now();
        // The ids are the sentences' corpus positions.
        let ids: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
        index.add_tensor_with_ids(&e, &ids)?;
        ctx.synchronize()?;
        add_s += s.elapsed().as_secs_f64();
        if keep {
            let d = enc.dim();
            for (row, &i) in e.to_vec::<f32>()?.chunks_exact(d).zip(chunk) {
                host[i * d..(i + 1) * d].copy_from_slice(row);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    ctx.synchronize()?;
    bar.finish_and_clear();
    let total = t.elapsed().as_secs_f64();
    println!(
        "corpus: {} sentences from {} embedded in {total:.2} s ({:.0} sentences/s; encoder calls {embed_s:.2} s, \
         index adds from the device tensors {add_s:.3} s)",
        corpus.len(),
        source.display(),
        corpus.len() as f64 / total
    );
    Ok((index, host))
}

/// The queries given, or three examples.
fn queries(a: &Args) -> Vec<String> {
    if a.queries.is_empty() {
        vec![
            "How do I open a file for reading?".into(),
            "What happens when an exception is not handled?".into(),
            "May I distribute modified copies of the program?".into(),
        ]
    } else {
        a.queries.clone()
    }
}

/// Prints the top `k` sentences of `corpus` for each query, with the
/// scores and the embedding and search times.
fn answer(
    enc: &SentenceEncoder,
    index: &dyn Index,
    corpus: &[&str],
    queries: &[String],
    k: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    for q in queries {
        let spin = common::wait(format!(
            "query '{q}': embedding (a new length compiles kernels)"
        ));
        let t = Instant::now();
        let qe = enc.embed(&[q.as_str()])?.to_vec::<f32>()?;
        spin.finish_and_clear();
        let embed_ms = t.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let r = index.search(&qe, k)?;
        let search_ms = s.elapsed().as_secs_f64() * 1e3;
        println!("\nquery: {q}   (embed {embed_ms:.1} ms + search {search_ms:.1} ms)");
        for (score, id) in r.scores.iter().zip(&r.ids) {
            let sentence = corpus[*id as usize];
            let short: String = sentence.chars().take(110).collect();
            let more = if short.len() < sentence.len() {
                "…"
            } else {
                ""
            };
            println!("  {score:.4}  {short}{more}");
        }
    }
    Ok(())
}

/// Each corpus embedding's top 10 in `ix` (ids are corpus positions), its
/// own entry left out: the queries of the recall measurements.
fn top10(ix: &dyn Index, host: &[f32], d: usize) -> flashdot::Result<Vec<Vec<i64>>> {
    let n = host.len() / d;
    let mut out = Vec::with_capacity(n);
    for (b, q) in host.chunks(256 * d).enumerate() {
        let r = ix.search(q, 11)?;
        for (i, row) in r.ids.chunks_exact(11).enumerate() {
            let me = (b * 256 + i) as i64;
            out.push(
                row.iter()
                    .copied()
                    .filter(|&id| id != me)
                    .take(10)
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// The share of `want`'s ids that `got` found in the same row.
fn recall_of(got: &[Vec<i64>], want: &[Vec<i64>]) -> f64 {
    let hits: usize = got
        .iter()
        .zip(want)
        .map(|(g, w)| g.iter().filter(|id| w.contains(id)).count())
        .sum();
    let total: usize = want.iter().map(Vec::len).sum();
    hits as f64 / total.max(1) as f64
}

/// Recall@10 of f16 and int8 storage against the exact f32 index on the
/// corpus's own embeddings, each one a query with its own entry left out.
fn recall(
    ctx: &flashdot::Context,
    exact: &FlatIndex,
    host: &[f32],
    d: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = host.len() / d;
    let want = top10(exact, host, d)?;
    let ids: Vec<u64> = (0..n as u64).collect();
    for storage in [Storage::F16, Storage::Int8] {
        let mut ix = FlatIndex::new(
            ctx,
            d,
            IndexOptions::default()
                .metric(Metric::Cosine)
                .storage(storage),
        )?;
        ix.add_with_ids(host, &ids)?;
        println!(
            "recall@10 of {storage:?} storage against exact f32, {n} queries (each sentence, \
             itself left out): {:.4}",
            recall_of(&top10(&ix, host, d)?, &want)
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
