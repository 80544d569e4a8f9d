//! The attention planner: the one function that turns a call into an
//! [`AttentionPlan`] from the device profile, the shapes and the options, and
//! the params of a call.

use std::fmt;

use super::kv_texels::KvTextures;
use super::spec::{AttentionKernel, AttentionParams, AttentionSpec, Extras, SK};
use super::{AttentionOptions, AttentionVariant, Causal, Dims, FlashSchedule, KvReads, Layout, OP};
use crate::context::DeviceProfile;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// How the fused kernels run a call (after the variant and schedule are
/// resolved).
#[derive(Debug, Clone)]
pub(crate) enum Launch {
    /// No keys or no value columns: zeros and an LSE of −∞.
    Empty,
    Naive,
    /// One flash kernel over (row blocks, batch × heads), rows per block.
    Flash {
        spec: AttentionSpec,
        row_block: u32,
    },
    /// The rows schedule: its best form, the one-row stand-in (when the
    /// best may compile in the background), the K/V textures.
    Rows {
        best: AttentionSpec,
        quick: Option<AttentionSpec>,
        kv: KvTextures,
    },
    /// Split-KV: partials then merge, `nsplit` splits of `chunk` keys.
    SplitKv {
        split: AttentionSpec,
        merge: AttentionSpec,
        kv: Option<KvTextures>,
        nsplit: usize,
        chunk: usize,
    },
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

/// Rows per invocation of the rows schedule: as many as keep Q and O near
/// 128 vec4s (the shader size, and so the compile time, stays about
/// constant), at most 8.
fn rows_tm(d4: u32, dv4: u32) -> u32 {
    (128 / d4.max(dv4)).clamp(1, 8)
}

/// Workgroup memory of the blocks schedule: its tile of probabilities
/// (8 invocations × 16 keys × 4 vec4s) and row maxima (8 × 16 f32).
const BLOCKS_WORKGROUP_BYTES: u32 = 8 * 16 * 4 * 16 + 8 * 16 * 4;

/// Group size of the blocks schedule: each invocation owns at most 8 output
/// vec4s per row, so groups grow with d_v.
fn blocks_hg(dv4: u32) -> u32 {
    match dv4 {
        0..=16 => 2,
        17..=32 => 4,
        _ => 8,
    }
}

/// Whether the blocks schedule serves a call with these options: not with
/// the inference options, whose per-score code unrolled over its 16 × 16
/// register-blocked scores compiles for most of a minute on a software
/// adapter (the one kind of device it is chosen for).
pub(crate) fn blocks_serves(extras: &Extras) -> bool {
    *extras == Extras::default()
}

/// Resolves a call into a plan from the profile, shapes and options.
pub(crate) fn plan_for(
    profile: &DeviceProfile,
    dims: &Dims,
    opts: &AttentionOptions,
    dtype: DType,
    lse: bool,
) -> Result<AttentionPlan> {
    let unsupported = |detail: String| Error::Unsupported { op: OP, detail };
    let (d4, dv4) = (dims.d.div_ceil(4) as u32, dims.dv.div_ceil(4) as u32);
    let spec = |kernel| AttentionSpec {
        kernel,
        dtype,
        vec: dims.d.is_multiple_of(4) && dims.dv.is_multiple_of(4),
        bias: opts.bias.is_some(),
        lse,
        extras: opts.extras(),
    };
    let paged = opts.paged.is_some();
    let (variant, why) = match opts.variant.unwrap_or(AttentionVariant::Auto) {
        AttentionVariant::Auto if dims.sq <= 8 && dims.sk >= 512 => {
            (AttentionVariant::SplitKv, "few queries over many keys")
        }
        AttentionVariant::Auto => (AttentionVariant::Flash, "the default"),
        v => (v, "forced by the caller"),
    };
    let plan = |variant, schedule, kv_reads, reason: String, launch| AttentionPlan {
        variant,
        schedule,
        kv_reads,
        reason,
        launch,
    };
    if dims.sk == 0 || dims.dv == 0 {
        return Ok(plan(
            variant,
            None,
            None,
            "no keys: zeros".into(),
            Launch::Empty,
        ));
    }
    let rows = dims.b * dims.hq;
    match variant {
        AttentionVariant::Naive if paged => Err(unsupported(
            "the naive kernel multiplies a contiguous K; a paged KV cache is read by Flash and \
             SplitKv"
                .into(),
        )),
        AttentionVariant::Naive => {
            let score_bytes = (dims.b * dims.hq * dims.sq * dims.sk) as u64 * 4;
            if score_bytes > profile.max_storage_binding {
                return Err(Error::TooLarge {
                    op: OP,
                    what: format!(
                        "the naive kernel's score matrix [{}, {}, {}, {}] f32",
                        dims.b, dims.hq, dims.sq, dims.sk
                    ),
                    size: score_bytes,
                    limit: profile.max_storage_binding,
                    kind: crate::Limit::StorageBinding,
                });
            }
            Ok(plan(variant, None, None, why.into(), Launch::Naive))
        }
        AttentionVariant::Flash => {
            profile.check_groups(OP, "batch × heads workgroups", rows)?;
            let (sched, reason) = match opts.flash_schedule {
                Some(s) => (s, "schedule forced by the caller".to_string()),
                None if !profile.texel_reads => (FlashSchedule::Tiles, "the GPU default".into()),
                None if dims.sq >= 64 => (
                    FlashSchedule::Rows,
                    "texel reads preferred, 64+ query rows".into(),
                ),
                None => (
                    FlashSchedule::KeySplit,
                    "barrier-free, fewer than 64 query rows".into(),
                ),
            };
            let chosen = opts.flash_schedule.is_none();
            let reason = format!("{why}; {reason}");
            // The key-split merge holds 64 partial outputs in workgroup memory.
            let merge_bytes = 64 * (8 + dv4 * 16);
            let sched = match sched {
                FlashSchedule::KeySplit if merge_bytes > profile.workgroup_memory => {
                    if !chosen {
                        return Err(unsupported(format!(
                            "the KeySplit schedule needs {merge_bytes} bytes of workgroup memory \
                             at d_v = {}; the adapter has {}",
                            dims.dv, profile.workgroup_memory
                        )));
                    }
                    FlashSchedule::Tiles
                }
                FlashSchedule::Rows => match KvTextures::new(profile, dims, paged) {
                    Some(kv) => {
                        let tm = rows_tm(d4, dv4);
                        let sg = profile.subgroups_of_8;
                        let best = spec(AttentionKernel::Rows { d4, dv4, tm, sg });
                        // The one-row form serves while the best compiles, on calls
                        // small enough that its slower run beats waiting for the
                        // compile (README: break-even near 2e10 units of work).
                        let work =
                            (dims.b * dims.hq * dims.sq * dims.sk * (dims.d + dims.dv)) as f64;
                        let quick = (work <= 2.0e10 && tm > 1)
                            .then(|| spec(AttentionKernel::Rows { d4, dv4, tm: 1, sg }));
                        return Ok(plan(
                            variant,
                            Some(FlashSchedule::Rows),
                            None,
                            reason,
                            Launch::Rows { best, quick, kv },
                        ));
                    }
                    None if !chosen => {
                        return Err(unsupported(format!(
                            "the Rows schedule copies K and V ({} and {} vec4s) into textures, \
                             which exceed this adapter's texture or dispatch limits (or, paged, \
                             have head dims that are not multiples of 4)",
                            dims.kv_outer * dims.hkv * dims.kv_rows * d4 as usize,
                            dims.kv_outer * dims.hkv * dims.kv_rows * dv4 as usize
                        )))
                    }
                    None if blocks_serves(&opts.extras()) => FlashSchedule::Blocks,
                    None => FlashSchedule::Tiles,
                },
                s => s,
            };
            let (kernel, row_block) = match sched {
                FlashSchedule::Blocks => {
                    if !blocks_serves(&opts.extras()) {
                        return Err(unsupported(
                            "the Blocks schedule takes no inference options (window, sink \
                             tokens, soft cap, ALiBi, sinks, boolean mask, paged K/V): Tiles, \
                             KeySplit and Rows do"
                                .into(),
                        ));
                    }
                    if BLOCKS_WORKGROUP_BYTES > profile.workgroup_memory {
                        return Err(unsupported(format!(
                            "the Blocks schedule needs {BLOCKS_WORKGROUP_BYTES} bytes of workgroup \
                             memory; the adapter has {}",
                            profile.workgroup_memory
                        )));
                    }
                    let hg = blocks_hg(dv4);
                    (AttentionKernel::Blocks { hg }, 16 * (8 / hg))
                }
                FlashSchedule::KeySplit => {
                    // Rows per workgroup and keys per chunk.
                    (
                        AttentionKernel::KeySplit {
                            d4,
                            dv4,
                            tm: 4,
                            kc: 2,
                        },
                        4,
                    )
                }
                _ => {
                    // Rows per workgroup: the K/V tile is shared by more rows
                    // when seq_q allows; keys per tile: as many as workgroup
                    // memory holds (≤ 64).
                    let bq = dims.sq.next_power_of_two().clamp(8, 64) as u32;
                    let per_key = (d4 + dv4) * 16;
                    let mem = profile.workgroup_memory;
                    let bkv = (mem / per_key).min(64) / SK * SK;
                    if bkv == 0 || bq > profile.max_invocations {
                        return Err(unsupported(format!(
                            "head dims d={}, d_v={} need {} bytes of workgroup memory per \
                             {SK}-key tile; the adapter has {mem}",
                            dims.d,
                            dims.dv,
                            per_key * SK
                        )));
                    }
                    (AttentionKernel::Tiles { d4, dv4, bq, bkv }, bq)
                }
            };
            Ok(plan(
                variant,
                Some(sched),
                None,
                reason,
                Launch::Flash {
                    spec: spec(kernel),
                    row_block,
                },
            ))
        }
        _ => {
            let (want, reason) = match opts.split_kv_reads {
                Some(r) => (r, "source forced by the caller"),
                None if profile.texel_reads => (KvReads::Texels, "texel reads preferred"),
                None => (KvReads::Buffers, "the GPU default"),
            };
            let kv =
                match want {
                    KvReads::Texels => match KvTextures::new(profile, dims, paged) {
                        Some(kv) => Some(kv),
                        None if opts.split_kv_reads.is_some() => return Err(unsupported(
                            "split-KV Texels: K and V exceed this adapter's texture or dispatch \
                             limits (or need the pack pass, which a paged cache does not take)"
                                .into(),
                        )),
                        None => None,
                    },
                    KvReads::Buffers => None,
                };
            // Enough splits to give every core work for one query, each long
            // enough that the merge pass stays small; whole 8-key steps.
            let chunk = dims.sk.div_ceil(256).max(32).next_multiple_of(8);
            let nsplit = dims.sk.div_ceil(chunk);
            let nrows = rows * dims.sq;
            let what = "batch × heads × seq_q workgroups of the split-KV kernel";
            profile.check_groups(OP, what, nrows)?;
            let reads = if kv.is_some() {
                KvReads::Texels
            } else {
                KvReads::Buffers
            };
            let mut split = spec(AttentionKernel::Split {
                d4,
                dv4,
                tex: kv.is_some(),
            });
            split.lse = false;
            Ok(plan(
                variant,
                None,
                Some(reads),
                format!("{why}; {reason}"),
                Launch::SplitKv {
                    split,
                    // The merge reads no inputs: only the dtype and LSE matter.
                    merge: AttentionSpec {
                        vec: false,
                        bias: false,
                        extras: Extras {
                            ext: opts.extras().ext,
                            ..Extras::default()
                        },
                        ..spec(AttentionKernel::Merge { d4, dv4 })
                    },
                    kv,
                    nsplit,
                    chunk,
                },
            ))
        }
    }
}

/// The uniform params of a call (texture addressing is set by
/// [`KvTextures::set_params`], split counts by the split-KV launcher).
pub(crate) fn params(dims: &Dims, opts: &AttentionOptions) -> AttentionParams {
    let l = opts.layout;
    let (bias_sb, bias_sh) = match opts.bias {
        Some(bias) => {
            let s = bias.shape();
            let sh = if s[1] == 1 { 0 } else { dims.sq * dims.sk };
            let sb = if s[0] == 1 {
                0
            } else {
                s[1] * dims.sq * dims.sk
            };
            (sb as u32, sh as u32)
        }
        None => (0, 0),
    };
    let (causal, off) = match opts.causal {
        Causal::None => (0u32, 0i64),
        Causal::TopLeft => (1, 0),
        // The offset is the sequence's key count minus seq_q, taken in the
        // kernel from kv_len[b] (seq_k without kv_len).
        Causal::BottomRight => (2, 0),
    };
    let strides = |heads, seq, dim| strides(l, heads, seq, dim);
    let [q_sb, q_sh, q_ss] = strides(dims.hq, dims.sq, dims.d);
    let [k_sb, k_sh, k_ss] = strides(dims.hkv, dims.kv_rows, dims.d);
    let [v_sb, v_sh, v_ss] = strides(dims.hkv, dims.kv_rows, dims.dv);
    let (mask_sb, mask_sh, mask_ss) = match opts.mask {
        Some(m) => {
            let s = m.shape();
            let wpr = dims.sk.div_ceil(32);
            let sh = if s[1] == 1 { 0 } else { dims.sq * wpr };
            let sb = if s[0] == 1 { 0 } else { s[1] * dims.sq * wpr };
            (sb as u32, sh as u32, wpr as u32)
        }
        None => (0, 0, 0),
    };
    let win = |w: Option<usize>| w.map_or(-1, |w| w as i32);
    let [o_sb, o_sh, o_ss] = strides(dims.hq, dims.sq, dims.dv);
    AttentionParams {
        b: dims.b as u32,
        hq: dims.hq as u32,
        hkv: dims.hkv as u32,
        sq: dims.sq as u32,
        sk: dims.sk as u32,
        d: dims.d as u32,
        dv: dims.dv as u32,
        group: (dims.hq / dims.hkv.max(1)) as u32,
        q_sb,
        q_sh,
        q_ss,
        k_sb,
        k_sh,
        k_ss,
        v_sb,
        v_sh,
        v_ss,
        o_sb,
        o_sh,
        o_ss,
        bias_sb,
        bias_sh,
        causal,
        causal_off: off.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        scale: opts.scale.unwrap_or(1.0 / (dims.d as f32).sqrt()),
        win_l: win(opts.window.left),
        win_r: win(opts.window.right),
        sink_tok: opts.sink_tokens as u32,
        softcap: opts.softcap.unwrap_or(0.0),
        max_pages: opts.paged.map_or(0, |pk| pk.max_pages as u32),
        page: dims.kv_rows as u32,
        page_shift: page_shift(dims.kv_rows),
        npages: dims.kv_outer as u32,
        mask_sb,
        mask_sh,
        mask_ss,
        ..Default::default()
    }
}

/// Element strides (batch, head, seq) of a `[batch, heads, seq, dim]`
/// tensor (or `[batch, seq, heads, dim]`) in `layout`.
pub(crate) fn strides(layout: Layout, heads: usize, seq: usize, dim: usize) -> [u32; 3] {
    let s = match layout {
        Layout::Bhsd => [heads * seq * dim, seq * dim, dim],
        Layout::Bshd => [seq * heads * dim, dim, heads * dim],
    };
    s.map(|x| x as u32)
}

/// log2 of a power-of-two page size, else 32 (the kernels divide then).
pub(crate) fn page_shift(page: usize) -> u32 {
    if page.is_power_of_two() {
        page.trailing_zeros()
    } else {
        32
    }
}

/// Every spec the planner can produce (for the WGSL validation test): every
/// kernel with each flag combination it is planned with, both dtypes, at the
/// head dims that bound each code shape (1, 2, 3 vec4s; the rows schedule's
/// tm steps; 64 vec4s = d 256), with d = d_v and d ≠ d_v.
#[cfg(test)]
pub(crate) fn reachable(profiles: &[DeviceProfile]) -> Vec<AttentionSpec> {
    let mut out = std::collections::HashSet::new();
    let heads: &[(usize, usize)] = &[
        (1, 1),
        (4, 4),
        (3, 5),
        (8, 12),
        (59, 37),
        (64, 64),
        (80, 80),
        (128, 128),
        (256, 256),
        (256, 1),
    ];
    for p in profiles {
        for &(d, dv) in heads {
            for (sq, sk) in [(1, 1024), (7, 63), (64, 64), (100, 10)] {
                let dims = Dims {
                    b: 1,
                    hq: 2,
                    hkv: 1,
                    sq,
                    sk,
                    d,
                    dv,
                    kv_outer: 1,
                    kv_rows: sk,
                };
                for dtype in [DType::F32, DType::F16] {
                    for lse in [false, true] {
                        for variant in AttentionVariant::ALL {
                            let scheds: Vec<Option<FlashSchedule>> = match variant {
                                AttentionVariant::Flash => std::iter::once(None)
                                    .chain(FlashSchedule::ALL.map(Some))
                                    .collect(),
                                _ => vec![None],
                            };
                            let reads: Vec<Option<KvReads>> = match variant {
                                AttentionVariant::SplitKv => {
                                    vec![None, Some(KvReads::Buffers), Some(KvReads::Texels)]
                                }
                                _ => vec![None],
                            };
                            for &flash_schedule in &scheds {
                                for &split_kv_reads in &reads {
                                    for (bias, extras) in extra_flags(d, dv) {
                                        let opts = AttentionOptions {
                                            variant: Some(variant),
                                            flash_schedule,
                                            split_kv_reads,
                                            paged: extras.paged.then_some(super::PagedKv {
                                                block_table: &[],
                                                max_pages: 0,
                                            }),
                                            ..Default::default()
                                        };
                                        let Ok(plan) = plan_for(p, &dims, &opts, dtype, lse) else {
                                            continue;
                                        };
                                        let mut specs = plan.specs(dtype);
                                        // The planner refuses Blocks with options (the
                                        // opts here carry only `paged`).
                                        specs.retain(|s| {
                                            !matches!(s.kernel, AttentionKernel::Blocks { .. })
                                                || blocks_serves(&extras)
                                        });
                                        for s in &mut specs {
                                            // The flags as the tensors and options would set them.
                                            match s.kernel {
                                                AttentionKernel::Permute
                                                | AttentionKernel::Pack { .. } => {}
                                                AttentionKernel::Merge { .. } => {
                                                    s.extras.ext = extras.ext
                                                }
                                                AttentionKernel::Softmax => {
                                                    s.bias = bias;
                                                    s.extras = Extras {
                                                        paged: false,
                                                        ..extras
                                                    };
                                                }
                                                _ => {
                                                    s.bias = bias;
                                                    s.extras = extras;
                                                }
                                            }
                                        }
                                        out.extend(specs);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for dtype in [DType::F32, DType::F16] {
        for paged in [false, true] {
            out.insert(AttentionSpec {
                kernel: AttentionKernel::Append,
                dtype,
                vec: false,
                bias: false,
                lse: false,
                extras: Extras {
                    paged,
                    ..Extras::default()
                },
            });
        }
    }
    out.into_iter().collect()
}

/// (bias, extras) combinations the WGSL validation covers at head dims
/// (d, d_v): with and without the bias, and with every option on at the head
/// dims that bound the code shapes of the options' code (each option's
/// `//#if` block stands alone, so all together validates each; the pack and
/// paged texel paths are planned at d = 3, 4).
#[cfg(test)]
fn extra_flags(d: usize, dv: usize) -> Vec<(bool, Extras)> {
    let all = Extras {
        ext: true,
        softcap: true,
        mask: true,
        paged: true,
    };
    let mut v = vec![(false, Extras::default()), (true, Extras::default())];
    if matches!((d, dv), (4, 4) | (3, 5) | (59, 37) | (256, 256)) {
        v.extend([(false, all), (true, all)]);
    }
    v
}

impl AttentionPlan {
    /// The attention kernels the plan runs (the naive variant's two
    /// matmuls are matmul specs, not listed).
    #[cfg(test)]
    pub(crate) fn specs(&self, dtype: DType) -> Vec<AttentionSpec> {
        match &self.launch {
            Launch::Empty => vec![],
            Launch::Naive => {
                let soft = AttentionSpec {
                    kernel: AttentionKernel::Softmax,
                    dtype,
                    vec: false,
                    bias: false,
                    lse: false,
                    extras: Extras::default(),
                };
                let mut v = vec![
                    soft.clone(),
                    AttentionSpec {
                        lse: true,
                        ..soft.clone()
                    },
                    AttentionSpec {
                        kernel: AttentionKernel::Permute,
                        ..soft
                    },
                ];
                v.dedup();
                v
            }
            Launch::Flash { spec, .. } => vec![spec.clone()],
            Launch::Rows { best, quick, kv } => {
                let mut v = vec![best.clone()];
                v.extend(quick.clone());
                v.extend(kv.pack_specs(best));
                v
            }
            Launch::SplitKv {
                split, merge, kv, ..
            } => {
                let mut v = vec![split.clone(), merge.clone()];
                if let Some(kv) = kv {
                    v.extend(kv.pack_specs(split));
                }
                v
            }
        }
    }
}
