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
