//! The fused softmax cross-entropy (loss, per-row losses, gradient) and the
//! AdamW step against their f64 references.

use super::*;
use flashdot::ops::norm::NormVariant;

/// Left-to-right maxima of `v`: how often a running maximum grows, so how
/// often an online softmax rescales its sum.
fn records(v: impl Iterator<Item = f32>) -> usize {
    let mut m = f32::NEG_INFINITY;
    v.filter(|&x| {
        let grew = x > m;
        m = m.max(x);
        grew
    })
    .count()
}

/// Bounds of (row losses, dlogits, loss) from the kernel's arithmetic in
/// f32. Per row, with a_j = x_max − x_j: exp errs by (3 + 2·|arg|) ulp
/// (Vulkan's precision), so each term of s = Σ exp(−a_j) by (6 + 4 a_j) u;
/// the sum of C terms by (C + 2) u; every rescale of the running sum (once
/// per new maximum, in the sequential or the 64-strided order, plus 12 for
/// the tree that merges 64 lanes) by at most (6 + 4·range) u. log errs by
/// 2^-21 or 3 ulp. The gradient's p_j carries its exp's error and s's; the
/// mean, n roundings of the row losses.
fn ce_bounds(
    logits: &[f32],
    targets: &[u32],
    classes: usize,
    ignore: Option<u32>,
) -> [Vec<f64>; 3] {
    let want = reference::grad::cross_entropy(logits, targets, classes, ignore);
    let scale = if want.count == 0 {
        0.0
    } else {
        1.0 / want.count as f64
    };
    let (mut bl, mut bd) = (vec![0.0; targets.len()], vec![0.0; logits.len()]);
    for (r, &t) in targets.iter().enumerate() {
        if Some(t) == ignore {
            continue;
        }
        let row: Vec<f64> = logits[r * classes..(r + 1) * classes]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lo = row.iter().copied().fold(f64::INFINITY, f64::min);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let raw = &logits[r * classes..(r + 1) * classes];
        let lanes = (0..64).map(|l| records(raw.iter().skip(l).step_by(64).copied()));
        let rescales = records(raw.iter().copied()).max(lanes.max().unwrap_or(0) + 12);
        let exp_err = |a: f64| (6.0 + 4.0 * a) * U;
        let ds = (classes + 2) as f64 * U
            + row
                .iter()
                .map(|v| (v - m).exp() / s * exp_err(m - v))
                .sum::<f64>()
            + rescales as f64 * exp_err(m - lo);
        let ls = s.ln();
        let xt = row[t as usize];
        bl[r] = ds
            + (2f64.powi(-21)).max(6.0 * U * ls.abs())
            + 2.0 * U * (ls.abs() + m.abs() + xt.abs());
        for (j, v) in row.iter().enumerate() {
            let p = (v - m).exp() / s;
            bd[r * classes + j] = (p * (exp_err(m - v) + ds + 3.0 * U) + 2.0 * U) * scale;
        }
    }
    let n = targets.len();
    let loss = bl.iter().sum::<f64>() * scale
        + (n + 2) as f64 * U * want.row_losses.iter().map(|l| l.abs()).sum::<f64>() * scale;
    [bl, bd, vec![loss]]
}

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
        b[0].push(8.0 * U * (state.0[i] as f64).abs() + 16.0 * U * upd);
        b[1].push(4.0 * U * ((state.1[i] as f64).abs() + gi));
        b[2].push(4.0 * U * ((state.2[i] as f64).abs() + gi * gi));
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
