//! IVF index files: save/load round trips (every metric and storage, after
//! removals and a second add, lists across chunks, a multi-layer chunk, an
//! untrained index) give the saved index's results bit for bit and continue
//! its ids; corrupt, foreign and lying files are `IndexFile` errors, never a
//! panic or an allocation from the header.

mod common;

use common::{blobs, ctx, rng, Rng64};
use flashdot::ops::search::{
    FlatIndex, IndexOptions, IvfIndex, IvfOptions, IvfSearchParams, KMeansOptions, SearchResult,
    Storage, MAX_NLIST,
};
use flashdot::ops::similarity::Metric;
use flashdot::Error;
use rand::Rng;

const METRICS: [Metric; 3] = [Metric::InnerProduct, Metric::Cosine, Metric::L2];
const STORAGES: [Storage; 3] = [Storage::F32, Storage::F16, Storage::Int8];

/// A scratch path for this test process.
fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("flashdot-{}-{name}.fdivf", std::process::id()))
}

/// `a` and `b` are the same results bit for bit (ids, and scores by their
/// bits: `==` would let 0.0 and −0.0 pass).
#[track_caller]
fn same(a: &SearchResult, b: &SearchResult, case: &str) {
    assert_eq!((a.m, a.k), (b.m, b.k), "{case}: shape");
    assert_eq!(a.ids, b.ids, "{case}: ids");
    let bits = |r: &SearchResult| r.scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a), bits(b), "{case}: scores");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Saves `ix` and loads it back (the file removed).
fn round_trip(ix: &IvfIndex, name: &str) -> IvfIndex {
    let path = scratch(name);
    ix.save(&path).unwrap();
    let back = IvfIndex::load(ix.context(), &path);
    std::fs::remove_file(&path).ok();
    back.unwrap()
}

/// Everything a caller sees of `back` is `ix`'s: options, lists, ids,
/// centroids, stored vectors (bit for bit) and search results at several
/// nprobe and k, filtered or not.
fn check_same(ix: &IvfIndex, back: &IvfIndex, queries: &[f32], case: &str) {
    let (a, b) = (ix.options(), back.options());
    assert_eq!(
        (a.nlist, a.metric, a.storage, a.nprobe, a.max_chunk_rows),
        (b.nlist, b.metric, b.storage, b.nprobe, b.max_chunk_rows),
        "{case}: options"
    );
    let (ka, kb) = (&a.kmeans, &b.kmeans);
    assert_eq!(
        (ka.niter, ka.seed, ka.max_points_per_centroid),
        (kb.niter, kb.seed, kb.max_points_per_centroid),
        "{case}: k-means options"
    );
    assert_eq!(back.dim(), ix.dim(), "{case}");
    assert_eq!(back.is_trained(), ix.is_trained(), "{case}");
    assert_eq!(bits(back.centroids()), bits(ix.centroids()), "{case}");
    assert_eq!(back.list_sizes(), ix.list_sizes(), "{case}");
    assert_eq!(back.ids(), ix.ids(), "{case}");
    assert_eq!(back.bytes(), ix.bytes(), "{case}: device bytes");
    for &id in ix.ids().iter().step_by((ix.len() / 7).max(1)) {
        assert_eq!(back.list_of(id), ix.list_of(id), "{case} id {id}");
        let (x, y) = (ix.reconstruct(id).unwrap(), back.reconstruct(id).unwrap());
        assert_eq!(bits(&x), bits(&y), "{case} id {id}");
    }
    if !ix.is_trained() {
        return;
    }
    let nlist = ix.nlist();
    for nprobe in [1, 2.min(nlist), nlist] {
        for k in [1, 10, 40] {
            let p = IvfSearchParams::nprobe(nprobe);
            let c = format!("{case} nprobe {nprobe} k {k}");
            same(
                &back.search_with(queries, k, p).unwrap(),
                &ix.search_with(queries, k, p).unwrap(),
                &c,
            );
        }
    }
    let p = IvfSearchParams::nprobe(nlist);
    let allow = |id: u64| id % 3 == 1;
    same(
        &back.search_filtered(queries, 10, p, allow).unwrap(),
        &ix.search_filtered(queries, 10, p, allow).unwrap(),
        &format!("{case} filtered"),
    );
    same(
        &back.search(queries, 5).unwrap(),
        &ix.search(queries, 5).unwrap(),
        &format!("{case} default nprobe"),
    );
}

/// The bytes `ix`'s file takes, from the format's table.
fn file_size(ix: &IvfIndex) -> usize {
    let (d, o) = (ix.dim(), ix.options());
    let record = d.div_ceil(8) * 8 * [4, 2, 1][o.storage as usize]
        + if o.storage == Storage::Int8 { 4 } else { 0 };
    let centroids = if ix.is_trained() { o.nlist * d * 4 } else { 0 };
    96 + centroids + 8 * o.nlist + ix.len() * (12 + record) + 4
}

/// save → load for every metric × storage, with lists across chunks of 97
/// rows, after removals and a second add (repeated vectors: ties broken by
/// order), then the same add to both: the loaded index is the saved one,
/// `nprobe = nlist` still the flat index, and ids continue.
#[test]
fn ivf_save_load_round_trip() {
    let ctx = ctx();
    let (n, dim, nlist, m) = (500, 20, 6, 5);
    let mut r = rng("ivf save");
    let data = blobs(&mut r, n, dim, nlist, 1.0, 0.3);
    let queries = blobs(&mut r, m, dim, nlist, 1.0, 0.5);
    for metric in METRICS {
        for storage in STORAGES {
            let case = format!("{metric:?} {storage:?}");
            let km = KMeansOptions::default().niter(3).seed(77);
            let opts = IvfOptions::new(nlist)
                .metric(metric)
                .storage(storage)
                .nprobe(2)
                .kmeans(km)
                .max_chunk_rows(97);
            let mut ivf = IvfIndex::new(&ctx, dim, opts).unwrap();
            ivf.train(&data).unwrap();
            let flat_opts = IndexOptions::default().metric(metric).storage(storage);
            let mut flat = FlatIndex::new(&ctx, dim, flat_opts).unwrap();
            let ids: Vec<u64> = (0..400).map(|i| 5 + 3 * i).collect();
            ivf.add_with_ids(&data[..400 * dim], &ids).unwrap();
            flat.add_with_ids(&data[..400 * dim], &ids).unwrap();
            let gone: Vec<u64> = ids.iter().copied().step_by(6).collect();
            ivf.remove_ids(&gone).unwrap();
            flat.remove_ids(&gone).unwrap();
            // The rest, then a copy of 50 stored rows: equal scores, which
            // the orders rank.
            for part in [&data[400 * dim..], &data[dim..51 * dim]] {
                ivf.add(part).unwrap();
                flat.add(part).unwrap();
            }
            // Ids 5, 8, …, 1202, then 1203..=1352: without the largest, the
            // next id (1353) is more than one past the largest stored.
            assert_eq!(ivf.ids().last(), Some(&1352), "{case}");
            ivf.remove_ids(&[1352]).unwrap();
            flat.remove_ids(&[1352]).unwrap();
            let path = scratch(&format!("{metric:?}-{storage:?}"));
            ivf.save(&path).unwrap();
            let size = std::fs::metadata(&path).unwrap().len() as usize;
            assert_eq!(size, file_size(&ivf), "{case}: file size");
            let mut back = IvfIndex::load(&ctx, &path).unwrap();
            std::fs::remove_file(&path).ok();
            assert!(back.training().is_none(), "{case}");
            check_same(&ivf, &back, &queries, &case);
            for k in [1, 10, 40] {
                let got = back
                    .search_with(&queries, k, IvfSearchParams::nprobe(nlist))
                    .unwrap();
                same(
                    &got,
                    &flat.search(&queries, k).unwrap(),
                    &format!("{case} flat k {k}"),
                );
            }
            // Both continue alike: the next ids, and the same layout.
            for ix in [&mut ivf, &mut back] {
                ix.add(&data[..7 * dim]).unwrap();
            }
            assert_eq!(back.ids().last(), Some(&1359), "{case}: next id");
            check_same(&ivf, &back, &queries, &format!("{case} after an add"));
        }
    }
}

/// One multi-layer chunk (20,000 int8 L2 rows: more than a texture layer's
/// lines), saved one layer at a time and loaded one chunk at a time.
#[test]
fn ivf_save_load_round_trip_multi_layer() {
    let ctx = ctx();
    let (n, dim, nlist) = (20_000, 8, 4);
    let mut r = rng("ivf save layers");
    let data = blobs(&mut r, n, dim, nlist, 1.0, 0.3);
    let queries = blobs(&mut r, 3, dim, nlist, 1.0, 0.5);
    let opts = IvfOptions::new(nlist)
        .metric(Metric::L2)
        .storage(Storage::Int8)
        .kmeans(KMeansOptions::default().niter(2));
    let mut ivf = IvfIndex::new(&ctx, dim, opts).unwrap();
    ivf.train(&data).unwrap();
    ivf.add(&data).unwrap();
    ivf.remove_ids(&(0..n as u64).step_by(5).collect::<Vec<_>>())
        .unwrap();
    let back = round_trip(&ivf, "layers");
    check_same(&ivf, &back, &queries, "multi-layer");
}

/// An untrained index, and a trained one emptied by `reset`, round-trip;
/// the loaded ones train, add and search as the saved ones do.
#[test]
fn ivf_untrained_and_empty_indexes_round_trip() {
    let ctx = ctx();
    let (dim, nlist) = (12, 5);
    let mut r = rng("ivf save untrained");
    let data = blobs(&mut r, 200, dim, nlist, 1.0, 0.3);
    let km = KMeansOptions::default().niter(4).seed(9);
    let opts = IvfOptions::new(nlist)
        .metric(Metric::Cosine)
        .storage(Storage::F16)
        .nprobe(3)
        .kmeans(km);
    let mut ivf = IvfIndex::new(&ctx, dim, opts).unwrap();
    let mut back = round_trip(&ivf, "untrained");
    assert!(!back.is_trained() && back.is_empty());
    check_same(&ivf, &back, &[], "untrained");
    assert!(matches!(
        back.add(&data),
        Err(Error::InvalidArgument { .. })
    ));
    // The saved k-means options train the same centroids.
    for ix in [&mut ivf, &mut back] {
        ix.train(&data).unwrap();
        ix.add(&data).unwrap();
    }
    check_same(&ivf, &back, &data[..4 * dim], "trained after load");
    ivf.reset();
    let mut empty = round_trip(&ivf, "empty");
    assert!(empty.is_trained() && empty.is_empty());
    check_same(&ivf, &empty, &data[..4 * dim], "reset");
    empty.add(&data[..dim]).unwrap();
    assert_eq!(empty.ids(), &[0]);
}

/// Rewrites the trailing CRC-32 so that a changed header reaches the checks
/// after the checksum's (the loader must still refuse it).
fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
    let n = b.len() - 4;
    let crc = crc32fast::hash(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `b` with the u64 header field at byte `at` set to `v`, CRC fixed.
fn set_u64(b: &[u8], at: usize, v: u64) -> Vec<u8> {
    let mut b = b.to_vec();
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    with_crc(b)
}

/// A small saved index cut at every byte, with random bit flips, lying
/// headers (huge count, nlist, dim; inconsistent lists, ids, orders) and
/// foreign files (a flat index's, the other way round too): each load is an
/// `IndexFile` error, never a panic or an index, and a lying count is
/// refused before anything is allocated from it.
#[test]
fn corrupt_ivf_files() {
    let ctx = ctx();
    let mut r: Rng64 = rng("corrupt ivf");
    let (dim, nlist) = (5, 3);
    let data = blobs(&mut r, 12, dim, nlist, 1.0, 0.2);
    let opts = IvfOptions::new(nlist)
        .storage(Storage::Int8)
        .metric(Metric::L2)
        .kmeans(KMeansOptions::default().niter(2));
    let mut ivf = IvfIndex::new(&ctx, dim, opts).unwrap();
    ivf.train(&data).unwrap();
    ivf.add_with_ids(&data, &(20..32).collect::<Vec<u64>>())
        .unwrap();
    let path = scratch("corrupt-src");
    ivf.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut flat = FlatIndex::new(&ctx, dim, IndexOptions::default()).unwrap();
    flat.add(&data).unwrap();
    let flat_path = scratch("corrupt-flat");
    flat.save(&flat_path).unwrap();
    let bad = scratch("corrupt");
    let try_load = |bytes: &[u8], what: &str| {
        std::fs::write(&bad, bytes).unwrap();
        match IvfIndex::load(&ctx, &bad) {
            Err(Error::IndexFile { detail, .. }) => detail,
            Err(e) => panic!("{what}: not an IndexFile error: {e}"),
            Ok(_) => panic!("{what}: a corrupt file loaded"),
        }
    };
    // The untouched file loads (with fixed CRC too: `with_crc` is right).
    IvfIndex::load(&ctx, &path).unwrap();
    std::fs::write(&bad, with_crc(good.clone())).unwrap();
    IvfIndex::load(&ctx, &bad).unwrap();
    for cut in 0..good.len() {
        try_load(&good[..cut], &format!("truncated at {cut}"));
    }
    let grown = [&good[..], &[0]].concat();
    assert!(try_load(&grown, "a byte more").contains("truncated or not what"));
    for i in 0..200 {
        let mut b = good.clone();
        for _ in 0..r.random_range(1..=3) {
            let at = r.random_range(0..b.len());
            b[at] ^= 1 << r.random_range(0..8);
        }
        if b != good {
            try_load(&b, &format!("flip {i}"));
        }
    }
    // One flipped bit in the last row's record: only the checksum sees it.
    let mut b = good.clone();
    b[good.len() - 6] ^= 4;
    assert!(try_load(&b, "row bit").contains("checksum"));
    // Lying headers, CRC fixed: refused by range or by size, never
    // allocated (2^40 vectors of 12 + 12 bytes would be 24 TiB).
    let (dim_at, nlist_at, nprobe_at, count_at) = (24, 32, 40, 48);
    let lies = [
        (count_at, 1u64 << 40, "out of range"),
        (count_at, 1 << 31, "truncated or not what"),
        (count_at, u64::MAX, "out of range"),
        (nlist_at, 1 << 60, "not in 1..="),
        (nlist_at, MAX_NLIST as u64 + 1, "not in 1..="),
        (nlist_at, MAX_NLIST as u64, "truncated or not what"),
        (nlist_at, 0, "not in 1..="),
        (dim_at, 1 << 40, "out of range"),
        (dim_at, u32::MAX as u64, "truncated or not what"),
        (dim_at, 0, "out of range"),
        (nprobe_at, 0, "not in 1..="),
        (nprobe_at, nlist as u64 + 1, "not in 1..="),
    ];
    for (at, v, want) in lies {
        let detail = try_load(&set_u64(&good, at, v), &format!("field {at} = {v}"));
        assert!(detail.contains(want), "field {at} = {v}: {detail}");
    }
    // Consistent sizes, inconsistent contents.
    let lists_at = 96 + nlist * dim * 4;
    let ids_at = lists_at + 8 * nlist;
    let orders_at = ids_at + 8 * 12;
    let first_len = u64::from_le_bytes(good[lists_at..lists_at + 8].try_into().unwrap());
    let detail = try_load(&set_u64(&good, lists_at, first_len + 1), "list lengths");
    assert!(detail.contains("list lengths"), "{detail}");
    let detail = try_load(&set_u64(&good, ids_at, 21), "repeated id");
    assert!(detail.contains("repeated"), "{detail}");
    let detail = try_load(&set_u64(&good, ids_at, u64::MAX), "id over MAX_ID");
    assert!(detail.contains("over"), "{detail}");
    let detail = try_load(&set_u64(&good, 56, 31), "next id");
    assert!(detail.contains("next id"), "{detail}");
    let mut b = good.clone();
    b.copy_within(orders_at..orders_at + 4, orders_at + 4);
    assert!(try_load(&with_crc(b), "orders").contains("row order"));
    let mut b = good.clone();
    b[20] = 0;
    assert!(try_load(&with_crc(b), "untrained with vectors").contains("untrained"));
    let mut b = good.clone();
    b[20] = 3;
    assert!(try_load(&with_crc(b), "flags").contains("flags"));
    let mut b = good.clone();
    b[8] = 2;
    assert!(try_load(&b, "version 2").contains("version 2"));
    let mut b = good.clone();
    b[12] = 9;
    assert!(try_load(&b, "metric").contains("metric"));
    // Foreign files: each loader names the other's.
    let flat_file = std::fs::read(&flat_path).unwrap();
    assert!(try_load(&flat_file, "flat file").contains("FlatIndex::load"));
    match FlatIndex::load(&ctx, &path) {
        Err(Error::IndexFile { detail, .. }) => assert!(detail.contains("IvfIndex::load")),
        Err(e) => panic!("an IVF file given to FlatIndex::load: {e}"),
        Ok(_) => panic!("an IVF file loaded as a flat index"),
    }
    let mut npy = b"\x93NUMPY\x01\x00 not an index at all".to_vec();
    npy.resize(200, b'.');
    assert!(try_load(&npy, "npy").contains("magic"));
    for p in [&path, &flat_path, &bad] {
        std::fs::remove_file(p).ok();
    }
    let missing = IvfIndex::load(&ctx, scratch("never-written")).unwrap_err();
    assert!(matches!(missing, Error::IndexFile { .. }), "{missing}");
}
