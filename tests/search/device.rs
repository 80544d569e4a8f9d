//! Device tensors in and out: rows added from the device, queries from the
//! device, results left on the device, adds inside a recording.

use crate::common::*;
use crate::gaussian;
use flashdot::ops::search::*;
use flashdot::ops::similarity::Metric;
use flashdot::{Context, Error};

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
