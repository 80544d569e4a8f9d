//! Attention: Naive vs Flash vs SplitKv vs Auto, f32 and f16, batch 1, 8 heads,
//! d 64, causal and not, plus decode (seq_q 1 over long caches). Throughput is
//! FLOP (4·b·h·seq_q·seq_k·d, halved when causal). `FLASHDOT_BENCH_QUICK=1`
//! keeps to the small sizes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::ops::attention::*;
use flashdot::{f16, Context, DType, Tensor};
use std::time::{Duration, Instant};

fn tensor(ctx: &Context, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    match dtype {
        DType::F16 => {
            let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            Tensor::from_slice(ctx, &h, shape).unwrap()
        }
        _ => Tensor::from_slice(ctx, &x, shape).unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {}", ctx.info().name);
    let quick = std::env::var("FLASHDOT_BENCH_QUICK").is_ok();
    let (h, d) = (8, 64);
    let mut cases: Vec<(usize, usize, Causal)> = Vec::new();
    let seqs: &[usize] = if quick {
        &[256, 1024]
    } else {
        &[256, 1024, 4096, 8192]
    };
    for &s in seqs {
        cases.push((s, s, Causal::None));
        cases.push((s, s, Causal::BottomRight));
    }
    let caches: &[usize] = if quick {
        &[512, 4096]
    } else {
        &[512, 4096, 32768]
    };
    for &sk in caches {
        cases.push((1, sk, Causal::BottomRight));
    }
    let mut g = c.benchmark_group("attention");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !ctx.info().has_f16() {
            continue;
        }
        for &(sq, sk, causal) in &cases {
            let q = tensor(&ctx, &[1, h, sq, d], dtype);
            let k = tensor(&ctx, &[1, h, sk, d], dtype);
            let v = tensor(&ctx, &[1, h, sk, d], dtype);
            let out = Tensor::zeros(&ctx, &[1, h, sq, d], dtype).unwrap();
            // Causal self-attention computes half the scores; a decode
            // query sees every key.
            let half = causal != Causal::None && sq > 1;
            let flop = 4 * h * sq * sk * d / if half { 2 } else { 1 };
            g.throughput(Throughput::Elements(flop as u64));
            // SplitKv once per K/V source.
            let runs = AttentionVariant::ALL.into_iter().flat_map(|var| {
                let reads = match var {
                    AttentionVariant::SplitKv => KvReads::ALL.map(Some).to_vec(),
                    _ => vec![None],
                };
                reads.into_iter().map(move |r| (var, r))
            });
            for (var, reads) in runs {
                let mut opts = AttentionOptions::default().causal(causal).variant(var);
                opts.split_kv_reads = reads;
                let name = match reads {
                    Some(r) => format!("{var:?}-{r:?}"),
                    None => format!("{var:?}"),
                };
                // Variants that refuse the size (naive's score matrix) are skipped.
                if attention_into(&q, &k, &v, &opts, &out, None).is_err() {
                    continue;
                }
                // Measure the fastest kernel forms, not quick stand-ins.
                ctx.finish_background_compiles();
                g.bench_function(format!("{name}/{dtype}/sq{sq}_sk{sk}_{causal:?}"), |b| {
                    b.iter_custom(|iters| {
                        ctx.synchronize().unwrap();
                        let s = Instant::now();
                        for _ in 0..iters {
                            attention_into(&q, &k, &v, &opts, &out, None).unwrap();
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
