//! An index split across several contexts (several GPUs in one process, as
//! FAISS's `IndexShards`): adds are spread so that the shards stay balanced,
//! each query goes to every shard at once (one thread per shard), and the
//! shards' top-k lists are merged on the host.

use std::collections::HashSet;

use super::flat::FlatIndex;
use super::ids::{fresh_ids, MAX_ID};
use super::{check_k, pad_score, IndexOptions, SearchResult};
use crate::context::Context;
use crate::error::{Error, Result};

const OP: &str = "ShardedIndex";

/// [`FlatIndex`]es of one dim and options on several contexts, searched as
/// one. Ids are global (a vector is in exactly one shard); results equal one
/// `FlatIndex` holding every vector, ties broken by the lower id (which is
/// storage order when ids grow with insertion, as `add` gives them).
#[derive(Debug)]
pub struct ShardedIndex {
    shards: Vec<FlatIndex>,
    dim: usize,
    next_id: u64,
}

impl ShardedIndex {
    /// One empty shard per context (contexts may share an adapter).
    ///
    /// Errors: no contexts ([`Error::InvalidArgument`]); as
    /// [`FlatIndex::new`] for `dim` and `opts` on each context.
    pub fn new(contexts: &[Context], dim: usize, opts: IndexOptions) -> Result<Self> {
        if contexts.is_empty() {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: "at least one context is needed".into(),
            });
        }
        let shards = contexts
            .iter()
            .map(|c| FlatIndex::new(c, dim, opts))
            .collect::<Result<Vec<_>>>()?;
        Ok(ShardedIndex {
            shards,
            dim,
            next_id: 0,
        })
    }

    /// The shards, in context order.
    pub fn shards(&self) -> &[FlatIndex] {
        &self.shards
    }
    /// Vectors in all shards.
    pub fn len(&self) -> usize {
        self.shards.iter().map(FlatIndex::len).sum()
    }
    /// Whether every shard is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Whether a vector with this id is stored in any shard.
    pub fn contains(&self, id: u64) -> bool {
        self.shards.iter().any(|s| s.contains(id))
    }
    /// Device bytes the stored vectors take, over every shard.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(FlatIndex::bytes).sum()
    }
    /// Removes every vector and id from every shard (the next `add` starts
    /// again from id 0, as [`FlatIndex::reset`]).
    pub fn reset(&mut self) {
        self.shards.iter_mut().for_each(FlatIndex::reset);
        self.next_id = 0;
    }

    /// Appends `data` (`[n, dim]` row-major f32) with the next free ids,
    /// spread over the shards. Errors: as [`FlatIndex::add`].
    pub fn add(&mut self, data: &[f32]) -> Result<()> {
        let ids = fresh_ids(self.next_id, data.len() / self.dim, OP)?;
        self.add_with_ids(data, &ids)
    }

    /// Appends `data` with the caller's ids, unique across all shards, spread
    /// so that the shards' lengths even out (rows keep their order within a
    /// shard). Errors: as [`FlatIndex::add_with_ids`], checked across every
    /// shard before anything is added; a shard's device error after others
    /// took their rows removes those rows again.
    pub fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()> {
        let d = self.dim;
        if !data.len().is_multiple_of(d) || ids.len() != data.len() / d {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "{} values and {} ids: not whole rows of dim {d}, one id each",
                    data.len(),
                    ids.len()
                ),
            });
        }
        let mut seen = HashSet::with_capacity(ids.len());
        if let Some(&id) = ids
            .iter()
            .find(|&&id| id > MAX_ID || !seen.insert(id) || self.contains(id))
        {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("id {id} is over {MAX_ID}, repeated, or already stored"),
            });
        }
        // Fill each shard up to an even share of the new total, in order.
        let n = ids.len();
        let total = self.len() + n;
        let share = total.div_ceil(self.shards.len());
        let mut at = 0;
        let mut added: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for s in 0..self.shards.len() {
            let take = share.saturating_sub(self.shards[s].len()).min(n - at);
            if take == 0 {
                continue;
            }
            let rows = at..at + take;
            let r = self.shards[s]
                .add_with_ids(&data[rows.start * d..rows.end * d], &ids[rows.clone()]);
            if let Err(e) = r {
                for (t, done) in added {
                    let _ = self.shards[t].remove_ids(&ids[done]);
                }
                // Rows the failing shard kept before its error go too.
                let _ = self.shards[s].remove_ids(&ids[rows]);
                return Err(e);
            }
            added.push((s, rows));
            at += take;
        }
        self.next_id = ids.iter().fold(self.next_id, |m, &id| m.max(id + 1));
        Ok(())
    }

    /// Removes the vectors with these ids from whichever shards hold them;
    /// returns how many were removed. Errors: as [`FlatIndex::remove_ids`].
    pub fn remove_ids(&mut self, ids: &[u64]) -> Result<usize> {
        let mut n = 0;
        for s in &mut self.shards {
            n += s.remove_ids(ids)?;
        }
        Ok(n)
    }

    /// The stored vector with this id (see [`FlatIndex::reconstruct`]).
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        match self.shards.iter().find(|s| s.contains(id)) {
            Some(s) => s.reconstruct(id),
            None => Err(Error::InvalidArgument {
                op: OP,
                detail: format!("no vector has id {id}"),
            }),
        }
    }

    /// The `k` best vectors over all shards for each query, as
    /// [`FlatIndex::search`]: every shard searched at once on its own
    /// thread, then each query's lists merged (best first, NaN scores last,
    /// ties by the lower id; −1 / −∞ padding past the total length).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        self.fan_out(k, &|s: &FlatIndex| s.search(queries, k))
    }

    /// [`search`](Self::search) over the vectors whose id `allow` accepts,
    /// each shard filtering in its scan as [`FlatIndex::search_filtered`].
    pub fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        allow: impl Fn(u64) -> bool + Sync,
    ) -> Result<SearchResult> {
        self.fan_out(k, &|s: &FlatIndex| s.search_filtered(queries, k, &allow))
    }

    fn fan_out(
        &self,
        k: usize,
        one: &(dyn Fn(&FlatIndex) -> Result<SearchResult> + Sync),
    ) -> Result<SearchResult> {
        check_k(OP, k)?;
        let parts: Vec<Result<SearchResult>> = std::thread::scope(|sc| {
            let hs: Vec<_> = self
                .shards
                .iter()
                .map(|s| sc.spawn(move || one(s)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::InvalidArgument {
                            op: OP,
                            detail: "a shard's search thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
        let m = parts.first().map_or(0, |p| p.m);
        let mut out = SearchResult {
            m,
            k,
            scores: Vec::with_capacity(m * k),
            ids: Vec::with_capacity(m * k),
        };
        // L2 scores are distances: smaller first, +∞ padding.
        let metric = self.shards[0].opts.metric;
        let l2 = metric == crate::ops::similarity::Metric::L2;
        let pad = pad_score(metric);
        let mut row: Vec<(f32, i64)> = Vec::with_capacity(k * parts.len());
        for q in 0..m {
            row.clear();
            for p in &parts {
                let span = q * k..(q + 1) * k;
                row.extend(
                    p.scores[span.clone()]
                        .iter()
                        .zip(&p.ids[span])
                        .filter(|(_, &id)| id >= 0)
                        .map(|(&s, &id)| (s, id)),
                );
            }
            row.sort_by(|a, b| match (a.0.is_nan(), b.0.is_nan()) {
                // As the kernels compare: 0.0 and −0.0 tie.
                (false, false) => {
                    let by = if l2 {
                        a.0.partial_cmp(&b.0)
                    } else {
                        b.0.partial_cmp(&a.0)
                    };
                    by.unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1))
                }
                (x, y) => x.cmp(&y).then(a.1.cmp(&b.1)),
            });
            row.resize(k, (pad, -1));
            out.scores.extend(row.iter().map(|r| r.0));
            out.ids.extend(row.iter().map(|r| r.1));
        }
        Ok(out)
    }
}
