//! Decoding with a KV cache ([`Gpt2Cache`]): each block's keys and values
//! kept on the device, contiguous (`[batch, capacity, heads, head_dim]`) or
//! paged (vLLM's layout: pools of pages with a block table, pages taken
//! from a free list as sequences grow), appended by
//! [`kv_append`](crate::ops::attention::kv_append) and read by the
//! attention with each sequence's own length. [`Gpt2::extend`] runs a
//! chunk of new tokens per sequence (a prefill chunk, or one decode step)
//! in one submission.

use super::activations::shape_of;
use super::blocks::Cached;
use super::Gpt2;
use crate::error::{Error, Result};
use crate::ops::attention::PagedKv;
use crate::{DType, Tensor};

const OP: &str = "Gpt2::extend";

/// How a [`Gpt2Cache`] holds its keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLayout {
    /// `[batch, capacity, heads, head_dim]` per block: every sequence owns
    /// `capacity` rows.
    Contiguous,
    /// A pool of `pages` pages of `page_size` rows per block, shared by the
    /// sequences: a sequence takes a page when it grows past its last one
    /// (and gives its pages back on [`Gpt2Cache::reset`]).
    Paged {
        /// Rows a page.
        page_size: usize,
        /// Pages in the pool.
        pages: usize,
    },
}

/// The block table of a paged cache and its free pages.
#[derive(Debug, Clone)]
struct Pages {
    size: usize,
    /// `[batch, max_pages]`: the pages of each sequence, in order (entries
    /// past its pages are 0, never read: the attention stops at its length).
    table: Vec<u32>,
    /// Pages each sequence holds.
    held: Vec<usize>,
    max_pages: usize,
    /// Free pages, taken from the end.
    free: Vec<u32>,
}

/// A KV cache for decoding `batch` sequences of up to `capacity` tokens
/// each with one [`Gpt2`] (made by [`Gpt2::cache`]), with each sequence's
/// length.
#[derive(Debug)]
pub struct Gpt2Cache {
    /// Per block: K and V.
    layers: Vec<(Tensor, Tensor)>,
    lens: Vec<u32>,
    capacity: usize,
    pages: Option<Pages>,
    /// A zero `[n_positions, n_embd]` table (the embedding's position slot).
    zeros: Tensor,
    made_for: [usize; 5],
}

impl Gpt2Cache {
    /// Sequences.
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Tokens each sequence holds.
    pub fn lens(&self) -> &[u32] {
        &self.lens
    }

    /// Tokens a sequence may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Pages left in a paged cache's pool (`None` for a contiguous one).
    pub fn free_pages(&self) -> Option<usize> {
        self.pages.as_ref().map(|p| p.free.len())
    }

    /// Empties every sequence (a paged cache's pages go back to the pool).
    pub fn reset(&mut self) {
        self.lens.iter_mut().for_each(|l| *l = 0);
        if let Some(p) = &mut self.pages {
            let all = p.free.len() + p.held.iter().sum::<usize>();
            p.free = (0..all as u32).rev().collect();
            p.held.iter_mut().for_each(|h| *h = 0);
            p.table.iter_mut().for_each(|e| *e = 0);
        }
    }
}

impl Gpt2 {
    /// A KV cache of `batch` empty sequences of up to `capacity` tokens
    /// (at most `n_positions`).
    ///
    /// Errors: [`Error::InvalidArgument`] for `batch` or `capacity` 0, a
    /// capacity past `n_positions`, or a page size or page count of 0;
    /// [`Error::TooLarge`] for a cache past one buffer (or a block table
    /// past one binding); GPU errors.
    pub fn cache(&self, batch: usize, capacity: usize, layout: CacheLayout) -> Result<Gpt2Cache> {
        let c = &self.config;
        let bad = |detail: String| Error::InvalidArgument {
            op: "Gpt2::cache",
            detail,
        };
        if batch == 0 || capacity == 0 {
            return Err(bad(format!(
                "batch {batch} × capacity {capacity}: empty cache"
            )));
        }
        if capacity > c.n_positions {
            return Err(bad(format!(
                "capacity {capacity} is past the model's {} positions (n_positions)",
                c.n_positions
            )));
        }
        let (h, d) = (c.n_head, c.head_dim());
        let shape = match layout {
            CacheLayout::Contiguous => [batch, capacity, h, d],
            CacheLayout::Paged { page_size, pages } => {
                if page_size == 0 || pages == 0 {
                    return Err(bad(format!("{pages} pages of {page_size} rows")));
                }
                [pages, page_size, h, d]
            }
        };
        // The tensors first: their sizes are checked (TooLarge) before any
        // host table is sized from the arguments.
        let layers = (0..c.n_layer)
            .map(|_| {
                let k = Tensor::zeros(&self.ctx, &shape, DType::F32)?;
                Ok((k, Tensor::zeros(&self.ctx, &shape, DType::F32)?))
            })
            .collect::<Result<_>>()?;
        let pages = match layout {
            CacheLayout::Contiguous => None,
            CacheLayout::Paged { page_size, pages } => {
                let max_pages = capacity.div_ceil(page_size);
                // The block table goes to the device with each call.
                let limit = self.ctx.max_binding();
                let bytes = batch
                    .checked_mul(max_pages)
                    .and_then(|n| n.checked_mul(4))
                    .map_or(u64::MAX, |b| b as u64);
                if bytes > limit {
                    return Err(Error::TooLarge {
                        op: "Gpt2::cache",
                        what: format!("the block table of {batch} sequences × {max_pages} pages"),
                        size: bytes,
                        limit,
                        kind: crate::error::Limit::StorageBinding,
                    });
                }
                Some(Pages {
                    size: page_size,
                    table: vec![0; batch * max_pages],
                    held: vec![0; batch],
                    max_pages,
                    // Page indices are u32: the pool tensor's size check
                    // keeps `pages` far below 2³².
                    free: (0..pages as u32).rev().collect(),
                })
            }
        };
        Ok(Gpt2Cache {
            layers,
            lens: vec![0; batch],
            capacity,
            pages,
            zeros: Tensor::zeros(&self.ctx, &[c.n_positions, c.n_embd], DType::F32)?,
            made_for: shape_of(c),
        })
    }

    /// Appends `tokens[b]` to sequence `b` of `cache` (one slice per
    /// sequence, each its own length, possibly empty: a prefill chunk, or
    /// one token each when decoding) and returns the logits `[batch, s,
    /// vocab]` of the new positions, `s` the longest slice: row `t` of
    /// sequence `b` is the prediction after its `t`-th new token, for `t <
    /// tokens[b].len()` (later rows are padding, undefined). Every block
    /// appends its keys and values with `kv_append` and attends over the
    /// cache, each sequence with its own length; one submission.
    /// Shorter slices are padded at their end, so each sequence needs room
    /// for `s` rows past its length (they are overwritten by its next
    /// tokens).
    ///
    /// Errors (the cache unchanged): [`Error::Shape`] for a slice count
    /// other than the cache's batch, or a sequence whose new tokens pass
    /// `n_positions` (the prompt is longer than the context);
    /// [`Error::InvalidArgument`] for an id past the vocabulary (naming
    /// it), a cache of another model, or a cache too small for the call (a
    /// sequence's length + `s` past its capacity, or a paged pool without
    /// the pages it needs); GPU errors.
    pub fn extend(&self, cache: &mut Gpt2Cache, tokens: &[&[u32]]) -> Result<Tensor> {
        let c = &self.config;
        if cache.made_for != shape_of(c) || cache.layers.len() != c.n_layer {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!(
                    "a cache made for a model of (vocab, n_embd, n_inner, n_head, n_layer) {:?}, \
                     this one is {:?}",
                    cache.made_for,
                    shape_of(c)
                ),
            });
        }
        let batch = cache.batch();
        if tokens.len() != batch {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "{} token slices for a cache of {batch} sequences",
                    tokens.len()
                ),
            });
        }
        let s = tokens.iter().map(|t| t.len()).max().unwrap_or(0);
        for (b, t) in tokens.iter().enumerate() {
            let len = cache.lens[b] as usize;
            if len + t.len() > c.n_positions {
                return Err(Error::Shape {
                    op: OP,
                    detail: format!(
                        "sequence {b} would hold {} tokens, past the model's context of {} \
                         (n_positions)",
                        len + t.len(),
                        c.n_positions
                    ),
                });
            }
            if let Some(i) = t.iter().position(|&id| id as usize >= c.vocab_size) {
                return Err(Error::InvalidArgument {
                    op: OP,
                    detail: format!(
                        "token {} (new token {i} of sequence {b}) is past the vocabulary of {}",
                        t[i], c.vocab_size
                    ),
                });
            }
            if len + s > cache.capacity {
                return Err(Error::InvalidArgument {
                    op: OP,
                    detail: format!(
                        "the cache is too small: sequence {b} holds {len} of {} tokens and the \
                         call appends {s} rows (its {} new tokens, padded to the longest)",
                        cache.capacity,
                        t.len()
                    ),
                });
            }
        }
        if s == 0 {
            return Tensor::zeros(&self.ctx, &[batch, 0, c.vocab_size], DType::F32);
        }
        // Pages for every row written, taken before anything runs (and
        // given back if the pool runs short).
        let mut pages = cache.pages.clone();
        if let Some(p) = &mut pages {
            for b in 0..batch {
                let need = (cache.lens[b] as usize + s).div_ceil(p.size);
                while p.held[b] < need {
                    let Some(page) = p.free.pop() else {
                        return Err(Error::InvalidArgument {
                            op: OP,
                            detail: format!(
                                "the cache is too small: its pool of {} pages has none left for \
                                 sequence {b} ({} rows)",
                                p.free.len() + p.held.iter().sum::<usize>(),
                                cache.lens[b] as usize + s
                            ),
                        });
                    };
                    p.table[b * p.max_pages + p.held[b]] = page;
                    p.held[b] += 1;
                }
            }
        }
        let mut ids = Vec::with_capacity(batch * s);
        let mut positions = Vec::with_capacity(batch * s);
        for (b, t) in tokens.iter().enumerate() {
            ids.extend_from_slice(t);
            ids.resize((b + 1) * s, 0);
            // Padding rows' positions are clamped into the table: their
            // outputs are never read.
            let last = c.n_positions as u32 - 1;
            positions.extend((0..s as u32).map(|i| (cache.lens[b] + i).min(last)));
        }
        let kv_len: Vec<u32> = cache.lens.iter().map(|&l| l + s as u32).collect();
        let acts = self.activations(batch, s, false)?;
        let ids = Tensor::from_slice(&self.ctx, &ids, &[batch, s])?;
        let positions = Tensor::from_slice(&self.ctx, &positions, &[batch, s])?;
        let paged = pages.as_ref().map(|p| PagedKv {
            block_table: &p.table,
            max_pages: p.max_pages,
        });
        let kv = Cached {
            layers: &cache.layers,
            lens: &cache.lens,
            kv_len: &kv_len,
            paged,
            positions: &positions,
            zeros: &cache.zeros,
        };
        self.ctx
            .record(|| self.model.forward(&ids, &acts, Some(&kv)))?;
        for (l, t) in cache.lens.iter_mut().zip(tokens) {
            *l += t.len() as u32;
        }
        cache.pages = pages;
        Ok(acts.logits().clone())
    }
}
