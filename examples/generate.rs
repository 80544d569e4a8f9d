//! Generates text from a GPT-2-architecture checkpoint with flashdot's
//! inference attention: the prompts (each its own length) prefilled
//! together in chunks into a KV cache (paged by default, or contiguous),
//! then decoded together one token a step, every block's keys and values
//! appended with `kv_append`; the next token of each sequence is picked on
//! the device (greedy, or temperature and top-p sampling), so only the
//! chosen token ids are read back. Reads the checkpoint `train_gpt2` writes
//! (`vocab.json` beside it) or a Hugging Face GPT-2 folder with its
//! `tokenizer.json`. `--bench` measures prefill and decode throughput for 1
//! and 8 sequences, paged against contiguous.
//!
//! `cargo run --release --example generate -- --model models/gpt2-chars "def " "The license"`

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use flashdot::models::{CacheLayout, CharVocab, Gpt2, Gpt2Cache};
use flashdot::ops::sample::{sample, SampleOptions};
use flashdot::Tensor;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(about = "decode from a GPT-2-architecture checkpoint on flashdot, with a KV cache")]
struct Args {
    /// Prompts, decoded together (default: three).
    prompts: Vec<String>,
    /// The checkpoint folder (config.json, model.safetensors, and vocab.json
    /// or tokenizer.json).
    #[arg(long, default_value = "models/gpt2-chars")]
    model: PathBuf,
    /// New tokens per prompt (default: what the model's context leaves after
    /// the longest prompt).
    #[arg(long)]
    max_new: Option<usize>,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Nucleus sampling: the smallest set of likeliest tokens holding this
    /// much probability (1: all).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Prefill chunk: prompt tokens per sequence per call.
    #[arg(long, default_value_t = 16)]
    chunk: usize,
    /// The KV cache's layout.
    #[arg(long, value_enum, default_value = "paged")]
    cache: Cache,
    /// Rows per page of a paged cache.
    #[arg(long, default_value_t = 16)]
    page_size: usize,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measure prefill and decode tokens/s for 1 and 8 sequences, paged and
    /// contiguous, instead of printing text.
    #[arg(long)]
    bench: bool,
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
}

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
enum Cache {
    Paged,
    Contiguous,
}

/// The checkpoint's tokenizer: its characters, or a Hugging Face one.
enum Tokens {
    Chars(CharVocab),
    Hf(Box<tokenizers::Tokenizer>),
}

impl Tokens {
    fn load(dir: &Path) -> Result<Tokens, Box<dyn std::error::Error>> {
        if dir.join(CharVocab::FILE).exists() {
            return Ok(Tokens::Chars(CharVocab::load(dir)?));
        }
        let path = dir.join("tokenizer.json");
        let t = tokenizers::Tokenizer::from_file(&path).map_err(|e| {
            format!(
                "{}: {e} (a checkpoint needs vocab.json or tokenizer.json; train one with \
                 `cargo run --release --example train_gpt2`)",
                path.display()
            )
        })?;
        Ok(Tokens::Hf(Box::new(t)))
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
        Ok(match self {
            Tokens::Chars(v) => v.encode(text)?,
            Tokens::Hf(t) => t
                .encode(text, false)
                .map_err(|e| e.to_string())?
                .get_ids()
                .to_vec(),
        })
    }

    fn decode(&self, ids: &[u32]) -> Result<String, Box<dyn std::error::Error>> {
        Ok(match self {
            Tokens::Chars(v) => v.decode(ids)?,
            Tokens::Hf(t) => t.decode(ids, false).map_err(|e| e.to_string())?,
        })
    }
}

/// What one generation took.
struct Run {
    tokens: Vec<Vec<u32>>,
    prefill: Duration,
    decode: Duration,
}

/// How to decode: prefill chunk, new tokens, the picking of each.
struct Plan {
    chunk: usize,
    max_new: usize,
    opts: SampleOptions,
    /// Check the first chunk's logits against the f64 CPU reference.
    check: bool,
}

impl Plan {
    fn of(a: &Args, max_new: usize) -> Plan {
        Plan {
            chunk: a.chunk.max(1),
            max_new,
            opts: SampleOptions {
                temperature: a.temperature,
                top_p: a.top_p,
            },
            check: !a.bench,
        }
    }
}

/// The largest relative L2 error of each sequence's logits of its first
/// chunk (`logits [batch, s, vocab]`, from an empty cache) against the f64
/// reference forward over that chunk.
fn check_first(model: &Gpt2, chunks: &[&[u32]], logits: &Tensor) -> flashdot::Result<f64> {
    let weights = model
        .tensors()?
        .into_iter()
        .map(|t| (t.name, t.data))
        .collect();
    let (s, v) = (logits.shape()[1], logits.shape()[2]);
    let got = logits.to_vec::<f32>()?;
    let mut worst = 0.0f64;
    for (b, c) in chunks.iter().enumerate().filter(|(_, c)| !c.is_empty()) {
        let want =
            flashdot::reference::gpt2::forward(&weights, model.config(), c, 1, c.len()).logits;
        let got = &got[b * s * v..][..c.len() * v];
        worst = worst.max(flashdot::verify::compare(got, &want).rel_l2);
    }
    Ok(worst)
}

/// Prefills `prompts` in chunks, then decodes `max_new` tokens for each,
/// every next token picked on the device.
fn generate(
    model: &Gpt2,
    cache: &mut Gpt2Cache,
    prompts: &[Vec<u32>],
    a: &Plan,
    rng: &mut impl Rng,
) -> flashdot::Result<Run> {
    let opts = &a.opts;
    let ctx = model.context();
    let batch = prompts.len();
    let mut pick = |logits: &Tensor, rows: &[u32]| -> flashdot::Result<Vec<u32>> {
        let v = logits.shape()[2];
        let flat = logits.reshape(&[logits.shape()[0] * logits.shape()[1], v])?;
        let u: Vec<f32> = (0..rows.len()).map(|_| rng.random::<f32>()).collect();
        sample(&flat, rows, &u, opts)?.to_vec::<u32>()
    };
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let mut checking = Duration::ZERO;
    let t0 = Instant::now();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    for start in (0..longest).step_by(a.chunk) {
        let chunks: Vec<&[u32]> = prompts
            .iter()
            .map(|p| &p[start.min(p.len())..(start + a.chunk).min(p.len())])
            .collect();
        let logits = model.extend(cache, &chunks)?;
        if start == 0 && a.check {
            // The bound of tests/gpt2_decode.rs; not counted in the prefill.
            let t = Instant::now();
            let e = check_first(model, &chunks, &logits)?;
            checking = t.elapsed();
            if e > 1e-5 {
                return Err(flashdot::Error::InvalidArgument {
                    op: "generate",
                    detail: format!(
                        "the first chunk's logits differ from the f64 reference by relative L2 \
                         {e:.1e}"
                    ),
                });
            }
            println!("checked: the first prefill chunk's logits against the f64 CPU reference (relative L2 {e:.1e})");
        }
        let s = logits.shape()[1];
        // Every sequence's last new row (row 0 for one with none); a token
        // is kept for the sequences whose prompt ends in this chunk.
        let rows: Vec<u32> = chunks
            .iter()
            .enumerate()
            .map(|(b, c)| (b * s + c.len().max(1) - 1) as u32)
            .collect();
        let next = pick(&logits, &rows)?;
        for (b, p) in prompts.iter().enumerate() {
            if !p.is_empty() && (start..start + a.chunk).contains(&(p.len() - 1)) {
                out[b].push(next[b]);
            }
        }
    }
    ctx.synchronize()?;
    let prefill = t0.elapsed().saturating_sub(checking);
    let t1 = Instant::now();
    for _ in 1..a.max_new {
        let last: Vec<[u32; 1]> = out.iter().map(|o| [*o.last().unwrap_or(&0)]).collect();
        let slices: Vec<&[u32]> = last.iter().map(|l| l.as_slice()).collect();
        let logits = model.extend(cache, &slices)?;
        let rows: Vec<u32> = (0..batch as u32).collect();
        for (o, t) in out.iter_mut().zip(pick(&logits, &rows)?) {
            o.push(t);
        }
    }
    Ok(Run {
        tokens: out,
        prefill,
        decode: t1.elapsed(),
    })
}

fn layout(c: Cache, a: &Args, batch: usize, capacity: usize) -> CacheLayout {
    match c {
        Cache::Contiguous => CacheLayout::Contiguous,
        Cache::Paged => CacheLayout::Paged {
            page_size: a.page_size,
            pages: batch * capacity.div_ceil(a.page_size.max(1)),
        },
    }
}

fn bench(model: &Gpt2, a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let n = model.config().n_positions;
    if n < 4 {
        return Err(
            format!("--bench needs a context of at least 4 tokens, the model has {n}").into(),
        );
    }
    let (prompt_len, new) = (n / 2, n / 2);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    let vocab = model.config().vocab_size as u32;
    println!(
        "prompts of {prompt_len} tokens, {new} new tokens each, chunk {}",
        a.chunk
    );
    println!(
        "{:>5} {:>11} {:>14} {:>14} {:>10}",
        "seqs", "cache", "prefill tok/s", "decode tok/s", "ms/step"
    );
    let plan = Plan::of(a, new);
    for batch in [1, 8] {
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|_| {
                (0..prompt_len)
                    .map(|_| rng.random_range(0..vocab))
                    .collect()
            })
            .collect();
        for c in [Cache::Contiguous, Cache::Paged] {
            let mut cache = model.cache(
                batch,
                prompt_len + new,
                layout(c, a, batch, prompt_len + new),
            )?;
            // The first run compiles the kernels.
            generate(model, &mut cache, &prompts, &plan, &mut rng)?;
            cache.reset();
            let r = generate(model, &mut cache, &prompts, &plan, &mut rng)?;
            let steps = (new - 1) as f64;
            println!(
                "{batch:>5} {:>11} {:>14.0} {:>14.0} {:>10.2}",
                format!("{c:?}").to_lowercase(),
                (batch * prompt_len) as f64 / r.prefill.as_secs_f64(),
                batch as f64 * steps / r.decode.as_secs_f64(),
                r.decode.as_secs_f64() * 1e3 / steps
            );
        }
    }
    // The f64 reference has no cache: a decode step is a forward over every
    // token so far.
    let weights = model
        .tensors()?
        .into_iter()
        .map(|t| (t.name, t.data))
        .collect();
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab)).collect();
    let forward = |len: usize| {
        let t = Instant::now();
        flashdot::reference::gpt2::forward(&weights, model.config(), &ids[..len], 1, len);
        t.elapsed().as_secs_f64()
    };
    let prefill = prompt_len as f64 / forward(prompt_len);
    let decode = (new - 1) as f64 / (prompt_len + 1..prompt_len + new).map(forward).sum::<f64>();
    println!(
        "for scale, the f64 CPU reference (1 sequence, no cache): prefill {prefill:.0} tok/s, \
         decode {decode:.0} tok/s"
    );
    Ok(())
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let tokens = Tokens::load(&a.model)?;
    let ctx = common::open(a.backend)?;
    let model = Gpt2::load(&ctx, &a.model)?;
    if a.bench {
        return bench(&model, a);
    }
    let texts = match a.prompts.is_empty() {
        true => vec!["def ".to_string(), "The license ".into(), "If the".into()],
        false => a.prompts.clone(),
    };
    let prompts = texts
        .iter()
        .map(|t| tokens.encode(t))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(format!("prompt {i} has no tokens").into());
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let n = model.config().n_positions;
    let max_new = a.max_new.unwrap_or(n.saturating_sub(longest));
    if longest + max_new > n || max_new == 0 {
        return Err(format!(
            "the longest prompt ({longest} tokens) and {max_new} new tokens do not fit the \
             model's context of {n}"
        )
        .into());
    }
    let capacity = longest + max_new;
    let mut cache = model.cache(
        prompts.len(),
        capacity,
        layout(a.cache, a, prompts.len(), capacity),
    )?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    let r = generate(
        &model,
        &mut cache,
        &prompts,
        &Plan::of(a, max_new),
        &mut rng,
    )?;
    for (text, new) in texts.iter().zip(&r.tokens) {
        println!("--- {text:?}\n{text}{}", tokens.decode(new)?);
    }
    let total: usize = prompts.iter().map(Vec::len).sum();
    println!(
        "prefill: {total} prompt tokens in {:.1} ms (first calls compile kernels); decode: {} \
         steps of {} sequences in {:.1} ms ({:.0} tokens/s)",
        r.prefill.as_secs_f64() * 1e3,
        max_new - 1,
        prompts.len(),
        r.decode.as_secs_f64() * 1e3,
        (prompts.len() * (max_new - 1)) as f64 / r.decode.as_secs_f64()
    );
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
