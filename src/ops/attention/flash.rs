//! The fused flash kernels: one dispatch of the tiles, key-split or blocks
//! schedule, or the rows schedule after its K/V textures are made.

use super::kv_texels::{KvTexels, KvTextures};
use super::spec::{slot, AttentionParams, AttentionSpec};
use super::{Dims, Inputs, OP};
use crate::context::{Bind, Context, Table};
use crate::error::Result;
use crate::tensor::Tensor;

/// The bindings every fused kernel shares: the output, the aux table, the
/// bias, the mask and the per-row statistics (`stats`: the LSE, or split-KV's
/// partial (max, sum)).
pub(super) fn common_binds<'a>(
    io: &Inputs<'a>,
    out: Bind<'a>,
    aux: &'a Table<'a>,
    stats: Option<Bind<'a>>,
) -> Vec<(u32, Bind<'a>)> {
    let mut binds = vec![
        (slot::Q, io.q.bind()),
        (slot::OUT, out),
        (slot::AUX, aux.bind()),
    ];
    if let Some(b) = io.bias {
        binds.push((slot::BIAS, b.bind()));
    }
    if let Some(m) = io.mask {
        binds.push((slot::MASK, m.bind()));
    }
    if let Some(s) = stats {
        binds.push((slot::STATS, s));
    }
    binds
}

/// Runs a tiles, key-split or blocks kernel: `row_block` query rows per
/// workgroup, one workgroup row per (batch, head).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    ctx: &Context,
    io: &Inputs,
    dims: &Dims,
    spec: &AttentionSpec,
    row_block: u32,
    p: &AttentionParams,
    aux: &Table<'_>,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let pipe = ctx.pipeline(spec)?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(p);
        let mut binds = common_binds(io, out.bind(), aux, lse.map(|l| l.bind()));
        binds.extend([(slot::K, io.k.bind()), (slot::V, io.v.bind())]);
        let mut enc = ctx.encoder();
        let groups = (
            dims.sq.div_ceil(row_block as usize) as u32,
            (dims.b * dims.hq) as u32,
            1,
        );
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, groups);
        ctx.submit(enc);
        Ok(())
    })
}

/// The rows schedule: K and V into textures, then one invocation per `tm`
/// query rows. Runs `quick` (one row per invocation) while `best` compiles in
/// the background, when the plan allows it.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_rows(
    ctx: &Context,
    io: &Inputs,
    dims: &Dims,
    best: &AttentionSpec,
    quick: Option<&AttentionSpec>,
    kv: &KvTextures,
    p: &AttentionParams,
    aux: &Table<'_>,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let (pipe, spec) = match quick {
        Some(quick) => match ctx.pipeline_or_quick(best, quick)? {
            (pipe, true) => (pipe, best),
            (pipe, false) => (pipe, quick),
        },
        None => (ctx.pipeline(best)?, best),
    };
    let tm = match spec.kernel {
        super::spec::AttentionKernel::Rows { tm, .. } => tm,
        _ => 1,
    };
    let packs = kv
        .pack_specs(spec)
        .iter()
        .map(|s| ctx.pipeline(s))
        .collect::<Result<Vec<_>>>()?;
    let mut p = *p;
    kv.set_params(&mut p, dims);
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let mut enc = ctx.encoder();
        let tex = KvTexels::encode(ctx, &mut enc, &packs, &ubuf, [io.k, io.v], dims, kv)?;
        let mut binds = common_binds(io, out.bind(), aux, lse.map(|l| l.bind()));
        binds.extend([
            (slot::K_TEXELS, Bind::pooled(&tex.textures[0])),
            (slot::V_TEXELS, Bind::pooled(&tex.textures[1])),
        ]);
        let groups = (
            dims.sq.div_ceil((64 * tm) as usize) as u32,
            (dims.b * dims.hq) as u32,
            1,
        );
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, groups);
        ctx.submit(enc);
        Ok(())
    })
}
