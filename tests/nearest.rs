//! The nearest-centroid kernel (`assign`, `assign_tensor`: k-means
//! assignment and IVF adds) against the f64 reference, on shapes that are
//! not tile multiples, with and without subgroups, host and device points;
//! ties, NaN and the typed errors.

mod common;

use common::{ctx, ctx_without_subgroups, rng, uniform};
use flashdot::ops::search::{assign, assign_tensor, Assignment};
use flashdot::ops::similarity::Metric;
use flashdot::reference::kmeans::{nearest, score};
use flashdot::{Context, Error, Tensor};

const METRICS: [Metric; 3] = [Metric::L2, Metric::InnerProduct, Metric::Cosine];

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn unit_rows(v: &[f64], d: usize) -> Vec<f64> {
    v.chunks_exact(d)
        .flat_map(|r| {
            let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            r.iter().map(move |x| if n > 0.0 { x / n } else { 0.0 })
        })
        .collect()
}

/// Every label is a best centroid up to the f32 rounding of its score, and
/// every distance is that centroid's, within the same bound: a d-term f32
/// dot product of rows of norms a and b errs by at most ~d·ε·a·b, and the
/// L2 form ‖x‖² + ‖c‖² − 2·x·c adds the norms' own rounding.
fn check(case: &str, got: &Assignment, data: &[f32], cents: &[f32], d: usize, metric: Metric) {
    let (mut x, mut c) = (f64s(data), f64s(cents));
    if metric == Metric::Cosine {
        x = unit_rows(&x, d);
        c = unit_rows(&c, d);
    }
    let n = data.len() / d;
    let k = cents.len() / d;
    assert_eq!(got.labels.len(), n, "{case}: labels");
    assert_eq!(got.distances.len(), n, "{case}: distances");
    let (_, best) = nearest(&x, d, &c, metric);
    let cmax = c
        .chunks_exact(d)
        .map(|r| r.iter().map(|v| v * v).sum::<f64>())
        .fold(0.0, f64::max);
    for (i, p) in x.chunks_exact(d).enumerate() {
        let l = got.labels[i] as usize;
        assert!(l < k, "{case}: point {i}: label {l} of {k}");
        let xx = p.iter().map(|v| v * v).sum::<f64>();
        let scale = match metric {
            Metric::L2 => xx + cmax,
            _ => (xx * cmax).sqrt(),
        };
        let tol = 4.0 * (d as f64 + 4.0) * f32::EPSILON as f64 * scale + 1e-30;
        let mine = score(p, &c[l * d..(l + 1) * d], metric);
        assert!(
            (mine - best[i]).abs() <= tol,
            "{case}: point {i}: centroid {l} scores {mine}, the best {}",
            best[i]
        );
        let g = got.distances[i] as f64;
        assert!(
            (g - mine).abs() <= tol,
            "{case}: point {i}: distance {g}, centroid {l}'s is {mine}"
        );
    }
}

#[test]
fn assign_matches_the_reference_on_shapes_that_hurt() {
    for (ctx, which) in [
        (ctx(), "subgroups"),
        (ctx_without_subgroups(), "no subgroups"),
    ] {
        for &n in &[1usize, 3, 59, 127, 1009] {
            for &(k, d) in &[(1usize, 1usize), (3, 3), (65, 59), (300, 128), (1000, 8)] {
                for metric in METRICS {
                    let case = format!("{which} n {n} k {k} d {d} {metric:?}");
                    let mut r = rng(&case);
                    let data = uniform(&mut r, n * d);
                    let cents = uniform(&mut r, k * d);
                    let got = assign(&ctx, &data, &cents, d, metric).unwrap();
                    check(&case, &got, &data, &cents, d, metric);
                }
            }
        }
    }
}

#[test]
fn assign_tensor_matches_the_reference_and_the_host_path() {
    let ctx = ctx();
    // d = 3 and 59 are not whole vec4s: read from storage, not textures.
    for &(n, k, d) in &[(200usize, 17usize, 3usize), (1009, 65, 59), (300, 40, 64)] {
        for metric in METRICS {
            let case = format!("tensor n {n} k {k} d {d} {metric:?}");
            let mut r = rng(&case);
            let data = uniform(&mut r, n * d);
            let cents = uniform(&mut r, k * d);
            let x = Tensor::from_slice(&ctx, &data, &[n, d]).unwrap();
            let got = assign_tensor(&x, &cents, d, metric).unwrap();
            check(&case, &got, &data, &cents, d, metric);
            let host = assign(&ctx, &data, &cents, d, metric).unwrap();
            assert_eq!(got.labels, host.labels, "{case}: labels as the host path's");
        }
    }
    // A view into a larger tensor (its rows from 5 on).
    let (n, k, d) = (100, 9, 12);
    let mut r = rng("tensor view");
    let data = uniform(&mut r, n * d);
    let cents = uniform(&mut r, k * d);
    let x = Tensor::from_slice(&ctx, &data, &[n, d]).unwrap();
    let got = assign_tensor(&x.narrow(0, 5, n - 5).unwrap(), &cents, d, Metric::L2).unwrap();
    check("view", &got, &data[5 * d..], &cents, d, Metric::L2);
    let none = assign_tensor(&x.narrow(0, 0, 0).unwrap(), &cents, d, Metric::L2).unwrap();
    assert!(none.labels.is_empty() && none.distances.is_empty());
}

#[test]
fn assign_breaks_ties_to_the_lower_centroid_and_survives_nan() {
    let ctx = ctx();
    let (d, k) = (16, 70);
    let mut r = rng("assign ties");
    let mut cents = uniform(&mut r, k * d);
    // Centroid 66 repeats centroid 3 (another lane, another step of 64).
    let c3 = cents[3 * d..4 * d].to_vec();
    cents[66 * d..67 * d].copy_from_slice(&c3);
    // Points at centroid 3 itself, and random ones.
    let mut data: Vec<f32> = c3.iter().map(|v| v + 1e-3).collect();
    data.extend(uniform(&mut r, 40 * d));
    for metric in METRICS {
        let got = assign(&ctx, &data, &cents, d, metric).unwrap();
        assert!(
            got.labels.iter().all(|&l| l != 66),
            "{metric:?}: a tie went to the higher centroid: {:?}",
            got.labels
        );
        if metric == Metric::L2 {
            assert_eq!(got.labels[0], 3, "the point beside centroid 3");
        }
    }
    // A NaN in a point: its scores are all NaN; it still gets a centroid.
    let mut bad = data.clone();
    bad[d + 2] = f32::NAN;
    let got = assign(&ctx, &bad, &cents, d, Metric::L2).unwrap();
    assert!((got.labels[1] as usize) < k && got.distances[1].is_nan());
    let good = assign(&ctx, &data, &cents, d, Metric::L2).unwrap();
    assert_eq!(got.labels[2..], good.labels[2..], "other points unaffected");
}

#[test]
fn assign_bad_input_is_a_typed_error() {
    let ctx: Context = ctx();
    let data = vec![0.5f32; 12];
    let shape = |r: flashdot::Result<Assignment>| matches!(r, Err(Error::Shape { .. }));
    let inv = |r: flashdot::Result<Assignment>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(inv(assign(&ctx, &data, &[], 4, Metric::L2)), "no centroids");
    assert!(inv(assign(&ctx, &data, &data, 0, Metric::L2)), "dim 0");
    assert!(
        shape(assign(&ctx, &data, &[0.0; 5], 4, Metric::L2)),
        "centroid rows"
    );
    assert!(
        shape(assign(&ctx, &data[..10], &data, 4, Metric::L2)),
        "data rows"
    );
    let x = Tensor::from_slice(&ctx, &data, &[3, 4]).unwrap();
    assert!(
        shape(assign_tensor(&x, &[0.0; 6], 6, Metric::L2)),
        "tensor dim"
    );
    let h = Tensor::from_slice(&ctx, &[0u32; 12], &[3, 4]).unwrap();
    assert!(
        matches!(
            assign_tensor(&h, &data, 4, Metric::L2),
            Err(Error::DType { .. })
        ),
        "u32 points"
    );
    let empty = assign(&ctx, &[], &data, 4, Metric::L2).unwrap();
    assert!(empty.labels.is_empty());
}
