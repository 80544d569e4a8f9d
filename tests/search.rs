//! Flat index search against the CPU reference: exact ids for f32 storage across
//! k, m, n and chunk boundaries; recall for f16 and int8 storage.

mod common;

use common::*;
use flashdot::ops::search::*;
use flashdot::ops::similarity::Metric;
use flashdot::{reference, Context, Error};
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

/// User ids (`add_with_ids`), removal with compaction on the device, then
/// search against the reference over the kept rows, for every storage:
/// chunks of 16 rows (removals inside chunks, whole chunks removed).
#[test]
fn ids_remove_and_compaction() {
    ids_remove_and_compaction_on(&[(59, 13, Some(16))]);
}

/// The same across the layers of one 20,000-row chunk (16,384 rows a layer
/// here): runs copied across the layer boundary.
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn ids_remove_and_compaction_across_layers() {
    ids_remove_and_compaction_on(&[(20_000, 8, None)]);
}

fn ids_remove_and_compaction_on(cases: &[(usize, usize, Option<usize>)]) {
    let ctx = ctx();
    for &(n, d, chunk) in cases {
        for storage in [Storage::F32, Storage::F16, Storage::Int8] {
            // Across layers: 16- and 8-byte texels (f16 reads as f32 does).
            if n > 16_384 && storage == Storage::F16 {
                continue;
            }
            let case = format!("ids n={n} d={d} chunk={chunk:?} {storage:?}");
            let mut r = rng(&case);
            let corpus = integers(&mut r, n * d);
            let q = integers(&mut r, 4 * d);
            let ids: Vec<u64> = (0..n as u64).map(|i| 1_000 + 7 * i).collect();
            let mut opts = IndexOptions::default().storage(storage);
            opts.max_chunk_rows = chunk;
            let mut ix = FlatIndex::new(&ctx, d, opts).unwrap();
            ix.add_with_ids(&corpus, &ids).unwrap();
            // Every 3rd row, a run across the 16-row chunks (or the
            // 16,384-row layers), all of chunk 2, plus ids never stored and a
            // repeat: only stored ids count.
            let mut gone: Vec<u64> = (0..n).step_by(3).map(|i| ids[i]).collect();
            let run = if n > 16_384 { 16_370..16_400 } else { 14..20 };
            gone.extend(run.map(|i| ids[i]));
            gone.extend((32..48.min(n)).map(|i| ids[i]));
            gone.extend([5, 1_001, ids[0]]);
            let mut unique = gone.clone();
            unique.retain(|id| ids.contains(id));
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(ix.remove_ids(&gone).unwrap(), unique.len(), "{case}");
            assert_eq!(ix.remove_ids(&gone).unwrap(), 0, "{case}: removed twice");
            let keep: Vec<usize> = (0..n).filter(|i| !unique.contains(&ids[*i])).collect();
            assert_eq!(ix.len(), keep.len(), "{case}");
            let kept_ids: Vec<u64> = keep.iter().map(|&i| ids[i]).collect();
            assert_eq!(ix.ids(), kept_ids, "{case}");
            assert!(!ix.contains(ids[0]) && ix.contains(kept_ids[0]), "{case}");
            let kept: Vec<f32> = keep
                .iter()
                .flat_map(|&i| corpus[i * d..(i + 1) * d].to_vec())
                .collect();
            // The compacted index answers as a fresh index of the kept rows
            // (same storage, bit for bit), and f32 storage as the reference.
            let mut fresh = FlatIndex::new(&ctx, d, opts).unwrap();
            fresh.add_with_ids(&kept, &kept_ids).unwrap();
            for k in [1, 10, 40] {
                let got = ix.search(&q, k).unwrap();
                assert_eq!(got, fresh.search(&q, k).unwrap(), "{case} k={k}");
                if storage == Storage::F32 {
                    let want = reference::search::topk(&q, &kept, d, k);
                    check_rows(&got, &want, &kept_ids, k, &case);
                }
            }
            // Stored rows read back: f32 exactly, f16 as rounded, int8 within
            // half a quantisation step of its row's scale.
            for &i in keep.iter().step_by(keep.len() / 5 + 1) {
                let row = &corpus[i * d..(i + 1) * d];
                let back = ix.reconstruct(ids[i]).unwrap();
                assert_eq!(back.len(), d, "{case}");
                let amax = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                for (j, (&b, &v)) in back.iter().zip(row).enumerate() {
                    let want = match storage {
                        Storage::F16 => flashdot::f16::from_f32(v).to_f32(),
                        _ => v,
                    };
                    let tol = if storage == Storage::Int8 {
                        amax / 127.0 * 0.5 + 1e-6 * amax
                    } else {
                        0.0
                    };
                    assert!((b - want).abs() <= tol, "{case} row {i}[{j}]: {b} vs {v}");
                }
            }
            let e = ix.reconstruct(ids[0]).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        }
    }
}

/// Ids: refused before anything is stored (wrong count, duplicates within
/// the call or with the index, over MAX_ID); `add` continues after the
/// largest id; `reset` empties the index and restarts ids at 0.
#[test]
fn id_errors_and_reset() {
    let ctx = ctx();
    let mut ix = FlatIndex::new(&ctx, 2, IndexOptions::default()).unwrap();
    ix.add_with_ids(&[1.0, 0.0, 0.0, 1.0], &[10, 20]).unwrap();
    let rows = [0.5f32, 0.5, 1.0, 1.0];
    for (ids, shape) in [
        (&[30u64][..], true),
        (&[30, 30][..], false),
        (&[30, 20][..], false),
        (&[30, MAX_ID + 1][..], false),
    ] {
        let e = ix.add_with_ids(&rows, ids).unwrap_err();
        if shape {
            assert!(matches!(e, Error::Shape { .. }), "{ids:?}: {e}");
        } else {
            assert!(matches!(e, Error::InvalidArgument { .. }), "{ids:?}: {e}");
        }
        assert_eq!(ix.len(), 2, "{ids:?}: nothing added on error");
    }
    ix.add(&rows).unwrap();
    assert_eq!(ix.ids(), [10, 20, 21, 22]);
    let got = ix.search(&[1.0, 1.0], 10).unwrap();
    assert_eq!(got.ids, [&[22, 10, 20, 21][..], &[-1; 6]].concat());
    ix.reset();
    assert!(ix.is_empty() && !ix.contains(10));
    ix.add(&rows).unwrap();
    assert_eq!(ix.ids(), [0, 1]);
}

/// A scratch path for this test process.
fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("flashdot-{}-{name}.fdindex", std::process::id()))
}

/// save → load gives the same index: every storage and metric, after
/// removals, across chunks (and one multi-layer chunk): identical results,
/// ids, stored rows bit for bit, and ids that continue where they stopped.
#[test]
fn save_load_round_trip() {
    let ctx = ctx();
    let cases = [
        (59, 13, Some(16), Storage::F32),
        (59, 13, Some(16), Storage::F16),
        (59, 13, Some(16), Storage::Int8),
        (20_000, 8, None, Storage::Int8),
    ];
    for (n, d, chunk, storage) in cases {
        for metric in [Metric::InnerProduct, Metric::Cosine, Metric::L2] {
            // The multi-layer case once (L2: its norms are rebuilt on load).
            if n > 16_384 && metric != Metric::L2 {
                continue;
            }
            let case = format!("save n={n} d={d} {storage:?} {metric:?}");
            let mut r = rng(&case);
            let corpus = gaussian(&mut r, n * d);
            let q = gaussian(&mut r, 4 * d);
            let mut opts = IndexOptions::default().storage(storage).metric(metric);
            opts.max_chunk_rows = chunk;
            let mut ix = FlatIndex::new(&ctx, d, opts).unwrap();
            let ids: Vec<u64> = (0..n as u64).map(|i| 3 * i + 1).collect();
            ix.add_with_ids(&corpus, &ids).unwrap();
            ix.remove_ids(&ids[10..30]).unwrap();
            let path = scratch(&format!("{n}-{storage:?}-{metric:?}"));
            ix.save(&path).unwrap();
            let record = 8
                + d.div_ceil(8) * 8 * [4, 2, 1][storage as usize]
                + if storage == Storage::Int8 { 4 } else { 0 };
            let size = std::fs::metadata(&path).unwrap().len();
            assert_eq!(size as usize, 48 + ix.len() * record + 4, "{case}");
            let mut back = FlatIndex::load(&ctx, &path).unwrap();
            std::fs::remove_file(&path).ok();
            assert_eq!(back.ids(), ix.ids(), "{case}");
            for k in [1, 10, 40] {
                assert_eq!(
                    back.search(&q, k).unwrap(),
                    ix.search(&q, k).unwrap(),
                    "{case} k={k}"
                );
            }
            for &id in ix.ids().iter().step_by(ix.len() / 4) {
                let (a, b) = (ix.reconstruct(id).unwrap(), back.reconstruct(id).unwrap());
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{case} id {id}");
            }
            back.add(&corpus[..d]).unwrap();
            assert_eq!(back.ids().last(), Some(&(3 * n as u64 - 2 + 1)), "{case}");
        }
    }
}

/// A small saved index cut at every byte, with random bit flips, a lying
/// header and foreign files: each load is an `IndexFile` error (never a
/// panic, never an index), and a lying count is refused before anything is
/// allocated from it.
#[test]
fn corrupt_index_files() {
    let ctx = ctx();
    let mut r = rng("corrupt index");
    let d = 5;
    let mut ix = FlatIndex::new(&ctx, d, IndexOptions::default().storage(Storage::Int8)).unwrap();
    ix.add_with_ids(&gaussian(&mut r, 4 * d), &[7, 9, 11, 13])
        .unwrap();
    let path = scratch("corrupt-src");
    ix.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let bad = scratch("corrupt");
    let try_load = |bytes: &[u8], what: &str| {
        std::fs::write(&bad, bytes).unwrap();
        match FlatIndex::load(&ctx, &bad) {
            Err(Error::IndexFile { detail, .. }) => detail,
            Err(e) => panic!("{what}: not an IndexFile error: {e}"),
            Ok(_) => panic!("{what}: a corrupt file loaded"),
        }
    };
    for cut in 0..good.len() {
        try_load(&good[..cut], &format!("truncated at {cut}"));
    }
    for i in 0..300 {
        let mut b = good.clone();
        for _ in 0..r.random_range(1..=3) {
            let at = r.random_range(0..b.len());
            b[at] ^= 1 << r.random_range(0..8);
        }
        if b != good {
            try_load(&b, &format!("flip {i}"));
        }
    }
    // A header claiming 2^61 vectors: refused by size, not allocated.
    let mut b = good.clone();
    b[32..40].copy_from_slice(&(1u64 << 61).to_le_bytes());
    let detail = try_load(&b, "lying count");
    assert!(
        detail.contains("truncated or not what its header says"),
        "{detail}"
    );
    let mut b = good.clone();
    b[8] = 2;
    assert!(try_load(&b, "version 2").contains("version 2"));
    assert!(try_load(
        b"\x93NUMPY\x01\x00 not an index at all, longer than 52 bytes....",
        "npy"
    )
    .contains("magic"));
    std::fs::remove_file(&bad).ok();
    let missing = FlatIndex::load(&ctx, scratch("never-written")).unwrap_err();
    assert!(matches!(missing, Error::IndexFile { .. }), "{missing}");
}

/// Two contexts on the one adapter as two "GPUs": adds spread over both,
/// results identical to one index holding every vector (ties included:
/// integer data), after removals too; ids unique across shards.
#[test]
fn shards_match_one_index() {
    let ctx_a = ctx();
    let ctx_b = Context::new().unwrap();
    for storage in [Storage::F32, Storage::Int8] {
        let case = format!("shards {storage:?}");
        let mut r = rng(&case);
        let d = 11;
        let opts = IndexOptions::default().storage(storage);
        let mut one = FlatIndex::new(&ctx_a, d, opts).unwrap();
        let mut two = ShardedIndex::new(&[ctx_a.clone(), ctx_b.clone()], d, opts).unwrap();
        for n in [70, 1, 33] {
            let rows = integers(&mut r, n * d);
            one.add(&rows).unwrap();
            two.add(&rows).unwrap();
        }
        let lens: Vec<usize> = two.shards().iter().map(|s| s.len()).collect();
        assert_eq!(lens, [52, 52], "{case}: balanced");
        let q = integers(&mut r, 4 * d);
        for k in [1, 10, 40, 128] {
            assert_eq!(
                two.search(&q, k).unwrap(),
                one.search(&q, k).unwrap(),
                "{case} k={k}"
            );
        }
        let gone: Vec<u64> = (0..104).step_by(5).collect();
        assert_eq!(
            two.remove_ids(&gone).unwrap(),
            one.remove_ids(&gone).unwrap()
        );
        assert_eq!(
            two.search(&q, 40).unwrap(),
            one.search(&q, 40).unwrap(),
            "{case}"
        );
        assert_eq!(
            two.reconstruct(51).unwrap(),
            one.reconstruct(51).unwrap(),
            "{case}"
        );
        let e = two.add_with_ids(&vec![0.0; d], &[51]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert_eq!(two.len(), one.len(), "{case}: nothing added on error");
    }
    assert!(ShardedIndex::new(&[], 4, IndexOptions::default()).is_err());
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

/// Filters inside the scan at 100%, 1% and 0% selectivity, for IP and L2,
/// both scans, across chunks: k results whenever k rows pass, equal to the
/// reference over the passing rows; nothing passes: padding only; a sharded
/// index filters the same way.
#[test]
fn filtered_search() {
    let ctx = ctx();
    let (n, d) = (2_000, 8);
    for metric in [Metric::InnerProduct, Metric::L2] {
        let case = format!("filter {metric:?}");
        let mut r = rng(&case);
        let corpus = integers(&mut r, n * d);
        let q = integers(&mut r, 4 * d);
        let mut opts = IndexOptions::default().metric(metric);
        opts.max_chunk_rows = Some(512);
        let mut ix = FlatIndex::new(&ctx, d, opts).unwrap();
        let ids: Vec<u64> = (0..n as u64).map(|i| 5 * i).collect();
        ix.add_with_ids(&corpus, &ids).unwrap();
        let mut sh = ShardedIndex::new(&[ctx.clone(), ctx.clone()], d, opts).unwrap();
        sh.add_with_ids(&corpus, &ids).unwrap();
        let one_pct = |id: u64| (id / 5) % 100 == 7;
        for k in [10, 40] {
            let all = ix.search_filtered(&q, k, |_| true).unwrap();
            assert_eq!(all, ix.search(&q, k).unwrap(), "{case} 100%");
            let got = ix.search_filtered(&q, k, one_pct).unwrap();
            let want = reference_search(&q, &corpus, d, k, metric, &|i| one_pct(ids[i]));
            assert!(
                want.iter().all(|w| w.len() == k.min(20)),
                "{case}: 20 rows pass"
            );
            if metric == Metric::L2 {
                check_rows_l2(&got, &want, &ids, k, &case);
            } else {
                check_rows(&got, &want, &ids, k, &case);
            }
            assert_eq!(
                sh.search_filtered(&q, k, one_pct).unwrap(),
                got,
                "{case}: sharded"
            );
            let none = ix.search_filtered(&q, k, |_| false).unwrap();
            assert!(none.ids.iter().all(|&i| i == -1), "{case} 0%");
        }
    }
}

/// Device rows (`add_tensor`) into every storage, IP and L2, a dim of whole
/// groups of 8 (copied) and one that is not (encoded on the device): the
/// stored rows equal the host's encoding (f32, f16 bit for bit; int8 within
/// one code) and searches agree.
#[test]
fn device_rows_match_host_rows() {
    let ctx = ctx();
    let (n, m) = (70, 4);
    for d in [13, 16] {
        for storage in [Storage::F32, Storage::F16, Storage::Int8] {
            for metric in [Metric::InnerProduct, Metric::L2] {
                let case = format!("device rows d={d} {storage:?} {metric:?}");
                let mut r = rng(&case);
                let corpus = gaussian(&mut r, n * d);
                let q = gaussian(&mut r, m * d);
                let opts = IndexOptions::default().storage(storage).metric(metric);
                let mut host = FlatIndex::new(&ctx, d, opts).unwrap();
                host.add(&corpus).unwrap();
                let mut dev = FlatIndex::new(&ctx, d, opts).unwrap();
                let t = flashdot::Tensor::from_slice(&ctx, &corpus, &[n, d]).unwrap();
                dev.add_tensor(&t).unwrap();
                assert_eq!(dev.len(), n, "{case}");
                for id in [0, 33, n as u64 - 1] {
                    let (a, b) = (host.reconstruct(id).unwrap(), dev.reconstruct(id).unwrap());
                    let row = &corpus[id as usize * d..(id as usize + 1) * d];
                    let step = row.iter().fold(0.0f32, |x, v| x.max(v.abs())) / 127.0;
                    for (j, (x, y)) in a.iter().zip(&b).enumerate() {
                        let ok = match storage {
                            Storage::Int8 => (x - y).abs() <= step * 1.0001,
                            _ => x.to_bits() == y.to_bits(),
                        };
                        assert!(ok, "{case} id {id}[{j}]: host {x} device {y}");
                    }
                }
                let (a, b) = (host.search(&q, 10).unwrap(), dev.search(&q, 10).unwrap());
                if storage != Storage::Int8 {
                    assert_eq!(a.ids, b.ids, "{case}");
                }
                // int8: a code may differ by one where device and host round
                // a quotient differently, moving a row's score by at most one
                // step per value (IP: s·‖q‖₁; L2: s·(2‖q − x‖₁ + d·s)); the
                // k-th best moves at most as far as any row.
                for (qi, qr) in q.chunks(d).enumerate() {
                    let bound = corpus
                        .chunks(d)
                        .map(|x| {
                            let s = x.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
                            match metric {
                                Metric::L2 => {
                                    let l1: f32 =
                                        qr.iter().zip(x).map(|(a, b)| (a - b).abs()).sum();
                                    s * (2.0 * l1 + d as f32 * s)
                                }
                                _ => s * qr.iter().map(|v| v.abs()).sum::<f32>(),
                            }
                        })
                        .fold(0.0f32, f32::max);
                    let span = qi * 10..(qi + 1) * 10;
                    for (x, y) in a.scores[span.clone()].iter().zip(&b.scores[span]) {
                        let tol = match storage {
                            Storage::Int8 => bound * 1.01 + 1e-5,
                            _ => 1e-5 * (1.0 + x.abs()),
                        };
                        assert!((x - y).abs() <= tol, "{case}: {x} vs {y} (bound {tol})");
                    }
                }
            }
        }
    }
}

/// Device-tensor queries (`search_tensor`) give the same results as the same
/// queries from the host, for every metric and storage (non-multiple-of-8
/// dim, several query blocks); wrong shapes and other contexts are refused.
#[test]
fn device_queries_equal_host_queries() {
    let ctx = ctx();
    let (n, d) = (500, 13);
    for storage in [Storage::F32, Storage::F16, Storage::Int8] {
        for metric in [Metric::InnerProduct, Metric::Cosine, Metric::L2] {
            let case = format!("device queries {storage:?} {metric:?}");
            let mut r = rng(&case);
            let corpus = gaussian(&mut r, n * d);
            let opts = IndexOptions::default().storage(storage).metric(metric);
            let mut ix = FlatIndex::new(&ctx, d, opts).unwrap();
            ix.add(&corpus).unwrap();
            // The upload differs, not the scan: many query blocks (37
            // queries, 8 a block in the sort scan) on f32 only; the large
            // query blocks of the list scan take long to compile.
            let runs: &[(usize, usize)] = if storage == Storage::F32 {
                &[(4, 10), (37, 40)]
            } else {
                &[(4, 10)]
            };
            for &(m, k) in runs {
                let q = gaussian(&mut r, m * d);
                let tq = flashdot::Tensor::from_slice(&ctx, &q, &[m, d]).unwrap();
                let (a, b) = (ix.search(&q, k).unwrap(), ix.search_tensor(&tq, k).unwrap());
                assert_eq!(a.ids, b.ids, "{case} m={m} k={k}");
                for (x, y) in a.scores.iter().zip(&b.scores) {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                        "{case} m={m} k={k}: {x} vs {y}"
                    );
                }
            }
        }
    }
    let ix = FlatIndex::new(&ctx, 4, IndexOptions::default()).unwrap();
    let wrong = flashdot::Tensor::zeros(&ctx, &[2, 5], flashdot::DType::F32).unwrap();
    assert!(matches!(
        ix.search_tensor(&wrong, 1),
        Err(Error::Shape { .. })
    ));
    let other = Context::new().unwrap();
    let elsewhere = flashdot::Tensor::zeros(&other, &[2, 4], flashdot::DType::F32).unwrap();
    assert!(matches!(
        ix.search_tensor(&elsewhere, 1),
        Err(Error::InvalidArgument { .. })
    ));
}

/// Results left on the device (`search_device`) equal the host results, for
/// every metric, with padding past the index's length and after removals
/// (the device id table follows the ids).
#[test]
fn device_results_equal_host_results() {
    let ctx = ctx();
    let (n, d, m) = (90, 13, 4);
    for metric in [Metric::InnerProduct, Metric::Cosine, Metric::L2] {
        let case = format!("device results {metric:?}");
        let mut r = rng(&case);
        let corpus = gaussian(&mut r, n * d);
        let q = gaussian(&mut r, m * d);
        let opts = IndexOptions::default()
            .metric(metric)
            .storage(Storage::Int8);
        let mut ix = FlatIndex::new(&ctx, d, opts).unwrap();
        let ids: Vec<u64> = (0..n as u64).map(|i| (i << 40) + i).collect();
        ix.add_with_ids(&corpus, &ids).unwrap();
        let tq = flashdot::Tensor::from_slice(&ctx, &q, &[m, d]).unwrap();
        for step in 0..2 {
            for k in [10, 128] {
                let want = ix.search(&q, k).unwrap();
                let got = ix.search_device(&tq, k).unwrap();
                assert_eq!(got.scores.shape(), &[m, k]);
                assert_eq!(got.ids.shape(), &[m, k, 2]);
                let words = got.ids.to_vec::<u32>().unwrap();
                let got_ids: Vec<i64> = bytemuck::cast_slice::<u32, i64>(&words).to_vec();
                assert_eq!(got_ids, want.ids, "{case} step {step} k={k}");
                let scores = got.scores.to_vec::<f32>().unwrap();
                for (x, y) in scores.iter().zip(&want.scores) {
                    let ok = x == y || (x - y).abs() <= 1e-5 * (1.0 + y.abs());
                    assert!(ok, "{case} step {step} k={k}: {x} vs {y}");
                }
            }
            ix.remove_ids(&ids[..30]).unwrap();
        }
    }
}

/// Adds inside `Context::record` keep their order with the recorded work:
/// the host rows of a growing chunk land after the growth copy (not under
/// it), and so do their scales and norms, for host and device rows; an
/// empty index's device search pads in order too. The index equals one
/// built outside a recording, row for row.
#[test]
fn adds_inside_a_recording_keep_their_order() {
    let ctx = ctx();
    let (n, d) = (40, 13);
    for storage in [Storage::F32, Storage::Int8] {
        let case = format!("recorded adds {storage:?}");
        let mut r = rng(&case);
        let corpus = gaussian(&mut r, n * d);
        let q = gaussian(&mut r, 3 * d);
        // Chunks of 16 rows: adds of 10 grow a chunk, then start another.
        let opts = IndexOptions::default()
            .metric(Metric::L2)
            .storage(storage)
            .max_chunk_rows(16);
        let mut plain = FlatIndex::new(&ctx, d, opts).unwrap();
        let mut recorded = FlatIndex::new(&ctx, d, opts).unwrap();
        for part in corpus.chunks(10 * d) {
            plain.add(part).unwrap();
        }
        ctx.record(|| {
            for part in corpus.chunks(10 * d) {
                recorded.add(part)?;
            }
            let t = flashdot::Tensor::from_slice(&ctx, &corpus[..8 * d], &[8, d])?;
            recorded.add_tensor(&t)
        })
        .unwrap();
        let t = flashdot::Tensor::from_slice(&ctx, &corpus[..8 * d], &[8, d]).unwrap();
        plain.add_tensor(&t).unwrap();
        assert_eq!(recorded.ids(), plain.ids(), "{case}");
        for &id in plain.ids() {
            let (a, b) = (
                plain.reconstruct(id).unwrap(),
                recorded.reconstruct(id).unwrap(),
            );
            assert_eq!(a, b, "{case} id {id}");
        }
        assert_eq!(
            plain.search(&q, 5).unwrap(),
            recorded.search(&q, 5).unwrap(),
            "{case}"
        );
    }
    let empty = FlatIndex::new(&ctx, 4, IndexOptions::default().metric(Metric::L2)).unwrap();
    let q = flashdot::Tensor::from_slice(&ctx, &[1.0f32; 8], &[2, 4]).unwrap();
    let got = ctx.record(|| empty.search_device(&q, 3)).unwrap();
    assert_eq!(got.scores.to_vec::<f32>().unwrap(), vec![f32::INFINITY; 6]);
    let words = got.ids.to_vec::<u32>().unwrap();
    assert_eq!(bytemuck::cast_slice::<u32, i64>(&words), &[-1i64; 6]);
}
