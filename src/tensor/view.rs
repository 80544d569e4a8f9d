//! Views: reshapes, narrowed (possibly strided or misaligned) views of a
//! tensor's buffer, and the one check of a view's layout that every write and
//! binding path calls.

use super::{checked_len, contiguous_strides, padded_bytes, same_layout, shape_str, Tensor};
use crate::error::{Error, Result};

/// What a path is about to do with a view's bytes.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// A kernel binds the whole tensor as one storage range.
    Bind,
    /// A host write or buffer copy of `bytes` bytes from byte `start` of the
    /// buffer.
    Write { start: u64, bytes: u64 },
}

impl Tensor {
    /// Same data, new shape with the same element count (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.strides.is_some() {
            return Err(Error::InvalidArgument {
                op: "Tensor::reshape",
                detail: format!(
                    "a strided view of shape {} cannot be reshaped without a copy: call \
                     contiguous() first",
                    shape_str(&self.shape)
                ),
            });
        }
        if checked_len(shape) != Some(self.len()) {
            return Err(Error::Shape {
                op: "Tensor::reshape",
                detail: format!(
                    "cannot view {} as {}",
                    shape_str(&self.shape),
                    shape_str(shape)
                ),
            });
        }
        let mut t = self.clone();
        t.shape = shape.to_vec();
        Ok(t)
    }

    /// A view of `len` indices of dimension `dim` from `start`, sharing this
    /// tensor's buffer (no copy): `narrow(2, h, h)` of a `[batch, seq, 3·h]`
    /// fused QKV projection is its K part. The view is contiguous when the
    /// dimensions outside `dim` allow it (always for `dim` 0), otherwise
    /// strided.
    ///
    /// Strided views, and contiguous ones that do not start at the adapter's
    /// storage offset alignment, are read by [`attention`](crate::ops::attention::attention)
    /// and [`Tensor::to_vec`] through one gather copy; other ops take them after
    /// [`Tensor::contiguous`] and return [`Error::InvalidArgument`] saying so.
    /// Writes ([`Tensor::write`], `write_at`, `copy_at`) need a contiguous
    /// view whose run starts on a 4-byte word and ends on one (or at the end
    /// of the tensor it views): an f16 view of an odd number of elements
    /// inside a larger tensor is refused rather than half-written.
    ///
    /// Errors: [`Error::Shape`] if `dim` is not a dimension or
    /// `start + len` passes its size.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let Some(&size) = self.shape.get(dim) else {
            return Err(Error::Shape {
                op: "Tensor::narrow",
                detail: format!("dim {dim} of a tensor of shape {}", shape_str(&self.shape)),
            });
        };
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::Shape {
                op: "Tensor::narrow",
                detail: format!(
                    "{len} indices from {start} of dim {dim}, which has {size} (shape {})",
                    shape_str(&self.shape)
                ),
            });
        }
        let strides = self.strides();
        let mut shape = self.shape.clone();
        shape[dim] = len;
        let mut t = self.clone();
        t.offset = self.offset + (start * strides[dim]) as u64 * self.dtype.size();
        t.strides = (contiguous_strides(&shape) != strides
            && shape.iter().product::<usize>() > 0
            && !same_layout(&shape, &strides))
        .then_some(strides);
        t.shape = shape;
        Ok(t)
    }

    /// Contiguous, starting on the adapter's storage offset alignment, and
    /// ending within its buffer: what kernels bind directly.
    pub(crate) fn is_dense(&self) -> bool {
        self.layout_problem(Access::Bind).is_none()
    }

    /// This tensor if kernels can bind it directly ([`Tensor::is_contiguous`]
    /// and aligned), else a contiguous copy made on the device.
    ///
    /// Errors: [`Error::TooLarge`] for a view whose span exceeds one storage
    /// binding; [`Error::DeviceLost`], [`Error::Gpu`].
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_dense() {
            return Ok(self.clone());
        }
        let out = Tensor::empty(&self.ctx, &self.shape, self.dtype)?;
        super::strided::gather_into(self, &self.strides(), &out)?;
        Ok(out)
    }

    /// The one check of a view's layout, which every binding and write path
    /// calls: `None` when `access` can be served, else what stands in the way.
    fn layout_problem(&self, access: Access) -> Option<String> {
        if let Some(st) = &self.strides {
            return Some(format!(
                "a strided view (shape {}, strides {st:?})",
                shape_str(&self.shape)
            ));
        }
        match access {
            Access::Bind => {
                let align = self.ctx.profile().storage_offset_alignment.max(4) as u64;
                if !self.offset.is_multiple_of(align) {
                    return Some(format!(
                        "a view at byte offset {}, not a multiple of the adapter's storage \
                         offset alignment {align}",
                        self.offset
                    ));
                }
                let end = self.offset + padded_bytes(self.len(), self.dtype);
                (end > self.buffer.size()).then(|| {
                    format!(
                        "a view whose padded bytes end at byte {end}, past its buffer's {}",
                        self.buffer.size()
                    )
                })
            }
            // Queue writes and buffer copies move whole 4-byte words: a run must
            // start on one, and may end inside one only where the rest of that
            // word is the allocation's own padding (inside a narrowed view it
            // holds the next elements).
            Access::Write { start, bytes } => {
                let end = start + bytes;
                if !start.is_multiple_of(4) {
                    Some(format!(
                        "a run of {bytes} bytes at byte {start} of its buffer, which does not \
                         start on a 4-byte word"
                    ))
                } else if !end.is_multiple_of(4) && end != self.end {
                    Some(format!(
                        "a run of {bytes} bytes at byte {start} of its buffer, which ends \
                         inside a 4-byte word holding the elements after it"
                    ))
                } else {
                    None
                }
            }
        }
    }

    /// Fails unless a host write or buffer copy can put `bytes` bytes at byte
    /// `start` of the buffer ([`Tensor::layout_problem`]).
    pub(super) fn check_write(&self, op: &'static str, start: u64, bytes: u64) -> Result<()> {
        match self.layout_problem(Access::Write { start, bytes }) {
            None => Ok(()),
            Some(problem) => Err(Error::InvalidArgument {
                op,
                detail: format!(
                    "writing into {problem} (host writes and copies move whole 4-byte \
                     words): write through the tensor it views, or into a contiguous one"
                ),
            }),
        }
    }

    /// Fails unless kernels can bind the tensor directly, saying how to get
    /// such a tensor.
    pub(crate) fn require_dense(op: &'static str, name: &str, t: &Tensor) -> Result<()> {
        match t.layout_problem(Access::Bind) {
            None => Ok(()),
            Some(problem) => Err(Error::InvalidArgument {
                op,
                detail: format!(
                    "{name} is {problem}, which this op cannot bind directly: pass \
                     {name}.contiguous(){}",
                    if t.strides.is_some() {
                        ""
                    } else {
                        ", or narrow at an aligned row"
                    }
                ),
            }),
        }
    }
}
