//! The one error type of the crate. Every fallible operation returns [`Result`];
//! wgpu validation errors, out-of-memory and device loss are caught and end up here
//! instead of panicking in the caller's process.

/// Short alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which class of wgpu error an operation ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GpuErrorKind {
    /// wgpu rejected a call (a bug in flashdot or an input it failed to check).
    Validation,
    /// The device could not allocate a buffer or pipeline.
    OutOfMemory,
    /// The driver reported an internal failure.
    Internal,
}

impl std::fmt::Display for GpuErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GpuErrorKind::Validation => "validation error",
            GpuErrorKind::OutOfMemory => "out of memory",
            GpuErrorKind::Internal => "internal error",
        })
    }
}

/// Which limit an [`Error::TooLarge`] ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// The adapter's `max_storage_buffer_binding_size` (bytes): what one kernel
    /// can read or write through one binding.
    StorageBinding,
    /// The adapter's `max_buffer_size` (bytes): one tensor's buffer.
    BufferSize,
    /// The adapter's `max_compute_workgroups_per_dimension` (workgroups).
    Workgroups,
    /// The kernels index with u32: counts (rows, elements) up to 2³² − 1.
    U32Index,
}

impl Limit {
    /// `size` in this limit's unit, for messages.
    fn amount(self, size: u64) -> String {
        match self {
            Limit::StorageBinding | Limit::BufferSize => bytes(size),
            Limit::Workgroups => format!("{size} workgroups in one dimension"),
            Limit::U32Index => format!("{size} indices"),
        }
    }

    /// The limit, named, with its value.
    fn bound(self, limit: u64) -> String {
        match self {
            Limit::StorageBinding => format!(
                "one storage binding holds at most {} on this adapter \
                 (max_storage_buffer_binding_size); use a smaller shape or split the call",
                bytes(limit)
            ),
            Limit::BufferSize => format!(
                "one buffer holds at most {} on this adapter (max_buffer_size)",
                bytes(limit)
            ),
            Limit::Workgroups => format!(
                "the adapter dispatches at most {limit} (max_compute_workgroups_per_dimension)"
            ),
            Limit::U32Index => format!("the kernels index with u32 (at most {limit})"),
        }
    }
}

/// A byte count for people: MiB (or GiB, KiB, bytes) with the exact figure
/// where rounding hides it.
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let x = n as f64;
    if n < 1 << 10 {
        format!("{n} bytes")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", x / KIB)
    } else if n < 1 << 30 {
        format!("{:.1} MiB", x / (KIB * KIB))
    } else if n == u64::MAX {
        "more than 2^64 bytes".into()
    } else {
        format!("{:.2} GiB", x / (KIB * KIB * KIB))
    }
}

/// `f32 or f16`-style rendering of the dtypes an op takes.
fn dtype_list(d: &[crate::dtype::DType]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Fails with [`Error::DType`] unless `found` is one of `expected`: the one
/// dtype check every op calls.
pub(crate) fn expect_dtype(
    op: &'static str,
    what: &str,
    found: crate::dtype::DType,
    expected: &[crate::dtype::DType],
) -> Result<()> {
    if expected.contains(&found) {
        return Ok(());
    }
    Err(Error::DType {
        op,
        what: what.to_string(),
        found,
        expected: expected.to_vec(),
    })
}

/// Everything that can go wrong in flashdot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No GPU adapter matched the request.
    #[error("no GPU adapter found ({details}). {hint}")]
    NoAdapter {
        /// What was searched (backends, name filter).
        details: String,
        /// What to do: with no adapter on any backend, how to install Mesa's
        /// software driver; when a backend or adapter name narrowed the
        /// search, the adapters that are present.
        hint: String,
    },
    /// The adapter was found but refused to open a device.
    #[error("could not open a device on adapter '{adapter}': {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        message: String,
    },
    /// Operand shapes do not fit the operation; the message names every shape involved.
    #[error("{op}: shape mismatch: {detail}")]
    Shape {
        /// Operation name, e.g. `"dot"`.
        op: &'static str,
        /// Both (or all) shapes and what was expected of them.
        detail: String,
    },
    /// An operand's element type is not one the operation takes (or not the
    /// one its other operands have); checked by every op through one function.
    #[error(
        "{op}: dtype mismatch: {what} is {found}, expected {}",
        dtype_list(expected)
    )]
    DType {
        /// Operation name.
        op: &'static str,
        /// Which operand, e.g. `"k"` or `"the queries"`.
        what: String,
        /// Its element type.
        found: crate::dtype::DType,
        /// The element types the operation takes there (one, when it must match
        /// another operand).
        expected: Vec<crate::dtype::DType>,
    },
    /// An argument other than a shape is out of its domain (k = 0, a NaN scale, ...).
    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument {
        /// Operation name.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The request needs something this adapter does not offer (f16, a head dim too
    /// large for its workgroup memory, ...). Callers can fall back on this variant.
    #[error("{op}: unsupported on this adapter: {detail}")]
    Unsupported {
        /// Operation name.
        op: &'static str,
        /// What is missing.
        detail: String,
    },
    /// A size exceeds a device limit and the operation cannot split it.
    #[error("{op}: {what} needs {} but {}", kind.amount(*size), kind.bound(*limit))]
    TooLarge {
        /// Operation name.
        op: &'static str,
        /// What needs the size, with its shape (e.g. "the naive kernel's score matrix
        /// [1, 12, 2048, 2048] f32").
        what: String,
        /// Requested size, in the unit of `kind`.
        size: u64,
        /// The limit's value, in the unit of `kind`.
        limit: u64,
        /// Which limit was exceeded (and so the unit of `size` and `limit`).
        kind: Limit,
    },
    /// wgpu reported an error inside an operation (caught with an error scope).
    #[error("{op}: GPU {kind}: {message}")]
    Gpu {
        /// Operation name.
        op: &'static str,
        /// Error class.
        kind: GpuErrorKind,
        /// wgpu's message.
        message: String,
    },
    /// The device was lost (driver reset, GPU removed, destroyed). Make a new Context.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// A kernel's WGSL template is malformed (a bug in flashdot, reported
    /// rather than panicking).
    #[error("kernel {kernel}: {detail}")]
    Template {
        /// The kernel spec.
        kernel: String,
        /// The template's line and what is wrong with it.
        detail: String,
    },
    /// Mapping a buffer for readback failed.
    #[error("readback failed: {0}")]
    Readback(String),
    /// A model file is missing, unreadable or not what its name says
    /// (feature `models`).
    #[error("model file {path}: {detail}")]
    Model {
        /// The file.
        path: String,
        /// What is wrong, and how to fix it where that is known.
        detail: String,
    },
    /// A saved index cannot be written, or read back: missing, truncated,
    /// corrupt (checksum), or not a flashdot index file of a known version.
    #[error("index file {path}: {detail}")]
    IndexFile {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_names_the_limit_in_its_unit() {
        let e = Error::TooLarge {
            op: "attention",
            what: "the naive kernel's score matrix [1, 12, 2048, 2048] f32".into(),
            size: 201_326_592,
            limit: 134_217_728,
            kind: Limit::StorageBinding,
        };
        assert_eq!(
            e.to_string(),
            "attention: the naive kernel's score matrix [1, 12, 2048, 2048] f32 needs 192.0 MiB \
             but one storage binding holds at most 128.0 MiB on this adapter \
             (max_storage_buffer_binding_size); use a smaller shape or split the call"
        );
        let e = Error::TooLarge {
            op: "tensor",
            what: "a f32 tensor of shape [1]".into(),
            size: u64::MAX,
            limit: 3 << 30,
            kind: Limit::BufferSize,
        };
        assert!(e.to_string().contains("more than 2^64 bytes"), "{e}");
        assert!(e.to_string().contains("3.00 GiB"), "{e}");
    }

    #[test]
    fn dtype_mismatch_names_op_operand_and_both_dtypes() {
        use crate::dtype::DType;
        assert!(expect_dtype("dot", "b", DType::F16, &DType::FLOAT).is_ok());
        let e = expect_dtype("dot", "b", DType::U32, &DType::FLOAT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dot: dtype mismatch: b is u32, expected f32 or f16"
        );
        let e = expect_dtype("attention", "k", DType::F16, &[DType::F32]).unwrap_err();
        assert!(matches!(
            e,
            Error::DType { op: "attention", found: DType::F16, ref expected, .. }
                if expected == &[DType::F32]
        ));
    }
}
