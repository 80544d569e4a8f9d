//! The naive backward, composed as PyTorch's math path computes it: S =
//! Q·Kᵀ·scale and dP = dO·Vᵀ on the matmul kernels, P from the naive
//! forward's masked softmax, dV = Pᵀ·dO, dS from the `bwd_ds` row kernel,
//! dQ = dS·K·scale and dK = dSᵀ·Q·scale. S, P and dP are materialised
//! (`[b, hq, seq_q, seq_k]` each): the baseline the flash backward's memory
//! and error are measured against. Works in `[b, h, s, d]` (the
//! `[b, s, h, d]` layout is permuted in and out); query heads of one kv
//! head are adjacent, so each kv head's product covers its group and dK,
//! dV come out summed over it.

use super::backward_call::{bias_sum, ds_target, Bwd};
use super::backward_plan::NaiveBwd;
use super::naive::{permute_into, permuted, softmax};
use super::options::{Layout, OP};
use super::spec::slot;
use crate::error::Result;
use crate::ops::matmul::{self, MatmulOptions};
use crate::tensor::Tensor;

pub(super) fn run(bwd: &Bwd, plan: &NaiveBwd) -> Result<()> {
    let (call, g) = (&bwd.call, bwd.grads);
    let (ctx, dims, layout) = (call.ctx, call.dims, call.opts.layout);
    let grp = dims.hq / dims.hkv;
    let bhsd = |t: &Tensor, h: usize, s: usize, d: usize| -> Result<Tensor> {
        match layout {
            Layout::Bhsd => Ok(t.clone()),
            Layout::Bshd => permuted(t, [dims.b, s, h, d]),
        }
    };
    let grouped = |t: Tensor, d: usize| t.reshape(&[dims.b, dims.hkv, grp * dims.sq, d]);
    let qh = grouped(bhsd(call.q, dims.hq, dims.sq, dims.d)?, dims.d)?;
    let doh = grouped(bhsd(bwd.d_out, dims.hq, dims.sq, dims.dv)?, dims.dv)?;
    let kh = bhsd(call.k, dims.hkv, dims.sk, dims.d)?;
    let vh = bhsd(call.v, dims.hkv, dims.sk, dims.dv)?;
    let scale = call.params.scale;
    let nt = MatmulOptions::default().transpose(false, true);
    let s = matmul::matmul_with(&qh, &kh, &nt.alpha(scale))?;
    let probs = Tensor::empty(ctx, s.shape(), dims.dtype)?;
    softmax(call, &s, &probs)?;
    let out_t = MatmulOptions::default().out_dtype(dims.dtype);
    let tn = out_t.transpose(true, false);
    // dV = Pᵀ·dO, [b, hkv, sk, dv].
    let out = |a: &Tensor, b: &Tensor, o: &MatmulOptions, shape: [usize; 4], to: &Tensor| {
        match layout {
            // The product's own shape: each kv head's group of query heads.
            Layout::Bhsd => {
                let rows = shape[1] * shape[2] / dims.hkv;
                matmul::matmul_into(a, b, o, &to.reshape(&[shape[0], dims.hkv, rows, shape[3]])?)
            }
            Layout::Bshd => {
                permute_into(&matmul::matmul_with(a, b, o)?.reshape(&shape)?, shape, to)
            }
        }
    };
    out(
        &probs,
        &doh,
        &tn,
        [dims.b, dims.hkv, dims.sk, dims.dv],
        g.dv,
    )?;
    let dp = matmul::matmul_with(&doh, &vh, &nt)?;
    ds(bwd, plan, &s, &probs, &dp)?;
    drop((s, dp));
    // dQ = dS·K·scale ([b, hq, sq, d]) and dK = dSᵀ·Q·scale.
    let dq_shape = [dims.b, dims.hq, dims.sq, dims.d];
    out(&probs, &kh, &out_t.alpha(scale), dq_shape, g.dq)?;
    let dk_shape = [dims.b, dims.hkv, dims.sk, dims.d];
    out(&probs, &qh, &tn.alpha(scale), dk_shape, g.dk)
}

/// dS over `probs` in place (times the soft cap's derivative), and the
/// bias gradient from it.
fn ds(bwd: &Bwd, plan: &NaiveBwd, s: &Tensor, probs: &Tensor, dp: &Tensor) -> Result<()> {
    let (call, g) = (&bwd.call, bwd.grads);
    let (ctx, dims) = (call.ctx, call.dims);
    let full = ds_target(bwd, plan.bias_sum.is_some())?;
    let ds_out = full.as_ref().or(g.dbias);
    let pipe = ctx.pipeline(&plan.ds)?;
    let sum = plan
        .bias_sum
        .as_ref()
        .map(|s| ctx.pipeline(s))
        .transpose()?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&call.params);
        let mut binds = vec![(slot::IN2, probs.bind()), (slot::OUT, dp.bind())];
        // The scores are read for the soft cap's derivative only.
        if plan.ds.extras.softcap {
            binds.push((slot::IN1, s.bind()));
        }
        binds.extend(ds_out.map(|t| (slot::DBIAS, t.bind())));
        let (gx, gy) = ctx.grid((dims.b * dims.hq * dims.sq) as u32);
        let mut enc = ctx.encoder();
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, (gx, gy, 1));
        if let (Some(sum), Some(full), Some(db)) = (&sum, &full, g.dbias) {
            bias_sum(ctx, &mut enc, sum, &ubuf, full, db);
        }
        ctx.submit(enc);
        Ok(())
    })
}
