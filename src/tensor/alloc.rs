//! Making tensors: device allocation (checked against the adapter's limits
//! and features), uploads, and wrapping an app's buffer.

use super::{checked_len, checked_padded_bytes, shape_str, Element, Tensor, TENSOR_USAGES};
use crate::context::Context;
use crate::dtype::DType;
use crate::error::{Error, Result};

impl Tensor {
    pub(crate) fn check_dtype(ctx: &Context, dtype: DType, op: &'static str) -> Result<()> {
        if dtype == DType::F16 && !ctx.info().has_f16() {
            return Err(Error::Unsupported {
                op,
                detail: "f16 tensors need the SHADER_F16 feature, which this adapter/context \
                         does not have"
                    .into(),
            });
        }
        Ok(())
    }

    fn alloc(ctx: &Context, shape: &[usize], dtype: DType, op: &'static str) -> Result<Self> {
        Self::alloc_with(ctx, shape, dtype, wgpu::BufferUsages::empty(), op)
    }

    fn alloc_with(
        ctx: &Context,
        shape: &[usize],
        dtype: DType,
        usage: wgpu::BufferUsages,
        op: &'static str,
    ) -> Result<Self> {
        Self::check_dtype(ctx, dtype, op)?;
        let limit = ctx.info().limits.max_buffer_size;
        // Sizes are checked before anything is computed from them: a shape
        // whose element or byte count overflows is too large, not wrapped.
        let bytes = checked_len(shape)
            .and_then(|len| checked_padded_bytes(len, dtype))
            .unwrap_or(u64::MAX);
        if bytes > limit {
            return Err(Error::TooLarge {
                op,
                what: format!("a {} tensor of shape {}", dtype, shape_str(shape)),
                size: bytes,
                limit,
                kind: crate::error::Limit::BufferSize,
            });
        }
        let buffer = ctx.scoped(op, || {
            Ok(ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some(op),
                size: bytes,
                usage: TENSOR_USAGES | usage,
                mapped_at_creation: false,
            }))
        })?;
        Ok(Tensor {
            ctx: ctx.clone(),
            buffer: std::sync::Arc::new(buffer),
            offset: 0,
            end: bytes_of(shape, dtype),
            shape: shape.to_vec(),
            strides: None,
            dtype,
        })
    }

    /// A tensor of zeros whose buffer also has `usage` (e.g. `VERTEX`,
    /// `INDEX`, `UNIFORM`, `INDIRECT`), so that an app can draw from results.
    /// Errors: as [`Tensor::zeros`]; [`Error::Gpu`] if wgpu refuses the
    /// combination of usages.
    pub fn zeros_with_usage(
        ctx: &Context,
        shape: &[usize],
        dtype: DType,
        usage: wgpu::BufferUsages,
    ) -> Result<Self> {
        Self::alloc_with(ctx, shape, dtype, usage, "Tensor::zeros_with_usage")
    }

    /// Wraps an app's buffer without a copy: the tensor's elements start at
    /// byte `offset` of `buffer`, row-major. The buffer must be of this
    /// context's device, have [`TENSOR_USAGES`] (`STORAGE | COPY_SRC |
    /// COPY_DST`), and hold the tensor's bytes (rounded up to 4, at least
    /// 16) from `offset`, a multiple of the adapter's storage offset
    /// alignment. Writes by flashdot ops are visible to the app's later
    /// submissions and the other way round (queue order).
    ///
    /// Errors: [`Error::InvalidArgument`] naming the missing usage, the
    /// misaligned offset or the sizes; [`Error::Unsupported`] for f16 without
    /// `SHADER_F16`.
    pub fn from_buffer(
        ctx: &Context,
        buffer: wgpu::Buffer,
        offset: u64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        const OP: &str = "Tensor::from_buffer";
        Self::check_dtype(ctx, dtype, OP)?;
        let bad = |detail: String| Err(Error::InvalidArgument { op: OP, detail });
        let missing = TENSOR_USAGES - buffer.usage();
        if !missing.is_empty() {
            return bad(format!(
                "the buffer's usages {:?} lack {missing:?} (tensors need STORAGE | COPY_SRC | COPY_DST)",
                buffer.usage()
            ));
        }
        let align = ctx.profile().storage_offset_alignment.max(4) as u64;
        if !offset.is_multiple_of(align) {
            return bad(format!(
                "offset {offset} is not a multiple of the adapter's storage offset alignment {align}"
            ));
        }
        let need = checked_len(shape).and_then(|l| checked_padded_bytes(l, dtype));
        let Some(need) = need else {
            return bad(format!("shape {} overflows", shape_str(shape)));
        };
        if offset
            .checked_add(need)
            .is_none_or(|end| end > buffer.size())
        {
            return bad(format!(
                "a {dtype} tensor of shape {} needs {need} bytes from offset {offset}; the buffer has {}",
                shape_str(shape),
                buffer.size()
            ));
        }
        Ok(Tensor {
            ctx: ctx.clone(),
            buffer: std::sync::Arc::new(ctx.foreign(buffer)),
            offset,
            end: offset + bytes_of(shape, dtype),
            shape: shape.to_vec(),
            strides: None,
            dtype,
        })
    }

    /// Uploads `data` as a tensor of `shape`. Errors: [`Error::Shape`] if
    /// `data.len()` is not the product of `shape`; [`Error::Unsupported`] for f16
    /// without `SHADER_F16`; [`Error::TooLarge`] past the adapter's max buffer size.
    pub fn from_slice<T: Element>(ctx: &Context, data: &[T], shape: &[usize]) -> Result<Self> {
        let len = checked_len(shape);
        if len != Some(data.len()) {
            return Err(Error::Shape {
                op: "Tensor::from_slice",
                detail: format!(
                    "{} elements given for shape {} ({} elements)",
                    data.len(),
                    shape_str(shape),
                    len.map_or("more than usize::MAX".into(), |l| l.to_string())
                ),
            });
        }
        let t = Self::alloc(ctx, shape, T::DTYPE, "Tensor::from_slice")?;
        if !data.is_empty() {
            t.write(data)?;
        }
        Ok(t)
    }

    /// A tensor of zeros.
    pub fn zeros(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Self> {
        // wgpu zero-initialises new buffers.
        Self::alloc(ctx, shape, dtype, "Tensor::zeros")
    }

    /// An uninitialised-by-contract output tensor; filled by a kernel.
    pub(crate) fn empty(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Self> {
        Self::alloc(ctx, shape, dtype, "output allocation")
    }
}

/// The unpadded bytes of a tensor of `shape` (whose size was checked).
fn bytes_of(shape: &[usize], dtype: DType) -> u64 {
    shape.iter().product::<usize>() as u64 * dtype.size()
}
