//! The fuzz tier's cases for the `grad` family (training kernels): each
//! draws its inputs from the case's rng like the ops in `ops.rs` (sizes at
//! the edges, shapes that disagree one time in five, u32 and f16 dtypes,
//! special values, host ids and targets past their tables, bad
//! hyperparameters), calls the op, and on ordinary f32 inputs of matching
//! shapes compares it with `reference::grad` within the per-element bound
//! of its arithmetic (the grad suite's, from `tests/common/grad_bounds.rs`,
//! where the op has one beyond a sum's). The inputs those checks see are in
//! [-1, 1): special values and f16 skip them.

use flashdot::ops::grad::*;
use flashdot::ops::matmul::Activation;
use flashdot::ops::norm::NormVariant;
use flashdot::{reference, DType};
use rand::Rng;

use super::inputs::{dtype, large_output, mismatch, size, tensor, value};
use super::ops::{Check, Env};
use crate::common::Rng64;
use crate::grad_bounds::{act_bound, ce_bounds, layer_norm_bounds, U};

/// `got` within `(k + 2)·u·scale + u·|want|` of `want` per element: a sum
/// of `k` terms whose absolute values sum to `scale`.
fn close(got: &[f32], want: &[f64], scale: &[f64], k: usize) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).zip(scale).all(|((&o, &w), &s)| {
            (o as f64 - w).abs() <= (k as f64 + 2.0) * U * s + U * w.abs() + 1e-37
        })
}

/// `got` within `bound + u·|want|` of `want` per element (a bound from
/// `grad_bounds`, plus the rounding of the f32 result).
fn within(got: &[f32], want: &[f64], bound: &[f64]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .zip(bound)
            .all(|((&o, &w), &b)| (o as f64 - w).abs() <= b + U * w.abs() + 1e-37)
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Wrong-result outcome.
fn differs(what: String) -> Check {
    Ok(Some(format!("{what} differs from the reference")))
}

/// A random activation.
fn act(r: &mut Rng64) -> Activation {
    Activation::ALL[r.random_range(0..Activation::ALL.len())]
}

pub fn column_sum_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (rows, cols) = (size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (x, xv) = tensor(e.ctx, r, &[rows, cols], dt, e.sp)?;
    let c2 = mismatch(r, cols);
    let odt = if r.random_range(0..4) == 0 {
        dtype(r, e.all_kernels)
    } else {
        DType::F32
    };
    let (out, _) = tensor(e.ctx, r, &[c2], odt, false)?;
    let v = [
        ColumnSumVariant::Auto,
        ColumnSumVariant::OnePass,
        ColumnSumVariant::TwoPass,
    ][r.random_range(0..3)];
    column_sum_with(&x, v, &out)?;
    if !e.sp && dt == DType::F32 && odt == DType::F32 && !xv.is_empty() {
        let want = reference::grad::column_sum(&xv, cols);
        let scale = reference::grad::column_sum(&abs(&xv), cols);
        if !close(&out.to_vec::<f32>()?, &want, &scale, rows) {
            return differs(format!("column_sum {v:?} [{rows}, {cols}]"));
        }
    }
    Ok(None)
}

pub fn activation_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (n, d) = (size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (x, xv) = tensor(e.ctx, r, &[n, d], dt, e.sp)?;
    let shape = [n, mismatch(r, d)];
    let (dy, dyv) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    let (out, _) = tensor(e.ctx, r, &[n, d], dt, false)?;
    let a = act(r);
    if r.random::<bool>() {
        activation_into(&x, a, &out)?;
        return Ok(None);
    }
    activation_backward_into(&x, &dy, a, &out)?;
    if !e.sp && dt == DType::F32 && !xv.is_empty() {
        let want = reference::grad::activation_backward(&xv, &dyv, a);
        if !within(&out.to_vec::<f32>()?, &want, &act_bound(&xv, &dyv)) {
            return differs(format!("activation_backward {a:?} [{n}, {d}]"));
        }
    }
    Ok(None)
}

pub fn add_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (n, d) = (size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (a, av) = tensor(e.ctx, r, &[n, d], dt, e.sp)?;
    let shape = [n, mismatch(r, d)];
    let (b, bv) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    if r.random::<bool>() {
        let shape = [mismatch(r, n), d];
        let (out, _) = tensor(e.ctx, r, &shape, dt, false)?;
        add_into(&a, &b, &out)?;
        // Bit for bit: one f32 rounding of an exact sum.
        let got = out.to_vec::<f32>().ok();
        if !e.sp && dt == DType::F32 && !av.is_empty() {
            let want: Vec<f32> = av.iter().zip(&bv).map(|(x, y)| x + y).collect();
            if got.as_deref() != Some(&want[..]) {
                return differs(format!("add [{n}, {d}]"));
            }
        }
    } else {
        accumulate(&a, &b)?;
    }
    Ok(None)
}

pub fn linear_backward_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (m, k, n) = (size(r), size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (x, xv) = tensor(e.ctx, r, &[m, k], dt, e.sp)?;
    let shape = [n, mismatch(r, k)];
    let (w, wv) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    let shape = [mismatch(r, m), n];
    let (dy, dyv) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    let shape = [m, mismatch(r, n)];
    let (pre, prev) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    large_output(e.ctx, &[n, k])?;
    let a = act(r);
    let with_pre = r.random_range(0..6) > 0;
    let g = linear_backward(&x, &w, &dy, a, with_pre.then_some(&pre))?;
    // ReLU's and the identity's derivatives are exact: the products' bound
    // holds as it is.
    let exact = matches!(a, Activation::None | Activation::Relu);
    if !e.sp && dt == DType::F32 && exact && !xv.is_empty() && !dyv.is_empty() {
        let dims = (m, k, n);
        let p = (a != Activation::None).then_some(&prev[..]);
        let want = reference::grad::linear_backward(&xv, &wv, &dyv, p, a, dims);
        let dz: Vec<f32> = match p {
            Some(p) => reference::grad::activation_backward(p, &dyv, a)
                .iter()
                .map(|v| v.abs() as f32)
                .collect(),
            None => abs(&dyv),
        };
        let s = reference::grad::linear_backward(&abs(&xv), &abs(&wv), &dz, None, a, dims);
        if !(close(&g.dx.to_vec()?, &want.dx, &s.dx, n)
            && close(&g.dw.to_vec()?, &want.dw, &s.dw, m)
            && close(&g.db.to_vec()?, &want.db, &s.db, m))
        {
            return differs(format!("linear_backward {a:?} [{m}, {k}] -> {n}"));
        }
    }
    Ok(None)
}

pub fn layer_norm_backward_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (rows, h) = (size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (x, xv) = tensor(e.ctx, r, &[rows, h], dt, e.sp)?;
    let shape = [rows, mismatch(r, h)];
    let (res, rv) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    let shape = [mismatch(r, h)];
    let (gamma, gv) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    let shape = [mismatch(r, rows), h];
    let (dy, dyv) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    let (dx, _) = tensor(e.ctx, r, &[rows, h], dt, false)?;
    let pdt = if r.random_range(0..4) == 0 {
        dtype(r, e.all_kernels)
    } else {
        DType::F32
    };
    let (dg, _) = tensor(e.ctx, r, &[h], pdt, false)?;
    let shape = [mismatch(r, h)];
    let (db, _) = tensor(e.ctx, r, &shape, pdt, false)?;
    let eps = if r.random_range(0..8) == 0 {
        value(r, true)
    } else {
        1e-5
    };
    let v = [NormVariant::Auto, NormVariant::Workgroup, NormVariant::Rows][r.random_range(0..3)];
    let with_res = r.random_range(0..4) == 0;
    let grads = NormGrads {
        dx: &dx,
        dgamma: &dg,
        dbeta: &db,
    };
    layer_norm_backward_with(&x, with_res.then_some(&res), &gamma, eps, &dy, v, grads)?;
    if !e.sp && dt == DType::F32 && pdt == DType::F32 && eps == 1e-5 {
        let rs = with_res.then_some(&rv[..]);
        let want = reference::grad::layer_norm_backward(&xv, rs, &gv, 1e-5, &dyv, h);
        let [bx, bg, bb] = layer_norm_bounds(&xv, rs, &gv, 1e-5, &dyv, h);
        for (what, got, want, bound) in [
            ("dx", &dx, &want.dx, &bx),
            ("dgamma", &dg, &want.dgamma, &bg),
            ("dbeta", &db, &want.dbeta, &bb),
        ] {
            if !within(&got.to_vec::<f32>()?, want, bound) {
                return differs(format!(
                    "layer_norm_backward {what} {v:?} [{rows}, {h}] residual={with_res}"
                ));
            }
        }
    }
    Ok(None)
}

pub fn embedding_backward_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (b, s, h, vocab) = (size(r), size(r), size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (dy, dyv) = tensor(e.ctx, r, &[b, s, h], dt, e.sp)?;
    let n = b.saturating_mul(s);
    let nids = mismatch(r, n).min(1 << 16);
    // Mostly inside the vocabulary, sometimes one past it.
    let top = vocab.saturating_add(1).min(u32::MAX as usize) as u32;
    let ids: Vec<u32> = (0..nids)
        .map(|_| {
            if r.random_range(0..50) == 0 {
                top - 1
            } else {
                r.random_range(0..top.saturating_sub(1).max(1))
            }
        })
        .collect();
    let shape = [vocab, mismatch(r, h)];
    let (word, _) = tensor(e.ctx, r, &shape, dt, false)?;
    let npos = mismatch(r, s);
    let (pos, _) = tensor(e.ctx, r, &[npos, h], dt, false)?;
    let types = r.random::<bool>();
    let tts: Vec<u32> = (0..nids).map(|_| r.random_range(0..3)).collect();
    let (ttab, _) = tensor(e.ctx, r, &[2, h], dt, false)?;
    let grads = EmbeddingGrads {
        word: Some(&word),
        pos: r.random::<bool>().then_some(&pos),
        types: types.then_some(&ttab),
    };
    let tt = (types && r.random::<bool>()).then_some(&tts[..]);
    embedding_backward_into(&ids, tt, &dy, grads)?;
    if !e.sp && dt == DType::F32 && !dyv.is_empty() {
        let want = reference::grad::embedding_backward(&ids, None, &dyv, s, h, (vocab, s, 2));
        let scale =
            reference::grad::embedding_backward(&ids, None, &abs(&dyv), s, h, (vocab, s, 2));
        if tt.is_none() && !close(&word.to_vec()?, &want.word, &scale.word, n) {
            return differs(format!(
                "embedding_backward word [{b}, {s}, {h}] vocab {vocab}"
            ));
        }
    }
    Ok(None)
}

pub fn mean_pool_backward_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (b, s, h) = (size(r), size(r), size(r));
    let ddt = if r.random_range(0..5) == 0 {
        dtype(r, e.all_kernels)
    } else {
        DType::F32
    };
    let shape = [b, mismatch(r, h)];
    let (dy, dyv) = tensor(e.ctx, r, &shape, ddt, e.sp)?;
    let nl = mismatch(r, b).min(1 << 12);
    let lens: Vec<u32> = (0..nl)
        .map(|_| r.random_range(0..2 * s.clamp(1, 1000) as u32))
        .collect();
    let dt = dtype(r, e.all_kernels);
    let (dx, _) = tensor(e.ctx, r, &[b, s, h], dt, false)?;
    mean_pool_backward_into(&dy, &lens, &dx)?;
    if !e.sp && dt == DType::F32 && !dyv.is_empty() {
        let want = reference::grad::mean_pool_backward(&dyv, &lens, s, h);
        // One f32 division, dy / n: Vulkan allows it 2.5 ulp, at most 5·u·|dx|.
        let div: Vec<f64> = want.iter().map(|w| 5.0 * U * w.abs()).collect();
        if !within(&dx.to_vec()?, &want, &div) {
            return differs(format!("mean_pool_backward [{b}, {s}, {h}]"));
        }
    }
    Ok(None)
}

pub fn cross_entropy_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (n, c) = (size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (logits, lv) = tensor(e.ctx, r, &[n, c], dt, e.sp)?;
    let nt = mismatch(r, n).min(1 << 16);
    let top = c.saturating_add(1).min(u32::MAX as usize) as u32;
    let targets: Vec<u32> = (0..nt)
        .map(|_| match r.random_range(0..20) {
            0 => IGNORE_INDEX,
            1 => top - 1,
            _ => r.random_range(0..top.saturating_sub(1).max(1)),
        })
        .collect();
    let shape = [n, mismatch(r, c)];
    let (dl, _) = tensor(e.ctx, r, &shape, dt, false)?;
    let ignore = [Some(IGNORE_INDEX), None, Some(0)][r.random_range(0..3)];
    let opts = CrossEntropyOptions {
        ignore_index: ignore,
        variant: [NormVariant::Auto, NormVariant::Workgroup, NormVariant::Rows]
            [r.random_range(0..3)],
    };
    let out = cross_entropy_into(&logits, &targets, &opts, &dl)?;
    if !e.sp && dt == DType::F32 && !lv.is_empty() {
        // Reached only with every target in range (or ignored).
        let want = reference::grad::cross_entropy(&lv, &targets, c, ignore);
        let [bl, bd, bloss] = ce_bounds(&lv, &targets, c, ignore);
        if out.count != want.count
            || !within(&out.loss.to_vec::<f32>()?, &[want.loss], &bloss)
            || !within(&out.row_losses.to_vec::<f32>()?, &want.row_losses, &bl)
            || !within(&dl.to_vec::<f32>()?, &want.dlogits, &bd)
        {
            return differs(format!("cross_entropy [{n}, {c}]"));
        }
    }
    Ok(None)
}

pub fn adamw_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let n = size(r);
    let gdt = dtype(r, e.all_kernels);
    let sdt = if r.random_range(0..8) == 0 {
        dtype(r, e.all_kernels)
    } else {
        DType::F32
    };
    let (p, pv) = tensor(e.ctx, r, &[n], sdt, e.sp)?;
    let shape = [mismatch(r, n)];
    let (g, gv) = tensor(e.ctx, r, &shape, gdt, e.sp)?;
    let (m, mv) = tensor(e.ctx, r, &[n], DType::F32, false)?;
    let (v, vv) = tensor(e.ctx, r, &[n], DType::F32, false)?;
    v.write(&vv.iter().map(|x| x.abs()).collect::<Vec<f32>>())
        .ok();
    let step = [0, 1, 2, 1000, u64::MAX][r.random_range(0..5)];
    let mut o = AdamWOptions::default();
    if r.random_range(0..6) == 0 {
        o.lr = value(r, true) as f64;
        o.betas.0 = [0.0, 0.9, 1.0, -0.5][r.random_range(0..4)];
        o.eps = [0.0, 1e-8, -1.0][r.random_range(0..3)];
    }
    let alias = r.random_range(0..10) == 0;
    adamw_step(&p, &g, &m, if alias { &m } else { &v }, step, &o)?;
    let plain = o == AdamWOptions::default();
    if !e.sp && plain && gdt == DType::F32 && sdt == DType::F32 && !pv.is_empty() {
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect();
        let mut s = reference::grad::AdamWState {
            param: f(&pv),
            m: f(&mv),
            // A second moment is never negative.
            v: vv.iter().map(|&x| x.abs() as f64).collect(),
        };
        reference::grad::adamw_step(&mut s, &gv, step, &o);
        // A handful of f32 operations on the decayed parameter and on the
        // update.
        let got = p.to_vec::<f32>()?;
        let decayed = |i: usize| pv[i] as f64 * (1.0 - o.lr * o.weight_decay);
        let bound = |i: usize| {
            8.0 * U * decayed(i).abs() + 32.0 * U * (s.param[i] - decayed(i)).abs() + 1e-37
        };
        if got
            .iter()
            .enumerate()
            .any(|(i, &x)| (x as f64 - s.param[i]).abs() > bound(i))
        {
            return differs(format!("adamw_step [{n}] step {step}"));
        }
    }
    Ok(None)
}
