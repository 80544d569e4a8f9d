//! Results against the CPU reference: exact ids across k, m, n and chunk
//! boundaries, incremental adds, recall of reduced storage, edge cases, NaN
//! rows and ties in both scans, squared L2 distances.

use crate::common::*;
use crate::{check_rows, check_rows_l2, gaussian, integers, reference_search};
use flashdot::ops::search::*;
use flashdot::ops::similarity::Metric;
use flashdot::{reference, Context, Error};
use rand::Rng;

fn exact_case(m: usize, n: usize, d: usize, k: usize, chunk_rows: Option<usize>) {
    let ctx = ctx();
    let case = format!("search m={m} n={n} d={d} k={k} chunk={chunk_rows:?}");
    let mut r = rng(&case);
    let corpus = integers(&mut r, n * d);
    let queries = integers(&mut r, m * d);
    let mut index = FlatIndex::new(&ctx, d, {
        let mut o = IndexOptions::default();
        o.max_chunk_rows = chunk_rows;
        o
    })
    .unwrap();
    index.add(&corpus).unwrap();
    assert_eq!(index.len(), n);
    let res = index
        .search(&queries, k)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let want = reference::search::topk(&queries, &corpus, d, k);
    let ids: Vec<u64> = (0..n as u64).collect();
    check_rows(&res, &want, &ids, k, &case);
}

#[test]
fn exact_ids_f32() {
    for k in [1, 10, 100, 1024] {
        for (m, n) in [(1, 1), (7, 1000), (64, 1000), (1, 100003), (7, 100003)] {
            // Keep the CPU reference affordable: d small for the large corpus.
            let d = if n > 10_000 { 16 } else { 37 };
            exact_case(m, n, d, k, None);
        }
    }
}

#[test]
fn exact_across_chunk_boundaries() {
    // A corpus of several bindings, forced small: chunks of 777 and 256 rows.
    exact_case(5, 5000, 24, 10, Some(777));
    exact_case(3, 3001, 8, 100, Some(256));
    exact_case(2, 2000, 8, 1024, Some(300));
}

#[test]
fn incremental_add_matches_single_add() {
    let ctx = ctx();
    let mut r = rng("incremental");
    let d = 12;
    let corpus = integers(&mut r, 900 * d);
    let q = integers(&mut r, 3 * d);
    let opts = IndexOptions::default().max_chunk_rows(250);
    let mut a = FlatIndex::new(&ctx, d, opts).unwrap();
    a.add(&corpus).unwrap();
    let mut b = FlatIndex::new(&ctx, d, opts).unwrap();
    for part in corpus.chunks(d * 113) {
        b.add(part).unwrap();
    }
    assert_eq!(b.len(), 900);
    assert_eq!(a.search(&q, 20).unwrap(), b.search(&q, 20).unwrap());

    // One default-sized chunk grown past several texture layers (lavapipe:
    // 16,384 rows each), so growth copies whole layers and writes rows that
    // straddle layer boundaries; checked against the CPU reference too.
    let d = 4;
    let n = 40_000;
    let corpus = integers(&mut r, n * d);
    let q = integers(&mut r, 2 * d);
    let mut a = FlatIndex::new(&ctx, d, IndexOptions::default()).unwrap();
    a.add(&corpus).unwrap();
    let mut b = FlatIndex::new(&ctx, d, IndexOptions::default()).unwrap();
    for part in corpus.chunks(d * 7001) {
        b.add(part).unwrap();
    }
    assert_eq!(b.len(), n);
    let got = b.search(&q, 50).unwrap();
    assert_eq!(a.search(&q, 50).unwrap(), got);
    let want: Vec<i64> = reference::search::topk(&q, &corpus, d, 50)
        .iter()
        .flat_map(|w| w.iter().map(|x| x.1 as i64))
        .collect();
    assert_eq!(got.ids, want, "FLASHDOT_SEED={}", seed());
}

/// Recall@10 of `storage` against the f32 index on `n` × 768 Gaussian
/// vectors (cosine, so normalised) where each of the 20 queries has ten planted
/// near-duplicates in the corpus: the true top-10 is well separated from the rest,
/// as in real embedding search, so reduced precision should not lose it.
fn recall(storage: Storage, n: usize) -> f64 {
    let ctx = ctx();
    let (d, m, k) = (768, 20, 10);
    let mut r = rng("recall corpus");
    let mut corpus = gaussian(&mut r, n * d);
    let bases: Vec<Vec<f32>> = (0..m).map(|_| gaussian(&mut r, d)).collect();
    // Planted rows spread over the corpus (every 401st row when it is large).
    let stride = (n / (m * 10 + 1)).min(401);
    for (qi, base) in bases.iter().enumerate() {
        for dup in 0..10 {
            let row = 97 + (qi * 10 + dup) * stride;
            for t in 0..d {
                corpus[row * d + t] = base[t] + 0.3 * r.random_range(-1.0f32..1.0);
            }
        }
    }
    let queries: Vec<f32> = bases
        .iter()
        .flat_map(|b| {
            b.iter()
                .map(|v| v + 0.3 * r.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>()
        })
        .collect();
    let index = |storage| {
        let mut ix = FlatIndex::new(
            &ctx,
            d,
            IndexOptions::default()
                .metric(Metric::Cosine)
                .storage(storage),
        )
        .unwrap();
        ix.add(&corpus).unwrap();
        ix.search(&queries, k).unwrap()
    };
    let exact = index(Storage::F32);
    for q in 0..m {
        let mut e = exact.ids[q * k..(q + 1) * k].to_vec();
        e.sort();
        let planted: Vec<i64> = (0..10)
            .map(|dup| (97 + (q * 10 + dup) * stride) as i64)
            .collect();
        assert_eq!(
            e, planted,
            "query {q}: the exact top-10 should be its planted duplicates"
        );
    }
    let got = index(storage);
    let mut hits = 0;
    for q in 0..m {
        let e = &exact.ids[q * k..(q + 1) * k];
        hits += got.ids[q * k..(q + 1) * k]
            .iter()
            .filter(|i| e.contains(i))
            .count();
    }
    hits as f64 / (m * k) as f64
}

#[test]
fn recall_f16_and_int8() {
    recall_f16_and_int8_at(20_000);
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn recall_f16_and_int8_large() {
    recall_f16_and_int8_at(100_000);
}

fn recall_f16_and_int8_at(n: usize) {
    for s in [Storage::F16, Storage::Int8] {
        let rc = recall(s, n);
        assert!(
            rc >= 0.99,
            "{s:?} recall@10 {rc} < 0.99 (FLASHDOT_SEED={})",
            seed()
        );
    }
}

#[test]
fn errors_and_edge_cases() {
    let ctx = ctx();
    let mut ix = FlatIndex::new(&ctx, 4, IndexOptions::default()).unwrap();
    // Empty index: every row is padding (id −1, score −∞), as FAISS pads.
    let r = ix.search(&[1.0; 8], 5).unwrap();
    assert_eq!((r.m, r.k), (2, 5));
    assert_eq!(r.ids, vec![-1; 10]);
    assert!(r.scores.iter().all(|&s| s == f32::NEG_INFINITY));
    ix.add(&[
        1.0,
        0.0,
        0.0,
        0.0,
        0.0,
        2.0,
        0.0,
        0.0,
        f32::NAN,
        0.0,
        0.0,
        0.0,
    ])
    .unwrap();
    // k = 0: m empty rows; k over MAX_K is refused.
    let r = ix.search(&[1.0; 8], 0).unwrap();
    assert_eq!((r.m, r.k, r.ids.len()), (2, 0, 0));
    let e = ix.search(&[1.0; 4], MAX_K + 1).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = ix.search(&[1.0; 5], 1).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = ix.add(&[1.0; 3]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // k > len: len results, then padding; the NaN row sorts last.
    let r = ix.search(&[1.0, 1.0, 0.0, 0.0], 5).unwrap();
    assert_eq!(r.k, 5);
    assert_eq!(r.ids, vec![1, 0, 2, -1, -1]);
    assert!(r.scores[2].is_nan());
    assert_eq!(r.scores[3..], [f32::NEG_INFINITY; 2]);
    // Ties break by the lower id.
    let mut t = FlatIndex::new(&ctx, 2, IndexOptions::default()).unwrap();
    t.add(&[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]).unwrap();
    assert_eq!(t.search(&[1.0, 0.0], 2).unwrap().ids, vec![0, 1]);
}

/// NaN rows and tied scores through both scans (k ≤ 16 keeps per-invocation
/// register lists; larger k sorts slices in workgroup memory): numbers best
/// first, ties by lower id, then the NaN rows by id.
#[test]
fn nan_rows_and_ties_in_both_scans() {
    nan_rows_and_ties(&ctx());
}

/// The same without subgroups: each invocation's list goes out whole instead
/// of being merged with its 7 neighbours'.
#[test]
fn nan_rows_and_ties_without_subgroups() {
    nan_rows_and_ties(&ctx_without_subgroups());
}

fn nan_rows_and_ties(ctx: &Context) {
    let mut r = rng("nan-ties");
    let (n, d) = (300, 5);
    let mut corpus: Vec<f32> = (0..n * d)
        .map(|_| r.random_range(-2i32..=2) as f32)
        .collect();
    let nan_rows = [3usize, 150, 299];
    for &row in &nan_rows {
        corpus[row * d + 1] = f32::NAN;
    }
    let q: Vec<f32> = (0..d).map(|_| r.random_range(-2i32..=2) as f32).collect();
    let mut ix = FlatIndex::new(ctx, d, IndexOptions::default()).unwrap();
    ix.add(&corpus).unwrap();
    let mut order: Vec<(f32, u32)> = corpus
        .chunks(d)
        .enumerate()
        .map(|(i, row)| (row.iter().zip(&q).map(|(a, b)| a * b).sum(), i as u32))
        .collect();
    order.sort_by(|a, b| match (a.0.is_nan(), b.0.is_nan()) {
        (false, false) => b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)),
        (x, y) => x.cmp(&y).then(a.1.cmp(&b.1)),
    });
    for k in [7, 16, 17, 300] {
        let res = ix.search(&q, k).unwrap();
        let want: Vec<i64> = order[..k].iter().map(|p| p.1 as i64).collect();
        assert_eq!(res.ids, want, "k={k} (FLASHDOT_SEED={})", seed());
    }
}

/// Squared L2 against the reference for every storage (on the stored,
/// dequantised rows), both scans (k ≤ 16 and k > 16), across chunks: each
/// returned distance is that row's distance (f32 rounding of ‖q‖² + ‖x‖² −
/// 2·q·x), and the list is a true top-k (its last distance is the k-th
/// smallest); exact ids where every distance is an exact integer (f32).
#[test]
fn l2_ranking_and_distances() {
    let ctx = ctx();
    let (n, d) = (100, 13);
    for storage in [Storage::F32, Storage::F16, Storage::Int8] {
        let case = format!("l2 {storage:?}");
        let mut r = rng(&case);
        let corpus = integers(&mut r, n * d);
        let q = integers(&mut r, 4 * d);
        let mut opts = IndexOptions::default().storage(storage).metric(Metric::L2);
        opts.max_chunk_rows = Some(64);
        let mut ix = FlatIndex::new(&ctx, d, opts).unwrap();
        ix.add(&corpus).unwrap();
        let stored: Vec<f32> = (0..n as u64)
            .flat_map(|id| ix.reconstruct(id).unwrap())
            .collect();
        for k in [1, 10, 40, 128] {
            let got = ix.search(&q, k).unwrap();
            let want = reference_search(&q, &stored, d, k, Metric::L2, &|_| true);
            let ids: Vec<u64> = (0..n as u64).collect();
            if storage != Storage::Int8 {
                check_rows_l2(&got, &want, &ids, k, &case);
            }
            for (qi, w) in want.iter().enumerate() {
                let qn: f64 = q[qi * d..(qi + 1) * d]
                    .iter()
                    .map(|v| (*v as f64).powi(2))
                    .sum();
                for t in 0..k {
                    let (g, id) = (got.scores[qi * k + t] as f64, got.ids[qi * k + t]);
                    if t >= n {
                        assert_eq!((g, id), (f64::INFINITY, -1), "{case}: padding");
                        continue;
                    }
                    let x = &stored[id as usize * d..(id as usize + 1) * d];
                    let xn: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
                    let exact =
                        reference_search(&q[qi * d..(qi + 1) * d], x, d, 1, Metric::L2, &|_| true)
                            [0][0]
                            .0;
                    let tol = 4.0 * f32::EPSILON as f64 * (qn + xn + 2.0 * (qn * xn).sqrt()) + 1e-6;
                    assert!(
                        (g - exact).abs() <= tol,
                        "{case} q{qi}[{t}] id {id}: {g} vs {exact}"
                    );
                    // A true top-k: no row left out is nearer than the last kept.
                    if t + 1 == k.min(n) {
                        let kth = w.last().map_or(f64::NAN, |x| x.0);
                        assert!(g <= kth + tol, "{case} q{qi}: k-th {g} vs {kth}");
                    }
                }
            }
        }
    }
}
