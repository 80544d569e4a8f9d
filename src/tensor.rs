//! Device tensors: one GPU buffer, a row-major contiguous shape and an element type,
//! with upload and readback.

use std::fmt;

use half::f16;

use crate::context::{Context, Wait};
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
    /// Byte offset of the first element in `buffer` (an app's buffer may hold
    /// the tensor anywhere at an aligned offset).
    offset: u64,
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
                kind: crate::Limit::BufferSize,
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
        // Copies work in 4-byte units: a last partial word is padded with zeros.
        let whole = bytes.len() / 4 * 4;
        let mut tail = [0u8; 4];
        tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        let tail = &tail[..(bytes.len() - whole).div_ceil(4) * 4];
        self.write_words("Tensor::write", self.offset, &[&bytes[..whole], tail])
    }

    /// Writes `parts` (each a whole number of 4-byte words) one after the
    /// other into the buffer from byte `start`, in queue order: inside
    /// [`Context::record`] as a copy from a staging buffer recorded with the
    /// ops (a queue write would land before all of them), else as queue writes.
    fn write_words(&self, op: &'static str, start: u64, parts: &[&[u8]]) -> Result<()> {
        self.require_contiguous(op)?;
        let ctx = &self.ctx;
        ctx.scoped(op, || {
            if ctx.is_recording() {
                let contents = parts.concat();
                if contents.is_empty() {
                    return Ok(());
                }
                let staging = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("tensor write staging"),
                    contents: &contents,
                    usage: wgpu::BufferUsages::COPY_SRC,
                });
                let mut enc = ctx.encoder();
                let n = contents.len() as u64;
                enc.copy_buffer_to_buffer(&staging, 0, &self.buffer, start, n);
                ctx.submit(enc);
                return Ok(());
            }
            let mut at = start;
            for part in parts.iter().filter(|p| !p.is_empty()) {
                ctx.queue().write_buffer(&self.buffer, at, part);
                at += part.len() as u64;
            }
            Ok(())
        })
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
        let (start, bytes) = (first as u64 * es, n as u64 * es);
        if !start.is_multiple_of(4) || !bytes.is_multiple_of(4) {
            return Err(Error::InvalidArgument {
                op,
                detail: format!(
                    "{n} {} elements at element {first}: partial writes move whole 4-byte words",
                    self.dtype
                ),
            });
        }
        Ok((self.offset + start, bytes))
    }

    /// Overwrites `data.len()` consecutive elements starting at the element
    /// whose leading coordinates are `at` (a KV-cache append: `at = [b, t]`
    /// of a `[batch, capacity, heads, dim]` cache and one token's `heads·dim`
    /// values), in queue order with the ops (recorded in order inside
    /// [`Context::record`]).
    ///
    /// Errors: [`Error::Shape`] for a position outside the shape or a run
    /// past its end, a dtype that is not the tensor's; [`Error::InvalidArgument`]
    /// when the run does not start and end on 4-byte words (f16 runs of odd
    /// length or at odd positions).
    pub fn write_at<T: Element>(&self, at: &[usize], data: &[T]) -> Result<()> {
        const OP: &str = "Tensor::write_at";
        if T::DTYPE != self.dtype {
            return Err(Error::Shape {
                op: OP,
                detail: format!("{} data written into a {} tensor", T::DTYPE, self.dtype),
            });
        }
        let (start, _) = self.range_at(OP, at, data.len())?;
        self.write_words(OP, start, &[bytemuck::cast_slice(data)])
    }

    /// Copies all of `src`'s elements, on the device, into consecutive
    /// elements of this tensor starting at leading coordinates `at` (a new
    /// token's K or V rows appended to a cache without a host round trip).
    ///
    /// Errors: as [`Tensor::write_at`]; [`Error::InvalidArgument`] for
    /// tensors of two contexts or one buffer.
    pub fn copy_at(&self, at: &[usize], src: &Tensor) -> Result<()> {
        const OP: &str = "Tensor::copy_at";
        Tensor::same_context(OP, &[("self", self), ("src", src)])?;
        Tensor::disjoint(OP, &[("self", self)], &[("src", src)])?;
        if src.dtype != self.dtype {
            return Err(Error::Shape {
                op: OP,
                detail: format!("a {} tensor copied into a {} tensor", src.dtype, self.dtype),
            });
        }
        self.require_contiguous(OP)?;
        let src = &src.contiguous()?;
        let (start, bytes) = self.range_at(OP, at, src.len())?;
        if bytes == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        ctx.scoped(OP, || {
            let mut enc = ctx.encoder();
            enc.copy_buffer_to_buffer(&src.buffer, src.offset, &self.buffer, start, bytes);
            ctx.submit(enc);
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
    /// The underlying buffer; the tensor's bytes start at [`Tensor::offset`]
    /// (padded to a multiple of 4 bytes).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

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

    /// Fills the tensor with NaN (f32/f16) or `u32::MAX`, so a kernel that fails to
    /// write an element is caught by verification.
    pub fn poison(&self) -> Result<()> {
        match self.dtype {
            DType::F32 => self.write(&vec![f32::NAN; self.len()]),
            DType::F16 => self.write(&vec![f16::NAN; self.len()]),
            DType::U32 => self.write(&vec![u32::MAX; self.len()]),
        }
    }

    /// Reads the tensor back to the host, blocking until its copy (and the
    /// work submitted before it) has run; work other threads submit later is
    /// not waited for. `T` must match the dtype.
    ///
    /// Errors: [`Error::InvalidArgument`] for a dtype mismatch or inside
    /// [`Context::record`]; [`Error::DeviceLost`]; [`Error::Readback`].
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        pollster::block_on(self.read(Wait::Here))
    }

    /// Reads the tensor back to the host without blocking the awaiting
    /// thread: a context's poller thread waits for the copy and the future
    /// wakes when the data is mapped. Errors as [`Tensor::to_vec`].
    pub async fn to_vec_async<T: Element>(&self) -> Result<Vec<T>> {
        self.read(Wait::Poller).await
    }

    async fn read<T: Element>(&self, wait: Wait) -> Result<Vec<T>> {
        if !self.is_dense() {
            let dense = self.contiguous()?;
            return Box::pin(dense.read(wait)).await;
        }
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
        let raw = self
            .ctx
            .read_buffer("Tensor::to_vec", &self.buffer, self.offset, bytes, wait)
            .await?;
        let mut out: Vec<T> = bytemuck::pod_collect_to_vec(&raw);
        out.truncate(self.len());
        Ok(out)
    }

    /// The tensor's bytes in its buffer: padded to 4, at least 16.
    pub(crate) fn padded_bytes(&self) -> u64 {
        padded_bytes(self.len(), self.dtype)
    }

    /// Byte offset of the first element in [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
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
    /// view.
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

    /// Contiguous, starting on the adapter's storage offset alignment, and
    /// ending within its buffer: what kernels bind directly.
    pub(crate) fn is_dense(&self) -> bool {
        let align = self.ctx.profile().storage_offset_alignment.max(4) as u64;
        self.strides.is_none()
            && self.offset.is_multiple_of(align)
            && self.offset + padded_bytes(self.len(), self.dtype) <= self.buffer.size()
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
        crate::ops::gather::gather_into(self, &self.strides(), &out)?;
        Ok(out)
    }

    /// Writes address elements row-major from the offset: strided views
    /// cannot take them.
    fn require_contiguous(&self, op: &'static str) -> Result<()> {
        match &self.strides {
            None => Ok(()),
            Some(st) => Err(Error::InvalidArgument {
                op,
                detail: format!(
                    "writing into a strided view (shape {}, strides {st:?}): write into the \
                     tensor it views, or into a contiguous one",
                    shape_str(&self.shape)
                ),
            }),
        }
    }

    /// Fails unless kernels can bind the tensor directly, saying how to get
    /// such a tensor.
    pub(crate) fn require_dense(op: &'static str, name: &str, t: &Tensor) -> Result<()> {
        if t.is_dense() {
            return Ok(());
        }
        Err(Error::InvalidArgument {
            op,
            detail: format!(
                "{name} is a {} view (shape {}, strides {:?}, byte offset {}) that this op \
                 cannot bind directly: pass {name}.contiguous(){}",
                if t.strides.is_some() {
                    "strided"
                } else {
                    "misaligned"
                },
                shape_str(&t.shape),
                t.strides(),
                t.offset,
                if t.strides.is_some() {
                    ""
                } else {
                    ", or narrow at an aligned row"
                }
            ),
        })
    }

    /// The binding of the tensor's bytes (padded to 4, at least 16) for a kernel.
    pub(crate) fn bind(&self) -> crate::context::Bind<'_> {
        crate::context::Bind::Buffer {
            buffer: &self.buffer,
            offset: self.offset,
            size: padded_bytes(self.len(), self.dtype),
        }
    }

    /// Fails if an output shares its buffer with an input: wgpu does not let
    /// one dispatch read and write a buffer (at any ranges).
    pub(crate) fn disjoint(
        op: &'static str,
        outputs: &[(&str, &Tensor)],
        inputs: &[(&str, &Tensor)],
    ) -> Result<()> {
        for (o, ot) in outputs {
            for (i, it) in inputs {
                if ot.buffer() == it.buffer() {
                    return Err(Error::InvalidArgument {
                        op,
                        detail: format!(
                            "{o} and {i} share one buffer, which a dispatch cannot both read \
                             and write: give {o} a buffer of its own"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Fails unless every tensor lives on `self`'s context: wgpu objects of
    /// two devices cannot meet in one dispatch.
    /// Every op checks its tensors here, so it also rejects views that the
    /// kernels cannot bind ([`Tensor::require_dense`]).
    pub(crate) fn same_context(op: &'static str, tensors: &[(&str, &Tensor)]) -> Result<()> {
        for (name, t) in tensors {
            Tensor::require_dense(op, name, t)?;
        }
        let Some((first, t0)) = tensors.first() else {
            return Ok(());
        };
        for (name, t) in &tensors[1..] {
            if !std::sync::Arc::ptr_eq(&t.ctx.inner, &t0.ctx.inner) {
                return Err(Error::InvalidArgument {
                    op,
                    detail: format!(
                        "{first} is on context {:?} and {name} on another, {:?}: tensors of \
                         one call must share a context",
                        t0.ctx, t.ctx
                    ),
                });
            }
        }
        Ok(())
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
