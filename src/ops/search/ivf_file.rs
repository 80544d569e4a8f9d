//! The saved inverted-file index format ([`IvfIndex::save`] /
//! [`IvfIndex::load`]), version 1, all integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `FDIVF\0\0\0` |
//! | 4 | version (1) |
//! | 4 | metric: 0 inner product, 1 cosine, 2 squared L2 |
//! | 4 | storage: 0 f32, 1 f16, 2 int8 |
//! | 4 | flags: bit 0 trained; the other bits 0 |
//! | 8 | dim |
//! | 8 | nlist (at most [`MAX_NLIST`]) |
//! | 8 | default nprobe (`1..=nlist`) |
//! | 8 | count (vectors; 0 unless trained) |
//! | 8 | next id (`add` continues from it) |
//! | 8 | rows per chunk ([`IvfOptions::max_chunk_rows`]; 0: none) |
//! | 8 | k-means iterations |
//! | 8 | k-means seed |
//! | 8 | k-means points per centroid |
//! | 4 · nlist · dim, if trained | the centroids, f32, `[nlist, dim]` row-major |
//! | 8 · nlist | each list's length, u64 (lists lie one after another) |
//! | 8 · count | ids, u64, by order (the order vectors were added in, removals compacted) |
//! | 4 · count | the order of each storage row, u32 (a permutation of `0..count`) |
//! | count · record | rows in storage order (list after list) as the flat format's records: `ceil(dim / 8) · 8` values of the storage type, then for int8 the row's f32 scale |
//! | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! The orders are saved because ties break by them: a loaded index's
//! searches — `nprobe = nlist` equal to the flat index included — give the
//! ids and scores the saved one gave. The quantiser is rebuilt from the
//! centroids; L2 norms are recomputed from the stored rows, as the flat
//! format does; k-means' initial centroids and the training statistics
//! ([`IvfIndex::training`]) are not saved. Every count of the header is
//! checked against the file's size (in u128) before anything is allocated
//! from it: a lying header is an [`Error::IndexFile`](crate::Error::IndexFile), not an allocation.
//! Saving reads the rows back one texture layer at a time and loading
//! uploads one chunk at a time, as for the flat index.

use super::file::IVF_MAGIC as MAGIC;
use super::file::{metric_code, record_bytes, storage_code, u32_at, u64_at, Reader, Writer};
use super::ivf::{order_buffers, IvfIndex, IvfOptions, MAX_NLIST};
use super::kmeans::KMeansOptions;
use super::store::ChunkStore;
use crate::context::Context;
use crate::error::Result;

const OP: &str = "IvfIndex::save";
const LOAD: &str = "IvfIndex::load";
const VERSION: u32 = 1;
const HEADER: usize = 96;
const TRAINED: u32 = 1;

/// A file's header, checked against the file's size.
struct Header {
    opts: IvfOptions,
    trained: bool,
    dim: usize,
    count: usize,
    next_id: u64,
    /// Bytes of a row record.
    record: usize,
}

impl Header {
    /// Reads and checks the header: magic, version, codes, flags, ranges,
    /// and the size it implies against the file's, before anything is
    /// allocated from it.
    fn read(r: &mut Reader) -> Result<Header> {
        let head = r.header::<HEADER>(MAGIC, VERSION)?;
        let (metric, storage) = r.codes(&head)?;
        let flags = u32_at(&head, 20);
        if flags & !TRAINED != 0 {
            return Err(r.bad(format!("unknown flags {flags:#x}")));
        }
        let trained = flags & TRAINED != 0;
        // Nine u64 fields from byte 24.
        let field = |i: usize| u64_at(&head, 24 + 8 * i);
        let [dim, nlist, nprobe, count, next_id, chunk, niter, seed, points] =
            std::array::from_fn(field);
        if dim == 0 || dim > u32::MAX as u64 {
            return Err(r.bad(format!("dim {dim} is out of range")));
        }
        if nlist == 0 || nlist > MAX_NLIST as u64 {
            return Err(r.bad(format!("nlist {nlist} is not in 1..={MAX_NLIST}")));
        }
        if nprobe == 0 || nprobe > nlist {
            return Err(r.bad(format!("nprobe {nprobe} is not in 1..={nlist} (nlist)")));
        }
        // Orders are u32 (and an untrained index holds nothing).
        if count > u32::MAX as u64 || (!trained && count > 0) {
            let state = if trained { "" } else { "an untrained index, " };
            return Err(r.bad(format!("{state}{count} vectors: out of range")));
        }
        let usize_of = |v: u64, what: &str| {
            usize::try_from(v).map_err(|_| r.bad(format!("{what} {v} is out of range")))
        };
        // The size the header implies, in u128 so that no lying count wraps.
        let record = record_bytes(dim, storage);
        let centroids = if trained {
            nlist as u128 * dim as u128 * 4
        } else {
            0
        };
        let want =
            HEADER as u128 + centroids + nlist as u128 * 8 + count as u128 * (12 + record) + 4;
        let size = r.size;
        if want != size as u128 {
            return Err(r.bad(format!(
                "{size} bytes, but the header's {count} vectors of dim {dim} ({storage:?}) in \
                 {nlist} lists make {want}: truncated or not what its header says"
            )));
        }
        let mut opts = IvfOptions::new(nlist as usize)
            .metric(metric)
            .storage(storage)
            .nprobe(nprobe as usize)
            .kmeans(KMeansOptions {
                niter: usize_of(niter, "k-means iterations")?,
                seed,
                max_points_per_centroid: usize_of(points, "k-means points per centroid")?,
                ..KMeansOptions::default()
            });
        if chunk > 0 {
            opts = opts.max_chunk_rows(usize_of(chunk, "rows per chunk")?);
        }
        Ok(Header {
            opts,
            trained,
            dim: dim as usize,
            count: count as usize,
            next_id,
            record: record as usize,
        })
    }
}

impl IvfIndex {
    /// Writes the index to `path` in the versioned, checksummed binary
    /// format of [`ivf_file`](crate::ops::search::ivf_file): options,
    /// centroids, the list layout, ids and orders, and the rows as stored
    /// (f16 and int8 bit for bit), read back one texture layer at a time.
    /// An untrained index saves too.
    ///
    /// Errors: the file cannot be written ([`Error::IndexFile`](crate::Error::IndexFile)); a device
    /// error while reading the rows back.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let mut w = Writer::create(path.as_ref())?;
        w.put(&self.file_header())?;
        w.put_f32s(self.centroids())?;
        let lens: Vec<u64> = self.list_sizes().iter().map(|&n| n as u64).collect();
        w.put_u64s(&lens)?;
        w.put_u64s(self.ids.ids())?;
        w.put_u32s(&self.row_order)?;
        w.put_rows(&self.store, OP)?;
        w.finish()
    }

    /// The file header of this index.
    fn file_header(&self) -> Vec<u8> {
        let o = &self.opts;
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(MAGIC);
        let flags = if self.is_trained() { TRAINED } else { 0 };
        for v in [
            VERSION,
            metric_code(o.metric),
            storage_code(o.storage),
            flags,
        ] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.dim as u64,
            o.nlist as u64,
            o.nprobe as u64,
            self.len() as u64,
            self.ids.next_id(),
            o.max_chunk_rows.unwrap_or(0) as u64,
            o.kmeans.niter as u64,
            o.kmeans.seed,
            o.kmeans.max_points_per_centroid as u64,
        ] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head
    }

    /// Reads an index that [`save`](Self::save) wrote, onto `ctx`: its
    /// options (k-means' initial centroids aside), centroids, lists, ids,
    /// orders and next id, so that searches give the saved index's ids and
    /// scores and `add` continues its ids. [`training`](Self::training) is
    /// `None` on a loaded index.
    ///
    /// Every count of the header is checked against the file's size before
    /// anything is allocated from it, and the whole file against its
    /// CRC-32.
    ///
    /// Errors ([`Error::IndexFile`](crate::Error::IndexFile), naming the file): missing or
    /// unreadable; not a flashdot IVF index (magic), or a flat index's
    /// file; a version, metric, storage or flag this flashdot does not
    /// know; dim, nlist (over [`MAX_NLIST`]), nprobe or count out of range;
    /// a size that does not match the header (truncated, or a lying
    /// header); list lengths that do not add up to the count; ids repeated
    /// or over [`MAX_ID`](super::MAX_ID), or a next id at or below one of
    /// them; orders that are not a permutation; a checksum mismatch
    /// (corrupt bytes). A dim this adapter cannot store is
    /// [`Error::Unsupported`](crate::Error::Unsupported), as for [`IvfIndex::new`].
    pub fn load(ctx: &Context, path: impl AsRef<std::path::Path>) -> Result<IvfIndex> {
        let mut r = Reader::open(path.as_ref())?;
        let h = Header::read(&mut r)?;
        let (nlist, count) = (h.opts.nlist, h.count);
        let mut ivf = IvfIndex::new(ctx, h.dim, h.opts.clone())?;
        let centroids = if h.trained {
            r.read_f32s(nlist * h.dim)?
        } else {
            Vec::new()
        };
        let mut starts = Vec::with_capacity(nlist + 1);
        starts.push(0usize);
        for len in r.read_u64s(nlist)? {
            // At most `count` (≤ u32::MAX) in all, so no sum overflows.
            let end = len.saturating_add(starts[starts.len() - 1] as u64);
            if end > count as u64 {
                return Err(r.bad(format!("list lengths add up past the {count} vectors")));
            }
            starts.push(end as usize);
        }
        if starts[nlist] != count {
            let total = starts[nlist];
            return Err(r.bad(format!(
                "list lengths add up to {total}, not {count} vectors"
            )));
        }
        let ids = r.read_ids(&ivf.ids, count, h.next_id, LOAD)?;
        let row_order = r.read_u32s(count)?;
        let mut seen = vec![false; count];
        for &o in &row_order {
            match seen.get_mut(o as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(r.bad(format!(
                        "row order {o} is repeated or not below the {count} vectors"
                    )))
                }
            }
        }
        drop(seen);
        let mut store = ChunkStore::new(ctx, *ivf.store.codec(), h.opts.max_chunk_rows);
        r.read_rows(&mut store, count, h.record)?;
        r.check_sum()?;
        if h.trained {
            ivf.set_centroids(centroids)?;
        }
        let orders = order_buffers(ctx, &store, &row_order);
        ivf.ids.commit(&ids);
        ivf.ids.set_next_id(h.next_id);
        ivf.apply(store, starts, row_order, orders);
        Ok(ivf)
    }
}
