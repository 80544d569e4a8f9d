//! Each kernel family's sweep: every variant validated against the CPU
//! reference, then timed beside the family's native CPU baseline.

use flashdot::ops::attention::{self, AttentionOptions, AttentionVariant, Causal};
use flashdot::ops::dot::{self, DotVariant};
use flashdot::ops::matmul::{self, MatmulOptions, MatmulVariant};
use flashdot::ops::search::{FlatIndex, IndexOptions, Storage};
use flashdot::{reference, verify, Context, DType, Tensor};

use crate::{common, cpu, cpu_name, fail, Args, Record, R};

pub(crate) fn dot_family(ctx: &Context, a: &Args, out: &mut Vec<Record>) -> R<()> {
    let sizes: &[usize] = if a.quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 500_000]
    };
    let d = 768;
    for &n in sizes {
        eprintln!("dot n={n} d={d}");
        let x = common::data(n * d, 1);
        let y = common::data(n * d, 2);
        let want = reference::dot::dot(&x, &y, d);
        let tx = Tensor::from_slice(ctx, &x, &[n, d])?;
        let ty = Tensor::from_slice(ctx, &y, &[n, d])?;
        let o = Tensor::zeros(ctx, &[n], DType::F32)?;
        for v in DotVariant::ALL {
            o.poison()?;
            dot::dot_into(&tx, &ty, v, &o)?;
            let rep = verify::compare(&o.to_vec::<f32>()?, &want);
            if !rep.passes(1e-5) {
                return Err(fail(format!("dot {v:?} n={n}: {rep}")));
            }
            let t = common::time(ctx, a.reps, &format!("dot {v:?} n={n}"), || {
                dot::dot_into(&tx, &ty, v, &o)
            })?;
            let bytes = (2 * n * d * 4) as f64;
            out.push(Record {
                family: "dot",
                variant: format!("{v:?}"),
                shape: format!("{n}x{d}"),
                size: n as f64,
                dtype: "f32".into(),
                median_ms: t.median.as_secs_f64() * 1e3,
                min_ms: t.min.as_secs_f64() * 1e3,
                throughput: bytes / t.median.as_secs_f64() / 1e9,
                unit: "GB/s",
                rel_l2: rep.rel_l2,
                timer: if t.gpu { "gpu" } else { "wall" },
                wall_ms: t.wall.as_secs_f64() * 1e3,
                cpu: false,
            });
        }
        let (got, t) = common::time_cpu(a.reps, &format!("dot n={n}"), || cpu::dot_rows(&x, &y, d));
        let rep = verify::compare(&got, &want);
        if !rep.passes(1e-5) {
            return Err(fail(format!("CPU dot n={n}: {rep}")));
        }
        let ms = t.as_secs_f64() * 1e3;
        out.push(Record {
            family: "dot",
            variant: cpu_name("scan"),
            shape: format!("{n}x{d}"),
            size: n as f64,
            dtype: "f32".into(),
            median_ms: ms,
            min_ms: ms,
            throughput: (2 * n * d * 4) as f64 / t.as_secs_f64() / 1e9,
            unit: "GB/s",
            rel_l2: rep.rel_l2,
            timer: "wall",
            wall_ms: ms,
            cpu: true,
        });
    }
    Ok(())
}

pub(crate) fn matmul_family(ctx: &Context, a: &Args, out: &mut Vec<Record>) -> R<()> {
    let sizes: &[usize] = if a.quick {
        &[128, 256, 512]
    } else {
        &[128, 256, 512, 1024, 2048]
    };
    for &s in sizes {
        eprintln!("matmul {s}^3");
        let x = common::data(s * s, 3);
        let y = common::data(s * s, 4);
        // Reference on 8 sampled rows.
        let rows: Vec<usize> = (0..8).map(|i| i * s / 8).collect();
        let xs: Vec<f32> = rows
            .iter()
            .flat_map(|&r| x[r * s..(r + 1) * s].to_vec())
            .collect();
        let want = reference::matmul::matmul(&xs, &y, 8, s, s, false, false);
        let tx = Tensor::from_slice(ctx, &x, &[s, s])?;
        let ty = Tensor::from_slice(ctx, &y, &[s, s])?;
        let o = Tensor::zeros(ctx, &[s, s], DType::F32)?;
        for v in MatmulVariant::all(ctx) {
            if v == MatmulVariant::Naive && s > 1024 {
                continue;
            }
            let opts = MatmulOptions::default().variant(v);
            o.poison()?;
            matmul::matmul_into(&tx, &ty, &opts, &o)?;
            let got = o.to_vec::<f32>()?;
            let gs: Vec<f32> = rows
                .iter()
                .flat_map(|&r| got[r * s..(r + 1) * s].to_vec())
                .collect();
            let rep = verify::compare(&gs, &want);
            if !rep.passes(1e-5) {
                return Err(fail(format!("matmul {v} {s}: {rep}")));
            }
            let t = common::time(ctx, a.reps, &format!("matmul {v} {s}"), || {
                matmul::matmul_into(&tx, &ty, &opts, &o)
            })?;
            out.push(Record {
                family: "matmul",
                variant: v.to_string(),
                shape: format!("{s}x{s}x{s}"),
                size: s as f64,
                dtype: "f32".into(),
                median_ms: t.median.as_secs_f64() * 1e3,
                min_ms: t.min.as_secs_f64() * 1e3,
                throughput: 2.0 * (s * s * s) as f64 / t.median.as_secs_f64() / 1e9,
                unit: "GFLOP/s",
                rel_l2: rep.rel_l2,
                timer: if t.gpu { "gpu" } else { "wall" },
                wall_ms: t.wall.as_secs_f64() * 1e3,
                cpu: false,
            });
        }
        let (got, t) = common::time_cpu(a.reps, &format!("matmul {s}"), || {
            cpu::matmul(&x, &y, s, s, s, false)
        });
        let gs: Vec<f32> = rows
            .iter()
            .flat_map(|&r| got[r * s..(r + 1) * s].to_vec())
            .collect();
        let rep = verify::compare(&gs, &want);
        if !rep.passes(1e-5) {
            return Err(fail(format!("CPU matmul {s}: {rep}")));
        }
        let ms = t.as_secs_f64() * 1e3;
        out.push(Record {
            family: "matmul",
            variant: cpu_name("gemm crate"),
            shape: format!("{s}x{s}x{s}"),
            size: s as f64,
            dtype: "f32".into(),
            median_ms: ms,
            min_ms: ms,
            throughput: 2.0 * (s * s * s) as f64 / t.as_secs_f64() / 1e9,
            unit: "GFLOP/s",
            rel_l2: rep.rel_l2,
            timer: "wall",
            wall_ms: ms,
            cpu: true,
        });
    }
    Ok(())
}

pub(crate) fn attention_family(ctx: &Context, a: &Args, out: &mut Vec<Record>) -> R<()> {
    let seqs: &[usize] = if a.quick {
        &[128, 256, 512]
    } else {
        &[256, 512, 1024, 2048]
    };
    let (h, d) = (8, 64);
    for &s in seqs {
        eprintln!("attention seq {s}");
        let q = common::data(h * s * d, 5);
        let k = common::data(h * s * d, 6);
        let v = common::data(h * s * d, 7);
        let t = |x: &[f32]| Tensor::from_slice(ctx, x, &[1, h, s, d]);
        let (tq, tk, tv) = (t(&q)?, t(&k)?, t(&v)?);
        let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
            q: &q[..s * d],
            k: &k[..s * d],
            v: &v[..s * d],
            dims: [1, 1, 1, s, s, d, d],
            layout: attention::Layout::Bhsd,
            causal: Causal::None,
            scale: None,
            kv_len: None,
            bias: None,
            ..Default::default()
        });
        let o = Tensor::zeros(ctx, &[1, h, s, d], DType::F32)?;
        for var in AttentionVariant::ALL {
            let opts = AttentionOptions::default().variant(var);
            o.poison()?;
            if let Err(e) = attention::attention_into(&tq, &tk, &tv, &opts, &o, None) {
                eprintln!("  {var:?}: {e}");
                continue;
            }
            let rep = verify::compare(&o.to_vec::<f32>()?[..s * d], &want);
            if !rep.passes(1e-5) {
                return Err(fail(format!("attention {var:?} seq {s}: {rep}")));
            }
            let tm = common::time(ctx, a.reps, &format!("attention {var:?} seq {s}"), || {
                attention::attention_into(&tq, &tk, &tv, &opts, &o, None)
            })?;
            out.push(Record {
                family: "attention",
                variant: format!("{var:?}"),
                shape: format!("1x{h}x{s}x{d}"),
                size: s as f64,
                dtype: "f32".into(),
                median_ms: tm.median.as_secs_f64() * 1e3,
                min_ms: tm.min.as_secs_f64() * 1e3,
                throughput: 4.0 * (h * s * s * d) as f64 / tm.median.as_secs_f64() / 1e9,
                unit: "GFLOP/s",
                rel_l2: rep.rel_l2,
                timer: if tm.gpu { "gpu" } else { "wall" },
                wall_ms: tm.wall.as_secs_f64() * 1e3,
                cpu: false,
            });
        }
        let (got, t) = common::time_cpu(a.reps, &format!("attention seq {s}"), || {
            cpu::attention(&q, &k, &v, h, s, d)
        });
        let rep = verify::compare(&got[..s * d], &want);
        if !rep.passes(1e-5) {
            return Err(fail(format!("CPU attention seq {s}: {rep}")));
        }
        let ms = t.as_secs_f64() * 1e3;
        out.push(Record {
            family: "attention",
            variant: cpu_name("GEMM + softmax"),
            shape: format!("1x{h}x{s}x{d}"),
            size: s as f64,
            dtype: "f32".into(),
            median_ms: ms,
            min_ms: ms,
            throughput: 4.0 * (h * s * s * d) as f64 / t.as_secs_f64() / 1e9,
            unit: "GFLOP/s",
            rel_l2: rep.rel_l2,
            timer: "wall",
            wall_ms: ms,
            cpu: true,
        });
    }
    Ok(())
}

pub(crate) fn search_family(ctx: &Context, a: &Args, out: &mut Vec<Record>) -> R<()> {
    let sizes: &[usize] = if a.quick {
        &[10_000, 50_000]
    } else {
        &[10_000, 50_000, 200_000]
    };
    let (d, k, m) = (768, 10, 1);
    for &n in sizes {
        eprintln!("search n={n} d={d}");
        let corpus = common::data(n * d, 8);
        let q = common::data(m * d, 9);
        let want = reference::search::topk(&q, &corpus, d, k);
        let want_ids: Vec<u32> = want[0].iter().map(|x| x.1).collect();
        for storage in [Storage::F32, Storage::F16, Storage::Int8] {
            if storage == Storage::F16 && !ctx.info().has_f16() {
                continue;
            }
            let mut ix = FlatIndex::new(ctx, d, IndexOptions::default().storage(storage))?;
            ix.add(&corpus)?;
            let res = ix.search(&q, k)?;
            let err: f64 = res
                .scores
                .iter()
                .zip(&want[0])
                .map(|(g, w)| (*g as f64 - w.0).powi(2))
                .sum::<f64>()
                .sqrt()
                / want[0].iter().map(|w| w.0 * w.0).sum::<f64>().sqrt();
            let got_ids: Vec<u32> = res.ids.iter().map(|&i| i as u32).collect();
            if storage == Storage::F32 && got_ids != want_ids {
                return Err(fail(format!(
                    "search f32 n={n}: ids differ from the reference"
                )));
            }
            let t = common::time(ctx, a.reps, &format!("search {storage:?} n={n}"), || {
                ix.search(&q, k).map(|_| ())
            })?;
            out.push(Record {
                family: "search",
                variant: format!("{storage:?}"),
                shape: format!("{n}x{d} k{k} m{m}"),
                size: n as f64,
                dtype: format!("{storage:?}").to_lowercase(),
                median_ms: t.median.as_secs_f64() * 1e3,
                min_ms: t.min.as_secs_f64() * 1e3,
                throughput: m as f64 / t.median.as_secs_f64(),
                unit: "queries/s",
                rel_l2: err,
                timer: if t.gpu { "gpu" } else { "wall" },
                wall_ms: t.wall.as_secs_f64() * 1e3,
                cpu: false,
            });
        }
        let (got, t) = common::time_cpu(a.reps, &format!("search n={n}"), || {
            cpu::topk(&corpus, &q, d, k)
        });
        if got.iter().map(|x| x.1).collect::<Vec<_>>() != want_ids {
            return Err(fail(format!(
                "CPU search n={n}: ids differ from the reference"
            )));
        }
        let err = (got.iter().zip(&want[0]))
            .map(|(g, w)| (g.0 as f64 - w.0).powi(2))
            .sum::<f64>()
            .sqrt()
            / want[0].iter().map(|w| w.0 * w.0).sum::<f64>().sqrt();
        let ms = t.as_secs_f64() * 1e3;
        out.push(Record {
            family: "search",
            variant: cpu_name("f32 scan"),
            shape: format!("{n}x{d} k{k} m{m}"),
            size: n as f64,
            dtype: "f32".into(),
            median_ms: ms,
            min_ms: ms,
            throughput: m as f64 / t.as_secs_f64(),
            unit: "queries/s",
            rel_l2: err,
            timer: "wall",
            wall_ms: ms,
            cpu: true,
        });
    }
    Ok(())
}
