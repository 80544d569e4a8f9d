//! User ids: removal with compaction, reconstruct, id errors and reset,
//! filters inside the scan.

use crate::common::*;
use crate::{check_rows, check_rows_l2, integers, reference_search};
use flashdot::ops::search::*;
use flashdot::ops::similarity::Metric;
use flashdot::{reference, Error};

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
