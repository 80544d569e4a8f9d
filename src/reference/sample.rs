//! The CPU reference of [`crate::ops::sample`]: the same semantics in f64.
//!
//! Top-p here sorts the tokens by probability, descending, ties by the lower
//! index, and takes the shortest prefix whose mass reaches `top_p`; its last
//! token's probability is the threshold τ*, and the kept set is every token
//! with p ≥ τ*. That is the kernel's set (the bisection finds the largest τ
//! whose {p ≥ τ} has the mass, which is τ*): both keep all the tokens tied
//! at τ*, where Hugging Face's `TopPLogitsWarper` keeps those its sort put
//! first.

use crate::ops::sample::SampleOptions;

/// The index of the row's maximum, NaN ranking above every number and
/// equal values going to the lower index (`torch.argmax`); 0 for an empty
/// row.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        let b = row[best];
        if b.is_nan() {
            break;
        }
        if x.is_nan() || x > b {
            best = j;
        }
    }
    best as u32
}

/// softmax(row / temperature) in f64 for a temperature > 0, with the
/// kernel's conventions at the edges: the maximum's ties weigh exp(0) = 1,
/// so +inf logits share the mass and a row of −inf is uniform; −inf below a
/// finite maximum weighs 0. A row holding NaN is not sampled (see
/// [`sample`]); here it gives NaN.
pub fn probabilities(row: &[f32], temperature: f32) -> Vec<f64> {
    let m = row[argmax(row) as usize];
    let t = temperature as f64;
    let w: Vec<f64> = row
        .iter()
        .map(|&x| {
            if x == m {
                1.0
            } else if x == f32::NEG_INFINITY || m == f32::INFINITY {
                0.0
            } else {
                ((x as f64 - m as f64) / t).exp()
            }
        })
        .collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| v / s).collect()
}

/// The mass of each distinct probability as a threshold, most probable
/// first: `(τ, Σ p over p ≥ τ)`.
fn masses(p: &[f64]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&j| p[j] > 0.0).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut cum = 0.0;
    for &j in &order {
        cum += p[j];
        match out.last_mut() {
            Some(last) if last.0 == p[j] => last.1 = cum,
            _ => out.push((p[j], cum)),
        }
    }
    out
}

/// τ*: the least probability of the nucleus of `top_p` (its kept set is
/// {p ≥ τ*}); the least positive probability for `top_p` 1 (as the kernel,
/// which does not search then: a running sum would reach the total before
/// the tokens too small to change it in f64).
pub fn threshold(p: &[f64], top_p: f32) -> f64 {
    let all = masses(p);
    let total = all.last().map_or(0.0, |l| l.1);
    if top_p == 1.0 {
        return all.last().map_or(0.0, |l| l.0);
    }
    let need = top_p as f64 * total;
    all.iter()
        .find(|&&(_, mass)| mass >= need)
        .or(all.last())
        .map_or(0.0, |l| l.0)
}

/// Every threshold a computation whose masses are off by up to `margin`
/// (a fraction of the total) could pick: τ* first, then each distinct
/// probability τ whose mass is within `margin` of `top_p` from above while
/// the next larger one's is within it from below. A test accepts a token
/// kept under any of them.
pub fn thresholds(p: &[f64], top_p: f32, margin: f64) -> Vec<f64> {
    let all = masses(p);
    let total = all.last().map_or(0.0, |l| l.1);
    let mut out = vec![threshold(p, top_p)];
    if top_p == 1.0 {
        return out;
    }
    let need = top_p as f64;
    let mut above = 0.0;
    for &(tau, mass) in &all {
        let (f, prev) = (mass / total, above / total);
        if f >= need - margin && prev < need + margin && tau != out[0] {
            out.push(tau);
        }
        above = mass;
    }
    out
}

/// The span of u that draws a token: u ∈ [lo, hi) gives `token`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenSpan {
    /// The token's index in its row.
    pub token: u32,
    /// Where its span of u starts (its kept predecessors' mass / kept mass).
    pub lo: f64,
    /// Where it ends.
    pub hi: f64,
}

/// The spans of u, in index order, of the tokens kept under threshold `tau`
/// (p ≥ tau and p > 0): together they tile [0, 1).
pub fn spans(p: &[f64], tau: f64) -> Vec<TokenSpan> {
    let kept = |&(_, &v): &(usize, &f64)| v > 0.0 && v >= tau;
    let mass: f64 = p.iter().enumerate().filter(kept).map(|(_, v)| v).sum();
    let mut cum = 0.0;
    p.iter()
        .enumerate()
        .filter(kept)
        .map(|(j, &v)| {
            let lo = cum / mass;
            cum += v;
            TokenSpan {
                token: j as u32,
                lo,
                hi: cum / mass,
            }
        })
        .collect()
}

/// The token [`crate::ops::sample::sample_into`] draws from `row` with the
/// uniform `u` ∈ [0, 1): the argmax at temperature 0 or where the row holds
/// a NaN, else the first kept index whose running kept mass exceeds
/// u · (kept mass) (the last kept one if rounding leaves none).
pub fn sample(row: &[f32], u: f32, opts: &SampleOptions) -> u32 {
    if opts.temperature == 0.0 || row.iter().any(|x| x.is_nan()) {
        return argmax(row);
    }
    let p = probabilities(row, opts.temperature);
    let tau = threshold(&p, opts.top_p);
    let kept: Vec<usize> = (0..p.len())
        .filter(|&j| p[j] > 0.0 && p[j] >= tau)
        .collect();
    let mass: f64 = kept.iter().map(|&j| p[j]).sum();
    let target = u as f64 * mass;
    let mut cum = 0.0;
    for &j in &kept {
        cum += p[j];
        if cum > target {
            return j as u32;
        }
    }
    kept.last().map_or(0, |&j| j as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nucleus_keeps_ties_at_the_threshold() {
        // p = [0.4, 0.2, 0.2, 0.2]: 0.5 needs 0.4 + one 0.2, so every 0.2
        // (top_p in binary fractions: 0.4f32 is a little above 0.4).
        let p = [0.4, 0.2, 0.2, 0.2];
        assert_eq!(threshold(&p, 0.5), 0.2);
        assert_eq!(threshold(&p, 0.375), 0.4);
        assert_eq!(spans(&p, 0.4).len(), 1);
        let s = spans(&p, 0.2);
        assert_eq!(s.len(), 4);
        assert!((s[1].lo - 0.4).abs() < 1e-12 && (s[3].hi - 1.0).abs() < 1e-12);
    }

    #[test]
    fn argmax_ranks_nan_first_and_ties_low() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[1.0, f32::NAN, 5.0, f32::NAN]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    }
}
