//! Flash-decoding: keys split across workgroups, each writing a partial output
//! and its (max, sum); a merge pass combines them with log-sum-exp weights.

use super::flash::common_binds;
use super::kv_texels::{KvTexels, KvTextures};
use super::spec::{slot, AttentionParams, AttentionSpec};
use super::{Dims, Inputs, OP};
use crate::context::{Bind, Context, Table, Tracked};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn scratch(ctx: &Context, bytes: u64, what: &str) -> Result<Tracked> {
    if bytes > ctx.max_binding() {
        return Err(Error::TooLarge {
            op: OP,
            what: what.to_string(),
            size: bytes,
            limit: ctx.max_binding(),
            kind: crate::Limit::StorageBinding,
        });
    }
    Ok(ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some(OP),
        size: bytes.max(16),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    }))
}

/// Runs the split pass then the merge: `nsplit` splits of `chunk` keys.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    ctx: &Context,
    io: &Inputs,
    dims: &Dims,
    (split, merge): (&AttentionSpec, &AttentionSpec),
    kv: Option<&KvTextures>,
    (nsplit, chunk): (usize, usize),
    p: &AttentionParams,
    aux: &Table<'_>,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let nrows = dims.b * dims.hq * dims.sq;
    let dv4 = dims.dv.div_ceil(4) as u64;
    let part_o = scratch(
        ctx,
        (nrows * nsplit) as u64 * dv4 * 16,
        "split-KV partial outputs",
    )?;
    let part_ml = scratch(ctx, (nrows * nsplit) as u64 * 8, "split-KV partial stats")?;
    let pipe1 = ctx.pipeline(split)?;
    let pipe2 = ctx.pipeline(merge)?;
    let packs = match kv {
        Some(kv) => kv
            .pack_specs(split)
            .iter()
            .map(|s| ctx.pipeline(s))
            .collect::<Result<Vec<_>>>()?,
        None => vec![],
    };
    let mut p = *p;
    p.nsplit = nsplit as u32;
    p.chunk = chunk as u32;
    if let Some(kv) = kv {
        kv.set_params(&mut p, dims);
    }
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let mut enc = ctx.encoder();
        let tex = kv
            .map(|g| KvTexels::encode(ctx, &mut enc, &packs, &ubuf, [io.k, io.v], dims, g))
            .transpose()?;
        let mut binds = common_binds(io, Bind::whole(&part_o), aux, Some(Bind::whole(&part_ml)));
        match &tex {
            Some(t) => binds.extend([
                (slot::K_TEXELS, Bind::pooled(&t.textures[0])),
                (slot::V_TEXELS, Bind::pooled(&t.textures[1])),
            ]),
            None => binds.extend([(slot::K, io.k.bind()), (slot::V, io.v.bind())]),
        }
        let groups = (nsplit.div_ceil(64) as u32, nrows as u32, 1);
        ctx.dispatch(&mut enc, &pipe1, &ubuf, &binds, groups);
        let mut binds = vec![
            (slot::IN1, Bind::whole(&part_o)),
            (slot::IN2, Bind::whole(&part_ml)),
            (slot::OUT, out.bind()),
        ];
        if merge.extras.ext {
            binds.push((slot::AUX, aux.bind()));
        }
        if let Some(l) = lse {
            binds.push((slot::STATS, l.bind()));
        }
        let (gx, gy) = ctx.grid((nrows * dv4 as usize).div_ceil(64) as u32);
        ctx.dispatch(&mut enc, &pipe2, &ubuf, &binds, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })
}
