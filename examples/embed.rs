//! Sentence embeddings with all-MiniLM-L6-v2 on flashdot: embeds the
//! sentences given as arguments (or one per line of `--file`), prints their
//! cosine similarity matrix to 4 decimals and the time each step took.
//! Needs the model: `bash scripts/fetch-model.sh`.
//!
//! `cargo run --release --example embed -- "The weather is lovely today." "It's so sunny outside!"`

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use clap::Parser;
use flashdot::models::{default_model_dir, SentenceEncoder};
use flashdot::DType;

#[derive(Parser)]
#[command(about = "all-MiniLM-L6-v2 sentence embeddings and their cosine similarities on flashdot")]
struct Args {
    /// Sentences to embed.
    sentences: Vec<String>,
    /// A file with one sentence per line (added after the arguments).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Weights and activations.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: common::FloatType,
    /// The checkpoint folder (default: models/all-MiniLM-L6-v2, or FLASHDOT_MODEL_DIR).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let dtype = DType::from(a.dtype);
    let mut sentences = a.sentences.clone();
    if let Some(f) = &a.file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        sentences.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    if sentences.is_empty() {
        sentences = vec![
            "The weather is lovely today.".into(),
            "It's so sunny outside!".into(),
            "He drove to the stadium.".into(),
        ];
        println!("no sentences given: embedding sentence-transformers' quickstart examples");
    }
    let t = Instant::now();
    let ctx = common::open(a.backend)?;
    let dir = a.model.clone().unwrap_or_else(default_model_dir);
    let spin = common::wait(format!("loading {} ({dtype})", dir.display()));
    let enc = SentenceEncoder::load(&ctx, &dir, dtype)?;
    spin.finish_and_clear();
    let load = t.elapsed();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let spin = common::wait(format!(
        "embedding {} sentences (first use compiles the kernels)",
        refs.len()
    ));
    let t = Instant::now();
    let batch = enc.tokenize(&refs)?;
    let e = enc.embed_batch(&batch)?.to_vec::<f32>()?;
    let first = t.elapsed();
    spin.finish_and_clear();
    let t = Instant::now();
    let again = enc.embed_batch(&batch)?.to_vec::<f32>()?;
    let warm = t.elapsed();
    assert_eq!(e.len(), again.len());
    let d = enc.dim();
    println!(
        "cosine similarity ({} sentences, {d}-dim, {dtype}):",
        refs.len()
    );
    for (i, s) in refs.iter().enumerate() {
        let row: Vec<String> = (0..refs.len())
            .map(|j| {
                let dot: f32 = e[i * d..(i + 1) * d]
                    .iter()
                    .zip(&e[j * d..(j + 1) * d])
                    .map(|(x, y)| x * y)
                    .sum();
                format!("{dot:7.4}")
            })
            .collect();
        println!(
            "{} | {}",
            row.join(" "),
            s.chars().take(60).collect::<String>()
        );
    }
    println!(
        "load {:.2} s; first embedding {:.2} s (with kernel compiles); warm {:.1} ms for {} sentences of ≤ {} tokens ({:.1} sentences/s)",
        load.as_secs_f64(),
        first.as_secs_f64(),
        warm.as_secs_f64() * 1e3,
        refs.len(),
        batch.seq,
        refs.len() as f64 / warm.as_secs_f64()
    );
    Ok(())
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
