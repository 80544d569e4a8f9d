//! A character vocabulary ([`CharVocab`]): the tokenizer of a character
//! language model trained on flashdot (one token per Unicode scalar of the
//! training text), saved beside its checkpoint as `vocab.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::files::{json, model_error};

/// Token `i` is the `i`-th character of [`chars`](Self::chars), sorted, so
/// that the same text always gives the same vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharVocab {
    /// The characters, sorted and distinct.
    chars: Vec<char>,
}

impl CharVocab {
    /// The file name beside a checkpoint.
    pub const FILE: &'static str = "vocab.json";

    /// The vocabulary of every character in `text`.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        CharVocab { chars }
    }

    /// Tokens (the model's `vocab_size`).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, token order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The tokens of `text`.
    ///
    /// Errors: [`Error::InvalidArgument`] for a character outside the
    /// vocabulary (naming it and its position).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(i, c)| match self.chars.binary_search(&c) {
                Ok(t) => Ok(t as u32),
                Err(_) => Err(Error::InvalidArgument {
                    op: "CharVocab::encode",
                    detail: format!(
                        "character {c:?} at position {i} is not in the vocabulary of {}",
                        self.chars.len()
                    ),
                }),
            })
            .collect()
    }

    /// The text of `tokens`.
    ///
    /// Errors: [`Error::InvalidArgument`] for a token past the vocabulary.
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        tokens
            .iter()
            .map(|&t| {
                self.chars
                    .get(t as usize)
                    .copied()
                    .ok_or_else(|| Error::InvalidArgument {
                        op: "CharVocab::decode",
                        detail: format!("token {t} is past the vocabulary of {}", self.chars.len()),
                    })
            })
            .collect()
    }

    /// Writes `dir/vocab.json`.
    ///
    /// Errors: [`Error::Model`] naming the file that cannot be written.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(Self::FILE);
        let text = serde_json::to_string(self).map_err(|e| model_error(&path, e))?;
        std::fs::write(&path, text).map_err(|e| model_error(&path, e))
    }

    /// Reads `dir/vocab.json`.
    ///
    /// Errors: [`Error::Model`] naming the file, missing or malformed, or
    /// whose characters are not sorted and distinct.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::FILE);
        let v: CharVocab = json(&path)?;
        if v.chars.windows(2).any(|w| w[0] >= w[1]) {
            return Err(model_error(
                &path,
                "the characters are not sorted and distinct",
            ));
        }
        Ok(v)
    }
}
