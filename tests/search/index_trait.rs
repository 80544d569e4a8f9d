//! The `Index` trait: one script of calls (train, adds with and without
//! ids, searches, a filter, removal, reconstruction, bad input, reset) run
//! through a `Box<dyn Index>` of each kind — flat, IVF probing every list,
//! sharded over two contexts — gives the flat index's outcome at every step.

use crate::common::*;
use crate::integers;
use flashdot::ops::search::*;
use flashdot::ops::similarity::Metric;
use flashdot::{Context, Error};

/// What one step of the script returned.
#[derive(Debug, PartialEq)]
enum Outcome {
    Search(SearchResult),
    Count(usize),
    Flag(bool),
    Vector(Vec<f32>),
    /// The error's variant: swapping the index must not change what a
    /// caller matches on.
    Refused(&'static str),
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Shape { .. } => "Shape",
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::Unsupported { .. } => "Unsupported",
        _ => "other",
    }
}

fn outcome<T>(r: flashdot::Result<T>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    r.map_or_else(|e| Outcome::Refused(kind(&e)), ok)
}

/// The corpus in three parts and the queries, rows of `D`.
struct Data {
    parts: [Vec<f32>; 3],
    queries: Vec<f32>,
}

const D: usize = 11;

/// Runs the script on `ix` and returns every step's label and outcome. Ids
/// grow with insertion (`add_with_ids` takes increasing ids), so that the
/// sharded index's ties (lower id first) are the flat index's (storage
/// order) and IVF's (the order added).
fn script(mut ix: Box<dyn Index>, data: &Data) -> Vec<(String, Outcome)> {
    let mut out: Vec<(String, Outcome)> = Vec::new();
    let mut step = |label: &str, o: Outcome| out.push((label.to_string(), o));
    let q = &data.queries;
    assert_eq!(ix.dim(), D, "{}", ix.name());
    if !ix.is_trained() {
        // Adding to an untrained index is refused and adds nothing.
        let e = ix.add(&data.parts[0]).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. }),
            "{}: {e}",
            ix.name()
        );
        assert!(ix.is_empty(), "{}", ix.name());
    }
    // k-means for IVF; nothing for the flat indexes.
    ix.train(&data.parts[0]).unwrap();
    step("trained", Outcome::Flag(ix.is_trained()));
    step("empty", Outcome::Flag(ix.is_empty()));
    ix.add(&data.parts[0]).unwrap();
    let n1 = (data.parts[1].len() / D) as u64;
    let ids: Vec<u64> = (0..n1).map(|i| 1000 + 3 * i).collect();
    ix.add_with_ids(&data.parts[1], &ids).unwrap();
    ix.add(&data.parts[2]).unwrap();
    step("len", Outcome::Count(ix.len()));
    assert!(ix.bytes() > 0, "{}: bytes of a full index", ix.name());
    for k in [1, 10, 150] {
        step(
            &format!("search k={k}"),
            outcome(ix.search(q, k), Outcome::Search),
        );
    }
    let every_third = |id: u64| id.is_multiple_of(3);
    step(
        "filtered",
        outcome(ix.search_filtered(q, 10, &every_third), Outcome::Search),
    );
    let gone: Vec<u64> = (0..40).chain([1000, 1003, 1006, 99_999]).collect();
    step("removed", outcome(ix.remove_ids(&gone), Outcome::Count));
    step("len after removal", Outcome::Count(ix.len()));
    step(
        "search after removal",
        outcome(ix.search(q, 10), Outcome::Search),
    );
    for id in [0, 40, 1009, 1000 + 3 * n1] {
        step(&format!("contains {id}"), Outcome::Flag(ix.contains(id)));
    }
    for id in [3, 41, 1009, 1000 + 3 * n1 + 1, u64::MAX] {
        step(
            &format!("reconstruct {id}"),
            outcome(ix.reconstruct(id), Outcome::Vector),
        );
    }
    // Bad input: the same typed errors, and nothing added.
    step(
        "ragged add",
        outcome(ix.add(&[1.0; D + 1]), |_| Outcome::Count(0)),
    );
    step(
        "ids not one per row",
        outcome(ix.add_with_ids(&[1.0; 2 * D], &[7_000]), |_| {
            Outcome::Count(0)
        }),
    );
    step(
        "id already stored",
        outcome(ix.add_with_ids(&[1.0; D], &[1009]), |_| Outcome::Count(0)),
    );
    step(
        "id over MAX_ID",
        outcome(ix.add_with_ids(&[1.0; D], &[MAX_ID + 1]), |_| {
            Outcome::Count(0)
        }),
    );
    step(
        "k over MAX_K",
        outcome(ix.search(q, MAX_K + 1), Outcome::Search),
    );
    step(
        "ragged queries",
        outcome(ix.search(&q[1..], 3), Outcome::Search),
    );
    step("len after refusals", Outcome::Count(ix.len()));
    ix.reset();
    step("empty after reset", Outcome::Flag(ix.is_empty()));
    step("trained after reset", Outcome::Flag(ix.is_trained()));
    step(
        "search after reset",
        outcome(ix.search(q, 4), Outcome::Search),
    );
    // Ids start again from 0.
    ix.add(&data.parts[2]).unwrap();
    step(
        "search after re-add",
        outcome(ix.search(q, 10), Outcome::Search),
    );
    ix.synchronize().unwrap();
    out
}

/// Flat, IVF (every list probed) and sharded indexes behind `Box<dyn Index>`
/// agree with the flat index at every step of the script, for inner product
/// on f32 storage and L2 on int8 (integer data: exact scores and ties).
#[test]
fn every_index_behind_the_trait_is_the_flat_index() {
    let ctx_a = ctx();
    let ctx_b = Context::new().unwrap();
    for (metric, storage) in [
        (Metric::InnerProduct, Storage::F32),
        (Metric::L2, Storage::Int8),
    ] {
        let case = format!("Index trait {metric:?} {storage:?}");
        let mut r = rng(&case);
        let data = Data {
            parts: [
                integers(&mut r, 70 * D),
                integers(&mut r, 29 * D),
                integers(&mut r, 33 * D),
            ],
            queries: integers(&mut r, 5 * D),
        };
        let opts = IndexOptions::default().metric(metric).storage(storage);
        let nlist = 6;
        let ivf_opts = IvfOptions::new(nlist)
            .metric(metric)
            .storage(storage)
            .nprobe(nlist)
            .kmeans(KMeansOptions::default().niter(4));
        let kinds: Vec<Box<dyn Index>> = vec![
            Box::new(FlatIndex::new(&ctx_a, D, opts).unwrap()),
            Box::new(IvfIndex::new(&ctx_a, D, ivf_opts).unwrap()),
            Box::new(ShardedIndex::new(&[ctx_a.clone(), ctx_b.clone()], D, opts).unwrap()),
        ];
        let names: Vec<&str> = kinds.iter().map(|ix| ix.name()).collect();
        assert_eq!(names, ["FlatIndex", "IvfIndex", "ShardedIndex"]);
        let mut transcripts = kinds.into_iter().map(|ix| script(ix, &data));
        let want = transcripts.next().unwrap();
        // The flat index's own outcomes are what the trait's docs promise.
        let at = |label: &str| &want.iter().find(|(l, _)| l == label).unwrap().1;
        assert_eq!(at("removed"), &Outcome::Count(43), "{case}");
        assert_eq!(at("ragged add"), &Outcome::Refused("Shape"), "{case}");
        assert_eq!(at("k over MAX_K"), &Outcome::Refused("InvalidArgument"));
        assert_eq!(at("empty after reset"), &Outcome::Flag(true), "{case}");
        for (name, got) in names[1..].iter().zip(transcripts) {
            assert_eq!(got.len(), want.len(), "{case} {name}");
            for ((label, g), (_, w)) in got.iter().zip(&want) {
                assert_eq!(
                    g,
                    w,
                    "{case}: {name} differs from FlatIndex at '{label}' (FLASHDOT_SEED={})",
                    seed()
                );
            }
        }
    }
}

/// An untrained IVF index behind the trait refuses searches too; a flat
/// index's `train` reads nothing (any length is accepted).
#[test]
fn untrained_ivf_refuses_and_flat_train_is_a_no_op() {
    let ctx = ctx();
    let mut ivf: Box<dyn Index> = Box::new(IvfIndex::new(&ctx, 4, IvfOptions::new(2)).unwrap());
    assert!(!ivf.is_trained());
    let e = ivf.search(&[0.0; 4], 1).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = ivf.train(&[0.0; 4]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }),
        "one row, two lists: {e}"
    );
    let mut flat: Box<dyn Index> =
        Box::new(FlatIndex::new(&ctx, 4, IndexOptions::default()).unwrap());
    assert!(flat.is_trained());
    flat.train(&[1.0; 3]).unwrap();
    assert!(flat.is_empty() && flat.is_trained());
}
