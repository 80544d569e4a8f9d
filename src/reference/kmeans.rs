//! CPU reference for k-means (f64): plain Lloyd iterations from given
//! centroids, as [`crate::ops::search::kmeans`] runs them — assignment to
//! the best centroid (ties to the lower one), means, spherical for inner
//! product and cosine (cosine clusters the normalised points).

use crate::ops::similarity::Metric;

/// What [`kmeans`] found.
#[derive(Debug, Clone)]
pub struct KMeansRef {
    /// `[k, d]` centroids after the last update.
    pub centroids: Vec<f64>,
    /// Per iteration, the objective of its assignment (sum of squared
    /// distances for L2, of similarities otherwise).
    pub objective: Vec<f64>,
    /// Each point's cluster in the last assignment.
    pub assign: Vec<usize>,
}

fn unit(x: &mut [f64]) {
    let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n > 0.0 {
        x.iter_mut().for_each(|v| *v /= n);
    }
}

/// `niter` Lloyd iterations over `data [n, d]` from `init [k, d]`. An empty
/// cluster keeps its centroid (the GPU run splits it instead: compare on
/// data where none empties).
pub fn kmeans(data: &[f32], d: usize, init: &[f32], niter: usize, metric: Metric) -> KMeansRef {
    let mut x: Vec<f64> = data.iter().map(|&v| v as f64).collect();
    let spherical = metric != Metric::L2;
    if metric == Metric::Cosine {
        x.chunks_exact_mut(d).for_each(unit);
    }
    let mut c: Vec<f64> = init.iter().map(|&v| v as f64).collect();
    if spherical {
        c.chunks_exact_mut(d).for_each(unit);
    }
    let k = c.len() / d;
    let mut out = KMeansRef {
        centroids: Vec::new(),
        objective: Vec::new(),
        assign: Vec::new(),
    };
    for _ in 0..niter {
        let (assign, best) = nearest(&x, d, &c, metric);
        let obj: f64 = best.iter().sum();
        out.objective.push(obj);
        let mut sums = vec![0.0f64; k * d];
        let mut counts = vec![0usize; k];
        for (p, &a) in x.chunks_exact(d).zip(&assign) {
            counts[a] += 1;
            sums[a * d..(a + 1) * d]
                .iter_mut()
                .zip(p)
                .for_each(|(s, v)| *s += v);
        }
        for ci in 0..k {
            if counts[ci] > 0 {
                for j in 0..d {
                    c[ci * d + j] = sums[ci * d + j] / counts[ci] as f64;
                }
                if spherical {
                    unit(&mut c[ci * d..(ci + 1) * d]);
                }
            }
        }
        out.assign = assign;
    }
    out.centroids = c;
    out
}

/// Each row of `x [n, d]` to its best row of `c [k, d]` (the lowest squared
/// distance for L2, else the highest inner product; ties to the lower
/// centroid) and that score.
pub fn nearest(x: &[f64], d: usize, c: &[f64], metric: Metric) -> (Vec<usize>, Vec<f64>) {
    let k = c.len() / d;
    x.chunks_exact(d)
        .map(|p| {
            let score = |ci: usize| score(p, &c[ci * d..(ci + 1) * d], metric);
            let better = |a: f64, b: f64| if metric == Metric::L2 { a < b } else { a > b };
            let mut best = (0, score(0));
            for ci in 1..k {
                let s = score(ci);
                if better(s, best.1) {
                    best = (ci, s);
                }
            }
            best
        })
        .unzip()
}

/// Point `p` against centroid `c`: the squared distance (L2) or the inner
/// product.
pub fn score(p: &[f64], c: &[f64], metric: Metric) -> f64 {
    match metric {
        Metric::L2 => p.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum(),
        _ => p.iter().zip(c).map(|(a, b)| a * b).sum(),
    }
}
