//! The checkpoint's WordPiece tokenizer (`tokenizer.json`, through the
//! `tokenizers` crate) set up as sentence-transformers runs it, and the
//! padded [`Batch`] of token ids it produces.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::models::files::{model_error, read};

/// A tokenised batch: `ids` is `[batch, seq]` row-major, each sentence's
/// tokens (`[CLS] … [SEP]`) followed by padding (id 0) up to `seq`, the
/// longest sentence's length; `lengths` counts each sentence's real tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Token ids, `[batch, seq]`.
    pub ids: Vec<u32>,
    /// Real tokens per sentence.
    pub lengths: Vec<u32>,
    /// Padded length.
    pub seq: usize,
}

impl Batch {
    /// Sentences in the batch.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }
    /// Whether the batch has no sentences.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}

/// Runs a call into the `tokenizers` crate, turning a panic into a model
/// error naming `path`: some malformed `tokenizer.json` files panic inside
/// it rather than returning an error (in its decoder deserialisation, and
/// in encoding with special tokens missing from the vocabulary), found by
/// the model-file fuzz test.
fn guard<T>(
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

/// A checkpoint's tokenizer: truncating to the encoder's longest sequence,
/// never padding (the batch is padded here, to its longest sentence).
#[derive(Debug)]
pub(super) struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer.json`, for errors.
    path: PathBuf,
    lower_case: bool,
}

impl Tokenizer {
    /// Loads `path` (a `tokenizer.json`), truncating to `max_length` tokens.
    ///
    /// Errors: [`Error::Model`](crate::Error::Model) naming the file for one
    /// missing or malformed, one that fails to encode a test sentence (a
    /// special token missing from its vocabulary), or one with more tokens
    /// than `vocab_size` (the rows of the embedding table, which the device
    /// indexes unchecked).
    pub fn load(
        path: &Path,
        max_length: usize,
        lower_case: bool,
        vocab_size: usize,
    ) -> Result<Tokenizer> {
        let bytes = read(path)?;
        let mut inner = guard(path, || tokenizers::Tokenizer::from_bytes(&bytes))?;
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| model_error(path, e))?;
        inner.with_padding(None);
        // Report a file that parses yet fails to encode at load, not first use.
        guard(path, || inner.encode("a test sentence", true))?;
        let vocab = inner.get_vocab_size(true);
        if vocab > vocab_size {
            return Err(model_error(
                path,
                format!(
                    "the tokenizer has {vocab} tokens, more than config.json's vocab_size {vocab_size}"
                ),
            ));
        }
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
            lower_case,
        })
    }

    /// Tokenises `sentences` as sentence-transformers does (surrounding
    /// whitespace stripped, lower-cased if the checkpoint says so), padded to
    /// the longest.
    ///
    /// Errors: [`Error::Model`](crate::Error::Model) if the tokenizer fails.
    pub fn tokenize(&self, sentences: &[&str]) -> Result<Batch> {
        let texts: Vec<String> = sentences
            .iter()
            .map(|s| {
                let s = s.trim();
                if self.lower_case {
                    s.to_lowercase()
                } else {
                    s.to_string()
                }
            })
            .collect();
        let encs = guard(&self.path, || self.inner.encode_batch(texts, true))?;
        let seq = encs.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = vec![0u32; encs.len() * seq];
        let mut lengths = Vec::with_capacity(encs.len());
        for (b, e) in encs.iter().enumerate() {
            ids[b * seq..b * seq + e.get_ids().len()].copy_from_slice(e.get_ids());
            lengths.push(e.get_ids().len() as u32);
        }
        Ok(Batch { ids, lengths, seq })
    }
}
