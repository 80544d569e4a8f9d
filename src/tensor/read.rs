//! Readback: a tensor's elements to the host, through the context's one
//! readback path.

use super::{padded_bytes, Element, Tensor};
use crate::context::Wait;
use crate::error::{expect_dtype, Result};

impl Tensor {
    /// Reads the tensor back to the host, blocking until its copy (and the
    /// work submitted before it) has run; work other threads submit later is
    /// not waited for. `T` must match the dtype.
    ///
    /// Errors: [`Error::DType`](crate::error::Error::DType) for a host type `T` of
    /// another dtype; [`Error::InvalidArgument`](crate::error::Error::InvalidArgument)
    /// inside [`Context::record`](crate::context::Context::record);
    /// [`Error::DeviceLost`](crate::error::Error::DeviceLost),
    /// [`Error::Readback`](crate::error::Error::Readback).
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
        expect_dtype("Tensor::to_vec", "the host type", T::DTYPE, &[self.dtype])?;
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
}
