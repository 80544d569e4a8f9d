//! The attention planner: a planner per variant (naive, flash, split-KV) and
//! per flash schedule, each serving a call or saying why not
//! ([`Error::Unsupported`]), and the dispatcher that picks among them from
//! the device profile, the shapes and the options. A variant, schedule or
//! K/V source the caller forces is the one planned, or the call is refused;
//! one left to the planner is the first of its preferences that serves.

use std::fmt;

use super::check::Dims;
use super::kv_texels::KvTextures;
use super::options::{AttentionOptions, AttentionVariant, FlashSchedule, KvReads, OP};
use super::spec::{AttentionKernel, AttentionSpec, Extras, SK};
use crate::context::DeviceProfile;
use crate::error::{Error, Result};

/// How the kernels run a call (after the variant and schedule are
/// resolved).
#[derive(Debug, Clone)]
pub(crate) enum Launch {
    /// Nothing to write, or no keys or no value columns: zeros and an LSE
    /// of −∞ (the sink logit with learned sinks).
    Empty,
    Naive,
    /// One tiles, key-split or blocks kernel.
    Flash(FlashLaunch),
    /// The rows schedule.
    Rows(RowsLaunch),
    /// Split-KV: partials then merge.
    SplitKv(SplitLaunch),
}

/// One flash kernel over (row blocks, batch × heads), `row_block` query
/// rows per workgroup.
#[derive(Debug, Clone)]
pub(crate) struct FlashLaunch {
    pub spec: AttentionSpec,
    pub row_block: u32,
}

/// The rows schedule: its best form, the one-row stand-in (when the best
/// may compile in the background), the K/V textures.
#[derive(Debug, Clone)]
pub(crate) struct RowsLaunch {
    pub best: AttentionSpec,
    pub quick: Option<AttentionSpec>,
    pub kv: KvTextures,
}

/// Split-KV: `nsplit` splits of `chunk` keys, K/V read from textures when
/// `kv` is given.
#[derive(Debug, Clone)]
pub(crate) struct SplitLaunch {
    pub split: AttentionSpec,
    pub merge: AttentionSpec,
    pub kv: Option<KvTextures>,
    pub nsplit: usize,
    pub chunk: usize,
}

/// What an attention call will run: the variant, the flash schedule or
/// split-KV source, and why. From [`plan`](super::plan).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttentionPlan {
    /// The kernel that runs: `Naive`, `Flash` or `SplitKv` (never `Auto`).
    pub variant: AttentionVariant,
    /// The flash schedule, when `variant` is `Flash`.
    pub schedule: Option<FlashSchedule>,
    /// Where split-KV reads K and V from, when `variant` is `SplitKv`.
    pub kv_reads: Option<KvReads>,
    /// Why this kernel.
    pub reason: String,
    pub(crate) launch: Launch,
}

impl fmt::Display for AttentionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attention: {:?}", self.variant)?;
        if let Some(s) = self.schedule {
            write!(f, " {s:?}")?;
        }
        if let Some(r) = self.kv_reads {
            write!(f, " reading {r:?}")?;
        }
        write!(f, " ({})", self.reason)
    }
}

/// What every planner reads: the device, the call's dims and options, and
/// whether the call writes the LSE.
pub(crate) struct Ask<'a> {
    pub profile: &'a DeviceProfile,
    pub dims: &'a Dims,
    pub opts: &'a AttentionOptions<'a>,
    pub lse: bool,
}

impl Ask<'_> {
    /// The spec of `kernel` for this call.
    fn spec(&self, kernel: AttentionKernel) -> AttentionSpec {
        AttentionSpec {
            kernel,
            dtype: self.dims.dtype,
            vec: self.dims.d.is_multiple_of(4) && self.dims.dv.is_multiple_of(4),
            bias: self.opts.bias.is_some(),
            lse: self.lse,
            extras: self.opts.extras(),
        }
    }

    /// Vec4s per row of Q/K and of V/O.
    fn d4(&self) -> (u32, u32) {
        (
            self.dims.d.div_ceil(4) as u32,
            self.dims.dv.div_ceil(4) as u32,
        )
    }
}

fn unsupported(detail: String) -> Error {
    Error::Unsupported { op: OP, detail }
}

fn plan(
    variant: AttentionVariant,
    (schedule, kv_reads): (Option<FlashSchedule>, Option<KvReads>),
    reason: String,
    launch: Launch,
) -> AttentionPlan {
    AttentionPlan {
        variant,
        schedule,
        kv_reads,
        reason,
        launch,
    }
}

/// Resolves a call into a plan from the profile, shapes and options: the
/// variants to try in order (the forced one, or Auto's preferences), the
/// first that serves. Before any kernel: a call that writes nothing, or
/// has no keys, is [`Launch::Empty`]; operands past one binding are
/// [`Error::TooLarge`].
pub(crate) fn plan_for(
    profile: &DeviceProfile,
    dims: &Dims,
    opts: &AttentionOptions,
    lse: bool,
) -> Result<AttentionPlan> {
    let (first, fallback) = variants(dims, opts);
    let empty = |reason: &str| plan(first.0, (None, None), reason.into(), Launch::Empty);
    if dims.writes_nothing(lse) {
        return Ok(empty("nothing to write"));
    }
    dims.check_bindings(opts.layout, profile.max_storage_binding)?;
    if dims.sk == 0 || dims.dv == 0 {
        return Ok(empty("no keys: zeros"));
    }
    let ask = Ask {
        profile,
        dims,
        opts,
        lse,
    };
    let variant = |(variant, why): (AttentionVariant, &str)| match variant {
        AttentionVariant::Naive => naive(&ask, why),
        AttentionVariant::Flash => flash(&ask, why),
        _ => split_kv(&ask, why),
    };
    // Every planner refuses with Unsupported or TooLarge; the preferred
    // variant's refusal is the one to report.
    match (variant(first), fallback) {
        (Err(e), Some(next)) => variant(next).map_err(|_| e),
        (r, _) => r,
    }
}

/// A variant and why it is chosen.
type Choice = (AttentionVariant, &'static str);

/// The variant a call runs, with why: the forced one, or Auto's
/// (split-KV for few queries over many keys, else flash); and for Auto the
/// other fused kernel should the first not serve — unless the caller forced
/// the first one's schedule or K/V source, which is then refused rather
/// than run around.
fn variants(dims: &Dims, opts: &AttentionOptions) -> (Choice, Option<Choice>) {
    use AttentionVariant as V;
    let (first, next) = match opts.variant.unwrap_or(V::Auto) {
        V::Auto if dims.sq <= 8 && dims.sk >= 512 => (
            (V::SplitKv, "few queries over many keys"),
            Some((V::Flash, "SplitKv cannot serve the call")),
        ),
        V::Auto => (
            (V::Flash, "the default"),
            Some((V::SplitKv, "Flash cannot serve the call")),
        ),
        v => ((v, "forced by the caller"), None),
    };
    let forced_within = match first.0 {
        V::Flash => opts.flash_schedule.is_some(),
        _ => opts.split_kv_reads.is_some(),
    };
    (first, next.filter(|_| !forced_within))
}

/// What `serve` makes of the first of `prefs` it serves, else the last
/// refusal (the last resort's reason is the one that says why none does).
fn first_serving<T, R>(prefs: &[T], serve: impl Fn(&T) -> Result<R>) -> Result<R> {
    let mut refused = unsupported("nothing to try".into());
    for p in prefs {
        match serve(p) {
            Ok(r) => return Ok(r),
            Err(e) => refused = e,
        }
    }
    Err(refused)
}

/// The naive kernel: a contiguous K, and a score matrix within one binding.
fn naive(ask: &Ask, why: &str) -> Result<AttentionPlan> {
    let (dims, profile) = (ask.dims, ask.profile);
    if ask.opts.paged.is_some() {
        return Err(unsupported(
            "the naive kernel multiplies a contiguous K; a paged KV cache is read by Flash and \
             SplitKv"
                .into(),
        ));
    }
    dims.check_scores(
        "the naive kernel's score matrix",
        profile.max_storage_binding,
    )?;
    let none = (None, None);
    Ok(plan(
        AttentionVariant::Naive,
        none,
        why.into(),
        Launch::Naive,
    ))
}

/// The flash kernel: the forced schedule, or the first of the profile's
/// preferences that serves.
fn flash(ask: &Ask, why: &str) -> Result<AttentionPlan> {
    let rows = ask.dims.b * ask.dims.hq;
    ask.profile
        .check_groups(OP, "batch × heads workgroups", rows)?;
    let (sched, launch, reason) = match ask.opts.flash_schedule {
        Some(s) => (s, schedule(ask, s)?, "schedule forced by the caller"),
        None => {
            let (prefs, reason) = preferred_schedules(ask);
            let (s, l) = first_serving(prefs, |&s| schedule(ask, s).map(|l| (s, l)))?;
            (s, l, reason)
        }
    };
    Ok(plan(
        AttentionVariant::Flash,
        (Some(sched), None),
        format!("{why}; {reason}"),
        launch,
    ))
}

/// The schedules the profile prefers for the call, in order, and why.
/// Tiles serves wherever its tile fits workgroup memory, so every list
/// ends with it.
fn preferred_schedules(ask: &Ask) -> (&'static [FlashSchedule], &'static str) {
    use FlashSchedule as S;
    if !ask.profile.texel_reads {
        (&[S::Tiles], "the GPU default")
    } else if ask.dims.sq >= 64 {
        (
            &[S::Rows, S::Blocks, S::Tiles],
            "texel reads preferred, 64+ query rows",
        )
    } else {
        (
            &[S::KeySplit, S::Tiles],
            "barrier-free, fewer than 64 query rows",
        )
    }
}

/// The launch of schedule `s`, or why it cannot serve the call.
fn schedule(ask: &Ask, s: FlashSchedule) -> Result<Launch> {
    match s {
        FlashSchedule::Tiles => tiles(ask).map(Launch::Flash),
        FlashSchedule::KeySplit => key_split(ask).map(Launch::Flash),
        FlashSchedule::Blocks => blocks(ask).map(Launch::Flash),
        FlashSchedule::Rows => rows(ask).map(Launch::Rows),
    }
}

/// Rows per workgroup: the K/V tile is shared by more rows when seq_q
/// allows; keys per tile: as many as workgroup memory holds (≤ 64).
fn tiles(ask: &Ask) -> Result<FlashLaunch> {
    let (d4, dv4) = ask.d4();
    let bq = ask.dims.sq.next_power_of_two().clamp(8, 64) as u32;
    let per_key = (d4 + dv4) * 16;
    let mem = ask.profile.workgroup_memory;
    let bkv = (mem / per_key).min(64) / SK * SK;
    if bkv == 0 || bq > ask.profile.max_invocations {
        return Err(unsupported(format!(
            "head dims d={}, d_v={} need {} bytes of workgroup memory per {SK}-key tile; the \
             adapter has {mem}",
            ask.dims.d,
            ask.dims.dv,
            per_key * SK
        )));
    }
    Ok(FlashLaunch {
        spec: ask.spec(AttentionKernel::Tiles { d4, dv4, bq, bkv }),
        row_block: bq,
    })
}

/// 4 rows per workgroup, keys in chunks of 2; the merge holds 64 partial
/// outputs in workgroup memory.
fn key_split(ask: &Ask) -> Result<FlashLaunch> {
    let (d4, dv4) = ask.d4();
    let merge_bytes = 64 * (8 + dv4 * 16);
    if merge_bytes > ask.profile.workgroup_memory {
        return Err(unsupported(format!(
            "the KeySplit schedule needs {merge_bytes} bytes of workgroup memory at d_v = {}; \
             the adapter has {}",
            ask.dims.dv, ask.profile.workgroup_memory
        )));
    }
    let kernel = AttentionKernel::KeySplit {
        d4,
        dv4,
        tm: 4,
        kc: 2,
    };
    Ok(FlashLaunch {
        spec: ask.spec(kernel),
        row_block: 4,
    })
}

/// Workgroup memory of the blocks schedule: its tile of probabilities
/// (8 invocations × 16 keys × 4 vec4s) and row maxima (8 × 16 f32).
const BLOCKS_WORKGROUP_BYTES: u32 = 8 * 16 * 4 * 16 + 8 * 16 * 4;

/// Whether the blocks schedule serves a call with these options: not with
/// the inference options, whose per-score code unrolled over its 16 × 16
/// register-blocked scores compiles for most of a minute on a software
/// adapter (the one kind of device it is chosen for).
pub(crate) fn blocks_serves(extras: &Extras) -> bool {
    *extras == Extras::default()
}

/// Groups of 2–8 invocations (each owns at most 8 output vec4s per row, so
/// groups grow with d_v), 16 rows a group.
fn blocks(ask: &Ask) -> Result<FlashLaunch> {
    if !blocks_serves(&ask.opts.extras()) {
        return Err(unsupported(
            "the Blocks schedule takes no inference options (window, sink tokens, soft cap, \
             ALiBi, sinks, boolean mask, paged K/V): Tiles, KeySplit and Rows do"
                .into(),
        ));
    }
    if BLOCKS_WORKGROUP_BYTES > ask.profile.workgroup_memory {
        return Err(unsupported(format!(
            "the Blocks schedule needs {BLOCKS_WORKGROUP_BYTES} bytes of workgroup memory; the \
             adapter has {}",
            ask.profile.workgroup_memory
        )));
    }
    let hg = match ask.d4().1 {
        0..=16 => 2,
        17..=32 => 4,
        _ => 8,
    };
    Ok(FlashLaunch {
        spec: ask.spec(AttentionKernel::Blocks { hg }),
        row_block: 16 * (8 / hg),
    })
}

/// Rows per invocation as many as keep Q and O near 128 vec4s (the shader
/// size, and so the compile time, stays about constant), at most 8; K and
/// V in textures the adapter holds.
fn rows(ask: &Ask) -> Result<RowsLaunch> {
    let (dims, profile) = (ask.dims, ask.profile);
    let (d4, dv4) = ask.d4();
    let Some(kv) = KvTextures::new(profile, dims, ask.opts.paged.is_some()) else {
        let vec4s = |w4: u32| dims.kv_outer * dims.hkv * dims.kv_rows * w4 as usize;
        return Err(unsupported(format!(
            "the Rows schedule copies K and V ({} and {} vec4s) into textures, which exceed this \
             adapter's texture or dispatch limits (or, paged, have head dims that are not \
             multiples of 4)",
            vec4s(d4),
            vec4s(dv4)
        )));
    };
    let tm = (128 / d4.max(dv4)).clamp(1, 8);
    let sg = profile.subgroups_of_8;
    let best = ask.spec(AttentionKernel::Rows { d4, dv4, tm, sg });
    // The one-row form serves while the best compiles, on calls small
    // enough that its slower run beats waiting for the compile (README:
    // break-even near 2e10 units of work).
    let work = (dims.b * dims.hq * dims.sq * dims.sk * (dims.d + dims.dv)) as f64;
    let quick =
        (work <= 2.0e10 && tm > 1).then(|| ask.spec(AttentionKernel::Rows { d4, dv4, tm: 1, sg }));
    Ok(RowsLaunch { best, quick, kv })
}

/// Split-KV: K/V from the forced source, or textures where the profile
/// prefers them and they fit (else the buffers); enough splits to give
/// every core work for one query.
fn split_kv(ask: &Ask, why: &str) -> Result<AttentionPlan> {
    let (dims, profile, opts) = (ask.dims, ask.profile, ask.opts);
    let (want, reason) = match opts.split_kv_reads {
        Some(r) => (r, "source forced by the caller"),
        None if profile.texel_reads => (KvReads::Texels, "texel reads preferred"),
        None => (KvReads::Buffers, "the GPU default"),
    };
    let kv =
        match want {
            KvReads::Buffers => None,
            KvReads::Texels => match KvTextures::new(profile, dims, opts.paged.is_some()) {
                None if opts.split_kv_reads.is_some() => return Err(unsupported(
                    "split-KV Texels: K and V exceed this adapter's texture or dispatch limits \
                     (or need the pack pass, which a paged cache does not take)"
                        .into(),
                )),
                kv => kv,
            },
        };
    // Each split long enough that the merge pass stays small; whole 8-key
    // steps.
    let chunk = dims.sk.div_ceil(256).max(32).next_multiple_of(8);
    let nsplit = dims.sk.div_ceil(chunk);
    let what = "batch × heads × seq_q workgroups of the split-KV kernel";
    profile.check_groups(OP, what, dims.b * dims.hq * dims.sq)?;
    let reads = if kv.is_some() {
        KvReads::Texels
    } else {
        KvReads::Buffers
    };
    let (d4, dv4) = ask.d4();
    let tex = kv.is_some();
    let split = AttentionSpec {
        lse: false,
        ..ask.spec(AttentionKernel::Split { d4, dv4, tex })
    };
    // The merge reads no inputs: only the dtype, the LSE and the sinks matter.
    let merge = AttentionSpec {
        vec: false,
        bias: false,
        extras: Extras {
            ext: opts.extras().ext,
            ..Extras::default()
        },
        ..ask.spec(AttentionKernel::Merge { d4, dv4 })
    };
    let launch = SplitLaunch {
        split,
        merge,
        kv,
        nsplit,
        chunk,
    };
    Ok(plan(
        AttentionVariant::SplitKv,
        (None, Some(reads)),
        format!("{why}; {reason}"),
        Launch::SplitKv(launch),
    ))
}
