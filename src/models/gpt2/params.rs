//! The model's parameters and where they come from. Each part of the model
//! asks a [`Prefix`] for its tensors by name (candle-transformers'
//! `VarBuilder` pattern), so that every Hugging Face name is written once,
//! next to the code that uses it, and the same calls serve both sources: a
//! safetensors file (checked against the config's shape) or a seeded random
//! init (GPT-2's: the init each call names). A [`Param`] keeps its name and
//! file layout, so that saving and exporting walk the parameters without a
//! second list of names.
//!
//! Layouts: Hugging Face's GPT-2 stores its projections as `Conv1D`,
//! `weight [in, out]`; on the device they are `[out, in]`, what
//! [`linear`](crate::ops::matmul::linear) and the linear backward take,
//! transposed on load and back on save and export. Every other tensor keeps
//! the file's layout.

use std::cell::RefCell;
use std::fmt::Display;
use std::path::Path;

use crate::error::{Error, Limit, Result};
use crate::models::files::f32_tensor;
use crate::{Context, Tensor};

/// A parameter with its Hugging Face name and layout, as host f32 (what
/// [`Gpt2::tensors`](super::Gpt2::tensors) exports and
/// [`Gpt2::save`](super::Gpt2::save) writes).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The checkpoint's name, e.g. `h.0.attn.c_attn.weight`.
    pub name: String,
    /// Its shape in the checkpoint (`Conv1D` weights `[in, out]`).
    pub shape: Vec<usize>,
    /// Row-major values in that shape.
    pub data: Vec<f32>,
}

/// One parameter on the device (f32).
#[derive(Debug)]
pub(super) struct Param {
    /// The checkpoint's name.
    pub name: String,
    /// On the device: the file's layout, or `[out, in]` for a `Conv1D`
    /// weight.
    pub tensor: Tensor,
    /// Stored transposed relative to the file (`Conv1D` weights).
    conv1d: bool,
}

impl Param {
    /// The parameter as the checkpoint holds it (read back, and a `Conv1D`
    /// weight transposed back to `[in, out]`).
    ///
    /// Errors: readback errors.
    pub fn to_host(&self) -> Result<NamedTensor> {
        self.host_of(&self.tensor)
    }

    /// `t`, a tensor of this parameter's device shape (its gradient), read
    /// back in the parameter's name and checkpoint layout.
    ///
    /// Errors: readback errors.
    pub fn host_of(&self, t: &Tensor) -> Result<NamedTensor> {
        let data = t.to_vec::<f32>()?;
        let s = t.shape();
        let (shape, data) = match self.conv1d {
            true => (vec![s[1], s[0]], transpose(&data, s[0], s[1])),
            false => (s.to_vec(), data),
        };
        Ok(NamedTensor {
            name: self.name.clone(),
            shape,
            data,
        })
    }
}

/// `[rows, cols]` row-major into `[cols, rows]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// How a random init fills a tensor (ignored when loading a file).
#[derive(Debug, Clone, Copy)]
pub(super) enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    Zeros,
    Ones,
}

/// SplitMix64 (Steele, Lea & Flood 2014): a seeded stream for the init,
/// the same values on every platform.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal (Box–Muller, the cosine branch).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Where the parameters come from.
enum Origin<'a> {
    /// A parsed safetensors file, with its path for errors.
    File {
        st: safetensors::SafeTensors<'a>,
        path: &'a Path,
    },
    /// A seeded random init, drawn in the order the parts ask for tensors.
    Random(RefCell<SplitMix>),
}

/// The parameters' source on a context.
pub(super) struct Source<'a> {
    origin: Origin<'a>,
    ctx: &'a Context,
}

impl<'a> Source<'a> {
    /// The tensors of `bytes`, the contents of the safetensors file `path`.
    ///
    /// Errors: [`Error::Model`] naming `path` for a file that is not
    /// safetensors (truncated, a header past its end).
    pub fn file(ctx: &'a Context, path: &'a Path, bytes: &'a [u8]) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| crate::models::files::model_error(path, e))?;
        Ok(Source {
            origin: Origin::File { st, path },
            ctx,
        })
    }

    /// A random init from `seed`.
    pub fn random(ctx: &'a Context, seed: u64) -> Self {
        Source {
            origin: Origin::Random(RefCell::new(SplitMix(seed))),
            ctx,
        }
    }

    /// The source at the root of the names.
    pub fn root(&self) -> Prefix<'_> {
        Prefix {
            source: self,
            prefix: String::new(),
        }
    }

    /// Tensor `name` of `shape` (the file's layout) as host f32: read and
    /// checked from the file (also found under `transformer.`, as
    /// `GPT2LMHeadModel` saves it), or drawn by `init`.
    fn host(&self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        match &self.origin {
            Origin::File { st, path } => f32_tensor(st, path, name, &["transformer."], shape),
            Origin::Random(rng) => {
                // Refused before the host vector is sized from the config.
                let limit = self.ctx.profile().max_buffer;
                let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
                let bytes = n
                    .and_then(|n| n.checked_mul(4))
                    .map_or(u64::MAX, |b| b as u64);
                if bytes > limit {
                    return Err(Error::TooLarge {
                        op: "Gpt2::random",
                        what: format!("parameter {name} {shape:?} f32"),
                        size: bytes,
                        limit,
                        kind: Limit::BufferSize,
                    });
                }
                let n = n.unwrap_or(0);
                let mut rng = rng.borrow_mut();
                Ok(match init {
                    Init::Normal(std) => (0..n).map(|_| (std * rng.normal()) as f32).collect(),
                    Init::Zeros => vec![0.0; n],
                    Init::Ones => vec![1.0; n],
                })
            }
        }
    }
}

/// A [`Source`] scoped to a name prefix: what one part of the model loads
/// its tensors through.
pub(super) struct Prefix<'a> {
    source: &'a Source<'a>,
    /// Empty at the root, else ending in `.`.
    prefix: String,
}

impl Prefix<'_> {
    /// The source under `name` (`"h"`, a block index, `"attn"`).
    pub fn pp(&self, name: impl Display) -> Self {
        Prefix {
            source: self.source,
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// Tensor `name` under this prefix, of `shape` in the file and on the
    /// device.
    ///
    /// Errors: [`Error::Model`] naming the file and the tensor's full name
    /// if it is missing, not f32 or not of `shape`; [`Error::TooLarge`] for
    /// a random tensor past one buffer; GPU errors from the upload.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Param> {
        let full = format!("{}{name}", self.prefix);
        let data = self.source.host(&full, shape, init)?;
        Ok(Param {
            tensor: Tensor::from_slice(self.source.ctx, &data, shape)?,
            name: full,
            conv1d: false,
        })
    }

    /// A `Conv1D` weight `name`, `[inp, out]` in the file, uploaded
    /// transposed to `[out, inp]`.
    ///
    /// Errors: as [`get`](Prefix::get).
    pub fn conv1d(&self, name: &str, inp: usize, out: usize, init: Init) -> Result<Param> {
        let full = format!("{}{name}", self.prefix);
        let data = transpose(&self.source.host(&full, &[inp, out], init)?, inp, out);
        Ok(Param {
            tensor: Tensor::from_slice(self.source.ctx, &data, &[out, inp])?,
            name: full,
            conv1d: true,
        })
    }
}
