//! # flashdot
//!
//! GPU kernels for the dot product's three jobs — batched dot products and
//! similarity, tiled matrix multiplication, and attention — written in WGSL and run
//! through wgpu on Vulkan, Metal, DX12 or GL. Every kernel is checked against a
//! plain CPU reference ([`crate::reference`]) that accumulates in f64.
//!
//! ```no_run
//! use flashdot::{Context, Tensor, ops::dot};
//! # fn main() -> flashdot::Result<()> {
//! let ctx = Context::new()?;                       // best adapter
//! let a = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
//! let b = Tensor::from_slice(&ctx, &[5.0f32, 6.0, 7.0, 8.0], &[2, 2])?;
//! let out = dot::dot(&a, &b)?.to_vec::<f32>()?;   // [17, 53]
//! assert_eq!(out, vec![17.0, 53.0]);
//! # Ok(()) }
//! ```

#![warn(missing_docs, missing_debug_implementations)]

pub mod context;
mod dtype;
pub mod error;
#[cfg(feature = "models")]
pub mod models;
pub mod ops;
pub mod reference;
mod shader;
pub mod tensor;
#[cfg(test)]
mod validate;
pub mod verify;

pub use context::{Context, ContextInfo, ContextOptions, DeviceProfile, MemoryStats};
pub use error::{Error, GpuErrorKind, Limit, Result};
pub use half::f16;
pub use tensor::{DType, Element, Tensor};
/// The wgpu version flashdot is built on: its types appear in the API.
pub use wgpu;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
