//! Semantic search with all-MiniLM-L6-v2 on flashdot: embeds a real corpus
//! (the Python documentation and license texts this machine ships, one
//! sentence per line in `models/corpus.txt`, made by
//! `scripts/fetch-model.sh`), adds the embeddings to a `FlatIndex` straight
//! from the device tensor, then answers the queries given on the command
//! line with the top-k sentences, their scores and timings.
//!
//! `cargo run --release --example semantic_search -- "How do I open a file?" "license of the software"`

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use clap::Parser;
use flashdot::models::{default_model_dir, SentenceEncoder};
use flashdot::ops::search::{FlatIndex, IndexOptions, Storage};
use flashdot::ops::similarity::Metric;
use flashdot::DType;

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
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let dtype = DType::from(a.dtype);
    if a.batch == 0 || a.k == 0 {
        return Err("--batch and --k must be at least 1".into());
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

    let (index, host) = embed_corpus(&enc, &corpus, &corpus_path, a)?;
    answer(&enc, &index, &corpus, &queries(a), a.k)?;
    if a.recall {
        recall(&ctx, &index, &host, enc.dim())?;
    }
    Ok(())
}

/// The corpus (read from `source`) embedded `a.batch` sentences at a time into a cosine
/// `FlatIndex` (ids: corpus positions), with the embeddings on the host in
/// corpus order when `--recall` wants them (else empty).
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
    let mut host = vec![
        0.0f32;
        if a.recall {
            corpus.len() * enc.dim()
        } else {
            0
        }
    ];
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
        if a.recall {
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
    index: &FlatIndex,
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

/// Recall@10 of f16 and int8 storage against the exact f32 index on the
/// corpus's own embeddings, each one a query with its own entry left out.
fn recall(
    ctx: &flashdot::Context,
    exact: &FlatIndex,
    host: &[f32],
    d: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = host.len() / d;
    let top10 = |ix: &FlatIndex| -> flashdot::Result<Vec<Vec<i64>>> {
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
    };
    let want = top10(exact)?;
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
        let got = top10(&ix)?;
        let hits: usize = got
            .iter()
            .zip(&want)
            .map(|(g, w)| g.iter().filter(|id| w.contains(id)).count())
            .sum();
        let total: usize = want.iter().map(Vec::len).sum();
        println!(
            "recall@10 of {storage:?} storage against exact f32, {n} queries (each sentence, \
             itself left out): {:.4}",
            hits as f64 / total as f64
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
