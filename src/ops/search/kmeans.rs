//! k-means on the GPU, as FAISS's `Clustering` runs it (and the coarse
//! quantiser of [`IvfIndex`](super::IvfIndex) is trained by it). Kernel
//! source: `kmeans.wgsl`.
//!
//! Each iteration assigns every training point to its best centroid by
//! [`assign`](super::assign)'s kernel (a GEMM with the argmin fused, as FAISS
//! assigns), then recomputes each centroid as the mean
//! of its points by a reduction without float atomics: the host groups the
//! point numbers by cluster (a counting sort of the assignment it has read
//! back anyway) and a kernel whose workgroups each own one cluster and 64 of
//! its dimensions sums that cluster's rows. Empty clusters are split from a
//! large one as FAISS splits them; inner-product and cosine runs are
//! spherical (centroids normalised after each update, as FAISS's `IndexIVF`
//! trains for inner product); cosine runs cluster the normalised points.

use super::codec::{normalized, stored_norm};
use super::nearest::{Centroids, Points};
use super::plan::tensor_bind;
use crate::context::{Context, Spec};
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;
use crate::shader;
use crate::tensor::DType;

const OP: &str = "kmeans";
const SRC: &str = include_str!("kmeans.wgsl");
/// FAISS's relative perturbation of a split centroid (`EPS = 1 / 1024`).
const SPLIT_EPS: f32 = 1.0 / 1024.0;

crate::shader::params! {
    /// Mirrors `Params` in `kmeans.wgsl`.
    pub(crate) struct KMeansParams {
        /// Clusters.
        k: u32,
        /// Values per row.
        d: u32,
        _p0: u32,
        _p1: u32,
    }
}

crate::shader::defines! {
    /// Defines of `kmeans.wgsl` (none).
    pub(crate) enum KMeansDefine {}
}

/// The centroid-update kernel (one specialisation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KMeansSpec;

impl Spec for KMeansSpec {
    fn family(&self) -> &'static str {
        OP
    }
    fn entry(&self) -> &'static str {
        "centroid_means"
    }
    fn source(&self) -> Result<String> {
        shader::render::<KMeansDefine>(self, SRC, DType::F32, false, &[], &[])
    }
}

/// Options of [`kmeans`]; the defaults are FAISS's `ClusteringParameters`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KMeansOptions {
    /// How points are compared with centroids: inner product and cosine
    /// runs are spherical (unit centroids; cosine normalises the points
    /// too), L2 is plain k-means on squared distances.
    pub metric: Metric,
    /// Iterations (FAISS: 25).
    pub niter: usize,
    /// Seed of the initial centroids and of the training sample.
    pub seed: u64,
    /// At most `k · max_points_per_centroid` points train, sampled at
    /// random (FAISS: 256).
    pub max_points_per_centroid: usize,
    /// Initial centroids `[k, dim]` instead of `k` distinct random points.
    pub init: Option<Vec<f32>>,
}

impl Default for KMeansOptions {
    fn default() -> Self {
        KMeansOptions {
            metric: Metric::L2,
            niter: 25,
            seed: 1234,
            max_points_per_centroid: 256,
            init: None,
        }
    }
}

impl KMeansOptions {
    /// Options with `metric`.
    pub fn metric(mut self, metric: Metric) -> Self {
        self.metric = metric;
        self
    }
    /// Options with `niter` iterations.
    pub fn niter(mut self, niter: usize) -> Self {
        self.niter = niter;
        self
    }
    /// Options with `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Options with at most `n` training points per centroid.
    pub fn max_points_per_centroid(mut self, n: usize) -> Self {
        self.max_points_per_centroid = n;
        self
    }
    /// Options starting from `centroids` (`[k, dim]` row-major).
    pub fn init(mut self, centroids: Vec<f32>) -> Self {
        self.init = Some(centroids);
        self
    }
}

/// What [`kmeans`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KMeansResult {
    /// `[k, dim]` centroids after the last update (unit rows for inner
    /// product and cosine).
    pub centroids: Vec<f32>,
    /// Per iteration, the objective of its assignment: the sum over the
    /// training points of the squared distance to (L2) or the similarity
    /// with (inner product, cosine) their centroid — FAISS's
    /// `iteration_stats[i].obj`.
    pub objective: Vec<f64>,
    /// The training points (indices into the data, ascending), when more
    /// than `k · max_points_per_centroid` were given; else `None` (all).
    pub sample: Option<Vec<usize>>,
    /// `[k, dim]` centroids the first iteration started from (the init
    /// given, or the seeded pick): what a run elsewhere needs to start from
    /// the same place.
    pub initial: Vec<f32>,
    /// Each training point's cluster in the last iteration's assignment.
    pub assign: Vec<u32>,
    /// Imbalance factor of that assignment: `k · Σ size² / n²` (1 when
    /// every cluster has the same size).
    pub imbalance: f64,
    /// Empty clusters split from large ones, over all iterations.
    pub splits: usize,
}

/// A small seeded generator (splitmix64): the same init and sample on
/// every platform.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// The first `take` of a random permutation of `0..n` (partial
    /// Fisher–Yates).
    pub fn choose(&mut self, n: usize, take: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in 0..take.min(n) {
            let j = i + (self.next_u64() % (n - i) as u64) as usize;
            p.swap(i, j);
        }
        p.truncate(take);
        p
    }
}

/// Clusters the rows of `data` (`[n, dim]` row-major f32) into `k` clusters
/// on the GPU: FAISS's k-means (seeded init of `k` distinct points, `niter`
/// iterations, at most `max_points_per_centroid · k` points sampled, empty
/// clusters split).
///
/// Errors ([`Error::InvalidArgument`]): `dim`, `k` or `niter` 0; fewer
/// points than `k`; `init` not `[k, dim]`. [`Error::Shape`]: `data` not
/// whole rows of `dim`. [`Error::TooLarge`]: the training points over one
/// storage binding (lower `max_points_per_centroid`).
pub fn kmeans(
    ctx: &Context,
    data: &[f32],
    dim: usize,
    k: usize,
    opts: &KMeansOptions,
) -> Result<KMeansResult> {
    let bad = |detail: String| Err(Error::InvalidArgument { op: OP, detail });
    if dim == 0 || k == 0 || opts.niter == 0 || opts.max_points_per_centroid == 0 {
        return bad(format!(
            "dim, k, niter and max_points_per_centroid must be at least 1 \
             (got {dim}, {k}, {}, {})",
            opts.niter, opts.max_points_per_centroid
        ));
    }
    if !data.len().is_multiple_of(dim) {
        return Err(Error::Shape {
            op: OP,
            detail: format!("{} values are not whole rows of dim {dim}", data.len()),
        });
    }
    let n = data.len() / dim;
    if n < k {
        return bad(format!(
            "{n} training points for {k} clusters: need at least {k}"
        ));
    }
    if let Some(init) = &opts.init {
        if init.len() != k * dim {
            return bad(format!(
                "init has {} values, [k, dim] = [{k}, {dim}] needs {}",
                init.len(),
                k * dim
            ));
        }
    }
    // FAISS: the sample from seed + 1, the init from seed.
    let cap = k.saturating_mul(opts.max_points_per_centroid);
    let sample = (n > cap).then(|| {
        let mut s = SplitMix::new(opts.seed.wrapping_add(1)).choose(n, cap);
        s.sort_unstable();
        s
    });
    let mut points: Vec<f32> = match &sample {
        Some(s) => s
            .iter()
            .flat_map(|&i| &data[i * dim..(i + 1) * dim])
            .copied()
            .collect(),
        None => data.to_vec(),
    };
    if opts.metric == Metric::Cosine {
        points = points.chunks_exact(dim).flat_map(normalized).collect();
    }
    let centroids = match &opts.init {
        Some(c) => c.clone(),
        None => {
            let np = points.len() / dim;
            let pick = SplitMix::new(opts.seed).choose(np, k);
            pick.iter()
                .flat_map(|&i| &points[i * dim..(i + 1) * dim])
                .copied()
                .collect()
        }
    };
    let run = Run::new(ctx, &points, dim, k, opts.metric)?;
    let mut res = run.iterate(centroids.clone(), opts.niter)?;
    res.sample = sample;
    res.initial = centroids;
    Ok(res)
}

/// One k-means run: the training points on the device and the shape.
struct Run<'a> {
    ctx: &'a Context,
    points: crate::Tensor,
    host: &'a [f32],
    /// Σ ‖x‖² over the points.
    sq_norms: f64,
    n: usize,
    dim: usize,
    k: usize,
    metric: Metric,
}

impl<'a> Run<'a> {
    fn new(
        ctx: &'a Context,
        points: &'a [f32],
        dim: usize,
        k: usize,
        metric: Metric,
    ) -> Result<Self> {
        let n = points.len() / dim;
        let bytes = (points.len() * 4) as u64;
        if bytes > ctx.max_binding() {
            return Err(Error::TooLarge {
                op: OP,
                what: format!("training points [{n}, {dim}] f32 (lower max_points_per_centroid)"),
                size: bytes,
                limit: ctx.max_binding(),
                kind: crate::Limit::StorageBinding,
            });
        }
        Ok(Run {
            ctx,
            points: crate::Tensor::from_slice(ctx, points, &[n, dim])?,
            host: points,
            sq_norms: points
                .chunks_exact(dim)
                .map(|x| stored_norm(x) as f64)
                .sum(),
            n,
            dim,
            k,
            metric,
        })
    }

    fn iterate(&self, mut centroids: Vec<f32>, niter: usize) -> Result<KMeansResult> {
        let spherical = self.metric != Metric::L2;
        if spherical {
            centroids = centroids
                .chunks_exact(self.dim)
                .flat_map(normalized)
                .collect();
        }
        let mut res = KMeansResult {
            centroids: Vec::new(),
            objective: Vec::with_capacity(niter),
            sample: None,
            initial: Vec::new(),
            assign: Vec::new(),
            imbalance: 1.0,
            splits: 0,
        };
        // FAISS's split generator is seeded once per run.
        let mut rng = SplitMix::new(1234);
        for _ in 0..niter {
            // Texel copies straight from the device rows need whole vec4s.
            let points = match self.dim % 4 {
                0 => Points::Device(&self.points),
                _ => Points::Host(self.host),
            };
            let (assign, obj) = assign_points(
                self.ctx,
                points,
                &centroids,
                self.dim,
                self.metric,
                self.sq_norms,
            )?;
            res.objective.push(obj);
            let mut counts = vec![0usize; self.k];
            for &a in &assign {
                counts[a as usize] += 1;
            }
            res.imbalance = imbalance(&counts, self.n);
            centroids = self.means(&assign, &counts)?;
            res.splits += split_clusters(&mut centroids, &mut counts, self.dim, self.n, &mut rng);
            if spherical {
                centroids = centroids
                    .chunks_exact(self.dim)
                    .flat_map(normalized)
                    .collect();
            }
            res.assign = assign;
        }
        res.centroids = centroids;
        Ok(res)
    }

    /// Each cluster's mean on the device (zeros for an empty cluster).
    fn means(&self, assign: &[u32], counts: &[usize]) -> Result<Vec<f32>> {
        let ctx = self.ctx;
        let (k, d) = (self.k, self.dim);
        let mut offsets = vec![0u32; k + 1];
        for c in 0..k {
            offsets[c + 1] = offsets[c] + counts[c] as u32;
        }
        let mut at = offsets.clone();
        let mut order = vec![0u32; self.n];
        for (i, &a) in assign.iter().enumerate() {
            order[at[a as usize] as usize] = i as u32;
            at[a as usize] += 1;
        }
        let order = crate::Tensor::from_slice(ctx, &order, &[self.n])?;
        let offsets = crate::Tensor::from_slice(ctx, &offsets, &[k + 1])?;
        let means = crate::Tensor::zeros(ctx, &[k, d], DType::F32)?;
        let pipeline = ctx.pipeline(&KMeansSpec)?;
        ctx.scoped(OP, || {
            let p = KMeansParams {
                k: k as u32,
                d: d as u32,
                ..Default::default()
            };
            let ubuf = ctx.uniform(&p);
            let binds = [
                (1, tensor_bind(&self.points)),
                (2, tensor_bind(&order)),
                (3, tensor_bind(&offsets)),
                (4, tensor_bind(&means)),
            ];
            let max = ctx.profile().max_workgroups_per_dim as usize;
            let groups = (d.div_ceil(64) as u32, k.min(max) as u32, 1);
            let mut enc = ctx.encoder();
            ctx.dispatch(&mut enc, &pipeline, &ubuf, &binds, groups);
            ctx.submit(enc);
            Ok(())
        })?;
        means.to_vec::<f32>()
    }
}

/// Each point's best centroid by the nearest-centroid kernel (ties to the
/// lower centroid) and the objective: the sum of the squared distances
/// (L2) or similarities. `points` is `[n, dim]` f32, unit rows for cosine
/// (so that the ranking is an inner product); `sq_norms` is the sum of
/// their squared norms (L2's objective adds it).
pub(crate) fn assign_points(
    ctx: &Context,
    points: Points<'_>,
    centroids: &[f32],
    dim: usize,
    metric: Metric,
    sq_norms: f64,
) -> Result<(Vec<u32>, f64)> {
    let l2 = metric == Metric::L2;
    let (assign, scores) = Centroids::new(ctx, centroids, dim, l2)?.nearest(points)?;
    let sum: f64 = scores.iter().map(|&s| s as f64).sum();
    Ok((assign, if l2 { sq_norms + sum } else { -sum }))
}

/// FAISS's imbalance factor of cluster sizes `counts` over `n` points.
pub(crate) fn imbalance(counts: &[usize], n: usize) -> f64 {
    let ss: f64 = counts.iter().map(|&c| (c as f64) * (c as f64)).sum();
    ss * counts.len() as f64 / ((n as f64) * (n as f64))
}

/// FAISS's `split_clusters`: each empty cluster takes a copy of a cluster
/// picked with probability growing with its size, both perturbed by
/// `±SPLIT_EPS` in alternate dimensions, and half of its points (counted:
/// the next assignment moves them). Returns how many were split.
fn split_clusters(
    centroids: &mut [f32],
    counts: &mut [usize],
    dim: usize,
    n: usize,
    rng: &mut SplitMix,
) -> usize {
    let k = counts.len();
    let mut split = 0;
    for ci in 0..k {
        if counts[ci] != 0 {
            continue;
        }
        let mut cj = 0;
        loop {
            let p = (counts[cj] as f64 - 1.0) / (n - k).max(1) as f64;
            if rng.unit() < p {
                break;
            }
            cj = (cj + 1) % k;
        }
        let src: Vec<f32> = centroids[cj * dim..(cj + 1) * dim].to_vec();
        for (j, &v) in src.iter().enumerate() {
            let (up, down) = (v * (1.0 + SPLIT_EPS), v * (1.0 - SPLIT_EPS));
            let (a, b) = if j % 2 == 0 { (up, down) } else { (down, up) };
            centroids[ci * dim + j] = a;
            centroids[cj * dim + j] = b;
        }
        counts[ci] = counts[cj] / 2;
        counts[cj] -= counts[ci];
        split += 1;
    }
    split
}

#[cfg(test)]
pub(crate) fn reachable_specs() -> Vec<KMeansSpec> {
    vec![KMeansSpec]
}
