//! all-MiniLM-L6-v2 forward passes on flashdot: sentences per second at
//! batch 32 × 128 tokens and 1 × 16 tokens, f32 and f16 weights; and, printed
//! once per shape, the forward's wall time against the GPU time of its
//! matmuls and attention alone (the same calls, timed by the GPU timer in the
//! same run), i.e. what embeddings, norms, pooling and dispatch add.
//! Needs the model: `bash scripts/fetch-model.sh`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::models::{default_model_dir, Batch, SentenceEncoder};
use flashdot::ops::attention::{attention, AttentionOptions, Layout};
use flashdot::ops::matmul::{linear, Activation};
use flashdot::{Context, DType, Tensor};

/// A batch of `n` sentences of exactly `seq` tokens (`[CLS]`, words, `[SEP]`).
fn batch(n: usize, seq: usize) -> Batch {
    let mut ids = Vec::with_capacity(n * seq);
    for b in 0..n {
        ids.push(101);
        ids.extend((1..seq - 1).map(|t| 2000 + ((b * 131 + t * 17) % 20000) as u32));
        ids.push(102);
    }
    Batch {
        ids,
        lengths: vec![seq as u32; n],
        seq,
    }
}

/// GPU time of the forward's matmuls and attention alone, run as the same
/// calls on tensors of the same shapes.
fn kernels_only(
    ctx: &Context,
    enc: &SentenceEncoder,
    b: &Batch,
) -> flashdot::Result<Option<Duration>> {
    let c = enc.config();
    let (n, s, h, f) = (b.len(), b.seq, c.hidden_size, c.intermediate_size);
    let heads = c.num_attention_heads;
    let dt = enc.dtype();
    let z = |shape: &[usize]| Tensor::zeros(ctx, shape, dt);
    let (x, wh, bh, w1, b1, w2) = (
        z(&[n * s, h])?,
        z(&[h, h])?,
        z(&[h])?,
        z(&[f, h])?,
        z(&[f])?,
        z(&[h, f])?,
    );
    let xf = z(&[n * s, f])?;
    let q = z(&[n, s, heads, h / heads])?;
    let opts = AttentionOptions::default()
        .layout(Layout::Bshd)
        .kv_len(&b.lengths);
    let run = || -> flashdot::Result<()> {
        for _ in 0..c.num_hidden_layers {
            for _ in 0..4 {
                linear(&x, &wh, Some(&bh), Activation::None)?;
            }
            attention(&q, &q, &q, &opts)?;
            linear(&x, &w1, Some(&b1), Activation::GeluErf)?;
            linear(&xf, &w2, Some(&bh), Activation::None)?;
        }
        Ok(())
    };
    run()?;
    ctx.finish_background_compiles();
    run()?;
    ctx.synchronize()?;
    let mut best: Option<Duration> = None;
    for _ in 0..3 {
        ctx.start_gpu_timer()?;
        run()?;
        best = match (best, ctx.stop_gpu_timer()?) {
            (Some(b), Some(t)) => Some(b.min(t)),
            (b, t) => t.or(b),
        };
    }
    Ok(best)
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {}", ctx.info().name);
    let dir = default_model_dir();
    let mut g = c.benchmark_group("all-MiniLM-L6-v2 forward");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !ctx.info().has_f16() {
            continue;
        }
        let enc = SentenceEncoder::load(&ctx, &dir, dtype).unwrap_or_else(|e| panic!("{e}"));
        for (n, s) in [(32, 128), (1, 16)] {
            let b = batch(n, s);
            let forward = || enc.embed_batch(&b).and_then(|e| e.to_vec::<f32>()).unwrap();
            forward();
            // Kernels still compiling on a background thread would share the
            // CPU with a software adapter's timed runs.
            ctx.finish_background_compiles();
            forward();
            let reps = if n > 1 { 3 } else { 20 };
            let t = Instant::now();
            for _ in 0..reps {
                forward();
            }
            let wall = t.elapsed() / reps;
            let all_gpu = (0..3)
                .filter_map(|_| {
                    ctx.start_gpu_timer().unwrap();
                    enc.embed_batch(&b).unwrap();
                    ctx.stop_gpu_timer().unwrap()
                })
                .min();
            let kern = kernels_only(&ctx, &enc, &b).unwrap();
            let ms = |d: Option<Duration>| {
                d.map_or("n/a".to_string(), |d| {
                    format!("{:.1} ms", d.as_secs_f64() * 1e3)
                })
            };
            eprintln!(
                "{dtype} {n}x{s}: forward {:.1} ms wall ({:.1} sentences/s), all its passes {} of GPU time; \
                 its matmuls + attention alone {} → forward / kernels = {}",
                wall.as_secs_f64() * 1e3,
                n as f64 / wall.as_secs_f64(),
                ms(all_gpu),
                ms(kern),
                kern.map_or("n/a".into(), |k| format!("{:.2}", wall.as_secs_f64() / k.as_secs_f64()))
            );
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("{dtype} batch {n} x {s} tokens"), |bch| {
                bch.iter(forward)
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
