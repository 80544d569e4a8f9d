//! The attention backward's planner: the variant (naive or flash), where
//! the flash kernels read their streamed operands (textures or buffers) and
//! their tiles, from the device profile, the shapes and the options; a
//! forced choice that cannot serve the call is refused.

use std::fmt;

use super::check::Dims;
use super::kv_texels::KvTextures;
use super::options::{AttentionOptions, BackwardVariant, KvReads, OP};
use super::spec::{AttentionKernel, AttentionSpec, Extras};
use crate::context::DeviceProfile;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// What a backward call will run: the variant, the flash kernels' source of
/// their streamed operands, and why. From
/// [`attention_backward_plan`](super::attention_backward_plan).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackwardPlan {
    /// `Naive` or `Flash` (never `Auto`).
    pub variant: BackwardVariant,
    /// Where the flash kernels read K/V (dQ) and Q/dO (dK/dV) from.
    pub reads: Option<KvReads>,
    /// Why this kernel.
    pub reason: String,
    pub(crate) launch: BwdLaunch,
}

impl fmt::Display for BackwardPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attention backward: {:?}", self.variant)?;
        if let Some(r) = self.reads {
            write!(f, " reading {r:?}")?;
        }
        write!(f, " ({})", self.reason)
    }
}

/// How the kernels run a backward call.
#[derive(Debug, Clone)]
pub(crate) enum BwdLaunch {
    /// No query rows, keys or value columns: every gradient is zeros.
    Empty,
    Naive(NaiveBwd),
    Flash(FlashBwd),
}

/// The naive backward's own kernels (the matmuls and the softmax are
/// planned by their families).
#[derive(Debug, Clone)]
pub(crate) struct NaiveBwd {
    pub ds: AttentionSpec,
    /// The bias gradient's sum over broadcast dimensions.
    pub bias_sum: Option<AttentionSpec>,
}

/// The flash backward: prepass, dQ and dK/dV kernels (with their tiles and
/// textures) and the bias sum.
#[derive(Debug, Clone)]
pub(crate) struct FlashBwd {
    pub prep: AttentionSpec,
    pub q: AttentionSpec,
    pub kv: AttentionSpec,
    /// K/V textures of the dQ kernel and Q/dO textures of the dK/dV kernel.
    pub tex: Option<[KvTextures; 2]>,
    /// Query rows (dQ) and keys (dK/dV) per invocation.
    pub tm: [u32; 2],
    pub bias_sum: Option<AttentionSpec>,
}

impl BackwardPlan {
    /// Every kernel spec the plan runs (the pack passes of its textures
    /// included); the matmuls and the naive softmax are their families'.
    #[cfg(test)]
    pub(crate) fn specs(&self) -> Vec<AttentionSpec> {
        match &self.launch {
            BwdLaunch::Empty => vec![],
            BwdLaunch::Naive(n) => [Some(n.ds.clone()), n.bias_sum.clone()]
                .into_iter()
                .flatten()
                .collect(),
            BwdLaunch::Flash(f) => {
                let mut v = vec![f.prep.clone(), f.q.clone(), f.kv.clone()];
                if let Some([kq, kkv]) = &f.tex {
                    v.extend(kq.pack_specs(&f.q));
                    v.extend(kkv.pack_specs(&f.kv));
                }
                v.extend(f.bias_sum.clone());
                v
            }
        }
    }
}

fn unsupported(detail: String) -> Error {
    Error::Unsupported { op: OP, detail }
}

/// The dims of the dK/dV kernel's streamed side seen as K/V are: Q
/// `[batch, heads_q, seq_q, d]` and dO `[.., d_v]`, for their textures.
pub(crate) fn query_side(dims: &Dims) -> Dims {
    Dims {
        hkv: dims.hq,
        sk: dims.sq,
        kv_outer: dims.b,
        kv_rows: dims.sq,
        ..*dims
    }
}

/// Resolves a backward call into a plan: Empty when nothing flows, the
/// forced variant or Auto's flash; the flash kernels' source forced, or
/// textures where the profile prefers texel reads and they fit.
pub(crate) fn plan_backward(
    profile: &DeviceProfile,
    dims: &Dims,
    opts: &AttentionOptions,
) -> Result<BackwardPlan> {
    let (variant, why) = match opts.backward_variant.unwrap_or(BackwardVariant::Auto) {
        BackwardVariant::Auto => (BackwardVariant::Flash, "the default"),
        v => (v, "forced by the caller"),
    };
    if opts.paged.is_some() {
        return Err(unsupported(
            "a paged KV cache is for inference: the backward takes contiguous K and V".into(),
        ));
    }
    dims.check_bindings(opts.layout, profile.max_storage_binding)?;
    let bias_grad = opts.bias_grad && opts.bias.is_some();
    if bias_grad {
        dims.check_scores("the bias gradient's dS", profile.max_storage_binding)?;
    }
    let plan = |variant, reads, reason: String, launch| BackwardPlan {
        variant,
        reads,
        reason,
        launch,
    };
    if dims.b * dims.hq * dims.sq * dims.sk * dims.dv == 0 {
        return Ok(plan(
            variant,
            None,
            "nothing flows: zeros".into(),
            BwdLaunch::Empty,
        ));
    }
    let spec = |kernel| AttentionSpec {
        kernel,
        dtype: dims.dtype,
        vec: dims.d.is_multiple_of(4) && dims.dv.is_multiple_of(4),
        bias: opts.bias.is_some(),
        lse: false,
        extras: opts.extras(),
    };
    // The bias sum (a bias broadcast over batches or heads) reads and
    // writes f32 whatever the inputs are.
    let bias_sum = opts
        .bias
        .filter(|b| bias_grad && (b.shape()[0] != dims.b || b.shape()[1] != dims.hq))
        .map(|_| AttentionSpec {
            dtype: DType::F32,
            vec: false,
            bias: false,
            extras: Extras::default(),
            ..spec(AttentionKernel::BwdBias)
        });
    if variant == BackwardVariant::Naive {
        dims.check_scores(
            "the naive backward's score matrix",
            profile.max_storage_binding,
        )?;
        let ds = AttentionSpec {
            vec: false,
            bias: false,
            ..spec(AttentionKernel::BwdDs { dbias: bias_grad })
        };
        let launch = BwdLaunch::Naive(NaiveBwd { ds, bias_sum });
        return Ok(plan(variant, None, why.into(), launch));
    }
    let (reads, tex, reason) = flash_reads(profile, dims, opts)?;
    let (d4, dv4) = (dims.d.div_ceil(4) as u32, dims.dv.div_ceil(4) as u32);
    let texel = tex.is_some();
    let tm = tiles(d4, dv4, texel);
    // Streamed keys (dQ) and query rows (dK/dV) a step: each accumulator
    // takes a step's updates in a row, so more a step is fewer spills, up to
    // what keeps the shader about one size.
    let kb_q = if d4 <= 32 { 8 } else { 4 };
    let kb_kv = if d4 + dv4 <= 64 { 4 } else { 2 };
    let sg = texel && profile.subgroups_of_8;
    let q = spec(AttentionKernel::BwdQ {
        d4,
        dv4,
        tm: tm[0],
        kb: kb_q,
        tex: texel,
        sg,
        dbias: bias_grad,
    });
    let kv = spec(AttentionKernel::BwdKv {
        d4,
        dv4,
        tm: tm[1],
        kb: kb_kv,
        tex: texel,
        sg,
    });
    check_kernels(profile, dims, opts, texel, bias_grad)?;
    let prep = AttentionSpec {
        vec: false,
        bias: false,
        extras: Extras::default(),
        ..spec(AttentionKernel::BwdPrep)
    };
    let launch = FlashBwd {
        prep,
        q,
        kv,
        tex,
        tm,
        bias_sum,
    };
    Ok(plan(
        BackwardVariant::Flash,
        Some(reads),
        format!("{why}; {reason}"),
        BwdLaunch::Flash(launch),
    ))
}

/// The flash kernels' source: forced, or textures where the profile
/// prefers texel reads and both pairs of textures fit its limits.
fn flash_reads(
    profile: &DeviceProfile,
    dims: &Dims,
    opts: &AttentionOptions,
) -> Result<(KvReads, Option<[KvTextures; 2]>, &'static str)> {
    let (want, reason) = match opts.backward_reads {
        Some(r) => (r, "source forced by the caller"),
        None if profile.texel_reads => (KvReads::Texels, "texel reads preferred"),
        None => (KvReads::Buffers, "the GPU default"),
    };
    if want == KvReads::Buffers {
        return Ok((KvReads::Buffers, None, reason));
    }
    let kv = KvTextures::new(profile, dims, false);
    let qo = KvTextures::new(profile, &query_side(dims), false);
    match (kv, qo) {
        (Some(kv), Some(qo)) => Ok((KvReads::Texels, Some([kv, qo]), reason)),
        _ if opts.backward_reads.is_some() => Err(unsupported(
            "backward Texels: K/V or Q/dO exceed this adapter's texture or dispatch limits".into(),
        )),
        _ => Ok((
            KvReads::Buffers,
            None,
            "textures past the adapter's limits: buffers",
        )),
    }
}

/// Query rows (dQ) and keys (dK/dV) per invocation: each streamed vec4
/// feeds that many, within about 200–250 resident vec4s (q, dq and dO; k,
/// v, dk and dv) so that the shader, and its compile, stay about one size
/// (at d = 64: 4 and 4, the best of a sweep here, docs/NOTEBOOK.md). On GPUs
/// one (registers are scarce there and a workgroup's invocations share the
/// streamed loads through the cache).
fn tiles(d4: u32, dv4: u32, texel: bool) -> [u32; 2] {
    if !texel {
        return [1, 1];
    }
    [
        (192 / (2 * d4 + dv4)).clamp(1, 8),
        (256 / (2 * (d4 + dv4))).clamp(1, 8),
    ]
}

/// Workgroups within the dispatch limits and storage bindings within the
/// adapter's per-kernel count.
fn check_kernels(
    profile: &DeviceProfile,
    dims: &Dims,
    opts: &AttentionOptions,
    texel: bool,
    bias_grad: bool,
) -> Result<()> {
    profile.check_groups(OP, "batch × heads_q workgroups", dims.b * dims.hq)?;
    profile.check_groups(OP, "query-row workgroups", dims.sq.div_ceil(64))?;
    profile.check_groups(OP, "key workgroups", dims.sk.div_ceil(64))?;
    let extra = opts.bias.is_some() as u32 + opts.mask.is_some() as u32;
    // dQ: q, dO, stats, dq, aux (+ k, v from buffers) (+ dS); dK/dV: k, v,
    // stats, dk, dv, aux (+ q, dO from buffers).
    let from_buffers = if texel { 0 } else { 2 };
    let need_q = 5 + from_buffers + extra + bias_grad as u32;
    let need_kv = 6 + from_buffers + extra;
    let need = need_q.max(need_kv);
    if need > profile.max_storage_buffers {
        return Err(unsupported(format!(
            "the backward kernels bind {need} storage buffers with these options; the adapter \
             allows {} per kernel",
            profile.max_storage_buffers
        )));
    }
    Ok(())
}
