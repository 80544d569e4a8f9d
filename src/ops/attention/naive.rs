//! The baseline: S = Q·Kᵀ·scale on the matmul kernels, a masked softmax
//! kernel, then P·V on the matmul kernels; permutes for the [b, s, h, d] layout.

use super::spec::{slot, AttentionKernel, AttentionParams, AttentionSpec};
use super::{AttentionOptions, Dims, Inputs, Layout, OP};
use crate::context::{Context, Table};
use crate::error::Result;
use crate::ops::matmul::{self, MatmulOptions, MatmulVariant};
use crate::tensor::Tensor;

/// Runs the naive attention (the plan checked that S fits one binding).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    ctx: &Context,
    io: &Inputs,
    opts: &AttentionOptions,
    dims: &Dims,
    p: &AttentionParams,
    aux: &Table<'_>,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let dtype = io.q.dtype();
    let g = dims.hq / dims.hkv;
    // Work in [B, H, S, D]; query heads of one kv head are adjacent, so q viewed
    // as [B, Hkv, G·Sq, D] multiplies kv head by kv head.
    let to_bhsd = |t: &Tensor, h: usize, s: usize, dd: usize| -> Result<Tensor> {
        match opts.layout {
            Layout::Bhsd => Ok(t.clone()),
            Layout::Bshd => permute(t, dims.b, s, h, dd),
        }
    };
    let qh = to_bhsd(io.q, dims.hq, dims.sq, dims.d)?.reshape(&[
        dims.b,
        dims.hkv,
        g * dims.sq,
        dims.d,
    ])?;
    let kh = to_bhsd(io.k, dims.hkv, dims.sk, dims.d)?;
    let vh = to_bhsd(io.v, dims.hkv, dims.sk, dims.dv)?;
    let s = matmul::matmul_with(
        &qh,
        &kh,
        &MatmulOptions::default()
            .transpose(false, true)
            .alpha(p.scale)
            .variant(MatmulVariant::Auto),
    )?;
    let probs = Tensor::empty(ctx, s.shape(), dtype)?;
    let pipe = ctx.pipeline(&AttentionSpec {
        kernel: AttentionKernel::Softmax,
        dtype,
        vec: false,
        bias: io.bias.is_some(),
        lse: lse.is_some(),
        extras: opts.extras(),
    })?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(p);
        let mut binds = vec![
            (slot::IN1, s.bind()),
            (slot::IN2, probs.bind()),
            (slot::AUX, aux.bind()),
        ];
        if let Some(b) = io.bias {
            binds.push((slot::BIAS, b.bind()));
        }
        if let Some(m) = io.mask {
            binds.push((slot::MASK, m.bind()));
        }
        if let Some(l) = lse {
            binds.push((slot::STATS, l.bind()));
        }
        let (gx, gy) = ctx.grid((dims.b * dims.hq * dims.sq) as u32);
        let mut enc = ctx.encoder();
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })?;
    let o = matmul::matmul_with(&probs, &vh, &MatmulOptions::default().out_dtype(dtype))?;
    match opts.layout {
        Layout::Bhsd => copy(&o, out),
        Layout::Bshd => {
            let t = permute(
                &o.reshape(&[dims.b, dims.hq, dims.sq, dims.dv])?,
                dims.b,
                dims.hq,
                dims.sq,
                dims.dv,
            )?;
            copy(&t, out)
        }
    }
}

fn copy(src: &Tensor, dst: &Tensor) -> Result<()> {
    let ctx = src.context();
    ctx.scoped(OP, || {
        let mut enc = ctx.encoder();
        let n = dst.padded_bytes();
        enc.copy_buffer_to_buffer(src.buffer(), src.offset(), dst.buffer(), dst.offset(), n);
        ctx.submit(enc);
        Ok(())
    })
}

/// `[B, X, Y, D] -> [B, Y, X, D]`.
fn permute(t: &Tensor, b: usize, x: usize, y: usize, d: usize) -> Result<Tensor> {
    let ctx = t.context();
    let dtype = t.dtype();
    let out = Tensor::empty(ctx, &[b, y, x, d], dtype)?;
    let n = b * x * y * d;
    if n == 0 {
        return Ok(out);
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
        dtype,
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
    })?;
    Ok(out)
}
