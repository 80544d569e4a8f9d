//! Real models on flashdot's kernels (feature `models`, on by default).
//!
//! [`SentenceEncoder`] loads a sentence-transformers BERT-family checkpoint
//! (all-MiniLM-L6-v2 and its kin: `config.json`, `model.safetensors`,
//! `tokenizer.json`, `sentence_bert_config.json`, `1_Pooling/config.json`)
//! and embeds sentences on the device: embeddings, every transformer layer,
//! masked mean pooling and L2 normalisation, recorded into one submission.
//! `scripts/fetch-model.sh` fetches all-MiniLM-L6-v2 into
//! `models/all-MiniLM-L6-v2`.

mod bert;

pub use bert::{Batch, BertConfig, SentenceEncoder};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the model tests, examples and benches look for all-MiniLM-L6-v2:
/// `FLASHDOT_MODEL_DIR`, else `models/all-MiniLM-L6-v2` under the crate.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("FLASHDOT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"))
}

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

/// Runs a call into the `tokenizers` crate, turning a panic into a model
/// error naming `path`: some malformed `tokenizer.json` files panic inside
/// it rather than returning an error (in its decoder deserialisation, and
/// in encoding with special tokens missing from the vocabulary), found by
/// the model-file fuzz test.
pub(crate) fn guard_tokenizer<T>(
    path: &Path,
    f: impl FnOnce() -> std::result::Result<T, tokenizers::Error>,
) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| model_error(path, e)),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(model_error(
                path,
                format!("the tokenizer failed (tokenizers panicked: {msg})"),
            ))
        }
    }
}
