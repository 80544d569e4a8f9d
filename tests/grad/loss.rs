//! The fused softmax cross-entropy (loss, per-row losses, gradient) and the
//! AdamW step against their f64 references.

use super::grad_bounds::ce_bounds;
use super::*;
use flashdot::ops::norm::NormVariant;

#[test]
fn cross_entropy_matches_the_reference() {
    let mut r = rng("grad cross entropy");
    let shapes = [
        (1, 1),
        (3, 3),
        (59, 127),
        (127, 59),
        (5, 1009),
        (2, 30522),
        (0, 5),
    ];
    let variants = [NormVariant::Auto, NormVariant::Workgroup, NormVariant::Rows];
    let mut turn = 0;
    for dtype in dtypes() {
        for &(n, classes) in &shapes {
            // Spread logits; every third row offset by 100 (a shift the
            // maximum absorbs).
            let lv: Vec<f32> = (0..n * classes)
                .map(|i| {
                    8.0 * uniform(&mut r, 1)[0] + if (i / classes) % 3 == 2 { 100.0 } else { 0.0 }
                })
                .collect();
            let (logits, lv) = upload(&lv, &[n, classes], dtype);
            let random: Vec<u32> = (0..n).map(|_| r.random_range(0..classes as u32)).collect();
            // Every fourth row ignored; then all ignored; then an ignore
            // index inside the classes; then none.
            let some: Vec<u32> = random
                .iter()
                .enumerate()
                .map(|(i, &t)| if i % 4 == 1 { IGNORE_INDEX } else { t })
                .collect();
            let cases = [
                (some, Some(IGNORE_INDEX)),
                (vec![IGNORE_INDEX; n], Some(IGNORE_INDEX)),
                (random.clone(), Some(0)),
                (random, None),
            ];
            for (targets, ignore) in cases {
                let v = variants[turn % 3];
                turn += 1;
                let opts = CrossEntropyOptions {
                    ignore_index: ignore,
                    variant: v,
                };
                let dl = poisoned(&[n, classes], dtype);
                let out = cross_entropy_into(&logits, &targets, &opts, &dl).unwrap();
                let want = reference::grad::cross_entropy(&lv, &targets, classes, ignore);
                let [bl, bd, bloss] = ce_bounds(&lv, &targets, classes, ignore);
                let case =
                    format!("cross entropy {v:?} {dtype} [{n}, {classes}] ignore {ignore:?}");
                assert_eq!(out.count, want.count, "{case}");
                within(
                    &read(&out.loss),
                    &[want.loss],
                    &bloss,
                    DType::F32,
                    &format!("{case} loss"),
                );
                within(
                    &read(&out.row_losses),
                    &want.row_losses,
                    &bl,
                    DType::F32,
                    &format!("{case} rows"),
                );
                within(
                    &read(&dl),
                    &want.dlogits,
                    &bd,
                    dtype,
                    &format!("{case} dlogits"),
                );
            }
        }
    }
}

/// The state after one step from `state`, in f64, and bounds for the f32
/// kernel: each of m, v and p is a handful of f32 operations on its old
/// value and the gradient, with the hyperparameters rounded to f32.
fn adamw_ref(
    state: (&[f32], &[f32], &[f32]),
    g: &[f32],
    t: u64,
    o: &AdamWOptions,
) -> (reference::grad::AdamWState, [Vec<f64>; 3]) {
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let mut s = reference::grad::AdamWState {
        param: f(state.0),
        m: f(state.1),
        v: f(state.2),
    };
    reference::grad::adamw_step(&mut s, g, t, o);
    let (b1, b2) = o.betas;
    let mut b = [Vec::new(), Vec::new(), Vec::new()];
    for (i, &gi) in g.iter().enumerate() {
        let gi = (gi as f64).abs();
        let mh = s.m[i].abs() / (1.0 - b1.powi(t as i32));
        let vh = s.v[i] / (1.0 - b2.powi(t as i32));
        let upd = o.lr * mh / (vh.sqrt() + o.eps);
        let bm = 4.0 * U * ((state.1[i] as f64).abs() + gi);
        let bv = 4.0 * U * ((state.2[i] as f64).abs() + gi * gi);
        // The new m and v carry their own roundings into the step: where
        // β1·m + (1 − β1)·g nearly cancels, m's absolute error dominates.
        let den = vh.sqrt() + o.eps;
        let from_m = o.lr * bm / (1.0 - b1.powi(t as i32)) / den;
        let dvh = bv / (1.0 - b2.powi(t as i32));
        let from_v = upd * dvh / (2.0 * vh.sqrt().max(f64::MIN_POSITIVE) * den);
        b[0].push(8.0 * U * (state.0[i] as f64).abs() + 16.0 * U * upd + from_m + from_v);
        b[1].push(bm);
        b[2].push(bv);
    }
    (s, b)
}

#[test]
fn adamw_matches_the_reference() {
    let mut r = rng("grad adamw");
    let custom = AdamWOptions {
        lr: 0.05,
        betas: (0.8, 0.95),
        eps: 1e-6,
        weight_decay: 0.1,
    };
    for gdt in dtypes() {
        for (shape, o) in [
            (vec![1], AdamWOptions::default()),
            (vec![59], custom),
            (vec![3, 1009], AdamWOptions::default()),
            (vec![0], custom),
        ] {
            let n: usize = shape.iter().product();
            let ctx = ctx();
            let param = Tensor::from_slice(&ctx, &uniform(&mut r, n), &shape).unwrap();
            let m = Tensor::zeros(&ctx, &shape, DType::F32).unwrap();
            let v = Tensor::zeros(&ctx, &shape, DType::F32).unwrap();
            // Steps 1 to 3 compared one at a time, each from the kernel's
            // own state (so each bound is one step's).
            for t in 1..=3 {
                let (grad, gv) = upload(&uniform(&mut r, n), &shape, gdt);
                let before = (read(&param), read(&m), read(&v));
                adamw_step(&param, &grad, &m, &v, t, &o).unwrap();
                let (want, [bp, bm, bv]) = adamw_ref((&before.0, &before.1, &before.2), &gv, t, &o);
                let case = format!("adamw {gdt} {shape:?} {o:?} step {t}");
                within(&read(&m), &want.m, &bm, DType::F32, &format!("{case} m"));
                within(&read(&v), &want.v, &bv, DType::F32, &format!("{case} v"));
                within(
                    &read(&param),
                    &want.param,
                    &bp,
                    DType::F32,
                    &format!("{case} param"),
                );
            }
        }
    }
}
