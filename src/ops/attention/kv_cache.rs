//! Appending new K/V rows to a KV cache on the device, contiguous or paged.

use super::options::{Layout, PagedKv};
use super::params::{page_shift, strides};
use super::spec::{slot, AttentionKernel, AttentionParams, AttentionSpec, Extras};
use crate::error::{expect_dtype, Error, Result};
use crate::tensor::{shape_str, DType, Tensor};

const OP_APPEND: &str = "kv_append";

/// Writes the `s_new` rows of `k_new` and `v_new` into a KV cache at each
/// sequence's current length: row `t` of sequence `b` becomes key
/// `kv_len[b] + t`. The caller then advances its lengths by `s_new` and
/// passes them as [`AttentionOptions::kv_len`](super::AttentionOptions::kv_len).
///
/// Shapes ([`Layout::Bshd`]; [`Layout::Bhsd`] swaps the middle axes of all
/// four): `k_new` `[batch, s_new, heads_kv, d]`, `v_new` `[batch, s_new,
/// heads_kv, d_v]`; the cache `k_cache` `[batch, capacity, heads_kv, d]`
/// (`v_cache` with `d_v`), or with `paged` the page pools
/// `[num_pages, page_size, heads_kv, d]` of [`PagedKv`]. One dispatch per
/// tensor, no host round trip.
///
/// Errors: [`Error::Shape`] naming the shapes when they disagree, a block
/// table of the wrong length or with a page past the pool, or
/// `kv_len[b] + s_new` past a sequence's capacity; [`Error::DType`] unless
/// all four are f32 or all f16; [`Error::InvalidArgument`] for views the
/// kernel cannot bind, or a cache sharing a buffer with the new rows.
pub fn kv_append(
    k_cache: &Tensor,
    v_cache: &Tensor,
    k_new: &Tensor,
    v_new: &Tensor,
    kv_len: &[u32],
    layout: Layout,
    paged: Option<PagedKv>,
) -> Result<()> {
    let a = Append {
        k_cache,
        v_cache,
        k_new,
        v_new,
        kv_len,
        layout,
        paged,
    };
    let dims = a.check()?;
    if dims.b * dims.s_new * dims.heads == 0 {
        return Ok(());
    }
    a.run(&dims)
}

/// The operands of a [`kv_append`] call.
struct Append<'a> {
    k_cache: &'a Tensor,
    v_cache: &'a Tensor,
    k_new: &'a Tensor,
    v_new: &'a Tensor,
    kv_len: &'a [u32],
    layout: Layout,
    paged: Option<PagedKv<'a>>,
}

/// The extents of a [`kv_append`] call.
struct AppendDims {
    /// Sequences, new rows each, kv heads.
    b: usize,
    s_new: usize,
    heads: usize,
    /// The cache's outer extent and rows per outer index: (batch,
    /// capacity), or for a paged cache (pages, page size).
    outer: usize,
    rows: usize,
    /// Keys a sequence holds at most.
    capacity: usize,
    /// Head dims of K and of V.
    kd: usize,
    vd: usize,
}

impl Append<'_> {
    fn all(&self) -> [(&'static str, &Tensor); 4] {
        [
            ("k_cache", self.k_cache),
            ("v_cache", self.v_cache),
            ("k_new", self.k_new),
            ("v_new", self.v_new),
        ]
    }

    fn bad(&self, why: String) -> Error {
        let [kc, vc, kn, vn] = self.all().map(|(_, t)| shape_str(t.shape()));
        Error::Shape {
            op: OP_APPEND,
            detail: format!(
                "k_cache {kc}, v_cache {vc}, k_new {kn}, v_new {vn} ({:?} layout{}): {why}",
                self.layout,
                if self.paged.is_some() { ", paged" } else { "" }
            ),
        }
    }

    /// Checks the operands: one context, caches apart from the new rows,
    /// one float dtype, shapes that agree, room for every sequence's rows.
    fn check(&self) -> Result<AppendDims> {
        let [kc, vc, kn, vn] = self.all();
        Tensor::same_context(OP_APPEND, &self.all())?;
        Tensor::disjoint(OP_APPEND, &[kc, vc], &[kn, vn])?;
        let dt = self.k_cache.dtype();
        expect_dtype(OP_APPEND, "k_cache", dt, &DType::FLOAT)?;
        for (name, t) in [vc, kn, vn] {
            expect_dtype(OP_APPEND, name, t.dtype(), &[dt])?;
        }
        if self.all().iter().any(|(_, t)| t.shape().len() != 4) {
            return Err(self.bad("all four must be 4-D".into()));
        }
        // (outer, rows, heads, dim) of each, whatever the layout.
        let split = |t: &Tensor| {
            let s = t.shape();
            match self.layout {
                Layout::Bhsd => (s[0], s[2], s[1], s[3]),
                Layout::Bshd => (s[0], s[1], s[2], s[3]),
            }
        };
        let (kb, krows, kh, kd) = split(self.k_cache);
        let (vb, vrows, vh, vd) = split(self.v_cache);
        let (b, s_new, nh, nd) = split(self.k_new);
        let (b2, s2, nh2, nd2) = split(self.v_new);
        if (kb, krows, kh) != (vb, vrows, vh) || (b, s_new, nh) != (b2, s2, nh2) || kh != nh {
            return Err(self.bad("batch, rows and heads_kv must agree".into()));
        }
        if kd != nd || vd != nd2 {
            return Err(self.bad("head dims of the cache and the new rows differ".into()));
        }
        let dims = AppendDims {
            b,
            s_new,
            heads: kh,
            outer: kb,
            rows: krows,
            capacity: self.capacity(b, kb, krows)?,
            kd,
            vd,
        };
        self.check_room(&dims)?;
        Ok(dims)
    }

    /// Keys a sequence holds: the cache's rows, or the block table's pages'.
    fn capacity(&self, b: usize, outer: usize, rows: usize) -> Result<usize> {
        if self.kv_len.len() != b {
            return Err(self.bad(format!(
                "kv_len has {} entries for batch {b}",
                self.kv_len.len()
            )));
        }
        match self.paged {
            Some(pk) => match pk.problem(b, outer) {
                Some(why) => Err(self.bad(why)),
                None => Ok(pk.max_pages * rows),
            },
            None if outer != b => {
                Err(self.bad("the cache's batch differs from the new rows'".into()))
            }
            None => Ok(rows),
        }
    }

    /// Fails unless every sequence has room for the new rows.
    fn check_room(&self, dims: &AppendDims) -> Result<()> {
        let (s_new, capacity) = (dims.s_new, dims.capacity);
        match self
            .kv_len
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize + s_new > capacity)
        {
            Some((i, &l)) => Err(self.bad(format!(
                "sequence {i} holds {l} keys: {s_new} more pass its capacity {capacity}"
            ))),
            None => Ok(()),
        }
    }

    /// The params of the dispatch that appends to `dim`-wide rows.
    fn params(&self, dims: &AppendDims, dim: usize) -> AttentionParams {
        let strides = |heads, seq, dim| strides(self.layout, heads, seq, dim);
        let [q_sb, q_sh, q_ss] = strides(dims.heads, dims.s_new, dim);
        let [k_sb, k_sh, k_ss] = strides(dims.heads, dims.rows, dim);
        AttentionParams {
            b: dims.b as u32,
            hkv: dims.heads as u32,
            sq: dims.s_new as u32,
            sk: dims.capacity as u32,
            d: dim as u32,
            q_sb,
            q_sh,
            q_ss,
            k_sb,
            k_sh,
            k_ss,
            tab_off: dims.b as u32,
            max_pages: self.paged.map_or(0, |pk| pk.max_pages as u32),
            page: dims.rows as u32,
            page_shift: page_shift(dims.rows),
            npages: dims.outer as u32,
            ..Default::default()
        }
    }

    /// One dispatch per tensor (of a nonzero head dim), one submission.
    fn run(&self, dims: &AppendDims) -> Result<()> {
        let ctx = self.k_cache.context();
        let spec = AttentionSpec {
            kernel: AttentionKernel::Append,
            dtype: self.k_cache.dtype(),
            vec: false,
            bias: false,
            lse: false,
            extras: Extras {
                paged: self.paged.is_some(),
                ..Extras::default()
            },
        };
        let pipe = ctx.pipeline(&spec)?;
        let mut aux = self.kv_len.to_vec();
        aux.extend_from_slice(self.paged.map_or(&[][..], |pk| pk.block_table));
        let aux = ctx.table(&aux);
        ctx.scoped(OP_APPEND, || {
            let mut enc = ctx.encoder();
            let mut params = Vec::new();
            for (cache, new, dim) in [
                (self.k_cache, self.k_new, dims.kd),
                (self.v_cache, self.v_new, dims.vd),
            ] {
                if dim > 0 {
                    params.push((ctx.uniform(&self.params(dims, dim)), cache, new, dim));
                }
            }
            for (ubuf, cache, new, dim) in &params {
                let (gx, gy) =
                    ctx.grid((dims.b * dims.s_new * dims.heads * dim).div_ceil(64) as u32);
                ctx.dispatch(
                    &mut enc,
                    &pipe,
                    ubuf,
                    &[
                        (slot::IN1, new.bind()),
                        (slot::PACKED, cache.bind()),
                        (slot::AUX, aux.bind()),
                    ],
                    (gx, gy, 1),
                );
            }
            ctx.submit(enc);
            Ok(())
        })
    }
}
