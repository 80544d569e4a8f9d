//! Each point's nearest centroid on the GPU ([`assign`]): k-means
//! assignment and the lists of an inverted-file add. Kernel source:
//! `nearest.wgsl`.
//!
//! FAISS assigns by a GEMM and an argmin (`exhaustive_L2sqr_blas` on the
//! CPU, `bfKnn` with k = 1 on the GPU); so does this: the matmul's register
//! tiling with the argmin fused into its epilogue, so that the points ×
//! centroids scores never reach memory. The flat index's scan, built for a
//! few queries over a large corpus, reads its queries through a uniform
//! block a few at a time; here the points are the large side, and one
//! workgroup's TM points share every centroid read.

use super::codec::normalized;
use super::flat::check_tensor;
use crate::context::{vec4_format, vec4_texture, Bind, Context, DeviceProfile, Spec, TexelGrid};
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;
use crate::shader;
use crate::tensor::{DType, Tensor};

const OP: &str = "assign";
const SRC: &str = include_str!("nearest.wgsl");
/// Bytes of points one dispatch reads at most (a batch).
const BATCH_BYTES: usize = 64 << 20;

crate::shader::params! {
    /// Mirrors `Params` in `nearest.wgsl`.
    pub(crate) struct NearestParams {
        /// Points in the dispatch.
        n: u32,
        /// Centroids.
        k: u32,
        /// Values per point row (storage points).
        d: u32,
        /// vec4s per row.
        dv4: u32,
        /// 2 for squared L2, 1 for inner product.
        alpha: f32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

crate::shader::defines! {
    /// Defines of `nearest.wgsl`.
    pub(crate) enum NearestDefine {
        Texel = "TEXEL",
        Sg = "SG",
    }
}

/// Binding slots of `nearest.wgsl` (0 is the params).
mod slot {
    pub const POINTS: u32 = 1;
    pub const CENTROIDS: u32 = 2;
    pub const NORMS: u32 = 3;
    pub const OUT: u32 = 4;
}

/// The nearest-centroid kernel's specialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct NearestSpec {
    /// Invocations per workgroup.
    pub wg: u32,
    /// Points per workgroup.
    pub tm: u32,
    /// Centroids per invocation and step.
    pub tn: u32,
    /// Points and centroids read as textures of this layout.
    pub texel: Option<TexelGrid>,
    /// Point rows shared among 8 lanes by subgroup broadcast (tm a
    /// multiple of 8).
    pub sg: bool,
}

impl Spec for NearestSpec {
    fn family(&self) -> &'static str {
        "nearest"
    }
    fn entry(&self) -> &'static str {
        "nearest"
    }
    fn source(&self) -> Result<String> {
        let mut defines = Vec::new();
        let mut consts = vec![("WG", self.wg), ("TM", self.tm), ("TN", self.tn)];
        if let Some(g) = self.texel {
            defines.push(NearestDefine::Texel);
            consts.extend([("WSH", g.wsh), ("LSH", g.lsh)]);
        }
        if self.sg {
            defines.push(NearestDefine::Sg);
            consts.push(("TMF", self.tm / 8));
        }
        shader::render(self, SRC, DType::F32, false, &defines, &consts)
    }
}

/// The kernel for this profile: on software adapters one 8-lane SIMD slice
/// per workgroup over 32 points × 64 centroids (the matmul's texel tiles:
/// no barrier but the final one, each fetched centroid vec4 feeding 32
/// points); on GPUs 64 invocations over 8 points × 256 centroids, point rows
/// broadcast within subgroups. `texel`: the points can be read as textures
/// (rows whole vec4s) in the layout given.
fn spec(profile: &DeviceProfile, texel: Option<TexelGrid>) -> NearestSpec {
    let sg = profile.subgroups_of_8;
    if profile.texel_reads {
        NearestSpec {
            wg: 8,
            tm: 32,
            tn: 8,
            texel,
            sg,
        }
    } else {
        NearestSpec {
            wg: 64,
            tm: 8,
            tn: 4,
            texel: None,
            sg,
        }
    }
}

/// Every spec [`spec`] produces on `profiles` (for the WGSL validation).
#[cfg(test)]
pub(crate) fn reachable_specs(profiles: &[DeviceProfile]) -> Vec<NearestSpec> {
    let mut v = Vec::new();
    for p in profiles {
        for texel in [None, TexelGrid::new(p, &[1 << 20])] {
            let s = spec(p, texel);
            if !v.contains(&s) {
                v.push(s);
            }
        }
    }
    v
}

/// What [`assign`] found: per point its nearest centroid and the distance
/// to it (squared L2) or the similarity with it (inner product, cosine) —
/// FAISS's `index.search(x, 1)` over the centroids.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Assignment {
    /// `[n]` centroid numbers (ties to the lower).
    pub labels: Vec<u32>,
    /// `[n]` squared distances (L2) or similarities.
    pub distances: Vec<f32>,
}

/// Each row of `data` (`[n, dim]` f32) assigned to its nearest row of
/// `centroids` (`[k, dim]` f32) under `metric` (the highest inner product
/// or cosine, the lowest squared L2), on the GPU — what a k-means
/// clustering ([`kmeans`](super::kmeans)) then needs to label new points.
///
/// Errors: [`Error::Shape`] for `data` or `centroids` not whole rows of
/// `dim`; [`Error::InvalidArgument`] for `dim` 0 or no centroids;
/// [`Error::TooLarge`] for centroids past one storage binding on an
/// adapter that reads them from storage.
pub fn assign(
    ctx: &Context,
    data: &[f32],
    centroids: &[f32],
    dim: usize,
    metric: Metric,
) -> Result<Assignment> {
    check_centroids(centroids, dim)?;
    if !data.len().is_multiple_of(dim) {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "data: {} values are not whole rows of dim {dim}",
                data.len()
            ),
        });
    }
    let data: Vec<f32> = match metric {
        Metric::Cosine => data.chunks_exact(dim).flat_map(normalized).collect(),
        _ => data.to_vec(),
    };
    let c = Centroids::for_metric(ctx, centroids, dim, metric)?;
    let (labels, scores) = c.nearest(Points::Host(&data))?;
    let norms = data.chunks_exact(dim).map(super::codec::stored_norm);
    let distances = c.distances(&scores, norms);
    Ok(Assignment { labels, distances })
}

/// [`assign`] for the rows of a device tensor `x` (`[n, dim]` f32, e.g.
/// embeddings a model produced on the GPU): only the labels and
/// distances are read back.
///
/// Errors: as [`assign`]; [`Error::DType`] unless `x` is f32,
/// [`Error::Shape`] unless it is `[n, dim]` for the centroids' `dim`.
pub fn assign_tensor(
    x: &Tensor,
    centroids: &[f32],
    dim: usize,
    metric: Metric,
) -> Result<Assignment> {
    let ctx = x.context();
    check_centroids(centroids, dim)?;
    check_tensor(ctx, dim, OP, "x", "n", x)?;
    let x = match metric {
        Metric::Cosine => crate::ops::similarity::normalize(&x.contiguous()?)?,
        _ => x.contiguous()?,
    };
    let c = Centroids::for_metric(ctx, centroids, dim, metric)?;
    let (labels, scores) = c.nearest(Points::Device(&x))?;
    // Only L2's distances need the points' norms.
    let norms = match c.l2 && !labels.is_empty() {
        true => crate::ops::dot::dot(&x, &x)?.to_vec::<f32>()?,
        false => Vec::new(),
    };
    let distances = c.distances(&scores, norms.into_iter());
    Ok(Assignment { labels, distances })
}

/// Fails unless `centroids` are one or more whole rows of `dim` ≥ 1.
fn check_centroids(centroids: &[f32], dim: usize) -> Result<()> {
    if dim == 0 || centroids.is_empty() {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: format!(
                "dim {dim} with {} centroid values: need dim ≥ 1 and one centroid",
                centroids.len()
            ),
        });
    }
    if !centroids.len().is_multiple_of(dim) {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "centroids: {} values are not whole rows of dim {dim}",
                centroids.len()
            ),
        });
    }
    Ok(())
}

/// Points to assign: host rows or a device tensor, both `[n, dim]` f32.
#[derive(Clone, Copy)]
pub(crate) enum Points<'a> {
    Host(&'a [f32]),
    Device(&'a Tensor),
}

/// Centroids on the device, ready to assign points to: rows zero-padded to
/// whole vec4s, and their squared norms (L2) or zeros.
#[derive(Debug)]
pub(crate) struct Centroids {
    ctx: Context,
    k: usize,
    dim: usize,
    dv4: usize,
    l2: bool,
    rows: Tensor,
    norms: Tensor,
}

impl Centroids {
    /// `centroids` (`[k, dim]`, k ≥ 1) for the squared L2 ranking (`l2`) or
    /// the inner product.
    ///
    /// Errors: [`Error::TooLarge`] for rows past one storage binding when
    /// the adapter reads them from storage.
    pub fn new(ctx: &Context, centroids: &[f32], dim: usize, l2: bool) -> Result<Self> {
        let k = centroids.len() / dim;
        let dv4 = dim.div_ceil(4);
        let bytes = (k * dv4 * 16) as u64;
        if !ctx.profile().texel_reads && bytes > ctx.max_binding() {
            return Err(Error::TooLarge {
                op: OP,
                what: format!("centroids [{k}, {dim}] f32"),
                size: bytes,
                limit: ctx.max_binding(),
                kind: crate::Limit::StorageBinding,
            });
        }
        let padded = pad_rows(centroids, dim, dv4 * 4);
        let norms: Vec<f32> = match l2 {
            true => centroids
                .chunks_exact(dim)
                .map(super::codec::stored_norm)
                .collect(),
            false => vec![0.0; k],
        };
        Ok(Centroids {
            ctx: ctx.clone(),
            k,
            dim,
            dv4,
            l2,
            rows: Tensor::from_slice(ctx, &padded, &[k, dv4 * 4])?,
            norms: Tensor::from_slice(ctx, &norms, &[k])?,
        })
    }

    /// `centroids` ranked as `metric` ranks them: squared L2, or the inner
    /// product with unit rows for cosine (a point's norm scales all its
    /// similarities alike, so the points need not be normalised to rank).
    ///
    /// Errors: as [`new`](Self::new).
    pub fn for_metric(
        ctx: &Context,
        centroids: &[f32],
        dim: usize,
        metric: Metric,
    ) -> Result<Self> {
        match metric {
            Metric::Cosine => {
                let unit: Vec<f32> = centroids.chunks_exact(dim).flat_map(normalized).collect();
                Centroids::new(ctx, &unit, dim, false)
            }
            _ => Centroids::new(ctx, centroids, dim, metric == Metric::L2),
        }
    }

    /// [`nearest`](Self::nearest)'s scores as distances: squared L2 from
    /// the points' squared norms `sq_norms` (read only for L2), or the
    /// similarities.
    fn distances(&self, scores: &[f32], sq_norms: impl Iterator<Item = f32>) -> Vec<f32> {
        match self.l2 {
            true => scores
                .iter()
                .zip(sq_norms)
                .map(|(&s, q)| clamp_distance(q as f64 + s as f64))
                .collect(),
            false => scores.iter().map(|&s| -s).collect(),
        }
    }

    /// Each point's best centroid and its score: `‖c‖² − 2·x·c` (L2: the
    /// squared distance less `‖x‖²`) or `−x·c`. Points are read in batches
    /// of at most [`BATCH_BYTES`], one dispatch and one readback each.
    pub fn nearest(&self, points: Points<'_>) -> Result<(Vec<u32>, Vec<f32>)> {
        let n = match points {
            Points::Host(p) => p.len() / self.dim,
            Points::Device(t) => t.shape()[0],
        };
        if n == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let profile = self.ctx.profile();
        let row = self.dv4 * 16;
        let whole_vec4s = matches!(points, Points::Host(_)) || self.dim.is_multiple_of(4);
        let batch = (BATCH_BYTES / row)
            .min(self.ctx.max_binding() as usize / row)
            .clamp(1, n);
        let grid = (profile.texel_reads && whole_vec4s)
            .then(|| {
                let texels = [(batch * self.dv4) as u64, (self.k * self.dv4) as u64];
                TexelGrid::new(profile, &texels)
            })
            .flatten();
        let spec = spec(profile, grid);
        let pipeline = self.ctx.pipeline(&spec)?;
        let (mut labels, mut scores) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut r0 = 0;
        while r0 < n {
            let b = batch.min(n - r0);
            let pts = match points {
                Points::Host(p) => {
                    let rows = &p[r0 * self.dim..(r0 + b) * self.dim];
                    match grid {
                        Some(_) => {
                            let padded = pad_rows(rows, self.dim, self.dv4 * 4);
                            Tensor::from_slice(&self.ctx, &padded, &[b, self.dv4 * 4])?
                        }
                        None => Tensor::from_slice(&self.ctx, rows, &[b, self.dim])?,
                    }
                }
                Points::Device(t) => t.narrow(0, r0, b)?.contiguous()?,
            };
            let out = self.dispatch(&spec, &pipeline, &pts, b)?;
            for pair in out.chunks_exact(2) {
                labels.push(pair[0]);
                scores.push(f32::from_bits(pair[1]));
            }
            r0 += b;
        }
        Ok((labels, scores))
    }

    /// One batch of `b` points: (centroid, score bits) per point.
    fn dispatch(
        &self,
        spec: &NearestSpec,
        pipeline: &wgpu::ComputePipeline,
        pts: &Tensor,
        b: usize,
    ) -> Result<Vec<u32>> {
        let ctx = &self.ctx;
        let out = Tensor::empty(ctx, &[2 * b], DType::U32)?;
        ctx.scoped(OP, || {
            let p = NearestParams {
                n: b as u32,
                k: self.k as u32,
                d: self.dim as u32,
                dv4: self.dv4 as u32,
                alpha: if self.l2 { 2.0 } else { 1.0 },
                ..Default::default()
            };
            let ubuf = ctx.uniform(&p);
            let mut enc = ctx.encoder();
            let made = spec.texel.map(|grid| {
                let f = vec4_format(DType::F32);
                [(pts, b), (&self.rows, self.k)].map(|(t, rows)| {
                    let texels = (rows * self.dv4) as u64;
                    vec4_texture(
                        ctx,
                        &mut enc,
                        (t.buffer(), t.offset()),
                        texels,
                        f,
                        grid,
                        "nearest texels",
                    )
                })
            });
            let mut binds = match &made {
                Some([pt, ct]) => vec![
                    (slot::POINTS, Bind::pooled(pt)),
                    (slot::CENTROIDS, Bind::pooled(ct)),
                ],
                None => vec![
                    (slot::POINTS, pts.bind()),
                    (slot::CENTROIDS, self.rows.bind()),
                ],
            };
            binds.push((slot::NORMS, self.norms.bind()));
            binds.push((slot::OUT, out.bind()));
            let (x, y) = ctx.grid(b.div_ceil(spec.tm as usize) as u32);
            ctx.dispatch(&mut enc, pipeline, &ubuf, &binds, (x, y, 1));
            ctx.submit(enc);
            Ok(())
        })?;
        out.to_vec::<u32>()
    }
}

/// A squared distance from `‖x‖² + ‖c‖² − 2·x·c`: rounding can take a
/// near-zero one below 0 (FAISS clamps it too); NaN stays NaN.
fn clamp_distance(v: f64) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v as f32
    }
}

/// Rows of `dim` values copied into rows of `width` (≥ dim), zero-padded.
fn pad_rows(rows: &[f32], dim: usize, width: usize) -> Vec<f32> {
    if width == dim {
        return rows.to_vec();
    }
    let mut out = vec![0.0; rows.len() / dim * width];
    for (o, r) in out.chunks_exact_mut(width).zip(rows.chunks_exact(dim)) {
        o[..dim].copy_from_slice(r);
    }
    out
}
