//! Batched dot products against the CPU reference, every variant, f32 and f16.

mod common;

use common::*;
use flashdot::ops::dot::{dot_into, dot_with, DotVariant};
use flashdot::{reference, verify, DType, Error, Tensor};

fn run_case(n: usize, d: usize, dtype: DType) {
    let ctx = ctx();
    let case = format!("dot n={n} d={d} {dtype}");
    let mut rng = rng(&case);
    let a = uniform(&mut rng, n * d);
    let b = uniform(&mut rng, n * d);
    let (ta, a) = upload(&a, &[n, d], dtype);
    let (tb, b) = upload(&b, &[n, d], dtype);
    let want = reference::dot::dot(&a, &b, d);
    // Every kernel is also held to 1e-6 on the large, statistically stable cases.
    let tol = dot_tolerance(&a, &b, d, &want);
    drop((a, b));
    let out = Tensor::zeros(&ctx, &[n], DType::F32).unwrap();
    for v in DotVariant::ALL {
        out.poison().unwrap();
        dot_into(&ta, &tb, v, &out).unwrap_or_else(|e| panic!("{case} {v:?}: {e}"));
        let got = out.to_vec::<f32>().unwrap();
        // Products of f16 values are exact in f32, so f16 storage leaves only the
        // f32 accumulation error against a reference fed the same f16 values.
        let report = verify::compare(&got, &want);
        check(&report, tol, &format!("{case} {v:?}"));
        if n >= 100_000 {
            check(&report, 1e-6, &format!("{case} {v:?}"));
        }
    }
}

#[test]
fn dot_f32_grid() {
    for n in [0, 1, 1000, 100003] {
        for d in [1, 3, 64, 768, 4097] {
            run_case(n, d, DType::F32);
        }
    }
}

#[test]
fn dot_f16_grid() {
    if !ctx().info().has_f16() {
        panic!("adapter lacks SHADER_F16; f16 cannot be tested here");
    }
    for n in [0, 1, 1000, 100003] {
        for d in [1, 3, 64, 768, 4097] {
            run_case(n, d, DType::F16);
        }
    }
}

#[test]
fn dot_shape_errors() {
    let ctx = ctx();
    let a = Tensor::zeros(&ctx, &[3, 4], DType::F32).unwrap();
    let b = Tensor::zeros(&ctx, &[3, 5], DType::F32).unwrap();
    let e = dot_with(&a, &b, DotVariant::Auto).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "dot", .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("[3, 4]") && msg.contains("[3, 5]"), "{msg}");
    let out = Tensor::zeros(&ctx, &[4], DType::F32).unwrap();
    let e = dot_into(&a, &a, DotVariant::Naive, &out).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

#[test]
fn dot_empty_returns_empty() {
    let ctx = ctx();
    let a = Tensor::zeros(&ctx, &[0, 7], DType::F32).unwrap();
    let out = dot_with(&a, &a, DotVariant::Auto).unwrap();
    assert_eq!(out.shape(), &[0]);
    assert!(out.to_vec::<f32>().unwrap().is_empty());
    // d = 0: every row's dot is the empty sum, 0.
    let a = Tensor::zeros(&ctx, &[5, 0], DType::F32).unwrap();
    let out = Tensor::zeros(&ctx, &[5], DType::F32).unwrap();
    out.poison().unwrap();
    dot_into(&a, &a, DotVariant::Auto, &out).unwrap();
    assert_eq!(out.to_vec::<f32>().unwrap(), vec![0.0; 5]);
}
