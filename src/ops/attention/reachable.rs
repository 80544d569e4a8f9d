//! Every attention spec the planner can produce, for the WGSL validation
//! test (`src/validate.rs`): what the planner plans over a grid of shapes,
//! dtypes and forced choices, with the flags the options set.

use std::collections::HashSet;

use super::backward_plan::plan_backward;
use super::check::Dims;
use super::options::{
    AttentionOptions, AttentionVariant, BackwardVariant, FlashSchedule, KvReads, PagedKv,
};
use super::plan::{blocks_serves, plan_for, AttentionPlan, Launch};
use super::spec::{AttentionKernel, AttentionSpec, Extras};
use crate::context::DeviceProfile;
use crate::tensor::DType;

/// (d, d_v) pairs at the head dims that bound each code shape (1, 2, 3
/// vec4s; the rows schedule's tm steps; 64 vec4s = d 256), with d = d_v and
/// d ≠ d_v.
const HEADS: [(usize, usize); 10] = [
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

/// Every spec the planner can produce on `profiles`: every kernel with
/// each flag combination it is planned with, both dtypes, at the head dims
/// of [`HEADS`], and the KV-cache append kernels.
pub(crate) fn reachable(profiles: &[DeviceProfile]) -> Vec<AttentionSpec> {
    let mut out = HashSet::new();
    for p in profiles {
        for dims in grid() {
            for lse in [false, true] {
                for opts in forced_choices() {
                    for (bias, extras) in extra_flags(dims.d, dims.dv) {
                        let opts = AttentionOptions {
                            paged: extras.paged.then_some(PagedKv {
                                block_table: &[],
                                max_pages: 0,
                            }),
                            ..opts
                        };
                        if let Ok(plan) = plan_for(p, &dims, &opts, lse) {
                            out.extend(flagged(plan.specs(dims.dtype), bias, extras));
                        }
                    }
                }
            }
        }
    }
    out.extend(backward(profiles));
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

/// The backward's specs: every variant and source planned over the grid,
/// then flagged with the bias, the bias gradient and the options as a call
/// with them would (the planner reads the bias only for its shape).
fn backward(profiles: &[DeviceProfile]) -> Vec<AttentionSpec> {
    let mut out = Vec::new();
    for p in profiles {
        for dims in grid() {
            for variant in BackwardVariant::ALL {
                for reads in [None, Some(KvReads::Buffers), Some(KvReads::Texels)] {
                    let opts = AttentionOptions {
                        backward_variant: Some(variant),
                        backward_reads: reads,
                        ..Default::default()
                    };
                    let Ok(plan) = plan_backward(p, &dims, &opts) else {
                        continue;
                    };
                    for spec in plan.specs() {
                        for (bias, extras) in extra_flags(dims.d, dims.dv) {
                            for dbias in [false, bias] {
                                out.extend(backward_flagged(&spec, bias, dbias, extras));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// A planned backward spec as a call with `bias` (and its gradient when
/// `dbias`) and `extras` would have it, plus the bias sum when `dbias`.
fn backward_flagged(s: &AttentionSpec, bias: bool, dbias: bool, x: Extras) -> Vec<AttentionSpec> {
    let mut s = s.clone();
    let x = Extras { paged: false, ..x };
    match &mut s.kernel {
        AttentionKernel::BwdQ { dbias: db, .. } => {
            (*db, s.bias, s.extras) = (dbias, bias, x);
        }
        AttentionKernel::BwdKv { .. } => (s.bias, s.extras) = (bias, x),
        AttentionKernel::BwdDs { dbias: db } => {
            *db = dbias;
            s.extras = Extras { mask: false, ..x };
        }
        _ => {}
    }
    let mut v = vec![s.clone()];
    if dbias {
        v.push(AttentionSpec {
            kernel: AttentionKernel::BwdBias,
            dtype: DType::F32,
            vec: false,
            bias: false,
            lse: false,
            extras: Extras::default(),
        });
    }
    v
}

/// The dims planned: [`HEADS`] × a few (seq_q, seq_k) that reach every
/// variant's choices × both dtypes.
fn grid() -> Vec<Dims> {
    let mut v = Vec::new();
    for (d, dv) in HEADS {
        for (sq, sk) in [(1, 1024), (7, 63), (64, 64), (100, 10)] {
            for dtype in [DType::F32, DType::F16] {
                v.push(Dims {
                    b: 1,
                    hq: 2,
                    hkv: 1,
                    sq,
                    sk,
                    d,
                    dv,
                    kv_outer: 1,
                    kv_rows: sk,
                    dtype,
                });
            }
        }
    }
    v
}

/// Every variant, each flash schedule and split-KV source forced or not.
fn forced_choices() -> Vec<AttentionOptions<'static>> {
    let mut v = Vec::new();
    for variant in AttentionVariant::ALL {
        let scheds: Vec<Option<FlashSchedule>> = match variant {
            AttentionVariant::Flash => std::iter::once(None)
                .chain(FlashSchedule::ALL.map(Some))
                .collect(),
            _ => vec![None],
        };
        let reads: Vec<Option<KvReads>> = match variant {
            AttentionVariant::SplitKv => KvReads::ALL.map(Some).into_iter().chain([None]).collect(),
            _ => vec![None],
        };
        for &flash_schedule in &scheds {
            for &split_kv_reads in &reads {
                v.push(AttentionOptions {
                    variant: Some(variant),
                    flash_schedule,
                    split_kv_reads,
                    ..Default::default()
                });
            }
        }
    }
    v
}

/// `specs` with the flags the tensors and options would set (the options
/// planned carry only `paged`): `bias` and `extras` on the kernels that
/// read them. The planner refuses Blocks with options.
fn flagged(specs: Vec<AttentionSpec>, bias: bool, extras: Extras) -> Vec<AttentionSpec> {
    let mut specs = specs;
    specs.retain(|s| !matches!(s.kernel, AttentionKernel::Blocks { .. }) || blocks_serves(&extras));
    for s in &mut specs {
        match s.kernel {
            AttentionKernel::Permute | AttentionKernel::Pack { .. } => {}
            AttentionKernel::Merge { .. } => s.extras.ext = extras.ext,
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
    specs
}

/// (bias, extras) combinations the WGSL validation covers at head dims
/// (d, d_v): with and without the bias, and with every option on at the head
/// dims that bound the code shapes of the options' code (each option's
/// `//#if` block stands alone, so all together validates each; the pack and
/// paged texel paths are planned at d = 3, 4).
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
                vec![
                    soft.clone(),
                    AttentionSpec {
                        lse: true,
                        ..soft.clone()
                    },
                    AttentionSpec {
                        kernel: AttentionKernel::Permute,
                        ..soft
                    },
                ]
            }
            Launch::Flash(l) => vec![l.spec.clone()],
            Launch::Rows(l) => {
                let mut v = vec![l.best.clone()];
                v.extend(l.quick.clone());
                v.extend(l.kv.pack_specs(&l.best));
                v
            }
            Launch::SplitKv(l) => {
                let mut v = vec![l.split.clone(), l.merge.clone()];
                if let Some(kv) = &l.kv {
                    v.extend(kv.pack_specs(&l.split));
                }
                v
            }
        }
    }
}
