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
mod files;

pub use bert::{Batch, BertConfig, EncoderDims, SentenceEncoder};

use std::path::{Path, PathBuf};

/// Where the model tests, examples and benches look for all-MiniLM-L6-v2:
/// `FLASHDOT_MODEL_DIR`, else `models/all-MiniLM-L6-v2` under the crate.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("FLASHDOT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"))
}
