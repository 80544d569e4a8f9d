//! The add paths of a [`ChunkStore`]: host rows encoded by the [`Codec`]
//! and appended a chunk's room at a time, and rows of a device tensor
//! appended without a host round trip — copied as they are where the
//! storage is their own (f32, whole groups of 8 values), else encoded on the
//! device by the `pack` kernel first.

use super::codec::{Encoded, Storage};
use super::plan::{slot, tensor_bind, TopkParams, TopkSpec};
use super::store::{ChunkStore, Rows};
use crate::error::{Error, Result};
use crate::ops::similarity::Metric;
use crate::tensor::DType;

const OP: &str = "search";

/// Rows encoded on the device as the host encodes them: stored rows
/// (`row_bytes` each, as u32 words, or the f32 rows themselves), int8
/// scales and L2 norms.
pub(super) struct Packed {
    rows: crate::Tensor,
    scales: Option<crate::Tensor>,
    norms: Option<crate::Tensor>,
}

impl Packed {
    /// The rows as a store's source of new rows.
    pub fn rows(&self) -> Rows<'_> {
        self.rows_from(0)
    }

    /// The rows from row `first` on as a store's source of new rows.
    pub fn rows_from(&self, first: usize) -> Rows<'_> {
        Rows::Device {
            tensor: &self.rows,
            first,
            norms: self.norms.as_ref(),
            scales: self.scales.as_ref(),
        }
    }
}

impl ChunkStore {
    /// Encodes and appends `data`'s rows (`[n, dim]` row-major f32, `dim`
    /// the codec's), a chunk's room at a time. Rows appended before an error
    /// stay.
    pub fn add_host(&mut self, data: &[f32]) -> Result<()> {
        let codec = *self.codec();
        let mut rows = data.chunks_exact(codec.dim).peekable();
        while rows.peek().is_some() {
            let mut encoded = Encoded::default();
            let mut n = 0;
            for row in rows.by_ref().take(self.room()) {
                codec.encode(row, &mut encoded);
                n += 1;
            }
            self.append(Rows::Host(&encoded), n)?;
        }
        Ok(())
    }

    /// Appends the rows of `x` (f32 `[n, dim]`, dense, on the store's
    /// context: the caller checked), normalised on the device for cosine;
    /// `op` names the caller. Rows appended before an error stay.
    ///
    /// Errors: rows the device encodes (f16, int8, or a dim that is not a
    /// multiple of 8) over one storage binding ([`Error::TooLarge`]).
    pub fn add_tensor(&mut self, x: &crate::Tensor, op: &'static str) -> Result<()> {
        let n = x.shape()[0];
        let packed = self.encode_tensor(x, op)?;
        let mut done = 0;
        while done < n {
            let take = self.room().min(n - done);
            self.append(packed.rows_from(done), take)?;
            done += take;
        }
        Ok(())
    }

    /// Every row of `x` (f32 `[n, dim]`, dense, on the store's context: the
    /// caller checked) as the store holds them, on the device: normalised
    /// for cosine, encoded unless the storage is f32 of whole groups of 8;
    /// `op` names the caller.
    ///
    /// Errors: rows the device encodes over one storage binding
    /// ([`Error::TooLarge`]).
    pub(super) fn encode_tensor(&self, x: &crate::Tensor, op: &'static str) -> Result<Packed> {
        let codec = *self.codec();
        let src = if codec.metric == Metric::Cosine {
            crate::ops::similarity::normalize(x)?
        } else {
            x.contiguous()?
        };
        if codec.storage == Storage::F32 && codec.dim.is_multiple_of(8) {
            let norms = codec
                .l2()
                .then(|| crate::ops::dot::dot(&src, &src))
                .transpose()?;
            return Ok(Packed {
                rows: src,
                scales: None,
                norms,
            });
        }
        let max = self.context().max_binding();
        if src.bytes() > max {
            return Err(Error::TooLarge {
                op,
                what: format!(
                    "x {} (encoded on the device: add it in parts)",
                    crate::tensor::shape_str(src.shape())
                ),
                size: src.bytes(),
                limit: max,
                kind: crate::Limit::StorageBinding,
            });
        }
        self.pack_rows(&src, 0, src.shape()[0])
    }

    /// Rows `first..first + n` of `src` (f32 `[rows, dim]`) encoded on the
    /// device.
    fn pack_rows(&self, src: &crate::Tensor, first: usize, n: usize) -> Result<Packed> {
        let ctx = self.context();
        let codec = *self.codec();
        let rows = crate::Tensor::zeros(ctx, &[n * codec.row_bytes() / 4], DType::U32)?;
        let side = |on: bool| {
            on.then(|| crate::Tensor::zeros(ctx, &[n], DType::F32))
                .transpose()
        };
        let (scales, norms) = (side(codec.scaled())?, side(codec.l2())?);
        let pipeline = ctx.pipeline(&TopkSpec::Pack {
            storage: codec.storage,
            l2: codec.l2(),
        })?;
        ctx.scoped(OP, || {
            let p = TopkParams {
                rows: n as u32,
                dv: (codec.padded() / 8) as u32,
                m: codec.dim as u32,
                q0: first as u32,
                ..Default::default()
            };
            let ubuf = ctx.uniform(&p);
            let mut binds = vec![
                (slot::PACK_SRC, tensor_bind(src)),
                (slot::PACK_OUT, tensor_bind(&rows)),
            ];
            if let Some(s) = &scales {
                binds.push((slot::PACK_SCALES, tensor_bind(s)));
            }
            if let Some(s) = &norms {
                binds.push((slot::PACK_NORMS, tensor_bind(s)));
            }
            let groups = n.div_ceil(64);
            let gx = groups.min(65535);
            let mut enc = ctx.encoder();
            let grid = (gx as u32, groups.div_ceil(gx) as u32, 1);
            ctx.dispatch(&mut enc, &pipeline, &ubuf, &binds, grid);
            ctx.submit(enc);
            Ok(())
        })?;
        Ok(Packed {
            rows,
            scales,
            norms,
        })
    }
}
