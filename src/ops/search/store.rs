//! The chunked store: encoded rows in as many 2-D array textures ("chunks")
//! as the adapter's limits require, with each chunk's per-row side buffers
//! (int8 scales, L2 norms); growth by a device copy into a larger texture,
//! compaction of removed rows on the device, and rows read back. It knows
//! storage rows `0..len` only, not ids: an index maps its ids (or its lists'
//! offsets) onto them.
//!
//! Textures because texel fetches are cached, vectorised gathers on every
//! adapter (on CPU adapters a storage-buffer load is a per-lane loop).

use super::codec::{Codec, Encoded};
use crate::context::{Context, Tracked, TrackedTexture, Wait};
use crate::error::Result;

const OP: &str = "search";

/// Rows of the store as a texture of `layers` layers of `1 << lsh` lines,
/// one row per line.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(super) texture: TrackedTexture,
    /// The 2-D array view the scan binds.
    pub view: wgpu::TextureView,
    /// Lines of the texture: `1 << lsh`, or fewer for a chunk of one layer.
    pub(super) height: usize,
    pub(super) layers: usize,
    /// Per-row scales (int8 storage).
    pub scales: Option<Tracked>,
    /// Squared norms of the stored rows (L2).
    pub norms: Option<Tracked>,
    /// Rows stored.
    pub rows: usize,
}

/// Rows to append: encoded on the host, or stored rows (`row_bytes` each) of
/// a device tensor from row `first`, with their side values from row `first`.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    Host(&'a Encoded),
    Device {
        tensor: &'a crate::Tensor,
        first: usize,
        /// Squared row norms (L2).
        norms: Option<&'a crate::Tensor>,
        /// Row scales (int8 storage).
        scales: Option<&'a crate::Tensor>,
    },
}

/// Where an upload's rows come from: host bytes (queue writes), or a buffer
/// whose rows are the texture's rows from byte `offset`.
#[derive(Clone, Copy)]
enum Source<'a> {
    Host(&'a [u8]),
    Buffer {
        buffer: &'a wgpu::Buffer,
        offset: u64,
    },
}

/// New per-row values after the previous chunk's.
#[derive(Clone, Copy)]
enum Side<'a> {
    Host(&'a [f32]),
    /// A device tensor's values from its row `first`.
    Device(Option<&'a crate::Tensor>, usize),
}

/// Encoded rows of one codec in chunks, storage rows `0..len`.
#[derive(Debug)]
pub(crate) struct ChunkStore {
    pub(super) ctx: Context,
    pub(super) codec: Codec,
    /// Rows per chunk.
    pub(super) per: usize,
    /// log2 of the lines per texture layer.
    pub(super) lsh: u32,
    pub(super) chunks: Vec<Chunk>,
    pub(super) len: usize,
}

impl ChunkStore {
    /// An empty store of `codec`'s rows, at most `max_chunk_rows` a chunk
    /// (`None`: as many as one storage binding and the texture limits allow).
    /// The codec's rows must fit a texture line ([`Storage::max_dim`](super::codec::Storage::max_dim)).
    pub fn new(ctx: &Context, codec: Codec, max_chunk_rows: Option<usize>) -> Self {
        let lim = ctx.profile();
        // A chunk no larger than one storage binding (a size every adapter
        // allocates at once), within the texture limits, and of at most 65,535
        // slices of 256 rows so that its slices fit one dispatch dimension.
        let lines = 1usize << lim.max_texture_2d.max(1).ilog2();
        let cap = (ctx.max_binding() as usize / codec.row_bytes())
            .min(65535 * 256)
            .min(lines * lim.max_texture_layers.max(1) as usize)
            .max(1);
        let per = max_chunk_rows.map_or(cap, |m| m.clamp(1, cap));
        // Whole layers when there are several, so none is left part empty.
        let per = if per > lines {
            per / lines * lines
        } else {
            per
        };
        // Lines per layer: a power of two (row → layer and line by shift and
        // mask), no more than the texture limit or than a chunk needs.
        let lsh = per
            .next_power_of_two()
            .ilog2()
            .min(lim.max_texture_2d.max(1).ilog2());
        ChunkStore {
            ctx: ctx.clone(),
            codec,
            per,
            lsh,
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// The context the store lives on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
    /// How rows are encoded.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }
    /// Rows stored.
    pub fn len(&self) -> usize {
        self.len
    }
    /// The chunks, in storage order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }
    /// log2 of the lines per texture layer.
    pub fn lsh(&self) -> u32 {
        self.lsh
    }
    /// Lines per texture layer.
    pub fn lines(&self) -> usize {
        1 << self.lsh
    }

    /// Device bytes the stored rows and their side values take.
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

    /// Rows the next [`append`](Self::append) takes at most: the last
    /// chunk's room, or a new chunk's.
    pub fn room(&self) -> usize {
        let start = self
            .chunks
            .last()
            .filter(|c| c.rows < self.per)
            .map_or(0, |c| c.rows);
        self.per - start
    }

    /// Appends `n` rows (at most [`room`](Self::room)) from `new` to the
    /// last chunk while it has room (a larger texture receives its rows by a
    /// device-side copy), else to a new chunk. On error the store is
    /// unchanged.
    pub fn append(&mut self, new: Rows<'_>, n: usize) -> Result<()> {
        let grow = self.chunks.last().filter(|c| c.rows < self.per);
        let grew = grow.is_some();
        let chunk = self.extend_chunk(grow, new, grow.map_or(0, |c| c.rows) + n)?;
        match self.chunks.last_mut() {
            Some(last) if grew => *last = chunk,
            _ => self.chunks.push(chunk),
        }
        self.len += n;
        Ok(())
    }

    /// Removes every row.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Removes storage rows `gone` (sorted, each once, all below `len`); the
    /// rows after them move up. Each chunk that loses rows is compacted on
    /// the device: its kept rows are copied, in order, into a smaller texture
    /// (no host round trip, no re-encoding); the others are untouched.
    ///
    /// Errors: a device error while compacting (the store is then unchanged).
    pub fn remove_rows(&mut self, gone: &[usize]) -> Result<()> {
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
        Ok(())
    }

    /// The chunk holding storage row `row` (below `len`) and the row's
    /// place in it.
    pub fn locate(&self, row: usize) -> (&Chunk, usize) {
        let (mut c, mut local) = (&self.chunks[0], row);
        for ch in &self.chunks {
            c = ch;
            if local < ch.rows {
                break;
            }
            local -= ch.rows;
        }
        (c, local)
    }

    /// `n` rows of chunk `c` from its row `first`, all in one texture layer,
    /// read back as stored (`n · row_bytes`); `op` names the caller.
    pub fn read_rows(
        &self,
        op: &'static str,
        c: &Chunk,
        first: usize,
        n: usize,
    ) -> Result<Vec<u8>> {
        let ctx = &self.ctx;
        let row_bytes = self.codec.row_bytes();
        // Texture-to-buffer copies need 256-byte row pitches.
        let pitch = row_bytes.next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize);
        let size = (n * pitch) as u64;
        let buffer = ctx.scoped(op, || {
            let buffer = ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some("index rows read"),
                size,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = ctx.encoder();
            enc.copy_texture_to_buffer(
                self.at(&c.texture, first),
                wgpu::TexelCopyBufferInfo {
                    buffer: &buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(pitch as u32),
                        rows_per_image: None,
                    },
                },
                self.extent(n),
            );
            ctx.submit(enc);
            Ok(buffer)
        })?;
        let bytes = pollster::block_on(ctx.read_buffer(op, &buffer, 0, size, Wait::Here))?;
        Ok(bytes
            .chunks_exact(pitch)
            .flat_map(|r| r[..row_bytes].to_vec())
            .collect())
    }

    /// The int8 scales of rows `first..first + n` of chunk `c` (empty for
    /// other storage); `op` names the caller.
    pub fn read_scales(
        &self,
        op: &'static str,
        c: &Chunk,
        first: usize,
        n: usize,
    ) -> Result<Vec<f32>> {
        let Some(s) = &c.scales else {
            return Ok(Vec::new());
        };
        let at = (first * 4) as u64;
        let bytes =
            pollster::block_on(self.ctx.read_buffer(op, s, at, (n * 4) as u64, Wait::Here))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The copy location of row `row` of `texture`: its line and layer.
    pub(super) fn at<'t>(
        &self,
        texture: &'t wgpu::Texture,
        row: usize,
    ) -> wgpu::TexelCopyTextureInfo<'t> {
        let lines = self.lines();
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d {
                x: 0,
                y: (row % lines) as u32,
                z: (row / lines) as u32,
            },
            aspect: wgpu::TextureAspect::All,
        }
    }

    /// The copy extent of `n` rows within one layer.
    pub(super) fn extent(&self, n: usize) -> wgpu::Extent3d {
        wgpu::Extent3d {
            width: self.codec.row_texels() as u32,
            height: n as u32,
            depth_or_array_layers: 1,
        }
    }

    /// An empty chunk texture for `rows` rows (at least one): the texture, its
    /// 2-D array view (what the scan binds), its lines and its layers.
    pub(super) fn chunk_texture(
        &self,
        rows: usize,
    ) -> (TrackedTexture, wgpu::TextureView, usize, usize) {
        let ctx = &self.ctx;
        let lines = self.lines();
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
                width: self.codec.row_texels() as u32,
                height: height as u32,
                depth_or_array_layers: (layers as u32).max(ctx.profile().min_array_layers),
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: self.codec.storage.texel().0,
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

    /// A chunk holding `prev`'s rows (copied on the device) followed by the
    /// `new` rows and their side values; `rows` counts both.
    fn extend_chunk(&self, prev: Option<&Chunk>, new: Rows<'_>, rows: usize) -> Result<Chunk> {
        let ctx = &self.ctx;
        ctx.scoped(OP, || {
            let (texture, view, height, layers) = self.chunk_texture(rows);
            let mut enc = ctx.encoder();
            let old_rows = prev.map_or(0, |p| p.rows);
            if let Some(p) = prev {
                enc.copy_texture_to_texture(
                    p.texture.as_image_copy(),
                    texture.as_image_copy(),
                    wgpu::Extent3d {
                        width: self.codec.row_texels() as u32,
                        height: p.height as u32,
                        depth_or_array_layers: p.layers as u32,
                    },
                );
            }
            ctx.submit(enc);
            self.upload(&texture, new, old_rows..rows)?;
            let (scales, norms) = match new {
                Rows::Host(e) => (Side::Host(&e.scales), Side::Host(&e.norms)),
                Rows::Device {
                    first,
                    scales,
                    norms,
                    ..
                } => (Side::Device(scales, first), Side::Device(norms, first)),
            };
            let grow = |old: Option<&Tracked>, new| self.grow_side(old, old_rows, rows, new);
            let scales = self
                .codec
                .scaled()
                .then(|| grow(prev.and_then(|c| c.scales.as_ref()), scales));
            let norms = self
                .codec
                .l2()
                .then(|| grow(prev.and_then(|c| c.norms.as_ref()), norms));
            Ok(Chunk {
                texture,
                view,
                height,
                layers,
                scales: scales.transpose()?,
                norms: norms.transpose()?,
                rows,
            })
        })
    }

    /// Writes `new` into rows `rows` of `texture`, one write (or copy) per
    /// layer they touch. Host rows are queue writes, which run after the
    /// growth copy submitted before (it may cover the same layer); inside a
    /// recording, where a queue write would run before the recorded copy,
    /// they are staged in a buffer and copied as device rows are.
    fn upload(
        &self,
        texture: &wgpu::Texture,
        new: Rows<'_>,
        rows: std::ops::Range<usize>,
    ) -> Result<()> {
        let ctx = &self.ctx;
        let row_bytes = self.codec.row_bytes();
        let staged;
        let src = match new {
            Rows::Host(e) if ctx.is_recording() => {
                staged = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("index rows staging"),
                    contents: &e.bytes,
                    usage: wgpu::BufferUsages::COPY_SRC,
                });
                Source::Buffer {
                    buffer: &staged,
                    offset: 0,
                }
            }
            Rows::Host(e) => Source::Host(&e.bytes),
            Rows::Device { tensor, first, .. } => Source::Buffer {
                buffer: tensor.buffer(),
                offset: tensor.offset() + (first * row_bytes) as u64,
            },
        };
        let lines = self.lines();
        let mut enc = ctx.encoder();
        let mut r = rows.start;
        while r < rows.end {
            let end = rows.end.min((r / lines + 1) * lines);
            // Bytes of the new rows from the first.
            let from = (r - rows.start) * row_bytes;
            match src {
                Source::Host(bytes) => ctx.queue().write_texture(
                    self.at(texture, r),
                    &bytes[from..from + (end - r) * row_bytes],
                    self.layout(0, true),
                    self.extent(end - r),
                ),
                Source::Buffer { buffer, offset } => {
                    self.copy_rows(&mut enc, buffer, offset + from as u64, texture, r..end)
                }
            }
            r = end;
        }
        ctx.submit(enc);
        Ok(())
    }

    /// Copies rows `rows` (within one layer) of `texture` from `buffer`,
    /// whose rows are the texture's rows from byte `offset`: one copy where
    /// the row pitch meets the copy alignment, else one per row.
    pub(super) fn copy_rows(
        &self,
        enc: &mut wgpu::CommandEncoder,
        buffer: &wgpu::Buffer,
        offset: u64,
        texture: &wgpu::Texture,
        rows: std::ops::Range<usize>,
    ) {
        let row_bytes = self.codec.row_bytes();
        let aligned = row_bytes.is_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize);
        let spans: Vec<(usize, usize)> = if aligned {
            vec![(rows.start, rows.end)]
        } else {
            rows.clone().map(|i| (i, i + 1)).collect()
        };
        for (a, b) in spans {
            let at = offset + ((a - rows.start) * row_bytes) as u64;
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer,
                    // One-row copies name no row pitch: a pitch must be
                    // 256-byte aligned.
                    layout: self.layout(at, aligned),
                },
                self.at(texture, a),
                self.extent(b - a),
            );
        }
    }

    /// The buffer layout of rows from byte `offset`, with the row pitch
    /// named or not.
    pub(super) fn layout(&self, offset: u64, pitch: bool) -> wgpu::TexelCopyBufferLayout {
        let (_, texel_bytes) = self.codec.storage.texel();
        wgpu::TexelCopyBufferLayout {
            offset,
            bytes_per_row: pitch.then_some((self.codec.row_texels() * texel_bytes) as u32),
            rows_per_image: None,
        }
    }

    /// A per-row buffer for `rows` rows: `old`'s `old_rows` values (copied on
    /// the device), then the new rows'.
    fn grow_side(
        &self,
        old: Option<&Tracked>,
        old_rows: usize,
        rows: usize,
        new: Side<'_>,
    ) -> Result<Tracked> {
        let ctx = &self.ctx;
        let buffer = side_buffer(ctx, rows * 4);
        let old_bytes = (old_rows * 4) as u64;
        // Disjoint ranges, so the order of the write and the copies does not
        // matter.
        if let Side::Host(host) = new {
            ctx.write_buffer_ordered(OP, &buffer, old_bytes, &[bytemuck::cast_slice(host)])?;
        }
        let mut enc = ctx.encoder();
        if let (Some(old), true) = (old, old_rows > 0) {
            enc.copy_buffer_to_buffer(old, 0, &buffer, 0, old_bytes);
        }
        if let Side::Device(Some(t), first) = new {
            let n = ((rows - old_rows) * 4) as u64;
            let at = t.offset() + (first * 4) as u64;
            enc.copy_buffer_to_buffer(t.buffer(), at, &buffer, old_bytes, n);
        }
        ctx.submit(enc);
        Ok(buffer)
    }

    /// `c` without its rows `removed` (local, sorted, fewer than all): the
    /// kept runs copied texture to texture (and side buffer to buffer).
    fn compact_chunk(&self, c: &Chunk, removed: &[usize]) -> Result<Chunk> {
        let ctx = &self.ctx;
        let lines = self.lines();
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
                        self.at(&c.texture, r),
                        self.at(&texture, dst),
                        self.extent(n),
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
}

/// A per-row f32 buffer (int8 scales, L2 norms) of `bytes` bytes.
pub(super) fn side_buffer(ctx: &Context, bytes: usize) -> Tracked {
    ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("index row values"),
        size: bytes.max(4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}
