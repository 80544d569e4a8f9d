//! The encoder layers outside matmul and attention, at all-MiniLM-L6-v2's
//! shapes (batch 32 × 128 tokens, hidden 384): embedding lookup, layer norm
//! with the residual fused, masked mean pooling; throughput in bytes moved
//! (each reads its inputs once and writes its output once).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::ops::embedding::{embedding_into, EmbeddingTables};
use flashdot::ops::norm::{layer_norm_with, NormVariant};
use flashdot::ops::pooling::mean_pool_into;
use flashdot::{Context, DType, Tensor};
use std::time::{Duration, Instant};

fn timed<'a>(ctx: &'a Context, f: impl Fn() + 'a) -> impl FnMut(u64) -> Duration + 'a {
    move |iters| {
        f();
        ctx.synchronize().unwrap();
        let s = Instant::now();
        for _ in 0..iters {
            f();
        }
        ctx.synchronize().unwrap();
        s.elapsed()
    }
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {}", ctx.info().name);
    let (b, s, h, vocab) = (32usize, 128usize, 384usize, 30522usize);
    let rows = b * s;
    let mut g = c.benchmark_group("encoder layers (32 x 128 x 384)");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !ctx.info().has_f16() {
            continue;
        }
        let z = |shape: &[usize]| Tensor::zeros(&ctx, shape, dtype).unwrap();
        let (word, pos, types) = (z(&[vocab, h]), z(&[512, h]), z(&[2, h]));
        let ids: Vec<u32> = (0..rows).map(|i| (i * 7919 % vocab) as u32).collect();
        let ids = Tensor::from_slice(&ctx, &ids, &[b, s]).unwrap();
        let (x, r, y, gamma, beta) = (
            z(&[rows, h]),
            z(&[rows, h]),
            z(&[rows, h]),
            z(&[h]),
            z(&[h]),
        );
        let emb = z(&[b, s, h]);
        let pooled = Tensor::zeros(&ctx, &[b, h], DType::F32).unwrap();
        let lens: Vec<u32> = (0..b).map(|i| (s - i) as u32).collect();
        let es = dtype.size();
        let tables = EmbeddingTables {
            word: &word,
            pos: &pos,
            types: &types,
        };
        // Each output row reads three table rows.
        g.throughput(Throughput::Bytes(
            (4 * rows * h) as u64 * es + 4 * rows as u64,
        ));
        g.bench_function(format!("embedding/{dtype}"), |bch| {
            bch.iter_custom(timed(&ctx, || {
                embedding_into(&ids, None, tables, &emb).unwrap()
            }))
        });
        g.throughput(Throughput::Bytes((3 * rows * h) as u64 * es));
        for v in [NormVariant::Workgroup, NormVariant::Rows] {
            g.bench_function(format!("layer_norm + residual/{v:?}/{dtype}"), |bch| {
                bch.iter_custom(timed(&ctx, || {
                    layer_norm_with(&x, Some(&r), &gamma, &beta, 1e-12, v, &y).unwrap()
                }))
            });
        }
        g.throughput(Throughput::Bytes(
            (rows * h) as u64 * es + (b * h * 4) as u64,
        ));
        let x3 = x.reshape(&[b, s, h]).unwrap();
        g.bench_function(format!("mean_pool/{dtype}"), |bch| {
            bch.iter_custom(timed(&ctx, || mean_pool_into(&x3, &lens, &pooled).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
