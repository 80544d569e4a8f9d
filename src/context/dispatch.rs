//! Dispatch helpers: binding windows over large buffers, bind groups from
//! named slots, one compute pass per dispatch (timed while a GPU timer runs),
//! the command encoder and submit.

use super::bindcache::{Key, Res};
use super::timer::TIMER_PASSES;
use super::Context;

impl Context {
    pub(crate) fn max_binding(&self) -> u64 {
        self.inner.info.limits.max_storage_buffer_binding_size
    }

    /// Splits `groups` workgroups over x and y so that neither exceeds the
    /// per-dimension limit; kernels rebuild the linear id as `x + y * num_workgroups.x`
    /// and drop ids past the end.
    pub(crate) fn grid(&self, groups: u32) -> (u32, u32) {
        let max = self
            .inner
            .info
            .limits
            .max_compute_workgroups_per_dimension
            .max(1);
        if groups <= max {
            (groups, 1)
        } else {
            let y = groups.div_ceil(max);
            (groups.div_ceil(y), y)
        }
    }
}

/// A window onto a buffer no larger than one storage binding: the binding starts at
/// an aligned byte offset at or before the wanted element, and `elem_offset` says how
/// many elements into the binding the wanted element lies.
pub(crate) struct Window {
    pub offset: u64,
    pub size: u64,
    pub elem_offset: u32,
}

impl Context {
    /// Computes the binding window that starts at element `first` (of `elem_bytes`
    /// each) and covers `count` elements, in a buffer of `buffer_size` bytes.
    /// Returns `None` if the span cannot fit in one binding.
    pub(crate) fn window(
        &self,
        buffer_size: u64,
        elem_bytes: u64,
        first: u64,
        count: u64,
    ) -> Option<Window> {
        // At least 16 so that vec4 kernels see window offsets in whole vec4s.
        let align = (self.inner.info.limits.min_storage_buffer_offset_alignment as u64).max(16);
        let start = first * elem_bytes;
        let offset = start / align * align;
        let end = (start + count * elem_bytes).div_ceil(4) * 4;
        let end = end.min(buffer_size);
        let size = (end - offset).max(4);
        if size > self.max_binding() {
            return None;
        }
        Some(Window {
            offset,
            size,
            elem_offset: ((start - offset) / elem_bytes) as u32,
        })
    }
}

/// One binding of a dispatch: a buffer range or a texture view.
#[derive(Clone, Copy)]
pub(crate) enum Bind<'a> {
    Buffer {
        buffer: &'a wgpu::Buffer,
        offset: u64,
        size: u64,
    },
    Texture(&'a wgpu::TextureView),
    /// A texture of the texel pool (its bind groups can be cached: the pool
    /// purges them when it frees the texture).
    Pooled(&'a wgpu::TextureView),
}

impl<'a> Bind<'a> {
    /// The whole buffer.
    pub fn whole(buffer: &'a wgpu::Buffer) -> Self {
        Bind::Buffer {
            buffer,
            offset: 0,
            size: buffer.size(),
        }
    }
    /// A window of a buffer.
    pub fn window(buffer: &'a wgpu::Buffer, w: &Window) -> Self {
        Bind::Buffer {
            buffer,
            offset: w.offset,
            size: w.size,
        }
    }
    /// A texture view.
    pub fn texture(view: &'a wgpu::TextureView) -> Self {
        Bind::Texture(view)
    }
    /// A pooled texel texture.
    pub fn pooled(t: &'a super::PooledTexels) -> Self {
        Bind::Pooled(t.view())
    }
}

impl Context {
    /// Records one dispatch in its own compute pass: binding 0 is the uniform
    /// `params` (every kernel's `P`), the others are `binds` at the slots the
    /// kernel names (each family's `binding` constants); `groups` is (x, y, z)
    /// workgroups.
    pub(crate) fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        params: &super::Param<'_>,
        binds: &[(u32, Bind<'_>)],
        groups: (u32, u32, u32),
    ) {
        let first = [(0, params.bind())];
        let all = || first.iter().chain(binds);
        let make = || {
            let entries: Vec<_> = all()
                .map(|&(slot, ref b)| wgpu::BindGroupEntry {
                    binding: slot,
                    resource: match *b {
                        Bind::Buffer {
                            buffer,
                            offset,
                            size,
                        } => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset,
                            size: std::num::NonZeroU64::new(size),
                        }),
                        Bind::Texture(view) | Bind::Pooled(view) => {
                            wgpu::BindingResource::TextureView(view)
                        }
                    },
                })
                .collect();
            self.inner
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                })
        };
        // Every buffer flashdot binds is one it wraps (purged when freed), so
        // only textures outside the pool make a group uncacheable.
        let key: Option<Vec<(u32, Res)>> = all()
            .map(|&(slot, ref b)| match *b {
                Bind::Buffer {
                    buffer,
                    offset,
                    size,
                } => Some((slot, Res::Buffer(buffer.clone(), offset, size))),
                Bind::Pooled(view) => Some((slot, Res::View(view.clone()))),
                Bind::Texture(_) => None,
            })
            .collect();
        let bg = match key {
            Some(entries) => self.inner.binds.get_or(
                Key {
                    pipeline: pipeline.clone(),
                    entries,
                },
                make,
            ),
            None => make(),
        };
        let mut timer = self.inner.timer.lock().unwrap_or_else(|e| e.into_inner());
        let writes = timer.as_mut().and_then(|t| {
            (t.used + 2 <= 2 * TIMER_PASSES).then(|| {
                t.used += 2;
                wgpu::ComputePassTimestampWrites {
                    query_set: &t.queries,
                    beginning_of_pass_write_index: Some(t.used - 2),
                    end_of_pass_write_index: Some(t.used - 1),
                }
            })
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: writes,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
    }

    /// Submits command buffers after writing the staged parameters they read.
    pub(crate) fn queue_submit(
        &self,
        buffers: impl IntoIterator<Item = wgpu::CommandBuffer>,
    ) -> wgpu::SubmissionIndex {
        self.flush_params();
        self.inner.queue.submit(buffers)
    }

    /// A fresh command encoder. The parameter regions of the ops it encodes
    /// stay reserved until it is submitted or dropped.
    pub(crate) fn encoder(&self) -> Encoder<'_> {
        Encoder {
            hold: self.hold_params(),
            ctx: self,
            enc: Some(
                self.inner
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }),
            ),
        }
    }

    /// Submits encoded work (inside [`Context::record`], keeps it for the
    /// recording's one submission). Returns the submission's index.
    pub(crate) fn submit(&self, mut enc: Encoder<'_>) -> Option<wgpu::SubmissionIndex> {
        let raw = enc.enc.take().expect("an encoder is submitted once");
        self.submit_raw(raw)
        // `enc` drops here, after the submission: its parameter regions may
        // be reused from now on.
    }

    pub(super) fn submit_raw(&self, enc: wgpu::CommandEncoder) -> Option<wgpu::SubmissionIndex> {
        let enc = self.take_for_recording(enc)?;
        let index = self.queue_submit([enc.finish()]);
        self.start_background_compiles();
        Some(index)
    }
}

/// A command encoder that keeps the parameter arena's regions reserved until
/// it is submitted (or dropped unsubmitted).
pub(crate) struct Encoder<'a> {
    ctx: &'a Context,
    hold: u64,
    enc: Option<wgpu::CommandEncoder>,
}

impl Encoder<'_> {
    /// The encoder, finished (for submissions that bypass [`Context::submit`]).
    pub(crate) fn finish(mut self) -> wgpu::CommandBuffer {
        self.enc
            .take()
            .expect("an encoder is finished once")
            .finish()
    }
}

impl std::ops::Deref for Encoder<'_> {
    type Target = wgpu::CommandEncoder;
    fn deref(&self) -> &wgpu::CommandEncoder {
        self.enc.as_ref().expect("encoder in use")
    }
}

impl std::ops::DerefMut for Encoder<'_> {
    fn deref_mut(&mut self) -> &mut wgpu::CommandEncoder {
        self.enc.as_mut().expect("encoder in use")
    }
}

impl Drop for Encoder<'_> {
    fn drop(&mut self) {
        self.ctx.release_params(self.hold);
    }
}
