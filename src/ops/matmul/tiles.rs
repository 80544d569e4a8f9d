//! Tile configurations of the tiled matmul kernels: what each computes, what
//! it needs of the device, and the device-policy picks (heuristic, autotune
//! shortlist).

use std::fmt;

use crate::context::DeviceProfile;

/// How a tiled kernel is organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TileConfig {
    /// No workgroup memory, no barriers: a workgroup of `wg` invocations owns `tm`
    /// rows (read as uniform broadcasts) and `wg·tn` columns (coalesced); each
    /// invocation keeps `tm·tn` accumulators in registers.
    Broadcast {
        /// Invocations per workgroup.
        wg: u32,
        /// Rows per workgroup (and per invocation).
        tm: u32,
        /// Columns per invocation, strided by `wg`.
        tn: u32,
    },
    /// Like `Broadcast`, with vec4 loads: A along K, B along N (or along K when B
    /// is transposed). Serves `k % 4 == 0` (and `n % 4 == 0` unless B is
    /// transposed) with A not transposed; forced on other shapes it is
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    Vec4 {
        /// Invocations per workgroup.
        wg: u32,
        /// Rows per workgroup.
        tm: u32,
        /// Column groups per invocation: vec4 groups (B [K, N]) or single
        /// columns (B transposed).
        tn: u32,
    },
    /// The `Vec4` scheme with A and B first copied into 2-D array textures and
    /// read by texel fetches (for devices whose profile prefers texel reads);
    /// with subgroups of 8 or more lanes each row of A is fetched once per 8
    /// invocations and shared by subgroup broadcast. Costs a device copy of A
    /// and B for the call. Serves A not transposed, `k % 4 == 0`, `n % 4 == 0`
    /// unless B is transposed, and textures within the adapter's limits;
    /// forced on other shapes it is [`Error::Unsupported`](crate::Error::Unsupported).
    Texel {
        /// Invocations per workgroup (at least 8).
        wg: u32,
        /// Rows per workgroup.
        tm: u32,
        /// Columns per invocation (a multiple of 4), strided by `wg` (in
        /// groups of 4 adjacent columns when B is not transposed).
        tn: u32,
    },
    /// A and B tiles staged in workgroup memory per `bk`-slice of K; a `wx × wy`
    /// workgroup computes a `(wy·tm) × (wx·4)` tile, each invocation `tm` rows ×
    /// 4 columns in vec4 registers.
    Shared {
        /// Workgroup width.
        wx: u32,
        /// Workgroup height.
        wy: u32,
        /// Rows per invocation.
        tm: u32,
        /// K-slice staged per step.
        bk: u32,
    },
}

/// The texel kernel's configuration: 32 × 8 outputs an invocation, the most
/// accumulators that still compile in about 2 s on a software adapter.
pub(super) const TEXEL: TileConfig = TileConfig::Texel {
    wg: 8,
    tm: 32,
    tn: 8,
};

impl TileConfig {
    /// The configurations the autotuner tries (filtered by the adapter's limits).
    pub const CANDIDATES: [TileConfig; 7] = [
        TEXEL,
        TileConfig::Vec4 {
            wg: 8,
            tm: 24,
            tn: 2,
        },
        TileConfig::Vec4 {
            wg: 16,
            tm: 16,
            tn: 2,
        },
        TileConfig::Vec4 {
            wg: 64,
            tm: 8,
            tn: 1,
        },
        TileConfig::Broadcast {
            wg: 64,
            tm: 8,
            tn: 4,
        },
        TileConfig::Shared {
            wx: 16,
            wy: 16,
            tm: 4,
            bk: 16,
        },
        TileConfig::Shared {
            wx: 16,
            wy: 8,
            tm: 8,
            bk: 16,
        },
    ];

    /// The shortlist the autotuner times on this device: the fitting
    /// candidates of the kernel kinds that suit its profile (barrier-free
    /// vec4 kernels where texel reads are preferred, shared-memory tiles and
    /// the vec4 kernel elsewhere). Every candidate is a pipeline build, which
    /// takes seconds on a software adapter: pruning keeps a first call short.
    pub fn candidates(profile: &DeviceProfile) -> Vec<TileConfig> {
        let cpu = profile.texel_reads;
        TileConfig::CANDIDATES
            .iter()
            .copied()
            .filter(|c| c.fits(profile))
            .filter(|c| match c {
                TileConfig::Vec4 { wg, .. } => !cpu || *wg <= 16,
                TileConfig::Texel { .. } => cpu,
                TileConfig::Broadcast { .. } => false,
                TileConfig::Shared { .. } => !cpu,
            })
            .collect()
    }

    /// Rows and columns of C one workgroup computes.
    pub fn tile(self) -> (u32, u32) {
        match self {
            TileConfig::Broadcast { wg, tm, tn } => (tm, wg * tn),
            TileConfig::Vec4 { wg, tm, tn } => (tm, wg * tn * 4),
            TileConfig::Texel { wg, tm, tn } => (tm, wg * tn),
            TileConfig::Shared { wx, wy, tm, .. } => (wy * tm, wx * 4),
        }
    }

    fn workgroup_bytes(self) -> u32 {
        match self {
            TileConfig::Broadcast { .. } | TileConfig::Vec4 { .. } | TileConfig::Texel { .. } => 0,
            TileConfig::Shared { bk, .. } => {
                let (bm, bn) = self.tile();
                4 * bk * (bm + bn)
            }
        }
    }

    /// Why this configuration is not a configuration at all (a field of 0,
    /// or past the sizes the kernels unroll), if it is not.
    pub(super) fn invalid(self) -> Option<String> {
        let fields: &[(&str, u32, u32)] = match self {
            TileConfig::Broadcast { wg, tm, tn }
            | TileConfig::Vec4 { wg, tm, tn }
            | TileConfig::Texel { wg, tm, tn } => {
                &[("wg", wg, 1024), ("tm", tm, 64), ("tn", tn, 64)]
            }
            TileConfig::Shared { wx, wy, tm, bk } => &[
                ("wx", wx, 1024),
                ("wy", wy, 1024),
                ("tm", tm, 64),
                ("bk", bk, 64),
            ],
        };
        fields
            .iter()
            .find(|&&(_, v, max)| v == 0 || v > max)
            .map(|&(name, v, max)| format!("{self}: {name} = {v}, expected 1..={max}"))
    }

    /// Why this configuration cannot run on `profile` at all, if it cannot.
    pub(super) fn misfit(self, profile: &DeviceProfile) -> Option<String> {
        if let Some(why) = self.invalid() {
            return Some(why);
        }
        let (wx, wy) = match self {
            TileConfig::Broadcast { wg, .. }
            | TileConfig::Vec4 { wg, .. }
            | TileConfig::Texel { wg, .. } => (wg, 1),
            TileConfig::Shared { wx, wy, .. } => (wx, wy),
        };
        if let TileConfig::Texel { wg, tn, .. } = self {
            if wg < 8 || !tn.is_multiple_of(4) {
                return Some(format!(
                    "{self}: the texel kernel needs wg ≥ 8 and tn a multiple of 4"
                ));
            }
        }
        if !profile.fits_workgroup(wx, wy) {
            return Some(format!(
                "{self}: a {wx}×{wy} workgroup exceeds the adapter's limits ({} invocations, {:?})",
                profile.max_invocations, profile.max_workgroup_size
            ));
        }
        if self.workgroup_bytes() > profile.workgroup_memory {
            return Some(format!(
                "{self}: needs {} bytes of workgroup memory, the adapter has {}",
                self.workgroup_bytes(),
                profile.workgroup_memory
            ));
        }
        None
    }

    /// Whether the adapter's limits allow this configuration.
    pub fn fits(self, profile: &DeviceProfile) -> bool {
        self.misfit(profile).is_none()
    }

    /// The configuration chosen without timing, from the device profile:
    /// the texel kernel where the profile prefers texel reads, else
    /// [`TileConfig::buffer_heuristic`]. (Shapes the texel kernel does not
    /// take run the buffer pick: see [`plan`](super::plan).)
    pub fn heuristic(profile: &DeviceProfile) -> TileConfig {
        if profile.texel_reads && TEXEL.fits(profile) {
            TEXEL
        } else {
            TileConfig::buffer_heuristic(profile)
        }
    }

    /// The pick among the kernels that read storage buffers: the barrier-free
    /// vec4 broadcast kernel where the profile prefers barrier-free kernels,
    /// shared-memory tiling elsewhere.
    pub fn buffer_heuristic(profile: &DeviceProfile) -> TileConfig {
        let pick = if profile.texel_reads {
            // 8 invocations keep each workgroup's strip of B at 64 columns,
            // which stays in a core's L2 at K = 2048.
            TileConfig::Vec4 {
                wg: 8,
                tm: 24,
                tn: 2,
            }
        } else {
            TileConfig::Shared {
                wx: 16,
                wy: 16,
                tm: 4,
                bk: 16,
            }
        };
        if pick.fits(profile) {
            pick
        } else {
            TileConfig::Broadcast {
                wg: 32,
                tm: 4,
                tn: 1,
            }
        }
    }
}

impl fmt::Display for TileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TileConfig::Broadcast { wg, tm, tn } => write!(f, "broadcast wg{wg} {tm}x{tn}"),
            TileConfig::Vec4 { wg, tm, tn } => write!(f, "vec4 wg{wg} {tm}x{tn}"),
            TileConfig::Texel { wg, tm, tn } => write!(f, "texel wg{wg} {tm}x{tn}"),
            TileConfig::Shared { wx, wy, tm, bk } => {
                write!(f, "shared {wx}x{wy} tm{tm} bk{bk}")
            }
        }
    }
}
