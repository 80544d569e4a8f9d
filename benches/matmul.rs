//! Matmul: Naive vs every tiled configuration vs Auto, f32 and f16, square sizes
//! and the transformer MLP shapes. Throughput is FLOP (2·m·n·k); criterion reports
//! it as elements/s, i.e. FLOP/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::ops::matmul::*;
use flashdot::{f16, Context, DType, Tensor};
use std::time::{Duration, Instant};

fn tensor(ctx: &Context, r: usize, c: usize, dtype: DType) -> Tensor {
    let x: Vec<f32> = (0..r * c)
        .map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    match dtype {
        DType::F16 => {
            let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            Tensor::from_slice(ctx, &h, &[r, c]).unwrap()
        }
        _ => Tensor::from_slice(ctx, &x, &[r, c]).unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {}", ctx.info().name);
    // FLASHDOT_BENCH_QUICK=1 keeps to the small sizes.
    let quick = std::env::var("FLASHDOT_BENCH_QUICK").is_ok();
    let mut shapes: Vec<(usize, usize, usize)> = vec![
        (128, 128, 128),
        (256, 256, 256),
        (512, 512, 512),
        (1024, 1024, 1024),
    ];
    if !quick {
        shapes.push((2048, 2048, 2048));
        shapes.push((2048, 768, 3072));
        shapes.push((2048, 3072, 768));
    }
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !ctx.info().has_f16() {
            continue;
        }
        for &(m, k, n) in &shapes {
            let a = tensor(&ctx, m, k, dtype);
            let b = tensor(&ctx, k, n, dtype);
            let out = Tensor::zeros(&ctx, &[m, n], DType::F32).unwrap();
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            for v in MatmulVariant::all(&ctx) {
                // The naive kernel takes minutes past 1024³ on a software adapter.
                if v == MatmulVariant::Naive && m * n * k > 1 << 30 {
                    continue;
                }
                let opts = MatmulOptions::default().variant(v);
                g.bench_function(format!("{v}/{dtype}/{m}x{k}x{n}"), |bch| {
                    bch.iter_custom(|iters| {
                        matmul_into(&a, &b, &opts, &out).unwrap();
                        ctx.synchronize().unwrap();
                        let s = Instant::now();
                        for _ in 0..iters {
                            matmul_into(&a, &b, &opts, &out).unwrap();
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
