//! The report: one table per family, `results.json`, and one SVG chart per
//! family.

use std::fmt::Write as _;

use flashdot::Context;

use crate::{cpu, Args, Family, Record};

pub(crate) fn table(recs: &[Record], fam: &Family) -> String {
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
pub(crate) struct Meta {
    pub(crate) date: String,
    pub(crate) unix_time: u64,
    pub(crate) commit: Option<String>,
    pub(crate) host_cpu: String,
    pub(crate) adapter: String,
    pub(crate) backend: String,
    pub(crate) driver: String,
}

impl Meta {
    pub(crate) fn new(ctx: &Context) -> Meta {
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
pub(crate) fn json(recs: &[Record], meta: &Meta, a: &Args) -> String {
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
/// A line of a chart: the variant, whether it is the CPU baseline, and its
/// (log2 size, throughput) points.
type Line = (String, bool, Vec<(f64, f64)>);

/// A chart's geometry: the canvas, its margins and the data ranges.
struct Frame {
    w: f64,
    h: f64,
    l: f64,
    b: f64,
    t: f64,
    rgt: f64,
    x0: f64,
    x1: f64,
    ymax: f64,
}

impl Frame {
    fn new(rs: &[&Record]) -> Frame {
        let xs: Vec<f64> = rs.iter().map(|r| r.size.log2()).collect();
        Frame {
            w: 960.0,
            h: 560.0,
            l: 90.0,
            b: 70.0,
            t: 70.0,
            rgt: 290.0,
            x0: xs.iter().cloned().fold(f64::INFINITY, f64::min),
            x1: xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            ymax: rs.iter().map(|r| r.throughput).fold(0.0, f64::max) * 1.1 + 1e-9,
        }
    }
    fn px(&self, x: f64) -> f64 {
        self.l + (x - self.x0) / (self.x1 - self.x0).max(1e-9) * (self.w - self.l - self.rgt)
    }
    fn py(&self, y: f64) -> f64 {
        self.h - self.b - y / self.ymax * (self.h - self.b - self.t)
    }
}

pub(crate) fn svg(recs: &[Record], fam: &Family, meta: &Meta) -> String {
    let rs: Vec<&Record> = recs.iter().filter(|r| r.family == fam.name).collect();
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
    let f = Frame::new(&rs);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n", f.w, f.h);
    title(&mut s, &f, fam, meta);
    let mut sizes: Vec<f64> = rs.iter().map(|r| r.size).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    axes(&mut s, &f, fam, &sizes);
    plot(&mut s, &f, &lines);
    s.push_str("</svg>\n");
    s
}

/// The chart's title and its run line (adapter, host, date).
fn title(s: &mut String, f: &Frame, fam: &Family, meta: &Meta) {
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"26\" font-size=\"16\">flashdot {}: {} vs {}</text>",
        f.l,
        fam.name,
        esc(fam.y_title.split(" (").next().unwrap_or(fam.y_title)),
        esc(fam.x_title.split(" (").next().unwrap_or(fam.x_title))
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"46\" font-size=\"12\" fill=\"#444\">{} ({}) · host {} · {}</text>",
        f.l,
        esc(&meta.adapter),
        esc(&meta.backend),
        esc(&meta.host_cpu),
        meta.date
    );
}

/// Both axes with their ticks, grid lines and titles.
fn axes(s: &mut String, f: &Frame, fam: &Family, sizes: &[f64]) {
    let (w, h, l, b, t, rgt) = (f.w, f.h, f.l, f.b, f.t, f.rgt);
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
        let y = f.ymax * i as f64 / 4.0;
        let label = if f.ymax >= 100.0 {
            format!("{y:.0}")
        } else {
            format!("{y:.1}")
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            l - 6.0,
            f.py(y) + 4.0
        );
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>",
            f.py(y),
            w - rgt
        );
    }
    for &sz in sizes {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            f.px(sz.log2()),
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
}

/// One polyline with its points per variant (the CPU dashed), and the legend.
fn plot(s: &mut String, f: &Frame, lines: &[Line]) {
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
            .map(|(x, y)| format!("{:.1},{:.1}", f.px(*x), f.py(*y)))
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
                f.px(*x),
                f.py(*y)
            );
        }
        let ly = f.t + 20.0 * i as f64;
        let _ = writeln!(s, "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{}</text>", f.w - f.rgt + 15.0, ly, f.w - f.rgt + 35.0, ly + 6.0, esc(name));
    }
}
