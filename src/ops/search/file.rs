//! The saved-index format ([`FlatIndex::save`] / [`FlatIndex::load`]),
//! version 1, all integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `FDINDEX\0` |
//! | 4 | version (1) |
//! | 4 | metric: 0 inner product, 1 cosine, 2 squared L2 |
//! | 4 | storage: 0 f32, 1 f16, 2 int8 |
//! | 4 | reserved (0) |
//! | 8 | dim |
//! | 8 | count (vectors) |
//! | 8 | next id (`add` continues from it) |
//! | 8 · count | ids, u64, in storage order |
//! | count · record | rows as stored: `ceil(dim / 8) · 8` values of the storage type (f32, IEEE half, or i8), then for int8 the row's f32 scale |
//! | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! L2 indexes recompute their rows' norms from the stored rows on load.
//! Rows are written exactly as the device holds them, so f16 and int8
//! indexes round-trip bit for bit. Saving reads the index back one texture
//! layer at a time and loading uploads one chunk at a time: neither holds a
//! second full copy of the vectors in host memory.

use std::io::{Read, Write};

use super::{FlatIndex, IndexOptions, Rows, Storage, MAX_ID, OP};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;
use crate::tensor::DType;

const MAGIC: &[u8; 8] = b"FDINDEX\0";
const VERSION: u32 = 1;
const HEADER: usize = 48;

/// Bytes of one row record in the file (u128: a header's dim cannot wrap it).
fn record_bytes(dim: u64, storage: Storage) -> u128 {
    let scale = if storage == Storage::Int8 { 4 } else { 0 };
    dim.div_ceil(8) as u128 * 8 * storage.bytes_per_value() as u128 + scale
}

/// Writes through a running CRC-32.
struct Crc<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Crc<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }
}

impl FlatIndex {
    /// Writes the index to `path` in the versioned binary format of
    /// [`file`](crate::ops::search::file) (ids and rows as stored, so f16 and int8 round-trip bit
    /// for bit), streaming one texture layer at a time.
    ///
    /// Errors: the file cannot be written ([`Error::IndexFile`]); a device
    /// error while reading the index back.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::IndexFile {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = Crc {
            inner: std::io::BufWriter::new(file),
            crc: crc32fast::Hasher::new(),
        };
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        let metric: u32 = match self.opts.metric {
            Metric::InnerProduct => 0,
            Metric::Cosine => 1,
            Metric::L2 => 2,
        };
        let storage: u32 = match self.opts.storage {
            Storage::F32 => 0,
            Storage::F16 => 1,
            Storage::Int8 => 2,
        };
        for v in [metric, storage, 0] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.dim as u64, self.len as u64, self.next_id] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        w.put(&head).map_err(io)?;
        for chunk in self.ids.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|id| id.to_le_bytes()).collect();
            w.put(&bytes).map_err(io)?;
        }
        let lines = 1usize << self.layer_shift();
        let row_bytes = self.row_bytes();
        for c in &self.chunks {
            let scales = match &c.scales {
                Some(s) => {
                    let t = crate::Tensor::zeros(&self.ctx, &[c.rows], DType::F32)?;
                    self.ctx.scoped(OP, || {
                        let mut enc = self.ctx.encoder();
                        enc.copy_buffer_to_buffer(
                            s,
                            0,
                            t.buffer(),
                            t.offset(),
                            (c.rows * 4) as u64,
                        );
                        self.ctx.submit(enc);
                        Ok(())
                    })?;
                    t.to_vec::<f32>()?
                }
                None => Vec::new(),
            };
            for layer in 0..c.rows.div_ceil(lines) {
                let first = layer * lines;
                let n = (c.rows - first).min(lines);
                let rows = self.read_rows(c, first, n)?;
                let mut rec = Vec::with_capacity(n * (row_bytes + 4));
                for (i, row) in rows.chunks_exact(row_bytes).enumerate() {
                    rec.extend_from_slice(row);
                    if let Some(s) = scales.get(first + i) {
                        rec.extend_from_slice(&s.to_le_bytes());
                    }
                }
                w.put(&rec).map_err(io)?;
            }
        }
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes()).map_err(io)?;
        w.inner.flush().map_err(io)
    }

    /// `n` rows of chunk `c` from its row `first`, all in one texture layer,
    /// as stored (`n · row_bytes`).
    pub(super) fn read_rows(&self, c: &super::Chunk, first: usize, n: usize) -> Result<Vec<u8>> {
        let lines = 1usize << self.layer_shift();
        let ctx = &self.ctx;
        let row_bytes = self.row_bytes();
        // Texture-to-buffer copies need 256-byte row pitches.
        let pitch = row_bytes.next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize);
        let t = crate::Tensor::zeros(ctx, &[n * pitch / 4], DType::U32)?;
        ctx.scoped(OP, || {
            let mut enc = ctx.encoder();
            enc.copy_texture_to_buffer(
                wgpu::TexelCopyTextureInfo {
                    texture: &c.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: (first % lines) as u32,
                        z: (first / lines) as u32,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::TexelCopyBufferInfo {
                    buffer: t.buffer(),
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: t.offset(),
                        bytes_per_row: Some(pitch as u32),
                        rows_per_image: None,
                    },
                },
                wgpu::Extent3d {
                    width: self.row_texels() as u32,
                    height: n as u32,
                    depth_or_array_layers: 1,
                },
            );
            ctx.submit(enc);
            Ok(())
        })?;
        let words = t.to_vec::<u32>()?;
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        Ok(bytes
            .chunks_exact(pitch)
            .flat_map(|r| r[..row_bytes].to_vec())
            .collect())
    }

    /// Reads an index that [`save`](Self::save) wrote, onto `ctx`.
    ///
    /// The header is checked against the file's size before anything is
    /// allocated from it, and the whole file against its CRC-32.
    ///
    /// Errors ([`Error::IndexFile`], naming the file): missing or unreadable;
    /// not a flashdot index (magic); a version, metric or storage this
    /// flashdot does not know; a size that does not match the header
    /// (truncated, or a lying header); ids repeated or over [`MAX_ID`], or a
    /// next id at or below one of them; a checksum mismatch (corrupt bytes).
    /// A dim this adapter cannot store is [`Error::Unsupported`], as for
    /// [`FlatIndex::new`].
    pub fn load(ctx: &Context, path: impl AsRef<std::path::Path>) -> Result<FlatIndex> {
        let path = path.as_ref();
        let bad = |detail: String| Error::IndexFile {
            path: path.display().to_string(),
            detail,
        };
        let io = |e: std::io::Error| bad(e.to_string());
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut r = std::io::BufReader::new(file);
        let mut crc = crc32fast::Hasher::new();
        let mut read = |buf: &mut [u8], crc: &mut crc32fast::Hasher| {
            r.read_exact(buf).map_err(io)?;
            crc.update(buf);
            Ok::<(), Error>(())
        };
        let mut head = [0u8; HEADER];
        if size < (HEADER + 4) as u64 {
            return Err(bad(format!(
                "{size} bytes: shorter than the {HEADER}-byte header and checksum"
            )));
        }
        read(&mut head, &mut crc)?;
        if &head[..8] != MAGIC {
            return Err(bad("not a flashdot index (no FDINDEX magic)".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}; this flashdot reads version {VERSION}"
            )));
        }
        let metric = match u32_at(12) {
            0 => Metric::InnerProduct,
            1 => Metric::Cosine,
            2 => Metric::L2,
            m => return Err(bad(format!("unknown metric code {m}"))),
        };
        let storage = match u32_at(16) {
            0 => Storage::F32,
            1 => Storage::F16,
            2 => Storage::Int8,
            s => return Err(bad(format!("unknown storage code {s}"))),
        };
        let (dim, count, next_id) = (u64_at(24), u64_at(32), u64_at(40));
        if dim == 0 || dim > u32::MAX as u64 {
            return Err(bad(format!("dim {dim} is out of range")));
        }
        // The size the header implies, in u128 so that no lying count wraps;
        // checked before anything is allocated from the header.
        let record = record_bytes(dim, storage);
        let want = HEADER as u128 + count as u128 * (8 + record) + 4;
        if want != size as u128 {
            return Err(bad(format!(
                "{size} bytes, but the header's {count} vectors of dim {dim} ({storage:?}) \
                 make {want}: truncated or not what its header says"
            )));
        }
        let mut ix = FlatIndex::new(
            ctx,
            dim as usize,
            IndexOptions::default().metric(metric).storage(storage),
        )?;
        let count = count as usize;
        let mut ids = vec![0u8; count * 8];
        read(&mut ids, &mut crc)?;
        let ids: Vec<u64> = ids
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        let ids = ix
            .new_ids(count, Some(&ids), "FlatIndex::load")
            .map_err(|e| bad(e.to_string()))?;
        if ids.iter().any(|&id| id >= next_id) || next_id > MAX_ID + 1 {
            return Err(bad(format!(
                "next id {next_id} is not past every stored id"
            )));
        }
        let (row_bytes, record) = (ix.row_bytes(), record as usize);
        let per = ix.rows_per_chunk();
        let mut done = 0;
        while done < count {
            let start = ix
                .chunks
                .last()
                .filter(|c| c.rows < per)
                .map_or(0, |c| c.rows);
            let n = (per - start).min(count - done);
            let mut rec = vec![0u8; n * record];
            read(&mut rec, &mut crc)?;
            let mut bytes = Vec::with_capacity(n * row_bytes);
            let (mut scales, mut norms) = (Vec::new(), Vec::new());
            for r in rec.chunks_exact(record) {
                bytes.extend_from_slice(&r[..row_bytes]);
                let scale = if record > row_bytes {
                    let s = f32::from_le_bytes(
                        r[row_bytes..row_bytes + 4].try_into().unwrap_or([0; 4]),
                    );
                    scales.push(s);
                    s
                } else {
                    1.0
                };
                if metric == Metric::L2 {
                    norms.push(super::stored_norm(&ix.decode_row(&r[..row_bytes], scale)));
                }
            }
            let new = Rows::Host {
                bytes: &bytes,
                scales: &scales,
                norms: &norms,
            };
            ix.append(per, new, n)?;
            done += n;
        }
        let mut tail = [0u8; 4];
        r.read_exact(&mut tail).map_err(io)?;
        let (stored, computed) = (u32::from_le_bytes(tail), crc.finalize());
        if stored != computed {
            return Err(bad(format!(
                "checksum {stored:08x} but the contents hash to {computed:08x}: the file is corrupt"
            )));
        }
        ix.commit_ids(ids);
        ix.next_id = next_id;
        Ok(ix)
    }
}
