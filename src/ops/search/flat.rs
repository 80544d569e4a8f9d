//! [`FlatIndex`]: one [`ChunkStore`] of every vector and an [`IdMap`] over
//! its rows — FAISS's `IndexIDMap` around an `IndexFlat` — searched by a
//! [`Scanner`] over the whole store.

use super::codec::Codec;
use super::ids::IdMap;
use super::plan::SearchPlan;
use super::scan::{device_queries, Candidates, Finish, Queries, Scanner};
use super::store::ChunkStore;
use super::{check_k, pad_score, DeviceSearchResult, IndexOptions, SearchResult, MAX_K};
use crate::context::Context;
use crate::error::{expect_dtype, Error, Result};
use crate::ops::similarity::Metric;
use crate::tensor::{shape_str, DType};

const OP: &str = "search";

/// A flat (brute-force) exact index of `dim`-dimensional vectors, each with a
/// `u64` id.
#[derive(Debug)]
pub struct FlatIndex {
    pub(super) opts: IndexOptions,
    pub(super) store: ChunkStore,
    pub(super) ids: IdMap,
}

/// A search's queries as the caller gave them: host rows, or a device tensor
/// `[m, dim]` f32.
#[derive(Clone, Copy)]
enum Input<'a> {
    Host(&'a [f32]),
    Device(&'a crate::Tensor),
}

impl FlatIndex {
    /// An empty index of `dim`-dimensional vectors.
    ///
    /// Errors: `dim == 0` ([`Error::InvalidArgument`]); a row wider than the
    /// adapter's textures hold ([`Error::Unsupported`]).
    pub fn new(ctx: &Context, dim: usize, opts: IndexOptions) -> Result<Self> {
        if dim == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: "dim must be at least 1".into(),
            });
        }
        // A stored row is one texture line: checked before any size is
        // computed from `dim` (a huge dim would overflow them).
        let max_dim = opts.storage.max_dim(ctx.profile().max_texture_2d);
        if dim > max_dim {
            return Err(Error::Unsupported {
                op: OP,
                detail: format!(
                    "rows of dim {dim} exceed one texture line of this adapter \
                     ({max_dim} values of {:?} storage)",
                    opts.storage
                ),
            });
        }
        let codec = Codec {
            dim,
            storage: opts.storage,
            metric: opts.metric,
        };
        Ok(FlatIndex {
            opts,
            store: ChunkStore::new(ctx, codec, opts.max_chunk_rows),
            ids: IdMap::default(),
        })
    }

    /// The context the index lives on.
    pub fn context(&self) -> &Context {
        self.store.context()
    }

    /// The ids of the stored vectors, in storage order (the order of ties).
    pub fn ids(&self) -> &[u64] {
        self.ids.ids()
    }

    /// Whether a vector with this id is stored.
    pub fn contains(&self, id: u64) -> bool {
        self.ids.row_of(id).is_some()
    }

    /// Removes every vector and id (the next `add` starts again from id 0).
    pub fn reset(&mut self) {
        self.ids.clear();
        self.store.clear();
    }

    /// Vectors in the index.
    pub fn len(&self) -> usize {
        self.store.len()
    }
    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Dimension.
    pub fn dim(&self) -> usize {
        self.store.codec().dim
    }
    /// Device bytes the stored vectors take.
    pub fn bytes(&self) -> u64 {
        self.store.bytes()
    }

    /// Appends `data` (`[n, dim]` row-major f32), converting to the storage
    /// type; the vectors get the next free ids (0, 1, 2, … in a fresh index;
    /// after [`add_with_ids`](Self::add_with_ids), one past the largest id
    /// stored so far).
    /// Errors: a length that is not a multiple of `dim`.
    pub fn add(&mut self, data: &[f32]) -> Result<()> {
        self.add_rows(data, None, OP)
    }

    /// Appends `data` (`[n, dim]` row-major f32) with the caller's ids (as
    /// FAISS's `IndexIDMap::add_with_ids`).
    ///
    /// Errors: a length that is not a multiple of `dim`, or `ids.len() != n`
    /// ([`Error::Shape`]); an id over [`MAX_ID`](crate::ops::search::MAX_ID), already
    /// stored, or repeated ([`Error::InvalidArgument`]: FAISS accepts
    /// duplicates, which make `remove_ids` and `reconstruct` ambiguous).
    /// Nothing is added on error.
    pub fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()> {
        self.add_rows(data, Some(ids), "FlatIndex::add_with_ids")
    }

    fn add_rows(&mut self, data: &[f32], given: Option<&[u64]>, op: &'static str) -> Result<()> {
        let dim = self.dim();
        if !data.len().is_multiple_of(dim) {
            return Err(Error::Shape {
                op: OP,
                detail: format!("{} values are not whole rows of dim {dim}", data.len()),
            });
        }
        let new_ids = self.ids.new_ids(data.len() / dim, given, op)?;
        let old = self.len();
        let r = self.store.add_host(data);
        // Rows appended before an error keep their ids: the index stays whole.
        self.ids.commit(&new_ids[..self.len() - old]);
        r
    }

    /// Appends the rows of a device tensor `x [n, dim]` f32 (embeddings a
    /// model produced on the GPU) without a host round trip: cosine indexes
    /// normalise them on the device, then they are copied into the index's
    /// storage.
    ///
    /// Errors: [`Error::DType`] unless `x` is f32, [`Error::Shape`] unless
    /// it is `[n, dim]`; [`Error::InvalidArgument`] for a tensor of another
    /// context (or a view that is not contiguous); [`Error::TooLarge`] for
    /// rows encoded on the device (f16 or int8 storage, or a `dim` that is
    /// not a multiple of 8) over one storage binding: add them in parts. The
    /// rows get the next free ids, as with [`add`](Self::add).
    pub fn add_tensor(&mut self, x: &crate::Tensor) -> Result<()> {
        self.add_device(x, None, "FlatIndex::add_tensor")
    }

    /// [`add_tensor`](Self::add_tensor) with the caller's ids, checked as
    /// [`add_with_ids`](Self::add_with_ids) checks them.
    pub fn add_tensor_with_ids(&mut self, x: &crate::Tensor, ids: &[u64]) -> Result<()> {
        self.add_device(x, Some(ids), "FlatIndex::add_tensor_with_ids")
    }

    fn add_device(
        &mut self,
        x: &crate::Tensor,
        given: Option<&[u64]>,
        op: &'static str,
    ) -> Result<()> {
        check_tensor(self.context(), self.dim(), op, "x", "n", x)?;
        crate::Tensor::same_context(op, &[("x", x)])?;
        let n = x.shape()[0];
        let new_ids = self.ids.new_ids(n, given, op)?;
        if n == 0 {
            return Ok(());
        }
        let old = self.len();
        let r = self.store.add_tensor(x, op);
        self.ids.commit(&new_ids[..self.len() - old]);
        r
    }

    /// Removes the vectors with these ids (ids not stored are skipped) and
    /// returns how many were removed. Each chunk that loses rows is
    /// compacted on the device: its kept rows are copied, in order, into a
    /// smaller texture (no host round trip, no re-encoding); the others are
    /// untouched. Ids are not reused by later [`add`](Self::add) calls.
    ///
    /// Errors: a device error while compacting (the index is then unchanged).
    pub fn remove_ids(&mut self, ids: &[u64]) -> Result<usize> {
        let gone = self.ids.rows_of_ids(ids);
        if gone.is_empty() {
            return Ok(0);
        }
        self.store.remove_rows(&gone)?;
        self.ids.remove_rows(&gone);
        Ok(gone.len())
    }

    /// The stored vector with this id, read back from the device and
    /// dequantised (f16 widened; int8 times its row's scale); a cosine index
    /// stores, and so returns, the normalised vector.
    ///
    /// Errors: no vector has this id ([`Error::InvalidArgument`]).
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        const REC: &str = "FlatIndex::reconstruct";
        let Some(row) = self.ids.row_of(id) else {
            return Err(Error::InvalidArgument {
                op: REC,
                detail: format!("no vector has id {id}"),
            });
        };
        let (c, local) = self.store.locate(row);
        let bytes = self.store.read_rows(REC, c, local, 1)?;
        let scale = self.store.read_scales(REC, c, local, 1)?;
        Ok(self
            .store
            .codec()
            .decode(&bytes, scale.first().copied().unwrap_or(1.0)))
    }

    /// The `k` best vectors for each of `queries` (`[m, dim]` row-major f32):
    /// `[m, k]` scores and ids, best first (for [`Metric::L2`], the squared
    /// distances `‖q − x‖²`, nearest first).
    ///
    /// `k` from 0 to [`MAX_K`]: `k = 0` gives `m` empty rows; rows past the
    /// index's length are padded with id −1 and score −∞ (+∞ for L2), as
    /// FAISS pads. Errors: `k` over `MAX_K` ([`Error::InvalidArgument`]);
    /// queries that are not whole rows of `dim` ([`Error::Shape`]).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        self.search_impl(Input::Host(queries), k, None)
    }

    /// [`search`](Self::search) over only the vectors whose id `allow`
    /// accepts: the predicate is evaluated once per stored id into a bitmap
    /// that the scan kernel reads, so rows outside it are never candidates
    /// and a filter keeping 1% of the index still returns `k` results where
    /// that many pass (no over-fetching, no post-filtering). A set of ids is
    /// `|id| set.contains(&id)`.
    ///
    /// Errors: as [`search`](Self::search).
    pub fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        allow: impl Fn(u64) -> bool,
    ) -> Result<SearchResult> {
        let bits = self.ids.bitmap(allow);
        self.search_impl(Input::Host(queries), k, Some(&bits))
    }

    /// [`search`](Self::search) for queries that are a device tensor
    /// `[m, dim]` f32 (embeddings a model produced on the GPU): the rows are
    /// copied into the scan's query buffer on the device (a cosine index
    /// normalises them there first); only an L2 index reads back the `m`
    /// query norms.
    ///
    /// Errors: [`Error::DType`] unless `queries` is f32, [`Error::Shape`]
    /// unless it is `[m, dim]`; [`Error::InvalidArgument`] for a tensor of
    /// another context; as [`search`](Self::search) for `k`.
    pub fn search_tensor(&self, queries: &crate::Tensor, k: usize) -> Result<SearchResult> {
        self.check_queries(queries, "FlatIndex::search_tensor")?;
        self.search_impl(Input::Device(queries), k, None)
    }

    /// [`search_tensor`](Self::search_tensor) with results left on the
    /// device: nothing crosses to the host. `scores` is `[m, k]` f32 (L2:
    /// squared distances), best first; `ids` is `[m, k, 2]` u32 holding each
    /// id as an i64 in little-endian halves (WGSL has no 64-bit integers;
    /// `bytemuck::cast_slice::<u32, i64>` of its `to_vec::<u32>()` reads
    /// them); past the index's length, id −1 and score −∞ (+∞ for L2).
    ///
    /// Errors: as [`search_tensor`](Self::search_tensor); outputs over one
    /// storage binding ([`Error::TooLarge`]).
    pub fn search_device(&self, queries: &crate::Tensor, k: usize) -> Result<DeviceSearchResult> {
        const SD: &str = "FlatIndex::search_device";
        self.check_queries(queries, SD)?;
        check_k(SD, k)?;
        let m = queries.shape()[0];
        let out = device_outputs(self.context(), SD, m, k)?;
        let kk = k.min(self.len());
        if m == 0 || k == 0 {
            return Ok(out);
        }
        if kk == 0 {
            // Nothing stored: all padding, written from the host.
            let ctx = self.context();
            let pad = vec![pad_score(self.opts.metric); m * k];
            let scores = &out.scores;
            let bytes = bytemuck::cast_slice(&pad);
            ctx.write_buffer_ordered(SD, scores.buffer(), scores.offset(), &[bytes])?;
            let ids = &out.ids;
            ctx.write_buffer_ordered(SD, ids.buffer(), ids.offset(), &[&vec![0xff; m * k * 8]])?;
            return Ok(out);
        }
        let (q, qnorm) = device_queries(self.store.codec(), queries)?;
        let scanner = Scanner::new(&self.store, kk, m, None)?;
        let table = self.ids.device_table(self.context());
        let finish = Finish {
            op: SD,
            table: &table,
            qnorm: qnorm.as_ref(),
            scores: &out.scores,
            ids: &out.ids,
            k,
        };
        for batch in scanner.batches(m) {
            let list = scanner.scan(Queries::Device(&q), batch.clone())?;
            scanner.finish(&list, batch, &finish)?;
        }
        Ok(out)
    }

    /// `queries` must be f32 `[m, dim]` on this index's context.
    fn check_queries(&self, queries: &crate::Tensor, op: &'static str) -> Result<()> {
        check_tensor(self.context(), self.dim(), op, "queries", "m", queries)
    }

    fn search_impl(
        &self,
        input: Input<'_>,
        k: usize,
        allow: Option<&[u32]>,
    ) -> Result<SearchResult> {
        check_k(OP, k)?;
        let dim = self.dim();
        let m = match input {
            Input::Host(q) if !q.len().is_multiple_of(dim) => {
                return Err(Error::Shape {
                    op: OP,
                    detail: format!(
                        "queries of {} values are not whole rows of the index's dim {dim}",
                        q.len()
                    ),
                })
            }
            Input::Host(q) => q.len() / dim,
            Input::Device(t) => t.shape()[0],
        };
        let kk = k.min(self.len());
        let mut res = SearchResult {
            m,
            k,
            scores: Vec::with_capacity(m * k),
            ids: Vec::with_capacity(m * k),
        };
        if m == 0 || kk == 0 || allow.is_some_and(|a| a.iter().all(|&w| w == 0)) {
            pad_rows(&mut res, m, self.opts.metric);
            return Ok(res);
        }
        let codec = self.store.codec();
        let (host, qnorm, device) = match input {
            Input::Host(q) => {
                let (rows, norms) = codec.queries(q);
                (rows, norms, None)
            }
            Input::Device(t) => {
                let (q, norms) = device_queries(codec, t)?;
                let norms = norms.map(|n| n.to_vec::<f32>()).transpose()?;
                (Vec::new(), norms.unwrap_or_default(), Some(q))
            }
        };
        let scanner = Scanner::new(&self.store, kk, m, allow)?;
        for batch in scanner.batches(m) {
            let queries = match &device {
                Some(t) => Queries::Device(t),
                None => Queries::Host(&host),
            };
            let list = scanner.scan(queries, batch.clone())?;
            let found = scanner.read(&list, batch.len())?;
            push_found(
                &mut res,
                &found,
                batch,
                kk,
                &qnorm,
                &self.ids,
                self.opts.metric,
            );
        }
        Ok(res)
    }

    /// The plan a search of `m` queries for the top `k` would run.
    ///
    /// Errors: `k` out of range ([`Error::InvalidArgument`]); a query or `k`
    /// this adapter's limits cannot serve ([`Error::Unsupported`]).
    pub fn plan(&self, m: usize, k: usize) -> Result<SearchPlan> {
        if k == 0 || k > MAX_K {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("k must be in 1..={MAX_K}, got {k}"),
            });
        }
        SearchPlan::new(
            self.context().profile(),
            k,
            m.max(1),
            self.store.codec().padded(),
        )
    }
}

/// `[m, k]` score and `[m, k, 2]` id tensors, zeroed.
///
/// Errors: either over one storage binding ([`Error::TooLarge`]).
pub(super) fn device_outputs(
    ctx: &Context,
    op: &'static str,
    m: usize,
    k: usize,
) -> Result<DeviceSearchResult> {
    let scores = crate::Tensor::zeros(ctx, &[m, k], DType::F32)?;
    let ids = crate::Tensor::zeros(ctx, &[m, k, 2], DType::U32)?;
    for t in [&scores, &ids] {
        if t.bytes() > ctx.max_binding() {
            return Err(Error::TooLarge {
                op,
                what: format!("results {}", shape_str(t.shape())),
                size: t.bytes(),
                limit: ctx.max_binding(),
                kind: crate::Limit::StorageBinding,
            });
        }
    }
    Ok(DeviceSearchResult { scores, ids })
}

/// Fails unless `t` (the operand `what`) is f32 `[rows, dim]` on `ctx`, the
/// index's context.
pub(super) fn check_tensor(
    ctx: &Context,
    dim: usize,
    op: &'static str,
    what: &str,
    rows: &str,
    t: &crate::Tensor,
) -> Result<()> {
    if !std::sync::Arc::ptr_eq(&t.context().inner, &ctx.inner) {
        return Err(Error::InvalidArgument {
            op,
            detail: format!(
                "{what} is on context {:?}, the index on another, {ctx:?}",
                t.context()
            ),
        });
    }
    expect_dtype(op, what, t.dtype(), &[DType::F32])?;
    let s = t.shape();
    if s.len() != 2 || s[1] != dim {
        return Err(Error::Shape {
            op,
            detail: format!(
                "{what} is {}, the index takes [{rows}, {dim}]",
                shape_str(s)
            ),
        });
    }
    Ok(())
}

/// Appends the results of the queries `batch` to `res`: each query's first
/// `kk` candidates as (score, id), `ids` mapping a candidate's row (the
/// flat index's storage row, the IVF index's order) to its id, until one
/// falls outside them (padding), then padding to `k`.
pub(super) fn push_found(
    res: &mut SearchResult,
    found: &Candidates,
    batch: std::ops::Range<usize>,
    kk: usize,
    qnorm: &[f32],
    ids: &IdMap,
    metric: Metric,
) {
    let l2 = metric == Metric::L2;
    for (i, q) in batch.enumerate() {
        for (sc, row) in found.query(i, kk) {
            let Some(id) = ids.id_at(row as usize) else {
                break;
            };
            // L2: the kernel ranks by 2·q·x − ‖x‖²; the distance is ‖q‖²
            // minus that.
            res.scores.push(if l2 { qnorm[q] - sc } else { sc });
            res.ids.push(id as i64);
        }
        pad_rows(res, q + 1, metric);
    }
}

/// Fills `res`'s rows so far up to `rows · k` entries with `metric`'s
/// padding.
pub(super) fn pad_rows(res: &mut SearchResult, rows: usize, metric: Metric) {
    res.scores.resize(rows * res.k, pad_score(metric));
    res.ids.resize(rows * res.k, -1);
}
