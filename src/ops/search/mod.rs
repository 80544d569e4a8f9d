//! Exact top-k search over a flat index, in the spirit of FAISS's `IndexFlatIP`.
//! Kernel source: `topk.wgsl`.
//!
//! The corpus lives in as many 2-D array textures ("chunks") as the adapter's
//! limits require, each scanned in turn: textures because texel fetches are
//! cached, vectorised gathers on every adapter (on CPU adapters a storage-buffer
//! load is a per-lane loop). Queries are read from a uniform buffer, since every
//! invocation reads the same query value at once. The scan is fused: a workgroup
//! scores a block of queries against a slice of a chunk and keeps only each
//! query's best candidates, which a selection pass then reduces; the m × n score
//! matrix is never written to device memory.
//!
//! Every stored vector has a `u64` id: the caller's (`add_with_ids`, as FAISS's
//! `IndexIDMap`) or the next free one (`add`). `remove_ids` compacts the
//! index on the device. Results are best first, ties broken by storage order
//! (the order vectors were added, removals aside); NaN scores (a NaN in the
//! corpus) sort after every number. As in FAISS, `k` past the index's length
//! pads each row with id −1 and score −∞.
//!
//! # Differences from FAISS
//!
//! | | FAISS | flashdot |
//! | --- | --- | --- |
//! | ids | `int64` (`IndexIDMap`); duplicates accepted | `u64` up to [`MAX_ID`] (results carry them as `i64`); a duplicate is refused |
//! | `add` without ids | refused by `IndexIDMap`; positions in `IndexFlat`, renumbered by `remove_ids` | the next ids after the largest stored; ids never change |
//! | ties, NaN | unspecified | storage order (insertion order, removals aside); NaN scores last |
//! | cosine | normalise yourself, then `IndexFlatIP` | [`Metric::Cosine`] normalises vectors and queries |
//! | L2 | squared distances, `‖q‖² + ‖x‖² − 2·q·x` in f32 | the same; identical vectors may give a tiny ±ε, not clamped |
//! | `k` | unbounded on CPU, ≤ 2048 on GPU | ≤ [`MAX_K`] (1024); 0 gives empty rows |
//! | filters | `IDSelector` in `SearchParameters` | a predicate over ids ([`FlatIndex::search_filtered`]), compiled to a device bitmap per call |
//! | 8-bit storage | `SQ8`: per-dimension min/max trained on the data | per-row symmetric scale (no training), chosen by measurement (recall in the README) |
//! | `reconstruct` | the decoded vector | the same; a cosine index returns the normalised vector |
//! | files | `write_index` / `read_index` | flashdot's own versioned format ([`file`](mod@file)) |
//! | shards | `IndexShards` | [`ShardedIndex`]: adds spread to even the shards, each searched on its own thread |
//! | device results | GPU indexes return host arrays | [`FlatIndex::search_device`]: ids as i64 halves in a u32 tensor |

pub mod file;
mod plan;
mod sharded;

pub use plan::{Scan, SearchPlan};
pub use sharded::ShardedIndex;

use crate::context::{Bind, Context, Tracked, TrackedTexture};
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;
use crate::tensor::DType;
#[cfg(test)]
pub(crate) use plan::reachable as reachable_specs;
use plan::slot;
pub(crate) use plan::TopkParams;
use plan::TopkSpec;

/// Largest supported k.
pub const MAX_K: usize = 1024;

/// How the index stores vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Storage {
    /// 4 bytes per value, exact.
    #[default]
    F32,
    /// 2 bytes per value (IEEE half; read as packed words, so any adapter).
    F16,
    /// 1 byte per value with a per-row symmetric scale (`max |x| / 127`); the dot
    /// product is computed in f32 against the unquantised query and rescaled.
    Int8,
}

impl Storage {
    fn bytes_per_value(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
            Storage::Int8 => 1,
        }
    }
    /// Texel format of the corpus textures (unsigned words, bit-cast in the
    /// shader: unfilterable, so any adapter binds them) and bytes per texel.
    fn texel(self) -> (wgpu::TextureFormat, usize) {
        match self {
            Storage::F32 | Storage::F16 => (wgpu::TextureFormat::Rgba32Uint, 16),
            Storage::Int8 => (wgpu::TextureFormat::Rg32Uint, 8),
        }
    }
}

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

/// Rows of the corpus as a texture of `layers` layers of `1 << lsh` lines,
/// one row per line.
#[derive(Debug)]
struct Chunk {
    texture: TrackedTexture,
    view: wgpu::TextureView,
    /// Lines of the texture: `1 << lsh`, or fewer for a chunk of one layer.
    height: usize,
    layers: usize,
    scales: Option<Tracked>,
    /// Squared norms of the stored rows (L2 indexes).
    norms: Option<Tracked>,
    rows: usize,
}

/// A flat (brute-force) exact index of `dim`-dimensional vectors, each with a
/// `u64` id.
#[derive(Debug)]
pub struct FlatIndex {
    ctx: Context,
    dim: usize,
    opts: IndexOptions,
    chunks: Vec<Chunk>,
    len: usize,
    /// The id of each stored row, in storage order.
    ids: Vec<u64>,
    /// Row of each id.
    rows_of: std::collections::HashMap<u64, usize>,
    /// The id `add` gives next: one past the largest id ever stored.
    next_id: u64,
    /// `ids` on the device (i64 as two u32 per row) for device results;
    /// built on first use, dropped whenever the ids change.
    id_table: std::sync::Mutex<Option<Tracked>>,
}

/// Result of [`FlatIndex::search`]: `m` rows of `k` (score, id), best first.
#[derive(Debug, Clone, PartialEq)]
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
pub struct DeviceSearchResult {
    /// `[m, k]` f32 scores (L2: squared distances), best first; −∞ (+∞ for
    /// L2) past the index's length.
    pub scores: crate::Tensor,
    /// `[m, k, 2]` u32: each id as an i64 in little-endian halves; −1 past the
    /// index's length.
    pub ids: crate::Tensor,
}

/// Largest id a vector can have: results carry ids as i64, −1 marking a
/// missing result.
pub const MAX_ID: u64 = i64::MAX as u64;

const OP: &str = "search";

/// A search's queries: host rows, or a device tensor `[m, dim]` f32.
#[derive(Clone, Copy)]
enum Queries<'a> {
    Host(&'a [f32]),
    Device(&'a crate::Tensor),
}

/// Rows to append to a chunk: encoded on the host, or f32 rows of a device
/// tensor from row `first`.
#[derive(Clone, Copy)]
enum Rows<'a> {
    Host {
        bytes: &'a [u8],
        scales: &'a [f32],
        norms: &'a [f32],
    },
    Device {
        tensor: &'a crate::Tensor,
        first: usize,
        /// Squared row norms `[n]` (L2 indexes).
        norms: Option<&'a crate::Tensor>,
        /// Row scales `[n]` (int8 storage).
        scales: Option<&'a crate::Tensor>,
    },
}

fn padded(dim: usize) -> usize {
    dim.div_ceil(8) * 8
}

fn normalized(x: &[f32]) -> Vec<f32> {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let inv = if ss > 0.0 { 1.0 / ss.sqrt() } else { 0.0 };
    x.iter().map(|&v| (v as f64 * inv) as f32).collect()
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
        let (_, texel_bytes) = opts.storage.texel();
        let max_dim = ctx.profile().max_texture_2d as usize * texel_bytes
            / opts.storage.bytes_per_value()
            / 8
            * 8;
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
        Ok(FlatIndex {
            ctx: ctx.clone(),
            dim,
            opts,
            chunks: Vec::new(),
            len: 0,
            ids: Vec::new(),
            rows_of: std::collections::HashMap::new(),
            next_id: 0,
            id_table: std::sync::Mutex::new(None),
        })
    }

    /// The context the index lives on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The ids of the stored vectors, in storage order (the order of ties).
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// Whether a vector with this id is stored.
    pub fn contains(&self, id: u64) -> bool {
        self.rows_of.contains_key(&id)
    }

    /// Ids for `n` new rows: `given` (checked: `n` of them, each at most
    /// [`MAX_ID`], none stored already or repeated), else the next free ones.
    /// Nothing is recorded until [`commit_ids`](Self::commit_ids).
    fn new_ids(&self, n: usize, given: Option<&[u64]>, op: &'static str) -> Result<Vec<u64>> {
        let Some(given) = given else {
            let end = self
                .next_id
                .checked_add(n as u64)
                .filter(|&e| e <= MAX_ID + 1);
            return match end {
                Some(end) => Ok((self.next_id..end).collect()),
                None => Err(Error::InvalidArgument {
                    op,
                    detail: format!(
                        "{n} more ids after {} pass the largest id {MAX_ID}",
                        self.next_id
                    ),
                }),
            };
        };
        if given.len() != n {
            return Err(Error::Shape {
                op,
                detail: format!("{n} vectors but {} ids", given.len()),
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(n);
        for &id in given {
            if id > MAX_ID {
                return Err(Error::InvalidArgument {
                    op,
                    detail: format!("id {id} is over {MAX_ID} (results carry ids as i64)"),
                });
            }
            if self.rows_of.contains_key(&id) || !seen.insert(id) {
                return Err(Error::InvalidArgument {
                    op,
                    detail: format!("id {id} is already in the index or repeated in the call"),
                });
            }
        }
        Ok(given.to_vec())
    }

    /// Records the ids of rows just appended.
    fn commit_ids(&mut self, ids: Vec<u64>) {
        self.forget_id_table();
        for id in ids {
            self.rows_of.insert(id, self.ids.len());
            self.next_id = self.next_id.max(id + 1);
            self.ids.push(id);
        }
    }

    /// The device id table no longer matches the ids.
    fn forget_id_table(&mut self) {
        *self.id_table.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Removes every vector and id (the next `add` starts again from id 0).
    pub fn reset(&mut self) {
        self.forget_id_table();
        self.chunks.clear();
        self.len = 0;
        self.ids.clear();
        self.rows_of.clear();
        self.next_id = 0;
    }

    /// Vectors in the index.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Device bytes the stored vectors take.
    pub fn bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| {
                c.texture.bytes()
                    + [&c.scales, &c.norms]
                        .iter()
                        .map(|b| b.as_ref().map_or(0, |b| b.size()))
                        .sum::<u64>()
            })
            .sum()
    }

    /// Bytes of a stored row (padded to whole texels).
    fn row_bytes(&self) -> usize {
        padded(self.dim) * self.opts.storage.bytes_per_value()
    }

    /// Texels per stored row.
    fn row_texels(&self) -> usize {
        self.row_bytes() / self.opts.storage.texel().1
    }

    fn rows_per_chunk(&self) -> usize {
        let lim = self.ctx.profile();
        // A chunk no larger than one storage binding (a size every adapter
        // allocates at once), within the texture limits, and of at most 65,535
        // slices of 256 rows so that its slices fit one dispatch dimension.
        let lines = 1usize << lim.max_texture_2d.max(1).ilog2();
        let cap = (self.ctx.max_binding() as usize / self.row_bytes())
            .min(65535 * 256)
            .min(lines * lim.max_texture_layers.max(1) as usize)
            .max(1);
        let per = self.opts.max_chunk_rows.map_or(cap, |m| m.clamp(1, cap));
        // Whole layers when there are several, so none is left part empty.
        if per > lines {
            per / lines * lines
        } else {
            per
        }
    }

    /// log2 of the lines per texture layer: a power of two (row → layer and line
    /// by shift and mask), no more than the texture limit or than a chunk needs.
    fn layer_shift(&self) -> u32 {
        let max = self.ctx.profile().max_texture_2d.max(1).ilog2();
        self.rows_per_chunk().next_power_of_two().ilog2().min(max)
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
    /// ([`Error::Shape`]); an id over [`MAX_ID`], already stored, or repeated
    /// ([`Error::InvalidArgument`]: FAISS accepts duplicates, which make
    /// `remove_ids` and `reconstruct` ambiguous). Nothing is added on error.
    pub fn add_with_ids(&mut self, data: &[f32], ids: &[u64]) -> Result<()> {
        self.add_rows(data, Some(ids), "FlatIndex::add_with_ids")
    }

    fn add_rows(&mut self, data: &[f32], given: Option<&[u64]>, op: &'static str) -> Result<()> {
        if !data.len().is_multiple_of(self.dim) {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "{} values are not whole rows of dim {}",
                    data.len(),
                    self.dim
                ),
            });
        }
        let new_ids = self.new_ids(data.len() / self.dim, given, op)?;
        let old = self.len;
        let r = self.append_host(data);
        // Rows appended before an error keep their ids: the index stays whole.
        let added = self.len - old;
        self.commit_ids(new_ids[..added].to_vec());
        r
    }

    /// Encodes and appends `data`'s rows, a chunk at a time.
    fn append_host(&mut self, data: &[f32]) -> Result<()> {
        let per = self.rows_per_chunk();
        let mut rows = data.chunks_exact(self.dim).peekable();
        while rows.peek().is_some() {
            let start = self
                .chunks
                .last()
                .filter(|c| c.rows < per)
                .map_or(0, |c| c.rows);
            let (mut host, mut scales, mut norms) = (Vec::new(), Vec::new(), Vec::new());
            let mut n = 0;
            for row in rows.by_ref().take(per - start) {
                let row = if self.opts.metric == Metric::Cosine {
                    normalized(row)
                } else {
                    row.to_vec()
                };
                self.encode_row(&row, &mut host, &mut scales, &mut norms);
                n += 1;
            }
            let new = Rows::Host {
                bytes: &host,
                scales: &scales,
                norms: &norms,
            };
            self.append(per, new, n)?;
        }
        Ok(())
    }

    /// Appends `add` rows from `new` to the last chunk while it has room (a
    /// larger texture receives its rows by a device-side copy), else to a new
    /// chunk. On error the index is unchanged.
    fn append(&mut self, per: usize, new: Rows<'_>, add: usize) -> Result<()> {
        let grow = self.chunks.last().filter(|c| c.rows < per);
        let grew = grow.is_some();
        let chunk = self.extend_chunk(grow, new, grow.map_or(0, |c| c.rows) + add)?;
        match self.chunks.last_mut() {
            Some(last) if grew => *last = chunk,
            _ => self.chunks.push(chunk),
        }
        self.len += add;
        Ok(())
    }

    /// Appends the rows of a device tensor `x [n, dim]` f32 (embeddings a
    /// model produced on the GPU) without a host round trip: cosine indexes
    /// normalise them on the device, then they are copied into the index's
    /// storage.
    ///
    /// Errors: [`Error::Shape`] unless `x` is f32 `[n, dim]`;
    /// [`Error::InvalidArgument`] for a tensor of another context (or a
    /// view that is not contiguous); [`Error::Unsupported`] for f16 or int8
    /// storage or a `dim` that is not a multiple of 8 (their rows are
    /// converted or padded on the host: use [`add`](Self::add)). The rows
    /// get the next free ids, as with [`add`](Self::add).
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
        if !std::sync::Arc::ptr_eq(&x.context().inner, &self.ctx.inner) {
            return Err(Error::InvalidArgument {
                op,
                detail: format!(
                    "x is on context {:?}, the index on another, {:?}",
                    x.context(),
                    self.ctx
                ),
            });
        }
        crate::Tensor::same_context(op, &[("x", x)])?;
        if x.dtype() != DType::F32 || x.shape().len() != 2 || x.shape()[1] != self.dim {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "x is {} {}, the index takes f32 [n, {}]",
                    x.dtype(),
                    crate::tensor::shape_str(x.shape()),
                    self.dim
                ),
            });
        }
        let n = x.shape()[0];
        let new_ids = self.new_ids(n, given, op)?;
        if n == 0 {
            return Ok(());
        }
        let src = if self.opts.metric == Metric::Cosine {
            crate::ops::similarity::normalize(x)?
        } else {
            x.contiguous()?
        };
        // f32 rows of whole groups of 8 are copied as they are (their norms
        // are the rows' own); others are encoded on the device, a chunk's
        // worth at a time.
        let direct = self.opts.storage == Storage::F32 && self.dim.is_multiple_of(8);
        let norms = match self.opts.metric {
            Metric::L2 if direct => Some(crate::ops::dot::dot(&src, &src)?),
            _ => None,
        };
        if !direct && src.bytes() > self.ctx.max_binding() {
            return Err(Error::TooLarge {
                op,
                what: format!(
                    "x {} (encoded on the device: add it in parts)",
                    crate::tensor::shape_str(src.shape())
                ),
                size: src.bytes(),
                limit: self.ctx.max_binding(),
                kind: crate::Limit::StorageBinding,
            });
        }
        let per = self.rows_per_chunk();
        let old = self.len;
        let mut done = 0;
        let mut r = Ok(());
        while done < n && r.is_ok() {
            let start = self
                .chunks
                .last()
                .filter(|c| c.rows < per)
                .map_or(0, |c| c.rows);
            let take = (per - start).min(n - done);
            r = if direct {
                let new = Rows::Device {
                    tensor: &src,
                    first: done,
                    norms: norms.as_ref(),
                    scales: None,
                };
                self.append(per, new, take)
            } else {
                self.pack_rows(&src, done, take)
                    .and_then(|(packed, scales, norms)| {
                        let new = Rows::Device {
                            tensor: &packed,
                            first: 0,
                            norms: norms.as_ref(),
                            scales: scales.as_ref(),
                        };
                        self.append(per, new, take)
                    })
            };
            done += take;
        }
        let added = self.len - old;
        self.commit_ids(new_ids[..added].to_vec());
        r
    }

    /// Rows `first..first + n` of `src` (f32 `[rows, dim]`) encoded on the
    /// device as the host encodes them: stored rows (`row_bytes` each), int8
    /// scales and L2 norms.
    fn pack_rows(
        &self,
        src: &crate::Tensor,
        first: usize,
        n: usize,
    ) -> Result<(crate::Tensor, Option<crate::Tensor>, Option<crate::Tensor>)> {
        let ctx = &self.ctx;
        let l2 = self.opts.metric == Metric::L2;
        let int8 = self.opts.storage == Storage::Int8;
        let packed = crate::Tensor::zeros(ctx, &[n * self.row_bytes() / 4], DType::U32)?;
        let scales = int8
            .then(|| crate::Tensor::zeros(ctx, &[n], DType::F32))
            .transpose()?;
        let norms = l2
            .then(|| crate::Tensor::zeros(ctx, &[n], DType::F32))
            .transpose()?;
        let pipeline = ctx.pipeline(&TopkSpec::Pack {
            storage: self.opts.storage,
            l2,
        })?;
        fn whole(t: &crate::Tensor) -> Bind<'_> {
            Bind::Buffer {
                buffer: t.buffer(),
                offset: t.offset(),
                size: t.bytes(),
            }
        }
        ctx.scoped(OP, || {
            let p = TopkParams {
                rows: n as u32,
                dv: (padded(self.dim) / 8) as u32,
                m: self.dim as u32,
                q0: first as u32,
                ..Default::default()
            };
            let ubuf = ctx.uniform(&p);
            let mut binds = vec![
                (slot::PACK_SRC, whole(src)),
                (slot::PACK_OUT, whole(&packed)),
            ];
            if let Some(s) = &scales {
                binds.push((slot::PACK_SCALES, whole(s)));
            }
            if let Some(s) = &norms {
                binds.push((slot::PACK_NORMS, whole(s)));
            }
            let groups = n.div_ceil(64);
            let gx = groups.min(65535);
            let mut enc = ctx.encoder();
            ctx.dispatch(
                &mut enc,
                &pipeline,
                &ubuf,
                &binds,
                (gx as u32, groups.div_ceil(gx) as u32, 1),
            );
            ctx.submit(enc);
            Ok(())
        })?;
        Ok((packed, scales, norms))
    }

    fn encode_row(
        &self,
        row: &[f32],
        host: &mut Vec<u8>,
        scales: &mut Vec<f32>,
        norms: &mut Vec<f32>,
    ) {
        let at = host.len();
        self.encode_values(row, host, scales);
        if self.opts.metric == Metric::L2 {
            // The norm of the row as stored (dequantised), so that distances
            // are exact for the vectors the index holds.
            let stored = self.decode_row(&host[at..], scales.last().copied().unwrap_or(1.0));
            norms.push(stored_norm(&stored));
        }
    }

    /// A stored row's bytes (and int8 scale) as f32 values, `dim` of them.
    fn decode_row(&self, bytes: &[u8], scale: f32) -> Vec<f32> {
        let d = self.dim;
        match self.opts.storage {
            Storage::F32 => bytes
                .chunks_exact(4)
                .take(d)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Storage::F16 => bytes
                .chunks_exact(2)
                .take(d)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Storage::Int8 => bytes
                .iter()
                .take(d)
                .map(|&b| (b as i8) as f32 / 127.0 * scale)
                .collect(),
        }
    }

    fn encode_values(&self, row: &[f32], host: &mut Vec<u8>, scales: &mut Vec<f32>) {
        let dp = padded(self.dim);
        match self.opts.storage {
            Storage::F32 => {
                for j in 0..dp {
                    host.extend_from_slice(&row.get(j).copied().unwrap_or(0.0).to_le_bytes());
                }
            }
            Storage::F16 => {
                for j in 0..dp {
                    let h = half::f16::from_f32(row.get(j).copied().unwrap_or(0.0));
                    host.extend_from_slice(&h.to_le_bytes());
                }
            }
            Storage::Int8 => {
                let amax = row.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                let s = if amax > 0.0 && amax.is_finite() {
                    amax / 127.0
                } else {
                    1.0
                };
                for j in 0..dp {
                    let v = row.get(j).copied().unwrap_or(0.0);
                    host.push(((v / s).round().clamp(-127.0, 127.0) as i8) as u8);
                }
                // The kernel's unpack4x8snorm yields q / 127.
                scales.push(if amax.is_finite() {
                    s * 127.0
                } else {
                    f32::NAN
                });
            }
        }
    }

    /// An empty chunk texture for `rows` rows (at least one): the texture, its
    /// 2-D array view (what the scan binds), its lines and its layers.
    fn chunk_texture(&self, rows: usize) -> (TrackedTexture, wgpu::TextureView, usize, usize) {
        let ctx = &self.ctx;
        let lines = 1usize << self.layer_shift();
        let layers = rows.div_ceil(lines).max(1);
        // A one-layer chunk is only as tall as its rows need (growth copies it
        // into a taller one: the row → line mapping does not change).
        let height = if layers == 1 {
            rows.next_multiple_of(256).min(lines)
        } else {
            lines
        };
        let texture = ctx.create_texture(&wgpu::TextureDescriptor {
            label: Some("index chunk"),
            size: wgpu::Extent3d {
                width: self.row_texels() as u32,
                height: height as u32,
                depth_or_array_layers: (layers as u32).max(ctx.profile().min_array_layers),
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: self.opts.storage.texel().0,
            usage: wgpu::TextureUsages::TEXTURE_BINDING
                | wgpu::TextureUsages::COPY_SRC
                | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        (texture, view, height, layers)
    }

    /// Removes the vectors with these ids (ids not stored are skipped) and
    /// returns how many were removed. Each chunk that loses rows is
    /// compacted on the device: its kept rows are copied, in order, into a
    /// smaller texture (no host round trip, no re-encoding); the others are
    /// untouched. Ids are not reused by later [`add`](Self::add) calls.
    ///
    /// Errors: a device error while compacting (the index is then unchanged).
    pub fn remove_ids(&mut self, ids: &[u64]) -> Result<usize> {
        let mut gone: Vec<usize> = ids
            .iter()
            .filter_map(|id| self.rows_of.get(id).copied())
            .collect();
        gone.sort_unstable();
        gone.dedup();
        if gone.is_empty() {
            return Ok(0);
        }
        // Every replacement is built before any is applied.
        let mut plan: Vec<Option<Option<Chunk>>> = Vec::with_capacity(self.chunks.len());
        let (mut base, mut g) = (0, 0);
        for c in &self.chunks {
            let from = g;
            while g < gone.len() && gone[g] < base + c.rows {
                g += 1;
            }
            let local: Vec<usize> = gone[from..g].iter().map(|r| r - base).collect();
            plan.push(match local.len() {
                0 => None,
                n if n == c.rows => Some(None),
                _ => Some(Some(self.compact_chunk(c, &local)?)),
            });
            base += c.rows;
        }
        let old = std::mem::take(&mut self.chunks);
        for (c, p) in old.into_iter().zip(plan) {
            match p {
                None => self.chunks.push(c),
                Some(Some(new)) => self.chunks.push(new),
                Some(None) => {}
            }
        }
        self.len -= gone.len();
        let mut g = gone.iter().peekable();
        let mut row = 0;
        self.ids.retain(|_| {
            let drop = g.next_if(|&&r| r == row).is_some();
            row += 1;
            !drop
        });
        self.rows_of = self
            .ids
            .iter()
            .enumerate()
            .map(|(r, &id)| (id, r))
            .collect();
        self.forget_id_table();
        Ok(gone.len())
    }

    /// `c` without its rows `removed` (local, sorted, fewer than all): the
    /// kept runs copied texture to texture (and scale buffer to buffer).
    fn compact_chunk(&self, c: &Chunk, removed: &[usize]) -> Result<Chunk> {
        let ctx = &self.ctx;
        let lines = 1usize << self.layer_shift();
        let width = self.row_texels() as u32;
        let mut runs = Vec::new();
        let mut start = 0;
        for &r in removed.iter().chain(std::iter::once(&c.rows)) {
            if r > start {
                runs.push((start, r));
            }
            start = r + 1;
        }
        let rows = c.rows - removed.len();
        ctx.scoped(OP, || {
            let (texture, view, height, layers) = self.chunk_texture(rows);
            let side = |b: &Option<Tracked>| b.as_ref().map(|_| side_buffer(ctx, rows * 4));
            let (scales, norms) = (side(&c.scales), side(&c.norms));
            let at = |tex, row: usize| wgpu::TexelCopyTextureInfo {
                texture: tex,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: 0,
                    y: (row % lines) as u32,
                    z: (row / lines) as u32,
                },
                aspect: wgpu::TextureAspect::All,
            };
            let mut enc = ctx.encoder();
            let mut dst = 0;
            for &(a, b) in &runs {
                for (from, to) in [(&c.scales, &scales), (&c.norms, &norms)] {
                    if let (Some(from), Some(to)) = (from, to) {
                        let (at, to_at, n) =
                            ((a * 4) as u64, (dst * 4) as u64, ((b - a) * 4) as u64);
                        enc.copy_buffer_to_buffer(from, at, to, to_at, n);
                    }
                }
                // Pieces within one layer of the source and of the copy.
                let mut r = a;
                while r < b {
                    let n = (b - r).min(lines - r % lines).min(lines - dst % lines);
                    enc.copy_texture_to_texture(
                        at(&c.texture, r),
                        at(&texture, dst),
                        wgpu::Extent3d {
                            width,
                            height: n as u32,
                            depth_or_array_layers: 1,
                        },
                    );
                    r += n;
                    dst += n;
                }
            }
            ctx.submit(enc);
            Ok(Chunk {
                texture,
                view,
                height,
                layers,
                scales,
                norms,
                rows,
            })
        })
    }

    /// The stored vector with this id, read back from the device and
    /// dequantised (f16 widened; int8 times its row's scale); a cosine index
    /// stores, and so returns, the normalised vector.
    ///
    /// Errors: no vector has this id ([`Error::InvalidArgument`]).
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        const REC: &str = "FlatIndex::reconstruct";
        let Some(&row) = self.rows_of.get(&id) else {
            return Err(Error::InvalidArgument {
                op: REC,
                detail: format!("no vector has id {id}"),
            });
        };
        let (mut c, mut local) = (&self.chunks[0], row);
        for ch in &self.chunks {
            c = ch;
            if local < ch.rows {
                break;
            }
            local -= ch.rows;
        }
        let bytes = self.read_rows(c, local, 1)?;
        let scale = match &c.scales {
            Some(s) => {
                let t = crate::Tensor::zeros(&self.ctx, &[1], DType::F32)?;
                self.ctx.scoped(REC, || {
                    let mut enc = self.ctx.encoder();
                    enc.copy_buffer_to_buffer(s, (local * 4) as u64, t.buffer(), t.offset(), 4);
                    self.ctx.submit(enc);
                    Ok(())
                })?;
                t.to_vec::<f32>()?[0]
            }
            None => 1.0,
        };
        Ok(self.decode_row(&bytes, scale))
    }

    /// A chunk holding `prev`'s rows (copied on the device) followed by the
    /// encoded `host` rows and their `scales`; `rows` counts both.
    fn extend_chunk(&self, prev: Option<&Chunk>, new: Rows<'_>, rows: usize) -> Result<Chunk> {
        let ctx = &self.ctx;
        let lines = 1usize << self.layer_shift();
        let (_, texel_bytes) = self.opts.storage.texel();
        let width = self.row_texels() as u32;
        let row_bytes = self.row_bytes();
        ctx.scoped(OP, || {
            let (texture, view, height, layers) = self.chunk_texture(rows);
            let mut enc = ctx.encoder();
            let old_rows = prev.map_or(0, |p| p.rows);
            if let Some(p) = prev {
                enc.copy_texture_to_texture(
                    p.texture.as_image_copy(),
                    texture.as_image_copy(),
                    wgpu::Extent3d {
                        width,
                        height: p.height as u32,
                        depth_or_array_layers: p.layers as u32,
                    },
                );
            }
            ctx.submit(enc);
            // New rows, one write (or copy) per layer they touch. Queued
            // writes run after the copy above, which may cover the same layer.
            let mut r = old_rows;
            let mut enc = ctx.encoder();
            while r < rows {
                let end = rows.min((r / lines + 1) * lines);
                let origin = wgpu::Origin3d {
                    x: 0,
                    y: (r % lines) as u32,
                    z: (r / lines) as u32,
                };
                let layout = |offset: u64| wgpu::TexelCopyBufferLayout {
                    offset,
                    bytes_per_row: Some((width as usize * texel_bytes) as u32),
                    rows_per_image: None,
                };
                let extent = |n: usize| wgpu::Extent3d {
                    width,
                    height: n as u32,
                    depth_or_array_layers: 1,
                };
                match new {
                    Rows::Host { bytes, .. } => {
                        let src = &bytes[(r - old_rows) * row_bytes..(end - old_rows) * row_bytes];
                        ctx.queue().write_texture(
                            wgpu::TexelCopyTextureInfo {
                                texture: &texture,
                                mip_level: 0,
                                origin,
                                aspect: wgpu::TextureAspect::All,
                            },
                            src,
                            layout(0),
                            extent(end - r),
                        );
                    }
                    Rows::Device { tensor, first, .. } => {
                        // Buffer rows are the texture's rows (f32, dim a
                        // multiple of 8): one copy per layer where the row
                        // pitch meets the copy alignment, else one per row.
                        let at = |row: usize| {
                            tensor.offset() + ((first + row - old_rows) * row_bytes) as u64
                        };
                        let aligned =
                            row_bytes.is_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize);
                        let spans: Vec<(usize, usize)> = if aligned {
                            vec![(r, end)]
                        } else {
                            (r..end).map(|i| (i, i + 1)).collect()
                        };
                        for (a, b) in spans {
                            enc.copy_buffer_to_texture(
                                wgpu::TexelCopyBufferInfo {
                                    buffer: tensor.buffer(),
                                    // One-row copies name no row pitch: a
                                    // pitch must be 256-byte aligned.
                                    layout: wgpu::TexelCopyBufferLayout {
                                        bytes_per_row: layout(0).bytes_per_row.filter(|_| aligned),
                                        ..layout(at(a))
                                    },
                                },
                                wgpu::TexelCopyTextureInfo {
                                    texture: &texture,
                                    mip_level: 0,
                                    origin: wgpu::Origin3d {
                                        x: 0,
                                        y: (a % lines) as u32,
                                        z: (a / lines) as u32,
                                    },
                                    aspect: wgpu::TextureAspect::All,
                                },
                                extent(b - a),
                            );
                        }
                    }
                }
                r = end;
            }
            ctx.submit(enc);
            // Per-row values after the previous chunk's: from the host, or
            // from a device tensor at the rows' first.
            let side = |old: Option<&Tracked>, host: &[f32], dev: Option<&crate::Tensor>| {
                let dev = match new {
                    Rows::Device { first, .. } => dev.map(|t| (t, first)),
                    Rows::Host { .. } => None,
                };
                grow_side(ctx, old, old_rows, rows, host, dev)
            };
            let (host_scales, host_norms, dev_scales, dev_norms) = match new {
                Rows::Host { scales, norms, .. } => (scales, norms, None, None),
                Rows::Device { scales, norms, .. } => (&[][..], &[][..], scales, norms),
            };
            let scales = (self.opts.storage == Storage::Int8).then(|| {
                side(
                    prev.and_then(|c| c.scales.as_ref()),
                    host_scales,
                    dev_scales,
                )
            });
            let norms = (self.opts.metric == Metric::L2)
                .then(|| side(prev.and_then(|c| c.norms.as_ref()), host_norms, dev_norms));
            Ok(Chunk {
                texture,
                view,
                height,
                layers,
                scales,
                norms,
                rows,
            })
        })
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
        self.search_impl(Queries::Host(queries), k, None)
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
        let mut bits = vec![0u32; self.len.div_ceil(32).max(1)];
        for (r, &id) in self.ids.iter().enumerate() {
            if allow(id) {
                bits[r / 32] |= 1 << (r % 32);
            }
        }
        self.search_impl(Queries::Host(queries), k, Some(&bits))
    }

    /// [`search`](Self::search) for queries that are a device tensor
    /// `[m, dim]` f32 (embeddings a model produced on the GPU): the rows are
    /// copied into the scan's query buffer on the device (a cosine index
    /// normalises them there first); only an L2 index reads back the `m`
    /// query norms.
    ///
    /// Errors: [`Error::Shape`] unless `queries` is f32 `[m, dim]`;
    /// [`Error::InvalidArgument`] for a tensor of another context; as
    /// [`search`](Self::search) for `k`.
    pub fn search_tensor(&self, queries: &crate::Tensor, k: usize) -> Result<SearchResult> {
        self.check_queries(queries, "FlatIndex::search_tensor")?;
        self.search_impl(Queries::Device(queries), k, None)
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
        if k > MAX_K {
            return Err(Error::InvalidArgument {
                op: SD,
                detail: format!("k must be in 0..={MAX_K}, got {k}"),
            });
        }
        let ctx = &self.ctx;
        let m = queries.shape()[0];
        let scores = crate::Tensor::zeros(ctx, &[m, k], DType::F32)?;
        let ids = crate::Tensor::zeros(ctx, &[m, k, 2], DType::U32)?;
        for t in [&scores, &ids] {
            if t.bytes() > ctx.max_binding() {
                return Err(Error::TooLarge {
                    op: SD,
                    what: format!("results {}", crate::tensor::shape_str(t.shape())),
                    size: t.bytes(),
                    limit: ctx.max_binding(),
                    kind: crate::Limit::StorageBinding,
                });
            }
        }
        let l2 = self.opts.metric == Metric::L2;
        let kk = k.min(self.len);
        if m == 0 || k == 0 {
            return Ok(DeviceSearchResult { scores, ids });
        }
        if kk == 0 {
            // Nothing stored: all padding, written from the host.
            let pad = if l2 { f32::INFINITY } else { f32::NEG_INFINITY };
            ctx.queue().write_buffer(
                scores.buffer(),
                scores.offset(),
                bytemuck::cast_slice(&vec![pad; m * k]),
            );
            ctx.queue()
                .write_buffer(ids.buffer(), ids.offset(), &vec![0xff; m * k * 8]);
            return Ok(DeviceSearchResult { scores, ids });
        }
        let dp = padded(self.dim);
        let q = match self.opts.metric {
            Metric::Cosine => crate::ops::similarity::normalize(queries)?,
            _ => queries.contiguous()?,
        };
        let qnorm = if l2 {
            Some(crate::ops::dot::dot(&q, &q)?)
        } else {
            None
        };
        let plan = SearchPlan::new(ctx.profile(), kk, m, dp)?;
        let slices: usize = self
            .chunks
            .iter()
            .map(|c| c.rows.div_ceil(plan.slice_rows()))
            .sum();
        let per_query = (slices * plan.slice_slots() * 8) as u64;
        let batch = ((ctx.max_binding() / per_query.max(1)) as usize).clamp(1, 65535);
        let finish = ctx.pipeline(&TopkSpec::Finish { l2 })?;
        let mut table = self.id_table.lock().unwrap_or_else(|e| e.into_inner());
        if table.is_none() {
            let words: Vec<u64> = self.ids.clone();
            *table = Some(ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("index id table"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::STORAGE,
            }));
        }
        let Some(table) = table.as_ref() else {
            return Err(Error::InvalidArgument {
                op: SD,
                detail: "the id table could not be built".into(),
            });
        };
        fn whole(t: &crate::Tensor) -> Bind<'_> {
            Bind::Buffer {
                buffer: t.buffer(),
                offset: t.offset(),
                size: t.bytes(),
            }
        }
        for q0 in (0..m).step_by(batch) {
            let mb = batch.min(m - q0);
            let (list, slots) =
                self.scan_batch(&plan, Queries::Device(&q), q0, mb, slices, None)?;
            ctx.scoped(SD, || {
                let p = TopkParams {
                    rows: kk as u32,
                    dv: k as u32,
                    m: mb as u32,
                    q0: q0 as u32,
                    slots: slots as u32,
                    ..Default::default()
                };
                let ubuf = ctx.uniform(&p);
                let mut binds = vec![
                    (slot::LIST_FIN, Bind::whole(&list)),
                    (slot::ID_TABLE, Bind::whole(table)),
                    (slot::OUT_SCORES, whole(&scores)),
                    (slot::OUT_IDS, whole(&ids)),
                ];
                if let Some(n) = &qnorm {
                    binds.push((slot::QNORM, whole(n)));
                }
                let mut enc = ctx.encoder();
                ctx.dispatch(
                    &mut enc,
                    &finish,
                    &ubuf,
                    &binds,
                    (k.div_ceil(64) as u32, mb as u32, 1),
                );
                ctx.submit(enc);
                Ok(())
            })?;
        }
        Ok(DeviceSearchResult { scores, ids })
    }

    /// `queries` must be f32 `[m, dim]` on this index's context.
    fn check_queries(&self, queries: &crate::Tensor, op: &'static str) -> Result<()> {
        if !std::sync::Arc::ptr_eq(&queries.context().inner, &self.ctx.inner) {
            return Err(Error::InvalidArgument {
                op,
                detail: format!(
                    "queries are on context {:?}, the index on another, {:?}",
                    queries.context(),
                    self.ctx
                ),
            });
        }
        let s = queries.shape();
        if queries.dtype() != DType::F32 || s.len() != 2 || s[1] != self.dim {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "queries are {} {}, the index takes f32 [m, {}]",
                    queries.dtype(),
                    crate::tensor::shape_str(s),
                    self.dim
                ),
            });
        }
        Ok(())
    }

    fn search_impl(
        &self,
        queries: Queries<'_>,
        k: usize,
        allow: Option<&[u32]>,
    ) -> Result<SearchResult> {
        if k > MAX_K {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("k must be in 0..={MAX_K}, got {k}"),
            });
        }
        let m = match queries {
            Queries::Host(q) if !q.len().is_multiple_of(self.dim) => {
                return Err(Error::Shape {
                    op: OP,
                    detail: format!(
                        "queries of {} values are not whole rows of the index's dim {}",
                        q.len(),
                        self.dim
                    ),
                })
            }
            Queries::Host(q) => q.len() / self.dim,
            Queries::Device(t) => t.shape()[0],
        };
        let l2 = self.opts.metric == Metric::L2;
        let pad_score = if l2 { f32::INFINITY } else { f32::NEG_INFINITY };
        let kk = k.min(self.len);
        let mut res = SearchResult {
            m,
            k,
            scores: Vec::with_capacity(m * k),
            ids: Vec::with_capacity(m * k),
        };
        // Fills the rows so far up to `rows · k` entries.
        let pad = |res: &mut SearchResult, rows: usize| {
            res.scores.resize(rows * k, pad_score);
            res.ids.resize(rows * k, -1);
        };
        if m == 0 || kk == 0 || allow.is_some_and(|a| a.iter().all(|&w| w == 0)) {
            pad(&mut res, m);
            return Ok(res);
        }
        let dp = padded(self.dim);
        let mut qhost = Vec::new();
        let mut qnorm = Vec::with_capacity(m);
        let mut qdev = None;
        match queries {
            Queries::Host(queries) => {
                qhost.reserve(m * dp);
                for q in queries.chunks_exact(self.dim) {
                    let q = if self.opts.metric == Metric::Cosine {
                        normalized(q)
                    } else {
                        q.to_vec()
                    };
                    qnorm.push(stored_norm(&q));
                    qhost.extend_from_slice(&q);
                    qhost.extend(std::iter::repeat_n(0.0, dp - self.dim));
                }
            }
            Queries::Device(t) => {
                let t = match self.opts.metric {
                    Metric::Cosine => crate::ops::similarity::normalize(t)?,
                    _ => t.contiguous()?,
                };
                if l2 {
                    qnorm = crate::ops::dot::dot(&t, &t)?.to_vec::<f32>()?;
                }
                qdev = Some(t);
            }
        }
        let plan = SearchPlan::new(self.ctx.profile(), kk, m, dp)?;
        // Query batches small enough that their candidate lists fit one binding.
        let slices: usize = self
            .chunks
            .iter()
            .map(|c| c.rows.div_ceil(plan.slice_rows()))
            .sum();
        let per_query = (slices * plan.slice_slots() * 8) as u64;
        let batch = ((self.ctx.max_binding() / per_query.max(1)) as usize).clamp(1, 65535);
        let allow_buf = allow.map(|bits| {
            self.ctx
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("search allow bitmap"),
                    contents: bytemuck::cast_slice(bits),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        });
        for q0 in (0..m).step_by(batch) {
            let mb = batch.min(m - q0);
            let qs = match &qdev {
                Some(t) => Queries::Device(t),
                None => Queries::Host(&qhost[q0 * dp..(q0 + mb) * dp]),
            };
            let (s, i) = self.search_batch(&plan, qs, q0, mb, slices, allow_buf.as_deref())?;
            for q in 0..mb {
                let span = q * plan.kp..q * plan.kp + kk;
                for (&sc, &row) in s[span.clone()].iter().zip(&i[span]) {
                    // Rows outside the filter come back as padding.
                    let Some(&id) = self.ids.get(row as usize) else {
                        break;
                    };
                    // L2: the kernel ranks by 2·q·x − ‖x‖²; the distance is
                    // ‖q‖² minus that.
                    res.scores.push(if l2 { qnorm[q0 + q] - sc } else { sc });
                    res.ids.push(id as i64);
                }
                pad(&mut res, q0 + q + 1);
            }
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
        SearchPlan::new(self.ctx.profile(), k, m.max(1), padded(self.dim))
    }

    /// One batch of `m` queries (host rows, padded, this batch's; or rows
    /// `q0..q0 + m` of a device tensor), read back: per query `kp` scores and
    /// storage rows.
    fn search_batch(
        &self,
        plan: &SearchPlan,
        queries: Queries<'_>,
        q0: usize,
        m: usize,
        slices: usize,
        allow: Option<&wgpu::Buffer>,
    ) -> Result<(Vec<f32>, Vec<u32>)> {
        let ctx = &self.ctx;
        let (result, slots) = self.scan_batch(plan, queries, q0, m, slices, allow)?;
        let t = crate::Tensor::zeros(ctx, &[m * slots * 2], DType::U32)?;
        ctx.scoped(OP, || {
            let mut enc = ctx.encoder();
            enc.copy_buffer_to_buffer(&result, 0, t.buffer(), t.offset(), (m * slots * 8) as u64);
            ctx.submit(enc);
            Ok(())
        })?;
        let raw = t.to_vec::<u32>()?;
        let scores = raw.iter().step_by(2).map(|&b| f32::from_bits(b)).collect();
        let ids = raw.iter().skip(1).step_by(2).copied().collect();
        Ok((scores, ids))
    }

    /// The scan and select passes of one batch: the final candidate list
    /// (per query `slots` = `kp` entries of (score bits, storage row)).
    fn scan_batch(
        &self,
        plan: &SearchPlan,
        queries: Queries<'_>,
        q0: usize,
        m: usize,
        slices: usize,
        allow: Option<&wgpu::Buffer>,
    ) -> Result<(Tracked, usize)> {
        let ctx = &self.ctx;
        let dv = padded(self.dim) / 8;
        let qb = plan.qb as usize;
        let l2 = self.opts.metric == Metric::L2;
        let scan = ctx.pipeline(&plan.scan_spec(self.opts.storage, dv, l2, allow.is_some()))?;
        let select = ctx.pipeline(&plan.select_spec())?;
        let mut slots = slices * plan.slice_slots();
        let max = ctx.profile().max_workgroups_per_dim as usize;
        // Query blocks of qb rows, each at an aligned offset of one uniform
        // buffer (a scan dispatch binds one block); the last block is padded.
        let block = qb * 8 * dv * 4;
        let align = ctx.profile().uniform_offset_alignment as usize;
        let stride = block.next_multiple_of(align.max(16));
        let qblocks = m.div_ceil(qb);
        let mut qbytes = vec![0u8; qblocks * stride];
        if let Queries::Host(qhost) = queries {
            for (blk, rows) in qhost.chunks(qb * 8 * dv).enumerate() {
                let bytes: &[u8] = bytemuck::cast_slice(rows);
                qbytes[blk * stride..blk * stride + bytes.len()].copy_from_slice(bytes);
            }
        }
        let result = ctx.scoped(OP, || {
            let qbuf = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("queries"),
                contents: &qbytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
            if let Queries::Device(t) = queries {
                // Each row into its place in its block (the padding stays 0).
                let row = (self.dim * 4) as u64;
                let mut enc = ctx.encoder();
                for i in 0..m {
                    let src = t.offset() + (q0 + i) as u64 * row;
                    let dst = ((i / qb) * stride + (i % qb) * 8 * dv * 4) as u64;
                    enc.copy_buffer_to_buffer(t.buffer(), src, &qbuf, dst, row);
                }
                ctx.submit(enc);
            }
            let new_list = |entries: usize| {
                ctx.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("candidates"),
                    size: (entries * 8).max(16) as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            };
            let mut list = new_list(m * slots);
            let mut enc = ctx.encoder();
            let mut slice_base = 0;
            let mut id_base = 0;
            for c in &self.chunks {
                let nsl = c.rows.div_ceil(plan.slice_rows());
                for blk in 0..qblocks {
                    let p = TopkParams {
                        rows: c.rows as u32,
                        dv: dv as u32,
                        m: qb.min(m - blk * qb) as u32,
                        q0: (blk * qb) as u32,
                        id_base: id_base as u32,
                        slice_base: slice_base as u32,
                        slots: slots as u32,
                        lsh: self.layer_shift(),
                    };
                    let ubuf = ctx.uniform(&p);
                    let query_block = Bind::Buffer {
                        buffer: &qbuf,
                        offset: (blk * stride) as u64,
                        size: block as u64,
                    };
                    let mut binds = vec![
                        (slot::QUERIES, query_block),
                        (slot::CORPUS, Bind::texture(&c.view)),
                        (slot::CANDIDATES, Bind::whole(&list)),
                    ];
                    if let Some(s) = &c.scales {
                        binds.push((slot::ROW_SCALE, Bind::whole(s)));
                    }
                    if let Some(s) = &c.norms {
                        binds.push((slot::ROW_NORM, Bind::whole(s)));
                    }
                    if let Some(a) = allow {
                        binds.push((slot::ALLOW, Bind::whole(a)));
                    }
                    // Slices over x (a chunk's slices fit the per-dimension
                    // limit: rows_per_chunk).
                    let gx = nsl.min(max) as u32;
                    ctx.dispatch(&mut enc, &scan, &ubuf, &binds, (gx, 1, 1));
                }
                slice_base += nsl;
                id_base += c.rows;
            }
            // Reduce each query's list SL entries at a time until KP remain.
            while slots > plan.kp {
                let chunks = slots.div_ceil(plan.sl);
                let out_slots = chunks * plan.kp;
                let out = new_list(m * out_slots);
                let p = TopkParams {
                    rows: slots as u32,
                    slots: out_slots as u32,
                    ..Default::default()
                };
                let ubuf = ctx.uniform(&p);
                ctx.dispatch(
                    &mut enc,
                    &select,
                    &ubuf,
                    &[
                        (slot::LIST_IN, Bind::whole(&list)),
                        (slot::LIST_OUT, Bind::whole(&out)),
                    ],
                    (chunks as u32, m as u32, 1),
                );
                list = out;
                slots = out_slots;
            }
            ctx.submit(enc);
            Ok(list)
        })?;
        Ok((result, slots))
    }
}

/// A per-row f32 buffer (int8 scales, L2 norms) of `bytes` bytes.
fn side_buffer(ctx: &Context, bytes: usize) -> Tracked {
    ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("index row values"),
        size: bytes.max(4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// A per-row buffer for `rows` rows: `old`'s `old_rows` values (copied on the
/// device), then the new rows' from the host or from a device tensor (from
/// its row `first`).
fn grow_side(
    ctx: &Context,
    old: Option<&Tracked>,
    old_rows: usize,
    rows: usize,
    host: &[f32],
    dev: Option<(&crate::Tensor, usize)>,
) -> Tracked {
    let buffer = side_buffer(ctx, rows * 4);
    let old_bytes = (old_rows * 4) as u64;
    // Disjoint ranges, so the order of the queued write and the copies does
    // not matter.
    ctx.queue()
        .write_buffer(&buffer, old_bytes, bytemuck::cast_slice(host));
    let mut enc = ctx.encoder();
    if let (Some(old), true) = (old, old_rows > 0) {
        enc.copy_buffer_to_buffer(old, 0, &buffer, 0, old_bytes);
    }
    if let Some((t, first)) = dev {
        let n = ((rows - old_rows) * 4) as u64;
        enc.copy_buffer_to_buffer(
            t.buffer(),
            t.offset() + (first * 4) as u64,
            &buffer,
            old_bytes,
            n,
        );
    }
    ctx.submit(enc);
    buffer
}

/// A squared norm in f64, rounded once to f32.
fn stored_norm(x: &[f32]) -> f32 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() as f32
}
