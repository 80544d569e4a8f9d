//! Batched dot products against the CPU reference, every variant, f32 and f16.
//! The fast tier runs the shapes that hurt on small row counts and proves the
//! binding windows on a context with 64 KiB storage bindings; the long tier
//! (`--ignored`) runs past this adapter's real binding limit.

mod common;

use common::*;
use flashdot::ops::dot::{dot_into, dot_with, DotVariant};
use flashdot::{reference, verify, Context, ContextOptions, DType, Error, Tensor};

fn run_case(n: usize, d: usize, dtype: DType) {
    run_case_on(&ctx(), n, d, dtype)
}

fn run_case_on(ctx: &Context, n: usize, d: usize, dtype: DType) {
    let case = format!("dot n={n} d={d} {dtype}");
    let mut rng = rng(&case);
    let a = uniform(&mut rng, n * d);
    let b = uniform(&mut rng, n * d);
    let (ta, a) = upload_to(ctx, &a, &[n, d], dtype);
    let (tb, b) = upload_to(ctx, &b, &[n, d], dtype);
    let want = reference::dot::dot(&a, &b, d);
    // Every kernel is also held to 1e-6 on the large, statistically stable cases.
    let tol = dot_tolerance(&a, &b, d, &want);
    drop((a, b));
    let out = Tensor::zeros(ctx, &[n], DType::F32).unwrap();
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

/// Row counts and lengths that are not multiples of anything (d 4097 is
/// past the vec4 path's 4096), with and without vec4 loads.
const NS: [usize; 4] = [0, 1, 3, 1009];
const DS: [usize; 5] = [1, 3, 64, 768, 4097];

#[test]
fn dot_f32_grid() {
    for n in NS {
        for d in DS {
            run_case(n, d, DType::F32);
        }
    }
}

#[test]
fn dot_f16_grid() {
    if !ctx().info().has_f16() {
        return f16_refused(&ctx());
    }
    for n in NS {
        for d in DS {
            run_case(n, d, DType::F16);
        }
    }
}

/// Tensors larger than one storage binding are bound in windows of rows: on a
/// context whose bindings hold 64 KiB, 1009 rows of 768 f32 take 48 windows
/// (and a window's start is aligned down, so most start mid-binding).
#[test]
fn windows_over_small_bindings() {
    let mut limits = ctx().info().limits.clone();
    limits.max_storage_buffer_binding_size = 64 << 10;
    let small = Context::with_options(
        ContextOptions::default()
            .wait_for_best_kernels(true)
            .with_limits(limits),
    )
    .unwrap_or_else(|e| panic!("flashdot tests need a GPU adapter: {e}"));
    let a = Tensor::zeros(&small, &[1009, 768], DType::F32).unwrap();
    let plan = flashdot::ops::dot::plan(&a, &a, DotVariant::Naive).unwrap();
    assert!(plan.rows_per_window < 1009 / 8, "{plan}");
    for (n, d) in [(1009, 768), (1009, 4097), (3000, 3), (257, 64)] {
        for dtype in float_dtypes(&small) {
            run_case_on(&small, n, d, dtype);
        }
    }
}

/// Past this adapter's own binding limit (128 MiB on lavapipe): one f32 and
/// one f16 case at a time, so that host and device copies stay within a few GiB.
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn dot_large_tensors() {
    for dtype in float_dtypes(&ctx()) {
        for (n, d) in [(100_003, 768), (20_000, 4097), (100_003, 64)] {
            run_case(n, d, dtype);
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
    // Dtypes: one check names the operand and both dtypes.
    let ids = Tensor::zeros(&ctx, &[3, 4], DType::U32).unwrap();
    let e = dot_with(&a, &ids, DotVariant::Auto).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DType {
                op: "dot",
                found: DType::U32,
                ..
            }
        ) && e.to_string().contains("u32")
            && e.to_string().contains("f32"),
        "{e}"
    );
    let e = dot_into(
        &a,
        &a,
        DotVariant::Naive,
        &Tensor::zeros(&ctx, &[3], DType::U32).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
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

/// One-element rows through every kernel: bindings stay at least 16 bytes
/// (wgpu's minimum for the vec4-capable arrays), windows included.
#[test]
fn one_element_rows_every_variant() {
    for n in [1, 2, 5] {
        for dtype in float_dtypes(&ctx()) {
            let (a, _) = upload(&vec![3.0f32; n], &[n, 1], dtype);
            for v in DotVariant::ALL {
                let got = dot_with(&a, &a, v).unwrap().to_vec::<f32>().unwrap();
                assert_eq!(got, vec![9.0; n], "{v:?} n={n} {dtype}");
            }
        }
    }
}
