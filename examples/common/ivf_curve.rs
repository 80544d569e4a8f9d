//! The IVF recall–throughput curve, shared by `examples/ivf_curve.rs` and the
//! comparison report: a synthetic clustered corpus, the flat index's exact
//! results and timings, then an `IvfIndex` trained on it and searched at
//! each `nprobe` (recall@10 against the flat index, one query and a batch,
//! grouped by list and not).
//!
//! The corpus: `clusters` centres drawn from N(0, diag(s²)) and each vector a
//! centre plus `spread`·N(0, diag(s²)), where s_j = (1 + j)^(−1/2): a
//! power-law spectrum like that of sentence embeddings (a few directions
//! carry most of the variance). Spread 0.5 gives well-separated clusters,
//! 1.0 overlapping ones.
#![allow(dead_code)]

use std::time::Instant;

use flashdot::ops::search::{
    FlatIndex, IndexOptions, IvfIndex, IvfOptions, IvfSearchParams, KMeansOptions, Storage,
};
use flashdot::ops::similarity::Metric;
use flashdot::Context;

/// splitmix64 and Box–Muller: the same corpus on every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let a = self.unit().max(1e-12);
        let b = self.unit();
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    }
}

/// `n` vectors around `centres` (`[clusters, dim]`), scaled by `scale`.
fn draw(r: &mut Rng, n: usize, centres: &[f32], scale: &[f32], spread: f32) -> Vec<f32> {
    let d = scale.len();
    let nc = centres.len() / d;
    let mut v = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = ((r.unit() * nc as f64) as usize).min(nc - 1);
        v.extend((0..d).map(|j| centres[c * d + j] + spread * scale[j] * r.normal()));
    }
    v
}

/// A clustered corpus and its queries (at least 31, for the one-query
/// medians; the batch is the first `batch`).
pub struct Corpus {
    pub dim: usize,
    pub vectors: Vec<f32>,
    pub queries: Vec<f32>,
    pub batch: usize,
}

impl Corpus {
    /// `n` vectors of `dim` around `clusters` centres (see the module doc).
    pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, batch: usize) -> Corpus {
        let scale: Vec<f32> = (0..dim).map(|j| (1.0 + j as f32).powf(-0.5)).collect();
        let mut r = Rng(7);
        let centres: Vec<f32> = (0..clusters * dim)
            .map(|i| scale[i % dim] * r.normal())
            .collect();
        let vectors = draw(&mut r, n, &centres, &scale, spread);
        let queries = draw(&mut r, batch.max(31), &centres, &scale, spread);
        Corpus {
            dim,
            vectors,
            queries,
            batch,
        }
    }

    fn one(&self, i: usize) -> &[f32] {
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }

    fn batch(&self) -> &[f32] {
        &self.queries[..self.batch * self.dim]
    }

    /// Writes DIR/corpus.fvecs and DIR/queries.fvecs (the batch), which
    /// `scripts/faiss-ivf.py` reads.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_fvecs(&dir.join("corpus.fvecs"), &self.vectors, self.dim)?;
        write_fvecs(&dir.join("queries.fvecs"), self.batch(), self.dim)
    }
}

/// Writes `rows` (`[n, dim]`) as `.fvecs`: per vector its dim (i32) and
/// its values (f32), little-endian.
/// The training run's points, initial centroids and objectives, for a
/// k-means elsewhere from the same start.
fn write_training(
    dir: &std::path::Path,
    c: &Corpus,
    tr: &flashdot::ops::search::KMeansResult,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let d = c.dim;
    let rows: Vec<f32> = match &tr.sample {
        Some(s) => s
            .iter()
            .flat_map(|&i| &c.vectors[i * d..(i + 1) * d])
            .copied()
            .collect(),
        None => c.vectors.clone(),
    };
    write_fvecs(&dir.join("train.fvecs"), &rows, d)?;
    write_fvecs(&dir.join("init.fvecs"), &tr.initial, d)?;
    let obj: String = tr.objective.iter().map(|o| format!("{o:.9e}\n")).collect();
    std::fs::write(dir.join("objective.txt"), obj)
}

fn write_fvecs(path: &std::path::Path, rows: &[f32], dim: usize) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(rows.len() / dim * (dim + 1) * 4);
    for row in rows.chunks_exact(dim) {
        bytes.extend_from_slice(&(dim as i32).to_le_bytes());
        row.iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    }
    std::fs::write(path, bytes)
}

/// The median of `reps` timings of `f`, in seconds.
fn median(reps: usize, mut f: impl FnMut(usize) -> flashdot::Result<()>) -> flashdot::Result<f64> {
    let mut t = Vec::with_capacity(reps);
    for i in 0..reps {
        let s = Instant::now();
        f(i)?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[reps / 2])
}

/// What the curve builds: the IVF index's lists, metric and storage, its
/// k-means run, and the nprobe values measured (those past `nlist` are
/// left out).
pub struct CurveOptions {
    pub nlist: usize,
    pub metric: Metric,
    pub storage: Storage,
    pub niter: usize,
    pub points_per_list: usize,
    pub nprobe: Vec<usize>,
    /// Write the k-means training points, its initial centroids and its
    /// objective per iteration here (DIR/train.fvecs, init.fvecs,
    /// objective.txt: scripts/faiss-kmeans.py runs FAISS from them).
    pub write_training: Option<std::path::PathBuf>,
}

/// One nprobe's row: recall@10 against the flat index, the one-query
/// median and the batch's times, in seconds.
pub struct Point {
    pub nprobe: usize,
    pub recall: f64,
    pub one: f64,
    pub grouped: f64,
    pub ungrouped: f64,
}

/// The flat index's times (seconds), training and add (seconds), the
/// k-means objective and list imbalance, device bytes, and one point per
/// nprobe.
pub struct Curve {
    pub flat_one: f64,
    pub flat_batch: f64,
    pub train: f64,
    pub add: f64,
    pub objective: f64,
    pub imbalance: f64,
    pub flat_bytes: u64,
    pub ivf_bytes: u64,
    pub points: Vec<Point>,
}

/// Measures the curve on `c`; `say` gets a progress line after each stage.
pub fn measure(
    ctx: &Context,
    c: &Corpus,
    o: &CurveOptions,
    say: &mut dyn FnMut(String),
) -> flashdot::Result<Curve> {
    let d = c.dim;
    let mut flat = FlatIndex::new(ctx, d, IndexOptions::default().metric(o.metric))?;
    for part in c.vectors.chunks(50_000 * d) {
        flat.add(part)?;
    }
    // Warm: the first call of each kernel compiles it.
    flat.search(c.one(0), 10)?;
    flat.search(c.batch(), 10)?;
    let t = Instant::now();
    let exact = flat.search(c.batch(), 10)?;
    let flat_batch = t.elapsed().as_secs_f64();
    let flat_one = median(11, |i| flat.search(c.one(i), 10).map(|_| ()))?;
    say(format!(
        "flat f32: 1 query {:.2} ms ({:.1} q/s); batch {:.0} ms ({:.0} q/s)",
        flat_one * 1e3,
        1.0 / flat_one,
        flat_batch * 1e3,
        c.batch as f64 / flat_batch
    ));
    let km = KMeansOptions::default()
        .niter(o.niter)
        .max_points_per_centroid(o.points_per_list);
    let opts = IvfOptions::new(o.nlist)
        .metric(o.metric)
        .storage(o.storage)
        .kmeans(km);
    let mut ivf = IvfIndex::new(ctx, d, opts)?;
    let t = Instant::now();
    ivf.train(&c.vectors)?;
    let train = t.elapsed().as_secs_f64();
    let (objective, imbalance) = ivf.training().map_or((f64::NAN, f64::NAN), |tr| {
        (
            tr.objective.last().copied().unwrap_or(f64::NAN),
            tr.imbalance,
        )
    });
    if let (Some(dir), Some(tr)) = (&o.write_training, ivf.training()) {
        write_training(dir, c, tr).map_err(|e| flashdot::Error::InvalidArgument {
            op: "ivf_curve",
            detail: format!("writing {}: {e}", dir.display()),
        })?;
    }
    say(format!(
        "train: {} lists in {train:.1} s ({} iterations, {} points a list), objective {objective:.6e}, imbalance {imbalance:.3}",
        o.nlist, o.niter, o.points_per_list
    ));
    let t = Instant::now();
    ivf.add(&c.vectors)?;
    let add = t.elapsed().as_secs_f64();
    say(format!(
        "add: {add:.1} s, list imbalance {:.3}",
        ivf.imbalance()
    ));
    let mut points = Vec::new();
    for &np in o.nprobe.iter().filter(|&&p| (1..=o.nlist).contains(&p)) {
        let p = IvfSearchParams::nprobe(np);
        ivf.search_with(c.one(0), 10, p)?;
        for g in [true, false] {
            ivf.search_with(c.batch(), 10, p.group_queries(g))?;
        }
        let t = Instant::now();
        let got = ivf.search_with(c.batch(), 10, p.group_queries(true))?;
        let grouped = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ivf.search_with(c.batch(), 10, p.group_queries(false))?;
        let ungrouped = t.elapsed().as_secs_f64();
        let one = median(31, |i| ivf.search_with(c.one(i), 10, p).map(|_| ()))?;
        let hits: usize = got
            .ids
            .chunks(10)
            .zip(exact.ids.chunks(10))
            .map(|(g, e)| g.iter().filter(|x| e.contains(x)).count())
            .sum();
        points.push(Point {
            nprobe: np,
            recall: hits as f64 / exact.ids.len() as f64,
            one,
            grouped,
            ungrouped,
        });
    }
    Ok(Curve {
        flat_one,
        flat_batch,
        train,
        add,
        objective,
        imbalance,
        flat_bytes: flat.bytes(),
        ivf_bytes: ivf.bytes(),
        points,
    })
}

impl Curve {
    /// The table ivf_curve prints and the report shows: one row per nprobe.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| nprobe | recall@10 | 1 query ms | vs flat | batch ms (grouped) | vs flat | batch ms (ungrouped) | vs flat |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        s.push_str(&format!(
            "| flat | 1.000 | {:.2} | 1.00x | {:.1} | 1.00x | {:.1} | 1.00x |\n",
            self.flat_one * 1e3,
            self.flat_batch * 1e3,
            self.flat_batch * 1e3
        ));
        for p in &self.points {
            s.push_str(&format!(
                "| {} | {:.3} | {:.2} | {:.1}x | {:.1} | {:.1}x | {:.1} | {:.1}x |\n",
                p.nprobe,
                p.recall,
                p.one * 1e3,
                self.flat_one / p.one,
                p.grouped * 1e3,
                self.flat_batch / p.grouped,
                p.ungrouped * 1e3,
                self.flat_batch / p.ungrouped
            ));
        }
        s
    }
}
