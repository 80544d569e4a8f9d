//! k-means on the GPU against the f64 CPU reference from the same init,
//! FAISS's defaults (seeded init, sampling, empty-cluster splits) and the
//! typed errors.

mod common;

use common::{blobs, ctx, rng};
use flashdot::ops::search::{kmeans, KMeansOptions};
use flashdot::ops::similarity::Metric;
use flashdot::Error;
use rand::Rng;

#[test]
fn kmeans_matches_the_cpu_reference_from_the_same_init() {
    let ctx = ctx();
    let (n, dim, k) = (1200, 24, 12);
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let case = format!("{metric:?}");
        let mut r = rng(&case);
        let data = blobs(&mut r, n, dim, k, 1.0, 0.25);
        // One random point of each blob (point i is of blob i % k): no
        // cluster empties, so the reference (which does not split) applies.
        let init: Vec<f32> = (0..k)
            .flat_map(|b| {
                let i = b + k * r.random_range(0..n / k);
                data[i * dim..(i + 1) * dim].to_vec()
            })
            .collect();
        let opts = KMeansOptions::default()
            .metric(metric)
            .niter(12)
            .init(init.clone());
        let got = kmeans(&ctx, &data, dim, k, &opts).unwrap();
        let want = flashdot::reference::kmeans::kmeans(&data, dim, &init, 12, metric);
        assert_eq!(
            got.splits, 0,
            "{case}: the comparison needs data where no cluster empties"
        );
        let same = got
            .assign
            .iter()
            .zip(&want.assign)
            .filter(|(a, b)| **a as usize == **b)
            .count();
        assert_eq!(same, n, "{case}: assignments differ");
        assert_eq!(got.objective.len(), 12);
        for (i, (g, w)) in got.objective.iter().zip(&want.objective).enumerate() {
            // f32 scores of O(1) each, summed in f64: relative error ~1e-7.
            assert!(
                (g - w).abs() <= 1e-5 * w.abs(),
                "{case}: iteration {i}: objective {g} vs {w}"
            );
        }
        for (g, w) in got.centroids.iter().zip(&want.centroids) {
            // Means of ≤ n f32 values summed in 4 partial sums.
            assert!((*g as f64 - w).abs() <= 1e-5, "{case}: centroid {g} vs {w}");
        }
        let mut sizes = vec![0usize; k];
        got.assign.iter().for_each(|&a| sizes[a as usize] += 1);
        let imb = k as f64 * sizes.iter().map(|&s| (s * s) as f64).sum::<f64>() / (n * n) as f64;
        assert!((got.imbalance - imb).abs() < 1e-12, "{case}: imbalance");
    }
}

#[test]
fn kmeans_seeded_init_is_deterministic_and_improves_the_objective() {
    let ctx = ctx();
    let mut r = rng("kmeans seeded");
    let (n, dim, k) = (900, 16, 9);
    let data = blobs(&mut r, n, dim, k, 1.0, 0.2);
    let opts = KMeansOptions::default().seed(7);
    let a = kmeans(&ctx, &data, dim, k, &opts).unwrap();
    let b = kmeans(&ctx, &data, dim, k, &opts).unwrap();
    assert_eq!(a.centroids, b.centroids);
    assert_eq!(a.objective.len(), 25, "FAISS's 25 iterations by default");
    assert!(a.sample.is_none());
    // Lloyd iterations never raise the L2 objective (up to f32 rounding).
    for w in a.objective.windows(2) {
        assert!(w[1] <= w[0] * (1.0 + 1e-6), "objective rose: {w:?}");
    }
    // The init is k distinct training points: the first objective is
    // that of real points, at most the sum of distances to point 0's... so
    // simply check the first assignment used every centroid at least for itself.
    let c = kmeans(
        &ctx,
        &data,
        dim,
        k,
        &KMeansOptions::default().seed(7).niter(1),
    )
    .unwrap();
    let used: std::collections::HashSet<u32> = c.assign.iter().copied().collect();
    assert_eq!(
        used.len(),
        k,
        "each initial centroid is a distinct training point, nearest to itself"
    );
}

#[test]
fn kmeans_splits_empty_clusters_and_samples_large_inputs() {
    let ctx = ctx();
    let mut r = rng("kmeans split");
    let (n, dim) = (600, 8);
    let data = blobs(&mut r, n, dim, 3, 1.0, 0.1);
    // Two of five initial centroids far from every point: empty at once.
    let mut init: Vec<f32> = data[..3 * dim].to_vec();
    init.extend(std::iter::repeat_n(50.0, 2 * dim));
    let opts = KMeansOptions::default().init(init).niter(10);
    let res = kmeans(&ctx, &data, dim, 5, &opts).unwrap();
    assert!(res.splits >= 2, "splits {}", res.splits);
    let used: std::collections::HashSet<u32> = res.assign.iter().copied().collect();
    assert_eq!(used.len(), 5, "every cluster holds points after the splits");

    let opts = KMeansOptions::default()
        .max_points_per_centroid(40)
        .niter(3);
    let res = kmeans(&ctx, &data, dim, 5, &opts).unwrap();
    let s = res.sample.expect("600 points over 5 · 40 are sampled");
    assert_eq!(s.len(), 200);
    assert!(s.windows(2).all(|w| w[0] < w[1]) && *s.last().unwrap() < n);
    assert_eq!(res.assign.len(), 200);
}

#[test]
fn kmeans_bad_input_is_a_typed_error() {
    let ctx = ctx();
    let data = vec![0.5f32; 10 * 4];
    let o = KMeansOptions::default();
    let inv = |r: flashdot::Result<_>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(
        inv(kmeans(&ctx, &data, 4, 11, &o)),
        "fewer points than clusters"
    );
    assert!(inv(kmeans(&ctx, &data, 4, 0, &o)), "k = 0");
    assert!(inv(kmeans(&ctx, &data, 0, 2, &o)), "dim = 0");
    assert!(
        inv(kmeans(&ctx, &data, 4, 2, &o.clone().niter(0))),
        "niter = 0"
    );
    assert!(
        inv(kmeans(&ctx, &data, 4, 2, &o.clone().init(vec![0.0; 5]))),
        "init shape"
    );
    assert!(
        matches!(kmeans(&ctx, &data, 3, 2, &o), Err(Error::Shape { .. })),
        "not whole rows"
    );
}
