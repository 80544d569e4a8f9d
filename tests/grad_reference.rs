//! The f64 gradient references (`reference::grad`) validated by central
//! finite differences of the forward references on tiny shapes: the linear
//! layer with every activation, the activations alone, layer norm with and
//! without the residual, the embedding tables, masked mean pooling (a
//! length-0 sequence and one past `seq`), softmax cross-entropy with ignored
//! rows, and the residual add; AdamW against its closed form. CPU only.
//!
//! Inputs lie on a grid of 2^-12 so that `x ± h` is exact in f32 for the
//! steps used (2^-6 and 2^-7); a Richardson step (`(4·D(h/2) − D(h)) / 3`)
//! leaves a truncation error of O(h⁴ · f⁽⁵⁾) ≈ 1e-7 for these smooth
//! functions, and f64 rounding adds ~1e-14 / h: a bound of 1e-5 · (1 + |g|)
//! is loose for both, and tight against a wrong term.

mod common;

use common::{rng, uniform, Rng64};
use flashdot::ops::grad::AdamWOptions;
use flashdot::ops::matmul::Activation;
use flashdot::reference::grad::{self, AdamWState};
use flashdot::reference::matmul::{activate, linear, LinearArgs};
use flashdot::reference::{embedding, norm, pooling};
use rand::Rng;

/// Uniform values in [-1, 1) on the 2^-12 grid.
fn grid(r: &mut Rng64, n: usize) -> Vec<f32> {
    uniform(r, n)
        .iter()
        .map(|v| (v * 4096.0).round() / 4096.0)
        .collect()
}

/// Σ out ∘ w: the scalar whose gradient is checked.
fn dot(out: &[f64], w: &[f32]) -> f64 {
    assert_eq!(out.len(), w.len());
    out.iter().zip(w).map(|(o, &g)| o * g as f64).sum()
}

/// Checks `grad` (the reference's gradient of `loss` in `vals`) against
/// Richardson-extrapolated central differences, element by element.
fn check(case: &str, vals: &[f32], grad: &[f64], loss: impl Fn(&[f32]) -> f64) {
    assert_eq!(vals.len(), grad.len(), "{case}: gradient length");
    let central = |e: usize, h: f32| {
        let at = |d: f32| {
            let mut v = vals.to_vec();
            v[e] += d;
            loss(&v)
        };
        (at(h) - at(-h)) / (2.0 * h as f64)
    };
    for (e, &want) in grad.iter().enumerate() {
        let (d1, d2) = (central(e, 1.0 / 64.0), central(e, 1.0 / 128.0));
        let num = (4.0 * d2 - d1) / 3.0;
        assert!(want.is_finite(), "{case}[{e}] is {want}");
        assert!(
            (num - want).abs() <= 1e-5 * (1.0 + num.abs()),
            "{case}[{e}]: finite difference {num}, reference {want} (seed {})",
            common::seed()
        );
    }
}

/// Inputs kept away from ReLU's kink (|x| ≥ 1/16), so that no difference
/// straddles it.
fn off_kink(v: &mut [f32]) {
    for x in v {
        if x.abs() < 1.0 / 16.0 {
            *x += if *x < 0.0 { -0.25 } else { 0.25 };
        }
    }
}

#[test]
fn activation_gradients_match_finite_differences() {
    let mut r = rng("grad ref activation");
    let mut x = grid(&mut r, 40);
    x.iter_mut().for_each(|v| *v *= 4.0);
    off_kink(&mut x);
    let dy = grid(&mut r, 40);
    for act in Activation::ALL {
        let g = grad::activation_backward(&x, &dy, act);
        let fwd = |v: &[f32]| {
            let out: Vec<f64> = v.iter().map(|&a| activate(a as f64, act)).collect();
            dot(&out, &dy)
        };
        check(&format!("activation {act:?}"), &x, &g, fwd);
    }
}

#[test]
fn linear_gradients_match_finite_differences() {
    for (rows, inp, out) in [(1, 1, 1), (3, 4, 2), (5, 3, 7)] {
        let mut r = rng(&format!("grad ref linear {rows} {inp} {out}"));
        let x = grid(&mut r, rows * inp);
        let w = grid(&mut r, out * inp);
        let b = grid(&mut r, out);
        let dy = grid(&mut r, rows * out);
        for act in Activation::ALL {
            let args = LinearArgs::new(rows, inp, out);
            let pre: Vec<f32> = linear(&x, &w, Some(&b), args)
                .iter()
                .map(|&v| v as f32)
                .collect();
            // ReLU's kink: a pre-activation near 0 would make the
            // difference straddle it; such draws skip ReLU.
            if act == Activation::Relu && pre.iter().any(|v| v.abs() < 0.05) {
                continue;
            }
            let g = grad::linear_backward(&x, &w, &dy, Some(&pre), act, (rows, inp, out));
            let fwd =
                |x: &[f32], w: &[f32], b: &[f32]| dot(&linear(x, w, Some(b), args.act(act)), &dy);
            let case = format!("linear {act:?} [{rows}, {inp}] -> {out}");
            check(&format!("{case} dx"), &x, &g.dx, |v| fwd(v, &w, &b));
            check(&format!("{case} dw"), &w, &g.dw, |v| fwd(&x, v, &b));
            check(&format!("{case} db"), &b, &g.db, |v| fwd(&x, &w, v));
        }
    }
}

#[test]
fn layer_norm_gradients_match_finite_differences() {
    for (rows, h) in [(1, 2), (3, 5), (2, 17)] {
        let mut r = rng(&format!("grad ref norm {rows} {h}"));
        let x = grid(&mut r, rows * h);
        let res = grid(&mut r, rows * h);
        let gamma = grid(&mut r, h);
        let beta = grid(&mut r, h);
        let dy = grid(&mut r, rows * h);
        let eps = 1e-2;
        for with_res in [false, true] {
            let rs = with_res.then_some(&res[..]);
            let g = grad::layer_norm_backward(&x, rs, &gamma, eps, &dy, h);
            let fwd = |x: &[f32], rs: Option<&[f32]>, gm: &[f32], bt: &[f32]| {
                dot(&norm::layer_norm(x, rs, gm, bt, eps, h), &dy)
            };
            let case = format!("layer norm [{rows}, {h}] residual={with_res}");
            check(&format!("{case} dx"), &x, &g.dx, |v| {
                fwd(v, rs, &gamma, &beta)
            });
            if with_res {
                check(&format!("{case} dres"), &res, &g.dx, |v| {
                    fwd(&x, Some(v), &gamma, &beta)
                });
            }
            check(&format!("{case} dgamma"), &gamma, &g.dgamma, |v| {
                fwd(&x, rs, v, &beta)
            });
            check(&format!("{case} dbeta"), &beta, &g.dbeta, |v| {
                fwd(&x, rs, &gamma, v)
            });
        }
    }
}

#[test]
fn embedding_gradients_match_finite_differences() {
    let (batch, seq, h, vocab, npos, ntypes) = (2, 4, 3, 5, 6, 2);
    let mut r = rng("grad ref embedding");
    // Id 1 four times, id 4 never.
    let ids: Vec<u32> = vec![1, 0, 1, 2, 3, 1, 1, 0];
    let tts: Vec<u32> = (0..batch * seq).map(|_| r.random_range(0..2)).collect();
    let word = grid(&mut r, vocab * h);
    let pos = grid(&mut r, npos * h);
    let types = grid(&mut r, ntypes * h);
    let dy = grid(&mut r, batch * seq * h);
    let g = grad::embedding_backward(&ids, Some(&tts), &dy, seq, h, (vocab, npos, ntypes));
    let fwd = |w: &[f32], p: &[f32], t: &[f32]| {
        dot(
            &embedding::embedding(&ids, Some(&tts), (w, p, t), seq, h),
            &dy,
        )
    };
    check("embedding word", &word, &g.word, |v| fwd(v, &pos, &types));
    check("embedding pos", &pos, &g.pos, |v| fwd(&word, v, &types));
    check("embedding types", &types, &g.types, |v| fwd(&word, &pos, v));
    assert!(g.word[4 * h..].iter().all(|&v| v == 0.0), "unused id 4");
    assert!(
        g.pos[seq * h..].iter().all(|&v| v == 0.0),
        "positions past seq"
    );
}

#[test]
fn mean_pool_gradient_matches_finite_differences() {
    let (batch, seq, h) = (4, 3, 2);
    let mut r = rng("grad ref pool");
    let x = grid(&mut r, batch * seq * h);
    let dy = grid(&mut r, batch * h);
    let lens = [3u32, 0, 7, 1];
    let g = grad::mean_pool_backward(&dy, &lens, seq, h);
    let fwd = |v: &[f32]| {
        let x64: Vec<f64> = v.iter().map(|&a| a as f64).collect();
        dot(&pooling::mean_pool(&x64, &lens, seq, h), &dy)
    };
    check("mean pool", &x, &g, fwd);
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let ignore = Some(7u32);
    for (n, classes, targets) in [
        (1, 1, vec![0u32]),
        (4, 5, vec![2, 7, 0, 4]),
        (3, 3, vec![7, 7, 7]),
    ] {
        let mut r = rng(&format!("grad ref ce {n} {classes}"));
        let mut logits = grid(&mut r, n * classes);
        logits.iter_mut().for_each(|v| *v *= 8.0);
        let g = grad::cross_entropy(&logits, &targets, classes, ignore);
        let want = grad::cross_entropy_loss(&logits, &targets, classes, ignore);
        assert!((g.loss - want).abs() <= 1e-12 * (1.0 + want.abs()));
        let fwd = |v: &[f32]| grad::cross_entropy_loss(v, &targets, classes, ignore);
        check(
            &format!("cross entropy [{n}, {classes}]"),
            &logits,
            &g.dlogits,
            fwd,
        );
        for (i, &t) in targets.iter().enumerate() {
            let row = &g.dlogits[i * classes..(i + 1) * classes];
            if Some(t) == ignore {
                assert!(row.iter().all(|&v| v == 0.0) && g.row_losses[i] == 0.0);
            } else {
                // Each row's gradient sums to 0 (softmax sums to 1).
                assert!(row.iter().sum::<f64>().abs() < 1e-12);
            }
        }
    }
}

#[test]
fn add_gradient_matches_finite_differences() {
    let mut r = rng("grad ref add");
    let (a, b, dy) = (grid(&mut r, 7), grid(&mut r, 7), grid(&mut r, 7));
    // y = a + b: both gradients are dy.
    let dyv: Vec<f64> = dy.iter().map(|&v| v as f64).collect();
    check("add a", &a, &dyv, |v| dot(&grad::add(v, &b), &dy));
    check("add b", &b, &dyv, |v| dot(&grad::add(&a, v), &dy));
    // y = x + b with b broadcast over 5 rows: b's gradient is dy's column sum.
    let (x, dy, b) = (grid(&mut r, 35), grid(&mut r, 35), grid(&mut r, 7));
    let bias = |b: &[f32]| -> f64 {
        let y: Vec<f64> = (0..35).map(|e| x[e] as f64 + b[e % 7] as f64).collect();
        dot(&y, &dy)
    };
    check("bias", &b, &grad::column_sum(&dy, 7), bias);
}

/// AdamW under a constant gradient g from zero moments: m_t = (1 − β1^t) g
/// and v_t = (1 − β2^t) g², so m̂ = g and v̂ = g² at every step, and each
/// step is p ← p (1 − lr·wd) − lr · g / (|g| + eps): a closed form to check
/// the recurrence against, step by step, for defaults and for other
/// hyperparameters.
#[test]
fn adamw_matches_its_closed_form_under_a_constant_gradient() {
    let mut r = rng("grad ref adamw");
    let g = grid(&mut r, 9);
    let p0 = grid(&mut r, 9);
    for o in [
        AdamWOptions::default(),
        AdamWOptions {
            lr: 0.1,
            betas: (0.5, 0.75),
            eps: 1e-3,
            weight_decay: 0.0,
        },
    ] {
        let mut s = AdamWState {
            param: p0.iter().map(|&v| v as f64).collect(),
            m: vec![0.0; 9],
            v: vec![0.0; 9],
        };
        let mut want: Vec<f64> = s.param.clone();
        for t in 1..=5 {
            grad::adamw_step(&mut s, &g, t, &o);
            for (i, w) in want.iter_mut().enumerate() {
                let gi = g[i] as f64;
                *w = *w * (1.0 - o.lr * o.weight_decay) - o.lr * gi / (gi.abs() + o.eps);
                assert!(
                    (s.param[i] - *w).abs() <= 1e-12,
                    "{o:?} step {t} [{i}]: {} vs closed form {w}",
                    s.param[i]
                );
            }
        }
    }
}
