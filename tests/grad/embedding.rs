//! Embedding backward: the three tables' gradients against the f64
//! reference, with repeated ids (one id at every position), ids never used
//! (zero rows), token types or none, a position table longer than the
//! sequences, skipped tables, an empty batch, and bitwise determinism.

use super::*;

/// Inputs of one case: `dy [batch, seq, h]` and the host ids.
struct Tokens {
    dy: Tensor,
    dyv: Vec<f32>,
    ids: Vec<u32>,
    tts: Vec<u32>,
}

fn tokens(
    r: &mut Rng64,
    (batch, seq, h): (usize, usize, usize),
    vocab: usize,
    dtype: DType,
) -> Tokens {
    let n = batch * seq;
    let (dy, dyv) = upload(&uniform(r, n * h), &[batch, seq, h], dtype);
    // Half the tokens are id 0 (a padding id read everywhere); the rest
    // draw from the lower half of the vocabulary, so the upper half is
    // never read.
    let ids = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                0
            } else {
                r.random_range(0..vocab.div_ceil(2) as u32)
            }
        })
        .collect();
    let tts = (0..n).map(|_| r.random_range(0..2)).collect();
    Tokens { dy, dyv, ids, tts }
}

#[test]
fn embedding_backward_matches_the_reference() {
    let mut r = rng("grad embedding");
    // (batch, seq, h, vocab, position rows)
    let shapes = [
        (1, 1, 1, 1, 1),
        (2, 3, 59, 7, 5),
        (3, 127, 3, 1009, 130),
        (1, 59, 127, 30, 64),
        (0, 4, 3, 5, 4),
    ];
    for dtype in dtypes() {
        for &(batch, seq, h, vocab, npos) in &shapes {
            let t = tokens(&mut r, (batch, seq, h), vocab, dtype);
            let n = batch * seq;
            for with_types in [false, true] {
                let tt = with_types.then_some(&t.tts[..]);
                let (word, pos, types) = (
                    poisoned(&[vocab, h], dtype),
                    poisoned(&[npos, h], dtype),
                    poisoned(&[2, h], dtype),
                );
                let grads = EmbeddingGrads {
                    word: Some(&word),
                    pos: Some(&pos),
                    types: Some(&types),
                };
                embedding_backward_into(&t.ids, tt, &t.dy, grads).unwrap();
                let dims = (vocab, npos, 2);
                let want = reference::grad::embedding_backward(&t.ids, tt, &t.dyv, seq, h, dims);
                let scale =
                    reference::grad::embedding_backward(&t.ids, tt, &abs(&t.dyv), seq, h, dims);
                let case =
                    format!("embedding backward {dtype} [{batch}, {seq}, {h}] types={with_types}");
                for (name, got, want, scale) in [
                    ("word", &word, &want.word, &scale.word),
                    ("pos", &pos, &want.pos, &scale.pos),
                    ("types", &types, &want.types, &scale.types),
                ] {
                    let bound = sum_bound(scale, n);
                    within(&read(got), want, &bound, dtype, &format!("{case} {name}"));
                }
                // A second run gives the same bits (a fixed order of sums).
                let again = poisoned(&[vocab, h], dtype);
                let grads = EmbeddingGrads {
                    word: Some(&again),
                    ..Default::default()
                };
                embedding_backward_into(&t.ids, tt, &t.dy, grads).unwrap();
                assert_eq!(bits(&word), bits(&again), "{case}: not deterministic");
            }
        }
    }
}

/// Every token one id: one row sums 1,009 rows, every other row is zero;
/// a table left out is not written.
#[test]
fn embedding_backward_of_one_repeated_id() {
    let mut r = rng("grad embedding repeated");
    let (seq, h, vocab) = (1009, 5, 4);
    for dtype in dtypes() {
        let (dy, dyv) = upload(&uniform(&mut r, seq * h), &[1, seq, h], dtype);
        let ids = vec![2u32; seq];
        let (word, pos) = (poisoned(&[vocab, h], dtype), poisoned(&[seq, h], dtype));
        let grads = EmbeddingGrads {
            word: Some(&word),
            pos: None,
            types: None,
        };
        embedding_backward_into(&ids, None, &dy, grads).unwrap();
        let want = reference::grad::embedding_backward(&ids, None, &dyv, seq, h, (vocab, seq, 1));
        let scale =
            reference::grad::embedding_backward(&ids, None, &abs(&dyv), seq, h, (vocab, seq, 1));
        let got = read(&word);
        within(
            &got,
            &want.word,
            &sum_bound(&scale.word, seq),
            dtype,
            "one id",
        );
        assert!(got[..2 * h].iter().chain(&got[3 * h..]).all(|&v| v == 0.0));
        assert!(read(&pos).iter().all(|v| v.is_nan()), "pos was skipped");
    }
}
