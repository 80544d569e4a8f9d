//! The host codec (FAISS's `IndexFlatCodes` codes): how an f32 vector becomes
//! a stored row — f32, IEEE half, or int8 with a per-row scale — and back,
//! the squared norms an L2 index stores beside its rows, and the row and
//! texel sizes the store lays rows out by. Host only: the device encoder
//! (`pack` in `topk.wgsl`) mirrors [`Codec::encode`].

use crate::ops::similarity::Metric;

/// How the index stores vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Storage {
    /// 4 bytes per value, exact.
    #[default]
    F32,
    /// 2 bytes per value (IEEE half; read as packed words, so any adapter).
    F16,
    /// 1 byte per value with a per-row symmetric scale (`max |x| / 127`); the dot
    /// product is computed in f32 against the unquantised query and rescaled.
    Int8,
}

impl Storage {
    /// Bytes of one stored value.
    pub(crate) fn bytes_per_value(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
            Storage::Int8 => 1,
        }
    }

    /// Texel format of the corpus textures (unsigned words, bit-cast in the
    /// shader: unfilterable, so any adapter binds them) and bytes per texel.
    pub(crate) fn texel(self) -> (wgpu::TextureFormat, usize) {
        match self {
            Storage::F32 | Storage::F16 => (wgpu::TextureFormat::Rgba32Uint, 16),
            Storage::Int8 => (wgpu::TextureFormat::Rg32Uint, 8),
        }
    }

    /// The largest dim whose stored row fits one texture line of
    /// `max_texture_2d` texels (whole groups of 8 values).
    pub(crate) fn max_dim(self, max_texture_2d: u32) -> usize {
        max_texture_2d as usize * self.texel().1 / self.bytes_per_value() / 8 * 8
    }
}

/// Values of a row of `dim` as stored: whole groups of 8 (zero padded).
pub(crate) fn padded(dim: usize) -> usize {
    dim.div_ceil(8) * 8
}

/// `x` scaled to unit length in f64 (a zero vector stays zero).
pub(crate) fn normalized(x: &[f32]) -> Vec<f32> {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let inv = if ss > 0.0 { 1.0 / ss.sqrt() } else { 0.0 };
    x.iter().map(|&v| (v as f64 * inv) as f32).collect()
}

/// A squared norm in f64, rounded once to f32.
pub(crate) fn stored_norm(x: &[f32]) -> f32 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() as f32
}

/// Rows encoded for the store: `row_bytes` bytes each, then (int8) one scale
/// and (L2) one squared norm of the stored row per row.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub scales: Vec<f32>,
    pub norms: Vec<f32>,
}

/// How rows of `dim` values are stored for `metric`: cosine rows are
/// normalised before encoding, L2 rows keep their stored squared norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Codec {
    pub dim: usize,
    pub storage: Storage,
    pub metric: Metric,
}

impl Codec {
    /// Values per stored row (padded to whole groups of 8).
    pub fn padded(&self) -> usize {
        padded(self.dim)
    }

    /// Bytes of a stored row (padded to whole texels).
    pub fn row_bytes(&self) -> usize {
        self.padded() * self.storage.bytes_per_value()
    }

    /// Texels per stored row.
    pub fn row_texels(&self) -> usize {
        self.row_bytes() / self.storage.texel().1
    }

    /// Whether rows carry a scale (int8).
    pub fn scaled(&self) -> bool {
        self.storage == Storage::Int8
    }

    /// Whether rows carry their squared norm (L2).
    pub fn l2(&self) -> bool {
        self.metric == Metric::L2
    }

    /// Appends `row` (`dim` values) to `out`, encoded: normalised first for
    /// cosine; for L2, the squared norm of the row as stored (dequantised),
    /// so that distances are exact for the vectors the index holds.
    pub fn encode(&self, row: &[f32], out: &mut Encoded) {
        let row = if self.metric == Metric::Cosine {
            normalized(row)
        } else {
            row.to_vec()
        };
        let at = out.bytes.len();
        self.encode_values(&row, &mut out.bytes, &mut out.scales);
        if self.l2() {
            let stored = self.decode(&out.bytes[at..], out.scales.last().copied().unwrap_or(1.0));
            out.norms.push(stored_norm(&stored));
        }
    }

    /// Appends a row already stored (`row_bytes` bytes and its scale, as a
    /// saved index holds it) to `out`, with its squared norm for L2.
    pub fn push_stored(&self, bytes: &[u8], scale: Option<f32>, out: &mut Encoded) {
        out.bytes.extend_from_slice(bytes);
        if let Some(s) = scale {
            out.scales.push(s);
        }
        if self.l2() {
            let stored = self.decode(bytes, scale.unwrap_or(1.0));
            out.norms.push(stored_norm(&stored));
        }
    }

    /// A stored row's bytes (and int8 scale) as f32 values, `dim` of them.
    pub fn decode(&self, bytes: &[u8], scale: f32) -> Vec<f32> {
        let d = self.dim;
        match self.storage {
            Storage::F32 => bytes
                .chunks_exact(4)
                .take(d)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Storage::F16 => bytes
                .chunks_exact(2)
                .take(d)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Storage::Int8 => bytes
                .iter()
                .take(d)
                .map(|&b| (b as i8) as f32 / 127.0 * scale)
                .collect(),
        }
    }

    /// Host queries (`[m, dim]`) as the scan reads them: normalised for
    /// cosine, each padded to [`padded`](Self::padded) values; and each
    /// query's squared norm (which L2 distances add back).
    pub fn queries(&self, queries: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let dp = self.padded();
        let m = queries.len() / self.dim;
        let (mut rows, mut norms) = (Vec::with_capacity(m * dp), Vec::with_capacity(m));
        for q in queries.chunks_exact(self.dim) {
            let q = if self.metric == Metric::Cosine {
                normalized(q)
            } else {
                q.to_vec()
            };
            norms.push(stored_norm(&q));
            rows.extend_from_slice(&q);
            rows.extend(std::iter::repeat_n(0.0, dp - self.dim));
        }
        (rows, norms)
    }

    fn encode_values(&self, row: &[f32], host: &mut Vec<u8>, scales: &mut Vec<f32>) {
        let dp = self.padded();
        match self.storage {
            Storage::F32 => {
                for j in 0..dp {
                    host.extend_from_slice(&row.get(j).copied().unwrap_or(0.0).to_le_bytes());
                }
            }
            Storage::F16 => {
                for j in 0..dp {
                    let h = half::f16::from_f32(row.get(j).copied().unwrap_or(0.0));
                    host.extend_from_slice(&h.to_le_bytes());
                }
            }
            Storage::Int8 => {
                let amax = row.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                let s = if amax > 0.0 && amax.is_finite() {
                    amax / 127.0
                } else {
                    1.0
                };
                for j in 0..dp {
                    let v = row.get(j).copied().unwrap_or(0.0);
                    host.push(((v / s).round().clamp(-127.0, 127.0) as i8) as u8);
                }
                // The kernel's unpack4x8snorm yields q / 127.
                scales.push(if amax.is_finite() {
                    s * 127.0
                } else {
                    f32::NAN
                });
            }
        }
    }
}
