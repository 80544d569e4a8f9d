//! Trains a small GPT-2-architecture character language model on
//! `models/corpus.txt` entirely on flashdot (forward, backward and AdamW,
//! one submission a step), prints the loss with a progress bar, and writes
//! the checkpoint (`model.safetensors`, `config.json` in Hugging Face's GPT-2
//! layout, and the character vocabulary `vocab.json`) for the `generate`
//! example. The corpus comes with `bash scripts/fetch-model.sh`.
//!
//! `cargo run --release --example train_gpt2 -- --steps 3000 --out models/gpt2-chars`

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use flashdot::models::{CharVocab, Gpt2, Gpt2Config, Gpt2Trainer};
use flashdot::ops::grad::AdamWOptions;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(about = "train a GPT-2-architecture character LM on flashdot")]
struct Args {
    /// Optimizer steps (default 3000 on a software adapter, 5000 on a GPU).
    #[arg(long)]
    steps: Option<usize>,
    /// Where the checkpoint goes.
    #[arg(long, default_value = "models/gpt2-chars")]
    out: PathBuf,
    /// The training text (one token per character).
    #[arg(long, default_value = "models/corpus.txt")]
    corpus: PathBuf,
    /// Sequences per batch (default 8 on a software adapter, 32 on a GPU).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (and the model's n_positions).
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 64)]
    embd: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Peak learning rate (linear warm-up, then cosine decay to a tenth).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Seed of the init and of the batches.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First steps checked against the f64 CPU reference loop (and timed on
    /// it, for scale; 0: none).
    #[arg(long, default_value_t = 3)]
    cpu_steps: usize,
    /// Print the loss every this many steps.
    #[arg(long, default_value_t = 25)]
    log_every: usize,
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
}

/// The learning rate at step `t` (0-based) of `steps`.
fn schedule(a: &Args, t: usize, steps: usize) -> f64 {
    if t < a.warmup {
        return a.lr * (t + 1) as f64 / a.warmup as f64;
    }
    let p = (t - a.warmup) as f64 / (steps.saturating_sub(a.warmup)).max(1) as f64;
    a.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
}

/// `batch` windows of `seq + 1` tokens from `tokens` at random starts: the
/// ids and their next tokens.
fn sample(tokens: &[u32], batch: usize, seq: usize, rng: &mut impl Rng) -> (Vec<u32>, Vec<u32>) {
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..batch {
        let s = rng.random_range(0..tokens.len() - seq);
        ids.extend_from_slice(&tokens[s..s + seq]);
        targets.extend_from_slice(&tokens[s + 1..s + seq + 1]);
    }
    (ids, targets)
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(&a.corpus).map_err(|e| {
        format!(
            "{}: {e} (make it with `bash scripts/fetch-model.sh`)",
            a.corpus.display()
        )
    })?;
    let vocab = CharVocab::from_text(&text);
    let tokens = vocab.encode(&text)?;
    // The last tenth is held out: the validation loss says whether the model
    // learned the text or memorised the batches it saw.
    let split = tokens.len() * 9 / 10;
    let (train, val) = tokens.split_at(split);
    if a.seq == 0 {
        return Err("--seq must be at least 1".into());
    }
    if val.len() <= a.seq {
        return Err(format!(
            "the corpus ({} characters) is too short for sequences of {}",
            tokens.len(),
            a.seq
        )
        .into());
    }
    let ctx = common::open(a.backend)?;
    let mut sizes = common::Sizes::new(&ctx);
    let steps = sizes.pick("--steps", a.steps, 5000, 3000);
    if steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    let batch = sizes.pick("--batch", a.batch, 32, 8);
    sizes.report();
    let config = Gpt2Config::new(vocab.len(), a.seq, a.embd, a.layers, a.heads);
    let model = Gpt2::random(&ctx, &config, a.seed)?;
    let init = model.tensors()?;
    let params: usize = init.iter().map(|t| t.data.len()).sum();
    println!(
        "model: {} blocks, width {}, {} heads, context {}, vocabulary {} characters, {params} parameters",
        a.layers,
        a.embd,
        a.heads,
        a.seq,
        vocab.len()
    );
    println!(
        "data: {} training and {} held-out characters; {steps} steps of {batch} × {} tokens; \
         initial loss should be near ln({}) = {:.3}",
        train.len(),
        val.len(),
        a.seq,
        vocab.len(),
        (vocab.len() as f64).ln()
    );
    let opts = AdamWOptions {
        lr: a.lr,
        weight_decay: 0.1,
        betas: (0.9, 0.95),
        ..AdamWOptions::default()
    };
    let mut trainer = Gpt2Trainer::new(model, batch, a.seq, opts)?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    // The first steps' batches, drawn up front: the f64 CPU reference loop
    // (what the tests check the device against) runs them too, to check the
    // device's losses and, for scale, to time the CPU.
    let first: Vec<_> = (0..a.cpu_steps.min(steps))
        .map(|_| sample(train, batch, a.seq, &mut rng))
        .collect();
    let weights = init
        .iter()
        .map(|t| (t.name.clone(), t.data.clone()))
        .collect();
    let mut cpu = flashdot::reference::gpt2_train::TrainerRef::new(&weights, &config);
    let mut cpu_loss = Vec::new();
    let t = Instant::now();
    for (ids, targets) in &first {
        let o = AdamWOptions {
            lr: schedule(a, cpu_loss.len(), steps),
            ..opts
        };
        cpu_loss.push(cpu.step(ids, targets, batch, a.seq, &o));
    }
    let cpu_rate = (batch * a.seq * first.len()) as f64 / t.elapsed().as_secs_f64();

    // The first step compiles every kernel: timed apart from the rest.
    let bar =
        indicatif::ProgressBar::new(steps as u64).with_finish(indicatif::ProgressFinish::AndClear);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "training [{bar:30}] {pos}/{len} loss {msg} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut curve = Vec::new();
    let (mut first_step, mut checked, t0) = (Duration::ZERO, 0.0f64, Instant::now());
    for t in 0..steps {
        trainer.set_lr(schedule(a, t, steps))?;
        let (ids, targets) = match first.get(t) {
            Some(b) => b.clone(),
            None => sample(train, batch, a.seq, &mut rng),
        };
        let t1 = Instant::now();
        let loss = trainer.step(&ids, &targets)?;
        if t == 0 {
            first_step = t1.elapsed();
        }
        if let Some(&want) = cpu_loss.get(t) {
            // The tests' bound: the forward's 1e-5, plus as much a step.
            let err = (loss as f64 - want).abs() / want.abs();
            if err > 1e-5 * (1 + t) as f64 {
                return Err(format!(
                    "step {t}: loss {loss} against the f64 reference's {want} (relative {err:.1e})"
                )
                .into());
            }
            checked = checked.max(err);
        }
        if !loss.is_finite() {
            return Err(format!("the loss is {loss} at step {t}").into());
        }
        curve.push(loss);
        bar.set_message(format!("{loss:.4}"));
        bar.inc(1);
        if t % a.log_every.max(1) == 0 || t + 1 == steps {
            bar.suspend(|| {
                println!(
                    "step {t:>5}  loss {loss:.4}  lr {:.2e}",
                    trainer.options().lr
                )
            });
        }
    }
    bar.finish_and_clear();
    let total = t0.elapsed();
    let warm = total.saturating_sub(first_step);
    let tokens_per_step = (batch * a.seq) as f64;
    if steps > 1 {
        let rate = tokens_per_step * (steps - 1) as f64 / warm.as_secs_f64();
        println!(
            "throughput: {rate:.0} tokens/s over steps 1..{steps} ({:.1} ms a step); the first \
             step (kernel compiles) took {:.2} s",
            warm.as_secs_f64() * 1e3 / (steps - 1) as f64,
            first_step.as_secs_f64()
        );
        if !cpu_loss.is_empty() {
            println!(
                "checked: the first {} losses equal the f64 CPU reference loop's (largest \
                 relative difference {checked:.1e}); for scale, that loop ran {cpu_rate:.0} \
                 tokens/s (flashdot {:.1}× it)",
                cpu_loss.len(),
                rate / cpu_rate
            );
        }
    }
    let tail = &curve[curve.len().saturating_sub(20)..];
    println!(
        "loss: {:.4} at the first step, {:.4} over the last {} steps",
        curve[0],
        tail.iter().sum::<f32>() / tail.len() as f32,
        tail.len()
    );

    // A step in its three parts, each waited for: where the time goes.
    let (ids, targets) = sample(train, batch, a.seq, &mut rng);
    let mut split = [Duration::ZERO; 3];
    let reps = 5;
    for _ in 0..reps {
        let t = Instant::now();
        ctx.record(|| trainer.forward_loss(&ids, &targets).map(|_| ()))?;
        ctx.synchronize()?;
        split[0] += t.elapsed();
        let t = Instant::now();
        ctx.record(|| trainer.backward(&ids))?;
        ctx.synchronize()?;
        split[1] += t.elapsed();
        let t = Instant::now();
        trainer.set_lr(0.0)?;
        ctx.record(|| trainer.update())?;
        ctx.synchronize()?;
        split[2] += t.elapsed();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / reps as f64;
    println!(
        "a step in parts (mean of {reps}, each waited for): forward + loss \
         {:.1} ms, backward {:.1} ms, AdamW {:.1} ms",
        ms(split[0]),
        ms(split[1]),
        ms(split[2])
    );

    // The held-out loss, on as many windows as a few batches hold.
    let mut val_loss = 0.0;
    let evals = 4;
    for _ in 0..evals {
        let (ids, targets) = sample(val, batch, a.seq, &mut rng);
        let l = ctx.record(|| trainer.forward_loss(&ids, &targets))?;
        val_loss += l.to_vec::<f32>()?[0] as f64 / evals as f64;
    }
    println!("held-out loss: {val_loss:.4} ({} windows)", evals * batch);

    let model = trainer.into_model();
    model.save(&a.out)?;
    vocab.save(&a.out)?;
    println!(
        "checkpoint: {} (model.safetensors, config.json, vocab.json); try \
         `cargo run --release --example generate -- --model {} \"def \"`",
        a.out.display(),
        a.out.display()
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
