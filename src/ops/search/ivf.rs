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
use super::flat::{check_tensor, FlatIndex};
use super::ids::IdMap;
use super::kmeans::{imbalance, kmeans, KMeansOptions, KMeansResult};
use super::nearest::{Centroids, Points};
use super::rearrange::Piece;
use super::store::{ChunkStore, Rows};
use super::{IndexOptions, Storage};
use crate::context::{Context, Tracked};
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;

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
    pub(super) ctx: Context,
    pub(super) dim: usize,
    pub(super) opts: IvfOptions,
    /// The flat index of the centroids, once trained.
    pub(super) quantizer: Option<FlatIndex>,
    /// The centroids as adds assign to them (`None` where the adapter
    /// cannot hold them for that kernel: the quantiser assigns).
    assigner: Option<Centroids>,
    centroids: Vec<f32>,
    training: Option<KMeansResult>,
    /// Every row, list after list.
    pub(super) store: ChunkStore,
    /// List `l` is storage rows `starts[l]..starts[l + 1]`.
    pub(super) starts: Vec<usize>,
    /// Ids by order (the order rows were added in, removals compacted).
    pub(super) ids: IdMap,
    /// The order of each storage row, and the storage row of each order.
    pub(super) row_order: Vec<u32>,
    order_row: Vec<u32>,
    /// `row_order` on the device, one buffer per chunk.
    pub(super) orders: Vec<Tracked>,
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
            assigner: None,
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
        self.assigner =
            match Centroids::for_metric(&self.ctx, &centroids, self.dim, self.opts.metric) {
                Ok(c) => Some(c),
                Err(Error::TooLarge { .. }) => None,
                Err(e) => return Err(e),
            };
        self.centroids = centroids;
        self.quantizer = Some(q);
        Ok(())
    }

    /// The quantiser, or the error of using an untrained index in `op`.
    pub(super) fn quantizer(&self, op: &'static str) -> Result<&FlatIndex> {
        self.quantizer
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument {
                op,
                detail: "the index is not trained: call IvfIndex::train first".into(),
            })
    }

    /// Rows of `data` as `[n, dim]`, or a shape error naming `what`.
    pub(super) fn rows(&self, op: &'static str, what: &str, data: &[f32]) -> Result<usize> {
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
        let lists = self.lists_of(q, Points::Host(data))?;
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
        check_tensor(&self.ctx, self.dim, op, "x", "n", x)?;
        let q = self.quantizer(op)?;
        let n = x.shape()[0];
        let new_ids = self.ids.new_ids(n, given, op)?;
        if n == 0 {
            return Ok(());
        }
        let lists = self.lists_of(q, Points::Device(x))?;
        let (perm, counts) = by_list(&lists, self.nlist());
        let packed = self.store.encode_tensor(x, op)?;
        let pieces = self.insert_pieces(&counts, perm.iter().copied());
        self.insert(&pieces, &counts, &perm, packed.rows(), &new_ids)
    }

    /// Each point's list: its nearest centroid, by the assignment kernel
    /// (a GEMM with an argmin, much faster than the flat scan for many
    /// points) or, where that cannot hold the centroids, by quantiser `q`.
    fn lists_of(&self, q: &FlatIndex, points: Points<'_>) -> Result<Vec<i64>> {
        match (&self.assigner, points) {
            (Some(c), _) => Ok(c.nearest(points)?.0.into_iter().map(i64::from).collect()),
            (None, Points::Host(data)) => Ok(q.search(data, 1)?.ids),
            (None, Points::Device(x)) => Ok(q.search_tensor(x, 1)?.ids),
        }
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
    pub(super) fn apply(
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
pub(super) fn order_buffers(ctx: &Context, store: &ChunkStore, row_order: &[u32]) -> Vec<Tracked> {
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
pub(super) fn check_nprobe(nprobe: usize, nlist: usize) -> Result<()> {
    if nprobe == 0 || nprobe > nlist {
        return Err(Error::InvalidArgument {
            op: OP,
            detail: format!("nprobe must be in 1..={nlist} (nlist), got {nprobe}"),
        });
    }
    Ok(())
}
