//! Scaled-dot-product attention, `O = softmax(Q·Kᵀ·scale + bias + mask)·V`, as
//! PyTorch's `scaled_dot_product_attention` and FlashAttention define it.
//! Kernel source: `shaders/attention.wgsl`.
//!
//! Shapes (layout [`Layout::Bhsd`]): q `[batch, heads_q, seq_q, d]`,
//! k `[batch, heads_kv, seq_k, d]`, v `[batch, heads_kv, seq_k, d_v]`,
//! out `[batch, heads_q, seq_q, d_v]`; [`Layout::Bshd`] swaps the seq and head axes
//! of all four. `heads_q` must be a multiple of `heads_kv` (GQA / MQA): query head
//! `h` reads kv head `h / (heads_q / heads_kv)`. `d`, `d_v` from 1 to 256.
//!
//! Masking: keys at or past `kv_len[b]` are masked; causal masking in either
//! convention ([`Causal`]); an additive f32 bias `[batch|1, heads_q|1, seq_q, seq_k]`.
//! **A query row whose keys are all masked outputs zeros** (not NaN, as PyTorch
//! would), and its log-sum-exp is −∞.

use std::sync::Arc;

use crate::context::{Bind, Context, Tracked, TrackedTexture};
use crate::error::{Error, Result};
use crate::ops::matmul::{self, MatmulOptions, MatmulVariant};
use crate::shader;
use crate::tensor::{shape_str, DType, Tensor};
use crate::texels::{vec4_format, vec4_texture, TexelGrid};

const SRC: &str = include_str!("../../shaders/attention.wgsl");
/// Keys per online-softmax chunk inside a staged tile (named registers).
const SK: u32 = 8;
/// Largest supported head dim.
pub const MAX_HEAD_DIM: usize = 256;

/// Mirrors `Params` in `shaders/attention.wgsl` (160 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    /// batch, heads_q, heads_kv, seq_q.
    pub dims0: [u32; 4],
    /// seq_k, d, d_v, group (= heads_q / heads_kv).
    pub dims1: [u32; 4],
    /// q strides in elements: batch, head, seq, pad.
    pub q_strides: [u32; 4],
    /// k strides.
    pub k_strides: [u32; 4],
    /// v strides.
    pub v_strides: [u32; 4],
    /// out strides.
    pub o_strides: [u32; 4],
    /// bias batch stride, bias head stride, causal (0/1), causal offset (i32 bits).
    pub mask: [u32; 4],
    /// scale (f32 bits), number of key splits, keys per split, log2 of the lines
    /// per layer of the K/V textures.
    pub tail: [u32; 4],
    /// K texture addressing: texel strides (batch, head, seq), log2 of the
    /// texels per line.
    pub kt: [u32; 4],
    /// V texture texel strides (batch, head, seq), pad.
    pub vt: [u32; 4],
}

/// Memory layout of q, k, v and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `[batch, heads, seq, dim]` (PyTorch SDPA's).
    #[default]
    Bhsd,
    /// `[batch, seq, heads, dim]`, what a linear projection produces.
    Bshd,
}

/// Causal masking convention. The two differ only when `seq_q != seq_k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Causal {
    /// No causal mask.
    #[default]
    None,
    /// PyTorch `is_causal=True`: query `i` sees keys `j <= i`.
    TopLeft,
    /// FlashAttention 2: query `i` sees keys `j <= i + seq_k - seq_q`; the last query
    /// sees every key, which is what decoding with a KV cache needs.
    BottomRight,
}

/// Attention kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttentionVariant {
    /// Baseline: materialises S = Q·Kᵀ with the matmul kernel, a masked softmax,
    /// then P·V. Fails with [`Error::TooLarge`] when S exceeds one storage binding.
    Naive,
    /// Fused flash attention: K/V tiles in workgroup memory, online softmax,
    /// the score matrix never exists in device memory; fully masked causal
    /// tiles are skipped.
    Flash,
    /// Flash-decoding: keys split across invocations, partial outputs merged
    /// with log-sum-exp weights in a second pass. For few queries, many keys.
    SplitKv,
    /// SplitKv for `seq_q <= 8` and `seq_k >= 512`, else Flash. The default.
    Auto,
}

impl AttentionVariant {
    /// Every variant (tests and benchmarks loop over these).
    pub const ALL: [AttentionVariant; 4] = [
        AttentionVariant::Naive,
        AttentionVariant::Flash,
        AttentionVariant::SplitKv,
        AttentionVariant::Auto,
    ];
}

/// How the [`AttentionVariant::Flash`] kernel is organised. All are fused (online
/// softmax, no score matrix in device memory) and skip fully masked causal keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlashSchedule {
    /// One query row per invocation; K/V tiles staged in workgroup memory and
    /// shared by the workgroup's rows. The GPU default.
    Tiles,
    /// A workgroup owns 4 rows and its invocations split the keys, each K/V
    /// vector feeding all 4 rows; partial softmaxes are merged in workgroup
    /// memory at the end. No barrier in the main loop: the CPU-adapter default
    /// below 64 query rows.
    /// Needs `64·(8 + 4·d_v)` bytes of workgroup memory (d_v ≤ 124 on 32 KiB);
    /// larger d_v runs `Tiles`.
    KeySplit,
    /// Both products as register-blocked tiles: a workgroup of 8 invocations is
    /// split into groups of 2–8 (more for larger d_v), each owning 16 query rows;
    /// per tile every invocation scores 16 keys against its group's rows (each K
    /// load feeds 16 rows), the tile's row maxima and probabilities go through
    /// workgroup memory, and every invocation then accumulates its own output
    /// columns (each V load feeds 16 rows, each probability up to 8 column
    /// vec4s). Loads per FLOP are those of the tiled matmul: the CPU-adapter
    /// default for seq_q ≥ 64. Large unrolled blocks: the first compile on
    /// lavapipe takes seconds (Mesa caches it on disk).
    Blocks,
    /// Every invocation owns up to 8 query rows (fewer for head dims over 64)
    /// with their Q and O in registers and streams every key it may see itself;
    /// K and V are first copied into 2-D array textures (`K` and `V` bytes
    /// again: a plain buffer-to-texture copy when d and d_v are multiples of 4,
    /// else a pack pass into f32 first) and read as texel fetches. No workgroup
    /// memory and no barrier: for adapters where storage and workgroup loads
    /// are per-lane loops and a barrier is a context switch, while texel
    /// fetches are vectorised gathers (CPU adapters: their default for
    /// seq_q ≥ 64). Needs the textures to fit the adapter's texture limits (K's
    /// elements / 4 / 2^20 layers with 1024-texel lines), else `Blocks` runs.
    Rows,
}

impl FlashSchedule {
    /// All schedules.
    pub const ALL: [FlashSchedule; 4] = [
        FlashSchedule::Tiles,
        FlashSchedule::KeySplit,
        FlashSchedule::Blocks,
        FlashSchedule::Rows,
    ];
}

/// Where the [`AttentionVariant::SplitKv`] kernel reads K and V from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvReads {
    /// The storage buffers as given, one key per step. The GPU default.
    Buffers,
    /// 2-D array textures K and V are first copied into (as for
    /// [`FlashSchedule::Rows`]: `K` and `V` bytes again), 8 keys per
    /// online-softmax step. For adapters where a storage load at a per-lane
    /// address is a per-lane loop and a texel fetch a vectorised gather (CPU
    /// adapters: their default). Needs the textures to fit the adapter's
    /// limits, else `Buffers` runs.
    Texels,
}

impl KvReads {
    /// Both sources.
    pub const ALL: [KvReads; 2] = [KvReads::Buffers, KvReads::Texels];
}

/// Options of [`attention`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOptions<'a> {
    /// Layout of all four tensors.
    pub layout: Layout,
    /// Causal masking convention.
    pub causal: Causal,
    /// Score scale; `None` is `1/√d`.
    pub scale: Option<f32>,
    /// Per-batch key lengths (`[batch]`): keys at or past `kv_len[b]` are masked.
    pub kv_len: Option<&'a [u32]>,
    /// Additive f32 bias `[batch|1, heads_q|1, seq_q, seq_k]` (−∞ entries mask).
    pub bias: Option<&'a Tensor>,
    /// Also return the log-sum-exp of each query row's scores, `[batch, heads_q, seq_q]` f32.
    pub return_lse: bool,
    /// Kernel (`None`: Auto).
    pub variant: Option<AttentionVariant>,
    /// Flash schedule (`None`: chosen by the adapter's device type).
    pub flash_schedule: Option<FlashSchedule>,
    /// Split-KV source of K and V (`None`: chosen by the adapter's device type).
    pub split_kv_reads: Option<KvReads>,
}

/// Result of [`attention`].
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// `[batch, heads_q, seq_q, d_v]` (or `[batch, seq_q, heads_q, d_v]`), the dtype of q.
    pub out: Tensor,
    /// `[batch, heads_q, seq_q]` f32 when requested.
    pub lse: Option<Tensor>,
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
}

impl Dims {
    fn strides(&self, layout: Layout, heads: usize, seq: usize, dim: usize) -> [u32; 4] {
        let s = match layout {
            Layout::Bhsd => [heads * seq * dim, seq * dim, dim],
            Layout::Bshd => [seq * heads * dim, dim, heads * dim],
        };
        [s[0] as u32, s[1] as u32, s[2] as u32, 0]
    }

    fn out_shape(&self, layout: Layout) -> Vec<usize> {
        match layout {
            Layout::Bhsd => vec![self.b, self.hq, self.sq, self.dv],
            Layout::Bshd => vec![self.b, self.sq, self.hq, self.dv],
        }
    }
}

const OP: &str = "attention";

fn check(q: &Tensor, k: &Tensor, v: &Tensor, o: &AttentionOptions) -> Result<Dims> {
    let shapes = || {
        format!(
            "q {}, k {}, v {} ({:?} layout)",
            shape_str(q.shape()),
            shape_str(k.shape()),
            shape_str(v.shape()),
            o.layout
        )
    };
    let bad = |why: String| Error::Shape {
        op: OP,
        detail: format!("{}: {why}", shapes()),
    };
    if q.shape().len() != 4 || k.shape().len() != 4 || v.shape().len() != 4 {
        return Err(bad("all three must be 4-D".into()));
    }
    let split = |s: &[usize]| match o.layout {
        Layout::Bhsd => (s[0], s[1], s[2], s[3]),
        Layout::Bshd => (s[0], s[2], s[1], s[3]),
    };
    let (b, hq, sq, d) = split(q.shape());
    let (bk, hkv, sk, dk) = split(k.shape());
    let (bv, hv, skv, dv) = split(v.shape());
    if b != bk || b != bv {
        return Err(bad("batch sizes differ".into()));
    }
    if hkv != hv || sk != skv {
        return Err(bad("k and v must have the same heads and seq_k".into()));
    }
    if d != dk {
        return Err(bad(format!("q's head dim {d} differs from k's {dk}")));
    }
    if hkv == 0 && hq > 0 || hkv > 0 && hq % hkv != 0 {
        return Err(bad(format!(
            "heads_q {hq} must be a multiple of heads_kv {hkv} (GQA/MQA)"
        )));
    }
    if q.dtype() != k.dtype() || q.dtype() != v.dtype() || q.dtype() == DType::U32 {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: format!(
                "q, k, v are {}, {}, {}; all must be f32 or all f16",
                q.dtype(),
                k.dtype(),
                v.dtype()
            ),
        });
    }
    if d == 0 || d > MAX_HEAD_DIM || dv > MAX_HEAD_DIM {
        return Err(Error::Unsupported {
            op: OP,
            detail: format!("head dims d={d}, d_v={dv}: supported are 1..={MAX_HEAD_DIM}"),
        });
    }
    if let Some(kl) = o.kv_len {
        if kl.len() != b {
            return Err(bad(format!(
                "kv_len has {} entries for batch {b}",
                kl.len()
            )));
        }
    }
    if let Some(s) = o.scale {
        if !s.is_finite() {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("scale must be finite, got {s}"),
            });
        }
    }
    if let Some(bias) = o.bias {
        let s = bias.shape();
        let ok = s.len() == 4
            && (s[0] == b || s[0] == 1)
            && (s[1] == hq || s[1] == 1)
            && s[2] == sq
            && s[3] == sk
            && bias.dtype() == DType::F32;
        if !ok {
            return Err(bad(format!(
                "bias is {} {}, expected f32 [{b}|1, {hq}|1, {sq}, {sk}]",
                bias.dtype(),
                shape_str(s)
            )));
        }
    }
    Ok(Dims {
        b,
        hq,
        hkv,
        sq,
        sk,
        d,
        dv,
    })
}

/// Runs attention and returns the output (and the log-sum-exp if asked).
///
/// Errors: [`Error::Shape`] naming all three shapes; [`Error::Unsupported`] for head
/// dims over 256 or beyond the adapter's workgroup memory; [`Error::TooLarge`] for
/// the naive kernel's score matrix or a tensor past one storage binding.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<AttentionOutput> {
    let dims = check(q, k, v, opts)?;
    let ctx = q.context();
    let out = Tensor::empty(ctx, &dims.out_shape(opts.layout), q.dtype())?;
    let lse = if opts.return_lse {
        Some(Tensor::empty(ctx, &[dims.b, dims.hq, dims.sq], DType::F32)?)
    } else {
        None
    };
    attention_into(q, k, v, opts, &out, lse.as_ref())?;
    Ok(AttentionOutput { out, lse })
}

/// [`attention`] writing into `out` (and `lse`, `[batch, heads_q, seq_q]` f32, if given).
pub fn attention_into(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let dims = check(q, k, v, opts)?;
    let ctx = q.context();
    if out.shape() != dims.out_shape(opts.layout).as_slice() || out.dtype() != q.dtype() {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "out is {} {}, expected {} {}",
                out.dtype(),
                shape_str(out.shape()),
                q.dtype(),
                shape_str(&dims.out_shape(opts.layout))
            ),
        });
    }
    if let Some(l) = lse {
        if l.shape() != [dims.b, dims.hq, dims.sq] || l.dtype() != DType::F32 {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "lse is {} {}, expected f32 [{}, {}, {}]",
                    l.dtype(),
                    shape_str(l.shape()),
                    dims.b,
                    dims.hq,
                    dims.sq
                ),
            });
        }
    }
    if out.is_empty() && lse.is_none_or(|l| l.is_empty()) {
        return Ok(());
    }
    for (name, t) in [("q", q), ("k", k), ("v", v), ("out", out)] {
        if t.bytes() > ctx.max_binding() {
            return Err(Error::TooLarge {
                op: OP,
                what: format!("tensor {name} {}", shape_str(t.shape())),
                size: t.bytes(),
                limit: ctx.max_binding(),
            });
        }
    }
    if dims.sk == 0 || dims.dv == 0 {
        // No keys: every row is fully masked, so zeros and an LSE of −∞.
        zero_fill(out)?;
        if let Some(l) = lse {
            l.write(&vec![f32::NEG_INFINITY; l.len()])?;
        }
        return Ok(());
    }
    let variant = match opts.variant.unwrap_or(AttentionVariant::Auto) {
        AttentionVariant::Auto if dims.sq <= 8 && dims.sk >= 512 => AttentionVariant::SplitKv,
        AttentionVariant::Auto => AttentionVariant::Flash,
        v => v,
    };
    match variant {
        AttentionVariant::Naive => naive(ctx, q, k, v, opts, &dims, out, lse),
        _ => fused(ctx, variant, q, k, v, opts, &dims, out, lse),
    }
}

/// Which flash schedule runs: the option if set, else on CPU adapters rows for
/// 64 or more query rows and key-split for fewer (both measured faster than
/// tiles and blocks on lavapipe), and staged tiles elsewhere.
fn schedule(ctx: &Context, opts: &AttentionOptions, dims: &Dims) -> FlashSchedule {
    // The key-split merge holds 64 partial outputs in workgroup memory.
    let merge_bytes = 64 * (8 + dims.dv.div_ceil(4) as u32 * 16);
    let key_split_fits = merge_bytes <= ctx.info().limits.max_compute_workgroup_storage_size;
    let want = opts.flash_schedule.unwrap_or(if !ctx.info().is_cpu() {
        FlashSchedule::Tiles
    } else if dims.sq >= 64 {
        FlashSchedule::Rows
    } else {
        FlashSchedule::KeySplit
    });
    match want {
        FlashSchedule::KeySplit if !key_split_fits => FlashSchedule::Tiles,
        FlashSchedule::Rows if KvTextures::new(ctx, dims).is_none() => FlashSchedule::Blocks,
        s => s,
    }
}

/// How K and V become the textures of the texel-reading kernels
/// ([`FlashSchedule::Rows`], [`KvReads::Texels`]): with head dims multiples of
/// 4 their buffers are copied as they are (f32 or f16 texels, no shader pass);
/// otherwise a pack kernel first writes them as zero-padded f32 vec4 rows.
/// Either way a texture holds the tensor's vec4s in order, laid out by `grid`.
struct KvTextures {
    grid: TexelGrid,
    pack: bool,
    /// Texels (vec4s) of K and of V.
    texels: [u64; 2],
}

impl KvTextures {
    /// `None` if the textures or the pack pass exceed the adapter's limits.
    fn new(ctx: &Context, dims: &Dims) -> Option<KvTextures> {
        let lim = &ctx.info().limits;
        let pack = !(dims.d.is_multiple_of(4) && dims.dv.is_multiple_of(4));
        let rows = (dims.b * dims.hkv * dims.sk) as u64;
        let texels = [
            rows * dims.d.div_ceil(4) as u64,
            rows * dims.dv.div_ceil(4) as u64,
        ];
        // Long tensors span layers (16 MiB of f32 each) within the tests'
        // sizes, so that every copy shape (whole layers, whole lines, a partial
        // line) is exercised.
        let grid = TexelGrid::new(ctx, &texels)?;
        let w4 = dims.d.max(dims.dv).div_ceil(4);
        let fits = !pack
            || (texels.iter().all(|&n| n * 16 <= ctx.max_binding())
                && (dims.sk * w4).div_ceil(64)
                    <= lim.max_compute_workgroups_per_dimension as usize
                && dims.b * dims.hkv <= lim.max_compute_workgroups_per_dimension as usize);
        fits.then_some(KvTextures { grid, pack, texels })
    }

    /// Sets the texture addressing in `p` (after [`params`]).
    fn set_params(&self, p: &mut AttentionParams, dims: &Dims) {
        p.tail[3] = self.grid.lsh;
        let (d4, dv4) = (dims.d.div_ceil(4) as u32, dims.dv.div_ceil(4) as u32);
        let (sk, hkv) = (dims.sk as u32, dims.hkv as u32);
        if self.pack {
            p.kt = [hkv * sk * d4, sk * d4, d4, self.grid.wsh];
            p.vt = [hkv * sk * dv4, sk * dv4, dv4, 0];
        } else {
            let [a, b, c, _] = p.k_strides;
            p.kt = [a / 4, b / 4, c / 4, self.grid.wsh];
            let [a, b, c, _] = p.v_strides;
            p.vt = [a / 4, b / 4, c / 4, 0];
        }
    }
}

/// The rows schedule: K and V packed into textures, then one invocation per
/// TM query rows.
#[allow(clippy::too_many_arguments)]
fn flash_rows(
    ctx: &Context,
    [q, k, v]: [&Tensor; 3],
    opts: &AttentionOptions,
    dims: &Dims,
    geo: &KvTextures,
    common: &[&str],
    p: &AttentionParams,
    kvlen: &Tracked,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let dtype = q.dtype();
    let (d4, dv4) = (dims.d.div_ceil(4) as u32, dims.dv.div_ceil(4) as u32);
    // Rows per invocation: as many as keep Q and O near 128 vec4s (the shader
    // size, and so the compile time, stays about constant), at most 8.
    // Measured on lavapipe at d 64: 8 rows 1.4x faster than 4, 16 rows no
    // faster than 8 and 100x slower to compile.
    let best_tm = (128 / d4.max(dv4)).clamp(1, 8);
    let wg: u32 = 64;
    let mut defines = common.to_vec();
    defines.extend(["KIND_ROWS", "KV_TEX", "OUT_DIRECT"]);
    if lse.is_some() {
        defines.push("LSE");
    }
    // With subgroups of 8 or more lanes, 8 lanes fetch 8 different texels of
    // a key and share them by subgroupBroadcast, instead of each fetching
    // every texel: one fetch where there were eight (lavapipe at 8 x 1024,
    // d 64: 159 -> 84 ms; a texel fetch there is a call of ~150 instructions).
    if ctx.info().has_subgroups_of(8) {
        defines.push("SG");
    }
    let consts = |tm: u32| {
        vec![
            ("WG", wg),
            ("TM", tm),
            ("D4", d4),
            ("DV4", dv4),
            ("KB", 8),
            ("KF", d4.div_ceil(8)),
            ("VF", dv4.div_ceil(8)),
        ]
    };
    let key = |tm: u32| {
        let c = consts(tm);
        format!("flash_rows:{dtype}:{c:?}:{}", defines.join(","))
    };
    // The compile time grows steeply with the rows per invocation (lavapipe
    // at d 64 with subgroups, Mesa's shader cache cold: 1 row ~1.0 s, 2 rows
    // ~2.1 s, 8 rows ~16 s (2.5 s warm); per call at 8 heads x 1024: 194, 135
    // and 82-90 ms): one row serves until the best block is compiled in the
    // background, but only on calls small enough that the one-row form's
    // ~2.3x longer run costs less than waiting for the compile: break-even
    // near 2e10 units of work below with the cache warm (8 heads, d 64: seq
    // ~4500), ~1.5e11 cold.
    let src = |tm: u32| {
        (
            shader::expand_full(SRC, dtype, &defines, &consts(tm)),
            "flash_rows",
            vec![],
        )
    };
    let work = (dims.b * dims.hq * dims.sq * dims.sk * (dims.d + dims.dv)) as f64;
    let (pipe, best) = if work <= 2.0e10 {
        ctx.pipeline_or_quick(
            ("attention", key(best_tm)),
            || src(best_tm),
            || ctx.pipeline(("attention", key(1)), || src(1)),
        )?
    } else {
        (
            ctx.pipeline(("attention", key(best_tm)), || src(best_tm))?,
            true,
        )
    };
    let tm = if best { best_tm } else { 1 };
    let packs = match geo.pack {
        true => Some(pack_pipelines(ctx, dtype, common, dims)?),
        false => None,
    };
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(p);
        let mut enc = ctx.encoder();
        let kv = KvTexels::encode(ctx, &mut enc, packs.as_ref(), &ubuf, [k, v], dims, geo);
        let mut binds = vec![
            Bind::whole(q.buffer()),
            Bind::whole(out.buffer()),
            Bind::whole(kvlen),
            Bind::texture(&kv.views[0]),
            Bind::texture(&kv.views[1]),
        ];
        let mut slots = vec![1, 4, 5, 9, 10];
        bind_bias_and_stats(&mut binds, &mut slots, opts.bias, lse.map(|l| l.buffer()));
        let groups = (
            dims.sq.div_ceil((wg * tm) as usize) as u32,
            (dims.b * dims.hq) as u32,
            1,
        );
        ctx.encode_slots(&mut enc, &pipe, &ubuf, &binds, &slots, groups);
        ctx.submit(enc);
        Ok(())
    })
}

/// The pipelines that pack K and V into [`KvTexels`] (head dims not
/// multiples of 4).
fn pack_pipelines(
    ctx: &Context,
    dtype: DType,
    common: &[&str],
    dims: &Dims,
) -> Result<[Arc<wgpu::ComputePipeline>; 2]> {
    let pack = |which: &'static str, w4: u32| {
        let mut defines: Vec<&str> = common.to_vec();
        defines.extend(["KIND_PACK", which]);
        let consts = [("W4", w4)];
        let key = format!("pack:{dtype}:{consts:?}:{}", defines.join(","));
        ctx.pipeline(("attention", key), || {
            (
                shader::expand_full(SRC, dtype, &defines, &consts),
                "pack",
                vec![],
            )
        })
    };
    Ok([
        pack("PACK_K", dims.d.div_ceil(4) as u32)?,
        pack("PACK_V", dims.dv.div_ceil(4) as u32)?,
    ])
}

/// K and V as the 2-D array textures of [`KvTextures`]. Holds the textures
/// (and any pack staging buffers) until the work that reads them is submitted.
struct KvTexels {
    views: [wgpu::TextureView; 2],
    _textures: [TrackedTexture; 2],
    _staging: Vec<Tracked>,
}

impl KvTexels {
    /// Encodes the making of the textures into `enc`: buffer-to-texture
    /// copies, after the pack passes when `packs` is given (which
    /// [`KvTextures::pack`] asks for). The pack writes a buffer rather than a
    /// storage texture: lavapipe's timestamps stop bracketing later passes
    /// after storage-texture writes.
    #[allow(clippy::too_many_arguments)]
    fn encode(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        packs: Option<&[Arc<wgpu::ComputePipeline>; 2]>,
        ubuf: &wgpu::Buffer,
        [k, v]: [&Tensor; 2],
        dims: &Dims,
        geo: &KvTextures,
    ) -> KvTexels {
        let w4s = [dims.d.div_ceil(4) as u32, dims.dv.div_ceil(4) as u32];
        // The pack pass writes f32.
        let format = vec4_format(if packs.is_some() {
            DType::F32
        } else {
            k.dtype()
        });
        let mut staging = Vec::new();
        let mut make = |i: usize, src: &Tensor| {
            let packed = packs.map(|packs| {
                let buf = ctx.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("attention K/V pack staging"),
                    size: (geo.texels[i] * 16).max(16),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                ctx.encode_slots(
                    enc,
                    &packs[i],
                    ubuf,
                    &[Bind::whole(src.buffer()), Bind::whole(&buf)],
                    &[2 + i as u32, 8],
                    (
                        (dims.sk * w4s[i] as usize).div_ceil(64) as u32,
                        (dims.b * dims.hkv) as u32,
                        1,
                    ),
                );
                buf
            });
            let src_buf: &wgpu::Buffer = packed.as_deref().unwrap_or(src.buffer());
            let made = vec4_texture(
                ctx,
                enc,
                src_buf,
                geo.texels[i],
                format,
                geo.grid,
                "attention K/V texels",
            );
            staging.extend(packed);
            made
        };
        let (kview, ktex) = make(0, k);
        let (vview, vtex) = make(1, v);
        KvTexels {
            views: [kview, vview],
            _textures: [ktex, vtex],
            _staging: staging,
        }
    }
}

/// Appends the optional bindings the masked kernels share: the bias (slot 6)
/// and the per-row statistics (slot 7: the LSE output, or split-KV's partial
/// (max, sum)).
fn bind_bias_and_stats<'a>(
    binds: &mut Vec<Bind<'a>>,
    slots: &mut Vec<u32>,
    bias: Option<&'a Tensor>,
    stats: Option<&'a wgpu::Buffer>,
) {
    if let Some(b) = bias {
        binds.push(Bind::whole(b.buffer()));
        slots.push(6);
    }
    if let Some(s) = stats {
        binds.push(Bind::whole(s));
        slots.push(7);
    }
}

fn zero_fill(t: &Tensor) -> Result<()> {
    let ctx = t.context();
    ctx.scoped(OP, || {
        let mut enc = ctx.encoder();
        enc.clear_buffer(t.buffer(), 0, None);
        ctx.submit(enc);
        Ok(())
    })
}

fn params(dims: &Dims, opts: &AttentionOptions) -> AttentionParams {
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
        Causal::BottomRight => (1, dims.sk as i64 - dims.sq as i64),
    };
    let off = off.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    let scale = opts.scale.unwrap_or(1.0 / (dims.d as f32).sqrt());
    AttentionParams {
        dims0: [
            dims.b as u32,
            dims.hq as u32,
            dims.hkv as u32,
            dims.sq as u32,
        ],
        dims1: [
            dims.sk as u32,
            dims.d as u32,
            dims.dv as u32,
            (dims.hq / dims.hkv.max(1)) as u32,
        ],
        q_strides: dims.strides(l, dims.hq, dims.sq, dims.d),
        k_strides: dims.strides(l, dims.hkv, dims.sk, dims.d),
        v_strides: dims.strides(l, dims.hkv, dims.sk, dims.dv),
        o_strides: dims.strides(l, dims.hq, dims.sq, dims.dv),
        mask: [bias_sb, bias_sh, causal, off as u32],
        tail: [scale.to_bits(), 0, 0, 0],
        kt: [0; 4],
        vt: [0; 4],
    }
}

fn kvlen_buffer(ctx: &Context, dims: &Dims, opts: &AttentionOptions) -> Tracked {
    let lens: Vec<u32> = match opts.kv_len {
        Some(l) => l.to_vec(),
        None => vec![dims.sk as u32; dims.b],
    };
    ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("kv_len"),
        contents: bytemuck::cast_slice(&lens),
        usage: wgpu::BufferUsages::STORAGE,
    })
}

fn scratch(ctx: &Context, bytes: u64, what: &str) -> Result<Tracked> {
    if bytes > ctx.max_binding() {
        return Err(Error::TooLarge {
            op: OP,
            what: what.to_string(),
            size: bytes,
            limit: ctx.max_binding(),
        });
    }
    Ok(ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some(OP),
        size: bytes.max(16),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    }))
}

#[allow(clippy::too_many_arguments)]
fn fused(
    ctx: &Context,
    variant: AttentionVariant,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    dims: &Dims,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let dtype = q.dtype();
    let (d4, dv4) = (dims.d.div_ceil(4) as u32, dims.dv.div_ceil(4) as u32);
    let vec = dims.d.is_multiple_of(4) && dims.dv.is_multiple_of(4);
    let mut common: Vec<&str> = vec!["HAS_INPUTS", "MASKS"];
    if vec {
        common.push("VEC");
    }
    if opts.bias.is_some() {
        common.push("BIAS");
    }
    if dtype == DType::F16 {
        common.push("OUT_F16");
    }
    let mut p = params(dims, opts);
    let max_groups = ctx.info().limits.max_compute_workgroups_per_dimension as usize;
    let rows = dims.b * dims.hq;
    let kvlen = kvlen_buffer(ctx, dims, opts);
    match variant {
        AttentionVariant::Flash => {
            if rows > max_groups {
                return Err(Error::TooLarge {
                    op: OP,
                    what: "batch × heads workgroups".into(),
                    size: rows as u64,
                    limit: max_groups as u64,
                });
            }
            let sched = schedule(ctx, opts, dims);
            if sched == FlashSchedule::Rows {
                let geo = KvTextures::new(ctx, dims).expect("schedule() checked the fit");
                geo.set_params(&mut p, dims);
                return flash_rows(
                    ctx,
                    [q, k, v],
                    opts,
                    dims,
                    &geo,
                    &common,
                    &p,
                    &kvlen,
                    out,
                    lse,
                );
            }
            let (kind, entry, consts, row_block) = if sched == FlashSchedule::Blocks {
                // 8 invocations (one SIMD slice on lavapipe) in groups of hg, each
                // group 16 rows, 16 keys per invocation per tile, and each
                // invocation at most 8 output vec4s per row (hg grows with d_v).
                // Measured on lavapipe at d_v 64: hg 2 runs 140-150 ms, hg 8
                // 165-175 ms, 8 rows instead of 16 ~200 ms; the larger blocks
                // compile slower (cold, without Mesa's shader cache: 10 s, 6 s,
                // 2.6 s).
                let wg = 8;
                let hg: u32 = match dv4 {
                    0..=16 => 2,
                    17..=32 => 4,
                    _ => 8,
                };
                // NV fixed: one pipeline per group size serves every head dim.
                let nv = 8;
                let tm: u32 = 16;
                let kb: u32 = 16;
                let consts = vec![
                    ("WG", wg),
                    ("HG", hg),
                    ("TM", tm),
                    ("KB", kb),
                    ("NV", nv),
                    ("TM4", tm / 4),
                ];
                ("KIND_BLOCKS", "flash_blocks", consts, tm * (wg / hg))
            } else if sched == FlashSchedule::KeySplit {
                // Rows per workgroup and keys per chunk: measured on lavapipe, 8 rows
                // run ~25% faster but the unrolled shader takes 5 s to compile.
                let tm: u32 = 4;
                let consts = vec![("D4", d4), ("DV4", dv4), ("TM", tm), ("KC", 2)];
                ("KIND_KEYSPLIT", "flash_keysplit", consts, tm)
            } else {
                // Rows per workgroup: the K/V tile is shared by more rows when seq_q
                // allows; keys per tile: as many as workgroup memory holds (≤ 64).
                let bq = dims.sq.next_power_of_two().clamp(8, 64) as u32;
                let per_key = (d4 + dv4) * 16;
                let mem = ctx.info().limits.max_compute_workgroup_storage_size;
                let bkv = (mem / per_key).min(64) / SK * SK;
                if bkv == 0 || bq > ctx.info().limits.max_compute_invocations_per_workgroup {
                    return Err(Error::Unsupported {
                        op: OP,
                        detail: format!(
                            "head dims d={}, d_v={} need {} bytes of workgroup memory per {SK}-key tile; the adapter has {mem}",
                            dims.d,
                            dims.dv,
                            per_key * SK
                        ),
                    });
                }
                let consts = vec![
                    ("D4", d4),
                    ("DV4", dv4),
                    ("BQ", bq),
                    ("BKV", bkv),
                    ("SK", SK),
                ];
                ("KIND_FLASH", "flash", consts, bq)
            };
            let mut defines = common.clone();
            defines.extend([kind, "OUT_DIRECT"]);
            if lse.is_some() {
                defines.push("LSE");
            }
            let key = format!("{entry}:{dtype}:{consts:?}:{}", defines.join(","));
            let pipe = ctx.pipeline(("attention", key), || {
                (
                    shader::expand_full(SRC, dtype, &defines, &consts),
                    entry,
                    vec![],
                )
            })?;
            ctx.scoped(OP, || {
                let ubuf = ctx.uniform(&p);
                let mut binds = vec![
                    Bind::whole(q.buffer()),
                    Bind::whole(k.buffer()),
                    Bind::whole(v.buffer()),
                    Bind::whole(out.buffer()),
                    Bind::whole(&kvlen),
                ];
                let mut slots = vec![1, 2, 3, 4, 5];
                bind_bias_and_stats(&mut binds, &mut slots, opts.bias, lse.map(|l| l.buffer()));
                let mut enc = ctx.encoder();
                let groups = (dims.sq.div_ceil(row_block as usize) as u32, rows as u32, 1);
                ctx.encode_slots(&mut enc, &pipe, &ubuf, &binds, &slots, groups);
                ctx.submit(enc);
                Ok(())
            })
        }
        _ => {
            let want = opts.split_kv_reads.unwrap_or(if ctx.info().is_cpu() {
                KvReads::Texels
            } else {
                KvReads::Buffers
            });
            let geo = match want {
                KvReads::Texels => KvTextures::new(ctx, dims),
                KvReads::Buffers => None,
            };
            // Enough splits to give every core work for one query, each long
            // enough that the merge pass stays small; whole 8-key steps.
            let chunk = dims.sk.div_ceil(256).max(32).next_multiple_of(8);
            let nsplit = dims.sk.div_ceil(chunk);
            p.tail[1] = nsplit as u32;
            p.tail[2] = chunk as u32;
            let nrows = rows * dims.sq;
            if nrows > max_groups {
                return Err(Error::TooLarge {
                    op: OP,
                    what: "batch × heads × seq_q workgroups of the split-KV kernel".into(),
                    size: nrows as u64,
                    limit: max_groups as u64,
                });
            }
            let part_o = scratch(
                ctx,
                (nrows * nsplit) as u64 * dv4 as u64 * 16,
                "split-KV partial outputs",
            )?;
            let part_ml = scratch(ctx, (nrows * nsplit) as u64 * 8, "split-KV partial stats")?;
            let consts = [("D4", d4), ("DV4", dv4)];
            let consts1 = [("D4", d4), ("DV4", dv4), ("KB", 8)];
            let mut d1 = common.clone();
            d1.push("KIND_SPLIT");
            let mut packs = None;
            if let Some(g) = &geo {
                g.set_params(&mut p, dims);
                d1.push("KV_TEX");
                if g.pack {
                    packs = Some(pack_pipelines(ctx, dtype, &common, dims)?);
                }
            }
            let key1 = format!("split:{dtype}:{consts1:?}:{}", d1.join(","));
            let pipe1 = ctx.pipeline(("attention", key1), || {
                (
                    shader::expand_full(SRC, dtype, &d1, &consts1),
                    "split_kv",
                    vec![],
                )
            })?;
            let mut d2: Vec<&str> = vec!["KIND_MERGE", "OUT_DIRECT"];
            if dtype == DType::F16 {
                d2.push("OUT_F16");
            }
            if lse.is_some() {
                d2.push("LSE");
            }
            let key2 = format!("merge:{dtype}:{consts:?}:{}", d2.join(","));
            let pipe2 = ctx.pipeline(("attention", key2), || {
                (
                    shader::expand_full(SRC, dtype, &d2, &consts),
                    "merge",
                    vec![],
                )
            })?;
            ctx.scoped(OP, || {
                let ubuf = ctx.uniform(&p);
                let mut enc = ctx.encoder();
                let kv = geo.as_ref().map(|g| {
                    KvTexels::encode(ctx, &mut enc, packs.as_ref(), &ubuf, [k, v], dims, g)
                });
                let mut binds = vec![
                    Bind::whole(q.buffer()),
                    Bind::whole(&part_o),
                    Bind::whole(&kvlen),
                ];
                let mut slots = vec![1, 4, 5];
                match &kv {
                    Some(kv) => {
                        binds.extend([Bind::texture(&kv.views[0]), Bind::texture(&kv.views[1])]);
                        slots.extend([9, 10]);
                    }
                    None => {
                        binds.extend([Bind::whole(k.buffer()), Bind::whole(v.buffer())]);
                        slots.extend([2, 3]);
                    }
                }
                bind_bias_and_stats(&mut binds, &mut slots, opts.bias, Some(&part_ml));
                let groups = (nsplit.div_ceil(64) as u32, nrows as u32, 1);
                ctx.encode_slots(&mut enc, &pipe1, &ubuf, &binds, &slots, groups);
                let mut binds = vec![
                    Bind::whole(&part_o),
                    Bind::whole(&part_ml),
                    Bind::whole(out.buffer()),
                ];
                if let Some(l) = lse {
                    binds.push(Bind::whole(l.buffer()));
                }
                let (gx, gy) = ctx.grid((nrows * dv4 as usize).div_ceil(64) as u32);
                ctx.encode_slots(&mut enc, &pipe2, &ubuf, &binds, &[1, 2, 4, 7], (gx, gy, 1));
                ctx.submit(enc);
                Ok(())
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn naive(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    dims: &Dims,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let dtype = q.dtype();
    let score_bytes = (dims.b * dims.hq * dims.sq * dims.sk) as u64 * 4;
    if score_bytes > ctx.max_binding() {
        return Err(Error::TooLarge {
            op: OP,
            what: format!(
                "the naive kernel's score matrix [{}, {}, {}, {}] f32",
                dims.b, dims.hq, dims.sq, dims.sk
            ),
            size: score_bytes,
            limit: ctx.max_binding(),
        });
    }
    let g = dims.hq / dims.hkv;
    // Work in [B, H, S, D]; query heads of one kv head are adjacent, so q viewed
    // as [B, Hkv, G·Sq, D] multiplies kv head by kv head.
    let to_bhsd = |t: &Tensor, h: usize, s: usize, dd: usize| -> Result<Tensor> {
        match opts.layout {
            Layout::Bhsd => Ok(t.clone()),
            Layout::Bshd => permute(t, dims.b, s, h, dd),
        }
    };
    let qh =
        to_bhsd(q, dims.hq, dims.sq, dims.d)?.reshape(&[dims.b, dims.hkv, g * dims.sq, dims.d])?;
    let kh = to_bhsd(k, dims.hkv, dims.sk, dims.d)?;
    let vh = to_bhsd(v, dims.hkv, dims.sk, dims.dv)?;
    let p = params(dims, opts);
    let scale = f32::from_bits(p.tail[0]);
    let s = matmul::matmul_with(
        &qh,
        &kh,
        &MatmulOptions {
            trans_b: true,
            alpha: scale,
            variant: MatmulVariant::Auto,
            ..Default::default()
        },
    )?;
    let probs = Tensor::empty(ctx, s.shape(), dtype)?;
    let mut defines: Vec<&str> = vec!["KIND_SOFTMAX", "MASKS"];
    if opts.bias.is_some() {
        defines.push("BIAS");
    }
    if lse.is_some() {
        defines.push("LSE");
    }
    let key = format!("softmax:{dtype}:{}", defines.join(","));
    let pipe = ctx.pipeline(("attention", key), || {
        (
            shader::expand_full(SRC, dtype, &defines, &[]),
            "softmax",
            vec![],
        )
    })?;
    let kvlen = kvlen_buffer(ctx, dims, opts);
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let mut binds = vec![
            Bind::whole(s.buffer()),
            Bind::whole(probs.buffer()),
            Bind::whole(&kvlen),
        ];
        let mut slots = vec![1, 2, 5];
        bind_bias_and_stats(&mut binds, &mut slots, opts.bias, lse.map(|l| l.buffer()));
        let (gx, gy) = ctx.grid((dims.b * dims.hq * dims.sq) as u32);
        let mut enc = ctx.encoder();
        ctx.encode_slots(&mut enc, &pipe, &ubuf, &binds, &slots, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })?;
    let o = matmul::matmul_with(
        &probs,
        &vh,
        &MatmulOptions {
            out_dtype: dtype,
            ..Default::default()
        },
    )?;
    match opts.layout {
        Layout::Bhsd => copy(&o, out),
        Layout::Bshd => {
            let t = permute(
                &o.reshape(&[dims.b, dims.hq, dims.sq, dims.dv])?,
                dims.b,
                dims.hq,
                dims.sq,
                dims.dv,
            )?;
            copy(&t, out)
        }
    }
}

fn copy(src: &Tensor, dst: &Tensor) -> Result<()> {
    let ctx = src.context();
    ctx.scoped(OP, || {
        let mut enc = ctx.encoder();
        enc.copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), 0, dst.buffer().size());
        ctx.submit(enc);
        Ok(())
    })
}

/// `[B, X, Y, D] -> [B, Y, X, D]`.
fn permute(t: &Tensor, b: usize, x: usize, y: usize, d: usize) -> Result<Tensor> {
    let ctx = t.context();
    let dtype = t.dtype();
    let out = Tensor::empty(ctx, &[b, y, x, d], dtype)?;
    let n = b * x * y * d;
    if n == 0 {
        return Ok(out);
    }
    let p = AttentionParams {
        dims0: [b as u32, x as u32, 0, y as u32],
        dims1: [0, d as u32, 0, 0],
        ..Default::default()
    };
    let key = format!("permute:{dtype}");
    let pipe = ctx.pipeline(("attention", key), || {
        (
            shader::expand_full(SRC, dtype, &["KIND_PERMUTE"], &[]),
            "permute",
            vec![],
        )
    })?;
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let (gx, gy) = ctx.grid(n.div_ceil(64) as u32);
        let mut enc = ctx.encoder();
        ctx.encode(
            &mut enc,
            &pipe,
            &ubuf,
            &[Bind::whole(t.buffer()), Bind::whole(out.buffer())],
            (gx, gy),
        );
        ctx.submit(enc);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_wgsl() {
        assert_eq!(std::mem::size_of::<AttentionParams>(), 160);
    }
}
