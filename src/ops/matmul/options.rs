//! The matmul's public option types: the fused activation, the kernel
//! choice and the per-call options.

use super::tiles::TileConfig;
use crate::context::Context;
use crate::tensor::DType;

/// Activation fused into the epilogue, applied after `alpha` and the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// max(x, 0).
    Relu,
    /// GELU, tanh approximation (PyTorch `approximate="tanh"`).
    GeluTanh,
    /// GELU, exact erf form (PyTorch default).
    GeluErf,
    /// SiLU / swish: x·σ(x).
    Silu,
}

impl Activation {
    /// Every activation (for tests).
    pub const ALL: [Activation; 5] = [
        Activation::None,
        Activation::Relu,
        Activation::GeluTanh,
        Activation::GeluErf,
        Activation::Silu,
    ];
}

/// Matmul kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MatmulVariant {
    /// One output per invocation from global memory: the baseline.
    Naive,
    /// A tiled kernel with an explicit configuration.
    Tiled(TileConfig),
    /// The configuration the planner picks from the device profile and the
    /// shape ([`TileConfig::heuristic`], or the buffer kernel for shapes the
    /// texel kernel does not take). The default.
    Auto,
    /// Times the adapter's shortlist ([`TileConfig::candidates`]) once per shape
    /// class on this adapter and caches the winner for the context's lifetime.
    Autotune,
}

impl MatmulVariant {
    /// Naive, every fitting tile configuration, Auto and Autotune.
    pub fn all(ctx: &Context) -> Vec<MatmulVariant> {
        let mut v = vec![MatmulVariant::Naive];
        v.extend(
            TileConfig::CANDIDATES
                .iter()
                .filter(|c| c.fits(ctx.profile()))
                .map(|&c| MatmulVariant::Tiled(c)),
        );
        v.push(MatmulVariant::Auto);
        v.push(MatmulVariant::Autotune);
        v
    }
}

impl std::fmt::Display for MatmulVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatmulVariant::Naive => f.write_str("naive"),
            MatmulVariant::Tiled(c) => write!(f, "tiled ({c})"),
            MatmulVariant::Auto => f.write_str("auto"),
            MatmulVariant::Autotune => f.write_str("autotune"),
        }
    }
}

/// Options of [`matmul_with`](super::matmul_with) / [`linear_with`](super::linear_with).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct MatmulOptions {
    /// Read A as stored `[.., k, m]`.
    pub trans_a: bool,
    /// Read B as stored `[.., n, k]`.
    pub trans_b: bool,
    /// Scale on A·B (before bias and activation).
    pub alpha: f32,
    /// Kernel.
    pub variant: MatmulVariant,
    /// Output type: f32 (default) or f16 (needs `SHADER_F16`).
    pub out_dtype: DType,
}

impl MatmulOptions {
    /// Options with `variant` as the kernel.
    pub fn variant(mut self, variant: MatmulVariant) -> Self {
        self.variant = variant;
        self
    }
    /// Options that read A (`trans_a`) and B (`trans_b`) transposed.
    pub fn transpose(mut self, trans_a: bool, trans_b: bool) -> Self {
        self.trans_a = trans_a;
        self.trans_b = trans_b;
        self
    }
    /// Options with `alpha` as the scale on A·B.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    /// Options with `out_dtype` as the output type.
    pub fn out_dtype(mut self, out_dtype: DType) -> Self {
        self.out_dtype = out_dtype;
        self
    }
}

impl Default for MatmulOptions {
    fn default() -> Self {
        MatmulOptions {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            variant: MatmulVariant::Auto,
            out_dtype: DType::F32,
        }
    }
}
