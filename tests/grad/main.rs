//! The `grad` family against its f64 references (`reference::grad`, which
//! `tests/grad_reference.rs` checks by finite differences): every kernel on
//! random inputs at shapes that hurt (1, 3, 59, 127, 1009 rows; empty
//! inputs, length-0 sequences, all-ignored targets, repeated and unused
//! ids), f32 and f16 storage, outputs poisoned with NaN first. Each bound is
//! per element, from the arithmetic: `k·u·Σ|terms|` for a sum of k terms
//! (u = 2^-24, Σ|terms| from the reference run on absolute values), plus a
//! rounding of the result (2^-24 relative in f32, 2^-11 in f16), plus what
//! the kernel's own steps add (stated where they are; those the fuzz tier
//! shares are in `tests/common/grad_bounds.rs`). Bad input is a typed
//! error. This file: column sums, activations, residual adds, mean pooling;
//! the other ops have a file each.

#[path = "../common/mod.rs"]
mod common;
mod embedding;
mod errors;
#[path = "../common/grad_bounds.rs"]
mod grad_bounds;
mod limits;
mod linear;
mod loss;
mod norm;

use common::*;
use flashdot::ops::grad::*;
use flashdot::ops::matmul::{linear, Activation};
use flashdot::{f16, reference, DType, Tensor};
use grad_bounds::{act_bound, U};
use rand::Rng;

/// The unit roundoff of f16 (f32's, `U`, is `grad_bounds`').
const U16: f64 = 1.0 / 2048.0;

fn dtypes() -> Vec<DType> {
    float_dtypes(&ctx())
}

/// Fails unless `|got − want| ≤ bound + (rounding of a `dtype` output)` per
/// element (NaN only where `want` is NaN), printing the first mismatches,
/// the seed and the case.
#[track_caller]
fn within(got: &[f32], want: &[f64], bound: &[f64], dtype: DType, case: &str) {
    let (u, tiny) = match dtype {
        DType::F16 => (U16, 6e-8),
        _ => (U, 1e-37),
    };
    let bad: Vec<String> = got
        .iter()
        .zip(want)
        .zip(bound)
        .enumerate()
        .filter(|&(_, ((&o, &r), &b))| {
            let o = o as f64;
            if r.is_nan() {
                return !o.is_nan();
            }
            !(o.is_finite() && (o - r).abs() <= b + u * r.abs() + tiny)
        })
        .map(|(i, ((o, r), b))| format!("\n  [{i}] got {o:.7e}, want {r:.7e}, bound {b:.2e}"))
        .collect();
    assert!(
        bad.is_empty() && got.len() == want.len(),
        "{case}: {} of {} elements out of bounds (lengths {} and {}; replay with \
         FLASHDOT_SEED={}):{}",
        bad.len(),
        want.len(),
        got.len(),
        want.len(),
        seed(),
        bad.iter().take(8).cloned().collect::<String>()
    );
}

/// `k·u·s` for each of `scale`: the bound of a sum of `k` f32 terms whose
/// absolute values sum to `s`.
fn sum_bound(scale: &[f64], k: usize) -> Vec<f64> {
    scale.iter().map(|s| (k as f64 + 2.0) * U * s).collect()
}

fn abs(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v.abs()).collect()
}

/// A NaN-poisoned tensor of `shape`.
fn poisoned(shape: &[usize], dtype: DType) -> Tensor {
    let t = Tensor::zeros(&ctx(), shape, dtype).unwrap();
    t.poison().unwrap();
    t
}

/// The bits of a tensor (for determinism checks).
fn bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        DType::F16 => t
            .to_vec::<f16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u32)
            .collect(),
        _ => t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect(),
    }
}

#[test]
fn column_sums_match_the_reference() {
    let mut r = rng("grad column sums");
    let shapes = [
        (0, 5),
        (1, 1),
        (3, 3),
        (59, 127),
        (127, 59),
        (1009, 3),
        (1009, 384),
    ];
    for dtype in dtypes() {
        for &(rows, cols) in &shapes {
            let (x, xv) = upload(&uniform(&mut r, rows * cols), &[rows, cols], dtype);
            let want = reference::grad::column_sum(&xv, cols);
            let bound = sum_bound(&reference::grad::column_sum(&abs(&xv), cols), rows);
            for out_dt in dtypes() {
                for v in [
                    ColumnSumVariant::Auto,
                    ColumnSumVariant::OnePass,
                    ColumnSumVariant::TwoPass,
                ] {
                    let out = poisoned(&[cols], out_dt);
                    column_sum_with(&x, v, &out).unwrap();
                    let case = format!("column sum {v:?} {dtype}->{out_dt} [{rows}, {cols}]");
                    within(&read(&out), &want, &bound, out_dt, &case);
                    let again = poisoned(&[cols], out_dt);
                    column_sum_with(&x, v, &again).unwrap();
                    assert_eq!(bits(&out), bits(&again), "{case}: not deterministic");
                }
            }
        }
    }
    // Leading dimensions are rows.
    let (x, xv) = upload(&uniform(&mut r, 2 * 3 * 4), &[2, 3, 4], DType::F32);
    let out = poisoned(&[4], DType::F32);
    column_sum_into(&x, &out).unwrap();
    let want = reference::grad::column_sum(&xv, 4);
    let scale = reference::grad::column_sum(&abs(&xv), 4);
    within(
        &read(&out),
        &want,
        &sum_bound(&scale, 6),
        DType::F32,
        "[2, 3, 4]",
    );
}

#[test]
fn activation_backward_matches_the_reference() {
    let mut r = rng("grad activation");
    for dtype in dtypes() {
        for &n in &[1usize, 3, 59 * 127, 1009] {
            let xv: Vec<f32> = uniform(&mut r, n).iter().map(|v| 4.0 * v).collect();
            let (x, xv) = upload(&xv, &[n], dtype);
            let (dy, dyv) = upload(&uniform(&mut r, n), &[n], dtype);
            for act in Activation::ALL {
                let dx = poisoned(&[n], dtype);
                activation_backward_into(&x, &dy, act, &dx).unwrap();
                let want = reference::grad::activation_backward(&xv, &dyv, act);
                let case = format!("activation backward {act:?} {dtype} [{n}]");
                within(&read(&dx), &want, &act_bound(&xv, &dyv), dtype, &case);
            }
        }
    }
    // Past the forward's clamp the GELU tanh form's derivative is 0 or 1,
    // not 0 · inf; ReLU passes dy where x is NaN (PyTorch's threshold_backward).
    let x = Tensor::from_slice(&ctx(), &[1e20f32, -1e20, -30.0, f32::NAN], &[4]).unwrap();
    let dy = Tensor::from_slice(&ctx(), &[2.0f32; 4], &[4]).unwrap();
    let dx = poisoned(&[4], DType::F32);
    activation_backward_into(&x, &dy, Activation::GeluTanh, &dx).unwrap();
    let got = read(&dx);
    assert_eq!(&got[..3], &[2.0, 0.0, 0.0], "{got:?}");
    activation_backward_into(&x, &dy, Activation::Relu, &dx).unwrap();
    let got = read(&dx);
    assert_eq!(got, vec![2.0, 0.0, 0.0, 2.0], "{got:?}");
}

/// `activation_into` applied to a linear layer's output without an
/// activation is the fused epilogue's result (one function, two places).
#[test]
fn activation_forward_is_the_fused_epilogue() {
    let mut r = rng("grad activation forward");
    let (rows, inp, out) = (59, 33, 127);
    for dtype in dtypes() {
        let (x, xv) = upload(&uniform(&mut r, rows * inp), &[rows, inp], dtype);
        let (w, wv) = upload(&uniform(&mut r, out * inp), &[out, inp], dtype);
        let pre = linear(&x, &w, None, Activation::None).unwrap();
        let pre_t = if dtype == DType::F16 {
            upload(&read(&pre), &[rows, out], dtype).0
        } else {
            pre.clone()
        };
        let prev = read(&pre_t);
        for act in Activation::ALL {
            let y = poisoned(&[rows, out], dtype);
            activation_into(&pre_t, act, &y).unwrap();
            let want: Vec<f64> = prev
                .iter()
                .map(|&v| reference::matmul::activate(v as f64, act))
                .collect();
            let ones = vec![1.0f32; prev.len()];
            let case = format!("activation {act:?} {dtype}");
            within(&read(&y), &want, &act_bound(&prev, &ones), dtype, &case);
            if dtype == DType::F32 {
                let fused = read(&linear(&x, &w, None, act).unwrap());
                let args = reference::matmul::LinearArgs::new(rows, inp, out).act(act);
                let scale = reference::matmul::linear(&abs(&xv), &abs(&wv), None, args);
                let bound: Vec<f64> = sum_bound(&scale, inp)
                    .iter()
                    .map(|b| 2.0 * b + 4e-7)
                    .collect();
                let fused64: Vec<f64> = fused.iter().map(|&v| v as f64).collect();
                within(
                    &read(&y),
                    &fused64,
                    &bound,
                    dtype,
                    &format!("{case} vs fused"),
                );
            }
        }
    }
}

#[test]
fn residual_add_and_accumulate_match_the_reference() {
    let mut r = rng("grad add");
    for dtype in dtypes() {
        for shape in [vec![0, 3], vec![1], vec![3, 59], vec![127, 1009]] {
            let n: usize = shape.iter().product();
            let (a, av) = upload(&uniform(&mut r, n), &shape, dtype);
            let (b, bv) = upload(&uniform(&mut r, n), &shape, dtype);
            let want = reference::grad::add(&av, &bv);
            // One rounding to f32, then (f16) one to f16.
            let zero: Vec<f64> = want.iter().map(|w| U * w.abs()).collect();
            let out = poisoned(&shape, dtype);
            add_into(&a, &b, &out).unwrap();
            let case = format!("add {dtype} {shape:?}");
            within(&read(&out), &want, &zero, dtype, &case);
            accumulate(&a, &b).unwrap();
            within(
                &read(&a),
                &want,
                &zero,
                dtype,
                &format!("accumulate {dtype} {shape:?}"),
            );
        }
    }
}

#[test]
fn mean_pool_backward_matches_the_reference() {
    let mut r = rng("grad mean pool");
    for dtype in dtypes() {
        for &(batch, seq, h) in &[(1, 1, 1), (4, 3, 59), (5, 127, 3), (2, 1009, 7), (0, 3, 4)] {
            let (dy, dyv) = upload(&uniform(&mut r, batch * h), &[batch, h], DType::F32);
            // Full, empty, past seq, then random lengths.
            let lens: Vec<u32> = (0..batch)
                .map(|b| match b {
                    0 => seq as u32,
                    1 => 0,
                    2 => seq as u32 + 5,
                    _ => r.random_range(1..=seq as u32),
                })
                .collect();
            let dx = poisoned(&[batch, seq, h], dtype);
            mean_pool_backward_into(&dy, &lens, &dx).unwrap();
            let want = reference::grad::mean_pool_backward(&dyv, &lens, seq, h);
            let case = format!("mean pool backward {dtype} [{batch}, {seq}, {h}]");
            // One f32 division, dy / n: Vulkan allows it 2.5 ulp, at most
            // 5·u·|dx| (`within` adds the f16 rounding).
            let div: Vec<f64> = want.iter().map(|w| 5.0 * U * w.abs()).collect();
            within(&read(&dx), &want, &div, dtype, &case);
        }
    }
}
