//! [`Index`], the interface the search indexes share ([`FlatIndex`],
//! [`IvfIndex`], [`ShardedIndex`]), as FAISS's abstract `faiss::Index` is
//! theirs: an application holds a `Box<dyn Index>` and swaps the exact
//! index for an inverted-file one in the line that builds it.
//!
//! The impls forward to each index's own methods (which stay the full API:
//! IVF's per-call `nprobe`, device tensors, files, plans); only what every
//! index serves is here.

use super::flat::FlatIndex;
use super::ivf::{IvfIndex, IvfSearchParams};
use super::sharded::ShardedIndex;
use super::SearchResult;
use crate::error::Result;

/// A vector index of `dim`-dimensional f32 vectors with `u64` ids: FAISS's
/// `faiss::Index` with an `IndexIDMap` around it. Object safe, so
/// `Box<dyn Index>` (or `&dyn Index`) holds any of flashdot's indexes:
///
/// ```no_run
/// use flashdot::ops::search::{FlatIndex, Index, IndexOptions, IvfIndex, IvfOptions};
/// # fn main() -> flashdot::Result<()> {
/// let ctx = flashdot::Context::new()?;
/// let (dim, corpus) = (64, vec![0.5f32; 64 * 10_000]);
/// let exact = false;
/// let mut ix: Box<dyn Index> = if exact {
///     Box::new(FlatIndex::new(&ctx, dim, IndexOptions::default())?)
/// } else {
///     Box::new(IvfIndex::new(&ctx, dim, IvfOptions::new(100).nprobe(8))?)
/// };
/// if !ix.is_trained() {
///     ix.train(&corpus)?; // k-means for IVF; flat indexes need none
/// }
/// ix.add(&corpus)?;
/// let top = ix.search(&corpus[..dim], 10)?;
/// # Ok(()) }
/// ```
///
/// The methods mean what the FAISS methods of the same name mean, with the
/// differences `docs/SEARCH.md` tabulates (ids never renumbered, a duplicate
/// id refused, ties in storage order). Where an index type has an inherent
/// method of the same name, method-call syntax picks the inherent one
/// (`IvfIndex::search_filtered` takes search parameters too); call
/// `Index::search_filtered(&ix, …)` to reach the trait's.
pub trait Index: Send + Sync + std::fmt::Debug {
    /// The index type, for messages (`"FlatIndex"`, `"IvfIndex"`,
    /// `"ShardedIndex"`).
    fn name(&self) -> &'static str;

    /// Dimension of the stored vectors (FAISS's `d`).
    fn dim(&self) -> usize;

    /// Vectors stored (FAISS's `ntotal`).
    fn len(&self) -> usize;

    /// Whether no vector is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the index may be added to and searched (FAISS's
    /// `is_trained`): always for flat indexes; for IVF once
    /// [`train`](Self::train) has run.
    fn is_trained(&self) -> bool {
        true
    }

    /// Learns what the index needs from `vectors` (`[n, dim]` row-major
    /// f32), as FAISS's `Index::train`: IVF's k-means quantiser. The
    /// default, for indexes that need no training (flat, sharded flat),
    /// reads nothing and returns `Ok`, as FAISS's flat indexes do.
    ///
    /// Errors: the index's own (see [`IvfIndex::train`]).
    fn train(&mut self, vectors: &[f32]) -> Result<()> {
        let _ = vectors;
        Ok(())
    }

    /// Appends `data` (`[n, dim]` row-major f32) with the next free ids (0,
    /// 1, 2, … in a fresh index; one past the largest id stored so far).
    ///
    /// Errors: rows not of `dim` ([`Error::Shape`](crate::Error::Shape));
    /// an untrained index ([`Error::InvalidArgument`](crate::Error::InvalidArgument)).
    fn add(&mut self, data: &[f32]) -> Result<()>;

    /// Appends `data` (`[n, dim]` row-major f32) with the caller's ids (as
    /// FAISS's `add_with_ids`), each at most [`MAX_ID`](super::MAX_ID),
    /// unique and not stored yet.
    ///
    /// Errors: rows not of `dim` or not one id per row
    /// ([`Error::Shape`](crate::Error::Shape)); a bad id or an untrained
    /// index ([`Error::InvalidArgument`](crate::Error::InvalidArgument)).
    fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()>;

    /// The `k` best vectors for each of `queries` (`[m, dim]` row-major
    /// f32): `[m, k]` scores and ids, best first (L2: squared distances,
    /// nearest first), rows past what is found padded with id −1 and score
    /// −∞ (+∞ for L2), as FAISS's `search`. IVF probes its default
    /// `nprobe` lists.
    ///
    /// Errors: `k` over [`MAX_K`](super::MAX_K) or an untrained index
    /// ([`Error::InvalidArgument`](crate::Error::InvalidArgument));
    /// queries not of `dim` ([`Error::Shape`](crate::Error::Shape)).
    fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult>;

    /// [`search`](Self::search) among only the vectors whose id `allow`
    /// accepts (FAISS's `IDSelector` in `SearchParameters`), applied inside
    /// the scan. `Sync` because a sharded index calls it from one thread
    /// per shard. Errors: as [`search`](Self::search).
    fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        allow: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<SearchResult>;

    /// Removes the vectors with these ids (ids not stored are skipped);
    /// returns how many were removed. Other ids do not change (unlike a
    /// FAISS flat index without an id map).
    ///
    /// Errors: a device error while compacting.
    fn remove_ids(&mut self, ids: &[u64]) -> Result<usize>;

    /// The stored vector with this id, decoded (f16 widened, int8 times its
    /// scale; normalised for cosine), as FAISS's `reconstruct`.
    ///
    /// Errors: no vector has this id
    /// ([`Error::InvalidArgument`](crate::Error::InvalidArgument)).
    fn reconstruct(&self, id: u64) -> Result<Vec<f32>>;

    /// Whether a vector with this id is stored.
    fn contains(&self, id: u64) -> bool;

    /// Removes every vector (FAISS's `reset`); the next
    /// [`add`](Self::add) starts again from id 0 and a trained index stays
    /// trained.
    fn reset(&mut self);

    /// Device bytes the index takes (stored vectors; IVF's centroids too).
    fn bytes(&self) -> u64;

    /// Waits until the device work the index queued is done, on every
    /// context it lives on (to time a step that queues work without
    /// reading it back, such as [`remove_ids`](Self::remove_ids)).
    ///
    /// Errors: the device was lost.
    fn synchronize(&self) -> Result<()>;
}

impl Index for FlatIndex {
    fn name(&self) -> &'static str {
        "FlatIndex"
    }
    fn dim(&self) -> usize {
        FlatIndex::dim(self)
    }
    fn len(&self) -> usize {
        FlatIndex::len(self)
    }
    fn add(&mut self, data: &[f32]) -> Result<()> {
        FlatIndex::add(self, data)
    }
    fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()> {
        FlatIndex::add_with_ids(self, data, ids)
    }
    fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        FlatIndex::search(self, queries, k)
    }
    fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        allow: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<SearchResult> {
        FlatIndex::search_filtered(self, queries, k, allow)
    }
    fn remove_ids(&mut self, ids: &[u64]) -> Result<usize> {
        FlatIndex::remove_ids(self, ids)
    }
    fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        FlatIndex::reconstruct(self, id)
    }
    fn contains(&self, id: u64) -> bool {
        FlatIndex::contains(self, id)
    }
    fn reset(&mut self) {
        FlatIndex::reset(self)
    }
    fn bytes(&self) -> u64 {
        FlatIndex::bytes(self)
    }
    fn synchronize(&self) -> Result<()> {
        self.context().synchronize()
    }
}

impl Index for IvfIndex {
    fn name(&self) -> &'static str {
        "IvfIndex"
    }
    fn dim(&self) -> usize {
        IvfIndex::dim(self)
    }
    fn len(&self) -> usize {
        IvfIndex::len(self)
    }
    fn is_trained(&self) -> bool {
        IvfIndex::is_trained(self)
    }
    fn train(&mut self, vectors: &[f32]) -> Result<()> {
        IvfIndex::train(self, vectors)
    }
    fn add(&mut self, data: &[f32]) -> Result<()> {
        IvfIndex::add(self, data)
    }
    fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()> {
        IvfIndex::add_with_ids(self, data, ids)
    }
    fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        IvfIndex::search(self, queries, k)
    }
    fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        allow: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<SearchResult> {
        IvfIndex::search_filtered(self, queries, k, IvfSearchParams::default(), allow)
    }
    fn remove_ids(&mut self, ids: &[u64]) -> Result<usize> {
        IvfIndex::remove_ids(self, ids)
    }
    fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        IvfIndex::reconstruct(self, id)
    }
    fn contains(&self, id: u64) -> bool {
        IvfIndex::contains(self, id)
    }
    fn reset(&mut self) {
        IvfIndex::reset(self)
    }
    fn bytes(&self) -> u64 {
        IvfIndex::bytes(self)
    }
    fn synchronize(&self) -> Result<()> {
        self.context().synchronize()
    }
}

impl Index for ShardedIndex {
    fn name(&self) -> &'static str {
        "ShardedIndex"
    }
    fn dim(&self) -> usize {
        ShardedIndex::dim(self)
    }
    fn len(&self) -> usize {
        ShardedIndex::len(self)
    }
    fn add(&mut self, data: &[f32]) -> Result<()> {
        ShardedIndex::add(self, data)
    }
    fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()> {
        ShardedIndex::add_with_ids(self, data, ids)
    }
    fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        ShardedIndex::search(self, queries, k)
    }
    fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        allow: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<SearchResult> {
        ShardedIndex::search_filtered(self, queries, k, allow)
    }
    fn remove_ids(&mut self, ids: &[u64]) -> Result<usize> {
        ShardedIndex::remove_ids(self, ids)
    }
    fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        ShardedIndex::reconstruct(self, id)
    }
    fn contains(&self, id: u64) -> bool {
        ShardedIndex::contains(self, id)
    }
    fn reset(&mut self) {
        ShardedIndex::reset(self)
    }
    fn bytes(&self) -> u64 {
        ShardedIndex::bytes(self)
    }
    fn synchronize(&self) -> Result<()> {
        self.shards()
            .iter()
            .try_for_each(|s| s.context().synchronize())
    }
}
