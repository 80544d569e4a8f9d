//! normalize / cosine / scores against the CPU reference on odd shapes.

mod common;

use common::*;
use flashdot::ops::similarity::*;
use flashdot::{f16, reference, verify, DType, Error, Tensor};

fn with_zero_row(mut x: Vec<f32>, d: usize) -> Vec<f32> {
    // Row 1 (when present) is all zero: it must stay zero, never NaN.
    if x.len() >= 2 * d {
        x[d..2 * d].iter_mut().for_each(|v| *v = 0.0);
    }
    x
}

#[test]
fn normalize_and_cosine_f32_f16() {
    let ctx = ctx();
    for d in [1, 3, 768, 1000] {
        for n in [1, 3, 127, 1009] {
            for dtype in float_dtypes(&ctx) {
                let case = format!("similarity n={n} d={d} {dtype}");
                let mut r = rng(&case);
                let a = with_zero_row(uniform(&mut r, n * d), d);
                let b = uniform(&mut r, n * d);
                let (ta, a) = upload(&a, &[n, d], dtype);
                let (tb, b) = upload(&b, &[n, d], dtype);
                // f16 output storage rounds each element (2^-11 relative).
                let tol = if dtype == DType::F16 { 5e-3 } else { 1e-5 };
                let out = Tensor::zeros(&ctx, &[n, d], dtype).unwrap();
                out.poison().unwrap();
                normalize_into(&ta, &out).unwrap();
                let got: Vec<f32> = match dtype {
                    DType::F16 => from_f16(&out.to_vec::<f16>().unwrap()),
                    _ => out.to_vec::<f32>().unwrap(),
                };
                let want = reference::similarity::normalize(&a, d);
                check(
                    &verify::compare(&got, &want),
                    tol,
                    &format!("{case} normalize"),
                );
                let c = Tensor::zeros(&ctx, &[n], DType::F32).unwrap();
                c.poison().unwrap();
                cosine_into(&ta, &tb, &c).unwrap();
                let want = reference::similarity::cosine(&a, &b, d);
                check(
                    &verify::compare(&c.to_vec::<f32>().unwrap(), &want),
                    cosine_tolerance(&a, &b, d, &want),
                    &format!("{case} cosine"),
                );
            }
        }
    }
}

#[test]
fn normalize_in_place_zero_rows_stay_zero() {
    let ctx = ctx();
    let x = Tensor::from_slice(&ctx, &[3.0f32, 4.0, 0.0, 0.0], &[2, 2]).unwrap();
    normalize_in_place(&x).unwrap();
    assert_eq!(x.to_vec::<f32>().unwrap(), vec![0.6, 0.8, 0.0, 0.0]);
}

#[test]
fn scores_inner_product_and_cosine() {
    let ctx = ctx();
    for d in [1, 3, 768, 1000] {
        let (m, n) = (7, 59);
        let case = format!("scores d={d}");
        let mut r = rng(&case);
        let q = uniform(&mut r, m * d);
        let c = with_zero_row(uniform(&mut r, n * d), d);
        let tq = Tensor::from_slice(&ctx, &q, &[m, d]).unwrap();
        let tc = Tensor::from_slice(&ctx, &c, &[n, d]).unwrap();
        let got = scores(&tq, &tc, Metric::InnerProduct).unwrap();
        assert_eq!(got.shape(), &[m, n]);
        let want = reference::similarity::scores(&q, &c, d);
        check(
            &verify::compare(&got.to_vec::<f32>().unwrap(), &want),
            1e-5,
            &format!("{case} ip"),
        );
        let qn: Vec<f32> = reference::similarity::normalize(&q, d)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let cn: Vec<f32> = reference::similarity::normalize(&c, d)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let want = reference::similarity::scores(&qn, &cn, d);
        let got = scores(&tq, &tc, Metric::Cosine).unwrap();
        check(
            &verify::compare(&got.to_vec::<f32>().unwrap(), &want),
            1e-5,
            &format!("{case} cosine"),
        );
    }
}

#[test]
fn similarity_shape_errors() {
    let ctx = ctx();
    let z = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
    let e = cosine(&z(&[3, 4]), &z(&[3, 5])).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("[3, 5]"),
        "{e}"
    );
    let e = scores(&z(&[3, 4]), &z(&[6, 5]), Metric::InnerProduct).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = normalize(&z(&[4])).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert_eq!(normalize(&z(&[0, 8])).unwrap().shape(), &[0, 8]);
    // Rows of width 0 hold no bytes whatever their count: nothing to run
    // (this once dispatched a workgroup per 64 of 2^31 empty rows, 12 s on
    // a software adapter).
    for rows in [1 << 31, usize::MAX] {
        let x = z(&[rows, 0]);
        assert_eq!(normalize(&x).unwrap().shape(), &[rows, 0]);
    }
    // Empty rows have norm 0, and rows of norm 0 have cosine 0.
    let c = cosine(&z(&[3, 0]), &z(&[3, 0])).unwrap();
    assert_eq!(c.to_vec::<f32>().unwrap(), [0.0; 3]);
}

/// Rows of tiny (1e-30) and huge (1e30) values: their squares under- or
/// overflow f32, yet they normalise to unit rows and their cosines are right
/// (rows are scaled by their largest magnitude first). A row of subnormals
/// normalises to zeros where the adapter flushes subnormals (WGSL allows it)
/// and to a unit row where it does not: nothing else.
#[test]
fn tiny_huge_and_subnormal_rows() {
    let ctx = ctx();
    let mut rng = rng("tiny and huge rows");
    let d = 37;
    for scale in [1e-30f32, 1e-19, 1e19, 1e30] {
        let x: Vec<f32> = uniform(&mut rng, 3 * d).iter().map(|v| v * scale).collect();
        let y: Vec<f32> = uniform(&mut rng, 3 * d).iter().map(|v| v * scale).collect();
        let tx = Tensor::from_slice(&ctx, &x, &[3, d]).unwrap();
        let ty = Tensor::from_slice(&ctx, &y, &[3, d]).unwrap();
        let n = normalize(&tx).unwrap().to_vec::<f32>().unwrap();
        check(
            &verify::compare(&n, &reference::similarity::normalize(&x, d)),
            1e-5,
            &format!("normalize rows scaled by {scale:e}"),
        );
        let c = cosine(&tx, &ty).unwrap().to_vec::<f32>().unwrap();
        let want = reference::similarity::cosine(&x, &y, d);
        check(
            &verify::compare(&c, &want),
            cosine_tolerance(&x, &y, d, &want),
            &format!("cosine of rows scaled by {scale:e}"),
        );
    }
    let sub: Vec<f32> = (0..d).map(|i| (i as f32 + 1.0) * 1e-42).collect();
    assert!(sub.iter().all(|v| v.is_subnormal()));
    let t = Tensor::from_slice(&ctx, &sub, &[1, d]).unwrap();
    let n = normalize(&t).unwrap().to_vec::<f32>().unwrap();
    let want = reference::similarity::normalize(&sub, d);
    let zeros = n.iter().all(|&v| v == 0.0);
    let unit = verify::compare(&n, &want).passes(1e-3);
    assert!(
        zeros || unit,
        "a subnormal row normalised to neither zeros nor its unit row: {n:?}"
    );
    eprintln!(
        "subnormal row on this adapter: {}",
        if zeros {
            "flushed (zeros)"
        } else {
            "kept (unit row)"
        }
    );
}
