//! Real models on flashdot's kernels (feature `models`, on by default).
//!
//! [`SentenceEncoder`] loads a sentence-transformers BERT-family checkpoint
//! (all-MiniLM-L6-v2 and its kin: `config.json`, `model.safetensors`,
//! `tokenizer.json`, `sentence_bert_config.json`, `1_Pooling/config.json`)
//! and embeds sentences on the device: embeddings, every transformer layer,
//! masked mean pooling and L2 normalisation, recorded into one submission.
//! `scripts/fetch-model.sh` fetches all-MiniLM-L6-v2 into
//! `models/all-MiniLM-L6-v2`.
//!
//! [`Gpt2`] is a GPT-2-architecture causal language model under Hugging
//! Face's GPT-2 tensor names (`config.json`, `model.safetensors`): loaded,
//! saved, or drawn with GPT-2's seeded init, and its forward (token ids to
//! logits) on the device; [`Gpt2Trainer`] trains it (forward, backward
//! and AdamW, one submission a step), and [`CharVocab`] is the tokenizer of
//! a character model trained that way.

mod bert;
mod chars;
mod files;
mod gpt2;

pub use bert::{Batch, BertConfig, EncoderDims, SentenceEncoder};
pub use chars::CharVocab;
pub use gpt2::{
    CacheLayout, Gpt2, Gpt2Activations, Gpt2Cache, Gpt2Config, Gpt2Trainer, NamedTensor,
};

use std::path::{Path, PathBuf};

/// Where the model tests, examples and benches look for all-MiniLM-L6-v2:
/// `FLASHDOT_MODEL_DIR`, else `models/all-MiniLM-L6-v2` under the crate.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("FLASHDOT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"))
}
