//! The fused flash kernels: one dispatch of the tiles, key-split or blocks
//! schedule, or the rows schedule after its K/V textures are made.

use super::call::Call;
use super::kv_texels::KvSource;
use super::options::OP;
use super::plan::{FlashLaunch, RowsLaunch};
use super::spec::AttentionKernel;
use crate::error::Result;

/// Runs a tiles, key-split or blocks kernel: `row_block` query rows per
/// workgroup, one workgroup row per (batch, head).
pub(super) fn run(call: &Call, launch: &FlashLaunch) -> Result<()> {
    let (ctx, dims) = (call.ctx, call.dims);
    let pipe = ctx.pipeline(&launch.spec)?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&call.params);
        let mut binds = call.binds(call.out.bind(), call.lse.map(|l| l.bind()));
        binds.extend(call.kv_buffers());
        let mut enc = ctx.encoder();
        let groups = (
            dims.sq.div_ceil(launch.row_block as usize) as u32,
            (dims.b * dims.hq) as u32,
            1,
        );
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, groups);
        ctx.submit(enc);
        Ok(())
    })
}

/// The rows schedule: K and V into textures, then one invocation per `tm`
/// query rows. Runs the one-row form while the best compiles in the
/// background, when the plan allows it.
pub(super) fn run_rows(call: &Call, launch: &RowsLaunch) -> Result<()> {
    let (ctx, dims, best) = (call.ctx, call.dims, &launch.best);
    let (pipe, spec) = match &launch.quick {
        Some(quick) => match ctx.pipeline_or_quick(best, quick)? {
            (pipe, true) => (pipe, best),
            (pipe, false) => (pipe, quick),
        },
        None => (ctx.pipeline(best)?, best),
    };
    let tm = match spec.kernel {
        AttentionKernel::Rows { tm, .. } => tm,
        _ => 1,
    };
    let mut p = call.params;
    let kv = KvSource::new(ctx, &launch.kv, spec, &mut p, dims)?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let mut enc = ctx.encoder();
        let tex = kv.encode(call, &mut enc, &ubuf);
        let mut binds = call.binds(call.out.bind(), call.lse.map(|l| l.bind()));
        binds.extend(tex.binds());
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
