//! Per-element error bounds of the `grad` family's f32 kernels, derived from
//! their arithmetic (the roundings of each step, Vulkan's precision of exp,
//! log and division), shared by the grad suite (`tests/grad/`) and the fuzz
//! tier's grad cases (`tests/fuzz/grad.rs`), which include this file with
//! `#[path]`. Each function returns what the result may differ from the f64
//! reference by, before the rounding of the output itself (the callers add
//! `u·|want|`, u of the output's dtype). They assume finite inputs.

use flashdot::reference;

/// The unit roundoff of f32.
pub const U: f64 = f32::EPSILON as f64 / 2.0;

/// A bound on `dy · act'(x)` in f32: a few roundings per operation of the
/// derivative, whose terms grow like |x|·(1 + 0.14 x²) (the GELU tanh form's
/// `x (1 − t²) k (1 + 3c x²)`, exp's error of 2|x| ulp), plus the erf
/// approximation's 1.5e-7.
pub fn act_bound(x: &[f32], dy: &[f32]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&x, &g)| {
            let x = x.abs() as f64;
            g.abs() as f64 * (2e-7 + 32.0 * U * (1.0 + x) * (1.0 + 0.14 * x * x))
        })
        .collect()
}

/// Layer norm's backward: per-element bounds of (dx, dγ, dβ), from the
/// kernel's arithmetic in f32 (the statistics recomputed as the forward
/// does): the row sums of h terms err by (h + 2)·u of their absolute sums,
/// which moves the mean, the rstd (ρ, relative), x̂ and the two row means
/// c1 = mean(g·x̂) and c2 = mean(g); dx = rstd·(g − c2 − x̂·c1) adds their
/// errors; dγ and dβ are column sums over the rows of dy·x̂ and dy. Twice
/// that, for the roundings this first-order sum leaves out.
pub fn layer_norm_bounds(
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

/// Softmax cross-entropy: bounds of (row losses, dlogits, loss) from the
/// kernel's arithmetic in f32. Per row, with a_j = x_max − x_j: exp errs by
/// (3 + 2·|arg|) ulp (Vulkan's precision), so each term of
/// s = Σ exp(−a_j) by (6 + 4 a_j) u; the sum of C terms by (C + 2) u; every
/// rescale of the running sum (once per new maximum, in the sequential or
/// the 64-strided order, plus 12 for the tree that merges 64 lanes) by at
/// most (6 + 4·range) u. log errs by 2^-21 or 3 ulp. The gradient's p_j
/// carries its exp's error and s's; the mean, n roundings of the row losses.
/// `targets` must be in range (or `ignore`).
pub fn ce_bounds(
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
