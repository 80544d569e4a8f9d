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
    #[error("{op}: {what} needs {size} but the adapter's limit is {limit}")]
    TooLarge {
        /// Operation name.
        op: &'static str,
        /// Which quantity (e.g. "score matrix bytes").
        what: String,
        /// Requested size.
        size: u64,
        /// The adapter's limit.
        limit: u64,
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
}
