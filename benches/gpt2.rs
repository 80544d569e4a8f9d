//! The GPT-2-architecture model on flashdot (the `train_gpt2` example's
//! default: 2 blocks, width 64, 4 heads, context 64, 102 characters):
//! a training step (forward, loss, backward, AdamW in one submission) in
//! tokens/s at 8 × 64 tokens, and decode steps of `Gpt2::extend` (one token
//! per sequence, 32 tokens already cached) for 1 and 8 sequences, contiguous
//! and paged caches. No checkpoint needed: GPT-2's seeded init.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::models::{CacheLayout, Gpt2, Gpt2Config, Gpt2Trainer};
use flashdot::ops::grad::AdamWOptions;
use flashdot::{Context, ContextOptions};

fn config() -> Gpt2Config {
    Gpt2Config::new(102, 64, 64, 2, 4)
}

fn ids(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 31 + salt * 7) % 102).collect()
}

fn bench(c: &mut Criterion) {
    let ctx = Context::with_options(ContextOptions::default().wait_for_best_kernels(true))
        .expect("the benchmarks need a GPU adapter");
    let (b, s) = (8, 64);
    let mut g = c.benchmark_group("gpt2");
    g.sample_size(10);
    let model = Gpt2::random(&ctx, &config(), 1).unwrap();
    let mut trainer = Gpt2Trainer::new(model, b, s, AdamWOptions::default()).unwrap();
    let (x, y) = (ids(b * s, 1), ids(b * s, 2));
    g.throughput(Throughput::Elements((b * s) as u64));
    g.bench_function("train step 8x64 tokens", |bn| {
        bn.iter(|| trainer.step(&x, &y).unwrap())
    });
    let model = Gpt2::random(&ctx, &config(), 1).unwrap();
    for batch in [1, 8] {
        let layouts = [
            ("contiguous", CacheLayout::Contiguous),
            (
                "paged",
                CacheLayout::Paged {
                    page_size: 16,
                    pages: batch * 4,
                },
            ),
        ];
        for (name, layout) in layouts {
            let cache = std::cell::RefCell::new(model.cache(batch, 64, layout).unwrap());
            let prompts: Vec<Vec<u32>> = (0..batch).map(|i| ids(32, i as u32)).collect();
            let tok = [5u32];
            let step: Vec<&[u32]> = (0..batch).map(|_| tok.as_slice()).collect();
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(format!("decode step {batch} seqs {name}"), |bn| {
                bn.iter_batched(
                    || {
                        // Back to 32 cached tokens before each step.
                        let mut cache = cache.borrow_mut();
                        cache.reset();
                        let p: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
                        model.extend(&mut cache, &p).unwrap();
                        ctx.synchronize().unwrap();
                    },
                    |_| {
                        let l = model.extend(&mut cache.borrow_mut(), &step).unwrap();
                        ctx.synchronize().unwrap();
                        l
                    },
                    criterion::BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
