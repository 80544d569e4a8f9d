//! The kernel comparison report (in the spirit of llm.c's dev/cuda files): for
//! each kernel family and a sweep of sizes, validates every variant against the
//! CPU reference, then times them all (warm-up, median of repeats; GPU
//! timestamp queries where the adapter has them, wall clock around a device sync
//! otherwise) and prints one table per family with the ratio to the
//! family's first variant and the speed-up over a native CPU baseline measured
//! in the same run (multithreaded: the `gemm` crate for matmul and attention,
//! a scoped-thread scan for dots and search; wall clock against wall clock).
//! `--out DIR` also writes `results.json` (run metadata, then one record per
//! measurement) and one SVG chart per family (throughput vs the swept size, a
//! line per variant and one for the CPU). `--quick` runs a small sweep (the
//! default on a software adapter, where the full one takes minutes and ~9 GB),
//! `--full` the full one.

#[path = "common/mod.rs"]
mod common;
#[path = "common/cpu.rs"]
mod cpu;

use std::fmt::Write as _;

use clap::Parser;
use flashdot::ops::attention::{self, AttentionOptions, AttentionVariant, Causal};
use flashdot::ops::dot::{self, DotVariant};
use flashdot::ops::matmul::{self, MatmulOptions, MatmulVariant};
use flashdot::ops::search::{FlatIndex, IndexOptions, Storage};
use flashdot::{reference, verify, Context, DType, Tensor};

#[derive(Parser)]
#[command(about = "flashdot kernel comparison: validate, time and chart every variant")]
struct Args {
    /// Backend (default: best adapter).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
    /// Small sweep (under a minute on a software adapter) [default on a software adapter].
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Full sweep [default on a GPU].
    #[arg(long)]
    full: bool,
    /// Folder for results.json and the SVG charts.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Timed repetitions per measurement.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

#[derive(Debug, Clone)]
struct Record {
    family: &'static str,
    variant: String,
    shape: String,
    size: f64,
    dtype: String,
    median_ms: f64,
    min_ms: f64,
    throughput: f64,
    unit: &'static str,
    rel_l2: f64,
    timer: &'static str,
    /// Median wall time of a call and its sync, ms (the CPU comparison's basis).
    wall_ms: f64,
    /// The family's native CPU baseline (not a kernel).
    cpu: bool,
}

/// What each family's chart sweeps and measures.
struct Family {
    name: &'static str,
    x_title: &'static str,
    y_title: &'static str,
}

const FAMILIES: [Family; 4] = [
    Family {
        name: "dot",
        x_title: "rows n (two [n, 768] f32 inputs, one dot per row)",
        y_title: "GB/s read (higher is better)",
    },
    Family {
        name: "matmul",
        x_title: "n of an n × n × n f32 product",
        y_title: "GFLOP/s (higher is better)",
    },
    Family {
        name: "attention",
        x_title: "sequence length (batch 1, 8 heads, d 64, f32, not causal)",
        y_title: "GFLOP/s (higher is better)",
    },
    Family {
        name: "search",
        x_title: "corpus rows n (d 768, 1 query, top 10)",
        y_title: "queries/s (higher is better)",
    },
];

/// The CPU baseline's name, with its thread count.
fn cpu_name(what: &str) -> String {
    format!("CPU {what}, {} threads", cpu::threads())
}

type R<T> = Result<T, flashdot::Error>;

fn fail(what: String) -> flashdot::Error {
    flashdot::Error::InvalidArgument {
        op: "compare",
        detail: what,
    }
}

fn dot_family(ctx: &Context, a: &Args, out: &mut Vec<Record>) -> R<()> {
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

fn matmul_family(ctx: &Context, a: &Args, out: &mut Vec<Record>) -> R<()> {
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

fn attention_family(ctx: &Context, a: &Args, out: &mut Vec<Record>) -> R<()> {
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

fn search_family(ctx: &Context, a: &Args, out: &mut Vec<Record>) -> R<()> {
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

fn table(recs: &[Record], fam: &Family) -> String {
    let family = fam.name;
    let mut s = String::new();
    let rs: Vec<&Record> = recs.iter().filter(|r| r.family == family).collect();
    let base_name = rs
        .iter()
        .find(|r| !r.cpu)
        .map(|r| r.variant.clone())
        .unwrap_or_default();
    let timer = rs.iter().find(|r| !r.cpu).map_or("", |r| r.timer);
    let _ = writeln!(s, "\n## {family}: {}", fam.x_title);
    let _ = writeln!(
        s,
        "\nmedian ms: {timer} timer; vs {base_name}: ratio of medians; vs CPU: the CPU \
         baseline's wall time over this variant's (call + device sync), both measured in this run\n"
    );
    let _ = writeln!(
        s,
        "| shape | variant | median ms | throughput | vs {base_name} | vs CPU | rel L2 |"
    );
    let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &rs {
        let same = |b: &&&Record| b.shape == r.shape;
        let base = rs.iter().filter(same).find(|b| b.variant == base_name);
        let cpu = rs.iter().filter(same).find(|b| b.cpu);
        let ratio = match base {
            Some(b) if !r.cpu => format!("{:.2}x", b.median_ms / r.median_ms),
            _ => "-".into(),
        };
        let vs_cpu = match cpu {
            Some(c) if !r.cpu => format!("{:.2}x", c.wall_ms / r.wall_ms),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} {} | {} | {} | {:.1e} |",
            r.shape, r.variant, r.median_ms, r.throughput, r.unit, ratio, vs_cpu, r.rel_l2
        );
    }
    s
}

/// Who measured what, where and when: the charts' titles and results.json's
/// `meta`.
struct Meta {
    date: String,
    unix_time: u64,
    commit: Option<String>,
    host_cpu: String,
    adapter: String,
    backend: String,
    driver: String,
}

impl Meta {
    fn new(ctx: &Context) -> Meta {
        let info = ctx.info();
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let host_cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Meta {
            date: civil_date(unix_time),
            unix_time,
            commit,
            host_cpu: format!("{host_cpu} ({} threads)", cpu::threads()),
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: format!("{} {}", info.driver, info.driver_info),
        }
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time (days to civil date, proleptic
/// Gregorian).
fn civil_date(unix: u64) -> String {
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A JSON number, or the string "inf", "-inf" or "NaN" for a non-finite
/// value (JSON numbers cannot be non-finite: a kernel's NaN output must not
/// make the file invalid).
fn number(x: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(x) {
        Some(n) => serde_json::Value::Number(n),
        None if x.is_nan() => "NaN".into(),
        None if x > 0.0 => "inf".into(),
        None => "-inf".into(),
    }
}

/// `results.json`: run metadata and one record per measurement, written by
/// serde_json.
fn json(recs: &[Record], meta: &Meta, a: &Args) -> String {
    let records: Vec<serde_json::Value> = recs
        .iter()
        .map(|r| {
            serde_json::json!({
                "family": r.family,
                "variant": r.variant,
                "cpu_baseline": r.cpu,
                "shape": r.shape,
                "dtype": r.dtype,
                "median_ms": number(r.median_ms),
                "min_ms": number(r.min_ms),
                "wall_ms": number(r.wall_ms),
                "throughput": number(r.throughput),
                "unit": r.unit,
                "rel_l2": number(r.rel_l2),
                "timer": r.timer,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "meta": {
            "date": meta.date,
            "unix_time": meta.unix_time,
            "commit": meta.commit,
            "host_cpu": meta.host_cpu,
            "adapter": meta.adapter,
            "backend": meta.backend,
            "driver": meta.driver,
            "repetitions": a.reps,
            "quick": a.quick,
        },
        "records": records,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// XML text: the few characters that would break the SVG.
fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Throughput vs the swept size, log-2 x axis, one polyline per variant and
/// a dashed one for the CPU baseline; axis titles with units; adapter, host
/// and date in the title.
fn svg(recs: &[Record], fam: &Family, meta: &Meta) -> String {
    let rs: Vec<&Record> = recs.iter().filter(|r| r.family == fam.name).collect();
    // (variant, is the CPU baseline, (log2 size, throughput) points)
    type Line = (String, bool, Vec<(f64, f64)>);
    let mut lines: Vec<Line> = Vec::new();
    for r in &rs {
        match lines.iter_mut().find(|l| l.0 == r.variant) {
            Some(l) => l.2.push((r.size.log2(), r.throughput)),
            None => lines.push((
                r.variant.clone(),
                r.cpu,
                vec![(r.size.log2(), r.throughput)],
            )),
        }
    }
    let (w, h, l, b, t, rgt) = (960.0, 560.0, 90.0, 70.0, 70.0, 290.0);
    let xs: Vec<f64> = rs.iter().map(|r| r.size.log2()).collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::INFINITY, f64::min),
        xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    let ymax = rs.iter().map(|r| r.throughput).fold(0.0, f64::max) * 1.1 + 1e-9;
    let px = |x: f64| l + (x - x0) / (x1 - x0).max(1e-9) * (w - l - rgt);
    let py = |y: f64| h - b - y / ymax * (h - b - t);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(
        s,
        "<text x=\"{l}\" y=\"26\" font-size=\"16\">flashdot {}: {} vs {}</text>",
        fam.name,
        esc(fam.y_title.split(" (").next().unwrap_or(fam.y_title)),
        esc(fam.x_title.split(" (").next().unwrap_or(fam.x_title))
    );
    let _ = writeln!(
        s,
        "<text x=\"{l}\" y=\"46\" font-size=\"12\" fill=\"#444\">{} ({}) · host {} · {}</text>",
        esc(&meta.adapter),
        esc(&meta.backend),
        esc(&meta.host_cpu),
        meta.date
    );
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - b,
        w - rgt,
        h - b
    );
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>",
        h - b
    );
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        let label = if ymax >= 100.0 {
            format!("{y:.0}")
        } else {
            format!("{y:.1}")
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            l - 6.0,
            py(y) + 4.0
        );
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>",
            py(y),
            w - rgt
        );
    }
    let mut sizes: Vec<f64> = rs.iter().map(|r| r.size).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    for sz in sizes {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(sz.log2()),
            h - b + 20.0,
            sz
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} — log scale</text>",
        (l + w - rgt) / 2.0,
        h - 22.0,
        esc(fam.x_title)
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(22 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (t + h - b) / 2.0,
        esc(fam.y_title)
    );
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    for (i, (name, is_cpu, pts)) in lines.iter().enumerate() {
        let (c, dash) = if *is_cpu {
            ("#000", " stroke-dasharray=\"6 4\"")
        } else {
            (colors[i % colors.len()], "")
        };
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            path.join(" ")
        );
        for (x, y) in pts {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>",
                px(*x),
                py(*y)
            );
        }
        let ly = t + 20.0 * i as f64;
        let _ = writeln!(s, "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{}</text>", w - rgt + 15.0, ly, w - rgt + 35.0, ly + 6.0, esc(name));
    }
    s.push_str("</svg>\n");
    s
}

fn run(a: &Args) -> R<()> {
    let ctx = common::open(a.backend)?;
    let software = ctx.info().device_type == flashdot::wgpu::DeviceType::Cpu;
    let quick = a.quick || (software && !a.full);
    if quick && !a.quick {
        println!("software adapter: the quick sweep (--full for the full one)");
    }
    let a = &Args {
        quick,
        out: a.out.clone(),
        ..*a
    };
    let meta = Meta::new(&ctx);
    let mut recs = Vec::new();
    dot_family(&ctx, a, &mut recs)?;
    matmul_family(&ctx, a, &mut recs)?;
    attention_family(&ctx, a, &mut recs)?;
    search_family(&ctx, a, &mut recs)?;
    println!(
        "# flashdot kernel comparison\n\n{} ({}, {}) · host {} · {}{} · {} repetitions{}",
        meta.adapter,
        meta.backend,
        meta.driver.trim(),
        meta.host_cpu,
        meta.date,
        meta.commit
            .as_ref()
            .map(|c| format!(" · commit {c}"))
            .unwrap_or_default(),
        a.reps,
        if a.quick { " · quick sweep" } else { "" }
    );
    for f in &FAMILIES {
        print!("{}", table(&recs, f));
    }
    if let Some(dir) = &a.out {
        let io = |e: std::io::Error| fail(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::write(dir.join("results.json"), json(&recs, &meta, a)).map_err(io)?;
        for f in &FAMILIES {
            std::fs::write(dir.join(format!("{}.svg", f.name)), svg(&recs, f, &meta))
                .map_err(io)?;
        }
        println!(
            "\nwrote {}/results.json and one SVG per family",
            dir.display()
        );
    }
    Ok(())
}

fn main() {
    env_logger::init();
    let a = Args::parse();
    common::exit_on_error(run(&a));
}
