//! The matmul planner: the kernel spec (pipeline-cache key and the only input
//! to `matmul.wgsl`), and the one function that turns a call into a
//! [`MatmulPlan`] from the device profile and the shapes.

use std::fmt;

use super::options::{Activation, MatmulVariant};
use super::problem::Problem;
use super::tiles::TileConfig;
use crate::context::{DeviceProfile, Spec, TexelGrid};
use crate::error::{Error, Result};
use crate::shader;
use crate::tensor::DType;

const SRC: &str = include_str!("matmul.wgsl");

crate::shader::params! {
    /// Mirrors `Params` in `matmul.wgsl`.
    pub(crate) struct MatmulParams {
        /// Rows of C.
        m: u32,
        /// Columns of C.
        n: u32,
        /// Reduction length.
        k: u32,
        /// Scale applied to A·B before the bias.
        alpha: f32,
    }
}

/// Binding slots of `matmul.wgsl` (0 is the params).
pub(crate) mod slot {
    /// A (a buffer, or a texture for the texel kernel).
    pub const A: u32 = 1;
    /// B (likewise).
    pub const B: u32 = 2;
    /// Per-batch element offsets of A and B.
    pub const OFFSETS: u32 = 3;
    pub const OUT: u32 = 4;
    pub const BIAS: u32 = 5;
}

crate::shader::defines! {
    /// Defines of `matmul.wgsl`.
    pub(crate) enum MatmulDefine {
        TransA = "TRANS_A",
        TransB = "TRANS_B",
        Bias = "BIAS",
        ActRelu = "ACT_RELU",
        ActGeluTanh = "ACT_GELU_TANH",
        ActGeluErf = "ACT_GELU_ERF",
        ActSilu = "ACT_SILU",
        OutF16 = "OUT_F16",
        Aligned = "ALIGNED",
        KindBroadcast = "KIND_BROADCAST",
        KindVec4 = "KIND_VEC4",
        KindShared = "KIND_SHARED",
        Texel = "TEXEL",
        Sg = "SG",
    }
}

/// The kernel of a [`MatmulSpec`], with its compile-time tile constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MatmulKernel {
    Naive,
    Broadcast {
        wg: u32,
        tm: u32,
        tn: u32,
    },
    Vec4 {
        wg: u32,
        tm: u32,
        tn: u32,
    },
    /// `tn` in the kernel's units (vec4 column groups unless B is transposed);
    /// `wsh`, `lsh`: the texture layout; `sg`: rows of A shared by subgroup
    /// broadcast.
    Texel {
        wg: u32,
        tm: u32,
        tn: u32,
        wsh: u32,
        lsh: u32,
        sg: bool,
    },
    Shared {
        wx: u32,
        wy: u32,
        tm: u32,
        bk: u32,
    },
}

/// One matmul kernel specialisation: the pipeline-cache key and the only
/// input to its WGSL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MatmulSpec {
    pub kernel: MatmulKernel,
    pub dtype: DType,
    pub out_f16: bool,
    pub trans_a: bool,
    pub trans_b: bool,
    pub bias: bool,
    pub act: Activation,
    /// m and n (and k for `Shared`) are tile multiples: no edge checks.
    pub aligned: bool,
}

impl Spec for MatmulSpec {
    fn family(&self) -> &'static str {
        "matmul"
    }
    fn entry(&self) -> &'static str {
        match self.kernel {
            MatmulKernel::Naive => "mm_naive",
            MatmulKernel::Broadcast { .. } => "mm_broadcast",
            MatmulKernel::Vec4 { .. } | MatmulKernel::Texel { .. } => "mm_vec4",
            MatmulKernel::Shared { .. } => "mm_shared",
        }
    }
    fn source(&self) -> Result<String> {
        use MatmulDefine as D;
        let mut d = Vec::new();
        for (on, def) in [
            (self.trans_a, D::TransA),
            (self.trans_b, D::TransB),
            (self.bias, D::Bias),
            (self.out_f16, D::OutF16),
            (self.aligned, D::Aligned),
        ] {
            if on {
                d.push(def);
            }
        }
        d.extend(match self.act {
            Activation::None => None,
            Activation::Relu => Some(D::ActRelu),
            Activation::GeluTanh => Some(D::ActGeluTanh),
            Activation::GeluErf => Some(D::ActGeluErf),
            Activation::Silu => Some(D::ActSilu),
        });
        let consts: Vec<(&str, u32)> = match self.kernel {
            MatmulKernel::Naive => vec![],
            MatmulKernel::Broadcast { wg, tm, tn } => {
                d.push(D::KindBroadcast);
                vec![("WG", wg), ("TM", tm), ("TN", tn)]
            }
            MatmulKernel::Vec4 { wg, tm, tn } => {
                d.push(D::KindVec4);
                vec![("WG", wg), ("TM", tm), ("TN", tn)]
            }
            MatmulKernel::Texel {
                wg,
                tm,
                tn,
                wsh,
                lsh,
                sg,
            } => {
                d.extend([D::KindVec4, D::Texel]);
                let mut c = vec![
                    ("WG", wg),
                    ("TM", tm),
                    ("TN", tn),
                    ("WSH", wsh),
                    ("LSH", lsh),
                ];
                if sg {
                    d.push(D::Sg);
                    c.push(("TMF", tm.div_ceil(8)));
                }
                c
            }
            MatmulKernel::Shared { wx, wy, tm, bk } => {
                d.push(D::KindShared);
                vec![("WX", wx), ("WY", wy), ("TM", tm), ("BK", bk)]
            }
        };
        // f16 output needs `enable f16` even for f32 inputs.
        shader::render(self, SRC, self.dtype, self.out_f16, &d, &consts)
    }
}

/// What a matmul or linear call will run: the kernel and configuration, the
/// workgroup grid, and why. From [`plan`](super::plan).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MatmulPlan {
    /// The kernel that runs: `Naive` or `Tiled` with the configuration used.
    pub kernel: MatmulVariant,
    /// Why this kernel.
    pub reason: String,
    /// Workgroups (x, y, batches).
    pub groups: (u32, u32, u32),
    pub(crate) spec: MatmulSpec,
    /// The texture layout of A and B for the texel kernel.
    pub(crate) texels: Option<TexelGrid>,
}

impl fmt::Display for MatmulPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "matmul: {} ({}), {:?} workgroups{}",
            self.kernel,
            self.reason,
            self.groups,
            if self.spec.aligned {
                ", tile-aligned"
            } else {
                ""
            }
        )
    }
}

/// Whether the vec4 kernels read this problem (A along K, B along N or K).
fn vec4_shaped(p: &Problem) -> bool {
    !p.trans_a && p.k.is_multiple_of(4) && (p.trans_b || p.n.is_multiple_of(4))
}

fn texel_grid(profile: &DeviceProfile, p: &Problem) -> Option<TexelGrid> {
    vec4_shaped(p)
        .then(|| TexelGrid::new(profile, &[p.a_len as u64 / 4, p.b_len as u64 / 4]))
        .flatten()
}

/// The tile configuration to run for `variant`, or why it cannot serve.
fn choose(
    op: &'static str,
    profile: &DeviceProfile,
    p: &Problem,
    variant: MatmulVariant,
) -> Result<(Option<TileConfig>, String, Option<TexelGrid>)> {
    let unsupported = |detail: String| Error::Unsupported { op, detail };
    match variant {
        MatmulVariant::Naive => Ok((None, "forced by the caller".into(), None)),
        MatmulVariant::Tiled(c) => {
            if let Some(detail) = c.invalid() {
                return Err(Error::InvalidArgument { op, detail });
            }
            if let Some(why) = c.misfit(profile) {
                return Err(unsupported(why));
            }
            let shape_why = || {
                format!(
                    "{c} reads A along k and B along n as vec4s: it needs A not transposed, \
                     k = {} a multiple of 4 and n = {} a multiple of 4 unless B is transposed",
                    p.k, p.n
                )
            };
            match c {
                TileConfig::Texel { .. } => {
                    if !vec4_shaped(p) {
                        return Err(unsupported(shape_why()));
                    }
                    let grid = texel_grid(profile, p).ok_or_else(|| {
                        unsupported(format!(
                            "{c}: A ({} values) or B ({} values) exceeds the adapter's texture \
                             limits ({} texels a side, {} layers)",
                            p.a_len, p.b_len, profile.max_texture_2d, profile.max_texture_layers
                        ))
                    })?;
                    Ok((Some(c), "forced by the caller".into(), Some(grid)))
                }
                TileConfig::Vec4 { .. } if !vec4_shaped(p) => Err(unsupported(shape_why())),
                _ => Ok((Some(c), "forced by the caller".into(), None)),
            }
        }
        MatmulVariant::Auto | MatmulVariant::Autotune => {
            let pick = TileConfig::heuristic(profile);
            if let TileConfig::Texel { .. } = pick {
                if let Some(grid) = texel_grid(profile, p) {
                    return Ok((
                        Some(pick),
                        "texel reads preferred by this device profile".into(),
                        Some(grid),
                    ));
                }
            }
            let pick = TileConfig::buffer_heuristic(profile);
            Ok(match pick {
                TileConfig::Vec4 { wg, tm, tn } if !vec4_shaped(p) => (
                    Some(TileConfig::Broadcast { wg, tm, tn }),
                    "barrier-free kernel; shape not vec4-readable".into(),
                    None,
                ),
                TileConfig::Vec4 { .. } => (
                    Some(pick),
                    if profile.texel_reads {
                        "barrier-free kernel; texel kernel cannot take this shape".into()
                    } else {
                        "barrier-free vec4 kernel".into()
                    },
                    None,
                ),
                _ => (Some(pick), "device default".into(), None),
            })
        }
    }
}

/// The rows and columns of C one workgroup of `c` covers (the vec4 kernel
/// with B transposed reads columns one at a time).
fn block(c: TileConfig, p: &Problem) -> (u32, u32) {
    match c {
        TileConfig::Vec4 { wg, tm, tn } if p.trans_b => (tm, wg * tn),
        c => c.tile(),
    }
}

/// Resolves a call into a plan: the device profile and the problem are all
/// it reads. `variant` is the call's, or the autotuner's pick.
pub(super) fn plan_for(
    op: &'static str,
    profile: &DeviceProfile,
    p: &Problem,
    variant: MatmulVariant,
) -> Result<MatmulPlan> {
    let (config, reason, texels) = choose(op, profile, p, variant)?;
    let (kernel, (gx, gy)) = match config {
        None => (MatmulKernel::Naive, (p.n.div_ceil(8), p.m.div_ceil(8))),
        Some(c) => {
            let (bm, bn) = block(c, p);
            let (cols, rows) = (p.n.div_ceil(bn as usize), p.m.div_ceil(bm as usize));
            let kernel = match c {
                TileConfig::Broadcast { wg, tm, tn } => MatmulKernel::Broadcast { wg, tm, tn },
                TileConfig::Vec4 { wg, tm, tn } => MatmulKernel::Vec4 { wg, tm, tn },
                TileConfig::Texel { wg, tm, tn } => {
                    let grid = texels.ok_or_else(|| Error::Unsupported {
                        op,
                        detail: "texel kernel without a texture layout".into(),
                    })?;
                    MatmulKernel::Texel {
                        wg,
                        tm,
                        // The kernel counts vec4 column groups unless B is transposed.
                        tn: if p.trans_b { tn } else { tn / 4 },
                        wsh: grid.wsh,
                        lsh: grid.lsh,
                        sg: profile.subgroups_of_8,
                    }
                }
                TileConfig::Shared { wx, wy, tm, bk } => MatmulKernel::Shared { wx, wy, tm, bk },
            };
            // The vec4 kernels put row tiles on x.
            let grid = match kernel {
                MatmulKernel::Vec4 { .. } | MatmulKernel::Texel { .. } => (rows, cols),
                _ => (cols, rows),
            };
            (kernel, grid)
        }
    };
    let aligned = match config {
        None => false,
        Some(c) => {
            let (bm, bn) = block(c, p);
            p.m.is_multiple_of(bm as usize)
                && p.n.is_multiple_of(bn as usize)
                && !matches!(c, TileConfig::Shared { bk, .. } if !p.k.is_multiple_of(bk as usize))
        }
    };
    let nbatch = p.offsets.len() / 2;
    for (what, g) in [("column tiles", gx), ("row tiles", gy), ("batches", nbatch)] {
        profile.check_groups(op, &format!("workgroups over {what}"), g)?;
    }
    Ok(MatmulPlan {
        kernel: config.map_or(MatmulVariant::Naive, MatmulVariant::Tiled),
        reason,
        groups: (gx as u32, gy as u32, nbatch as u32),
        spec: MatmulSpec {
            kernel,
            dtype: p.dtype,
            out_f16: p.out_dtype == DType::F16,
            trans_a: p.trans_a,
            trans_b: p.trans_b,
            bias: p.bias,
            act: p.act,
            aligned,
        },
        texels,
    })
}

/// Every spec the planner can produce on any device profile (for the WGSL
/// validation test): each kernel and tile configuration with every flag
/// the planner sets, both storage types and both output types.
#[cfg(test)]
pub(crate) fn reachable() -> Vec<MatmulSpec> {
    let mut kernels = vec![MatmulKernel::Naive];
    for c in TileConfig::CANDIDATES
        .into_iter()
        .chain([TileConfig::Broadcast {
            wg: 32,
            tm: 4,
            tn: 1,
        }])
    {
        match c {
            TileConfig::Broadcast { wg, tm, tn } => {
                kernels.push(MatmulKernel::Broadcast { wg, tm, tn })
            }
            TileConfig::Vec4 { wg, tm, tn } => {
                kernels.push(MatmulKernel::Vec4 { wg, tm, tn });
                // Auto's fallback when the shape is not vec4-readable.
                kernels.push(MatmulKernel::Broadcast { wg, tm, tn });
            }
            TileConfig::Texel { wg, tm, tn } => {
                for sg in [false, true] {
                    for tn in [tn, tn / 4] {
                        // Layouts: 1024-texel lines and layers, and a small
                        // adapter's 32-texel ones.
                        for (wsh, lsh) in [(10, 10), (5, 5)] {
                            kernels.push(MatmulKernel::Texel {
                                wg,
                                tm,
                                tn,
                                wsh,
                                lsh,
                                sg,
                            });
                        }
                    }
                }
            }
            TileConfig::Shared { wx, wy, tm, bk } => {
                kernels.push(MatmulKernel::Shared { wx, wy, tm, bk })
            }
        }
    }
    let mut v = Vec::new();
    for kernel in kernels {
        for dtype in [DType::F32, DType::F16] {
            for out_f16 in [false, true] {
                for (trans_a, trans_b) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    // The texel and vec4 kernels never read A transposed, and
                    // the texel kernel's tn counts vec4 groups unless B is.
                    match kernel {
                        MatmulKernel::Texel { .. } | MatmulKernel::Vec4 { .. } if trans_a => {
                            continue
                        }
                        MatmulKernel::Texel { tn, .. } if (tn == 8) != trans_b => continue,
                        _ => {}
                    }
                    for bias in [false, true] {
                        for act in Activation::ALL {
                            for aligned in [false, true] {
                                if aligned && kernel == MatmulKernel::Naive {
                                    continue;
                                }
                                v.push(MatmulSpec {
                                    kernel,
                                    dtype,
                                    out_f16,
                                    trans_a,
                                    trans_b,
                                    bias,
                                    act,
                                    aligned,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    v
}
