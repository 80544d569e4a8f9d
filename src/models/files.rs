//! Reading a checkpoint's files: every failure is an [`Error::Model`] that
//! names the file (and, for a missing one, how to fetch the model).

use std::path::Path;

use crate::error::{Error, Result};

/// A model-file error: which file, and what is wrong with it.
pub(crate) fn model_error(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::Model {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Reads a file, or says which one is missing and how to get it.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        model_error(
            path,
            format!("{e} (fetch all-MiniLM-L6-v2 with `bash scripts/fetch-model.sh`, or point FLASHDOT_MODEL_DIR at a checkpoint)"),
        )
    })
}

/// Reads and parses a JSON file.
pub(crate) fn json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read(path)?).map_err(|e| model_error(path, e))
}

/// Tensor `name` of the safetensors file `st` (parsed from `path`), found
/// under its own name or under the first of `prefixes` that holds it (a
/// checkpoint saved from a task model prefixes its backbone: `bert.`,
/// `transformer.`), checked to be f32 of `shape`, as host f32 row-major.
///
/// Errors: [`Error::Model`] naming the file and the tensor's full name if it
/// is missing, not f32, or not of `shape` (both shapes in the message).
pub(crate) fn f32_tensor(
    st: &safetensors::SafeTensors<'_>,
    path: &Path,
    name: &str,
    prefixes: &[&str],
    shape: &[usize],
) -> Result<Vec<f32>> {
    let t = std::iter::once(String::new())
        .chain(prefixes.iter().map(|p| p.to_string()))
        .find_map(|p| st.tensor(&format!("{p}{name}")).ok())
        .ok_or_else(|| model_error(path, format!("no tensor {name}")))?;
    // The shape is checked before anything is sized from it.
    if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
        return Err(model_error(
            path,
            format!(
                "{name} is {:?} {:?}, expected F32 {shape:?} (from config.json)",
                t.dtype(),
                t.shape()
            ),
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
