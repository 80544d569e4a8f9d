//! Bind groups reused where a dispatch repeats: the same pipeline over the
//! same buffer ranges and texel textures (a chain of ops on the same tensors,
//! a layer run per token). Entries pin what they bind, so every buffer
//! flashdot wraps ([`Tracked`](super::Tracked)) and every pooled texture
//! purges its entries when it is freed, and the cache holds at most
//! [`CAPACITY`] entries (the least recently used go first).

use std::collections::HashMap;
use std::sync::Mutex;

/// One bound resource, by identity.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Res {
    Buffer(wgpu::Buffer, u64, u64),
    View(wgpu::TextureView),
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Key {
    pub pipeline: wgpu::ComputePipeline,
    pub entries: Vec<(u32, Res)>,
}

const CAPACITY: usize = 256;

/// A use counter and the groups with the count at their last use.
type Entries = (u64, HashMap<Key, (wgpu::BindGroup, u64)>);

#[derive(Debug, Default)]
pub(crate) struct BindCache {
    map: Mutex<Entries>,
}

impl BindCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached group for `key`, or the one `make` creates (then cached).
    pub(crate) fn get_or(
        &self,
        key: Key,
        make: impl FnOnce() -> wgpu::BindGroup,
    ) -> wgpu::BindGroup {
        let mut g = self.lock();
        g.0 += 1;
        let tick = g.0;
        if let Some(e) = g.1.get_mut(&key) {
            e.1 = tick;
            return e.0.clone();
        }
        let bg = make();
        if g.1.len() >= CAPACITY {
            if let Some(oldest) = g.1.iter().min_by_key(|(_, e)| e.1).map(|(k, _)| k.clone()) {
                g.1.remove(&oldest);
            }
        }
        g.1.insert(key, (bg.clone(), tick));
        bg
    }

    /// Drops the entries that bind `buffer`.
    pub(crate) fn purge_buffer(&self, buffer: &wgpu::Buffer) {
        self.lock().1.retain(|k, _| {
            !k.entries
                .iter()
                .any(|(_, r)| matches!(r, Res::Buffer(b, ..) if b == buffer))
        });
    }

    /// Drops the entries that bind `view`.
    pub(crate) fn purge_view(&self, view: &wgpu::TextureView) {
        self.lock().1.retain(|k, _| {
            !k.entries
                .iter()
                .any(|(_, r)| matches!(r, Res::View(v) if v == view))
        });
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        self.lock().1.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().1.len()
    }
}
