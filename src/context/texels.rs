//! Tensors copied into 2-D array textures of vec4 texels, for the kernels that
//! read their operands by `textureLoad`: on CPU adapters a texel fetch is a
//! vectorised gather, while a storage-buffer load is a per-lane loop (the
//! README gives the measurements).

use std::collections::HashMap;

use super::{BindCache, Context, DeviceProfile, TrackedTexture};
use crate::dtype::DType;

/// The texture format whose texels are a vec4 of `dtype` as stored in a
/// tensor's buffer (f16 → 8-byte texels, anything else → f32's 16), so that
/// the copy is a plain buffer-to-texture copy; shaders read both as vec4<f32>.
pub(crate) fn vec4_format(dtype: DType) -> wgpu::TextureFormat {
    match dtype {
        DType::F16 => wgpu::TextureFormat::Rgba16Float,
        _ => wgpu::TextureFormat::Rgba32Float,
    }
}

/// Where texel `i` of a [`vec4_texture`] lives: `2^wsh` texels a line, `2^lsh`
/// lines a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TexelGrid {
    pub wsh: u32,
    pub lsh: u32,
}

impl TexelGrid {
    /// 1024 texels a line and 1024 lines a layer (less if the adapter's
    /// textures are smaller): a line's bytes are a multiple of the 256-byte copy
    /// alignment. `None` if `texels` need more layers than the adapter allows
    /// or its textures are under 32 texels wide.
    pub fn new(profile: &DeviceProfile, texels: &[u64]) -> Option<TexelGrid> {
        let max_sh = profile.max_texture_2d.max(1).ilog2();
        let g = TexelGrid {
            wsh: max_sh.min(10),
            lsh: max_sh.min(10),
        };
        let fits = g.wsh >= 5
            && texels
                .iter()
                .all(|&n| g.layers(n) <= profile.max_texture_layers as u64);
        fits.then_some(g)
    }

    fn layers(self, texels: u64) -> u64 {
        texels.div_ceil(1 << (self.wsh + self.lsh))
    }
}

/// Encodes into `enc` a copy of the first `texels` vec4s of `src` (from byte
/// `src_offset`, a multiple of the texel size, in `format`: see [`vec4_format`])
/// into a 2-D array texture laid out by `grid`, and returns it (keep it
/// alive until the work that reads it is encoded). Plain buffer-to-texture
/// copies: whole layers, then whole lines, then the last partial line.
///
/// Textures come from the context's pool and go back to it when dropped:
/// the copy and the reads that follow are commands in one stream, so the
/// next user's copy is ordered after them. A pooled texture is only reused
/// for the same texel count, so the part past the copied texels is never
/// written and stays zero as created.
pub(crate) fn vec4_texture(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    (src, src_offset): (&wgpu::Buffer, u64),
    texels: u64,
    format: wgpu::TextureFormat,
    grid: TexelGrid,
    label: &str,
) -> PooledTexels {
    let texel_bytes = format.block_copy_size(None).unwrap_or(16) as u64;
    let (w, lpl) = (1u64 << grid.wsh, 1u64 << grid.lsh);
    let lines = texels.div_ceil(w).max(1);
    let key = PoolKey {
        format,
        grid: (grid.wsh, grid.lsh),
        texels,
    };
    let pooled = ctx.texel_pool().take(&key).unwrap_or_else(|| {
        let texture = ctx.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width: w as u32,
                height: lines.min(lpl) as u32,
                depth_or_array_layers: (lines.div_ceil(lpl) as u32)
                    .max(ctx.profile().min_array_layers),
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::COPY_DST | wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        (texture, view)
    });
    let texture = &pooled.0;
    let row = w * texel_bytes;
    let (full_lines, rem) = (texels / w, texels % w);
    let (full_layers, part) = (full_lines / lpl, full_lines % lpl);
    let mut copy = |offset: u64, origin: [u64; 2], extent: [u64; 3]| {
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: src,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: src_offset + offset,
                    bytes_per_row: Some(row as u32),
                    rows_per_image: Some(lpl as u32),
                },
            },
            wgpu::TexelCopyTextureInfo {
                texture,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: 0,
                    y: origin[0] as u32,
                    z: origin[1] as u32,
                },
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::Extent3d {
                width: extent[0] as u32,
                height: extent[1] as u32,
                depth_or_array_layers: extent[2] as u32,
            },
        );
    };
    if full_layers > 0 {
        copy(0, [0, 0], [w, lpl, full_layers]);
    }
    if part > 0 {
        copy(full_layers * lpl * row, [0, full_layers], [w, part, 1]);
    }
    if rem > 0 {
        copy(full_lines * row, [part, full_layers], [rem, 1, 1]);
    }
    PooledTexels {
        entry: Some(pooled),
        key,
        pool: ctx.texel_pool(),
    }
}

/// What a pooled texture can be reused for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct PoolKey {
    format: wgpu::TextureFormat,
    grid: (u32, u32),
    texels: u64,
}

/// Pooled bytes, and the textures (with their views) by what they fit.
type Free = (
    u64,
    HashMap<PoolKey, Vec<(TrackedTexture, wgpu::TextureView)>>,
);

/// Texel textures kept for reuse, at most [`POOL_BYTES`] in all.
#[derive(Debug)]
pub(crate) struct TexelPool {
    free: std::sync::Mutex<Free>,
    /// Bind groups of a texture the pool lets go are dropped with it.
    binds: std::sync::Arc<BindCache>,
}

/// The pool keeps textures up to this many bytes in all (larger working sets
/// allocate per call, where the copy dwarfs the allocation anyway).
const POOL_BYTES: u64 = 64 << 20;

impl TexelPool {
    pub(crate) fn new(binds: std::sync::Arc<BindCache>) -> TexelPool {
        TexelPool {
            free: Default::default(),
            binds,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, key: &PoolKey) -> Option<(TrackedTexture, wgpu::TextureView)> {
        let mut g = self.lock();
        let e = g.1.get_mut(key)?.pop()?;
        g.0 -= e.0.bytes();
        Some(e)
    }

    fn give(&self, key: PoolKey, e: (TrackedTexture, wgpu::TextureView)) {
        let mut g = self.lock();
        if g.0 + e.0.bytes() <= POOL_BYTES {
            g.0 += e.0.bytes();
            g.1.entry(key).or_default().push(e);
        } else {
            drop(g);
            self.binds.purge_view(&e.1);
        }
    }

    /// Frees every pooled texture.
    pub(crate) fn clear(&self) {
        let free = std::mem::take(&mut *self.lock());
        for (_, v) in free.1.values().flatten() {
            self.binds.purge_view(v);
        }
    }
}

/// A texel texture borrowed from the context's pool; returns to it on drop.
pub(crate) struct PooledTexels {
    entry: Option<(TrackedTexture, wgpu::TextureView)>,
    key: PoolKey,
    pool: std::sync::Arc<TexelPool>,
}

impl PooledTexels {
    /// The texture's 2-D array view.
    pub(crate) fn view(&self) -> &wgpu::TextureView {
        &self.entry.as_ref().expect("present until drop").1
    }
}

impl Drop for PooledTexels {
    fn drop(&mut self) {
        if let Some(e) = self.entry.take() {
            self.pool.give(self.key, e);
        }
    }
}
