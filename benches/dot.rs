//! Batched dot products: every variant, f32 and f16, throughput in bytes read.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::ops::dot::{dot_into, DotVariant};
use flashdot::{f16, Context, DType, Tensor};
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {}", ctx.info().name);
    let mut g = c.benchmark_group("dot");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    for (n, d) in [(100_000usize, 768usize), (1_000, 4096)] {
        for dtype in [DType::F32, DType::F16] {
            if dtype == DType::F16 && !ctx.info().has_f16() {
                continue;
            }
            let x: Vec<f32> = (0..n * d).map(|i| ((i % 97) as f32) / 97.0).collect();
            let t = match dtype {
                DType::F16 => {
                    let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                    Tensor::from_slice(&ctx, &h, &[n, d]).unwrap()
                }
                _ => Tensor::from_slice(&ctx, &x, &[n, d]).unwrap(),
            };
            let out = Tensor::zeros(&ctx, &[n], DType::F32).unwrap();
            g.throughput(Throughput::Bytes(2 * t.bytes()));
            for v in DotVariant::ALL {
                g.bench_function(format!("{v:?}/{dtype}/n{n}_d{d}"), |bch| {
                    bch.iter_custom(|iters| {
                        dot_into(&t, &t, v, &out).unwrap();
                        ctx.synchronize().unwrap();
                        let s = Instant::now();
                        for _ in 0..iters {
                            dot_into(&t, &t, v, &out).unwrap();
                        }
                        ctx.synchronize().unwrap();
                        s.elapsed()
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
