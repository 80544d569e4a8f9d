//! Exact top-k search over a flat index, in the spirit of FAISS's `IndexFlatIP`.
//! Kernel source: `topk.wgsl`.
//!
//! The corpus lives in as many 2-D array textures ("chunks") as the adapter's
//! limits require, each scanned in turn. The scan is fused: a workgroup
//! scores a block of queries against a slice of a chunk and keeps only each
//! query's best candidates, which a selection pass then reduces; the m × n
//! score matrix is never written to device memory.
//!
//! Every stored vector has a `u64` id: the caller's (`add_with_ids`, as FAISS's
//! `IndexIDMap`) or the next free one (`add`). `remove_ids` compacts the
//! index on the device. Results are best first, ties broken by storage order
//! (the order vectors were added, removals aside); NaN scores (a NaN in the
//! corpus) sort after every number. As in FAISS, `k` past the index's length
//! pads each row with id −1 and score −∞. How flashdot differs from FAISS
//! (ids, ties, filters, 8-bit storage, files, shards, device results) is
//! tabulated in `docs/SEARCH.md`.
//!
//! # Layering
//!
//! The pieces are those FAISS separates, each usable by another index type
//! (the inverted-file index keeps one store with list offsets) without
//! [`FlatIndex`]; each file imports only from the ones
//! listed before it:
//!
//! - `ids` — the id map (`IndexIDMap`): ids ↔ storage rows, removals, the
//!   device id table. `codec` — [`Storage`] and the host encode/decode of
//!   rows, scales and norms (`IndexFlatCodes`' codes).
//! - `plan` — the planner, the kernel specs of `topk.wgsl` and their params.
//! - `store` — the chunked store of one codec's rows: textures, growth,
//!   compaction, rows read back; storage rows only, no ids.
//! - `add` (host and device-tensor appends to a store) and `scan` (batching,
//!   the scan / select / finish dispatches, the one readback) — over a
//!   store.
//! - this file — the API types; `flat` — [`FlatIndex`], a store and an id
//!   map; `file` ([`FlatIndex::save`] / [`FlatIndex::load`]) and `sharded`
//!   ([`ShardedIndex`]) on top of it.
//! - `rearrange` — a store rebuilt in another row order by device copies;
//!   `lists` — the inverted-file list scan over a store laid out list by
//!   list (a work table of probed lists and their queries, the scan with
//!   `IVF`, ragged select, one readback).
//! - `nearest` ([`assign`]: each point's nearest centroid, a GEMM with an
//!   argmin epilogue, `nearest.wgsl`); `kmeans` ([`kmeans`]: assignment by
//!   `nearest`, the centroid means by its own kernel) and `ivf` ([`IvfIndex`]: one
//!   store list by list, a flat quantiser trained by `kmeans`) on top of
//!   `flat`, and `ivf_search` (its searches, by `lists`) and `ivf_file`
//!   ([`IvfIndex::save`] / [`IvfIndex::load`], by `file`'s reader and
//!   writer) on top of `ivf`.
//! - `index` — the [`Index`] trait (FAISS's `faiss::Index`) that
//!   [`FlatIndex`], [`IvfIndex`] and [`ShardedIndex`] implement, on top of
//!   all three: `Box<dyn Index>` swaps one for another.

mod add;
mod codec;
pub mod file;
mod flat;
mod ids;
mod index;
mod ivf;
pub mod ivf_file;
mod ivf_search;
mod kmeans;
mod lists;
mod nearest;
mod plan;
mod rearrange;
mod scan;
mod sharded;
mod store;

pub use codec::Storage;
pub use flat::FlatIndex;
pub use ids::MAX_ID;
pub use index::Index;
pub use ivf::{IvfIndex, IvfOptions, IvfSearchParams, MAX_NLIST};
pub use kmeans::{kmeans, KMeansOptions, KMeansResult};
pub use nearest::{assign, assign_tensor, Assignment};
pub use plan::{Scan, SearchPlan};
pub use sharded::ShardedIndex;

use crate::error::{Error, Result};
use crate::ops::similarity::Metric;
#[cfg(test)]
pub(crate) use kmeans::reachable_specs as kmeans_specs;
#[cfg(test)]
pub(crate) use kmeans::KMeansParams;
#[cfg(test)]
pub(crate) use nearest::{reachable_specs as nearest_specs, NearestParams};
#[cfg(test)]
pub(crate) use plan::ivf_group;
#[cfg(test)]
pub(crate) use plan::reachable as reachable_specs;
#[cfg(test)]
pub(crate) use plan::TopkParams;
#[cfg(test)]
pub(crate) use scan::{batch_size, MAX_BATCH_PASSES};

/// Largest supported k.
pub const MAX_K: usize = 1024;

/// Index construction options.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct IndexOptions {
    /// Similarity (cosine normalises vectors on insert and queries on search).
    pub metric: Metric,
    /// Storage type.
    pub storage: Storage,
    /// Rows per chunk; `None`: as many as one storage binding's size holds
    /// (and the adapter's texture limits allow). Small values force the
    /// multi-chunk path (tests).
    pub max_chunk_rows: Option<usize>,
}

impl IndexOptions {
    /// Options with `metric`.
    pub fn metric(mut self, metric: Metric) -> Self {
        self.metric = metric;
        self
    }
    /// Options with `storage`.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }
    /// Options with at most `rows` rows per chunk.
    pub fn max_chunk_rows(mut self, rows: usize) -> Self {
        self.max_chunk_rows = Some(rows);
        self
    }
}

/// Result of [`FlatIndex::search`]: `m` rows of `k` (score, id), best first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchResult {
    /// Queries.
    pub m: usize,
    /// Results per query: the `k` asked for.
    pub k: usize,
    /// `[m, k]` scores; −∞ where a row has fewer than `k` results.
    pub scores: Vec<f32>,
    /// `[m, k]` ids; −1 where a row has fewer than `k` results (FAISS's
    /// convention: the index holds fewer than `k` vectors).
    pub ids: Vec<i64>,
}

/// Results of [`FlatIndex::search_device`], on the device.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeviceSearchResult {
    /// `[m, k]` f32 scores (L2: squared distances), best first; −∞ (+∞ for
    /// L2) past the index's length.
    pub scores: crate::Tensor,
    /// `[m, k, 2]` u32: each id as an i64 in little-endian halves; −1 past the
    /// index's length.
    pub ids: crate::Tensor,
}

/// Fails unless `k` is in `0..=MAX_K`.
fn check_k(op: &'static str, k: usize) -> Result<()> {
    if k > MAX_K {
        return Err(Error::InvalidArgument {
            op,
            detail: format!("k must be in 0..={MAX_K}, got {k}"),
        });
    }
    Ok(())
}

/// The score of a missing result: −∞, or +∞ for L2 (a distance).
fn pad_score(metric: Metric) -> f32 {
    if metric == Metric::L2 {
        f32::INFINITY
    } else {
        f32::NEG_INFINITY
    }
}
