//! The baseline: S = Q·Kᵀ·scale on the matmul kernels, a masked softmax
//! kernel, then P·V on the matmul kernels, written straight into the output
//! (through a permute for the [b, s, h, d] layout, which also permutes Q, K
//! and V first).

use super::call::Call;
use super::options::{Layout, OP};
use super::spec::{slot, AttentionKernel, AttentionParams, AttentionSpec};
use crate::error::Result;
use crate::ops::matmul::{self, MatmulOptions, MatmulVariant};
use crate::tensor::Tensor;

/// Runs the naive attention (the plan checked that S fits one binding).
pub(super) fn run(call: &Call) -> Result<()> {
    let (dims, layout) = (call.dims, call.opts.layout);
    let g = dims.hq / dims.hkv;
    // Work in [B, H, S, D]; query heads of one kv head are adjacent, so q viewed
    // as [B, Hkv, G·Sq, D] multiplies kv head by kv head.
    let to_bhsd = |t: &Tensor, h: usize, s: usize, dd: usize| -> Result<Tensor> {
        match layout {
            Layout::Bhsd => Ok(t.clone()),
            Layout::Bshd => permuted(t, [dims.b, s, h, dd]),
        }
    };
    let qh = to_bhsd(call.q, dims.hq, dims.sq, dims.d)?.reshape(&[
        dims.b,
        dims.hkv,
        g * dims.sq,
        dims.d,
    ])?;
    let kh = to_bhsd(call.k, dims.hkv, dims.sk, dims.d)?;
    let vh = to_bhsd(call.v, dims.hkv, dims.sk, dims.dv)?;
    let s = matmul::matmul_with(
        &qh,
        &kh,
        &MatmulOptions::default()
            .transpose(false, true)
            .alpha(call.params.scale)
            .variant(MatmulVariant::Auto),
    )?;
    let probs = Tensor::empty(call.ctx, s.shape(), dims.dtype)?;
    softmax(call, &s, &probs)?;
    // P·V is [B, Hkv, G·Sq, Dv], the output's [B, Hq, Sq, Dv] in memory.
    let pv = MatmulOptions::default().out_dtype(dims.dtype);
    let pv_shape = [dims.b, dims.hkv, g * dims.sq, dims.dv];
    match layout {
        Layout::Bhsd => matmul::matmul_into(&probs, &vh, &pv, &call.out.reshape(&pv_shape)?),
        Layout::Bshd => {
            let o = matmul::matmul_with(&probs, &vh, &pv)?;
            let bhsd = [dims.b, dims.hq, dims.sq, dims.dv];
            permute_into(&o.reshape(&bhsd)?, bhsd, call.out)
        }
    }
}

/// The masked softmax of the scores `s` into `probs` (and the LSE).
pub(super) fn softmax(call: &Call, s: &Tensor, probs: &Tensor) -> Result<()> {
    let (ctx, dims) = (call.ctx, call.dims);
    let pipe = ctx.pipeline(&AttentionSpec {
        kernel: AttentionKernel::Softmax,
        dtype: dims.dtype,
        vec: false,
        bias: call.bias.is_some(),
        lse: call.lse.is_some(),
        extras: call.opts.extras(),
    })?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&call.params);
        let mut binds = vec![
            (slot::IN1, s.bind()),
            (slot::IN2, probs.bind()),
            (slot::AUX, call.aux.bind()),
        ];
        if let Some(b) = call.bias {
            binds.push((slot::BIAS, b.bind()));
        }
        if let Some(m) = call.mask {
            binds.push((slot::MASK, m.bind()));
        }
        if let Some(l) = call.lse {
            binds.push((slot::STATS, l.bind()));
        }
        let (gx, gy) = ctx.grid((dims.b * dims.hq * dims.sq) as u32);
        let mut enc = ctx.encoder();
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })
}

/// `t` `[B, X, Y, D]` as a new `[B, Y, X, D]` tensor.
pub(super) fn permuted(t: &Tensor, [b, x, y, d]: [usize; 4]) -> Result<Tensor> {
    let out = Tensor::empty(t.context(), &[b, y, x, d], t.dtype())?;
    permute_into(t, [b, x, y, d], &out)?;
    Ok(out)
}

/// Writes `t` `[B, X, Y, D]` into `out` as `[B, Y, X, D]`.
pub(super) fn permute_into(t: &Tensor, [b, x, y, d]: [usize; 4], out: &Tensor) -> Result<()> {
    let ctx = t.context();
    let n = b * x * y * d;
    if n == 0 {
        return Ok(());
    }
    let p = AttentionParams {
        b: b as u32,
        hq: x as u32,
        sq: y as u32,
        d: d as u32,
        ..Default::default()
    };
    let pipe = ctx.pipeline(&AttentionSpec {
        kernel: AttentionKernel::Permute,
        dtype: t.dtype(),
        vec: false,
        bias: false,
        lse: false,
        extras: Default::default(),
    })?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let (gx, gy) = ctx.grid(n.div_ceil(64) as u32);
        let mut enc = ctx.encoder();
        ctx.dispatch(
            &mut enc,
            &pipe,
            &ubuf,
            &[(slot::IN1, t.bind()), (slot::IN2, out.bind())],
            (gx, gy, 1),
        );
        ctx.submit(enc);
        Ok(())
    })
}
