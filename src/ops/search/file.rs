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
//!
//! The checksummed reader and writer, the codes and the row records are
//! shared with the inverted-file index's format
//! ([`ivf_file`](super::ivf_file)), which has its own magic: each loader
//! names the other when given the other's file.

use std::io::{Read, Write};

use super::codec::{Encoded, Storage};
use super::flat::FlatIndex;
use super::ids::{IdMap, MAX_ID};
use super::store::{ChunkStore, Rows};
use super::IndexOptions;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;

const OP: &str = "FlatIndex::save";
const MAGIC: &[u8; 8] = b"FDINDEX\0";
/// The inverted-file index's magic, recognised here to name its loader.
pub(super) const IVF_MAGIC: &[u8; 8] = b"FDIVF\0\0\0";
const VERSION: u32 = 1;
const HEADER: usize = 48;

/// Bytes of one row record in the file (u128: a header's dim cannot wrap it).
pub(super) fn record_bytes(dim: u64, storage: Storage) -> u128 {
    let scale = if storage == Storage::Int8 { 4 } else { 0 };
    dim.div_ceil(8) as u128 * 8 * storage.bytes_per_value() as u128 + scale
}

/// The file code of a metric.
pub(super) fn metric_code(m: Metric) -> u32 {
    match m {
        Metric::InnerProduct => 0,
        Metric::Cosine => 1,
        Metric::L2 => 2,
    }
}

/// The file code of a storage type.
pub(super) fn storage_code(s: Storage) -> u32 {
    match s {
        Storage::F32 => 0,
        Storage::F16 => 1,
        Storage::Int8 => 2,
    }
}

/// The little-endian u32 at byte `i` of a header.
pub(super) fn u32_at(head: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(head[i..i + 4].try_into().unwrap_or([0; 4]))
}

/// The little-endian u64 at byte `i` of a header.
pub(super) fn u64_at(head: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]))
}

/// Writes a saved index through a running CRC-32; errors name the file.
pub(super) struct Writer {
    inner: std::io::BufWriter<std::fs::File>,
    crc: crc32fast::Hasher,
    path: String,
}

impl Writer {
    /// Creates (or truncates) the file at `path`.
    pub(super) fn create(path: &std::path::Path) -> Result<Writer> {
        let file = std::fs::File::create(path).map_err(|e| Error::IndexFile {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(Writer {
            inner: std::io::BufWriter::new(file),
            crc: crc32fast::Hasher::new(),
            path: path.display().to_string(),
        })
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::IndexFile {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    /// Writes `bytes`, adding them to the checksum.
    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes).map_err(|e| self.io(e))
    }

    /// Writes `values` little-endian, `1 << 16` at a time.
    fn put_le<T: Copy, const W: usize>(
        &mut self,
        values: &[T],
        to: fn(T) -> [u8; W],
    ) -> Result<()> {
        for part in values.chunks(1 << 16) {
            let bytes: Vec<u8> = part.iter().flat_map(|&v| to(v)).collect();
            self.put(&bytes)?;
        }
        Ok(())
    }

    /// Writes u64 `values` (see [`put_le`](Self::put_le)).
    pub(super) fn put_u64s(&mut self, values: &[u64]) -> Result<()> {
        self.put_le(values, u64::to_le_bytes)
    }

    /// Writes u32 `values` (see [`put_le`](Self::put_le)).
    pub(super) fn put_u32s(&mut self, values: &[u32]) -> Result<()> {
        self.put_le(values, u32::to_le_bytes)
    }

    /// Writes f32 `values` (see [`put_le`](Self::put_le)).
    pub(super) fn put_f32s(&mut self, values: &[f32]) -> Result<()> {
        self.put_le(values, f32::to_le_bytes)
    }

    /// Writes every row of `store` as it is stored (then, for int8, its
    /// scale), read back one texture layer at a time; `op` names the caller
    /// in device errors.
    pub(super) fn put_rows(&mut self, store: &ChunkStore, op: &'static str) -> Result<()> {
        let (lines, row_bytes) = (store.lines(), store.codec().row_bytes());
        for c in store.chunks() {
            let scales = store.read_scales(op, c, 0, c.rows)?;
            for layer in 0..c.rows.div_ceil(lines) {
                let first = layer * lines;
                let n = (c.rows - first).min(lines);
                let rows = store.read_rows(op, c, first, n)?;
                let mut rec = Vec::with_capacity(n * (row_bytes + 4));
                for (i, row) in rows.chunks_exact(row_bytes).enumerate() {
                    rec.extend_from_slice(row);
                    if let Some(s) = scales.get(first + i) {
                        rec.extend_from_slice(&s.to_le_bytes());
                    }
                }
                self.put(&rec)?;
            }
        }
        Ok(())
    }

    /// Appends the CRC-32 of everything written and flushes the file.
    pub(super) fn finish(mut self) -> Result<()> {
        let crc = self.crc.clone().finalize();
        self.inner
            .write_all(&crc.to_le_bytes())
            .and_then(|()| self.inner.flush())
            .map_err(|e| self.io(e))
    }
}

/// Reads a saved index through a running CRC-32; errors name the file.
pub(super) struct Reader {
    inner: std::io::BufReader<std::fs::File>,
    crc: crc32fast::Hasher,
    path: String,
    /// Bytes in the file.
    pub(super) size: u64,
}

impl Reader {
    /// Opens the file at `path` and learns its size.
    pub(super) fn open(path: &std::path::Path) -> Result<Reader> {
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
    pub(super) fn bad(&self, detail: String) -> Error {
        Error::IndexFile {
            path: self.path.clone(),
            detail,
        }
    }

    /// Fills `buf`, adding it to the checksum.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner
            .read_exact(buf)
            .map_err(|e| self.bad(e.to_string()))?;
        self.crc.update(buf);
        Ok(())
    }

    /// `n` little-endian values of `W` bytes each, read `1 << 16` at a time
    /// (no second copy of the section); the caller checked `n` against the
    /// file's size.
    fn read_le<const W: usize, T>(&mut self, n: usize, from: fn([u8; W]) -> T) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(n);
        let mut buf = vec![0u8; n.min(1 << 16) * W];
        while out.len() < n {
            let part = (n - out.len()).min(1 << 16);
            self.read(&mut buf[..part * W])?;
            out.extend(
                buf[..part * W]
                    .chunks_exact(W)
                    .map(|b| from(b.try_into().unwrap_or([0; W]))),
            );
        }
        Ok(out)
    }

    /// `n` u64 values (see [`read_le`](Self::read_le)).
    pub(super) fn read_u64s(&mut self, n: usize) -> Result<Vec<u64>> {
        self.read_le(n, u64::from_le_bytes)
    }

    /// `n` u32 values (see [`read_le`](Self::read_le)).
    pub(super) fn read_u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        self.read_le(n, u32::from_le_bytes)
    }

    /// `n` f32 values (see [`read_le`](Self::read_le)).
    pub(super) fn read_f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        self.read_le(n, f32::from_le_bytes)
    }

    /// Reads the fixed header of `N` bytes after checking that the file
    /// holds it and its checksum, then its magic (`magic`; the other index
    /// file's magic names its loader) and its version (`version`).
    pub(super) fn header<const N: usize>(
        &mut self,
        magic: &[u8; 8],
        version: u32,
    ) -> Result<[u8; N]> {
        let size = self.size;
        if size < (N + 4) as u64 {
            return Err(self.bad(format!(
                "{size} bytes: shorter than the {N}-byte header and checksum"
            )));
        }
        let mut head = [0u8; N];
        self.read(&mut head)?;
        if &head[..8] != magic {
            // The other index type's file says which loader reads it.
            let known = [
                (MAGIC, "a flat index file: load it with FlatIndex::load"),
                (IVF_MAGIC, "an IVF index file: load it with IvfIndex::load"),
            ];
            let detail = match known.iter().find(|(m, _)| head[..8] == **m) {
                Some((_, what)) => what.to_string(),
                None => {
                    let name = String::from_utf8_lossy(magic);
                    format!(
                        "not a flashdot index file (no {} magic)",
                        name.trim_end_matches('\0')
                    )
                }
            };
            return Err(self.bad(detail));
        }
        let found = u32_at(&head, 8);
        if found != version {
            return Err(self.bad(format!(
                "format version {found}; this flashdot reads version {version}"
            )));
        }
        Ok(head)
    }

    /// The metric and storage codes at bytes 12 and 16 of a header.
    pub(super) fn codes(&self, head: &[u8]) -> Result<(Metric, Storage)> {
        let metric = match u32_at(head, 12) {
            0 => Metric::InnerProduct,
            1 => Metric::Cosine,
            2 => Metric::L2,
            m => return Err(self.bad(format!("unknown metric code {m}"))),
        };
        let storage = match u32_at(head, 16) {
            0 => Storage::F32,
            1 => Storage::F16,
            2 => Storage::Int8,
            s => return Err(self.bad(format!("unknown storage code {s}"))),
        };
        Ok((metric, storage))
    }

    /// `count` ids, checked as `add_with_ids` checks them against `ids`
    /// (none repeated or over [`MAX_ID`]) and against the header's next id.
    pub(super) fn read_ids(
        &mut self,
        ids: &IdMap,
        count: usize,
        next_id: u64,
        op: &'static str,
    ) -> Result<Vec<u64>> {
        let read = self.read_u64s(count)?;
        let read = ids
            .new_ids(count, Some(&read), op)
            .map_err(|e| self.bad(e.to_string()))?;
        if read.iter().any(|&id| id >= next_id) || next_id > MAX_ID + 1 {
            return Err(self.bad(format!("next id {next_id} is not past every stored id")));
        }
        Ok(read)
    }

    /// `count` row records (`record` bytes each) uploaded to `store` as
    /// stored, one chunk's room at a time (L2 norms recomputed from the
    /// stored rows).
    pub(super) fn read_rows(
        &mut self,
        store: &mut ChunkStore,
        count: usize,
        record: usize,
    ) -> Result<()> {
        let codec = *store.codec();
        let row_bytes = codec.row_bytes();
        let mut done = 0;
        while done < count {
            let n = store.room().min(count - done);
            let mut rec = vec![0u8; n * record];
            self.read(&mut rec)?;
            let mut rows = Encoded {
                bytes: Vec::with_capacity(n * row_bytes),
                ..Encoded::default()
            };
            for rec in rec.chunks_exact(record) {
                let scale = (record > row_bytes).then(|| {
                    f32::from_le_bytes(rec[row_bytes..row_bytes + 4].try_into().unwrap_or([0; 4]))
                });
                codec.push_stored(&rec[..row_bytes], scale, &mut rows);
            }
            store.append(Rows::Host(&rows), n)?;
            done += n;
        }
        Ok(())
    }

    /// Reads the stored checksum and compares it with the contents'.
    pub(super) fn check_sum(mut self) -> Result<()> {
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
        let head = r.header::<HEADER>(MAGIC, VERSION)?;
        let (metric, storage) = r.codes(&head)?;
        let (dim, count, next_id) = (u64_at(&head, 24), u64_at(&head, 32), u64_at(&head, 40));
        if dim == 0 || dim > u32::MAX as u64 {
            return Err(r.bad(format!("dim {dim} is out of range")));
        }
        // The size the header implies, in u128 so that no lying count wraps.
        let record = record_bytes(dim, storage);
        let want = HEADER as u128 + count as u128 * (8 + record) + 4;
        let size = r.size;
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
        let mut w = Writer::create(path.as_ref())?;
        w.put(&self.header())?;
        w.put_u64s(self.ids.ids())?;
        w.put_rows(&self.store, OP)?;
        w.finish()
    }

    /// The file header of this index.
    fn header(&self) -> Vec<u8> {
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        let (metric, storage) = (
            metric_code(self.opts.metric),
            storage_code(self.opts.storage),
        );
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
    /// not a flashdot index (magic), or an IVF index's file; a version,
    /// metric or storage this flashdot does not know; a size that does not
    /// match the header (truncated, or a lying header); ids repeated or over
    /// [`MAX_ID`], or a next id at or below one of them; a checksum mismatch
    /// (corrupt bytes). A dim this adapter cannot store is
    /// [`Error::Unsupported`], as for [`FlatIndex::new`].
    pub fn load(ctx: &Context, path: impl AsRef<std::path::Path>) -> Result<FlatIndex> {
        let mut r = Reader::open(path.as_ref())?;
        let h = Header::read(&mut r)?;
        let opts = IndexOptions::default().metric(h.metric).storage(h.storage);
        let mut ix = FlatIndex::new(ctx, h.dim, opts)?;
        let ids = r.read_ids(&ix.ids, h.count, h.next_id, "FlatIndex::load")?;
        r.read_rows(&mut ix.store, h.count, h.record)?;
        r.check_sum()?;
        ix.ids.commit(&ids);
        ix.ids.set_next_id(h.next_id);
        Ok(ix)
    }
}
