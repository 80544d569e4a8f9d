//! The encoder layers outside matmul and attention, at all-MiniLM-L6-v2's
//! shapes (batch 32 × 128 tokens, hidden 384): embedding lookup, layer norm
//! with the residual fused, masked mean pooling; throughput in bytes moved
//! (each reads its inputs once and writes its output once). Then their
//! gradients (`ops::grad`, in `grad_bench`) at the same shapes, the
//! feed-forward's 1536, a 30,522-word vocabulary and 128 rows of MLM
//! logits: bytes as each kernel moves them (passes that re-read an input
//! count it again), GFLOP/s for the linear backward's two products and for
//! dW alone by the matmul's transpose flag and by the linear backward.

use criterion::SamplingMode;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::ops::embedding::{embedding_into, EmbeddingTables};
use flashdot::ops::grad::*;
use flashdot::ops::matmul::{matmul_into, Activation, MatmulOptions};
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
    grad_bench(c, &ctx);
}

fn grad_bench(c: &mut Criterion, ctx: &Context) {
    let (b, s, h, ff, vocab, mlm) = (32usize, 128usize, 384usize, 1536usize, 30522usize, 128usize);
    let rows = b * s;
    let mut g = c.benchmark_group("gradients (32 x 128 x 384, vocab 30522)");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .sampling_mode(SamplingMode::Flat);
    let bytes = |g: &mut criterion::BenchmarkGroup<_>, n: usize| {
        g.throughput(Throughput::Bytes(n as u64));
    };
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !ctx.info().has_f16() {
            continue;
        }
        let es = dtype.size() as usize;
        let z = |shape: &[usize]| Tensor::zeros(ctx, shape, dtype).unwrap();
        let f32z = |shape: &[usize]| Tensor::zeros(ctx, shape, DType::F32).unwrap();
        // Column sums (db): one pass against two, at the model's widths.
        for cols in [32, h, ff] {
            let (x, out) = (z(&[rows, cols]), f32z(&[cols]));
            bytes(&mut g, rows * cols * es);
            for v in [ColumnSumVariant::OnePass, ColumnSumVariant::TwoPass] {
                g.bench_function(
                    format!("column_sum [{rows}, {cols}]/{v:?}/{dtype}"),
                    |bch| bch.iter_custom(timed(ctx, || column_sum_with(&x, v, &out).unwrap())),
                );
            }
        }
        // The feed-forward's GELU backward: reads pre and dy, writes dx.
        let (pre, dy, dx) = (z(&[rows, ff]), z(&[rows, ff]), z(&[rows, ff]));
        bytes(&mut g, 3 * rows * ff * es);
        g.bench_function(format!("gelu_erf backward [{rows}, {ff}]/{dtype}"), |bch| {
            bch.iter_custom(timed(ctx, || {
                activation_backward_into(&pre, &dy, Activation::GeluErf, &dx).unwrap()
            }))
        });
        // The residual stream's two gradients.
        let (a, r, o) = (z(&[rows, h]), z(&[rows, h]), z(&[rows, h]));
        bytes(&mut g, 3 * rows * h * es);
        g.bench_function(format!("add_into [{rows}, {h}]/{dtype}"), |bch| {
            bch.iter_custom(timed(ctx, || add_into(&a, &r, &o).unwrap()))
        });
        // Layer norm backward: dx reads x, dy and γ and writes dx; the
        // partials re-read x and dy.
        let (x, dy, dxn, gamma) = (z(&[rows, h]), z(&[rows, h]), z(&[rows, h]), z(&[h]));
        let (dg, db) = (f32z(&[h]), f32z(&[h]));
        bytes(&mut g, 5 * rows * h * es);
        for v in [
            flashdot::ops::norm::NormVariant::Workgroup,
            flashdot::ops::norm::NormVariant::Rows,
        ] {
            g.bench_function(
                format!("layer_norm backward [{rows}, {h}]/{v:?}/{dtype}"),
                |bch| {
                    let grads = NormGrads {
                        dx: &dxn,
                        dgamma: &dg,
                        dbeta: &db,
                    };
                    bch.iter_custom(timed(ctx, || {
                        layer_norm_backward_with(&x, None, &gamma, 1e-12, &dy, v, grads).unwrap()
                    }))
                },
            );
        }
        // Embedding backward: each table's pass reads dy once and writes
        // the table's gradient whole.
        let ids: Vec<u32> = (0..rows).map(|i| (i * 7919 % vocab) as u32).collect();
        let dy3 = z(&[b, s, h]);
        let (word, pos, types) = (z(&[vocab, h]), z(&[512, h]), z(&[2, h]));
        bytes(&mut g, (3 * rows + vocab + 512 + 2) * h * es);
        g.bench_function(
            format!("embedding backward [{b}, {s}, {h}]/{dtype}"),
            |bch| {
                let grads = EmbeddingGrads {
                    word: Some(&word),
                    pos: Some(&pos),
                    types: Some(&types),
                };
                bch.iter_custom(timed(ctx, || {
                    embedding_backward_into(&ids, None, &dy3, grads).unwrap()
                }))
            },
        );
        // Mean pooling backward: reads dy [b, h] f32, writes dx.
        let (dyp, dxp) = (f32z(&[b, h]), z(&[b, s, h]));
        let lens: Vec<u32> = (0..b).map(|i| (s - i) as u32).collect();
        bytes(&mut g, rows * h * es + b * h * 4);
        g.bench_function(
            format!("mean_pool backward [{b}, {s}, {h}]/{dtype}"),
            |bch| {
                bch.iter_custom(timed(ctx, || {
                    mean_pool_backward_into(&dyp, &lens, &dxp).unwrap()
                }))
            },
        );
        // Cross-entropy over 128 rows of MLM logits: two reads, one write.
        let (logits, dl) = (z(&[mlm, vocab]), z(&[mlm, vocab]));
        let targets: Vec<u32> = (0..mlm).map(|i| (i * 31 % vocab) as u32).collect();
        bytes(&mut g, 3 * mlm * vocab * es);
        for v in [
            flashdot::ops::norm::NormVariant::Workgroup,
            flashdot::ops::norm::NormVariant::Rows,
        ] {
            let opts = CrossEntropyOptions {
                variant: v,
                ..Default::default()
            };
            g.bench_function(
                format!("cross_entropy [{mlm}, {vocab}]/{v:?}/{dtype}"),
                |bch| {
                    bch.iter_custom(timed(ctx, || {
                        cross_entropy_into(&logits, &targets, &opts, &dl).unwrap();
                    }))
                },
            );
        }
        // AdamW over the word-embedding matrix (MiniLM's largest): reads
        // param, grad, m, v; writes param, m, v.
        let n = vocab * h;
        let (p, m, v, grad) = (f32z(&[n]), f32z(&[n]), f32z(&[n]), z(&[n]));
        bytes(&mut g, n * (6 * 4 + es));
        g.bench_function(format!("adamw [{n}]/{dtype}"), |bch| {
            let o = AdamWOptions::default();
            bch.iter_custom(timed(ctx, || adamw_step(&p, &grad, &m, &v, 1, &o).unwrap()))
        });
        // The feed-forward's first linear layer backward (384 → 1536, GELU):
        // dx and dw, 2 · 2 · rows · 384 · 1536 FLOP, plus the GELU and db.
        if dtype == DType::F32 {
            let (x, w, dy, pre) = (z(&[rows, h]), z(&[ff, h]), z(&[rows, ff]), z(&[rows, ff]));
            let (dx, dw, db) = (z(&[rows, h]), z(&[ff, h]), z(&[ff]));
            g.throughput(Throughput::Elements((4 * rows * h * ff) as u64));
            g.bench_function(
                format!("linear backward [{rows}, {h}] -> {ff} gelu (FLOP)/{dtype}"),
                |bch| {
                    let into = LinearGradsInto {
                        dx: Some(&dx),
                        dw: Some(&dw),
                        db: Some(&db),
                    };
                    bch.iter_custom(timed(ctx, || {
                        linear_backward_into(&x, &w, &dy, Activation::GeluErf, Some(&pre), into)
                            .unwrap()
                    }))
                },
            );
            // dW = dzᵀ · x alone (2 · rows · 384 · 1536 FLOP): the matmul's
            // transpose flag against the linear backward's route (on CPU
            // adapters a transposed copy of dz, then the texel kernel).
            g.throughput(Throughput::Elements((2 * rows * h * ff) as u64));
            let flag = MatmulOptions::default().transpose(true, false);
            g.bench_function(
                format!("dw [{ff}, {h}] by transpose flag (FLOP)/{dtype}"),
                |bch| bch.iter_custom(timed(ctx, || matmul_into(&dy, &x, &flag, &dw).unwrap())),
            );
            g.bench_function(
                format!("dw [{ff}, {h}] by linear_backward (FLOP)/{dtype}"),
                |bch| {
                    let into = LinearGradsInto {
                        dw: Some(&dw),
                        ..Default::default()
                    };
                    bch.iter_custom(timed(ctx, || {
                        linear_backward_into(&x, &w, &dy, Activation::None, None, into).unwrap()
                    }))
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
