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
//! Ids are insertion positions. Results are best first, ties broken by the lower
//! id; NaN scores (a NaN in the corpus) sort after every number.

mod plan;

pub use plan::{Scan, SearchPlan};

use crate::context::{Bind, Context, Tracked, TrackedTexture};
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;
use crate::tensor::DType;
#[cfg(test)]
pub(crate) use plan::reachable as reachable_specs;
use plan::slot;
pub(crate) use plan::TopkParams;

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
    rows: usize,
}

/// A flat (brute-force) exact index of `dim`-dimensional vectors.
#[derive(Debug)]
pub struct FlatIndex {
    ctx: Context,
    dim: usize,
    opts: IndexOptions,
    chunks: Vec<Chunk>,
    len: usize,
}

/// Result of [`FlatIndex::search`]: `m` rows of `k` (score, id), best first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Queries.
    pub m: usize,
    /// Results per query: `min(k, len)`.
    pub k: usize,
    /// `[m, k]` scores.
    pub scores: Vec<f32>,
    /// `[m, k]` ids (insertion positions).
    pub ids: Vec<u32>,
}

const OP: &str = "search";

/// Row length as stored: the kernels read 8 values per load step.
/// Rows to append to a chunk: encoded on the host, or f32 rows of a device
/// tensor from row `first`.
#[derive(Clone, Copy)]
enum Rows<'a> {
    Host {
        bytes: &'a [u8],
        scales: &'a [f32],
    },
    Device {
        tensor: &'a crate::Tensor,
        first: usize,
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
        })
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
            .map(|c| c.texture.bytes() + c.scales.as_ref().map_or(0, |s| s.size()))
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

    /// Appends `data` (`[n, dim]` row-major f32), converting to the storage type.
    /// Errors: a length that is not a multiple of `dim`.
    pub fn add(&mut self, data: &[f32]) -> Result<()> {
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
        let per = self.rows_per_chunk();
        let mut rows = data.chunks_exact(self.dim).peekable();
        while rows.peek().is_some() {
            // Fill the last chunk first: it is replaced by a larger texture that
            // receives its rows by a device-side copy.
            let last = match self.chunks.last() {
                Some(c) if c.rows < per => self.chunks.pop(),
                _ => None,
            };
            let start_rows = last.as_ref().map_or(0, |c| c.rows);
            let (mut host, mut scales) = (Vec::new(), Vec::new());
            let mut n = start_rows;
            for row in rows.by_ref().take(per - start_rows) {
                let row = if self.opts.metric == Metric::Cosine {
                    normalized(row)
                } else {
                    row.to_vec()
                };
                self.encode_row(&row, &mut host, &mut scales);
                n += 1;
            }
            let new = Rows::Host {
                bytes: &host,
                scales: &scales,
            };
            self.chunks.push(self.extend_chunk(last.as_ref(), new, n)?);
        }
        self.len = self.chunks.iter().map(|c| c.rows).sum();
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
    /// converted or padded on the host: use [`add`](Self::add)).
    pub fn add_tensor(&mut self, x: &crate::Tensor) -> Result<()> {
        const ADD: &str = "FlatIndex::add_tensor";
        if !std::sync::Arc::ptr_eq(&x.context().inner, &self.ctx.inner) {
            return Err(Error::InvalidArgument {
                op: ADD,
                detail: format!(
                    "x is on context {:?}, the index on another, {:?}",
                    x.context(),
                    self.ctx
                ),
            });
        }
        crate::Tensor::same_context(ADD, &[("x", x)])?;
        if x.dtype() != DType::F32 || x.shape().len() != 2 || x.shape()[1] != self.dim {
            return Err(Error::Shape {
                op: ADD,
                detail: format!(
                    "x is {} {}, the index takes f32 [n, {}]",
                    x.dtype(),
                    crate::tensor::shape_str(x.shape()),
                    self.dim
                ),
            });
        }
        if self.opts.storage != Storage::F32 || !self.dim.is_multiple_of(8) {
            return Err(Error::Unsupported {
                op: ADD,
                detail: format!(
                    "device rows go into f32 storage of a dim that is a multiple of 8 (this index: \
                     {:?}, dim {}); read them back and use add()",
                    self.opts.storage, self.dim
                ),
            });
        }
        let n = x.shape()[0];
        if n == 0 {
            return Ok(());
        }
        let src = if self.opts.metric == Metric::Cosine {
            crate::ops::similarity::normalize(x)?
        } else {
            x.clone()
        };
        let per = self.rows_per_chunk();
        let mut done = 0;
        while done < n {
            let last = match self.chunks.last() {
                Some(c) if c.rows < per => self.chunks.pop(),
                _ => None,
            };
            let start_rows = last.as_ref().map_or(0, |c| c.rows);
            let take = (per - start_rows).min(n - done);
            let new = Rows::Device {
                tensor: &src,
                first: done,
            };
            self.chunks
                .push(self.extend_chunk(last.as_ref(), new, start_rows + take)?);
            done += take;
        }
        self.len = self.chunks.iter().map(|c| c.rows).sum();
        Ok(())
    }

    fn encode_row(&self, row: &[f32], host: &mut Vec<u8>, scales: &mut Vec<f32>) {
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

    /// A chunk holding `prev`'s rows (copied on the device) followed by the
    /// encoded `host` rows and their `scales`; `rows` counts both.
    fn extend_chunk(&self, prev: Option<&Chunk>, new: Rows<'_>, rows: usize) -> Result<Chunk> {
        let ctx = &self.ctx;
        let lsh = self.layer_shift();
        let lines = 1usize << lsh;
        let layers = rows.div_ceil(lines);
        // A one-layer chunk is only as tall as its rows need (growth copies it
        // into a taller one: the row → line mapping does not change).
        let height = if layers == 1 {
            rows.next_multiple_of(256).min(lines)
        } else {
            lines
        };
        let (format, texel_bytes) = self.opts.storage.texel();
        let width = self.row_texels() as u32;
        let row_bytes = self.row_bytes();
        ctx.scoped(OP, || {
            let texture = ctx.create_texture(&wgpu::TextureDescriptor {
                label: Some("index chunk"),
                size: wgpu::Extent3d {
                    width,
                    height: height as u32,
                    depth_or_array_layers: (layers as u32).max(ctx.profile().min_array_layers),
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUsages::TEXTURE_BINDING
                    | wgpu::TextureUsages::COPY_SRC
                    | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
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
                    Rows::Device { tensor, first } => {
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
                                    layout: layout(at(a)),
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
            let view = texture.create_view(&wgpu::TextureViewDescriptor {
                dimension: Some(wgpu::TextureViewDimension::D2Array),
                ..Default::default()
            });
            let scales = (self.opts.storage == Storage::Int8).then(|| {
                let old = prev.and_then(|c| c.scales.as_ref());
                let old_size = old.map_or(0, |b| b.size());
                let new: &[u8] = match new {
                    Rows::Host { scales, .. } => bytemuck::cast_slice(scales),
                    Rows::Device { .. } => &[],
                };
                let buffer = ctx.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("index scales"),
                    size: old_size + new.len() as u64,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                // Disjoint ranges, so the order of the queued write and the
                // copy does not matter.
                ctx.queue().write_buffer(&buffer, old_size, new);
                if let Some(old) = old {
                    let mut enc = ctx.encoder();
                    enc.copy_buffer_to_buffer(old, 0, &buffer, 0, old_size);
                    ctx.submit(enc);
                }
                buffer
            });
            Ok(Chunk {
                texture,
                view,
                height,
                layers,
                scales,
                rows,
            })
        })
    }

    /// The `k` best vectors for each of `queries` (`[m, dim]` row-major f32).
    ///
    /// `k` from 1 to [`MAX_K`]; `k > len` returns `len` results per query; an empty
    /// index returns no results. Errors: `k == 0` or over `MAX_K`
    /// ([`Error::InvalidArgument`]); queries that are not whole rows of `dim`
    /// ([`Error::Shape`]).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        if k == 0 || k > MAX_K {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("k must be in 1..={MAX_K}, got {k}"),
            });
        }
        if !queries.len().is_multiple_of(self.dim) {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "queries of {} values are not whole rows of the index's dim {}",
                    queries.len(),
                    self.dim
                ),
            });
        }
        let m = queries.len() / self.dim;
        let kk = k.min(self.len);
        if m == 0 || kk == 0 {
            return Ok(SearchResult {
                m,
                k: kk,
                scores: Vec::new(),
                ids: Vec::new(),
            });
        }
        let dp = padded(self.dim);
        let mut qhost = Vec::with_capacity(m * dp);
        for q in queries.chunks_exact(self.dim) {
            let q = if self.opts.metric == Metric::Cosine {
                normalized(q)
            } else {
                q.to_vec()
            };
            qhost.extend_from_slice(&q);
            qhost.extend(std::iter::repeat_n(0.0, dp - self.dim));
        }
        let plan = SearchPlan::new(self.ctx.profile(), kk, m, dp)?;
        let mut scores = Vec::with_capacity(m * kk);
        let mut ids = Vec::with_capacity(m * kk);
        // Query batches small enough that their candidate lists fit one binding.
        let slices: usize = self
            .chunks
            .iter()
            .map(|c| c.rows.div_ceil(plan.slice_rows()))
            .sum();
        let per_query = (slices * plan.slice_slots() * 8) as u64;
        let batch = ((self.ctx.max_binding() / per_query.max(1)) as usize).clamp(1, 65535);
        for q0 in (0..m).step_by(batch) {
            let mb = batch.min(m - q0);
            let (s, i) = self.search_batch(&plan, &qhost[q0 * dp..(q0 + mb) * dp], mb, slices)?;
            for q in 0..mb {
                scores.extend_from_slice(&s[q * plan.kp..q * plan.kp + kk]);
                ids.extend_from_slice(&i[q * plan.kp..q * plan.kp + kk]);
            }
        }
        Ok(SearchResult {
            m,
            k: kk,
            scores,
            ids,
        })
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

    fn search_batch(
        &self,
        plan: &SearchPlan,
        qhost: &[f32],
        m: usize,
        slices: usize,
    ) -> Result<(Vec<f32>, Vec<u32>)> {
        let ctx = &self.ctx;
        let dv = padded(self.dim) / 8;
        let qb = plan.qb as usize;
        let scan = ctx.pipeline(&plan.scan_spec(self.opts.storage, dv))?;
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
        for (blk, rows) in qhost.chunks(qb * 8 * dv).enumerate() {
            let bytes: &[u8] = bytemuck::cast_slice(rows);
            qbytes[blk * stride..blk * stride + bytes.len()].copy_from_slice(bytes);
        }
        let result = ctx.scoped(OP, || {
            let qbuf = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("queries"),
                contents: &qbytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
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
}
