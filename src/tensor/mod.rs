//! Device tensors: one GPU buffer, a shape (row-major, or a strided view of
//! another tensor's buffer) and an element type. The type and its accessors
//! live here; its concerns have files of their own: allocation and uploads
//! (`alloc`), host writes and device copies (`write`), views and the one check
//! of a view's layout (`view`), readback (`read`), the argument checks every
//! op makes (`check`), and the strided copy that makes a view contiguous
//! (`strided`, with its kernel `strided.wgsl`) — kept here, below the ops, so
//! that a tensor never calls an op.

mod alloc;
mod check;
mod read;
pub(crate) mod strided;
mod view;
mod write;

use std::fmt;

use half::f16;

use crate::context::Context;
pub use crate::dtype::DType;

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
    /// Byte offset of the first element in `buffer` (an app's buffer may hold
    /// the tensor anywhere at an aligned offset).
    offset: u64,
    /// The byte where the data of the allocation this tensor (or the tensor it
    /// views) was made as ends: the bytes from there to the next 4-byte word
    /// are that allocation's padding, which a write may fill.
    end: u64,
    shape: Vec<usize>,
    /// Element strides of a strided view ([`Tensor::narrow`]); `None` for a
    /// row-major contiguous tensor.
    strides: Option<Vec<usize>>,
    dtype: DType,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)?;
        if self.offset > 0 {
            write!(f, " at byte {}", self.offset)?;
        }
        Ok(())
    }
}

/// The usages every tensor buffer has: kernels bind it, copies read and write it.
pub const TENSOR_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// `[2, 3]`-style rendering used in error messages.
pub(crate) fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Elements of `shape`, `None` if the product overflows.
pub(crate) fn checked_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The buffer bytes a tensor of `len` elements takes, `None` on overflow.
/// Bindings and copies work in 4-byte units; an empty tensor still gets a
/// 16-byte buffer so that it can be bound as any array, vec4 ones included.
fn checked_padded_bytes(len: usize, dtype: DType) -> Option<u64> {
    (len as u64)
        .checked_mul(dtype.size())?
        .checked_next_multiple_of(4)
        .map(|b| b.max(16))
}

/// [`checked_padded_bytes`] of a tensor that exists (its size was checked).
fn padded_bytes(len: usize, dtype: DType) -> u64 {
    checked_padded_bytes(len, dtype).unwrap_or(u64::MAX)
}

impl Tensor {
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
    /// The underlying buffer; the tensor's bytes start at [`Tensor::offset`]
    /// (padded to a multiple of 4 bytes).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The tensor's bytes in its buffer: padded to 4, at least 16.
    pub(crate) fn padded_bytes(&self) -> u64 {
        padded_bytes(self.len(), self.dtype)
    }

    /// Byte offset of the first element in [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Element strides (row-major for a contiguous tensor).
    pub fn strides(&self) -> Vec<usize> {
        self.strides
            .clone()
            .unwrap_or_else(|| contiguous_strides(&self.shape))
    }

    /// Whether the elements are stored row-major without gaps (a view of
    /// [`Tensor::narrow`] may not be).
    pub fn is_contiguous(&self) -> bool {
        self.strides.is_none()
    }
}

/// Row-major strides of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Whether `strides` address `shape` row-major without gaps (size-1 dims may
/// have any stride).
fn same_layout(shape: &[usize], strides: &[usize]) -> bool {
    let want = contiguous_strides(shape);
    shape
        .iter()
        .zip(strides.iter().zip(&want))
        .all(|(&n, (&s, &w))| n == 1 || s == w)
}
