//! Attention: Naive vs Flash vs SplitKv vs Auto, f32 and f16, batch 1, 8 heads,
//! d 64, causal and not, plus decode (seq_q 1 over long caches). Throughput is
//! FLOP (4·b·h·seq_q·seq_k·d, halved when causal). Then the backward
//! (`attention_backward` group): flash vs naive beside the forward.
//! `FLASHDOT_BENCH_QUICK=1` keeps to the small sizes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashdot::ops::attention::*;
use flashdot::{f16, Context, DType, Tensor};
use std::time::{Duration, Instant};

fn tensor(ctx: &Context, shape: &[usize], dtype: DType) -> Tensor {
    salted(ctx, shape, dtype, 0)
}

/// [`tensor`] with its pattern shifted by `salt` (distinct q, k, v, dO).
fn salted(ctx: &Context, shape: &[usize], dtype: DType, salt: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|i| (((i + salt) * 7919 % 1000) as f32) / 1000.0 - 0.5)
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
                        timed(&ctx, iters, || {
                            attention_into(&q, &k, &v, &opts, &out, None).unwrap()
                        })
                    })
                });
            }
        }
    }
    g.finish();
}

/// The backward at 1 × 8 × seq × 64 (seq 1024; 256 too with
/// `FLASHDOT_BENCH_QUICK` unset), causal and not, f32 and f16: the flash
/// backward, the naive composed one, and the forward beside them for the
/// ratio. Throughput is FlashAttention-2's backward FLOP, 10·h·seq²·d
/// (halved when causal); the forward's entry counts 4·h·seq²·d.
fn backward(c: &mut Criterion) {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    let quick = std::env::var("FLASHDOT_BENCH_QUICK").is_ok();
    let (h, d) = (8, 64);
    let seqs: &[usize] = if quick { &[1024] } else { &[256, 1024] };
    let mut g = c.benchmark_group("attention_backward");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !ctx.info().has_f16() {
            continue;
        }
        for &s in seqs {
            for causal in [Causal::None, Causal::BottomRight] {
                let t = |salt| salted(&ctx, &[1, h, s, d], dtype, salt);
                let (q, k, v, d_out) = (t(0), t(1), t(2), t(3));
                let opts = AttentionOptions::default().causal(causal).return_lse(true);
                let fwd = attention(&q, &k, &v, &opts).unwrap();
                // Timed on its best kernel, not a stand-in compiled first.
                ctx.finish_background_compiles();
                let lse = fwd.lse.as_ref();
                let half = if causal == Causal::None { 1 } else { 2 };
                let pairs = (h * s * s * d / half) as u64;
                let name = |what: &str| format!("{what}/{dtype}/seq{s}_{causal:?}");
                g.throughput(Throughput::Elements(4 * pairs));
                g.bench_function(name("forward"), |b| {
                    b.iter_custom(|iters| {
                        timed(&ctx, iters, || {
                            attention_into(&q, &k, &v, &opts, &fwd.out, lse).unwrap()
                        })
                    })
                });
                g.throughput(Throughput::Elements(10 * pairs));
                for var in [BackwardVariant::Flash, BackwardVariant::Naive] {
                    let o = opts.backward_variant(var);
                    let gr = attention_backward(&q, &k, &v, &fwd.out, &d_out, lse, &o).unwrap();
                    let into = GradientsInto {
                        dq: &gr.dq,
                        dk: &gr.dk,
                        dv: &gr.dv,
                        dbias: None,
                    };
                    ctx.finish_background_compiles();
                    g.bench_function(name(&format!("backward-{var:?}")), |b| {
                        b.iter_custom(|iters| {
                            timed(&ctx, iters, || {
                                attention_backward_into(
                                    &q, &k, &v, &fwd.out, &d_out, lse, &o, &into,
                                )
                                .unwrap()
                            })
                        })
                    });
                }
            }
        }
    }
    g.finish();
}

/// Wall time of `iters` calls of `f`, the device idle before and after.
fn timed(ctx: &Context, iters: u64, mut f: impl FnMut()) -> Duration {
    ctx.synchronize().unwrap();
    let s = Instant::now();
    for _ in 0..iters {
        f();
    }
    ctx.synchronize().unwrap();
    s.elapsed()
}

criterion_group!(benches, bench, backward);
criterion_main!(benches);
