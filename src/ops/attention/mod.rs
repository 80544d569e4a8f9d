//! Scaled-dot-product attention, `O = softmax(Q·Kᵀ·scale + bias + mask)·V`, as
//! PyTorch's `scaled_dot_product_attention` and FlashAttention define it.
//! Kernel source: the `.wgsl` files beside the launchers.
//!
//! Shapes (layout [`Layout::Bhsd`]): q `[batch, heads_q, seq_q, d]`,
//! k `[batch, heads_kv, seq_k, d]`, v `[batch, heads_kv, seq_k, d_v]`,
//! out `[batch, heads_q, seq_q, d_v]`; [`Layout::Bshd`] swaps the seq and head axes
//! of all four. `heads_q` must be a multiple of `heads_kv` (GQA / MQA): query head
//! `h` reads kv head `h / (heads_q / heads_kv)`. `d`, `d_v` from 1 to 256.
//!
//! Masking: keys at or past `kv_len[b]` are masked; causal masking in either
//! convention ([`Causal`]); an additive f32 bias `[batch|1, heads_q|1, seq_q, seq_k]`;
//! a boolean mask ([`BoolMask`], true = attend).
//! **A query row whose keys are all masked outputs zeros** (not NaN, as PyTorch
//! would), and its log-sum-exp is −∞ (the sink logit with [`AttentionOptions::sinks`]).
//!
//! For inference engines (as FlashAttention's `flash_attn_with_kvcache`, vLLM
//! and llama.cpp use attention): a KV cache padded to capacity with per-sequence
//! lengths ([`AttentionOptions::kv_len`], to which [`Causal::BottomRight`]
//! aligns), a paged KV cache ([`PagedKv`], filled by [`kv_append`]), a sliding
//! window ([`Window`]) with StreamingLLM sink tokens, logit soft-capping, ALiBi
//! and learned attention sinks. Each score goes
//! `s = q·k·scale → cap·tanh(s/cap) → − slope·|i + diag − j| → + bias`, masked
//! keys are dropped, then the softmax (with the sink logit in its denominator).
//!
//! The diagonal `diag` that the causal mask, the window and ALiBi align to:
//! key `i` for query `i` under [`Causal::TopLeft`]; key `i + kv_len[b] − seq_q`
//! otherwise (bottom-right, FlashAttention's convention, also with
//! [`Causal::None`]).

mod flash;
mod kv_cache;
mod kv_texels;
mod naive;
mod plan;
mod spec;
mod split_kv;

pub use kv_cache::kv_append;
pub use plan::AttentionPlan;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::{shape_str, DType, Tensor};
#[cfg(test)]
pub(crate) use plan::reachable as reachable_specs;
use plan::Launch;
#[cfg(test)]
pub(crate) use spec::AttentionParams;
/// Largest supported head dim.
pub const MAX_HEAD_DIM: usize = 256;

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
    /// sees every key, which is what decoding with a KV cache needs. With
    /// [`AttentionOptions::kv_len`], the diagonal is aligned to each sequence's
    /// own length: `j <= i + kv_len[b] - seq_q` (as FlashAttention's
    /// `flash_attn_with_kvcache` does with `cache_seqlens`), so the `seq_q`
    /// new queries of a cache padded to capacity are its last `seq_q` positions.
    BottomRight,
}

/// Attention kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum FlashSchedule {
    /// One query row per invocation; K/V tiles staged in workgroup memory and
    /// shared by the workgroup's rows. The GPU default.
    Tiles,
    /// A workgroup owns 4 rows and its invocations split the keys, each K/V
    /// vector feeding all 4 rows; partial softmaxes are merged in workgroup
    /// memory at the end. No barrier in the main loop: the default below 64
    /// query rows where the device profile prefers barrier-free kernels.
    /// Needs `64·(8 + 4·d_v)` bytes of workgroup memory (d_v ≤ 124 on 32 KiB):
    /// forced beyond that it is [`Error::Unsupported`]; chosen by the
    /// planner, `Tiles` runs instead.
    KeySplit,
    /// Both products as register-blocked tiles: a workgroup of 8 invocations is
    /// split into groups of 2–8 (more for larger d_v), each owning 16 query rows;
    /// per tile every invocation scores 16 keys against its group's rows (each K
    /// load feeds 16 rows), the tile's row maxima and probabilities go through
    /// workgroup memory, and every invocation then accumulates its own output
    /// columns (each V load feeds 16 rows, each probability up to 8 column
    /// vec4s). Loads per FLOP are those of the tiled matmul. Large unrolled
    /// blocks: the first compile on a software adapter takes seconds. Needs
    /// 8.5 KiB of workgroup memory. Takes no inference options (window,
    /// sink tokens, soft cap, ALiBi, sinks, boolean mask, paged K/V): forced
    /// with one it is [`Error::Unsupported`].
    Blocks,
    /// Every invocation owns up to 8 query rows (fewer for head dims over 64)
    /// with their Q and O in registers and streams every key it may see itself;
    /// K and V are first copied into 2-D array textures (`K` and `V` bytes
    /// again: a plain buffer-to-texture copy when d and d_v are multiples of 4,
    /// else a pack pass into f32 first) and read as texel fetches. No workgroup
    /// memory and no barrier: for adapters where storage and workgroup loads
    /// are per-lane loops and a barrier is a context switch, while texel
    /// fetches are vectorised gathers (the default for seq_q ≥ 64 where the
    /// device profile prefers texel reads). Needs the textures to fit the
    /// adapter's texture limits (K's elements / 4 / 2^20 layers with
    /// 1024-texel lines), and with a paged cache head dims that are
    /// multiples of 4: forced beyond that it is [`Error::Unsupported`];
    /// chosen by the planner, `Blocks` runs instead (`Tiles` for a call with
    /// inference options).
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
#[non_exhaustive]
pub enum KvReads {
    /// The storage buffers as given, one key per step. The GPU default.
    Buffers,
    /// 2-D array textures K and V are first copied into (as for
    /// [`FlashSchedule::Rows`]: `K` and `V` bytes again), 8 keys per
    /// online-softmax step. For adapters where a storage load at a per-lane
    /// address is a per-lane loop and a texel fetch a vectorised gather (the
    /// default where the device profile prefers texel reads). Needs the
    /// textures to fit the adapter's limits: forced beyond them it is
    /// [`Error::Unsupported`]; chosen by the planner, `Buffers` runs instead.
    Texels,
}

impl KvReads {
    /// Both sources.
    pub const ALL: [KvReads; 2] = [KvReads::Buffers, KvReads::Texels];
}

/// A local (sliding-window) attention band, FlashAttention's `window_size`:
/// query `i` sees keys `diag(i) − left ..= diag(i) + right` (see the module
/// docs for the diagonal), on top of the causal mask and `kv_len`. `None` is
/// unbounded. Whole key tiles outside every row's band are never loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Keys before the diagonal a query sees (`Some(0)`: only its own).
    pub left: Option<usize>,
    /// Keys after the diagonal a query sees.
    pub right: Option<usize>,
}

impl Window {
    /// A band of `left` keys before the diagonal and none after (with a
    /// causal mask, the usual sliding window of `left + 1` keys).
    pub fn left(left: usize) -> Window {
        Window {
            left: Some(left),
            right: Some(0),
        }
    }
    /// A band of `left` keys before the diagonal and `right` after.
    pub fn new(left: usize, right: usize) -> Window {
        Window {
            left: Some(left),
            right: Some(right),
        }
    }
    fn is_some(&self) -> bool {
        self.left.is_some() || self.right.is_some()
    }
}

/// A paged KV cache, as vLLM and FlashAttention's `block_table` hold one:
/// `k` and `v` passed to [`attention`] are pools of pages,
/// `[num_pages, page_size, heads_kv, d]` ([`Layout::Bshd`]) or
/// `[num_pages, heads_kv, page_size, d]` ([`Layout::Bhsd`]), and key `j` of
/// sequence `b` is row `j % page_size` of page `block_table[b·max_pages + j /
/// page_size]`. The logical `seq_k` is `max_pages · page_size`; a sequence's
/// length is its [`AttentionOptions::kv_len`] entry. The kernels read the
/// pages where they are (no gather into a contiguous copy).
#[derive(Debug, Clone, Copy)]
pub struct PagedKv<'a> {
    /// `[batch, max_pages]` page indices, row-major; each below `num_pages`.
    pub block_table: &'a [u32],
    /// Entries per sequence in `block_table`.
    pub max_pages: usize,
}

impl PagedKv<'_> {
    /// What is wrong with the table for `batch` sequences over a pool of
    /// `pages` pages, if anything.
    pub(crate) fn problem(&self, batch: usize, pages: usize) -> Option<String> {
        if self.block_table.len() != batch * self.max_pages {
            return Some(format!(
                "the block table has {} entries for batch {batch} × max_pages {}",
                self.block_table.len(),
                self.max_pages
            ));
        }
        let (i, pg) = self
            .block_table
            .iter()
            .enumerate()
            .find(|&(_, &pg)| pg as usize >= pages)?;
        Some(format!(
            "block_table[{i}] = {pg} is past the pool's {pages} pages"
        ))
    }
}

/// A boolean attention mask `[batch|1, heads_q|1, seq_q, seq_k]`, true =
/// attend (PyTorch SDPA's boolean `attn_mask`), bit-packed on the device:
/// 32 keys a u32 word, each row padded to whole words.
#[derive(Debug, Clone)]
pub struct BoolMask {
    words: Tensor,
    shape: [usize; 4],
}

impl BoolMask {
    /// Packs `mask` (row-major, `shape`) onto the device.
    ///
    /// Errors: [`Error::Shape`] when `mask.len()` is not the product of `shape`.
    pub fn from_bools(ctx: &Context, shape: [usize; 4], mask: &[bool]) -> Result<BoolMask> {
        Self::pack(ctx, shape, mask.len(), |i| mask[i])
    }

    /// Packs a `u8` mask (nonzero = attend, as a `torch.bool` tensor's bytes).
    ///
    /// Errors: [`Error::Shape`] when `mask.len()` is not the product of `shape`.
    pub fn from_u8(ctx: &Context, shape: [usize; 4], mask: &[u8]) -> Result<BoolMask> {
        Self::pack(ctx, shape, mask.len(), |i| mask[i] != 0)
    }

    /// A mask already packed on the device: `words` is u32
    /// `[batch|1, heads_q|1, seq_q, ceil(seq_k / 32)]`, bit `j % 32` of word
    /// `j / 32` of a row set for key `j` visible.
    ///
    /// Errors: [`Error::Shape`] when `words` is not u32 of that shape.
    pub fn from_words(words: Tensor, seq_k: usize) -> Result<BoolMask> {
        let s = words.shape().to_vec();
        if s.len() != 4 || s[3] != seq_k.div_ceil(32) || words.dtype() != DType::U32 {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "mask words are {} {}, expected u32 [b|1, h|1, seq_q, {}] for seq_k {seq_k}",
                    words.dtype(),
                    shape_str(&s),
                    seq_k.div_ceil(32)
                ),
            });
        }
        Ok(BoolMask {
            shape: [s[0], s[1], s[2], seq_k],
            words,
        })
    }

    fn pack(
        ctx: &Context,
        shape: [usize; 4],
        len: usize,
        at: impl Fn(usize) -> bool,
    ) -> Result<BoolMask> {
        let n: usize = shape.iter().product();
        if len != n {
            return Err(Error::Shape {
                op: OP,
                detail: format!("mask has {len} values for shape {}", shape_str(&shape)),
            });
        }
        let sk = shape[3];
        let wpr = sk.div_ceil(32);
        let rows = shape[0] * shape[1] * shape[2];
        let mut words = vec![0u32; rows * wpr];
        for r in 0..rows {
            for j in 0..sk {
                if at(r * sk + j) {
                    words[r * wpr + j / 32] |= 1 << (j % 32);
                }
            }
        }
        let t = Tensor::from_slice(ctx, &words, &[shape[0], shape[1], shape[2], wpr])?;
        Ok(BoolMask { words: t, shape })
    }

    /// `[batch|1, heads_q|1, seq_q, seq_k]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
}

/// Options of [`attention`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct AttentionOptions<'a> {
    /// Layout of all four tensors.
    pub layout: Layout,
    /// Causal masking convention.
    pub causal: Causal,
    /// Score scale; `None` is `1/√d`.
    pub scale: Option<f32>,
    /// Per-batch key lengths (`[batch]`): keys at or past `kv_len[b]` are
    /// masked, and [`Causal::BottomRight`] aligns to `kv_len[b]` (a KV cache
    /// padded to capacity `seq_k`).
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
    /// Sliding window (default: unbounded).
    pub window: Window,
    /// StreamingLLM sink tokens: the first `sink_tokens` keys stay visible
    /// whatever the left window (still under the causal mask and `kv_len`).
    pub sink_tokens: usize,
    /// Logit soft cap (`cap·tanh(s/cap)` on the scaled scores, Gemma 2's);
    /// positive and finite.
    pub softcap: Option<f32>,
    /// ALiBi slopes `[heads_q]`: score − `slope[h]·|diag(i) − j|`, computed in
    /// the kernel (no bias tensor).
    pub alibi_slopes: Option<&'a [f32]>,
    /// Learned attention sinks `[heads_q]` (gpt-oss): a logit per head that
    /// joins each row's softmax denominator and attends to nothing.
    pub sinks: Option<&'a [f32]>,
    /// Boolean mask, true = attend.
    pub mask: Option<&'a BoolMask>,
    /// K and V are page pools read through a block table.
    pub paged: Option<PagedKv<'a>>,
}

impl<'a> AttentionOptions<'a> {
    /// Options with `layout` for all four tensors.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    /// Options with causal masking `causal`.
    pub fn causal(mut self, causal: Causal) -> Self {
        self.causal = causal;
        self
    }
    /// Options with score scale `scale` (default `1/√d`).
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    /// Options with per-batch key lengths.
    pub fn kv_len(mut self, kv_len: &'a [u32]) -> Self {
        self.kv_len = Some(kv_len);
        self
    }
    /// Options with an additive bias.
    pub fn bias(mut self, bias: &'a Tensor) -> Self {
        self.bias = Some(bias);
        self
    }
    /// Options that return the log-sum-exp (or not).
    pub fn return_lse(mut self, lse: bool) -> Self {
        self.return_lse = lse;
        self
    }
    /// Options forcing `variant`.
    pub fn variant(mut self, variant: AttentionVariant) -> Self {
        self.variant = Some(variant);
        self
    }
    /// Options forcing the flash schedule.
    pub fn flash_schedule(mut self, schedule: FlashSchedule) -> Self {
        self.flash_schedule = Some(schedule);
        self
    }
    /// Options forcing split-KV's source of K and V.
    pub fn split_kv_reads(mut self, reads: KvReads) -> Self {
        self.split_kv_reads = Some(reads);
        self
    }
    /// Options with a sliding window.
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }
    /// Options with `n` StreamingLLM sink tokens.
    pub fn sink_tokens(mut self, n: usize) -> Self {
        self.sink_tokens = n;
        self
    }
    /// Options with a logit soft cap.
    pub fn softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }
    /// Options with ALiBi slopes `[heads_q]`.
    pub fn alibi_slopes(mut self, slopes: &'a [f32]) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }
    /// Options with learned sink logits `[heads_q]`.
    pub fn sinks(mut self, sinks: &'a [f32]) -> Self {
        self.sinks = Some(sinks);
        self
    }
    /// Options with a boolean mask.
    pub fn mask(mut self, mask: &'a BoolMask) -> Self {
        self.mask = Some(mask);
        self
    }
    /// Options reading K and V as page pools through a block table.
    pub fn paged(mut self, paged: PagedKv<'a>) -> Self {
        self.paged = Some(paged);
        self
    }
    /// The code options a call with these options compiles in.
    pub(crate) fn extras(&self) -> spec::Extras {
        spec::Extras {
            ext: self.window.is_some()
                || self.sink_tokens > 0
                || self.softcap.is_some()
                || self.alibi_slopes.is_some()
                || self.sinks.is_some(),
            softcap: self.softcap.is_some(),
            mask: self.mask.is_some(),
            paged: self.paged.is_some(),
        }
    }
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
pub(crate) struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
    /// K/V's outer extent and rows per outer index: (batch, seq_k), or for a
    /// paged cache (pages, page size).
    kv_outer: usize,
    kv_rows: usize,
}

impl Dims {
    fn out_shape(&self, layout: Layout) -> Vec<usize> {
        match layout {
            Layout::Bhsd => vec![self.b, self.hq, self.sq, self.dv],
            Layout::Bshd => vec![self.b, self.sq, self.hq, self.dv],
        }
    }
}

pub(crate) const OP: &str = "attention";

fn check(q: &Tensor, k: &Tensor, v: &Tensor, o: &AttentionOptions) -> Result<Dims> {
    let mut operands = vec![("q", q), ("k", k), ("v", v)];
    operands.extend(o.bias.map(|t| ("bias", t)));
    operands.extend(o.mask.map(|m| ("mask", &m.words)));
    Tensor::same_context(OP, &operands)?;
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
    let (bk, hkv, kv_rows, dk) = split(k.shape());
    let (bv, hv, skv, dv) = split(v.shape());
    if o.paged.is_none() && (b != bk || b != bv) {
        return Err(bad("batch sizes differ".into()));
    }
    if bk != bv {
        return Err(bad("k and v must have the same number of pages".into()));
    }
    let sk = match o.paged {
        Some(pk) => {
            if let Some(why) = pk.problem(b, bk) {
                return Err(bad(why));
            }
            pk.max_pages * kv_rows
        }
        None => kv_rows,
    };
    if hkv != hv || kv_rows != skv {
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
    let finite = |what: &str, xs: &[f32]| -> Result<()> {
        match xs.iter().position(|x| !x.is_finite()) {
            Some(i) => Err(Error::InvalidArgument {
                op: OP,
                detail: format!("{what}[{i}] is {}; it must be finite", xs[i]),
            }),
            None => Ok(()),
        }
    };
    for (what, xs) in [("alibi_slopes", o.alibi_slopes), ("sinks", o.sinks)] {
        if let Some(xs) = xs {
            if xs.len() != hq {
                return Err(bad(format!(
                    "{what} has {} entries for heads_q {hq}",
                    xs.len()
                )));
            }
            finite(what, xs)?;
        }
    }
    if let Some(cap) = o.softcap {
        if !(cap.is_finite() && cap > 0.0) {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("softcap must be positive and finite, got {cap}"),
            });
        }
    }
    let wmax = i32::MAX as usize;
    if [o.window.left, o.window.right]
        .iter()
        .any(|w| w.is_some_and(|w| w > wmax))
        || o.sink_tokens > wmax
    {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: format!(
                "window {:?} / sink_tokens {} past {wmax}",
                o.window, o.sink_tokens
            ),
        });
    }
    if let Some(m) = o.mask {
        let s = m.shape;
        if !((s[0] == b || s[0] == 1) && (s[1] == hq || s[1] == 1) && s[2] == sq && s[3] == sk) {
            return Err(bad(format!(
                "mask is {}, expected [{b}|1, {hq}|1, {sq}, {sk}]",
                shape_str(&s)
            )));
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
        kv_outer: bk,
        kv_rows,
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
    let (q, k, v) = (&q.contiguous()?, &k.contiguous()?, &v.contiguous()?);
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
    // Q, K and V may be views of one fused projection: strided ones are read
    // through one gather copy each.
    let (q, k, v) = (&q.contiguous()?, &k.contiguous()?, &v.contiguous()?);
    let dims = check(q, k, v, opts)?;
    let mut outputs = vec![("out", out)];
    outputs.extend(lse.map(|t| ("lse", t)));
    let mut inputs = vec![("q", q), ("k", k), ("v", v)];
    inputs.extend(opts.bias.map(|t| ("bias", t)));
    inputs.extend(opts.mask.map(|m| ("mask", &m.words)));
    Tensor::disjoint(OP, &outputs, &inputs)?;
    outputs.push(("q", q));
    Tensor::same_context(OP, &outputs)?;
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
                kind: crate::Limit::StorageBinding,
            });
        }
    }
    let plan = plan::plan_for(ctx.profile(), &dims, opts, q.dtype(), lse.is_some())?;
    let io = Inputs {
        q,
        k,
        v,
        bias: opts.bias,
        mask: opts.mask.map(|m| &m.words),
    };
    let mut p = plan::params(&dims, opts);
    let aux = aux_table(&dims, opts, &mut p);
    let aux = ctx.table(&aux);
    match &plan.launch {
        Launch::Empty => {
            // No keys: every row is fully masked, so zeros and an LSE of −∞
            // (the head's sink logit with learned sinks, as the kernels give).
            zero_fill(out)?;
            if let Some(l) = lse {
                let row_lse = |h: usize| opts.sinks.map_or(f32::NEG_INFINITY, |s| s[h]);
                let vals: Vec<f32> = (0..l.len())
                    .map(|i| row_lse(i / dims.sq.max(1) % dims.hq.max(1)))
                    .collect();
                l.write(&vals)?;
            }
            Ok(())
        }
        Launch::Naive => naive::run(ctx, &io, opts, &dims, &p, &aux, out, lse),
        Launch::Flash { spec, row_block } => {
            flash::run(ctx, &io, &dims, spec, *row_block, &p, &aux, out, lse)
        }
        Launch::Rows { best, quick, kv } => flash::run_rows(
            ctx,
            &io,
            &dims,
            best,
            quick.as_ref(),
            kv,
            &p,
            &aux,
            out,
            lse,
        ),
        Launch::SplitKv {
            split,
            merge,
            kv,
            nsplit,
            chunk,
        } => split_kv::run(
            ctx,
            &io,
            &dims,
            (split, merge),
            kv.as_ref(),
            (*nsplit, *chunk),
            &p,
            &aux,
            out,
            lse,
        ),
    }
}

/// The plan an [`attention`] call with these operands and options would run:
/// the variant, the flash schedule or split-KV source, and why.
///
/// Errors: as [`attention`], before anything runs; a forced variant,
/// schedule or source that cannot serve the call is [`Error::Unsupported`].
pub fn plan(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<AttentionPlan> {
    let dims = check(q, k, v, opts)?;
    plan::plan_for(
        q.context().profile(),
        &dims,
        opts,
        q.dtype(),
        opts.return_lse,
    )
}

/// The operands of a call.
pub(crate) struct Inputs<'a> {
    q: &'a Tensor,
    k: &'a Tensor,
    v: &'a Tensor,
    bias: Option<&'a Tensor>,
    /// The boolean mask's words.
    mask: Option<&'a Tensor>,
}

fn zero_fill(t: &Tensor) -> Result<()> {
    let ctx = t.context();
    ctx.scoped(OP, || {
        let mut enc = ctx.encoder();
        enc.clear_buffer(t.buffer(), t.offset(), Some(t.padded_bytes()));
        ctx.submit(enc);
        Ok(())
    })
}

/// The kernels' aux table (kv_len, block table, ALiBi slopes, sink logits),
/// with its offsets and flags set in `p`.
fn aux_table(dims: &Dims, opts: &AttentionOptions, p: &mut spec::AttentionParams) -> Vec<u32> {
    let mut aux = match opts.kv_len {
        Some(l) => l.to_vec(),
        None => vec![dims.sk as u32; dims.b],
    };
    p.tab_off = aux.len() as u32;
    if let Some(pk) = opts.paged {
        aux.extend_from_slice(pk.block_table);
    }
    p.head_off = aux.len() as u32;
    let zeros = vec![0.0f32; dims.hq];
    if opts.alibi_slopes.is_some() {
        p.flags |= 1;
    }
    if opts.sinks.is_some() {
        p.flags |= 2;
    }
    for xs in [opts.alibi_slopes, opts.sinks] {
        aux.extend(xs.unwrap_or(&zeros).iter().map(|x| x.to_bits()));
    }
    aux
}
