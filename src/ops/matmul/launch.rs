//! Recording one planned matmul: the operands bound as buffers, or copied
//! into textures for the texel kernel, and one dispatch.

use super::plan::{slot, MatmulParams, MatmulPlan};
use super::problem::{Gemm, Problem};
use crate::context::Bind;
use crate::context::{vec4_format, vec4_texture};
use crate::error::Result;
use crate::tensor::Tensor;

/// Records and submits `plan` for problem `p` of call `g` into `out`.
pub(super) fn launch(g: &Gemm, p: &Problem, plan: &MatmulPlan, out: &Tensor) -> Result<()> {
    let (a, b, ctx) = (g.a, g.b, g.a.context());
    let pipeline = ctx.pipeline(&plan.spec)?;
    let params = MatmulParams {
        m: p.m as u32,
        n: p.n as u32,
        k: p.k as u32,
        alpha: p.alpha,
    };
    ctx.scoped(g.op, || {
        let ubuf = ctx.uniform(&params);
        let offs = ctx.table(&p.offsets);
        let mut enc = ctx.encoder();
        let format = vec4_format(a.dtype());
        let made = plan.texels.map(|grid| {
            [a, b].map(|t| {
                let n = t.len() as u64 / 4;
                vec4_texture(
                    ctx,
                    &mut enc,
                    (t.buffer(), t.offset()),
                    n,
                    format,
                    grid,
                    "matmul operand texels",
                )
            })
        });
        let mut binds = match &made {
            Some([at, bt]) => {
                vec![(slot::A, Bind::pooled(at)), (slot::B, Bind::pooled(bt))]
            }
            None => vec![(slot::A, a.bind()), (slot::B, b.bind())],
        };
        binds.push((slot::OFFSETS, offs.bind()));
        binds.push((slot::OUT, out.bind()));
        if let Some(bias) = g.bias {
            binds.push((slot::BIAS, bias.bind()));
        }
        ctx.dispatch(&mut enc, &pipeline, &ubuf, &binds, plan.groups);
        ctx.submit(enc);
        Ok(())
    })
}
