//! The options of an attention call: layout, causal convention, the forced
//! variant, schedule or K/V source, and the inference options (window, sink
//! tokens, soft cap, ALiBi, learned sinks, boolean mask, paged K/V).

use super::spec;
use crate::context::Context;
use crate::error::{expect_dtype, Error, Result};
use crate::tensor::{shape_str, DType, Tensor};

/// The op name every attention error carries.
pub(crate) const OP: &str = "attention";

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

/// Attention backward kernels ([`attention_backward`](super::attention_backward)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackwardVariant {
    /// Baseline composed from the matmul kernels and two row kernels: S =
    /// Q·Kᵀ, P = softmax(S), dV = Pᵀ·dO, dP = dO·Vᵀ, dS, dQ = dS·K, dK =
    /// dSᵀ·Q, with S, P and dP materialised (O(seq_q · seq_k) memory). Fails
    /// with [`Error::TooLarge`] when S exceeds one storage binding.
    Naive,
    /// FlashAttention-2's backward: a prepass D = rowsum(dO ∘ O), a dK/dV
    /// kernel (keys resident, query rows streamed) and a dQ kernel (query
    /// rows resident, keys streamed), the probabilities recomputed from the
    /// forward's LSE; no score matrix in device memory, no float atomics.
    Flash,
    /// Flash. The default.
    Auto,
}

impl BackwardVariant {
    /// Every variant.
    pub const ALL: [BackwardVariant; 3] = [
        BackwardVariant::Naive,
        BackwardVariant::Flash,
        BackwardVariant::Auto,
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
    pub(crate) fn is_some(&self) -> bool {
        self.left.is_some() || self.right.is_some()
    }
}

/// A paged KV cache, as vLLM and FlashAttention's `block_table` hold one:
/// `k` and `v` passed to [`attention`](super::attention) are pools of pages,
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
    /// Errors: [`Error::DType`] when `words` is not u32, [`Error::Shape`]
    /// when it is not of that shape.
    pub fn from_words(words: Tensor, seq_k: usize) -> Result<BoolMask> {
        expect_dtype(OP, "mask words", words.dtype(), &[DType::U32])?;
        let s = words.shape().to_vec();
        if s.len() != 4 || s[3] != seq_k.div_ceil(32) {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "mask words are {}, expected [b|1, h|1, seq_q, {}] for seq_k {seq_k}",
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

    /// The packed words the kernels bind.
    pub(crate) fn words(&self) -> &Tensor {
        &self.words
    }
}

/// Options of [`attention`](super::attention).
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
    /// [`attention_backward`](super::attention_backward): also return the
    /// bias's gradient (needs [`bias`](Self::bias)).
    pub bias_grad: bool,
    /// Backward kernel (`None`: Auto).
    pub backward_variant: Option<BackwardVariant>,
    /// Where the flash backward reads its streamed operands from (K and V
    /// for dQ, Q and dO for dK/dV; `None`: chosen by the adapter's device
    /// type, as for split-KV).
    pub backward_reads: Option<KvReads>,
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
    /// Options that make the backward return the bias's gradient (or not).
    pub fn bias_grad(mut self, on: bool) -> Self {
        self.bias_grad = on;
        self
    }
    /// Options forcing the backward `variant`.
    pub fn backward_variant(mut self, variant: BackwardVariant) -> Self {
        self.backward_variant = Some(variant);
        self
    }
    /// Options forcing where the flash backward reads its streamed operands.
    pub fn backward_reads(mut self, reads: KvReads) -> Self {
        self.backward_reads = Some(reads);
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
