//! Appending new K/V rows to a KV cache on the device, contiguous or paged.

use super::spec::{slot, AttentionKernel, AttentionParams, AttentionSpec, Extras};
use super::{Layout, PagedKv};
use crate::error::{Error, Result};
use crate::tensor::{shape_str, Tensor};

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
/// `kv_len[b] + s_new` past a sequence's capacity; [`Error::InvalidArgument`]
/// for mixed dtypes, views the kernel cannot bind, or a cache sharing a
/// buffer with the new rows.
pub fn kv_append(
    k_cache: &Tensor,
    v_cache: &Tensor,
    k_new: &Tensor,
    v_new: &Tensor,
    kv_len: &[u32],
    layout: Layout,
    paged: Option<PagedKv>,
) -> Result<()> {
    const OP_APPEND: &str = "kv_append";
    Tensor::same_context(
        OP_APPEND,
        &[
            ("k_cache", k_cache),
            ("v_cache", v_cache),
            ("k_new", k_new),
            ("v_new", v_new),
        ],
    )?;
    Tensor::disjoint(
        OP_APPEND,
        &[("k_cache", k_cache), ("v_cache", v_cache)],
        &[("k_new", k_new), ("v_new", v_new)],
    )?;
    let bad = |why: String| Error::Shape {
        op: OP_APPEND,
        detail: format!(
            "k_cache {}, v_cache {}, k_new {}, v_new {} ({layout:?} layout{}): {why}",
            shape_str(k_cache.shape()),
            shape_str(v_cache.shape()),
            shape_str(k_new.shape()),
            shape_str(v_new.shape()),
            if paged.is_some() { ", paged" } else { "" }
        ),
    };
    let dt = k_cache.dtype();
    if [v_cache, k_new, v_new].iter().any(|t| t.dtype() != dt) || dt == crate::DType::U32 {
        return Err(Error::InvalidArgument {
            op: OP_APPEND,
            detail: format!(
                "k_cache {}, v_cache {}, k_new {}, v_new {}: all must be f32 or all f16",
                dt,
                v_cache.dtype(),
                k_new.dtype(),
                v_new.dtype()
            ),
        });
    }
    if [k_cache, v_cache, k_new, v_new]
        .iter()
        .any(|t| t.shape().len() != 4)
    {
        return Err(bad("all four must be 4-D".into()));
    }
    // (outer, rows, heads, dim) of each, whatever the layout.
    let split = |s: &[usize]| match layout {
        Layout::Bhsd => (s[0], s[2], s[1], s[3]),
        Layout::Bshd => (s[0], s[1], s[2], s[3]),
    };
    let (kb, krows, kh, kd) = split(k_cache.shape());
    let (vb, vrows, vh, vd) = split(v_cache.shape());
    let (b, s_new, nh, nd) = split(k_new.shape());
    let (b2, s2, nh2, nd2) = split(v_new.shape());
    if (kb, krows, kh) != (vb, vrows, vh) || (b, s_new, nh) != (b2, s2, nh2) || kh != nh {
        return Err(bad("batch, rows and heads_kv must agree".into()));
    }
    if kd != nd || vd != nd2 {
        return Err(bad("head dims of the cache and the new rows differ".into()));
    }
    if kv_len.len() != b {
        return Err(bad(format!(
            "kv_len has {} entries for batch {b}",
            kv_len.len()
        )));
    }
    let capacity = match paged {
        Some(pk) => {
            if let Some(why) = pk.problem(b, kb) {
                return Err(bad(why));
            }
            pk.max_pages * krows
        }
        None => {
            if kb != b {
                return Err(bad("the cache's batch differs from the new rows'".into()));
            }
            krows
        }
    };
    if let Some((i, &l)) = kv_len
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize + s_new > capacity)
    {
        return Err(bad(format!(
            "sequence {i} holds {l} keys: {s_new} more pass its capacity {capacity}"
        )));
    }
    if b * s_new * kh == 0 {
        return Ok(());
    }
    let ctx = k_cache.context();
    let spec = AttentionSpec {
        kernel: AttentionKernel::Append,
        dtype: dt,
        vec: false,
        bias: false,
        lse: false,
        extras: Extras {
            paged: paged.is_some(),
            ..Extras::default()
        },
    };
    let pipe = ctx.pipeline(&spec)?;
    let mut aux = kv_len.to_vec();
    aux.extend_from_slice(paged.map_or(&[][..], |pk| pk.block_table));
    let aux = ctx.table(&aux);
    let strides = |heads, seq, dim| super::plan::strides(layout, heads, seq, dim);
    ctx.scoped(OP_APPEND, || {
        let mut enc = ctx.encoder();
        let mut params = Vec::new();
        for (cache, new, dim) in [(k_cache, k_new, kd), (v_cache, v_new, vd)] {
            if dim == 0 {
                continue;
            }
            let [q_sb, q_sh, q_ss] = strides(kh, s_new, dim);
            let [k_sb, k_sh, k_ss] = strides(kh, krows, dim);
            let p = AttentionParams {
                b: b as u32,
                hkv: kh as u32,
                sq: s_new as u32,
                sk: capacity as u32,
                d: dim as u32,
                q_sb,
                q_sh,
                q_ss,
                k_sb,
                k_sh,
                k_ss,
                tab_off: b as u32,
                max_pages: paged.map_or(0, |pk| pk.max_pages as u32),
                page: krows as u32,
                page_shift: super::plan::page_shift(krows),
                npages: kb as u32,
                ..Default::default()
            };
            params.push((ctx.uniform(&p), cache, new, dim));
        }
        for (ubuf, cache, new, dim) in &params {
            let (gx, gy) = ctx.grid((b * s_new * kh * dim).div_ceil(64) as u32);
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
