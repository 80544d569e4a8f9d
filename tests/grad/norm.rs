//! Layer-norm backward: dx, dγ and dβ against the f64 reference, with and
//! without the residual, both per-row schedules, f16 storage and f16
//! parameter gradients, zero rows.

use super::*;
use flashdot::ops::norm::NormVariant;

/// Per-element bounds of (dx, dγ, dβ), from the kernel's arithmetic in f32
/// (the statistics recomputed as the forward does): the row sums of h terms
/// err by (h + 2)·u of their absolute sums, which moves the mean, the
/// rstd (ρ, relative), x̂ and the two row means c1 = mean(g·x̂) and
/// c2 = mean(g); dx = rstd·(g − c2 − x̂·c1) adds their errors; dγ and dβ
/// are column sums over the rows of dy·x̂ and dy. Twice that, for the
/// roundings this first-order sum leaves out.
fn bounds(
    x: &[f32],
    res: Option<&[f32]>,
    gamma: &[f32],
    eps: f64,
    dy: &[f32],
    h: usize,
) -> [Vec<f64>; 3] {
    let rows = x.len() / h.max(1);
    let (n, hu) = (h as f64, (h + 4) as f64 * U);
    let (mut bx, mut bg, mut bb) = (Vec::new(), vec![0.0; h], vec![0.0; h]);
    for r in 0..rows {
        let idx = |j: usize| r * h + j;
        let z: Vec<f64> = (0..h)
            .map(|j| x[idx(j)] as f64 + res.map_or(0.0, |s| s[idx(j)] as f64))
            .collect();
        let dz: Vec<f64> = z.iter().map(|v| res.map_or(0.0, |_| U * v.abs())).collect();
        let mean = z.iter().sum::<f64>() / n;
        let d: Vec<f64> = z.iter().map(|v| v - mean).collect();
        let var = d.iter().map(|v| v * v).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        let avg = |f: &dyn Fn(usize) -> f64| (0..h).map(f).sum::<f64>() / n;
        let dmu = hu * avg(&|j| z[j].abs()) + avg(&|j| dz[j]);
        let dv = hu * var + 2.0 * dmu * avg(&|j| d[j].abs()) + 2.0 * avg(&|j| d[j].abs() * dz[j]);
        let rho = 0.5 * dv / (var + eps) + 3.0 * U;
        let xh: Vec<f64> = d.iter().map(|v| v * rstd).collect();
        let dxh: Vec<f64> = (0..h)
            .map(|j| (dz[j] + dmu + U * d[j].abs()) * rstd + xh[j].abs() * (rho + U))
            .collect();
        let g: Vec<f64> = (0..h)
            .map(|j| dy[idx(j)] as f64 * gamma[j] as f64)
            .collect();
        let c2 = avg(&|j| g[j]);
        let c1 = avg(&|j| g[j] * xh[j]);
        let dc2 = hu * avg(&|j| g[j].abs());
        let dc1 = rstd
            * (hu * avg(&|j| (g[j] * d[j]).abs()) + avg(&|j| g[j].abs() * (dz[j] + dmu)))
            + c1.abs() * (rho + 2.0 * U);
        for j in 0..h {
            let out = rstd * (g[j] - c2 - xh[j] * c1);
            let terms = g[j].abs() + c2.abs() + (xh[j] * c1).abs();
            let e = out.abs() * (rho + U)
                + rstd * (U * g[j].abs() + dc2 + dxh[j] * c1.abs() + xh[j].abs() * dc1)
                + 3.0 * U * rstd * terms;
            bx.push(2.0 * e);
            let dyj = (dy[idx(j)] as f64).abs();
            bg[j] += 2.0 * ((rows + 3) as f64 * U * dyj * xh[j].abs() + dyj * dxh[j]);
            bb[j] += 2.0 * (rows + 2) as f64 * U * dyj;
        }
    }
    [bx, bg, bb]
}

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
                let [bx, bg, bb] = bounds(&xv, rs, &gv, 1e-5, &dyv, h);
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
