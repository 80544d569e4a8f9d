//! The encoder's layers: embedding lookup, layer norm with a fused residual,
//! masked mean pooling. Each against its f64 reference on random data with
//! poisoned (NaN) outputs, at shapes that are not multiples of any tile, in
//! f32 and f16 storage, and each bad shape a typed error.

mod common;

use common::*;
use flashdot::ops::embedding::{embedding_into, EmbeddingTables};
use flashdot::ops::norm::{layer_norm_into, layer_norm_with, NormVariant};
use flashdot::ops::pooling::mean_pool_into;
use flashdot::{reference, verify, DType, Error, Tensor};
use rand::Rng;

fn dtypes() -> Vec<DType> {
    float_dtypes(&ctx())
}

/// Relative-L2 bound for f32 arithmetic, or for rounding each stored f16 value.
fn tol(dtype: DType, f32_tol: f64) -> f64 {
    if dtype == DType::F16 {
        5e-3
    } else {
        f32_tol
    }
}

#[test]
fn embedding_sums_token_position_and_type_rows() {
    let ctx = ctx();
    let mut rng = rng("embedding");
    for dtype in dtypes() {
        for &(batch, seq, h, vocab) in &[
            (1, 1, 1, 1),
            (2, 3, 59, 7),
            (3, 17, 127, 1009),
            (1, 5, 384, 30),
        ] {
            let (word, w) = upload(&uniform(&mut rng, vocab * h), &[vocab, h], dtype);
            let npos = seq + 2;
            let (pos, p) = upload(&uniform(&mut rng, npos * h), &[npos, h], dtype);
            let (types, t) = upload(&uniform(&mut rng, 2 * h), &[2, h], dtype);
            let ids: Vec<u32> = (0..batch * seq)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect();
            let tts: Vec<u32> = (0..batch * seq).map(|_| rng.random_range(0..2)).collect();
            let tids = Tensor::from_slice(&ctx, &ids, &[batch, seq]).unwrap();
            let ttids = Tensor::from_slice(&ctx, &tts, &[batch, seq]).unwrap();
            let out = Tensor::zeros(&ctx, &[batch, seq, h], dtype).unwrap();
            let tables = EmbeddingTables {
                word: &word,
                pos: &pos,
                types: &types,
            };
            for with_types in [false, true] {
                out.poison().unwrap();
                embedding_into(&tids, with_types.then_some(&ttids), tables, &out).unwrap();
                let want = reference::embedding::embedding(
                    &ids,
                    with_types.then_some(&tts[..]),
                    (&w, &p, &t),
                    seq,
                    h,
                );
                check(
                    &verify::compare(&read(&out), &want),
                    tol(dtype, 1e-6),
                    &format!("embedding {dtype} b={batch} s={seq} h={h} types={with_types}"),
                );
            }
            // An id past the vocabulary is a NaN row, not another row.
            let mut bad = ids.clone();
            bad[0] = vocab as u32;
            let tb = Tensor::from_slice(&ctx, &bad, &[batch, seq]).unwrap();
            embedding_into(&tb, None, tables, &out).unwrap();
            let got = read(&out);
            assert!(got[..h].iter().all(|v| v.is_nan()));
            assert!(got[h..].iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn embedding_bad_shapes_are_errors() {
    let ctx = ctx();
    let word = Tensor::zeros(&ctx, &[10, 8], DType::F32).unwrap();
    let pos = Tensor::zeros(&ctx, &[4, 8], DType::F32).unwrap();
    let types = Tensor::zeros(&ctx, &[2, 8], DType::F32).unwrap();
    let narrow_pos = Tensor::zeros(&ctx, &[4, 7], DType::F32).unwrap();
    let ids = Tensor::from_slice(&ctx, &[1u32, 2, 3, 4, 5], &[1, 5]).unwrap();
    let ids4 = Tensor::from_slice(&ctx, &[1u32, 2, 3, 4], &[1, 4]).unwrap();
    let fids = Tensor::zeros(&ctx, &[1, 4], DType::F32).unwrap();
    let out = Tensor::zeros(&ctx, &[1, 4, 8], DType::F32).unwrap();
    let t = EmbeddingTables {
        word: &word,
        pos: &pos,
        types: &types,
    };
    let shape = |r: flashdot::Result<()>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    shape(embedding_into(&ids, None, t, &out)); // 5 tokens, 4 positions
    let e = embedding_into(&fids, None, t, &out).unwrap_err(); // f32 ids
    assert!(
        matches!(
            e,
            Error::DType {
                found: DType::F32,
                ..
            }
        ) && e.to_string().contains("ids"),
        "{e}"
    );
    shape(embedding_into(&ids4, Some(&ids), t, &out)); // type ids of another shape
    shape(embedding_into(
        &ids4,
        None,
        EmbeddingTables {
            pos: &narrow_pos,
            ..t
        },
        &out,
    ));
    let wrong_out = Tensor::zeros(&ctx, &[1, 4, 7], DType::F32).unwrap();
    shape(embedding_into(&ids4, None, t, &wrong_out));
    // Empty batch: nothing to do.
    let none = Tensor::zeros(&ctx, &[0, 4], DType::U32).unwrap();
    let empty = Tensor::zeros(&ctx, &[0, 4, 8], DType::F32).unwrap();
    embedding_into(&none, None, t, &empty).unwrap();
}

#[test]
fn layer_norm_with_and_without_residual() {
    let ctx = ctx();
    let mut rng = rng("layer norm");
    for dtype in dtypes() {
        for &(rows, h) in &[(1, 1), (3, 3), (59, 127), (5, 384), (2, 1009), (1, 4097)] {
            // An offset mean and a spread that the two-pass variance must survive.
            let x: Vec<f32> = uniform(&mut rng, rows * h)
                .iter()
                .map(|v| 3.0 + 2.0 * v)
                .collect();
            let (tx, x) = upload(&x, &[rows, h], dtype);
            let (tr, r) = upload(&uniform(&mut rng, rows * h), &[rows, h], dtype);
            let (tg, g) = upload(&uniform(&mut rng, h), &[h], dtype);
            let (tb, b) = upload(&uniform(&mut rng, h), &[h], dtype);
            let out = Tensor::zeros(&ctx, &[rows, h], dtype).unwrap();
            for res in [false, true] {
                let want = reference::norm::layer_norm(&x, res.then_some(&r[..]), &g, &b, 1e-12, h);
                for v in [NormVariant::Auto, NormVariant::Workgroup, NormVariant::Rows] {
                    out.poison().unwrap();
                    layer_norm_with(&tx, res.then_some(&tr), &tg, &tb, 1e-12, v, &out).unwrap();
                    check(
                        &verify::compare(&read(&out), &want),
                        tol(dtype, 1e-5),
                        &format!("layer norm {v:?} {dtype} rows={rows} h={h} residual={res}"),
                    );
                }
            }
        }
    }
}

#[test]
fn layer_norm_bad_inputs_are_errors() {
    let ctx = ctx();
    let x = Tensor::zeros(&ctx, &[3, 8], DType::F32).unwrap();
    let g = Tensor::zeros(&ctx, &[8], DType::F32).unwrap();
    let g7 = Tensor::zeros(&ctx, &[7], DType::F32).unwrap();
    let r = Tensor::zeros(&ctx, &[3, 7], DType::F32).unwrap();
    let out = Tensor::zeros(&ctx, &[3, 8], DType::F32).unwrap();
    let shape = |r: flashdot::Result<()>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    shape(layer_norm_into(&x, None, &g7, &g, 1e-5, &out));
    shape(layer_norm_into(&x, Some(&r), &g, &g, 1e-5, &out));
    shape(layer_norm_into(&x, None, &g, &g, 1e-5, &r));
    let e = layer_norm_into(&x, None, &g, &g, f32::NAN, &out).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = layer_norm_into(&x, None, &g, &g, 1e-5, &x).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn mean_pool_over_valid_tokens() {
    let ctx = ctx();
    let mut rng = rng("mean pool");
    for dtype in dtypes() {
        for &(batch, seq, h) in &[(1, 1, 1), (3, 7, 3), (4, 59, 127), (2, 128, 384)] {
            let (tx, x) = upload(&uniform(&mut rng, batch * seq * h), &[batch, seq, h], dtype);
            let lens: Vec<u32> = (0..batch)
                .map(|b| match b {
                    0 => seq as u32,
                    1 => 0,
                    2 => seq as u32 + 5,
                    _ => rng.random_range(1..=seq as u32),
                })
                .collect();
            let out = Tensor::zeros(&ctx, &[batch, h], DType::F32).unwrap();
            out.poison().unwrap();
            mean_pool_into(&tx, &lens, &out).unwrap();
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let want = reference::pooling::mean_pool(&x64, &lens, seq, h);
            check(
                &verify::compare(&out.to_vec::<f32>().unwrap(), &want),
                1e-5,
                &format!("mean pool {dtype} b={batch} s={seq} h={h}"),
            );
        }
    }
    let x = Tensor::zeros(&ctx, &[2, 3, 4], DType::F32).unwrap();
    let out = Tensor::zeros(&ctx, &[2, 4], DType::F32).unwrap();
    let e = mean_pool_into(&x, &[1], &out).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = mean_pool_into(
        &x,
        &[1, 2],
        &Tensor::zeros(&ctx, &[2, 4], DType::U32).unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::DType {
                found: DType::U32,
                ..
            }
        ),
        "{e}"
    );
}
