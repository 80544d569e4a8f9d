//! A sharded index over two contexts against one index holding every vector.

use crate::common::*;
use crate::integers;
use flashdot::ops::search::*;
use flashdot::{Context, Error};

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
