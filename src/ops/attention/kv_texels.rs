//! K and V as 2-D array textures of vec4 texels, for the kernels that read
//! them by texel fetch (the rows schedule, split-KV with texel reads).

use std::sync::Arc;

use super::call::Call;
use super::check::Dims;
use super::spec::{slot, AttentionKernel, AttentionParams, AttentionSpec};
use crate::context::{
    vec4_format, vec4_texture, Bind, Context, DeviceProfile, Param, PooledTexels, TexelGrid,
    Tracked,
};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// How K and V become textures: with head dims multiples of 4 their buffers
/// are copied as they are (f32 or f16 texels, no shader pass); otherwise a
/// pack kernel first writes them as zero-padded f32 vec4 rows. Either way a
/// texture holds the tensor's vec4s in order, laid out by `grid`.
#[derive(Debug, Clone)]
pub(crate) struct KvTextures {
    pub grid: TexelGrid,
    pub pack: bool,
    /// Texels (vec4s) of K and of V.
    pub texels: [u64; 2],
}

impl KvTextures {
    /// `None` if the textures or the pack pass exceed the adapter's limits,
    /// or K/V need the pack pass and are `paged` (it walks contiguous rows).
    pub fn new(profile: &DeviceProfile, dims: &Dims, paged: bool) -> Option<KvTextures> {
        let pack = !(dims.d.is_multiple_of(4) && dims.dv.is_multiple_of(4));
        if pack && paged {
            return None;
        }
        let rows = (dims.kv_outer * dims.hkv * dims.kv_rows) as u64;
        let texels = [
            rows * dims.d.div_ceil(4) as u64,
            rows * dims.dv.div_ceil(4) as u64,
        ];
        // Long tensors span layers (16 MiB of f32 each) within the tests'
        // sizes, so that every copy shape (whole layers, whole lines, a partial
        // line) is exercised.
        let grid = TexelGrid::new(profile, &texels)?;
        let w4 = dims.d.max(dims.dv).div_ceil(4);
        let max_groups = profile.max_workgroups_per_dim as usize;
        let fits = !pack
            || (texels
                .iter()
                .all(|&n| n * 16 <= profile.max_storage_binding)
                && (dims.sk * w4).div_ceil(64) <= max_groups
                && dims.b * dims.hkv <= max_groups);
        fits.then_some(KvTextures { grid, pack, texels })
    }

    /// Sets the texture addressing in `p` (after [`params`](super::params::params)).
    pub fn set_params(&self, p: &mut AttentionParams, dims: &Dims) {
        p.lsh = self.grid.lsh;
        p.wsh = self.grid.wsh;
        let (d4, dv4) = (dims.d.div_ceil(4) as u32, dims.dv.div_ceil(4) as u32);
        let (sk, hkv) = (dims.sk as u32, dims.hkv as u32);
        if self.pack {
            (p.kt_sb, p.kt_sh, p.kt_ss) = (hkv * sk * d4, sk * d4, d4);
            (p.vt_sb, p.vt_sh, p.vt_ss) = (hkv * sk * dv4, sk * dv4, dv4);
        } else {
            (p.kt_sb, p.kt_sh, p.kt_ss) = (p.k_sb / 4, p.k_sh / 4, p.k_ss / 4);
            (p.vt_sb, p.vt_sh, p.vt_ss) = (p.v_sb / 4, p.v_sh / 4, p.v_ss / 4);
        }
    }

    /// Copies the texture addressing [`set_params`](Self::set_params) wrote
    /// into `from` over to `to` (a kernel whose textures were made under
    /// other params).
    pub fn copy_params(from: &AttentionParams, to: &mut AttentionParams) {
        (to.lsh, to.wsh) = (from.lsh, from.wsh);
        (to.kt_sb, to.kt_sh, to.kt_ss) = (from.kt_sb, from.kt_sh, from.kt_ss);
        (to.vt_sb, to.vt_sh, to.vt_ss) = (from.vt_sb, from.vt_sh, from.vt_ss);
    }

    /// The pack kernels' specs (none when the buffers are copied as they are),
    /// for a call whose main kernel is `main`.
    pub fn pack_specs(&self, main: &AttentionSpec) -> Vec<AttentionSpec> {
        if !self.pack {
            return vec![];
        }
        let w4 = |dim| match main.kernel {
            AttentionKernel::Rows { d4, dv4, .. }
            | AttentionKernel::Split { d4, dv4, .. }
            | AttentionKernel::BwdQ { d4, dv4, .. }
            | AttentionKernel::BwdKv { d4, dv4, .. } => {
                if dim {
                    d4
                } else {
                    dv4
                }
            }
            _ => 0,
        };
        [true, false]
            .map(|k| AttentionSpec {
                kernel: AttentionKernel::Pack { w4: w4(k), k },
                lse: false,
                extras: Default::default(),
                ..main.clone()
            })
            .to_vec()
    }
}

/// The K/V textures of one call, ready to be made: their layout and the
/// pack pipelines. The one set-up of the kernels that read K and V as
/// texels (the rows schedule, split-KV with texel reads).
pub(crate) struct KvSource<'a> {
    geo: &'a KvTextures,
    packs: Vec<Arc<wgpu::ComputePipeline>>,
}

impl<'a> KvSource<'a> {
    /// Compiles the pack passes `geo` asks for, for a call whose main
    /// kernel is `main`, and sets the texture addressing in `p`.
    pub fn new(
        ctx: &Context,
        geo: &'a KvTextures,
        main: &AttentionSpec,
        p: &mut AttentionParams,
        dims: &Dims,
    ) -> Result<KvSource<'a>> {
        let packs = geo
            .pack_specs(main)
            .iter()
            .map(|s| ctx.pipeline(s))
            .collect::<Result<Vec<_>>>()?;
        geo.set_params(p, dims);
        Ok(KvSource { geo, packs })
    }

    /// Encodes the making of the call's K and V textures into `enc`:
    /// buffer-to-texture copies, after the pack passes (reading the params
    /// in `ubuf`) when the layout asks for them. The pack writes a buffer
    /// rather than a storage texture: lavapipe's timestamps stop
    /// bracketing later passes after storage-texture writes.
    pub fn encode(
        &self,
        call: &Call,
        enc: &mut wgpu::CommandEncoder,
        ubuf: &Param<'_>,
    ) -> KvTexels {
        self.encode_tensors(call.ctx, call.dims, [call.k, call.v], enc, ubuf)
    }

    /// [`encode`](Self::encode) for any pair of tensors laid out as K and V
    /// are in `dims` (and in the params `ubuf` holds): the backward's Q and
    /// dO, seen as `[batch, heads_q, seq_q, d]` and `[.., d_v]`.
    pub fn encode_tensors(
        &self,
        ctx: &Context,
        dims: &Dims,
        [k, v]: [&Tensor; 2],
        enc: &mut wgpu::CommandEncoder,
        ubuf: &Param<'_>,
    ) -> KvTexels {
        let geo = self.geo;
        let w4s = [dims.d.div_ceil(4) as u32, dims.dv.div_ceil(4) as u32];
        // The pack pass writes f32.
        let format = vec4_format(if geo.pack { DType::F32 } else { k.dtype() });
        let mut staging = Vec::new();
        let mut make = |i: usize, src: &Tensor| {
            let packed = self.packs.get(i).map(|pack| {
                let buf = ctx.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("attention K/V pack staging"),
                    size: (geo.texels[i] * 16).max(16),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let input = if i == 0 { slot::K } else { slot::V };
                ctx.dispatch(
                    enc,
                    pack,
                    ubuf,
                    &[(input, src.bind()), (slot::PACKED, Bind::whole(&buf))],
                    (
                        (dims.sk * w4s[i] as usize).div_ceil(64) as u32,
                        (dims.b * dims.hkv) as u32,
                        1,
                    ),
                );
                buf
            });
            let (src_buf, src_offset) = match &packed {
                Some(p) => (&**p, 0),
                None => (src.buffer(), src.offset()),
            };
            let made = vec4_texture(
                ctx,
                enc,
                (src_buf, src_offset),
                geo.texels[i],
                format,
                geo.grid,
                "attention K/V texels",
            );
            staging.extend(packed);
            made
        };
        let textures = [make(0, k), make(1, v)];
        KvTexels {
            textures,
            _staging: staging,
        }
    }
}

/// K and V as the textures of [`KvTextures`]. Holds the textures (and any
/// pack staging buffers) until the work that reads them is submitted.
pub(crate) struct KvTexels {
    textures: [PooledTexels; 2],
    _staging: Vec<Tracked>,
}

impl KvTexels {
    /// The textures' bindings.
    pub fn binds(&self) -> [(u32, Bind<'_>); 2] {
        [
            (slot::K_TEXELS, Bind::pooled(&self.textures[0])),
            (slot::V_TEXELS, Bind::pooled(&self.textures[1])),
        ]
    }
}
