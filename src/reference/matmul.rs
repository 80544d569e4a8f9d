//! CPU reference for matmul and the linear layer (f64 accumulation).

use crate::ops::matmul::Activation;

/// `C = A·B` for one batch. `a` is `[m, k]` (`[k, m]` if `trans_a`), `b` is `[k, n]`
/// (`[n, k]` if `trans_b`). Returns `[m, n]`.
pub fn matmul(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let x = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let y = if trans_b { b[j * k + p] } else { b[p * n + j] };
                acc += x as f64 * y as f64;
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// Applies an activation in f64.
pub fn activate(x: f64, act: Activation) -> f64 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::GeluTanh => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        }
        Activation::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

/// `erf` to ~1e-15 by its Taylor series (|x| < 3) or continued fraction.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let r = if z < 3.0 {
        // erf(z) = 2/√π Σ (-1)^n z^(2n+1) / (n! (2n+1))
        let mut term = z;
        let mut sum = z;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(z) by Lentz's continued fraction.
        let mut f = z;
        for k in (1..60).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        1.0 - (-z * z).exp() / (f * std::f64::consts::PI.sqrt())
    };
    r.copysign(x)
}

/// The sizes and epilogue of a reference [`linear`]: `x [rows, inp]`,
/// `w [out, inp]`, `alpha` on x·wᵀ, then the bias, then `act`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearArgs {
    /// Rows of x and of the result.
    pub rows: usize,
    /// Input features.
    pub inp: usize,
    /// Output features.
    pub out: usize,
    /// The activation, last.
    pub act: Activation,
    /// Scale on x·wᵀ, before the bias.
    pub alpha: f32,
}

impl LinearArgs {
    /// `[rows, inp] → [rows, out]`, no activation, alpha 1.
    pub fn new(rows: usize, inp: usize, out: usize) -> LinearArgs {
        LinearArgs {
            rows,
            inp,
            out,
            act: Activation::None,
            alpha: 1.0,
        }
    }
    /// With `act` as the activation.
    pub fn act(self, act: Activation) -> LinearArgs {
        LinearArgs { act, ..self }
    }
    /// With `alpha` as the scale on x·wᵀ.
    pub fn alpha(self, alpha: f32) -> LinearArgs {
        LinearArgs { alpha, ..self }
    }
}

/// PyTorch `nn.Linear`: `x [rows, in] · wᵀ (w [out, in]) + bias`, then `act`, scaled
/// by `alpha` before the bias (sizes and epilogue in `args`). Returns `[rows, out]`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, args: LinearArgs) -> Vec<f64> {
    let LinearArgs {
        rows,
        inp,
        out,
        act,
        alpha,
    } = args;
    let mut c = matmul(x, w, rows, inp, out, false, true);
    for r in 0..rows {
        for j in 0..out {
            let v = alpha as f64 * c[r * out + j] + bias.map_or(0.0, |b| b[j] as f64);
            c[r * out + j] = activate(v, act);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_known_values() {
        assert!((super::erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-14);
        assert!((super::erf(-1.0) + 0.842_700_792_949_714_9).abs() < 1e-14);
        assert!((super::erf(3.5) - 0.999_999_256_901_627_7).abs() < 1e-14);
    }
}
