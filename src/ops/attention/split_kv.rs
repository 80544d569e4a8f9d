//! Flash-decoding: keys split across workgroups, each writing a partial output
//! and its (max, sum); a merge pass combines them with log-sum-exp weights.

use super::call::Call;
use super::kv_texels::KvSource;
use super::options::OP;
use super::plan::SplitLaunch;
use super::spec::slot;
use crate::context::{Bind, Context, Tracked};
use crate::error::{Error, Result};

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
pub(super) fn run(call: &Call, launch: &SplitLaunch) -> Result<()> {
    let (ctx, dims, nsplit) = (call.ctx, call.dims, launch.nsplit);
    let nrows = dims.b * dims.hq * dims.sq;
    let dv4 = dims.dv.div_ceil(4) as u64;
    let part_o = scratch(
        ctx,
        (nrows * nsplit) as u64 * dv4 * 16,
        "split-KV partial outputs",
    )?;
    let part_ml = scratch(ctx, (nrows * nsplit) as u64 * 8, "split-KV partial stats")?;
    let pipe1 = ctx.pipeline(&launch.split)?;
    let pipe2 = ctx.pipeline(&launch.merge)?;
    let mut p = call.params;
    p.nsplit = nsplit as u32;
    p.chunk = launch.chunk as u32;
    let kv = launch
        .kv
        .as_ref()
        .map(|geo| KvSource::new(ctx, geo, &launch.split, &mut p, dims))
        .transpose()?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let mut enc = ctx.encoder();
        let tex = kv.as_ref().map(|kv| kv.encode(call, &mut enc, &ubuf));
        let mut binds = call.binds(Bind::whole(&part_o), Some(Bind::whole(&part_ml)));
        match &tex {
            Some(t) => binds.extend(t.binds()),
            None => binds.extend(call.kv_buffers()),
        }
        let groups = (nsplit.div_ceil(64) as u32, nrows as u32, 1);
        ctx.dispatch(&mut enc, &pipe1, &ubuf, &binds, groups);
        let mut binds = vec![
            (slot::IN1, Bind::whole(&part_o)),
            (slot::IN2, Bind::whole(&part_ml)),
            (slot::OUT, call.out.bind()),
        ];
        if launch.merge.extras.ext {
            binds.push((slot::AUX, call.aux.bind()));
        }
        if let Some(l) = call.lse {
            binds.push((slot::STATS, l.bind()));
        }
        let (gx, gy) = ctx.grid((nrows * dv4 as usize).div_ceil(64) as u32);
        ctx.dispatch(&mut enc, &pipe2, &ubuf, &binds, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })
}
