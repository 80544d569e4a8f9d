//! One AdamW step in place (`adamw.wgsl`): `torch.optim.AdamW`'s update
//! (amsgrad and maximize off) on a parameter tensor and its two moments.

use super::spec::{GradKernel, GradSpec};
use super::{fit_binding, run, same_shape, Pass};
use crate::context::Bind;
use crate::error::{expect_dtype, Error, Result};
use crate::tensor::{DType, Tensor};

const OP: &str = "adamw_step";

crate::shader::params! {
    /// Mirrors `Params` in `ops/grad/adamw.wgsl`.
    pub(crate) struct AdamWParams {
        n: u32,
        /// 1 − lr · weight_decay.
        decay: f32,
        /// 1 − β1, β2 and 1 − β2.
        w1: f32,
        beta2: f32,
        w2: f32,
        /// lr / (1 − β1^t) and √(1 − β2^t).
        step_size: f32,
        bc2_sqrt: f32,
        eps: f32,
    }
}

/// AdamW's hyperparameters, with `torch.optim.AdamW`'s defaults. Held in
/// f64 and turned into the kernel's f32 scalars on the host, as PyTorch
/// turns its Python floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWOptions {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// (β1, β2): the moments' decay rates (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay (default 1e-2): `p -= lr · weight_decay · p`.
    pub weight_decay: f64,
}

impl Default for AdamWOptions {
    fn default() -> Self {
        AdamWOptions {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWOptions {
    /// The kernel's scalars for step `step` (≥ 1), as PyTorch computes them.
    fn params(&self, n: usize, step: u64) -> AdamWParams {
        let (b1, b2) = self.betas;
        // powi takes an i32; past it β^t is 0 in f64 for any β < 1 anyway.
        let t = step.min(i32::MAX as u64) as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        AdamWParams {
            n: n as u32,
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            w1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            w2: (1.0 - b2) as f32,
            step_size: (self.lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: self.eps as f32,
        }
    }

    /// PyTorch's checks of the hyperparameters (what [`adamw_step`] makes).
    ///
    /// Errors: [`Error::InvalidArgument`] naming the first one out of range:
    /// lr, eps or weight decay negative, a β outside [0, 1), or any of them
    /// not finite.
    pub fn validate(&self) -> Result<()> {
        let (b1, b2) = self.betas;
        let bad = [
            ("lr", self.lr, self.lr >= 0.0),
            ("eps", self.eps, self.eps >= 0.0),
            ("beta1", b1, (0.0..1.0).contains(&b1)),
            ("beta2", b2, (0.0..1.0).contains(&b2)),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0.0),
        ]
        .into_iter()
        .find(|&(_, v, ok)| !(ok && v.is_finite()));
        match bad {
            Some((name, v, _)) => Err(Error::InvalidArgument {
                op: OP,
                detail: format!(
                    "{name} must be finite and in range (β in [0, 1), the others ≥ 0), got {v}"
                ),
            }),
            None => Ok(()),
        }
    }
}

/// One AdamW step of `torch.optim.AdamW` (amsgrad off), in place, for step
/// number `step` (1 for the first; the caller counts):
/// `p ← p · (1 − lr · wd)`, `m ← β1 m + (1 − β1) g`, `v ← β2 v + (1 − β2) g²`,
/// `p ← p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + eps)`. `param`, `m`
/// and `v` are f32 of one shape (the moments start at zero), `grad` f32 or
/// f16 of that shape.
///
/// Errors: [`Error::Shape`] naming both shapes; [`Error::DType`] for
/// param, m or v not f32, or grad not float; [`Error::InvalidArgument`] for
/// step 0, a hyperparameter out of PyTorch's range (lr, eps, weight decay
/// < 0, β outside [0, 1), non-finite), two of the tensors sharing a buffer,
/// or tensors of two contexts; [`Error::TooLarge`] past one storage binding.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: u64,
    opts: &AdamWOptions,
) -> Result<()> {
    let state = [("param", param), ("m", m), ("v", v)];
    Tensor::disjoint(OP, &state, &[("grad", grad)])?;
    Tensor::disjoint(OP, &state[..1], &state[1..])?;
    Tensor::disjoint(OP, &state[1..2], &state[2..])?;
    let all = [("param", param), ("grad", grad), ("m", m), ("v", v)];
    Tensor::same_context(OP, &all)?;
    for (name, t) in state {
        expect_dtype(OP, name, t.dtype(), &[DType::F32])?;
    }
    expect_dtype(OP, "grad", grad.dtype(), &DType::FLOAT)?;
    for (name, t) in &all[1..] {
        same_shape(OP, ("param", param), (name, t))?;
    }
    if step == 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: "step counts from 1 (the bias corrections divide by 1 − β^step)".into(),
        });
    }
    opts.validate()?;
    fit_binding(OP, &all)?;
    if param.is_empty() {
        return Ok(());
    }
    let ctx = param.context();
    let spec = GradSpec {
        dtype: grad.dtype(),
        kernel: GradKernel::AdamW,
    };
    let p = opts.params(param.len(), step);
    let binds: Vec<(u32, Bind)> = vec![
        (1, grad.bind()),
        (2, param.bind()),
        (3, m.bind()),
        (4, v.bind()),
    ];
    run(
        ctx,
        OP,
        &[Pass::new(ctx, spec, &p, binds, param.len(), 256)],
    )
}
