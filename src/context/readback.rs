//! The one readback path: copy into a MAP_READ staging buffer, map it, and
//! return the bytes. Tensors and the GPU timer read through it.

use super::Context;
use crate::error::{Error, Result};

impl Context {
    /// Reads `bytes` bytes (a multiple of 4) of `src` from byte `offset` back
    /// to the host, waiting for its own copy only; `op` names the caller in
    /// errors. Inside [`Context::record`] it is an error.
    ///
    /// `Wait::Here` polls the device on the calling thread (the blocking
    /// readers); `Wait::Poller` hands the wait to the context's poller thread,
    /// so the returned future never blocks the executor that awaits it.
    pub(crate) async fn read_buffer(
        &self,
        op: &'static str,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
        wait: Wait,
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
            let index = self.queue_submit([enc.finish()]);
            Ok((staging, index))
        })?;
        let slice = staging.slice(..);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // Wait for this copy (and what was submitted before it), not for work
        // other threads submit meanwhile.
        match wait {
            Wait::Here => {
                self.inner
                    .device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(index),
                        timeout: None,
                    })
                    .map_err(|e| Error::DeviceLost(e.to_string()))?;
            }
            Wait::Poller => self.poller().wait_for(index),
        }
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

/// Where a readback waits for its copy.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// On the calling thread.
    Here,
    /// On the context's poller thread.
    Poller,
}

/// A thread that polls the device until each submission it is handed has
/// completed, which fires the map callbacks that async readbacks await.
/// Started on the first async readback; ends when the context is dropped.
#[derive(Debug)]
pub(crate) struct Poller {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<wgpu::SubmissionIndex>>,
}

impl Poller {
    fn start(device: wgpu::Device) -> Poller {
        let (tx, rx) = std::sync::mpsc::channel::<wgpu::SubmissionIndex>();
        let spawned = std::thread::Builder::new()
            .name("flashdot-poller".into())
            .spawn(move || {
                while let Ok(index) = rx.recv() {
                    // A lost device ends the waits with an error, which the
                    // readback reports through its map callback.
                    let _ = device.poll(wgpu::PollType::Wait {
                        submission_index: Some(index),
                        timeout: None,
                    });
                }
            });
        if let Err(e) = spawned {
            log::warn!("flashdot: no poller thread ({e}); async readbacks rely on the app polling");
        }
        Poller {
            tx: std::sync::Mutex::new(tx),
        }
    }

    fn wait_for(&self, index: wgpu::SubmissionIndex) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(index);
    }
}

impl Context {
    fn poller(&self) -> &Poller {
        self.inner
            .poller
            .get_or_init(|| Poller::start(self.inner.device.clone()))
    }
}
