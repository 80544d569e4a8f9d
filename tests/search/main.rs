//! Flat index search against the CPU reference: exact ids for f32 storage across
//! k, m, n and chunk boundaries; recall for f16 and int8 storage. One test
//! binary (`cargo test --test search`) in modules by what they test: `exact`
//! (results against the reference for every metric and storage), `ids` (user
//! ids, removal, filters, reset, reconstruct), `files` (save/load, corrupt
//! files), `device` (device tensors in and out, recordings), `sharded`,
//! `index_trait` (every index behind `Box<dyn Index>` against the flat one). The
//! data makers and reference checks they share live here.

#[path = "../common/mod.rs"]
mod common;

mod device;
mod exact;
mod files;
mod ids;
mod index_trait;
mod sharded;

use common::*;
use flashdot::ops::search::SearchResult;
use flashdot::ops::similarity::Metric;
use rand::Rng;

fn gaussian(r: &mut Rng64, n: usize) -> Vec<f32> {
    // Sum of uniforms: near-Gaussian and cheap; distinct scores almost surely.
    (0..n)
        .map(|_| (0..4).map(|_| r.random_range(-1.0f32..1.0)).sum::<f32>())
        .collect()
}

/// Small integers: every score is an exact integer in f32 too, so the GPU and
/// the f64 reference must agree on every id, tie-breaks (lower id first) included.
fn integers(r: &mut Rng64, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-8i32..=8) as f32).collect()
}

/// `res` against the reference lists `want` (positions into `ids`): each row's
/// ids and scores, then FAISS's padding (id −1, score −∞) up to `k`.
fn check_rows(res: &SearchResult, want: &[Vec<(f64, u32)>], ids: &[u64], k: usize, case: &str) {
    assert_eq!((res.m, res.k), (want.len(), k), "{case}");
    assert_eq!(
        (res.ids.len(), res.scores.len()),
        (want.len() * k, want.len() * k),
        "{case}"
    );
    for (qi, w) in want.iter().enumerate() {
        let row = &res.ids[qi * k..(qi + 1) * k];
        let mut want_ids: Vec<i64> = w.iter().map(|x| ids[x.1 as usize] as i64).collect();
        want_ids.resize(k, -1);
        assert_eq!(
            row,
            want_ids,
            "{case} query {qi} (FLASHDOT_SEED={})",
            seed()
        );
        for t in 0..k {
            let g = res.scores[qi * k + t] as f64;
            match w.get(t) {
                Some(&(s, _)) => assert!(
                    (g - s).abs() <= 1e-4 * (1.0 + s.abs()),
                    "{case} q{qi}[{t}]: {g} vs {s}"
                ),
                None => assert_eq!(g, f64::NEG_INFINITY, "{case} q{qi}[{t}]: padding"),
            }
        }
    }
}

/// `check_rows` for L2: the ids, −1 padding.
fn check_rows_l2(res: &SearchResult, want: &[Vec<(f64, u32)>], ids: &[u64], k: usize, case: &str) {
    for (qi, w) in want.iter().enumerate() {
        let mut want_ids: Vec<i64> = w.iter().map(|x| ids[x.1 as usize] as i64).collect();
        want_ids.resize(k, -1);
        assert_eq!(
            &res.ids[qi * k..(qi + 1) * k],
            want_ids,
            "{case} k={k} q{qi} (FLASHDOT_SEED={})",
            seed()
        );
    }
}

/// The f64 reference for `metric` over the rows `allowed` admits: per query
/// the best `k` (score, row), IP/cosine largest first, L2 distance smallest
/// first, ties by the lower row, NaN last.
fn reference_search(
    q: &[f32],
    corpus: &[f32],
    d: usize,
    k: usize,
    metric: Metric,
    allowed: &dyn Fn(usize) -> bool,
) -> Vec<Vec<(f64, u32)>> {
    q.chunks_exact(d)
        .map(|qr| {
            let mut s: Vec<(f64, u32)> = corpus
                .chunks_exact(d)
                .enumerate()
                .filter(|(i, _)| allowed(*i))
                .map(|(i, x)| {
                    let v = match metric {
                        Metric::L2 => qr
                            .iter()
                            .zip(x)
                            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                            .sum(),
                        _ => qr.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum(),
                    };
                    (v, i as u32)
                })
                .collect();
            let l2 = metric == Metric::L2;
            s.sort_by(|a, b| match (a.0.is_nan(), b.0.is_nan()) {
                (false, false) => {
                    let by = if l2 {
                        a.0.partial_cmp(&b.0)
                    } else {
                        b.0.partial_cmp(&a.0)
                    };
                    by.unwrap().then(a.1.cmp(&b.1))
                }
                (x, y) => x.cmp(&y).then(a.1.cmp(&b.1)),
            });
            s.truncate(k);
            s
        })
        .collect()
}
