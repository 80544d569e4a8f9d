//! Index files: save/load round trips and corrupt files refused.

use crate::common::*;
use crate::gaussian;
use flashdot::ops::search::*;
use flashdot::ops::similarity::Metric;
use flashdot::Error;
use rand::Rng;

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
