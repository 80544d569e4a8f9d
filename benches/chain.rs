//! Per-op overhead: a chain of 200 small ops (64×64 matmuls and 1×768 dots)
//! run as separate calls (one submission each) and recorded into one
//! submission with `Context::record`; time per chain (divide by 200 for µs
//! per op) and, printed once: the buffers each op creates in steady state,
//! the host time per op (encoding inside a recording vs separate calls
//! before any wait) and the device time per op (GPU timer), which bounds
//! both on an adapter whose dispatches cost more than their encoding.

use criterion::{criterion_group, criterion_main, Criterion};
use flashdot::ops::dot::{dot_into, DotVariant};
use flashdot::ops::matmul::{matmul_into, MatmulOptions};
use flashdot::{Context, DType, Tensor};
use std::time::{Duration, Instant};

const OPS: usize = 200;

fn chain(t: &[Tensor; 4]) -> flashdot::Result<()> {
    let [a, c, x, d] = t;
    for _ in 0..OPS / 2 {
        matmul_into(a, a, &MatmulOptions::default(), c)?;
        dot_into(x, x, DotVariant::Auto, d)?;
    }
    Ok(())
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {}", ctx.info().name);
    let a = Tensor::from_slice(&ctx, &vec![0.5f32; 64 * 64], &[64, 64]).unwrap();
    let x = Tensor::from_slice(&ctx, &vec![0.5f32; 768], &[1, 768]).unwrap();
    let t = [
        a,
        Tensor::zeros(&ctx, &[64, 64], DType::F32).unwrap(),
        x,
        Tensor::zeros(&ctx, &[1], DType::F32).unwrap(),
    ];
    chain(&t).unwrap();
    ctx.synchronize().unwrap();
    let before = ctx.memory_stats().buffers_created;
    chain(&t).unwrap();
    let per_op = (ctx.memory_stats().buffers_created - before) as f64 / OPS as f64;
    eprintln!("buffers created per op in steady state: {per_op:.1}");
    let us = |d: Duration| d.as_secs_f64() * 1e6 / OPS as f64;
    let (mut host_rec, mut host_sep) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..20 {
        ctx.record(|| {
            let s = Instant::now();
            let r = chain(&t);
            host_rec += s.elapsed();
            r
        })
        .unwrap();
        ctx.synchronize().unwrap();
        let s = Instant::now();
        chain(&t).unwrap();
        host_sep += s.elapsed();
        ctx.synchronize().unwrap();
    }
    ctx.start_gpu_timer().unwrap();
    ctx.record(|| chain(&t)).unwrap();
    let gpu = ctx.stop_gpu_timer().unwrap();
    eprintln!(
        "host µs per op: recorded {:.1}, separate calls {:.1} (ratio {:.3}); device µs per op: {}",
        us(host_rec / 20),
        us(host_sep / 20),
        host_rec.as_secs_f64() / host_sep.as_secs_f64(),
        gpu.map_or("no GPU timer".into(), |g| format!("{:.1}", us(g)))
    );
    let mut g = c.benchmark_group(format!("chain of {OPS} small ops"));
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    g.bench_function("separate calls", |b| {
        b.iter_custom(|iters| {
            let s = Instant::now();
            for _ in 0..iters {
                chain(&t).unwrap();
                ctx.synchronize().unwrap();
            }
            s.elapsed()
        })
    });
    g.bench_function("recorded, one submission", |b| {
        b.iter_custom(|iters| {
            let s = Instant::now();
            for _ in 0..iters {
                ctx.record(|| chain(&t)).unwrap();
                ctx.synchronize().unwrap();
            }
            s.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
