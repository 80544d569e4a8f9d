//! Element types of tensors and kernels (the lowest layer: the WGSL
//! templates, the context and the tensors all name them).

use std::fmt;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE half (needs the adapter's `SHADER_F16` feature for kernels).
    F16,
    /// 32-bit unsigned integer (ids).
    U32,
}

impl DType {
    /// The float types kernels compute on (f16 needs `SHADER_F16`).
    pub const FLOAT: [DType; 2] = [DType::F32, DType::F16];

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }
    /// WGSL scalar type name.
    pub(crate) fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wgsl())
    }
}
