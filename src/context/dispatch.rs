//! Dispatch helpers: binding windows over large buffers, bind groups from
//! named slots, one compute pass per dispatch (timed while a GPU timer runs),
//! the command encoder and submit.

use super::timer::TIMER_PASSES;
use super::Context;

impl Context {
    pub(crate) fn max_binding(&self) -> u64 {
        self.inner.info.limits.max_storage_buffer_binding_size
    }

    /// Creates a uniform buffer holding `params`.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, params: &T) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.inner.memory.count();
        self.inner
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            })
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
        params: &wgpu::Buffer,
        binds: &[(u32, Bind<'_>)],
        groups: (u32, u32, u32),
    ) {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params.as_entire_binding(),
        }];
        for &(slot, ref b) in binds {
            let resource = match *b {
                Bind::Buffer {
                    buffer,
                    offset,
                    size,
                } => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset,
                    size: std::num::NonZeroU64::new(size),
                }),
                Bind::Texture(view) => wgpu::BindingResource::TextureView(view),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: slot,
                resource,
            });
        }
        let bg = self
            .inner
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
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

    /// A fresh command encoder.
    pub(crate) fn encoder(&self) -> wgpu::CommandEncoder {
        self.inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    /// Submits encoded work (inside [`Context::record`], keeps it for the
    /// recording's one submission). Returns the submission's index.
    pub(crate) fn submit(&self, enc: wgpu::CommandEncoder) -> Option<wgpu::SubmissionIndex> {
        let enc = self.take_for_recording(enc)?;
        let index = self.inner.queue.submit([enc.finish()]);
        self.start_background_compiles();
        Some(index)
    }
}
