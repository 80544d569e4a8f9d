//! Bad input to every `grad` op is a typed error, never a panic: wrong
//! shapes (the message names both), dtype mismatches, outputs sharing an
//! input's buffer, tensors of two contexts, ids past their table, targets
//! past the classes, bad hyperparameters.

use super::*;
use flashdot::{Context, Error};

fn z(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(&ctx(), shape, dtype).unwrap()
}

/// A Shape error whose message names both shapes.
#[track_caller]
fn shape_err(r: flashdot::Result<()>, a: &[usize], b: &[usize]) {
    match r {
        Err(Error::Shape { detail, .. }) => {
            for s in [a, b] {
                assert!(
                    detail.contains(&format!("{s:?}")),
                    "{detail} does not name {s:?}"
                );
            }
        }
        other => panic!("expected a Shape error naming {a:?} and {b:?}, got {other:?}"),
    }
}

#[track_caller]
fn dtype_err(r: flashdot::Result<()>) {
    assert!(matches!(r, Err(Error::DType { .. })), "{r:?}");
}

#[track_caller]
fn invalid(r: flashdot::Result<()>, says: &str) {
    match r {
        Err(Error::InvalidArgument { detail, .. }) => {
            assert!(detail.contains(says), "{detail} does not say {says:?}")
        }
        other => panic!("expected InvalidArgument ({says}), got {other:?}"),
    }
}

#[test]
fn elementwise_and_column_sum_bad_inputs_are_errors() {
    let f = DType::F32;
    let (a, b7, u) = (z(&[3, 8], f), z(&[3, 7], f), z(&[3, 8], DType::U32));
    shape_err(add_into(&a, &b7, &z(&[3, 8], f)), &[3, 8], &[3, 7]);
    shape_err(accumulate(&a, &b7), &[3, 8], &[3, 7]);
    dtype_err(add_into(&a, &u, &z(&[3, 8], f)));
    dtype_err(accumulate(&u, &z(&[3, 8], DType::U32)));
    invalid(accumulate(&a, &a.clone()), "share one buffer");
    shape_err(
        activation_backward_into(&a, &b7, Activation::Relu, &z(&[3, 8], f)),
        &[3, 8],
        &[3, 7],
    );
    dtype_err(activation_into(
        &u,
        Activation::Silu,
        &z(&[3, 8], DType::U32),
    ));
    shape_err(column_sum_into(&a, &z(&[7], f)), &[3, 8], &[7]);
    dtype_err(column_sum_into(&u, &z(&[8], f)));
    let dy = z(&[2, 8], f);
    shape_err(
        mean_pool_backward_into(&dy, &[1, 2], &z(&[3, 4, 8], f)),
        &[3, 4, 8],
        &[2, 8],
    );
    dtype_err(mean_pool_backward_into(
        &z(&[2, 8], DType::U32),
        &[1, 2],
        &z(&[2, 4, 8], f),
    ));
    let e = mean_pool_backward_into(&dy, &[1], &z(&[2, 4, 8], f)).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

#[test]
fn linear_and_norm_backward_bad_inputs_are_errors() {
    let f = DType::F32;
    let (x, w, dy) = (z(&[4, 5], f), z(&[3, 5], f), z(&[4, 3], f));
    shape_err(
        linear_backward(&x, &z(&[3, 6], f), &dy, Activation::None, None).map(|_| ()),
        &[4, 5],
        &[3, 6],
    );
    shape_err(
        linear_backward(&x, &w, &z(&[4, 2], f), Activation::None, None).map(|_| ()),
        &[3, 5],
        &[4, 2],
    );
    shape_err(
        linear_backward(&x, &w, &dy, Activation::Relu, Some(&z(&[4, 2], f))).map(|_| ()),
        &[4, 2],
        &[4, 3],
    );
    invalid(
        linear_backward(&x, &w, &dy, Activation::GeluErf, None).map(|_| ()),
        "pre-activation",
    );
    dtype_err(
        linear_backward(&x, &z(&[3, 5], DType::U32), &dy, Activation::None, None).map(|_| ()),
    );
    let into = LinearGradsInto {
        dw: Some(&z(&[5, 3], f)),
        ..Default::default()
    };
    shape_err(
        linear_backward_into(&x, &w, &dy, Activation::None, None, into),
        &[5, 3],
        &[3, 5],
    );
    let into = LinearGradsInto {
        dx: Some(&x),
        ..Default::default()
    };
    invalid(
        linear_backward_into(&x, &w, &dy, Activation::None, None, into),
        "share one buffer",
    );

    let (h, gamma) = (8, z(&[8], f));
    let x = z(&[3, h], f);
    let (dx, dg, db) = (z(&[3, h], f), z(&[h], f), z(&[h], f));
    fn g<'a>(dx: &'a Tensor, dg: &'a Tensor, db: &'a Tensor) -> NormGrads<'a> {
        NormGrads {
            dx,
            dgamma: dg,
            dbeta: db,
        }
    }
    let run = |res: Option<&Tensor>, gm: &Tensor, eps: f32, dy: &Tensor, gr: NormGrads<'_>| {
        layer_norm_backward_into(&x, res, gm, eps, dy, gr)
    };
    let dy = z(&[3, h], f);
    shape_err(
        run(None, &z(&[7], f), 1e-5, &dy, g(&dx, &dg, &db)),
        &[7],
        &[3, 8],
    );
    shape_err(
        run(Some(&z(&[3, 7], f)), &gamma, 1e-5, &dy, g(&dx, &dg, &db)),
        &[3, 8],
        &[3, 7],
    );
    shape_err(
        run(None, &gamma, 1e-5, &z(&[2, 8], f), g(&dx, &dg, &db)),
        &[3, 8],
        &[2, 8],
    );
    shape_err(
        run(None, &gamma, 1e-5, &dy, g(&dx, &z(&[9], f), &db)),
        &[9],
        &[3, 8],
    );
    dtype_err(run(
        None,
        &gamma,
        1e-5,
        &dy,
        g(&z(&[3, h], DType::U32), &dg, &db),
    ));
    invalid(run(None, &gamma, -1.0, &dy, g(&dx, &dg, &db)), "eps");
    invalid(
        run(None, &gamma, 1e-5, &dy, g(&dy, &dg, &db)),
        "share one buffer",
    );
}

#[test]
fn embedding_and_loss_bad_inputs_are_errors() {
    let f = DType::F32;
    let dy = z(&[2, 3, 4], f);
    let (word, pos, types) = (z(&[5, 4], f), z(&[3, 4], f), z(&[2, 4], f));
    let all = EmbeddingGrads {
        word: Some(&word),
        pos: Some(&pos),
        types: Some(&types),
    };
    let ids = [0u32, 1, 2, 3, 4, 0];
    let mut past = ids;
    past[4] = 5;
    invalid(
        embedding_backward_into(&past, None, &dy, all),
        "token 4 (sequence 1, position 1) has id 5",
    );
    invalid(
        embedding_backward_into(&ids, Some(&[0, 0, 2, 0, 0, 0]), &dy, all),
        "type id 2",
    );
    // With h = 0 every gradient is empty, and ids are still checked.
    let (dy0, word0) = (z(&[2, 3, 0], f), z(&[5, 0], f));
    let empty = EmbeddingGrads {
        word: Some(&word0),
        ..Default::default()
    };
    invalid(
        embedding_backward_into(&past, None, &dy0, empty),
        "has id 5",
    );
    embedding_backward_into(&ids, None, &dy0, empty).unwrap();
    let e = embedding_backward_into(&ids[..5], None, &dy, all).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("[2, 3, 4]"),
        "{e}"
    );
    let short = z(&[2, 4], f);
    let grads = EmbeddingGrads {
        pos: Some(&short),
        ..all
    };
    shape_err(
        embedding_backward_into(&ids, None, &dy, grads),
        &[2, 4],
        &[2, 3, 4],
    );
    let grads = EmbeddingGrads {
        word: Some(&z(&[5, 3], f)),
        ..all
    };
    shape_err(
        embedding_backward_into(&ids, None, &dy, grads),
        &[5, 3],
        &[2, 3, 4],
    );
    dtype_err(embedding_backward_into(
        &ids,
        None,
        &z(&[2, 3, 4], DType::U32),
        EmbeddingGrads::default(),
    ));

    let (logits, dl) = (z(&[3, 5], f), z(&[3, 5], f));
    let o = CrossEntropyOptions::default();
    let ce = |l: &Tensor, t: &[u32], d: &Tensor| cross_entropy_into(l, t, &o, d).map(|_| ());
    invalid(ce(&logits, &[0, 5, 1], &dl), "row 1 has target 5");
    // The ignore index passes; without one it is a target past the classes.
    ce(&logits, &[0, IGNORE_INDEX, 1], &dl).unwrap();
    let none = CrossEntropyOptions {
        ignore_index: None,
        ..o
    };
    let r = cross_entropy_into(&logits, &[0, IGNORE_INDEX, 1], &none, &dl).map(|_| ());
    invalid(r, "past the 5 classes");
    let e = ce(&logits, &[0, 1], &dl).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    shape_err(ce(&logits, &[0, 1, 2], &z(&[3, 4], f)), &[3, 5], &[3, 4]);
    dtype_err(ce(&z(&[3, 5], DType::U32), &[0, 1, 2], &dl));
    invalid(ce(&logits, &[0, 1, 2], &logits.clone()), "share one buffer");

    let (p, g, m, v) = (z(&[6], f), z(&[6], f), z(&[6], f), z(&[6], f));
    let a = AdamWOptions::default();
    invalid(adamw_step(&p, &g, &m, &v, 0, &a), "step counts from 1");
    for bad in [
        AdamWOptions { lr: -1.0, ..a },
        AdamWOptions {
            betas: (1.0, 0.999),
            ..a
        },
        AdamWOptions { eps: f64::NAN, ..a },
        AdamWOptions {
            weight_decay: -0.1,
            ..a
        },
    ] {
        invalid(
            adamw_step(&p, &g, &m, &v, 1, &bad),
            "must be finite and in range",
        );
    }
    shape_err(adamw_step(&p, &z(&[5], f), &m, &v, 1, &a), &[6], &[5]);
    dtype_err(adamw_step(&p, &g, &z(&[6], DType::U32), &v, 1, &a));
    invalid(
        adamw_step(&p, &g, &m, &m.clone(), 1, &a),
        "share one buffer",
    );
}

/// Tensors of two contexts in one call: InvalidArgument naming both.
#[test]
fn tensors_of_two_contexts_are_refused() {
    let f = DType::F32;
    let other = Context::new().unwrap();
    let there = |s: &[usize]| Tensor::zeros(&other, s, f).unwrap();
    let two = |r: flashdot::Result<()>| invalid(r, "share a context");
    two(add_into(&z(&[4], f), &there(&[4]), &z(&[4], f)));
    two(accumulate(&z(&[4], f), &there(&[4])));
    two(column_sum_into(&z(&[2, 4], f), &there(&[4])));
    two(activation_backward_into(
        &z(&[4], f),
        &there(&[4]),
        Activation::Relu,
        &z(&[4], f),
    ));
    two(linear_backward(
        &z(&[2, 3], f),
        &there(&[4, 3]),
        &z(&[2, 4], f),
        Activation::None,
        None,
    )
    .map(|_| ()));
    let (dx, dg, db) = (z(&[2, 4], f), there(&[4]), z(&[4], f));
    let grads = NormGrads {
        dx: &dx,
        dgamma: &dg,
        dbeta: &db,
    };
    two(layer_norm_backward_into(
        &z(&[2, 4], f),
        None,
        &z(&[4], f),
        1e-5,
        &z(&[2, 4], f),
        grads,
    ));
    let word = there(&[3, 4]);
    let grads = EmbeddingGrads {
        word: Some(&word),
        ..Default::default()
    };
    two(embedding_backward_into(
        &[0, 1],
        None,
        &z(&[1, 2, 4], f),
        grads,
    ));
    two(mean_pool_backward_into(
        &there(&[1, 4]),
        &[1],
        &z(&[1, 2, 4], f),
    ));
    let o = CrossEntropyOptions::default();
    two(cross_entropy_into(&z(&[2, 3], f), &[0, 1], &o, &there(&[2, 3])).map(|_| ()));
    let a = AdamWOptions::default();
    two(adamw_step(
        &z(&[3], f),
        &there(&[3]),
        &z(&[3], f),
        &z(&[3], f),
        1,
        &a,
    ));
}
