//! Device memory accounting: every buffer and texture flashdot creates counts in
//! [`MemoryStats`] while it lives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::bindcache::BindCache;
use super::Context;

/// Device memory held in flashdot's buffers (tensors, index chunks, kernel
/// scratch, readback staging; the small parameter blocks are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Bytes in buffers alive now.
    pub live_bytes: u64,
    /// Most bytes alive at once since the context opened or [`Context::reset_peak_memory`].
    pub peak_bytes: u64,
    /// Buffers and textures created since the context opened, parameter
    /// blocks included: their growth over a call is what the call allocates.
    pub buffers_created: u64,
}

#[derive(Debug, Default)]
pub(crate) struct MemCounter {
    live: AtomicU64,
    peak: AtomicU64,
    created: AtomicU64,
}

/// A buffer whose bytes count in the context's [`MemoryStats`] while it lives.
#[derive(Debug)]
pub(crate) struct Tracked {
    buffer: wgpu::Buffer,
    /// `None` for a buffer the app owns (`Tensor::from_buffer`).
    counter: Option<Arc<MemCounter>>,
    /// Cached bind groups that use the buffer go when it does.
    binds: Arc<BindCache>,
}

impl Context {
    /// An app's buffer: not flashdot's memory, not counted.
    pub(crate) fn foreign(&self, buffer: wgpu::Buffer) -> Tracked {
        Tracked {
            buffer,
            counter: None,
            binds: self.inner.binds.clone(),
        }
    }
}

impl std::ops::Deref for Tracked {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.binds.purge_buffer(&self.buffer);
        if let Some(c) = &self.counter {
            c.live.fetch_sub(self.buffer.size(), Ordering::Relaxed);
        }
    }
}

/// A texture whose bytes count in the context's [`MemoryStats`] while it lives.
#[derive(Debug)]
pub(crate) struct TrackedTexture {
    texture: wgpu::Texture,
    bytes: u64,
    counter: Arc<MemCounter>,
}

impl std::ops::Deref for TrackedTexture {
    type Target = wgpu::Texture;
    fn deref(&self) -> &wgpu::Texture {
        &self.texture
    }
}

impl Drop for TrackedTexture {
    fn drop(&mut self) {
        self.counter.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl TrackedTexture {
    /// Bytes of the texture's texels.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl MemCounter {
    /// Counts a buffer whose bytes are not tracked (a parameter block).
    pub(crate) fn count(&self) {
        self.created.fetch_add(1, Ordering::Relaxed);
    }

    fn add(&self, bytes: u64) {
        self.created.fetch_add(1, Ordering::Relaxed);
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }
}

impl Context {
    /// Device memory flashdot holds now and at its peak.
    pub fn memory_stats(&self) -> MemoryStats {
        let m = &self.inner.memory;
        MemoryStats {
            live_bytes: m.live.load(Ordering::Relaxed),
            peak_bytes: m.peak.load(Ordering::Relaxed),
            buffers_created: m.created.load(Ordering::Relaxed),
        }
    }

    /// Restarts peak tracking from the bytes alive now.
    pub fn reset_peak_memory(&self) {
        let m = &self.inner.memory;
        m.peak
            .store(m.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn track(&self, buffer: wgpu::Buffer) -> Tracked {
        self.inner.memory.add(buffer.size());
        Tracked {
            buffer,
            counter: Some(self.inner.memory.clone()),
            binds: self.inner.binds.clone(),
        }
    }

    /// Creates a one-mip, uncompressed texture counted in
    /// [`Context::memory_stats`].
    pub(crate) fn create_texture(&self, desc: &wgpu::TextureDescriptor<'_>) -> TrackedTexture {
        let texture = self.inner.device.create_texture(desc);
        let texel = desc.format.block_copy_size(None).unwrap_or(0) as u64;
        let s = desc.size;
        let bytes = s.width as u64 * s.height as u64 * s.depth_or_array_layers as u64 * texel;
        self.inner.memory.add(bytes);
        TrackedTexture {
            texture,
            bytes,
            counter: self.inner.memory.clone(),
        }
    }

    /// Creates a buffer counted in [`Context::memory_stats`].
    pub(crate) fn create_buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> Tracked {
        self.track(self.inner.device.create_buffer(desc))
    }

    /// Creates an initialised buffer counted in [`Context::memory_stats`].
    /// (Not wgpu's `create_buffer_init`, which panics when the mapping fails,
    /// as it does on a lost device: here the buffer is returned unfilled and
    /// the caller's error scope reports the invalid buffer.)
    pub(crate) fn create_buffer_init(
        &self,
        desc: &wgpu::util::BufferInitDescriptor<'_>,
    ) -> Tracked {
        let len = desc.contents.len() as u64;
        let size = len.div_ceil(wgpu::COPY_BUFFER_ALIGNMENT).max(1) * wgpu::COPY_BUFFER_ALIGNMENT;
        let buffer = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: desc.label,
            size,
            usage: desc.usage,
            mapped_at_creation: true,
        });
        if let Ok(mut view) = buffer.get_mapped_range_mut(..) {
            view.slice(..len as usize).copy_from_slice(desc.contents);
        }
        buffer.unmap();
        self.track(buffer)
    }
}
