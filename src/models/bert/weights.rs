//! The checkpoint's tensors (`model.safetensors`) as a weight source each
//! part of the encoder loads its own tensors from, by name under its prefix
//! (candle-transformers' `VarBuilder` pattern): `w.pp("encoder.layer").pp(0)`
//! then `.get("attention.self.query.weight", &[h, h])`.

use std::fmt::Display;
use std::path::Path;

use crate::error::Result;
use crate::models::files::{f32_tensor, model_error};
use crate::{Context, DType, Tensor};

/// The tensors of one safetensors file, uploaded on request to a context in
/// one dtype (f32, or f16 converted on upload; the file holds f32).
pub(super) struct Weights<'a> {
    st: safetensors::SafeTensors<'a>,
    /// The file, for errors.
    path: &'a Path,
    ctx: &'a Context,
    dtype: DType,
}

impl<'a> Weights<'a> {
    /// Parses the header of `bytes`, the contents of `path`; tensors will be
    /// uploaded in `dtype` (f32 or f16, which the caller has checked).
    ///
    /// Errors: [`Error::Model`](crate::Error::Model) naming `path` for a
    /// file that is not safetensors (truncated, a header past its end).
    pub fn parse(ctx: &'a Context, path: &'a Path, bytes: &'a [u8], dtype: DType) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| model_error(path, e))?;
        Ok(Weights {
            st,
            path,
            ctx,
            dtype,
        })
    }

    /// The source at the file's root.
    pub fn root(&self) -> Prefix<'_> {
        Prefix {
            weights: self,
            prefix: String::new(),
        }
    }
}

/// A [`Weights`] source scoped to a name prefix: what one part of the
/// encoder loads its tensors through.
pub(super) struct Prefix<'a> {
    weights: &'a Weights<'a>,
    /// Empty at the root, else ending in `.`.
    prefix: String,
}

impl Prefix<'_> {
    /// The source under `name` (`"encoder.layer"`, a layer index).
    pub fn pp(&self, name: impl Display) -> Self {
        Prefix {
            weights: self.weights,
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// The whole source's file, for errors about what it holds.
    pub fn path(&self) -> &Path {
        self.weights.path
    }

    /// Tensors in the whole file.
    pub fn tensors(&self) -> usize {
        self.weights.st.len()
    }

    /// Tensor `name` under this prefix, checked to be f32 of `shape`,
    /// uploaded in the source's dtype. Checkpoints saved from `BertModel`
    /// name tensors without a prefix, those saved from a task model with
    /// `bert.`: both are found.
    ///
    /// Errors: [`Error::Model`](crate::Error::Model) naming the file and the
    /// tensor's full name if it is missing, not f32 or not of `shape`; GPU
    /// errors from the upload.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let w = self.weights;
        let full = format!("{}{name}", self.prefix);
        let v = f32_tensor(&w.st, w.path, &full, &["bert."], shape)?;
        if w.dtype == DType::F16 {
            let h: Vec<half::f16> = v.into_iter().map(half::f16::from_f32).collect();
            Tensor::from_slice(w.ctx, &h, shape)
        } else {
            Tensor::from_slice(w.ctx, &v, shape)
        }
    }
}
