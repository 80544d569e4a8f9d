//! The one readback path: copy into a MAP_READ staging buffer, map it, and
//! return the bytes. Tensors and the GPU timer read through it.

use super::Context;
use crate::error::{Error, Result};

impl Context {
    /// Reads `bytes` bytes (a multiple of 4) of `src` from byte `offset` back
    /// to the host, waiting for its own copy only; `op` names the caller in
    /// errors. Inside [`Context::record`] it is an error.
    pub(crate) async fn read_buffer(
        &self,
        op: &'static str,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        self.not_recording(op)?;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let (staging, index) = self.scoped(op, || {
            let staging = self.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = self.encoder();
            enc.copy_buffer_to_buffer(src, offset, &staging, 0, bytes);
            let index = self.queue().submit([enc.finish()]);
            Ok((staging, index))
        })?;
        let slice = staging.slice(..);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // Wait for this copy (and what was submitted before it), not for work
        // other threads submit meanwhile.
        self.inner
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        self.check_alive()?;
        match rx.receive().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Readback(e.to_string())),
            None => return Err(Error::Readback("map callback dropped".into())),
        }
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Readback(e.to_string()))?;
        let out = data.to_vec();
        drop(data);
        staging.unmap();
        Ok(out)
    }
}
