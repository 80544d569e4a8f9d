//! Device tensors: one GPU buffer, a row-major contiguous shape and an element type,
//! with upload and readback.

use std::fmt;

use half::f16;

use crate::context::Context;
pub use crate::dtype::DType;
use crate::error::{Error, Result};

/// Host element types a tensor can be made from and read back into.
pub trait Element: bytemuck::Pod + Copy + Send + Sync + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
}
impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for u32 {
    const DTYPE: DType = DType::U32;
}

/// A tensor in device memory: row-major, contiguous, `shape.iter().product()` elements.
///
/// Zero-sized dimensions are legal; operations on empty tensors return empty
/// results without dispatching. A tensor may be larger than one storage binding
/// (up to the adapter's max buffer size): kernels bind it in windows.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) ctx: Context,
    pub(crate) buffer: std::sync::Arc<crate::context::Tracked>,
    shape: Vec<usize>,
    dtype: DType,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}

/// `[2, 3]`-style rendering used in error messages.
pub(crate) fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

fn padded_bytes(len: usize, dtype: DType) -> u64 {
    // Bindings and copies work in 4-byte units; an empty tensor still gets a
    // 16-byte buffer so that it can be bound as any array, vec4 ones included.
    ((len as u64 * dtype.size()).div_ceil(4) * 4).max(16)
}

impl Tensor {
    fn check_dtype(ctx: &Context, dtype: DType, op: &'static str) -> Result<()> {
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
        Self::check_dtype(ctx, dtype, op)?;
        let len: usize = shape.iter().product();
        let bytes = padded_bytes(len, dtype);
        let limit = ctx.info().limits.max_buffer_size;
        if bytes > limit {
            return Err(Error::TooLarge {
                op,
                what: format!("a {} tensor of shape {}", dtype, shape_str(shape)),
                size: bytes,
                limit,
            });
        }
        let buffer = ctx.scoped(op, || {
            Ok(ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some(op),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        })?;
        Ok(Tensor {
            ctx: ctx.clone(),
            buffer: std::sync::Arc::new(buffer),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads `data` as a tensor of `shape`. Errors: [`Error::Shape`] if
    /// `data.len()` is not the product of `shape`; [`Error::Unsupported`] for f16
    /// without `SHADER_F16`; [`Error::TooLarge`] past the adapter's max buffer size.
    pub fn from_slice<T: Element>(ctx: &Context, data: &[T], shape: &[usize]) -> Result<Self> {
        let len: usize = shape.iter().product();
        if data.len() != len {
            return Err(Error::Shape {
                op: "Tensor::from_slice",
                detail: format!(
                    "{} elements given for shape {} ({} elements)",
                    data.len(),
                    shape_str(shape),
                    len
                ),
            });
        }
        let t = Self::alloc(ctx, shape, T::DTYPE, "Tensor::from_slice")?;
        if len > 0 {
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

    /// Overwrites the whole tensor with `data` (same length and dtype).
    pub fn write<T: Element>(&self, data: &[T]) -> Result<()> {
        if T::DTYPE != self.dtype || data.len() != self.len() {
            return Err(Error::Shape {
                op: "Tensor::write",
                detail: format!(
                    "{} {} elements written to a {} tensor of shape {}",
                    data.len(),
                    T::DTYPE,
                    self.dtype,
                    shape_str(&self.shape)
                ),
            });
        }
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.ctx.scoped("Tensor::write", || {
            let whole = bytes.len() / 4 * 4;
            if whole > 0 {
                self.ctx
                    .queue()
                    .write_buffer(&self.buffer, 0, &bytes[..whole]);
            }
            if whole < bytes.len() {
                let mut tail = [0u8; 4];
                tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
                self.ctx
                    .queue()
                    .write_buffer(&self.buffer, whole as u64, &tail);
            }
            Ok(())
        })
    }

    /// Shape (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Size of the data in bytes (without padding).
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * self.dtype.size()
    }
    /// The context the tensor lives on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
    /// The underlying buffer (padded to a multiple of 4 bytes).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Same data, new shape with the same element count (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
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

    /// Fills the tensor with NaN (f32/f16) or `u32::MAX`, so a kernel that fails to
    /// write an element is caught by verification.
    pub fn poison(&self) -> Result<()> {
        match self.dtype {
            DType::F32 => self.write(&vec![f32::NAN; self.len()]),
            DType::F16 => self.write(&vec![f16::NAN; self.len()]),
            DType::U32 => self.write(&vec![u32::MAX; self.len()]),
        }
    }

    /// Reads the tensor back to the host (blocking). `T` must match the dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        pollster::block_on(self.to_vec_async())
    }

    /// Reads the tensor back to the host. On native backends the device is polled
    /// until the copy completes.
    pub async fn to_vec_async<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(Error::InvalidArgument {
                op: "Tensor::to_vec",
                detail: format!("read back a {} tensor as {}", self.dtype, T::DTYPE),
            });
        }
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = padded_bytes(self.len(), self.dtype);
        let ctx = &self.ctx;
        let staging = ctx.scoped("Tensor::to_vec", || {
            let staging = ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, bytes);
            ctx.queue().submit([enc.finish()]);
            Ok(staging)
        })?;
        let slice = staging.slice(..);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        ctx.synchronize()?;
        match rx.receive().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Readback(e.to_string())),
            None => return Err(Error::Readback("map callback dropped".into())),
        }
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Readback(e.to_string()))?;
        let mut out: Vec<T> = bytemuck::pod_collect_to_vec(&data[..]);
        out.truncate(self.len());
        drop(data);
        staging.unmap();
        Ok(out)
    }
}
