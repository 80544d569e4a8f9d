//! Argument checks every op makes of its tensors (one context, disjoint
//! outputs, bindable views) and the binding of a tensor's bytes.

use super::{padded_bytes, Tensor};
use crate::error::{Error, Result};

impl Tensor {
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
        Tensor::one_context(op, tensors)
    }

    /// [`Tensor::same_context`] without the density check, for tensors a
    /// call gathers or writes through a window (views).
    pub(crate) fn one_context(op: &'static str, tensors: &[(&str, &Tensor)]) -> Result<()> {
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
