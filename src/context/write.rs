//! Host writes in recording order: inside [`Context::record`] a queue write
//! would run before the recorded work it follows (queue writes land at the
//! next submission's start), so there the bytes go through a staging buffer
//! and a copy recorded with the ops; otherwise they are a plain queue write.

use super::Context;
use crate::error::Result;

impl Context {
    /// Writes `parts`, one after another, into `buffer` from byte `offset`
    /// (a multiple of 4, as are the parts' total length and the buffer's
    /// `COPY_DST` usage requires), in order with the work this thread has
    /// recorded or submitted before; `op` names the caller in errors.
    ///
    /// Errors: a device error while staging or copying ([`Error::Gpu`](crate::error::Error::Gpu)).
    pub(crate) fn write_buffer_ordered(
        &self,
        op: &'static str,
        buffer: &wgpu::Buffer,
        offset: u64,
        parts: &[&[u8]],
    ) -> Result<()> {
        self.scoped(op, || {
            if self.is_recording() {
                let contents = parts.concat();
                if contents.is_empty() {
                    return Ok(());
                }
                let staging = self.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("ordered write staging"),
                    contents: &contents,
                    usage: wgpu::BufferUsages::COPY_SRC,
                });
                let mut enc = self.encoder();
                let n = contents.len() as u64;
                enc.copy_buffer_to_buffer(&staging, 0, buffer, offset, n);
                self.submit(enc);
                return Ok(());
            }
            let mut at = offset;
            for part in parts.iter().filter(|p| !p.is_empty()) {
                self.inner.queue.write_buffer(buffer, at, part);
                at += part.len() as u64;
            }
            Ok(())
        })
    }
}
