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

use super::codec::{Encoded, Storage};
use super::flat::FlatIndex;
use super::ids::MAX_ID;
use super::store::Rows;
use super::IndexOptions;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;

const OP: &str = "FlatIndex::save";
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

/// Reads a saved index through a running CRC-32; errors name the file.
struct Reader {
    inner: std::io::BufReader<std::fs::File>,
    crc: crc32fast::Hasher,
    path: String,
    /// Bytes in the file.
    size: u64,
}

impl Reader {
    fn open(path: &std::path::Path) -> Result<Reader> {
        let io = |e: std::io::Error| Error::IndexFile {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok(Reader {
            inner: std::io::BufReader::new(file),
            crc: crc32fast::Hasher::new(),
            path: path.display().to_string(),
            size,
        })
    }

    /// An [`Error::IndexFile`] for this file.
    fn bad(&self, detail: String) -> Error {
        Error::IndexFile {
            path: self.path.clone(),
            detail,
        }
    }

    /// Fills `buf`, adding it to the checksum.
    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner
            .read_exact(buf)
            .map_err(|e| self.bad(e.to_string()))?;
        self.crc.update(buf);
        Ok(())
    }

    /// Reads the stored checksum and compares it with the contents'.
    fn check_sum(mut self) -> Result<()> {
        let mut tail = [0u8; 4];
        self.inner
            .read_exact(&mut tail)
            .map_err(|e| self.bad(e.to_string()))?;
        let (stored, computed) = (u32::from_le_bytes(tail), self.crc.clone().finalize());
        if stored != computed {
            return Err(self.bad(format!(
                "checksum {stored:08x} but the contents hash to {computed:08x}: the file is corrupt"
            )));
        }
        Ok(())
    }
}

/// A file's header, checked against the file's size.
struct Header {
    metric: Metric,
    storage: Storage,
    dim: usize,
    count: usize,
    next_id: u64,
    /// Bytes of a row record.
    record: usize,
}

impl Header {
    /// Reads and checks the header: magic, version, codes, and the size the
    /// header implies against the file's, before anything is allocated from
    /// it.
    fn read(r: &mut Reader) -> Result<Header> {
        let size = r.size;
        if size < (HEADER + 4) as u64 {
            return Err(r.bad(format!(
                "{size} bytes: shorter than the {HEADER}-byte header and checksum"
            )));
        }
        let mut head = [0u8; HEADER];
        r.read(&mut head)?;
        if &head[..8] != MAGIC {
            return Err(r.bad("not a flashdot index (no FDINDEX magic)".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
        let version = u32_at(8);
        if version != VERSION {
            return Err(r.bad(format!(
                "format version {version}; this flashdot reads version {VERSION}"
            )));
        }
        let metric = match u32_at(12) {
            0 => Metric::InnerProduct,
            1 => Metric::Cosine,
            2 => Metric::L2,
            m => return Err(r.bad(format!("unknown metric code {m}"))),
        };
        let storage = match u32_at(16) {
            0 => Storage::F32,
            1 => Storage::F16,
            2 => Storage::Int8,
            s => return Err(r.bad(format!("unknown storage code {s}"))),
        };
        let (dim, count, next_id) = (u64_at(24), u64_at(32), u64_at(40));
        if dim == 0 || dim > u32::MAX as u64 {
            return Err(r.bad(format!("dim {dim} is out of range")));
        }
        // The size the header implies, in u128 so that no lying count wraps.
        let record = record_bytes(dim, storage);
        let want = HEADER as u128 + count as u128 * (8 + record) + 4;
        if want != size as u128 {
            return Err(r.bad(format!(
                "{size} bytes, but the header's {count} vectors of dim {dim} ({storage:?}) \
                 make {want}: truncated or not what its header says"
            )));
        }
        Ok(Header {
            metric,
            storage,
            dim: dim as usize,
            count: count as usize,
            next_id,
            record: record as usize,
        })
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
        w.put(&self.header()).map_err(io)?;
        for chunk in self.ids.ids().chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|id| id.to_le_bytes()).collect();
            w.put(&bytes).map_err(io)?;
        }
        let store = &self.store;
        let (lines, row_bytes) = (store.lines(), store.codec().row_bytes());
        for c in store.chunks() {
            let scales = store.read_scales(OP, c, 0, c.rows)?;
            for layer in 0..c.rows.div_ceil(lines) {
                let first = layer * lines;
                let n = (c.rows - first).min(lines);
                let rows = store.read_rows(OP, c, first, n)?;
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

    /// The file header of this index.
    fn header(&self) -> Vec<u8> {
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
        for v in [self.dim() as u64, self.len() as u64, self.ids.next_id()] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head
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
        let mut r = Reader::open(path.as_ref())?;
        let h = Header::read(&mut r)?;
        let opts = IndexOptions::default().metric(h.metric).storage(h.storage);
        let mut ix = FlatIndex::new(ctx, h.dim, opts)?;
        let ids = ix.read_ids(&mut r, &h)?;
        ix.read_rows(&mut r, &h)?;
        r.check_sum()?;
        ix.ids.commit(&ids);
        ix.ids.set_next_id(h.next_id);
        Ok(ix)
    }

    /// The file's ids, checked as [`add_with_ids`](Self::add_with_ids)
    /// checks them, and against the header's next id.
    fn read_ids(&self, r: &mut Reader, h: &Header) -> Result<Vec<u64>> {
        let mut bytes = vec![0u8; h.count * 8];
        r.read(&mut bytes)?;
        let ids: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        let ids = self
            .ids
            .new_ids(h.count, Some(&ids), "FlatIndex::load")
            .map_err(|e| r.bad(e.to_string()))?;
        if ids.iter().any(|&id| id >= h.next_id) || h.next_id > MAX_ID + 1 {
            return Err(r.bad(format!("next id {} is not past every stored id", h.next_id)));
        }
        Ok(ids)
    }

    /// The file's row records uploaded as stored, one chunk's room at a
    /// time (L2 norms recomputed from the stored rows).
    fn read_rows(&mut self, r: &mut Reader, h: &Header) -> Result<()> {
        let codec = *self.store.codec();
        let row_bytes = codec.row_bytes();
        let mut done = 0;
        while done < h.count {
            let n = self.store.room().min(h.count - done);
            let mut rec = vec![0u8; n * h.record];
            r.read(&mut rec)?;
            let mut rows = Encoded {
                bytes: Vec::with_capacity(n * row_bytes),
                ..Encoded::default()
            };
            for rec in rec.chunks_exact(h.record) {
                let scale = (h.record > row_bytes).then(|| {
                    f32::from_le_bytes(rec[row_bytes..row_bytes + 4].try_into().unwrap_or([0; 4]))
                });
                codec.push_stored(&rec[..row_bytes], scale, &mut rows);
            }
            self.store.append(Rows::Host(&rows), n)?;
            done += n;
        }
        Ok(())
    }
}
