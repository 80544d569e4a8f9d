//! The one readback path: copy into a MAP_READ staging buffer, map it, and
//! return the bytes. Tensors and the GPU timer read through it.

use super::Context;
use crate::error::{Error, Result};

impl Context {
    /// Reads the first `bytes` bytes (a multiple of 4) of `src` back to the
    /// host; `op` names the caller in errors.
    pub(crate) async fn read_buffer(
        &self,
        op: &'static str,
        src: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.scoped(op, || {
            let staging = self.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = self.encoder();
            enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
            self.queue().submit([enc.finish()]);
            Ok(staging)
        })?;
        let slice = staging.slice(..);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.synchronize()?;
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
