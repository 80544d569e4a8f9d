//! Attention backward, as FlashAttention-2 computes it: the gradients of q,
//! k and v (and of the bias) from the forward's inputs, output and
//! log-sum-exp and the output's gradient. The kernels: `backward.wgsl`;
//! the plan: `backward_plan.rs`; the naive composed path:
//! `backward_naive.rs`.

use super::backward_call::{bias_sum, ds_target, grid, Bwd, GradientsInto};
use super::backward_plan::{self, query_side, BackwardPlan, BwdLaunch, FlashBwd};
use super::check::{self, Dims, Inputs};
use super::kv_texels::{KvSource, KvTextures};
use super::options::{AttentionOptions, Layout, OP};
use super::params;
use super::spec::{slot, AttentionParams};
use super::{backward_naive, call::Call};
use crate::context::Context;
use crate::error::{expect_dtype, Error, Result};
use crate::tensor::{shape_str, DType, Tensor};

/// The gradients [`attention_backward`] returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttentionGradients {
    /// Of q: q's shape and dtype.
    pub dq: Tensor,
    /// Of k, summed over each kv head's query heads (GQA): k's shape.
    pub dk: Tensor,
    /// Of v: v's shape.
    pub dv: Tensor,
    /// Of the bias, in the bias's shape `[b|1, hq|1, seq_q, seq_k]` (summed
    /// over the dimensions it is broadcast along), f32; when
    /// [`AttentionOptions::bias_grad`] asked for it.
    pub dbias: Option<Tensor>,
}

/// The gradients of attention with respect to q, k and v (and the bias),
/// given the forward's output `out`, its log-sum-exp `lse` (`[batch,
/// heads_q, seq_q]` f32: run [`attention`](super::attention) with
/// [`return_lse`](AttentionOptions::return_lse)) and `d_out`, the loss's
/// gradient with respect to `out` (its shape and dtype). `opts` are the
/// forward's options (the same masks, scale, window, soft cap, ALiBi,
/// sinks), plus [`bias_grad`](AttentionOptions::bias_grad),
/// [`backward_variant`](AttentionOptions::backward_variant) and
/// [`backward_reads`](AttentionOptions::backward_reads). Rows whose keys
/// are all masked get zero gradients; the sink logits and the boolean mask
/// get none. q, k and v may be views (copied as for the forward).
///
/// Errors: as [`attention`](super::attention) for q, k, v and the options;
/// [`Error::InvalidArgument`] when `lse` is `None` (the forward ran without
/// `return_lse`), for `bias_grad` without a bias, tensors of two contexts
/// or `out`/`d_out`/`lse` views the kernels cannot bind;
/// [`Error::Shape`] or [`Error::DType`] for an `out`, `d_out` or `lse` of
/// another shape or dtype (naming both shapes); [`Error::Unsupported`] for a
/// paged KV cache (inference only) and a forced variant or source that
/// cannot serve the call; [`Error::TooLarge`] for the naive backward's
/// score matrix or the bias gradient's dS past one storage binding.
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    d_out: &Tensor,
    lse: Option<&Tensor>,
    opts: &AttentionOptions,
) -> Result<AttentionGradients> {
    let x = Inputs { q, k, v, opts };
    let (dims, plan) = checked_plan(&x, out, d_out, lse)?;
    let ctx = q.context();
    let make = |shape: &[usize], dtype| Tensor::empty(ctx, shape, dtype);
    let grads = AttentionGradients {
        dq: make(q.shape(), dims.dtype)?,
        dk: make(k.shape(), dims.dtype)?,
        dv: make(v.shape(), dims.dtype)?,
        dbias: match (opts.bias_grad, opts.bias) {
            (true, Some(b)) => Some(make(b.shape(), DType::F32)?),
            _ => None,
        },
    };
    let into = GradientsInto {
        dq: &grads.dq,
        dk: &grads.dk,
        dv: &grads.dv,
        dbias: grads.dbias.as_ref(),
    };
    run(&x, &dims, &plan, out, d_out, lse, &into)?;
    Ok(grads)
}

/// [`attention_backward`] writing into `grads`.
///
/// Errors: as [`attention_backward`]; [`Error::Shape`] or [`Error::DType`]
/// for gradients of another shape or dtype (or a missing or unasked
/// `dbias`); [`Error::InvalidArgument`] for a gradient sharing a buffer
/// with an input or another gradient, or on another context.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_into(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    d_out: &Tensor,
    lse: Option<&Tensor>,
    opts: &AttentionOptions,
    grads: &GradientsInto,
) -> Result<()> {
    let x = Inputs { q, k, v, opts };
    let dims = check_inputs(&x, out, d_out, lse)?;
    check_grads(&x, out, d_out, lse, grads)?;
    let plan = backward_plan::plan_backward(q.context().profile(), &dims, opts)?;
    run(&x, &dims, &plan, out, d_out, lse, grads)
}

/// The plan an [`attention_backward`] call with these operands would run.
///
/// Errors: as [`attention_backward`], before anything runs.
pub fn attention_backward_plan(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    d_out: &Tensor,
    lse: Option<&Tensor>,
    opts: &AttentionOptions,
) -> Result<BackwardPlan> {
    checked_plan(&Inputs { q, k, v, opts }, out, d_out, lse).map(|(_, plan)| plan)
}

/// The check and plan of [`attention_backward`] and its plan (`_into`
/// checks the gradients between the two).
fn checked_plan(
    x: &Inputs,
    out: &Tensor,
    d_out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<(Dims, BackwardPlan)> {
    let dims = check_inputs(x, out, d_out, lse)?;
    let plan = backward_plan::plan_backward(x.q.context().profile(), &dims, x.opts)?;
    Ok((dims, plan))
}

fn shape_err(what: &str, got: &[usize], want: &[usize]) -> Error {
    Error::Shape {
        op: OP,
        detail: format!("{what} is {}, expected {}", shape_str(got), shape_str(want)),
    }
}

/// The forward's check of q, k, v and the options, then out, d_out and the
/// LSE: present, of the forward's shapes and dtypes, dense, on q's context.
fn check_inputs(x: &Inputs, out: &Tensor, d_out: &Tensor, lse: Option<&Tensor>) -> Result<Dims> {
    let dims = check::check(x)?;
    let Some(lse) = lse else {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: "the backward needs the forward's log-sum-exp: run attention with \
                     return_lse(true) and pass its lse"
                .into(),
        });
    };
    if x.opts.bias_grad && x.opts.bias.is_none() {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: "bias_grad asks for the gradient of a bias the call does not have".into(),
        });
    }
    let want = dims.out_shape(x.opts.layout);
    for (name, t) in [("out", out), ("d_out", d_out)] {
        expect_dtype(OP, name, t.dtype(), &[dims.dtype])?;
        if t.shape() != want.as_slice() {
            return Err(shape_err(name, t.shape(), &want));
        }
    }
    expect_dtype(OP, "lse", lse.dtype(), &[DType::F32])?;
    if lse.shape() != dims.lse_shape() {
        return Err(shape_err("lse", lse.shape(), &dims.lse_shape()));
    }
    let saved = [("out", out), ("d_out", d_out), ("lse", lse)];
    for (name, t) in saved {
        Tensor::require_dense(OP, name, t)?;
    }
    // q, k and v may be views (gathered before the kernels run): their
    // context is compared without asking them to be dense.
    Tensor::same_context(OP, &saved)?;
    check::one_context(&[("out", out), ("q", x.q)])?;
    Ok(dims)
}

/// The gradients given to [`attention_backward_into`]: shapes, dtypes, one
/// context, buffers of their own.
fn check_grads(
    x: &Inputs,
    out: &Tensor,
    d_out: &Tensor,
    lse: Option<&Tensor>,
    g: &GradientsInto,
) -> Result<()> {
    let dt = x.q.dtype();
    let mut outs = vec![("dq", g.dq, x.q), ("dk", g.dk, x.k), ("dv", g.dv, x.v)];
    match (x.opts.bias_grad, x.opts.bias, g.dbias) {
        (true, Some(b), Some(db)) => outs.push(("dbias", db, b)),
        (true, _, None) => {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: "bias_grad is set but no dbias tensor was given".into(),
            })
        }
        (false, _, Some(_)) => {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: "a dbias tensor was given without bias_grad".into(),
            })
        }
        _ => {}
    }
    for (name, t, like) in &outs {
        let want = if *name == "dbias" { DType::F32 } else { dt };
        expect_dtype(OP, name, t.dtype(), &[want])?;
        if t.shape() != like.shape() {
            return Err(shape_err(name, t.shape(), like.shape()));
        }
    }
    let named: Vec<(&str, &Tensor)> = outs.iter().map(|(n, t, _)| (*n, *t)).collect();
    let mut inputs = check::bound_inputs(x);
    inputs.extend([("out", out), ("d_out", d_out)]);
    inputs.extend(lse.map(|l| ("lse", l)));
    Tensor::disjoint(OP, &named, &inputs)?;
    for (i, a) in named.iter().enumerate() {
        Tensor::disjoint(OP, &[*a], &named[i + 1..])?;
    }
    Tensor::same_context(OP, &named)?;
    check::one_context(&[named[0], ("q", x.q)])
}

fn run(
    x: &Inputs,
    dims: &Dims,
    plan: &BackwardPlan,
    out: &Tensor,
    d_out: &Tensor,
    lse: Option<&Tensor>,
    grads: &GradientsInto,
) -> Result<()> {
    let ctx = x.q.context();
    let lse = lse.expect("checked");
    if let BwdLaunch::Empty = plan.launch {
        return zeros(ctx, grads);
    }
    let (q, k, v) = (&x.q.contiguous()?, &x.k.contiguous()?, &x.v.contiguous()?);
    let mut params = params::params(dims, x.opts);
    let aux = params::aux_table(dims, x.opts, &mut params);
    let bwd = Bwd {
        call: Call {
            ctx,
            q,
            k,
            v,
            bias: x.opts.bias,
            mask: x.opts.mask.map(|m| m.words()),
            out,
            lse: None,
            dims,
            opts: x.opts,
            params,
            aux: ctx.table(&aux),
        },
        d_out,
        lse,
        grads,
    };
    match &plan.launch {
        BwdLaunch::Flash(f) => flash(&bwd, f),
        BwdLaunch::Naive(n) => backward_naive::run(&bwd, n),
        BwdLaunch::Empty => Ok(()),
    }
}

/// Clears every gradient (a call through which nothing flows).
fn zeros(ctx: &Context, g: &GradientsInto) -> Result<()> {
    ctx.scoped(OP, || {
        let mut enc = ctx.encoder();
        for t in [Some(g.dq), Some(g.dk), Some(g.dv), g.dbias]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
        {
            enc.clear_buffer(t.buffer(), t.offset(), Some(t.padded_bytes()));
        }
        ctx.submit(enc);
        Ok(())
    })
}

/// The flash backward: prepass, dQ (and dS), dK/dV, the bias sum; one
/// submission.
fn flash(bwd: &Bwd, f: &FlashBwd) -> Result<()> {
    let (call, g) = (&bwd.call, bwd.grads);
    let (ctx, dims) = (call.ctx, call.dims);
    let stats = Tensor::empty(ctx, &[dims.b * dims.hq * dims.sq, 2], DType::F32)?;
    let full = ds_target(bwd, f.bias_sum.is_some())?;
    let ds_out = full.as_ref().or(g.dbias);
    let (prep, pq, pkv) = (
        ctx.pipeline(&f.prep)?,
        ctx.pipeline(&f.q)?,
        ctx.pipeline(&f.kv)?,
    );
    let sum = f.bias_sum.as_ref().map(|s| ctx.pipeline(s)).transpose()?;
    let mut p = call.params;
    // The dK/dV kernel's Q and dO textures are made under params that see
    // them as K and V.
    let mut pside = side_params(&p, dims, call.opts.layout);
    let qside = query_side(dims);
    let sources = match &f.tex {
        Some([kv, qo]) => Some((
            KvSource::new(ctx, kv, &f.q, &mut p, dims)?,
            KvSource::new(ctx, qo, &f.kv, &mut pside, &qside)?,
        )),
        None => None,
    };
    let mut pkvp = p;
    if sources.is_some() {
        KvTextures::copy_params(&pside, &mut pkvp);
    }
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let ubuf_kv = ctx.uniform(&pkvp);
        let ubuf_side = ctx.uniform(&pside);
        let mut enc = ctx.encoder();
        let rows = (dims.b * dims.hq * dims.sq) as u32;
        ctx.dispatch(
            &mut enc,
            &prep,
            &ubuf,
            &[
                (slot::IN1, call.out.bind()),
                (slot::IN2, bwd.lse.bind()),
                (slot::D_OUT, bwd.d_out.bind()),
                (slot::STATS, stats.bind()),
            ],
            grid(ctx, rows.div_ceil(64)),
        );
        if let Some(t) = ds_out {
            enc.clear_buffer(t.buffer(), t.offset(), Some(t.padded_bytes()));
        }
        let tex = sources.as_ref().map(|(skv, sqo)| {
            (
                skv.encode(call, &mut enc, &ubuf),
                sqo.encode_tensors(ctx, &qside, [call.q, bwd.d_out], &mut enc, &ubuf_side),
            )
        });
        let mut common = vec![(slot::STATS, stats.bind()), (slot::AUX, call.aux.bind())];
        common.extend(call.bias.map(|b| (slot::BIAS, b.bind())));
        common.extend(call.mask.map(|m| (slot::MASK, m.bind())));
        // dQ: q and dO resident, K and V streamed.
        let mut bq = common.clone();
        bq.extend([
            (slot::Q, call.q.bind()),
            (slot::D_OUT, bwd.d_out.bind()),
            (slot::OUT, g.dq.bind()),
        ]);
        bq.extend(ds_out.map(|t| (slot::DBIAS, t.bind())));
        match &tex {
            Some((kvt, _)) => bq.extend(kvt.binds()),
            None => bq.extend(call.kv_buffers()),
        }
        let rows_per = 64 * f.tm[0] as usize;
        let gq = (
            dims.sq.div_ceil(rows_per) as u32,
            (dims.b * dims.hq) as u32,
            1,
        );
        ctx.dispatch(&mut enc, &pq, &ubuf, &bq, gq);
        // dK/dV: k and v resident, Q and dO streamed.
        let mut bkv = common;
        bkv.extend(call.kv_buffers());
        bkv.extend([(slot::OUT, g.dk.bind()), (slot::GRAD1, g.dv.bind())]);
        match &tex {
            Some((_, qot)) => bkv.extend(qot.binds()),
            None => bkv.extend([(slot::Q, call.q.bind()), (slot::D_OUT, bwd.d_out.bind())]),
        }
        let keys_per = 64 * f.tm[1] as usize;
        let gkv = (
            dims.sk.div_ceil(keys_per) as u32,
            (dims.b * dims.hkv) as u32,
            1,
        );
        ctx.dispatch(&mut enc, &pkv, &ubuf_kv, &bkv, gkv);
        if let (Some(sum), Some(full), Some(db)) = (&sum, &full, g.dbias) {
            bias_sum(ctx, &mut enc, sum, &ubuf, full, db);
        }
        ctx.submit(enc);
        drop(tex);
        Ok(())
    })
}

/// The params under which Q and dO are K and V (the dK/dV kernel's
/// textures are made from them): Q's strides as K's, dO's as V's, seq_q
/// keys of heads_q heads.
fn side_params(p: &AttentionParams, dims: &Dims, layout: Layout) -> AttentionParams {
    let qs = params::strides(layout, dims.hq, dims.sq, dims.d);
    let os = params::strides(layout, dims.hq, dims.sq, dims.dv);
    AttentionParams {
        hkv: dims.hq as u32,
        sk: dims.sq as u32,
        k_sb: qs[0],
        k_sh: qs[1],
        k_ss: qs[2],
        v_sb: os[0],
        v_sh: os[1],
        v_ss: os[2],
        ..*p
    }
}
