//! The device profile: what the adapter reports (device type, features,
//! subgroup sizes, limits), read once when a [`Context`](super::Context) opens,
//! and the device policy derived from it. Every op's planner decides from this
//! profile and the call's shapes only, so the choice of kernel lives here and in
//! the planners, never in launch code.

use std::fmt;

use super::ContextInfo;

/// What the planners know of a device. Built once per context from
/// [`ContextInfo`]; [`Context::profile`](super::Context::profile) returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceProfile {
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// `SHADER_F16` is enabled: f16 tensors and kernels.
    pub f16: bool,
    /// `SUBGROUP` is enabled.
    pub subgroups: bool,
    /// Smallest subgroup the device may run (0 when unknown).
    pub min_subgroup: u32,
    /// Subgroups are enabled and always at least 8 lanes wide: kernels that
    /// share values among groups of 8 lanes by broadcast or shuffle.
    pub subgroups_of_8: bool,
    /// Largest storage buffer binding, bytes.
    pub max_storage_binding: u64,
    /// Largest uniform buffer binding, bytes.
    pub max_uniform_binding: u64,
    /// Storage buffers one kernel may bind.
    pub max_storage_buffers: u32,
    /// Largest buffer, bytes.
    pub max_buffer: u64,
    /// Workgroup memory per workgroup, bytes.
    pub workgroup_memory: u32,
    /// Invocations per workgroup.
    pub max_invocations: u32,
    /// Workgroup size limits (x, y, z).
    pub max_workgroup_size: [u32; 3],
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dim: u32,
    /// Largest 2-D texture side, texels.
    pub max_texture_2d: u32,
    /// Layers of a 2-D array texture.
    pub max_texture_layers: u32,
    /// Alignment of storage binding offsets, bytes.
    pub storage_offset_alignment: u32,
    /// Alignment of uniform binding offsets, bytes.
    pub uniform_offset_alignment: u32,
    /// Policy: read large operands through textures (texel fetches) rather
    /// than storage buffers, and prefer barrier-free kernels without
    /// workgroup memory. On for software (CPU) adapters, where a texel fetch is
    /// a vectorised gather, a storage load a per-lane loop and a barrier a
    /// switch between SIMD slices (the README gives the measurements).
    pub texel_reads: bool,
    /// The backend views a 2-D array texture of one layer as a plain 2-D
    /// texture (wgpu's GL backend), so array textures get at least two.
    pub min_array_layers: u32,
}

impl DeviceProfile {
    /// The profile of a context's device.
    pub fn from_info(info: &ContextInfo) -> DeviceProfile {
        let l = &info.limits;
        let subgroups = info.has_subgroups();
        let min_subgroup = info.subgroup_size.0;
        DeviceProfile {
            device_type: info.device_type,
            f16: info.has_f16(),
            subgroups,
            min_subgroup,
            subgroups_of_8: subgroups && min_subgroup >= 8,
            max_storage_binding: l.max_storage_buffer_binding_size,
            max_uniform_binding: l.max_uniform_buffer_binding_size,
            max_storage_buffers: l.max_storage_buffers_per_shader_stage,
            max_buffer: l.max_buffer_size,
            workgroup_memory: l.max_compute_workgroup_storage_size,
            max_invocations: l.max_compute_invocations_per_workgroup,
            max_workgroup_size: [
                l.max_compute_workgroup_size_x,
                l.max_compute_workgroup_size_y,
                l.max_compute_workgroup_size_z,
            ],
            max_workgroups_per_dim: l.max_compute_workgroups_per_dimension,
            max_texture_2d: l.max_texture_dimension_2d,
            max_texture_layers: l.max_texture_array_layers,
            storage_offset_alignment: l.min_storage_buffer_offset_alignment,
            uniform_offset_alignment: l.min_uniform_buffer_offset_alignment,
            texel_reads: info.device_type == wgpu::DeviceType::Cpu,
            min_array_layers: if info.backend == wgpu::Backend::Gl {
                2
            } else {
                1
            },
        }
    }

    /// `Ok` if `n` workgroups fit one dispatch dimension; else
    /// [`Error::TooLarge`](crate::error::Error::TooLarge) naming `what` for `op`.
    pub(crate) fn check_groups(
        &self,
        op: &'static str,
        what: &str,
        n: usize,
    ) -> crate::error::Result<()> {
        let limit = self.max_workgroups_per_dim as u64;
        if n as u64 > limit {
            return Err(crate::error::Error::TooLarge {
                op,
                what: what.to_string(),
                size: n as u64,
                limit,
                kind: crate::error::Limit::Workgroups,
            });
        }
        Ok(())
    }

    /// Whether a workgroup of `size` invocations (x, y) fits.
    pub fn fits_workgroup(&self, x: u32, y: u32) -> bool {
        x <= self.max_workgroup_size[0]
            && y <= self.max_workgroup_size[1]
            && x.saturating_mul(y) <= self.max_invocations
    }
}

impl fmt::Display for DeviceProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}, f16 {}, subgroups {} (min {}), {} reads",
            self.device_type,
            self.f16,
            self.subgroups,
            self.min_subgroup,
            if self.texel_reads { "texel" } else { "buffer" }
        )
    }
}
