//! Host writes into tensors, and device copies between them, in queue order
//! with the ops (recorded in order inside `Context::record`).

use half::f16;

use super::{shape_str, Element, Tensor};
use crate::dtype::DType;
use crate::error::{expect_dtype, Error, Result};

impl Tensor {
    /// Overwrites the whole tensor with `data` (same length and dtype).
    ///
    /// Errors: [`Error::DType`] for data of another dtype; [`Error::Shape`]
    /// for another length; [`Error::InvalidArgument`] for a view whose
    /// elements are not whole 4-byte words of its own (strided, or an f16 view
    /// starting or ending inside a word shared with elements outside it).
    pub fn write<T: Element>(&self, data: &[T]) -> Result<()> {
        const OP: &str = "Tensor::write";
        expect_dtype(OP, "the data", T::DTYPE, &[self.dtype])?;
        if data.len() != self.len() {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "{} elements written to a tensor of shape {}",
                    data.len(),
                    shape_str(&self.shape)
                ),
            });
        }
        self.write_bytes(OP, self.offset, bytemuck::cast_slice(data))
    }

    /// Writes `bytes` into the buffer from byte `start`, after the one check
    /// of the view's layout, in queue order with the ops. Copies move 4-byte
    /// words: a last partial word is padded with zeros (the check allows that
    /// only over the allocation's own padding).
    fn write_bytes(&self, op: &'static str, start: u64, bytes: &[u8]) -> Result<()> {
        self.check_write(op, start, bytes.len() as u64)?;
        let whole = bytes.len() / 4 * 4;
        let mut tail = [0u8; 4];
        tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        let tail = &tail[..(bytes.len() - whole).div_ceil(4) * 4];
        self.ctx
            .write_buffer_ordered(op, &self.buffer, start, &[&bytes[..whole], tail])
    }

    /// The byte range of `n` elements starting at the element addressed by
    /// the leading coordinates `at` (a prefix of the shape; the rest are 0).
    fn range_at(&self, op: &'static str, at: &[usize], n: usize) -> Result<(u64, u64)> {
        let bad = |detail: String| Error::Shape { op, detail };
        if at.len() > self.shape.len() || at.iter().zip(&self.shape).any(|(&i, &d)| i >= d) {
            return Err(bad(format!(
                "position {at:?} is outside shape {}",
                shape_str(&self.shape)
            )));
        }
        let mut first = 0usize;
        let mut stride = self.len();
        for (&i, &d) in at.iter().zip(&self.shape) {
            stride /= d;
            first += i * stride;
        }
        if first + n > self.len() {
            return Err(bad(format!(
                "{n} elements from position {at:?} run past the end of shape {}",
                shape_str(&self.shape)
            )));
        }
        let es = self.dtype.size();
        Ok((self.offset + first as u64 * es, n as u64 * es))
    }

    /// Overwrites `data.len()` consecutive elements starting at the element
    /// whose leading coordinates are `at` (a KV-cache append: `at = [b, t]`
    /// of a `[batch, capacity, heads, dim]` cache and one token's `heads·dim`
    /// values), in queue order with the ops (recorded in order inside
    /// [`Context::record`](crate::context::Context::record)).
    ///
    /// Errors: [`Error::Shape`] for a position outside the shape or a run
    /// past its end; [`Error::DType`] for data that is not of the tensor's
    /// dtype; [`Error::InvalidArgument`] when the run does not start on a
    /// 4-byte word, or ends inside one that holds other elements (f16 runs of
    /// odd length or at odd positions), or the tensor is a strided view.
    pub fn write_at<T: Element>(&self, at: &[usize], data: &[T]) -> Result<()> {
        const OP: &str = "Tensor::write_at";
        expect_dtype(OP, "the data", T::DTYPE, &[self.dtype])?;
        let (start, _) = self.range_at(OP, at, data.len())?;
        self.write_bytes(OP, start, bytemuck::cast_slice(data))
    }

    /// Copies all of `src`'s elements, on the device, into consecutive
    /// elements of this tensor starting at leading coordinates `at` (a new
    /// token's K or V rows appended to a cache without a host round trip).
    ///
    /// Errors: as [`Tensor::write_at`]; [`Error::InvalidArgument`] for
    /// tensors of two contexts or one buffer, or views either side that
    /// kernels cannot bind (pass `src.contiguous()`).
    pub fn copy_at(&self, at: &[usize], src: &Tensor) -> Result<()> {
        const OP: &str = "Tensor::copy_at";
        Tensor::same_context(OP, &[("self", self), ("src", src)])?;
        Tensor::disjoint(OP, &[("self", self)], &[("src", src)])?;
        expect_dtype(OP, "src", src.dtype, &[self.dtype])?;
        let (start, bytes) = self.range_at(OP, at, src.len())?;
        self.copy_run(OP, start, bytes, src)
    }

    /// Copies `bytes` bytes of the contiguous `src` (from its start) to byte
    /// `start` of this tensor's buffer on the device, after the write check
    /// ([`Tensor::check_write`]).
    pub(super) fn copy_run(
        &self,
        op: &'static str,
        start: u64,
        bytes: u64,
        src: &Tensor,
    ) -> Result<()> {
        self.check_write(op, start, bytes)?;
        if bytes == 0 {
            return Ok(());
        }
        // A run that ends inside a word ends at this allocation's padding
        // (checked): the whole word is copied, from `src`'s own padded bytes.
        let words = bytes.next_multiple_of(4);
        let ctx = &self.ctx;
        ctx.scoped(op, || {
            let mut enc = ctx.encoder();
            enc.copy_buffer_to_buffer(&src.buffer, src.offset, &self.buffer, start, words);
            ctx.submit(enc);
            Ok(())
        })
    }

    /// Fills the tensor with NaN (f32/f16) or `u32::MAX`, so a kernel that fails to
    /// write an element is caught by verification.
    pub fn poison(&self) -> Result<()> {
        match self.dtype {
            DType::F32 => self.write(&vec![f32::NAN; self.len()]),
            DType::F16 => self.write(&vec![f16::NAN; self.len()]),
            DType::U32 => self.write(&vec![u32::MAX; self.len()]),
        }
    }
}
