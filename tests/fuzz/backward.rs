//! The fuzz tier's attention-backward case: a forward drawn as the
//! attention case draws it, then its backward with the forward's output and
//! LSE — or, now and then, none, one of another shape, a `d_out` of another
//! shape, the bias's gradient asked with or without a bias, a forced
//! variant (long tier). Every call returns or fails with a typed error.

use flashdot::ops::attention::{attention, attention_backward, BackwardVariant};
use flashdot::DType;
use rand::Rng;

use crate::common::Rng64;
use crate::inputs::{dtype, large_output, tensor};
use crate::ops::{attention_options, head_dim, small, Check, Env};

pub fn attention_backward_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (b, hq, sq, sk) = (small(r), small(r), small(r), small(r));
    let d = head_dim(r);
    let hkv = if r.random() { hq } else { small(r) };
    let dt = dtype(r, e.all_kernels);
    let (q, _) = tensor(e.ctx, r, &[b, hq, sq, d], dt, e.sp)?;
    let (k, _) = tensor(e.ctx, r, &[b, hkv, sk, d], dt, e.sp)?;
    let (v, _) = tensor(e.ctx, r, &[b, hkv, sk, d], dt, e.sp)?;
    let nl = small(r).min(64);
    let lens: Vec<u32> = (0..nl).map(|_| r.random_range(0..12)).collect();
    let (bias, _) = tensor(e.ctx, r, &[1, 1, sq, sk], DType::F32, e.sp)?;
    let mut opts = attention_options(r, e.all_kernels, &lens, &bias).return_lse(true);
    large_output(e.ctx, &[b, hq, sq, d])?;
    let fwd = attention(&q, &k, &v, &opts)?;
    // d_out of the output's shape, or now and then one row short.
    let mut ds = fwd.out.shape().to_vec();
    if r.random_range(0..8) == 0 && !ds.is_empty() {
        ds[0] += 1;
    }
    let (d_out, _) = tensor(e.ctx, r, &ds, dt, e.sp)?;
    let (other_lse, _) = tensor(e.ctx, r, &[b, hq, sq + 1], DType::F32, false)?;
    let lse = match r.random_range(0..10) {
        0 => None,
        1 => Some(&other_lse),
        _ => fwd.lse.as_ref(),
    };
    if r.random_range(0..4) == 0 {
        opts = opts.bias_grad(true);
    }
    if e.all_kernels {
        let all = BackwardVariant::ALL;
        opts = opts.backward_variant(all[r.random_range(0..all.len())]);
    }
    attention_backward(&q, &k, &v, &fwd.out, &d_out, lse, &opts)?;
    Ok(None)
}
