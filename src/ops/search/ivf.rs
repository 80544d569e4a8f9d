//! [`IvfIndex`], FAISS's `IndexIVFFlat` / `IndexIVFScalarQuantizer`: the
//! vectors partitioned into `nlist` lists by k-means ([`kmeans`]), each
//! query scanning only the `nprobe` lists whose centroids are nearest it.
//!
//! Layout: one chunk store of every vector, the flat index's codecs, with
//! each list's rows contiguous (list after list, FAISS's GPU
//! `IVFFlat` layout), so one query's probes and one list's queries read
//! contiguous texture rows; an add or a removal lays the lists out again in
//! one pass of device copies ([`ChunkStore::rearranged`]). Each row also has
//! an order — its place in the order vectors were added — which the id map
//! maps to ids and which ties break by, as the flat index breaks them by
//! storage order. The coarse quantiser is a flat f32 index of the centroids.
//! A search quantises the query batch (one readback of the probes), then one
//! dispatch per chunk scans every probed list for every query that probes it
//! (queries of a list share its reads), the select passes merge each
//! query's candidates, and one readback returns them ([`ListScanner`]); so
//! `nprobe = nlist` gives the flat index's ids and scores exactly.

use super::codec::Codec;
use super::flat::FlatIndex;
use super::ids::IdMap;
use super::kmeans::{imbalance, kmeans, KMeansOptions, KMeansResult};
use super::lists::{queries_per_list, ListScanner, Lists};
use super::rearrange::Piece;
use super::scan::{device_queries, Candidates, Finish, Queries};
use super::store::{ChunkStore, Rows};
use super::{check_k, pad_score, DeviceSearchResult, IndexOptions, SearchResult, Storage};
use crate::context::{Context, Tracked};
use crate::error::{expect_dtype, Error, Result};
use crate::ops::similarity::Metric;
use crate::tensor::{shape_str, DType};

const OP: &str = "IvfIndex";

/// Most lists an index takes (FAISS's largest published indexes use 2^20;
/// each list costs its offsets on the host before any vector is added).
pub const MAX_NLIST: usize = 1 << 24;

/// Options of an [`IvfIndex`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IvfOptions {
    /// Lists (k-means clusters); FAISS's `nlist`.
    pub nlist: usize,
    /// Similarity (cosine normalises vectors on insert and queries on
    /// search); the quantiser ranks centroids by it too.
    pub metric: Metric,
    /// How the lists store vectors (the flat index's codecs).
    pub storage: Storage,
    /// Lists a search probes unless a call says otherwise (FAISS: 1).
    pub nprobe: usize,
    /// The training run's k-means options (its metric is the index's).
    pub kmeans: KMeansOptions,
    /// Rows per chunk of the store; `None`: as the flat index sizes them.
    /// Small values force lists across chunks (tests).
    pub max_chunk_rows: Option<usize>,
}

impl IvfOptions {
    /// `nlist` lists, inner product, f32 storage, `nprobe` 1.
    pub fn new(nlist: usize) -> Self {
        IvfOptions {
            nlist,
            metric: Metric::default(),
            storage: Storage::default(),
            nprobe: 1,
            kmeans: KMeansOptions::default(),
            max_chunk_rows: None,
        }
    }
    /// Options with at most `rows` rows per chunk.
    pub fn max_chunk_rows(mut self, rows: usize) -> Self {
        self.max_chunk_rows = Some(rows);
        self
    }
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
    /// Options probing `nprobe` lists by default.
    pub fn nprobe(mut self, nprobe: usize) -> Self {
        self.nprobe = nprobe;
        self
    }
    /// Options training with these k-means options.
    pub fn kmeans(mut self, kmeans: KMeansOptions) -> Self {
        self.kmeans = kmeans;
        self
    }
}

/// Per-call search parameters (FAISS's `SearchParametersIVF`).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct IvfSearchParams {
    /// Lists to probe; `None`: the index's `nprobe`.
    pub nprobe: Option<usize>,
    /// Whether queries that probe the same list share one read of it (a
    /// work item of several queries); `None`: on GPUs, when the batch
    /// averages two or more queries per probed list (never on software
    /// adapters, where it is slower).
    pub group_queries: Option<bool>,
}

impl IvfSearchParams {
    /// Parameters probing `nprobe` lists.
    pub fn nprobe(nprobe: usize) -> Self {
        IvfSearchParams {
            nprobe: Some(nprobe),
            ..Default::default()
        }
    }
    /// Parameters that group queries by list (`true`) or scan each
    /// (query, list) pair alone (`false`).
    pub fn group_queries(mut self, on: bool) -> Self {
        self.group_queries = Some(on);
        self
    }
}

/// An inverted-file index of `dim`-dimensional vectors with `u64` ids.
#[derive(Debug)]
pub struct IvfIndex {
    ctx: Context,
    dim: usize,
    opts: IvfOptions,
    /// The flat index of the centroids, once trained.
    quantizer: Option<FlatIndex>,
    centroids: Vec<f32>,
    training: Option<KMeansResult>,
    /// Every row, list after list.
    store: ChunkStore,
    /// List `l` is storage rows `starts[l]..starts[l + 1]`.
    starts: Vec<usize>,
    /// Ids by order (the order rows were added in, removals compacted).
    ids: IdMap,
    /// The order of each storage row, and the storage row of each order.
    row_order: Vec<u32>,
    order_row: Vec<u32>,
    /// `row_order` on the device, one buffer per chunk.
    orders: Vec<Tracked>,
}

/// A search's queries as the caller gave them.
#[derive(Clone, Copy)]
enum Input<'a> {
    Host(&'a [f32]),
    Device(&'a crate::Tensor),
}

impl IvfIndex {
    /// An untrained, empty index.
    ///
    /// Errors ([`Error::InvalidArgument`]): `dim` or `nlist` 0, `nlist`
    /// over [`MAX_NLIST`], `nprobe` not in `1..=nlist`; [`Error::Unsupported`] for a `dim` the adapter's
    /// textures cannot hold (as [`FlatIndex::new`]).
    pub fn new(ctx: &Context, dim: usize, opts: IvfOptions) -> Result<Self> {
        if dim == 0 || opts.nlist == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!(
                    "dim and nlist must be at least 1, got {dim} and {}",
                    opts.nlist
                ),
            });
        }
        check_nprobe(opts.nprobe, opts.nlist)?;
        if opts.nlist > MAX_NLIST {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("nlist {} is over {MAX_NLIST}", opts.nlist),
            });
        }
        // The flat index checks `dim` against the adapter's textures.
        FlatIndex::new(ctx, dim, IndexOptions::default().storage(opts.storage))?;
        let codec = Codec {
            dim,
            storage: opts.storage,
            metric: opts.metric,
        };
        Ok(IvfIndex {
            ctx: ctx.clone(),
            dim,
            store: ChunkStore::new(ctx, codec, opts.max_chunk_rows),
            starts: vec![0; opts.nlist + 1],
            opts,
            quantizer: None,
            centroids: Vec::new(),
            training: None,
            ids: IdMap::default(),
            row_order: Vec::new(),
            order_row: Vec::new(),
            orders: Vec::new(),
        })
    }

    /// The context the index lives on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
    /// Dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Lists.
    pub fn nlist(&self) -> usize {
        self.opts.nlist
    }
    /// The index's options.
    pub fn options(&self) -> &IvfOptions {
        &self.opts
    }
    /// Lists a search probes by default.
    pub fn nprobe(&self) -> usize {
        self.opts.nprobe
    }
    /// Sets the default `nprobe`. Errors: not in `1..=nlist`.
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<()> {
        check_nprobe(nprobe, self.nlist())?;
        self.opts.nprobe = nprobe;
        Ok(())
    }
    /// Whether [`train`](Self::train) has run.
    pub fn is_trained(&self) -> bool {
        self.quantizer.is_some()
    }
    /// The `[nlist, dim]` centroids (empty before training).
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }
    /// The training run (objective per iteration, imbalance), once trained.
    pub fn training(&self) -> Option<&KMeansResult> {
        self.training.as_ref()
    }
    /// Vectors in each list.
    pub fn list_sizes(&self) -> Vec<usize> {
        self.starts.windows(2).map(|w| w[1] - w[0]).collect()
    }
    /// FAISS's imbalance factor of the lists (1: all the same size).
    pub fn imbalance(&self) -> f64 {
        imbalance(&self.list_sizes(), self.len().max(1))
    }
    /// Vectors in the index.
    pub fn len(&self) -> usize {
        self.store.len()
    }
    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether a vector with this id is stored.
    pub fn contains(&self, id: u64) -> bool {
        self.ids.row_of(id).is_some()
    }
    /// The ids of the stored vectors, in the order they were added.
    pub fn ids(&self) -> &[u64] {
        self.ids.ids()
    }
    /// Device bytes the stored vectors, their orders and the centroids take.
    pub fn bytes(&self) -> u64 {
        let q = self.quantizer.as_ref().map_or(0, FlatIndex::bytes);
        q + self.store.bytes() + self.orders.iter().map(|b| b.size()).sum::<u64>()
    }

    /// Trains the quantiser: k-means of `vectors` (`[n, dim]` row-major
    /// f32, at least `nlist` rows; at most `max_points_per_centroid · nlist`
    /// are sampled) into `nlist` centroids on the GPU.
    ///
    /// Errors: [`Error::InvalidArgument`] for fewer rows than `nlist`, or an
    /// index that holds vectors (they were assigned to the old centroids:
    /// [`reset`](Self::reset) first); [`Error::Shape`] for rows not of
    /// `dim`; as [`kmeans`].
    pub fn train(&mut self, vectors: &[f32]) -> Result<()> {
        if !self.is_empty() {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: "the index holds vectors assigned to its centroids: reset it before training again".into(),
            });
        }
        let km = self.opts.kmeans.clone().metric(self.opts.metric);
        let res = kmeans(&self.ctx, vectors, self.dim, self.nlist(), &km)?;
        self.set_centroids(res.centroids.clone())?;
        self.training = Some(res);
        Ok(())
    }

    /// Uses `centroids` (`[nlist, dim]`) as the quantiser (a loaded index,
    /// or centroids trained elsewhere).
    pub(crate) fn set_centroids(&mut self, centroids: Vec<f32>) -> Result<()> {
        let mut q = FlatIndex::new(
            &self.ctx,
            self.dim,
            IndexOptions::default().metric(self.opts.metric),
        )?;
        q.add(&centroids)?;
        self.centroids = centroids;
        self.quantizer = Some(q);
        Ok(())
    }

    /// The quantiser, or the error of using an untrained index in `op`.
    fn quantizer(&self, op: &'static str) -> Result<&FlatIndex> {
        self.quantizer
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument {
                op,
                detail: "the index is not trained: call IvfIndex::train first".into(),
            })
    }

    /// Rows of `data` as `[n, dim]`, or a shape error naming `what`.
    fn rows(&self, op: &'static str, what: &str, data: &[f32]) -> Result<usize> {
        if !data.len().is_multiple_of(self.dim) {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "{what}: {} values are not whole rows of dim {}",
                    data.len(),
                    self.dim
                ),
            });
        }
        Ok(data.len() / self.dim)
    }

    /// Appends `data` (`[n, dim]` row-major f32), each vector to the list of
    /// its nearest centroid, with the next free ids (as [`FlatIndex::add`]).
    /// The lists are laid out again on the device (a copy of the index):
    /// add in large batches.
    ///
    /// Errors: untrained ([`Error::InvalidArgument`]); rows not of `dim`
    /// ([`Error::Shape`]). Nothing is added on error.
    pub fn add(&mut self, data: &[f32]) -> Result<()> {
        self.add_host("IvfIndex::add", data, None)
    }

    /// Appends `data` (`[n, dim]` row-major f32) with the caller's ids.
    ///
    /// Errors: untrained, an id over [`MAX_ID`](super::MAX_ID), already
    /// stored or repeated ([`Error::InvalidArgument`]); rows not of `dim` or
    /// `ids.len() != n` ([`Error::Shape`]). Nothing is added on error.
    pub fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()> {
        self.add_host("IvfIndex::add_with_ids", data, Some(ids))
    }

    fn add_host(&mut self, op: &'static str, data: &[f32], given: Option<&[u64]>) -> Result<()> {
        let n = self.rows(op, "data", data)?;
        let q = self.quantizer(op)?;
        let new_ids = self.ids.new_ids(n, given, op)?;
        if n == 0 {
            return Ok(());
        }
        let lists = q.search(data, 1)?.ids;
        let (perm, counts) = by_list(&lists, self.nlist());
        let codec = *self.store.codec();
        let mut enc = super::codec::Encoded::default();
        for &i in &perm {
            codec.encode(&data[i * self.dim..(i + 1) * self.dim], &mut enc);
        }
        // The encoded rows are in list order already.
        let pieces = self.insert_pieces(&counts, 0..n);
        self.insert(&pieces, &counts, &perm, Rows::Host(&enc), &new_ids)
    }

    /// Appends the rows of a device tensor `x [n, dim]` f32 (embeddings a
    /// model produced on the GPU): assigned to lists by the quantiser on
    /// the device (only the list numbers are read back), normalised there
    /// for cosine, encoded there for f16 and int8, and copied into their
    /// lists, with the next free ids.
    ///
    /// Errors: [`Error::DType`] unless `x` is f32, [`Error::Shape`] unless
    /// it is `[n, dim]`, [`Error::InvalidArgument`] for a tensor of another
    /// context or an untrained index; [`Error::TooLarge`] for rows encoded
    /// on the device past one storage binding (add them in parts).
    pub fn add_tensor(&mut self, x: &crate::Tensor) -> Result<()> {
        self.add_device("IvfIndex::add_tensor", x, None)
    }

    /// [`add_tensor`](Self::add_tensor) with the caller's ids, checked as
    /// [`add_with_ids`](Self::add_with_ids) checks them.
    pub fn add_tensor_with_ids(&mut self, x: &crate::Tensor, ids: &[u64]) -> Result<()> {
        self.add_device("IvfIndex::add_tensor_with_ids", x, Some(ids))
    }

    fn add_device(
        &mut self,
        op: &'static str,
        x: &crate::Tensor,
        given: Option<&[u64]>,
    ) -> Result<()> {
        self.check_tensor(op, "x", "n", x)?;
        let q = self.quantizer(op)?;
        let n = x.shape()[0];
        let new_ids = self.ids.new_ids(n, given, op)?;
        if n == 0 {
            return Ok(());
        }
        let lists = q.search_tensor(x, 1)?.ids;
        let (perm, counts) = by_list(&lists, self.nlist());
        let packed = self.store.encode_tensor(x, op)?;
        let pieces = self.insert_pieces(&counts, perm.iter().copied());
        self.insert(&pieces, &counts, &perm, packed.rows(), &new_ids)
    }

    /// The pieces of the store after an insert of rows sorted by list
    /// (`counts` per list): each list's old rows, then its new ones; `src`
    /// gives, for each new row in list order, the row of the source it is
    /// read from (runs of consecutive source rows are merged).
    fn insert_pieces(&self, counts: &[usize], mut src: impl Iterator<Item = usize>) -> Vec<Piece> {
        let mut pieces = Vec::new();
        for (l, &c) in counts.iter().enumerate() {
            if self.starts[l + 1] > self.starts[l] {
                pieces.push(Piece::Old(self.starts[l]..self.starts[l + 1]));
            }
            for _ in 0..c {
                let s = src.next().unwrap_or_default();
                match pieces.last_mut() {
                    Some(Piece::New(r)) if r.end == s => r.end += 1,
                    _ => pieces.push(Piece::New(s..s + 1)),
                }
            }
        }
        pieces
    }

    /// Lays the store out again with `pieces` (new rows from `new`: the
    /// caller's rows `perm` in list order, `counts` per list) and records
    /// their ids; on error nothing changes.
    fn insert(
        &mut self,
        pieces: &[Piece],
        counts: &[usize],
        perm: &[usize],
        new: Rows<'_>,
        new_ids: &[u64],
    ) -> Result<()> {
        let store = self.store.rearranged(pieces, Some(new))?;
        let old = self.len() as u32;
        let mut row_order = Vec::with_capacity(store.len());
        let mut starts = vec![0; self.nlist() + 1];
        let mut j = 0;
        for (l, &c) in counts.iter().enumerate() {
            row_order.extend_from_slice(&self.row_order[self.starts[l]..self.starts[l + 1]]);
            // New rows are ordered after every stored row, in the caller's
            // order.
            row_order.extend(perm[j..j + c].iter().map(|&i| old + i as u32));
            j += c;
            starts[l + 1] = row_order.len();
        }
        let orders = order_buffers(&self.ctx, &store, &row_order);
        self.ids.commit(new_ids);
        self.apply(store, starts, row_order, orders);
        Ok(())
    }

    /// Installs a new layout.
    fn apply(
        &mut self,
        store: ChunkStore,
        starts: Vec<usize>,
        row_order: Vec<u32>,
        orders: Vec<Tracked>,
    ) {
        let mut order_row = vec![0u32; row_order.len()];
        for (r, &o) in row_order.iter().enumerate() {
            order_row[o as usize] = r as u32;
        }
        self.store = store;
        self.starts = starts;
        self.row_order = row_order;
        self.order_row = order_row;
        self.orders = orders;
    }

    /// Fails unless `t` (the operand `what`) is f32 `[rows, dim]` on this
    /// index's context.
    fn check_tensor(
        &self,
        op: &'static str,
        what: &str,
        rows: &str,
        t: &crate::Tensor,
    ) -> Result<()> {
        if !std::sync::Arc::ptr_eq(&t.context().inner, &self.ctx.inner) {
            return Err(Error::InvalidArgument {
                op,
                detail: format!(
                    "{what} is on context {:?}, the index on another, {:?}",
                    t.context(),
                    self.ctx
                ),
            });
        }
        expect_dtype(op, what, t.dtype(), &[DType::F32])?;
        let s = t.shape();
        if s.len() != 2 || s[1] != self.dim {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "{what} is {}, the index takes [{rows}, {}]",
                    shape_str(s),
                    self.dim
                ),
            });
        }
        Ok(())
    }

    /// Removes the vectors with these ids (ids not stored are skipped) and
    /// returns how many were removed; the kept rows are laid out again on
    /// the device (no host round trip, no re-encoding) and keep their
    /// order. Ids are not reused by later adds.
    ///
    /// Errors: a device error while copying (the index is then unchanged).
    pub fn remove_ids(&mut self, ids: &[u64]) -> Result<usize> {
        let gone = self.ids.rows_of_ids(ids);
        if gone.is_empty() {
            return Ok(0);
        }
        let mut dropped = vec![false; self.len()];
        for &o in &gone {
            dropped[self.order_row[o] as usize] = true;
        }
        let mut pieces = Vec::new();
        let mut starts = vec![0; self.nlist() + 1];
        let mut row_order = Vec::with_capacity(self.len() - gone.len());
        for l in 0..self.nlist() {
            let rows = self.starts[l]..self.starts[l + 1];
            for r in rows.filter(|&r| !dropped[r]) {
                match pieces.last_mut() {
                    Some(Piece::Old(run)) if run.end == r => run.end += 1,
                    _ => pieces.push(Piece::Old(r..r + 1)),
                }
                // Orders after removed ones move up.
                let o = self.row_order[r] as usize;
                row_order.push((o - gone.partition_point(|&g| g < o)) as u32);
            }
            starts[l + 1] = row_order.len();
        }
        let store = self.store.rearranged(&pieces, None)?;
        let orders = order_buffers(&self.ctx, &store, &row_order);
        self.ids.remove_rows(&gone);
        self.apply(store, starts, row_order, orders);
        Ok(gone.len())
    }

    /// The stored vector with this id (dequantised; normalised for cosine),
    /// read back from the device. Errors: no vector has this id
    /// ([`Error::InvalidArgument`]).
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        const REC: &str = "IvfIndex::reconstruct";
        let Some(o) = self.ids.row_of(id) else {
            return Err(Error::InvalidArgument {
                op: REC,
                detail: format!("no vector has id {id}"),
            });
        };
        let (c, local) = self.store.locate(self.order_row[o] as usize);
        let bytes = self.store.read_rows(REC, c, local, 1)?;
        let scale = self.store.read_scales(REC, c, local, 1)?;
        let codec = self.store.codec();
        Ok(codec.decode(&bytes, scale.first().copied().unwrap_or(1.0)))
    }

    /// The list holding `id`, if it is stored.
    pub fn list_of(&self, id: u64) -> Option<usize> {
        let row = self.order_row[self.ids.row_of(id)?] as usize;
        Some(self.starts.partition_point(|&s| s <= row) - 1)
    }

    /// Removes every vector (the training stays; the next `add` starts
    /// again from id 0).
    pub fn reset(&mut self) {
        self.store.clear();
        self.starts.iter_mut().for_each(|s| *s = 0);
        self.ids.clear();
        self.row_order.clear();
        self.order_row.clear();
        self.orders.clear();
    }

    /// The `k` best vectors for each of `queries` (`[m, dim]` row-major f32)
    /// among the index's `nprobe` lists nearest each query: `[m, k]` scores
    /// and ids, best first, padded with id −1 and score −∞ (+∞ for L2) as
    /// [`FlatIndex::search`]; ties go to the vector added first.
    ///
    /// Errors: untrained or `k` over [`MAX_K`](super::MAX_K)
    /// ([`Error::InvalidArgument`]); queries not of `dim` ([`Error::Shape`]).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        self.search_with(queries, k, IvfSearchParams::default())
    }

    /// [`search`](Self::search) with per-call parameters.
    ///
    /// Errors: as [`search`](Self::search); `nprobe` not in `1..=nlist`.
    pub fn search_with(
        &self,
        queries: &[f32],
        k: usize,
        params: IvfSearchParams,
    ) -> Result<SearchResult> {
        self.search_impl(Input::Host(queries), k, params, None)
    }

    /// [`search_with`](Self::search_with) over only the vectors whose id
    /// `allow` accepts, applied inside the list scan (a bitmap the kernel
    /// reads, as [`FlatIndex::search_filtered`]); the quantiser is not
    /// filtered.
    pub fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        params: IvfSearchParams,
        allow: impl Fn(u64) -> bool,
    ) -> Result<SearchResult> {
        let bits = self.ids.bitmap(allow);
        self.search_impl(Input::Host(queries), k, params, Some(&bits))
    }

    /// [`search_with`](Self::search_with) for queries that are a device
    /// tensor `[m, dim]` f32: quantised and scanned on the device (the
    /// probes and the results are read back; an L2 index also reads the
    /// query norms).
    ///
    /// Errors: [`Error::DType`] unless f32, [`Error::Shape`] unless
    /// `[m, dim]`, [`Error::InvalidArgument`] for another context; as
    /// [`search_with`](Self::search_with).
    pub fn search_tensor(
        &self,
        queries: &crate::Tensor,
        k: usize,
        params: IvfSearchParams,
    ) -> Result<SearchResult> {
        self.check_tensor("IvfIndex::search_tensor", "queries", "m", queries)?;
        self.search_impl(Input::Device(queries), k, params, None)
    }

    /// [`search_tensor`](Self::search_tensor) with the results left on the
    /// device, as [`FlatIndex::search_device`] leaves them: `[m, k]` f32
    /// scores and `[m, k, 2]` u32 ids (i64 halves); only the probes cross to
    /// the host.
    ///
    /// Errors: as [`search_tensor`](Self::search_tensor); outputs over one
    /// storage binding ([`Error::TooLarge`]).
    pub fn search_device(
        &self,
        queries: &crate::Tensor,
        k: usize,
        params: IvfSearchParams,
    ) -> Result<DeviceSearchResult> {
        const SD: &str = "IvfIndex::search_device";
        self.check_tensor(SD, "queries", "m", queries)?;
        let q = self.quantizer(SD)?;
        check_k(SD, k)?;
        let nprobe = params.nprobe.unwrap_or(self.opts.nprobe);
        check_nprobe(nprobe, self.nlist())?;
        let m = queries.shape()[0];
        let out = super::flat::device_outputs(&self.ctx, SD, m, k)?;
        let pad_rows = |rows: std::ops::Range<usize>| -> Result<()> {
            let n = rows.len() * k;
            let pad = vec![pad_score(self.opts.metric); n];
            let (s, i) = (&out.scores, &out.ids);
            let at = (rows.start * k) as u64;
            let sb = bytemuck::cast_slice(&pad);
            self.ctx
                .write_buffer_ordered(SD, s.buffer(), s.offset() + at * 4, &[sb])?;
            let ib = vec![0xffu8; n * 8];
            self.ctx
                .write_buffer_ordered(SD, i.buffer(), i.offset() + at * 8, &[&ib])
        };
        let kk = k.min(self.len());
        if m == 0 || k == 0 {
            return Ok(out);
        }
        if kk == 0 {
            pad_rows(0..m)?;
            return Ok(out);
        }
        let probes = q.search_tensor(queries, nprobe)?.ids;
        let (qt, qnorm) = device_queries(self.store.codec(), queries)?;
        let scanner = self.scanner(kk, &probes, params, None)?;
        let table = self.ids.device_table(&self.ctx);
        let finish = Finish {
            op: SD,
            table: &table,
            qnorm: qnorm.as_ref(),
            scores: &out.scores,
            ids: &out.ids,
            k,
        };
        for batch in scanner.batches(&probes, nprobe)? {
            match scanner.scan(Queries::Device(&qt), &probes, nprobe, batch.clone())? {
                Some(list) => scanner.finish(&list, batch, &finish)?,
                None => pad_rows(batch)?,
            }
        }
        Ok(out)
    }

    /// The list scanner of a search for the top `kk` over `probes`.
    fn scanner(
        &self,
        kk: usize,
        probes: &[i64],
        params: IvfSearchParams,
        allow: Option<&[u32]>,
    ) -> Result<ListScanner<'_>> {
        // Grouping shares a list's reads among its queries, at the price of
        // QB queries' candidate lists held at once: on a software adapter
        // those spill and ungrouped scans are faster (docs/SEARCH.md).
        let group = match params.group_queries {
            Some(false) => 1,
            Some(true) => queries_per_list(probes),
            None if self.ctx.profile().texel_reads => 1,
            None => match queries_per_list(probes) {
                g if g >= 2 => g,
                _ => 1,
            },
        };
        let lists = Lists {
            store: &self.store,
            starts: &self.starts,
            orders: &self.orders,
        };
        ListScanner::new(lists, kk, group, allow)
    }

    fn search_impl(
        &self,
        input: Input<'_>,
        k: usize,
        params: IvfSearchParams,
        allow: Option<&[u32]>,
    ) -> Result<SearchResult> {
        const S: &str = "IvfIndex::search";
        let q = self.quantizer(S)?;
        check_k(S, k)?;
        let nprobe = params.nprobe.unwrap_or(self.opts.nprobe);
        check_nprobe(nprobe, self.nlist())?;
        let m = match input {
            Input::Host(qs) => self.rows(S, "queries", qs)?,
            Input::Device(t) => t.shape()[0],
        };
        let mut res = SearchResult {
            m,
            k,
            scores: Vec::with_capacity(m * k),
            ids: Vec::with_capacity(m * k),
        };
        let kk = k.min(self.len());
        if m == 0 || kk == 0 || allow.is_some_and(|a| a.iter().all(|&w| w == 0)) {
            self.pad(&mut res, m);
            return Ok(res);
        }
        let codec = self.store.codec();
        let (probes, host, qnorm, device) = match input {
            Input::Host(qs) => {
                let probes = q.search(qs, nprobe)?.ids;
                let (rows, norms) = codec.queries(qs);
                (probes, rows, norms, None)
            }
            Input::Device(t) => {
                let probes = q.search_tensor(t, nprobe)?.ids;
                let (qt, norms) = device_queries(codec, t)?;
                let norms = norms.map(|n| n.to_vec::<f32>()).transpose()?;
                (probes, Vec::new(), norms.unwrap_or_default(), Some(qt))
            }
        };
        let scanner = self.scanner(kk, &probes, params, allow)?;
        for batch in scanner.batches(&probes, nprobe)? {
            let queries = match &device {
                Some(t) => Queries::Device(t),
                None => Queries::Host(&host),
            };
            match scanner.scan(queries, &probes, nprobe, batch.clone())? {
                Some(list) => {
                    let found = scanner.read(&list, batch.len())?;
                    self.push_rows(&mut res, &found, batch, kk, &qnorm);
                }
                None => self.pad(&mut res, batch.end),
            }
        }
        Ok(res)
    }

    /// Appends the results of the queries `batch` to `res`: each query's
    /// first `kk` candidates as (score, id) until one is padding, then
    /// padding to `k`.
    fn push_rows(
        &self,
        res: &mut SearchResult,
        found: &Candidates,
        batch: std::ops::Range<usize>,
        kk: usize,
        qnorm: &[f32],
    ) {
        let l2 = self.opts.metric == Metric::L2;
        for (i, q) in batch.enumerate() {
            for (sc, order) in found.query(i, kk) {
                let Some(id) = self.ids.id_at(order as usize) else {
                    break;
                };
                res.scores.push(if l2 { qnorm[q] - sc } else { sc });
                res.ids.push(id as i64);
            }
            self.pad(res, q + 1);
        }
    }

    /// Fills `res`'s rows so far up to `rows · k` entries.
    fn pad(&self, res: &mut SearchResult, rows: usize) {
        res.scores.resize(rows * res.k, pad_score(self.opts.metric));
        res.ids.resize(rows * res.k, -1);
    }
}

/// The rows of `lists` (each row's list; −1, a row of NaN, goes to list 0)
/// sorted by list, stable, and the rows of each list.
fn by_list(lists: &[i64], nlist: usize) -> (Vec<usize>, Vec<usize>) {
    let mut counts = vec![0usize; nlist];
    for &l in lists {
        counts[l.max(0) as usize] += 1;
    }
    let mut next: Vec<usize> = counts
        .iter()
        .scan(0, |acc, &c| {
            let s = *acc;
            *acc += c;
            Some(s)
        })
        .collect();
    let mut perm = vec![0; lists.len()];
    for (i, &l) in lists.iter().enumerate() {
        let l = l.max(0) as usize;
        perm[next[l]] = i;
        next[l] += 1;
    }
    (perm, counts)
}

/// Each chunk's slice of `row_order` on the device.
fn order_buffers(ctx: &Context, store: &ChunkStore, row_order: &[u32]) -> Vec<Tracked> {
    let mut at = 0;
    store
        .chunks()
        .iter()
        .map(|c| {
            let part = &row_order[at..at + c.rows];
            at += c.rows;
            ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ivf row orders"),
                contents: bytemuck::cast_slice(part),
                usage: wgpu::BufferUsages::STORAGE,
            })
        })
        .collect()
}

/// Fails unless `nprobe` is in `1..=nlist`.
fn check_nprobe(nprobe: usize, nlist: usize) -> Result<()> {
    if nprobe == 0 || nprobe > nlist {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: format!("nprobe must be in 1..={nlist} (nlist), got {nprobe}"),
        });
    }
    Ok(())
}
