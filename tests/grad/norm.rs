//! Layer-norm backward: dx, dγ and dβ against the f64 reference, with and
//! without the residual, both per-row schedules, f16 storage and f16
//! parameter gradients, zero rows.

use super::grad_bounds::layer_norm_bounds;
use super::*;
use flashdot::ops::norm::NormVariant;

#[test]
fn layer_norm_backward_matches_the_reference() {
    let mut r = rng("grad layer norm");
    let shapes = [
        (1, 1),
        (3, 3),
        (59, 127),
        (127, 59),
        (0, 7),
        (5, 1009),
        (1009, 3),
    ];
    let variants = [NormVariant::Auto, NormVariant::Workgroup, NormVariant::Rows];
    let mut turn = 0;
    for dtype in dtypes() {
        for &(rows, h) in &shapes {
            // An offset mean and a spread, as the forward's test.
            let xv: Vec<f32> = uniform(&mut r, rows * h)
                .iter()
                .map(|v| 3.0 + 2.0 * v)
                .collect();
            let (x, xv) = upload(&xv, &[rows, h], dtype);
            let (res, rv) = upload(&uniform(&mut r, rows * h), &[rows, h], dtype);
            let (gamma, gv) = upload(&uniform(&mut r, h), &[h], dtype);
            let (dy, dyv) = upload(&uniform(&mut r, rows * h), &[rows, h], dtype);
            for with_res in [false, true] {
                let rs = with_res.then_some(&rv[..]);
                let want = reference::grad::layer_norm_backward(&xv, rs, &gv, 1e-5, &dyv, h);
                let [bx, bg, bb] = layer_norm_bounds(&xv, rs, &gv, 1e-5, &dyv, h);
                for &v in &variants {
                    // The parameters' gradients in f32 and in the storage type, in turn.
                    let pdt = dtypes()[turn % dtypes().len()];
                    turn += 1;
                    let dx = poisoned(&[rows, h], dtype);
                    let (dg, db) = (poisoned(&[h], pdt), poisoned(&[h], pdt));
                    let grads = NormGrads {
                        dx: &dx,
                        dgamma: &dg,
                        dbeta: &db,
                    };
                    let resid = with_res.then_some(&res);
                    layer_norm_backward_with(&x, resid, &gamma, 1e-5, &dy, v, grads).unwrap();
                    let case = format!(
                        "layer norm backward {v:?} {dtype} [{rows}, {h}] residual={with_res}"
                    );
                    within(&read(&dx), &want.dx, &bx, dtype, &format!("{case} dx"));
                    within(
                        &read(&dg),
                        &want.dgamma,
                        &bg,
                        pdt,
                        &format!("{case} dgamma"),
                    );
                    within(&read(&db), &want.dbeta, &bb, pdt, &format!("{case} dbeta"));
                }
            }
        }
    }
}

/// The forward and the backward agree on the statistics: the gradient of
/// `Σ y ∘ dy` through the kernels, by a finite difference of the forward
/// kernel in f64-accumulated sums, matches dx to the forward's precision.
#[test]
fn layer_norm_backward_is_the_forward_kernels_derivative() {
    use flashdot::ops::norm::layer_norm_into;
    let mut r = rng("grad layer norm fd");
    let (rows, h) = (3, 59);
    let xv = uniform(&mut r, rows * h);
    let gv = uniform(&mut r, h);
    let bv = uniform(&mut r, h);
    let dyv = uniform(&mut r, rows * h);
    let t = |v: &[f32], s: &[usize]| upload(v, s, DType::F32).0;
    let (gamma, beta, dy) = (t(&gv, &[h]), t(&bv, &[h]), t(&dyv, &[rows, h]));
    let loss = |x: &[f32]| -> f64 {
        let y = poisoned(&[rows, h], DType::F32);
        layer_norm_into(&t(x, &[rows, h]), None, &gamma, &beta, 1e-5, &y).unwrap();
        read(&y)
            .iter()
            .zip(&dyv)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    let dx = poisoned(&[rows, h], DType::F32);
    let (dg, db) = (poisoned(&[h], DType::F32), poisoned(&[h], DType::F32));
    let grads = NormGrads {
        dx: &dx,
        dgamma: &dg,
        dbeta: &db,
    };
    layer_norm_backward_into(&t(&xv, &[rows, h]), None, &gamma, 1e-5, &dy, grads).unwrap();
    let got = read(&dx);
    // Richardson over steps of 2^-5 and 2^-6: the truncation error is
    // O(h⁴); the f32 forward's rounding (~1e-6 over the 177 products)
    // divided by the steps stays near 1e-4, under the 2e-3 allowed.
    let central = |e: usize, step: f32| {
        let at = |d: f32| {
            let mut v = xv.clone();
            v[e] += d;
            loss(&v)
        };
        (at(step) - at(-step)) / (2.0 * step as f64)
    };
    for e in [0, 17, h + 3, 2 * h + 58] {
        let num = (4.0 * central(e, 1.0 / 64.0) - central(e, 1.0 / 32.0)) / 3.0;
        assert!(
            (num - got[e] as f64).abs() <= 2e-3 * (1.0 + num.abs()),
            "dx[{e}]: kernel {} vs finite difference of the forward kernel {num}",
            got[e]
        );
    }
}
