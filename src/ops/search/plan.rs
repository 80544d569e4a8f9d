//! The search planner: how a batch of queries is scanned (slice length,
//! candidates kept, queries per workgroup, the scan kind), the kernel specs of
//! `topk.wgsl`, and the params they read.

use std::fmt;

use super::codec::Storage;
use crate::context::{Bind, DeviceProfile, Spec};
use crate::error::{Error, Result};
use crate::shader;
use crate::tensor::DType;

const SRC: &str = include_str!("topk.wgsl");
const OP: &str = "search";

crate::shader::params! {
    /// Mirrors `Params` in `topk.wgsl`.
    pub(crate) struct TopkParams {
        /// Corpus rows in the chunk (scan) or input list length (select).
        rows: u32,
        /// Row length in groups of 8 values.
        dv: u32,
        /// Queries in the dispatch.
        m: u32,
        /// First query of the dispatch.
        q0: u32,
        /// Id of the chunk's first row.
        id_base: u32,
        /// First candidate slot of the chunk.
        slice_base: u32,
        /// Candidate slots per query in the output list.
        slots: u32,
        /// log2 of the corpus texture's rows per layer.
        lsh: u32,
    }
}

/// Binding slots of `topk.wgsl` (0 is the params).
pub(crate) mod slot {
    /// Scan: the query block (uniform).
    pub const QUERIES: u32 = 1;
    /// Scan: the corpus chunk (texture).
    pub const CORPUS: u32 = 2;
    /// Scan: the candidate list written.
    pub const CANDIDATES: u32 = 3;
    /// Scan: per-row int8 scales.
    pub const ROW_SCALE: u32 = 4;
    /// Scan, L2: per-row squared norms.
    pub const ROW_NORM: u32 = 5;
    /// Scan, filtered: the allow bitmap over index rows.
    pub const ALLOW: u32 = 6;
    /// Scan, IVF: the work table.
    pub const WORK: u32 = 7;
    /// Scan, IVF: each storage row's order.
    pub const ORDER: u32 = 8;
    /// Select, ragged: each query's list length.
    pub const LIST_LENS: u32 = 3;
    /// Select: the list read.
    pub const LIST_IN: u32 = 1;
    /// Select: the list written.
    pub const LIST_OUT: u32 = 2;
    /// Finish: the final list read.
    pub const LIST_FIN: u32 = 1;
    /// Finish: each storage row's id (i64 as two u32).
    pub const ID_TABLE: u32 = 2;
    /// Finish: scores written.
    pub const OUT_SCORES: u32 = 3;
    /// Finish: ids written.
    pub const OUT_IDS: u32 = 4;
    /// Finish, L2: the queries' squared norms.
    pub const QNORM: u32 = 5;
    /// Pack: the f32 rows read.
    pub const PACK_SRC: u32 = 1;
    /// Pack: the stored rows written.
    pub const PACK_OUT: u32 = 2;
    /// Pack, int8: the rows' scales written.
    pub const PACK_SCALES: u32 = 3;
    /// Pack, L2: the stored rows' squared norms written.
    pub const PACK_NORMS: u32 = 4;
}

crate::shader::defines! {
    /// Defines of `topk.wgsl`.
    pub(crate) enum TopkDefine {
        KindScan = "KIND_SCAN",
        KindScanLists = "KIND_SCAN_LISTS",
        KindSelect = "KIND_SELECT",
        KindSelectSerial = "KIND_SELECT_SERIAL",
        KindFinish = "KIND_FINISH",
        KindPack = "KIND_PACK",
        StoreF32 = "STORE_F32",
        StoreF16 = "STORE_F16",
        StoreI8 = "STORE_I8",
        Sg = "SG",
        MetricL2 = "METRIC_L2",
        Filter = "FILTER",
        Ivf = "IVF",
        Ragged = "RAGGED",
    }
}

/// Most queries an inverted-file batch's uniform block holds (fewer for
/// long rows).
const IVF_MAX_BATCH: usize = 256;

/// Queries of `dp` (padded) values an inverted-file batch's uniform block
/// holds: the list scan reads any of the batch's queries.
pub(crate) fn ivf_batch(profile: &DeviceProfile, dp: usize) -> usize {
    (profile.max_uniform_binding as usize / (dp * 4)).clamp(1, IVF_MAX_BATCH)
}

/// Queries of an inverted-file batch one list-scan work item serves: 1
/// (ungrouped: an item is one query's probed runs in a chunk) or the batch's
/// mean queries per probed list `per_list` (grouped: a list's queries share
/// its reads). `forced` is `IvfSearchParams::group_queries`.
///
/// A grouped item holds its queries' candidate lists at once: on a software
/// adapter they spill registers, so grouping pays only where many queries
/// share a list (lavapipe, 256 queries: 1.2–2.3× faster at 8 and 64 queries
/// a list, within 3% at 16, a tie or slower below 4: docs/SEARCH.md); on
/// GPUs it shares the list's reads once two or more queries probe a list.
pub(crate) fn ivf_group(profile: &DeviceProfile, forced: Option<bool>, per_list: usize) -> usize {
    let least = if profile.device_type == wgpu::DeviceType::Cpu {
        SOFTWARE_GROUP_LEAST
    } else {
        2
    };
    match forced {
        Some(false) => 1,
        Some(true) => per_list.max(1),
        None if per_list >= least => per_list,
        None => 1,
    }
}

/// Queries a list a software adapter's batch needs before its list scan is
/// grouped ([`ivf_group`]).
const SOFTWARE_GROUP_LEAST: usize = 8;

impl TopkSpec {
    /// This scan spec as an inverted-file list scan with `queries` in the
    /// batch's uniform block, for lists of about `rows` rows (other specs
    /// are returned as they are).
    pub(crate) fn ivf(mut self, queries: usize, rows: usize) -> TopkSpec {
        if let TopkSpec::Scan { ivf, scan, .. } = &mut self {
            let rpl = match scan {
                Scan::Lists { rpl, .. } => *rpl as u32,
                Scan::Sort => 1,
            };
            // Rows per step a power of two, at most the list scan's.
            let rb = (rows.div_ceil(64).next_power_of_two() as u32)
                .clamp(1, LIST_RB)
                .min(rpl);
            *ivf = Some(IvfScan {
                queries: queries as u32,
                rb,
            });
        }
        self
    }
}

/// The inverted-file form of a scan spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IvfScan {
    /// Queries in the batch's uniform block.
    pub queries: u32,
    /// Rows an invocation scores at once (lists are short: 64·rb rows per
    /// step fit a typical list).
    pub rb: u32,
}

/// The binding of a tensor's bytes (exactly its length) at a kernel slot.
pub(crate) fn tensor_bind(t: &crate::Tensor) -> Bind<'_> {
    Bind::Buffer {
        buffer: t.buffer(),
        offset: t.offset(),
        size: t.bytes(),
    }
}

/// Largest k served by the register-list scan; larger k sorts in workgroup memory.
const LIST_MAX_K: usize = 16;
/// Rows an invocation of the register-list scan scores at once: one query load
/// then feeds this many rows (query loads were the scan's bottleneck).
const LIST_RB: u32 = 8;

/// How a scan workgroup keeps its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scan {
    /// Scores a slice of `sl` rows into workgroup memory and sorts them.
    Sort,
    /// Each invocation keeps its best `l` per query in registers over `rpl` rows.
    Lists {
        /// Entries per list (k).
        l: usize,
        /// Rows per invocation.
        rpl: usize,
    },
}

/// The define that selects `storage`'s row decoding (and, for `pack`, encoding).
fn store_define(storage: Storage) -> TopkDefine {
    match storage {
        Storage::F32 => TopkDefine::StoreF32,
        Storage::F16 => TopkDefine::StoreF16,
        Storage::Int8 => TopkDefine::StoreI8,
    }
}

/// A topk kernel specialisation: the pipeline-cache key and the only input to
/// its WGSL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum TopkSpec {
    /// Fused scoring and partial top-k of a query block over a corpus slice.
    Scan {
        storage: Storage,
        scan: Scan,
        /// Queries per workgroup.
        qb: u32,
        sl: u32,
        kp: u32,
        /// Row length in groups of 8 values (sizes the query block).
        dv: u32,
        sg: bool,
        /// Rank by 2·q·x − ‖x‖² (squared L2, nearest first).
        l2: bool,
        /// Score only rows set in an allow bitmap.
        filter: bool,
        /// An inverted-file list scan over a work table.
        ivf: Option<IvfScan>,
    },
    /// Reduces candidate lists `sl` entries at a time to `kp`; `ragged`:
    /// each query's list has its own length.
    Select { sl: u32, kp: u32, ragged: bool },
    /// Reduces each query's whole list to `kp` in one invocation.
    SelectSerial { kp: u32, ragged: bool },
    /// Writes the final lists as device scores and ids (L2: distances).
    Finish { l2: bool },
    /// Encodes device f32 rows into the index's storage (and L2 norms).
    Pack { storage: Storage, l2: bool },
}

impl Spec for TopkSpec {
    fn family(&self) -> &'static str {
        "topk"
    }
    fn entry(&self) -> &'static str {
        match self {
            TopkSpec::Scan {
                scan: Scan::Sort, ..
            } => "scan",
            TopkSpec::Scan { .. } => "scan_lists",
            TopkSpec::Select { .. } => "select_topk",
            TopkSpec::SelectSerial { .. } => "select_serial",
            TopkSpec::Finish { .. } => "finish",
            TopkSpec::Pack { .. } => "pack",
        }
    }
    fn source(&self) -> Result<String> {
        use TopkDefine as D;
        match *self {
            TopkSpec::Scan {
                storage,
                scan,
                qb,
                sl,
                kp,
                dv,
                sg,
                l2,
                filter,
                ivf,
            } => {
                let (kind, l, rpl) = match scan {
                    Scan::Sort => (D::KindScan, 1, 1),
                    Scan::Lists { l, rpl } => (D::KindScanLists, l as u32, rpl as u32),
                };
                let mut defines = vec![kind, store_define(storage)];
                let flags = [
                    (sg, D::Sg),
                    (l2, D::MetricL2),
                    (filter, D::Filter),
                    (ivf.is_some(), D::Ivf),
                ];
                for (on, d) in flags {
                    if on {
                        defines.push(d);
                    }
                }
                let consts = [
                    ("QB", qb),
                    ("SL", sl),
                    ("KP", kp),
                    ("L", l),
                    ("LM1", l - 1),
                    ("RPL", rpl),
                    ("RB", ivf.map_or(LIST_RB, |v| v.rb)),
                    ("QN", ivf.map_or(qb, |v| v.queries) * 2 * dv),
                ];
                shader::render(self, SRC, DType::F32, false, &defines, &consts)
            }
            TopkSpec::Select { sl, kp, ragged } => {
                let consts = [("QB", 1), ("SL", sl), ("KP", kp)];
                let defines: &[D] = if ragged {
                    &[D::KindSelect, D::Ragged]
                } else {
                    &[D::KindSelect]
                };
                shader::render(self, SRC, DType::F32, false, defines, &consts)
            }
            TopkSpec::SelectSerial { kp, ragged } => {
                let consts = [("QB", 1), ("SL", 64), ("KP", kp), ("KPM1", kp - 1)];
                let defines: &[D] = if ragged {
                    &[D::KindSelectSerial, D::Ragged]
                } else {
                    &[D::KindSelectSerial]
                };
                shader::render(self, SRC, DType::F32, false, defines, &consts)
            }
            TopkSpec::Pack { storage, l2 } => {
                let consts = [("QB", 1), ("SL", 64), ("KP", 1)];
                let mut defines = vec![D::KindPack, store_define(storage)];
                if l2 {
                    defines.push(D::MetricL2);
                }
                shader::render(self, SRC, DType::F32, false, &defines, &consts)
            }
            TopkSpec::Finish { l2 } => {
                let consts = [("QB", 1), ("SL", 64), ("KP", 1)];
                let defines: &[D] = if l2 {
                    &[D::KindFinish, D::MetricL2]
                } else {
                    &[D::KindFinish]
                };
                shader::render(self, SRC, DType::F32, false, defines, &consts)
            }
        }
    }
}

/// How a search runs: slice length, kept candidates, query block and scan
/// kind. From [`FlatIndex::plan`](crate::ops::search::FlatIndex::plan).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SearchPlan {
    /// List entries a select workgroup sorts (and rows a `Sort` scan slice
    /// holds): a power of two ≥ 2·kp.
    pub sl: usize,
    /// Candidates kept per select chunk: k rounded up to a power of two.
    pub kp: usize,
    /// Queries per scan workgroup.
    pub qb: u32,
    /// The scan kernel.
    pub scan: Scan,
    /// Subgroups of at least 8 lanes: the list scan merges lists by groups of 8.
    pub sg: bool,
    /// Longest candidate list (per query) that one invocation reduces to
    /// `kp` by itself (no barriers) instead of the sorting select; 0: never.
    pub serial_select: usize,
    /// Why this scan.
    pub reason: &'static str,
}

impl fmt::Display for SearchPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "search: {:?} scan ({}), {} queries per workgroup, select {} of {}{}{}",
            self.scan,
            self.reason,
            self.qb,
            self.kp,
            self.sl,
            if self.sg { ", subgroup merge" } else { "" },
            match self.serial_select {
                0 => String::new(),
                usize::MAX => ", serial select".into(),
                n => format!(", serial select up to {n}"),
            }
        )
    }
}

impl SearchPlan {
    /// Plan for `m` queries of `dp` (padded) values, top `k`.
    pub(crate) fn new(
        profile: &DeviceProfile,
        k: usize,
        m: usize,
        dp: usize,
    ) -> Result<SearchPlan> {
        // Query blocks are uniform-buffer windows.
        let ubo = profile.max_uniform_binding as usize;
        let qmax = ubo / (dp * 4);
        if qmax == 0 {
            return Err(Error::Unsupported {
                op: OP,
                detail: format!(
                    "a query of {dp} values takes {} bytes; the adapter's uniform bindings hold {ubo}",
                    dp * 4
                ),
            });
        }
        let kp = k.next_power_of_two();
        let sl = (2 * kp).max(256);
        let mem = profile.workgroup_memory as usize;
        let per_query = sl * 8;
        if per_query > mem {
            return Err(Error::Unsupported {
                op: OP,
                detail: format!(
                    "k = {k} needs {per_query} bytes of workgroup memory; the adapter has {mem}"
                ),
            });
        }
        if k <= LIST_MAX_K {
            // Many rows per invocation amortise the final lists; a software
            // adapter has few cores to fill, a GPU wants more workgroups.
            let rpl = if profile.texel_reads { 128 } else { 16 };
            let qb = m.next_power_of_two().min(16).min(qmax) as u32;
            // A software adapter pays dozens of barriers per sorting select
            // workgroup (a switch between SIMD slices each) — more than one
            // invocation reading thousands of candidates; a GPU sorts long
            // lists faster in parallel.
            let serial_select = if profile.texel_reads { usize::MAX } else { 512 };
            return Ok(SearchPlan {
                sl,
                kp,
                qb,
                scan: Scan::Lists { l: k, rpl },
                sg: profile.subgroups_of_8,
                serial_select,
                reason: "k ≤ 16: candidate lists in registers",
            });
        }
        // More queries per workgroup read the corpus fewer times; bounded by
        // workgroup memory and by the queries there are.
        let qb = (mem / per_query)
            .min(8)
            .min(m.next_power_of_two())
            .min(qmax)
            .max(1) as u32;
        Ok(SearchPlan {
            sl,
            kp,
            qb,
            scan: Scan::Sort,
            sg: false,
            serial_select: 0,
            reason: "k > 16: slices sorted in workgroup memory",
        })
    }

    /// Corpus rows one scan workgroup covers.
    pub(crate) fn slice_rows(&self) -> usize {
        match self.scan {
            Scan::Sort => self.sl,
            Scan::Lists { rpl, .. } => 64 * rpl,
        }
    }

    /// Candidates one scan workgroup writes per query.
    pub(crate) fn slice_slots(&self) -> usize {
        match self.scan {
            Scan::Sort => self.kp,
            // With subgroups, each 8 lanes' lists are merged into one.
            Scan::Lists { l, .. } if self.sg => 8 * l,
            Scan::Lists { l, .. } => 64 * l,
        }
    }

    /// The scan kernel's spec for `storage`, rows of `dv` groups of 8, the
    /// L2 ranking and an allow filter.
    pub(crate) fn scan_spec(
        &self,
        storage: Storage,
        dv: usize,
        l2: bool,
        filter: bool,
    ) -> TopkSpec {
        TopkSpec::Scan {
            storage,
            scan: self.scan,
            qb: self.qb,
            sl: self.sl as u32,
            kp: self.kp as u32,
            dv: dv as u32,
            sg: self.sg,
            l2,
            filter,
            ivf: None,
        }
    }

    /// The select kernel's spec (`ragged`: per-query list lengths).
    pub(crate) fn select_spec(&self, ragged: bool) -> TopkSpec {
        TopkSpec::Select {
            sl: self.sl as u32,
            kp: self.kp as u32,
            ragged,
        }
    }
}

/// Every spec the planner can produce on the device profiles given (for the
/// WGSL validation test): each k class, query block, storage and scan, for
/// rows of 8 and of 768 values.
#[cfg(test)]
pub(crate) fn reachable(profiles: &[DeviceProfile]) -> Vec<TopkSpec> {
    let mut v = std::collections::HashSet::new();
    for p in profiles {
        for k in (1..=16).chain([17, 32, 64, 100, 256, 512, 1024]) {
            for m in [1, 2, 3, 5, 9, 16, 100] {
                for dp in [8, 768] {
                    let Ok(plan) = SearchPlan::new(p, k, m, dp) else {
                        continue;
                    };
                    // The L2 and filter code is the same at every k and
                    // query block: their combinations are validated on the
                    // scan kinds' edge classes only (the full grid costs
                    // minutes of naga translation).
                    let flags: &[(bool, bool)] = if [1, 17].contains(&k) && dp == 8 {
                        &[(false, false), (true, false), (false, true), (true, true)]
                    } else {
                        &[(false, false)]
                    };
                    let cap = ivf_batch(p, dp);
                    for storage in [Storage::F32, Storage::F16, Storage::Int8] {
                        for &(l2, filter) in flags {
                            let spec = plan.scan_spec(storage, dp / 8, l2, filter);
                            // The list scan's code differs from the flat
                            // scan's in the work items only: its rows per
                            // step (1 to 8) on the k classes' edges.
                            if [1, 10, 17].contains(&k) {
                                for rows in [1, 200, 10_000] {
                                    v.insert(spec.clone().ivf(cap, rows));
                                }
                            }
                            v.insert(spec);
                        }
                    }
                    v.insert(plan.select_spec(false));
                    v.insert(plan.select_spec(true));
                    if plan.serial_select > 0 {
                        for ragged in [false, true] {
                            v.insert(TopkSpec::SelectSerial {
                                kp: plan.kp as u32,
                                ragged,
                            });
                        }
                    }
                }
            }
        }
    }
    for l2 in [false, true] {
        v.insert(TopkSpec::Finish { l2 });
        for storage in [Storage::F32, Storage::F16, Storage::Int8] {
            v.insert(TopkSpec::Pack { storage, l2 });
        }
    }
    v.into_iter().collect()
}
