//! Flat-index search: n = 100,000 and 500,000, d = 768, m in {1, 16, 256}, k = 10,
//! each storage type. Throughput is corpus bytes scanned per call (criterion's
//! bytes/s); queries/s is m / time. `FLASHDOT_BENCH_QUICK=1` keeps to n = 100,000.
//!
//! Nearest-centroid assignment (`assign`, k-means' and IVF adds' kernel):
//! 65,536 points of d = 128 to 4,096 centroids (16,384 to 1,024 quick);
//! throughput in elements is FLOP (2·n·k·d), so criterion's elem/s is FLOP/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::ops::search::*;
use flashdot::Context;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {}", ctx.info().name);
    let quick = std::env::var("FLASHDOT_BENCH_QUICK").is_ok();
    let d = 768;
    let sizes: &[usize] = if quick {
        &[100_000]
    } else {
        &[100_000, 500_000]
    };
    let mut g = c.benchmark_group("search");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(5));
    for &n in sizes {
        let corpus: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5)
            .collect();
        let queries: Vec<f32> = corpus[..256 * d].iter().map(|v| v + 0.01).collect();
        for storage in [Storage::F32, Storage::F16, Storage::Int8] {
            let mut ix = FlatIndex::new(&ctx, d, IndexOptions::default().storage(storage)).unwrap();
            ix.add(&corpus).unwrap();
            for m in [1usize, 16, 256] {
                g.throughput(Throughput::Bytes(ix.bytes()));
                g.bench_function(format!("{storage:?}/n{n}/m{m}/k10"), |b| {
                    b.iter(|| ix.search(&queries[..m * d], 10).unwrap())
                });
            }
        }
    }
    g.finish();
}

fn bench_assign(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    let quick = std::env::var("FLASHDOT_BENCH_QUICK").is_ok();
    let (n, k, d) = if quick {
        (16_384, 1_024, 128)
    } else {
        (65_536, 4_096, 128)
    };
    let data: Vec<f32> = (0..n * d)
        .map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    let cents: Vec<f32> = data[..k * d].iter().map(|v| v * 0.9).collect();
    let mut g = c.benchmark_group("assign");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements((2 * n * k * d) as u64));
    use flashdot::ops::similarity::Metric;
    for metric in [Metric::L2, Metric::InnerProduct] {
        g.bench_function(format!("{metric:?}/n{n}/k{k}/d{d}"), |b| {
            b.iter(|| assign(&ctx, &data, &cents, d, metric).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_assign);
criterion_main!(benches);
