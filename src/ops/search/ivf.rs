//! [`IvfIndex`], FAISS's `IndexIVFFlat` / `IndexIVFScalarQuantizer`: the
//! vectors partitioned into `nlist` lists by k-means ([`kmeans`]), each
//! query scanning only the `nprobe` lists whose centroids are nearest it.
//!
//! Layout: one [`FlatIndex`] per list — its own chunk store (a list's rows
//! contiguous in its textures, growing and compacting alone; a list past one
//! binding is chunked as the flat index chunks) and its own id map (so a
//! removal shifts only that list's rows), with the same codecs and the same
//! fused scan as the flat index. The coarse quantiser is a flat f32 index of
//! the centroids. A search quantises the whole query batch once, groups the
//! queries by probed list, scans each probed list once for all of its
//! queries, and merges the partial top-k per query on the host (ties to the
//! vector added first, as the flat index breaks them), so `nprobe = nlist`
//! gives the flat index's ids and scores exactly.

use std::collections::{HashMap, HashSet};

use super::flat::FlatIndex;
use super::ids::{fresh_ids, MAX_ID};
use super::kmeans::{imbalance, kmeans, KMeansOptions, KMeansResult};
use super::{check_k, pad_score, IndexOptions, SearchResult, Storage};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;

const OP: &str = "IvfIndex";

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
        }
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
}

impl IvfSearchParams {
    /// Parameters probing `nprobe` lists.
    pub fn nprobe(nprobe: usize) -> Self {
        IvfSearchParams {
            nprobe: Some(nprobe),
        }
    }
}

/// Where a stored id lives: its list, and the order it was added in (ties
/// between lists go to the earlier one, as the flat index breaks them).
#[derive(Debug, Clone, Copy)]
struct Slot {
    list: u32,
    seq: u64,
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
    lists: Vec<FlatIndex>,
    slots: HashMap<u64, Slot>,
    next_id: u64,
    next_seq: u64,
    training: Option<KMeansResult>,
}

impl IvfIndex {
    /// An untrained, empty index.
    ///
    /// Errors ([`Error::InvalidArgument`]): `dim` or `nlist` 0, `nprobe`
    /// not in `1..=nlist`; as [`FlatIndex::new`] for a `dim` the adapter's
    /// textures cannot hold.
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
        let list_opts = IndexOptions::default()
            .metric(opts.metric)
            .storage(opts.storage);
        let lists = (0..opts.nlist)
            .map(|_| FlatIndex::new(ctx, dim, list_opts))
            .collect::<Result<_>>()?;
        Ok(IvfIndex {
            ctx: ctx.clone(),
            dim,
            opts,
            quantizer: None,
            centroids: Vec::new(),
            lists,
            slots: HashMap::new(),
            next_id: 0,
            next_seq: 0,
            training: None,
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
        self.lists.iter().map(FlatIndex::len).collect()
    }
    /// FAISS's imbalance factor of the lists (1: all the same size).
    pub fn imbalance(&self) -> f64 {
        imbalance(&self.list_sizes(), self.len().max(1))
    }
    /// Vectors in the index.
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether a vector with this id is stored.
    pub fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }
    /// Device bytes the stored vectors and centroids take.
    pub fn bytes(&self) -> u64 {
        let q = self.quantizer.as_ref().map_or(0, FlatIndex::bytes);
        q + self.lists.iter().map(FlatIndex::bytes).sum::<u64>()
    }

    /// Trains the quantiser: k-means of `vectors` (`[n, dim]` row-major
    /// f32, at least `nlist` rows; at most `256 · nlist` are sampled) into
    /// `nlist` centroids on the GPU.
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
        let mut q = FlatIndex::new(
            &self.ctx,
            self.dim,
            IndexOptions::default().metric(self.opts.metric),
        )?;
        q.add(&res.centroids)?;
        self.centroids = res.centroids.clone();
        self.quantizer = Some(q);
        self.training = Some(res);
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
    /// its nearest centroid, with the next free ids (as
    /// [`FlatIndex::add`]).
    ///
    /// Errors: untrained ([`Error::InvalidArgument`]); rows not of `dim`
    /// ([`Error::Shape`]).
    pub fn add(&mut self, data: &[f32]) -> Result<()> {
        let n = self.rows("IvfIndex::add", "data", data)?;
        let ids = fresh_ids(self.next_id, n, "IvfIndex::add")?;
        self.add_rows("IvfIndex::add", data, &ids)
    }

    /// Appends `data` (`[n, dim]` row-major f32) with the caller's ids.
    ///
    /// Errors: untrained, an id over [`MAX_ID`], already stored or repeated
    /// ([`Error::InvalidArgument`]); rows not of `dim` or `ids.len() != n`
    /// ([`Error::Shape`]). Nothing is added on these errors.
    pub fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()> {
        const ADD: &str = "IvfIndex::add_with_ids";
        let n = self.rows(ADD, "data", data)?;
        if ids.len() != n {
            return Err(Error::Shape {
                op: ADD,
                detail: format!("{n} vectors but {} ids", ids.len()),
            });
        }
        let mut seen = HashSet::with_capacity(n);
        for &id in ids {
            if id > MAX_ID || self.slots.contains_key(&id) || !seen.insert(id) {
                return Err(Error::InvalidArgument {
                    op: ADD,
                    detail: format!(
                        "id {id} is over {MAX_ID}, already in the index or repeated in the call"
                    ),
                });
            }
        }
        self.add_rows(ADD, data, ids)
    }

    fn add_rows(&mut self, op: &'static str, data: &[f32], ids: &[u64]) -> Result<()> {
        let q = self.quantizer(op)?;
        if ids.is_empty() {
            return Ok(());
        }
        let lists = q.search(data, 1)?.ids;
        let mut groups: Vec<(Vec<f32>, Vec<u64>)> = vec![Default::default(); self.nlist()];
        for (i, &l) in lists.iter().enumerate() {
            let g = &mut groups[l.max(0) as usize];
            g.0.extend_from_slice(&data[i * self.dim..(i + 1) * self.dim]);
            g.1.push(ids[i]);
        }
        // Sequence numbers in the caller's order, so ties across lists go to
        // the vector added first.
        let seq0 = self.next_seq;
        let seq_of: HashMap<u64, u64> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, seq0 + i as u64))
            .collect();
        self.next_seq += ids.len() as u64;
        for (l, (rows, gids)) in groups.into_iter().enumerate() {
            if gids.is_empty() {
                continue;
            }
            let before = self.lists[l].len();
            let r = self.lists[l].add_with_ids(&rows, &gids);
            // Rows a list took before a device error keep their ids.
            for &id in &gids[..self.lists[l].len() - before] {
                let seq = seq_of[&id];
                self.slots.insert(
                    id,
                    Slot {
                        list: l as u32,
                        seq,
                    },
                );
                self.next_id = self.next_id.max(id + 1);
            }
            r?;
        }
        Ok(())
    }

    /// Removes the vectors with these ids (ids not stored are skipped) and
    /// returns how many were removed; only the lists that held them are
    /// compacted (on the device, as [`FlatIndex::remove_ids`]).
    pub fn remove_ids(&mut self, ids: &[u64]) -> Result<usize> {
        let mut per: HashMap<u32, Vec<u64>> = HashMap::new();
        for &id in ids {
            if let Some(s) = self.slots.get(&id) {
                per.entry(s.list).or_default().push(id);
            }
        }
        let mut removed = 0;
        for (l, gone) in per {
            removed += self.lists[l as usize].remove_ids(&gone)?;
            for id in gone {
                self.slots.remove(&id);
            }
        }
        Ok(removed)
    }

    /// The stored vector with this id (dequantised; normalised for cosine),
    /// read from its list. Errors: no vector has this id
    /// ([`Error::InvalidArgument`]).
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        match self.slots.get(&id) {
            Some(s) => self.lists[s.list as usize].reconstruct(id),
            None => Err(Error::InvalidArgument {
                op: "IvfIndex::reconstruct",
                detail: format!("no vector has id {id}"),
            }),
        }
    }

    /// The list holding `id`, if it is stored.
    pub fn list_of(&self, id: u64) -> Option<usize> {
        self.slots.get(&id).map(|s| s.list as usize)
    }

    /// Removes every vector (the training stays; the next `add` starts
    /// again from id 0).
    pub fn reset(&mut self) {
        self.lists.iter_mut().for_each(FlatIndex::reset);
        self.slots.clear();
        self.next_id = 0;
        self.next_seq = 0;
    }

    /// The `k` best vectors for each of `queries` (`[m, dim]` row-major f32)
    /// among the index's `nprobe` lists nearest each query: `[m, k]` scores
    /// and ids, best first, padded with id −1 and score −∞ (+∞ for L2) as
    /// [`FlatIndex::search`].
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
        self.search_impl(queries, k, params, None::<fn(u64) -> bool>)
    }

    /// [`search_with`](Self::search_with) over only the vectors whose id
    /// `allow` accepts, applied inside each list's scan (as
    /// [`FlatIndex::search_filtered`]); the quantiser is not filtered.
    pub fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        params: IvfSearchParams,
        allow: impl Fn(u64) -> bool,
    ) -> Result<SearchResult> {
        self.search_impl(queries, k, params, Some(allow))
    }

    fn search_impl<F: Fn(u64) -> bool>(
        &self,
        queries: &[f32],
        k: usize,
        params: IvfSearchParams,
        allow: Option<F>,
    ) -> Result<SearchResult> {
        const S: &str = "IvfIndex::search";
        let q = self.quantizer(S)?;
        check_k(S, k)?;
        let nprobe = params.nprobe.unwrap_or(self.opts.nprobe);
        check_nprobe(nprobe, self.nlist())?;
        let m = self.rows(S, "queries", queries)?;
        let mut res = SearchResult {
            m,
            k,
            scores: Vec::with_capacity(m * k),
            ids: Vec::with_capacity(m * k),
        };
        if m == 0 || k == 0 {
            return Ok(res);
        }
        let probes = q.search(queries, nprobe)?.ids;
        // The queries of each list, in query order.
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.nlist()];
        for (i, p) in probes.chunks_exact(nprobe).enumerate() {
            for &l in p.iter().filter(|&&l| l >= 0) {
                groups[l as usize].push(i);
            }
        }
        let mut found: Vec<Vec<(f32, u64, i64)>> = vec![Vec::new(); m];
        for (l, qs) in groups.iter().enumerate() {
            let list = &self.lists[l];
            if qs.is_empty() || list.is_empty() {
                continue;
            }
            let rows: Vec<f32> = qs
                .iter()
                .flat_map(|&i| &queries[i * self.dim..(i + 1) * self.dim])
                .copied()
                .collect();
            let r = match &allow {
                Some(f) => list.search_filtered(&rows, k, f)?,
                None => list.search(&rows, k)?,
            };
            for (j, &i) in qs.iter().enumerate() {
                let span = j * k..(j + 1) * k;
                for (&s, &id) in r.scores[span.clone()].iter().zip(&r.ids[span]) {
                    if id < 0 {
                        break;
                    }
                    found[i].push((s, self.slots[&(id as u64)].seq, id));
                }
            }
        }
        let l2 = self.opts.metric == Metric::L2;
        for mut f in found {
            f.sort_by(|a, b| rank(a.0, b.0, l2).then(a.1.cmp(&b.1)));
            f.truncate(k);
            let pad = k - f.len();
            res.scores.extend(f.iter().map(|e| e.0));
            res.ids.extend(f.iter().map(|e| e.2));
            res.scores
                .extend(std::iter::repeat_n(pad_score(self.opts.metric), pad));
            res.ids.extend(std::iter::repeat_n(-1, pad));
        }
        Ok(res)
    }
}

/// Best first: higher similarity, or smaller L2 distance; NaN last.
fn rank(a: f32, b: f32, l2: bool) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, true) => std::cmp::Ordering::Less,
        (true, false) => std::cmp::Ordering::Greater,
        (true, true) => std::cmp::Ordering::Equal,
        _ if l2 => a.total_cmp(&b),
        _ => b.total_cmp(&a),
    }
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
