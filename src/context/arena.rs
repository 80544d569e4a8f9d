//! The parameter arena: every dispatch's uniform parameter block (and small
//! read-only storage tables such as matmul's batch offsets) lives in a few
//! reused buffers instead of a buffer of its own, so a call in steady state
//! creates no buffer.
//!
//! Bytes are staged on the host and written with one `queue.write_buffer`
//! just before a submission. A queue write lands before the *next*
//! submission, after every earlier one, so a region may be rewritten once
//! the work that reads it has been submitted, not before. Each op holds the
//! arena from before it places its parameters until after it submits (its
//! [`Param`] or its encoder; a recording holds it until its one submission).
//! The arena is a set of chunks: the current one fills, is retired, and
//! becomes free again once every hold that began before its retirement has
//! ended; with no hold alive at all the current chunk restarts from zero.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Context;

#[derive(Debug)]
struct Chunk {
    buffer: wgpu::Buffer,
    /// The epoch at which it stopped taking slots; `None` while current.
    retired: Option<u64>,
}

/// The chunks, the current chunk's cursor and staged bytes, and the holds.
#[derive(Debug, Default)]
pub(crate) struct ParamArena {
    chunks: Vec<Chunk>,
    current: Option<usize>,
    /// Bytes staged for the current chunk from `flushed` up to the cursor.
    staged: Vec<u8>,
    flushed: u64,
    cursor: u64,
    epoch: u64,
    /// Start epochs of the holds alive (a multiset).
    holds: BTreeMap<u64, usize>,
}

/// Chunk size; a block larger than this gets a chunk of its own size.
const CHUNK_BYTES: u64 = 64 << 10;
/// Storage tables larger than this get a buffer of their own.
pub(crate) const MAX_TABLE_BYTES: u64 = 64 << 10;

impl ParamArena {
    pub(crate) fn new() -> Mutex<ParamArena> {
        Mutex::new(ParamArena::default())
    }

    fn hold(&mut self) -> u64 {
        if self.holds.is_empty() {
            // Nothing placed so far can still be read by unsubmitted work:
            // the current chunk restarts (retired ones are all free too).
            self.cursor = 0;
            self.flushed = 0;
            self.staged.clear();
        }
        self.epoch += 1;
        *self.holds.entry(self.epoch).or_default() += 1;
        self.epoch
    }

    fn release(&mut self, start: u64) {
        if let Some(n) = self.holds.get_mut(&start) {
            *n -= 1;
            if *n == 0 {
                self.holds.remove(&start);
            }
        }
    }

    /// A retired chunk no live hold can still be reading.
    fn free_chunk(&self, size: u64) -> Option<usize> {
        let oldest = self.holds.keys().next().copied().unwrap_or(u64::MAX);
        self.chunks
            .iter()
            .position(|c| c.retired.is_some_and(|r| r < oldest) && c.buffer.size() >= size)
    }
}

/// A region of the arena holding one parameter block or table; binds as a
/// buffer range. Holds the arena until dropped: keep it until the work that
/// reads it is submitted (or abandoned).
pub(crate) struct Param<'a> {
    ctx: &'a Context,
    hold: u64,
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl Drop for Param<'_> {
    fn drop(&mut self) {
        self.ctx.lock_arena().release(self.hold);
    }
}

impl Context {
    fn lock_arena(&self) -> std::sync::MutexGuard<'_, ParamArena> {
        self.inner.arena.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arena_align(&self) -> u64 {
        let l = &self.inner.info.limits;
        (l.min_uniform_buffer_offset_alignment as u64)
            .max(l.min_storage_buffer_offset_alignment as u64)
            .max(16)
    }

    /// Places `bytes` (padded to a multiple of 16) in the arena.
    pub(crate) fn param_bytes(&self, bytes: &[u8]) -> Param<'_> {
        let size = (bytes.len() as u64).max(16).div_ceil(16) * 16;
        let align = self.arena_align();
        let mut a = self.lock_arena();
        let hold = a.hold();
        let at = a.cursor.div_ceil(align) * align;
        let fits = a
            .current
            .is_some_and(|i| at + size <= a.chunks[i].buffer.size());
        let at = if fits {
            at
        } else {
            // Retire the current chunk (its staged bytes written first) and
            // continue in a free one, or a new one.
            self.flush_locked(&mut a);
            let epoch = a.epoch;
            if let Some(i) = a.current {
                a.chunks[i].retired = Some(epoch);
            }
            a.epoch += 1;
            let i = match a.free_chunk(size) {
                Some(i) => i,
                None => {
                    self.inner.memory.count();
                    let buffer = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("flashdot params"),
                        size: size.max(CHUNK_BYTES),
                        usage: wgpu::BufferUsages::UNIFORM
                            | wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    a.chunks.push(Chunk {
                        buffer,
                        retired: None,
                    });
                    a.chunks.len() - 1
                }
            };
            a.chunks[i].retired = None;
            a.current = Some(i);
            a.flushed = 0;
            a.staged.clear();
            0
        };
        let start = (at - a.flushed) as usize;
        a.staged.resize(start, 0);
        a.staged.extend_from_slice(bytes);
        a.staged.resize(start + size as usize, 0);
        a.cursor = at + size;
        let i = a.current.expect("a current chunk was set above");
        let buffer = a.chunks[i].buffer.clone();
        Param {
            ctx: self,
            hold,
            buffer,
            offset: at,
            size,
        }
    }

    /// A uniform parameter block in the arena.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, params: &T) -> Param<'_> {
        self.param_bytes(bytemuck::bytes_of(params))
    }

    fn flush_locked(&self, a: &mut ParamArena) {
        if let (Some(i), false) = (a.current, a.staged.is_empty()) {
            self.inner
                .queue
                .write_buffer(&a.chunks[i].buffer, a.flushed, &a.staged);
            a.flushed += a.staged.len() as u64;
            a.staged.clear();
        }
    }

    /// Writes the staged parameters; every submission flashdot makes calls
    /// this first.
    pub(crate) fn flush_params(&self) {
        let mut a = self.lock_arena();
        self.flush_locked(&mut a);
    }

    /// Starts a hold on the arena (an encoder's or a recording's): regions
    /// placed from now on stay unwritten until [`Context::release_params`].
    pub(super) fn hold_params(&self) -> u64 {
        self.lock_arena().hold()
    }

    /// Ends a hold of [`Context::hold_params`].
    pub(super) fn release_params(&self, hold: u64) {
        self.lock_arena().release(hold);
    }
}

impl Param<'_> {
    /// The region as a binding.
    pub(crate) fn bind(&self) -> super::dispatch::Bind<'_> {
        super::dispatch::Bind::Buffer {
            buffer: &self.buffer,
            offset: self.offset,
            size: self.size,
        }
    }
}

/// A small read-only storage table (in the arena) or a large one (a buffer of
/// its own).
pub(crate) enum Table<'a> {
    Arena(Param<'a>),
    Own(super::Tracked),
}

impl Table<'_> {
    pub(crate) fn bind(&self) -> super::dispatch::Bind<'_> {
        match self {
            Table::Arena(p) => p.bind(),
            Table::Own(b) => super::dispatch::Bind::whole(b),
        }
    }
}

impl Context {
    /// A read-only storage table holding `words`.
    pub(crate) fn table(&self, words: &[u32]) -> Table<'_> {
        let bytes: &[u8] = bytemuck::cast_slice(words);
        if bytes.len() as u64 <= MAX_TABLE_BYTES {
            Table::Arena(self.param_bytes(bytes))
        } else {
            Table::Own(self.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("flashdot table"),
                contents: bytes,
                usage: wgpu::BufferUsages::STORAGE,
            }))
        }
    }
}
