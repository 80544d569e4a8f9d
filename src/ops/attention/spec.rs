//! The attention kernel specs (the pipeline-cache keys and the only input to
//! the WGSL: `common.wgsl`, `kv_texels.wgsl` and each kernel's own file), the
//! params they read and their binding slots.

use crate::context::Spec;
use crate::error::Result;
use crate::shader;
use crate::tensor::DType;

/// What every attention kernel shares (params, bindings, loads, masks).
const COMMON: &str = include_str!("common.wgsl");
/// The pack pass and the K/V texel loads.
const KV_TEXELS: &str = include_str!("kv_texels.wgsl");
const FLASH: &str = include_str!("flash.wgsl");
const SPLIT_KV: &str = include_str!("split_kv.wgsl");
const NAIVE: &str = include_str!("naive.wgsl");
const KV_CACHE: &str = include_str!("kv_cache.wgsl");
const BACKWARD: &str = include_str!("backward.wgsl");
/// Keys per online-softmax chunk inside a staged tile (named registers).
pub(super) const SK: u32 = 8;

crate::shader::params! {
    /// Mirrors `Params` in `common.wgsl`. Strides are in elements
    /// (batch, head, seq); texture strides in texels.
    pub(crate) struct AttentionParams {
        b: u32, hq: u32, hkv: u32, sq: u32,
        sk: u32, d: u32, dv: u32, group: u32,
        q_sb: u32, q_sh: u32, q_ss: u32, _p0: u32,
        k_sb: u32, k_sh: u32, k_ss: u32, _p1: u32,
        v_sb: u32, v_sh: u32, v_ss: u32, _p2: u32,
        o_sb: u32, o_sh: u32, o_ss: u32, _p3: u32,
        /// Bias strides (0 where broadcast).
        bias_sb: u32, bias_sh: u32,
        /// 0 none, 1 top-left (key j visible to query i iff j ≤ i + causal_off),
        /// 2 bottom-right per sequence (off = min(seq_k, kv_len[b]) − seq_q).
        causal: u32, causal_off: i32,
        scale: f32,
        /// Split-KV: number of key splits and keys per split.
        nsplit: u32, chunk: u32,
        /// log2 of the lines per layer of the K/V textures.
        lsh: u32,
        kt_sb: u32, kt_sh: u32, kt_ss: u32,
        /// log2 of the texels per line of the K/V textures.
        wsh: u32,
        vt_sb: u32, vt_sh: u32, vt_ss: u32, _p4: u32,
        /// Window left and right (−1: unbounded).
        win_l: i32, win_r: i32,
        /// Sink tokens: the first keys, visible whatever the left window.
        sink_tok: u32,
        /// Soft cap (0: off).
        softcap: f32,
        /// 1: ALiBi slopes, 2: learned sinks (in the aux table at `head_off`).
        flags: u32,
        /// aux offsets (u32 words) of the block table and the per-head table.
        tab_off: u32, head_off: u32,
        /// Block table row length.
        max_pages: u32,
        /// Tokens per page, pages in the pool.
        page: u32, npages: u32,
        /// Boolean mask word strides (batch, head, row; 0 where broadcast).
        mask_sb: u32, mask_sh: u32, mask_ss: u32,
        /// log2 of a power-of-two page size, else 32.
        page_shift: u32,
        _p6: u32, _p7: u32,
    }
}

/// Binding slots of the attention WGSL (0 is the params).
pub(crate) mod slot {
    pub const Q: u32 = 1;
    pub const K: u32 = 2;
    pub const V: u32 = 3;
    /// The output (split-KV: its partial outputs).
    pub const OUT: u32 = 4;
    /// kv_len, the block table and the per-head slopes and sinks.
    pub const AUX: u32 = 5;
    pub const BIAS: u32 = 6;
    /// Per-row statistics: the LSE, or split-KV's partial (max, sum).
    pub const STATS: u32 = 7;
    /// The pack pass's output.
    pub const PACKED: u32 = 8;
    pub const K_TEXELS: u32 = 9;
    pub const V_TEXELS: u32 = 10;
    /// The bit-packed boolean mask.
    pub const MASK: u32 = 11;
    /// Backward: the output's gradient dO.
    pub const D_OUT: u32 = 12;
    /// Backward: the second gradient a kernel writes (dv beside dk at `OUT`).
    pub const GRAD1: u32 = 13;
    /// Backward: dS of every score, the bias gradient before its sum over
    /// broadcast dimensions.
    pub const DBIAS: u32 = 14;
    /// Merge: split-KV's partial outputs and statistics; softmax: scores in
    /// and probabilities out; permute: source and destination.
    pub const IN1: u32 = 1;
    pub const IN2: u32 = 2;
}

crate::shader::defines! {
    /// Defines of the attention WGSL.
    pub(crate) enum AttentionDefine {
        HasInputs = "HAS_INPUTS",
        Masks = "MASKS",
        Vec = "VEC",
        Bias = "BIAS",
        Ext = "EXT",
        Softcap = "SOFTCAP",
        BoolMask = "BOOL_MASK",
        Paged = "PAGED",
        OutF16 = "OUT_F16",
        OutDirect = "OUT_DIRECT",
        Lse = "LSE",
        KvTex = "KV_TEX",
        Sg = "SG",
        PackK = "PACK_K",
        KindFlash = "KIND_FLASH",
        KindKeySplit = "KIND_KEYSPLIT",
        KindBlocks = "KIND_BLOCKS",
        KindRows = "KIND_ROWS",
        KindPack = "KIND_PACK",
        KindSplit = "KIND_SPLIT",
        KindMerge = "KIND_MERGE",
        KindSoftmax = "KIND_SOFTMAX",
        KindPermute = "KIND_PERMUTE",
        KindAppend = "KIND_APPEND",
        KindBwdPrep = "KIND_BWD_PREP",
        KindBwdQ = "KIND_BWD_Q",
        KindBwdKv = "KIND_BWD_KV",
        KindBwdBias = "KIND_BWD_BIAS",
        KindBwdDs = "KIND_BWD_DS",
        BwdTex = "BWD_TEX",
        Dbias = "DBIAS",
    }
}

/// An attention kernel with its compile-time constants (`d4`, `dv4`: vec4s
/// per row of Q/K and of V/O).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AttentionKernel {
    /// Flash, tiles schedule: `bq` rows per workgroup, `bkv` keys per tile.
    Tiles {
        d4: u32,
        dv4: u32,
        bq: u32,
        bkv: u32,
    },
    /// Flash, key-split schedule: `tm` rows per workgroup, `kc` keys a chunk.
    KeySplit { d4: u32, dv4: u32, tm: u32, kc: u32 },
    /// Flash, blocks schedule: groups of `hg` of `wg` invocations.
    Blocks { hg: u32 },
    /// Flash, rows schedule: `tm` rows per invocation; `sg`: subgroup sharing.
    Rows {
        d4: u32,
        dv4: u32,
        tm: u32,
        sg: bool,
    },
    /// K (`k`) or V rows packed into f32 vec4 rows of `w4` for the textures.
    Pack { w4: u32, k: bool },
    /// Split-KV partials; `tex`: K/V read as texels.
    Split { d4: u32, dv4: u32, tex: bool },
    /// Split-KV merge.
    Merge { d4: u32, dv4: u32 },
    /// The naive kernel's masked softmax.
    Softmax,
    /// `[B, X, Y, D] -> [B, Y, X, D]`.
    Permute,
    /// New K or V rows into a KV cache ([`kv_append`](super::kv_append)).
    Append,
    /// Backward prepass: D = rowsum(dO ∘ O) beside each row's LSE.
    BwdPrep,
    /// Backward dq: `tm` query rows per invocation, `kb` keys a step;
    /// `tex`: K/V read as texels (`sg`: shared by subgroup broadcast);
    /// `dbias`: dS written for the bias gradient.
    BwdQ {
        d4: u32,
        dv4: u32,
        tm: u32,
        kb: u32,
        tex: bool,
        sg: bool,
        dbias: bool,
    },
    /// Backward dk and dv: `tm` keys per invocation, `kb` query rows a step;
    /// `tex`: Q and dO read as texels (`sg`: shared by subgroup broadcast).
    BwdKv {
        d4: u32,
        dv4: u32,
        tm: u32,
        kb: u32,
        tex: bool,
        sg: bool,
    },
    /// The bias gradient summed over the bias's broadcast dimensions.
    BwdBias,
    /// The naive backward's dS from S, P and dP; `dbias`: also as f32.
    BwdDs { dbias: bool },
}

/// One attention kernel specialisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AttentionSpec {
    pub kernel: AttentionKernel,
    pub dtype: DType,
    /// d and d_v multiples of 4: Q, K, V read as vec4.
    pub vec: bool,
    pub bias: bool,
    pub lse: bool,
    /// The inference options the kernel is built with.
    pub extras: Extras,
}

/// Options that change a kernel's code, each compiled in only when a call
/// uses it (the plain kernels stay as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Extras {
    /// Window, sink tokens, soft cap, ALiBi, learned sinks (run-time values).
    pub ext: bool,
    /// The soft cap (with `ext`).
    pub softcap: bool,
    /// A bit-packed boolean mask.
    pub mask: bool,
    /// K/V read through a block table.
    pub paged: bool,
}

impl Spec for AttentionSpec {
    fn family(&self) -> &'static str {
        "attention"
    }
    fn entry(&self) -> &'static str {
        match self.kernel {
            AttentionKernel::Tiles { .. } => "flash",
            AttentionKernel::KeySplit { .. } => "flash_keysplit",
            AttentionKernel::Blocks { .. } => "flash_blocks",
            AttentionKernel::Rows { .. } => "flash_rows",
            AttentionKernel::Pack { .. } => "pack",
            AttentionKernel::Split { .. } => "split_kv",
            AttentionKernel::Merge { .. } => "merge",
            AttentionKernel::Softmax => "softmax",
            AttentionKernel::Permute => "permute",
            AttentionKernel::Append => "append",
            AttentionKernel::BwdPrep => "bwd_prep",
            AttentionKernel::BwdQ { .. } => "bwd_q",
            AttentionKernel::BwdKv { .. } => "bwd_kv",
            AttentionKernel::BwdBias => "bwd_bias",
            AttentionKernel::BwdDs { .. } => "bwd_ds",
        }
    }
    fn source(&self) -> Result<String> {
        let mut d = self.input_defines();
        let consts = match self.kernel {
            AttentionKernel::Tiles { .. }
            | AttentionKernel::KeySplit { .. }
            | AttentionKernel::Blocks { .. }
            | AttentionKernel::Rows { .. } => self.flash_defines(&mut d),
            AttentionKernel::BwdPrep
            | AttentionKernel::BwdQ { .. }
            | AttentionKernel::BwdKv { .. }
            | AttentionKernel::BwdBias
            | AttentionKernel::BwdDs { .. } => self.backward_defines(&mut d),
            _ => self.other_defines(&mut d),
        };
        // The kernel's own file after the shared part (WGSL declarations may
        // come in any order).
        let own = match self.kernel {
            AttentionKernel::Tiles { .. }
            | AttentionKernel::KeySplit { .. }
            | AttentionKernel::Blocks { .. }
            | AttentionKernel::Rows { .. } => FLASH,
            AttentionKernel::Pack { .. } => "",
            AttentionKernel::Split { .. } | AttentionKernel::Merge { .. } => SPLIT_KV,
            AttentionKernel::Softmax | AttentionKernel::Permute => NAIVE,
            AttentionKernel::Append => KV_CACHE,
            AttentionKernel::BwdPrep
            | AttentionKernel::BwdQ { .. }
            | AttentionKernel::BwdKv { .. }
            | AttentionKernel::BwdBias
            | AttentionKernel::BwdDs { .. } => BACKWARD,
        };
        let src = [COMMON, KV_TEXELS, own].concat();
        shader::render(self, &src, self.dtype, false, &d, &consts)
    }
}

impl AttentionSpec {
    /// The defines of the kernels that read q, k, v: inputs, masks, the
    /// element forms and the options compiled in.
    fn input_defines(&self) -> Vec<AttentionDefine> {
        use AttentionDefine as D;
        let mut d = vec![D::HasInputs, D::Masks];
        let x = self.extras;
        for (on, def) in [
            (self.vec, D::Vec),
            (self.bias, D::Bias),
            (self.dtype == DType::F16, D::OutF16),
            (x.ext, D::Ext),
            (x.softcap, D::Softcap),
            (x.mask, D::BoolMask),
            (x.paged, D::Paged),
        ] {
            if on {
                d.push(def);
            }
        }
        d
    }

    /// Adds a kernel's own defines to `d` (after [`Self::input_defines`])
    /// for the kernels that write the output directly; with the LSE if asked.
    fn direct(&self, d: &mut Vec<AttentionDefine>, kind: AttentionDefine) {
        d.extend([kind, AttentionDefine::OutDirect]);
        if self.lse {
            d.push(AttentionDefine::Lse);
        }
    }

    /// The flash kernels' defines (added to `d`) and constants.
    fn flash_defines(&self, d: &mut Vec<AttentionDefine>) -> Vec<(&'static str, u32)> {
        use AttentionDefine as D;
        match self.kernel {
            AttentionKernel::Tiles { d4, dv4, bq, bkv } => {
                self.direct(d, D::KindFlash);
                vec![
                    ("D4", d4),
                    ("DV4", dv4),
                    ("BQ", bq),
                    ("BKV", bkv),
                    ("SK", SK),
                ]
            }
            AttentionKernel::KeySplit { d4, dv4, tm, kc } => {
                self.direct(d, D::KindKeySplit);
                vec![("D4", d4), ("DV4", dv4), ("TM", tm), ("KC", kc)]
            }
            AttentionKernel::Blocks { hg } => {
                self.direct(d, D::KindBlocks);
                // 8 invocations in groups of hg, 16 rows a group, 16 keys per
                // invocation per tile, up to NV output vec4s per row each.
                vec![
                    ("WG", 8),
                    ("HG", hg),
                    ("TM", 16),
                    ("KB", 16),
                    ("NV", 8),
                    ("TM4", 4),
                ]
            }
            AttentionKernel::Rows { d4, dv4, tm, sg } => {
                self.direct(d, D::KindRows);
                d.push(D::KvTex);
                if sg {
                    d.push(D::Sg);
                }
                vec![
                    ("WG", 64),
                    ("TM", tm),
                    ("D4", d4),
                    ("DV4", dv4),
                    ("KB", 8),
                    ("KF", d4.div_ceil(8)),
                    ("VF", dv4.div_ceil(8)),
                ]
            }
            _ => vec![],
        }
    }

    /// The backward kernels' defines (added to `d`, or replacing the input
    /// defines for the kernels that read no q, k, v) and constants.
    fn backward_defines(&self, d: &mut Vec<AttentionDefine>) -> Vec<(&'static str, u32)> {
        use AttentionDefine as D;
        let x = self.extras;
        let (kind, d4, dv4, tm, kb, tex, sg) = match self.kernel {
            AttentionKernel::BwdQ {
                d4,
                dv4,
                tm,
                kb,
                tex,
                sg,
                dbias,
            } => {
                if dbias {
                    d.push(D::Dbias);
                }
                (D::KindBwdQ, d4, dv4, tm, kb, tex, sg)
            }
            AttentionKernel::BwdKv {
                d4,
                dv4,
                tm,
                kb,
                tex,
                sg,
            } => (D::KindBwdKv, d4, dv4, tm, kb, tex, sg),
            AttentionKernel::BwdDs { dbias } => {
                *d = vec![D::KindBwdDs, D::Masks];
                for (on, def) in [(x.ext, D::Ext), (x.softcap, D::Softcap), (dbias, D::Dbias)] {
                    if on {
                        d.push(def);
                    }
                }
                return vec![];
            }
            AttentionKernel::BwdBias => {
                *d = vec![D::KindBwdBias];
                return vec![];
            }
            _ => {
                *d = vec![D::KindBwdPrep];
                return vec![];
            }
        };
        d.push(kind);
        if tex {
            d.extend([D::BwdTex, D::KvTex]);
        }
        if sg {
            d.push(D::Sg);
        }
        vec![
            ("WG", 64),
            ("TM", tm),
            ("KB", kb),
            ("D4", d4),
            ("DV4", dv4),
            ("KF", d4.div_ceil(8)),
            ("VF", dv4.div_ceil(8)),
        ]
    }

    /// The other kernels' defines (added to `d`, or replacing the input
    /// defines for the kernels that read no q, k, v) and constants.
    fn other_defines(&self, d: &mut Vec<AttentionDefine>) -> Vec<(&'static str, u32)> {
        use AttentionDefine as D;
        let x = self.extras;
        let with = |d: &mut Vec<D>, flags: &[(bool, D)]| {
            d.extend(flags.iter().filter(|f| f.0).map(|f| f.1));
        };
        match self.kernel {
            AttentionKernel::Pack { w4, k } => {
                d.push(D::KindPack);
                with(d, &[(k, D::PackK)]);
                vec![("W4", w4)]
            }
            AttentionKernel::Split { d4, dv4, tex } => {
                d.push(D::KindSplit);
                with(d, &[(tex, D::KvTex)]);
                vec![("D4", d4), ("DV4", dv4), ("KB", 8)]
            }
            AttentionKernel::Merge { d4, dv4 } => {
                // The merge folds in the learned sinks (EXT).
                *d = vec![D::Masks];
                with(d, &[(self.dtype == DType::F16, D::OutF16), (x.ext, D::Ext)]);
                self.direct(d, D::KindMerge);
                vec![("D4", d4), ("DV4", dv4)]
            }
            AttentionKernel::Softmax => {
                *d = vec![D::KindSoftmax, D::Masks];
                let flags = [
                    (self.bias, D::Bias),
                    (x.ext, D::Ext),
                    (x.softcap, D::Softcap),
                    (x.mask, D::BoolMask),
                    (self.lse, D::Lse),
                ];
                with(d, &flags);
                vec![]
            }
            AttentionKernel::Permute => {
                *d = vec![D::KindPermute];
                vec![]
            }
            AttentionKernel::Append => {
                *d = vec![D::KindAppend, D::Masks];
                with(d, &[(x.paged, D::Paged)]);
                vec![]
            }
            _ => vec![],
        }
    }
}
