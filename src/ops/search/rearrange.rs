//! A [`ChunkStore`] rebuilt in another row order: the rows of a new store
//! are pieces of the old one's (copied texture to texture on the device, no
//! host round trip) and pieces of new rows (host-encoded or on the device),
//! in the order the caller lists them. An inverted-file index keeps each
//! list's rows contiguous this way: an add or a removal lays its lists out
//! again in one pass of device copies.

use std::ops::Range;

use super::store::{side_buffer, Chunk, ChunkStore, Rows};
use crate::error::Result;

const OP: &str = "search";

/// A run of rows of the rebuilt store: rows of the old store, or rows of the
/// new source (in its own numbering).
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    Old(Range<usize>),
    New(Range<usize>),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Old(r) | Piece::New(r) => r.len(),
        }
    }
}

impl ChunkStore {
    /// A store of the same codec and chunking holding `pieces` one after
    /// another; `new` is the source of the [`Piece::New`] rows. `self` is
    /// unchanged (on error too).
    pub fn rearranged(&self, pieces: &[Piece], new: Option<Rows<'_>>) -> Result<ChunkStore> {
        let ctx = &self.ctx;
        let total: usize = pieces.iter().map(Piece::len).sum();
        let mut out = ChunkStore {
            ctx: ctx.clone(),
            codec: self.codec,
            per: self.per,
            lsh: self.lsh,
            chunks: Vec::new(),
            len: total,
        };
        ctx.scoped(OP, || {
            for c in 0..total.div_ceil(self.per) {
                let rows = self.per.min(total - c * self.per);
                let (texture, view, height, layers) = out.chunk_texture(rows);
                let side = |on: bool| on.then(|| side_buffer(ctx, rows * 4));
                out.chunks.push(Chunk {
                    texture,
                    view,
                    height,
                    layers,
                    scales: side(self.codec.scaled()),
                    norms: side(self.codec.l2()),
                    rows,
                });
            }
            let mut enc = ctx.encoder();
            let mut dst = 0;
            for p in pieces {
                match p {
                    Piece::Old(r) => self.copy_old(&out, &mut enc, r.clone(), dst),
                    Piece::New(r) => {
                        let Some(new) = new else {
                            return Err(crate::error::Error::InvalidArgument {
                                op: OP,
                                detail: "a rearrangement lists new rows but no source".into(),
                            });
                        };
                        out.copy_new(&mut enc, new, r.clone(), dst)?;
                    }
                }
                dst += p.len();
            }
            ctx.submit(enc);
            Ok(())
        })?;
        Ok(out)
    }

    /// The runs of storage rows `rows` that lie within one chunk and one
    /// texture layer: (chunk, first local row, length).
    fn runs(&self, rows: Range<usize>) -> Vec<(usize, usize, usize)> {
        let lines = self.lines();
        let mut v = Vec::new();
        let mut r = rows.start;
        while r < rows.end {
            let (c, local) = (r / self.per, r % self.per);
            let n = (rows.end - r)
                .min(self.per - local)
                .min(lines - local % lines);
            v.push((c, local, n));
            r += n;
        }
        v
    }

    /// Copies this store's rows `rows` to `out`'s rows from `dst` (texture
    /// to texture, side buffer to buffer).
    fn copy_old(
        &self,
        out: &ChunkStore,
        enc: &mut wgpu::CommandEncoder,
        rows: Range<usize>,
        mut dst: usize,
    ) {
        for (c, local, n) in self.runs(rows) {
            let from = &self.chunks[c];
            // Destination pieces within one chunk and layer of `out`.
            for (dc, dl, dn) in out.runs(dst..dst + n) {
                let to = &out.chunks[dc];
                let s = local + (dc * out.per + dl - dst);
                enc.copy_texture_to_texture(
                    self.at(&from.texture, s),
                    out.at(&to.texture, dl),
                    self.extent(dn),
                );
                for (a, b) in [(&from.scales, &to.scales), (&from.norms, &to.norms)] {
                    if let (Some(a), Some(b)) = (a, b) {
                        enc.copy_buffer_to_buffer(
                            a,
                            (s * 4) as u64,
                            b,
                            (dl * 4) as u64,
                            (dn * 4) as u64,
                        );
                    }
                }
            }
            dst += n;
        }
    }

    /// Writes rows `rows` of `new` to this store's rows from `dst`: host
    /// rows as queue writes (the destinations are fresh and disjoint, so
    /// their order with the copies does not matter), device rows as copies.
    fn copy_new(
        &self,
        enc: &mut wgpu::CommandEncoder,
        new: Rows<'_>,
        rows: Range<usize>,
        dst: usize,
    ) -> Result<()> {
        let ctx = &self.ctx;
        let row_bytes = self.codec.row_bytes();
        for (c, local, n) in self.runs(dst..dst + rows.len()) {
            let to = &self.chunks[c];
            // The source row of this run.
            let s = rows.start + (c * self.per + local - dst);
            match new {
                Rows::Host(e) => {
                    ctx.queue().write_texture(
                        self.at(&to.texture, local),
                        &e.bytes[s * row_bytes..(s + n) * row_bytes],
                        self.layout(0, true),
                        self.extent(n),
                    );
                    for (host, b) in [(&e.scales, &to.scales), (&e.norms, &to.norms)] {
                        if let Some(b) = b {
                            let vals: &[u8] = bytemuck::cast_slice(&host[s..s + n]);
                            ctx.write_buffer_ordered(OP, b, (local * 4) as u64, &[vals])?;
                        }
                    }
                }
                Rows::Device {
                    tensor,
                    first,
                    norms,
                    scales,
                } => {
                    let at = tensor.offset() + ((first + s) * row_bytes) as u64;
                    self.copy_rows(enc, tensor.buffer(), at, &to.texture, local..local + n);
                    for (t, b) in [(scales, &to.scales), (norms, &to.norms)] {
                        if let (Some(t), Some(b)) = (t, b) {
                            let from = t.offset() + ((first + s) * 4) as u64;
                            enc.copy_buffer_to_buffer(
                                t.buffer(),
                                from,
                                b,
                                (local * 4) as u64,
                                (n * 4) as u64,
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
