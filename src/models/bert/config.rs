//! The checkpoint's configuration: `config.json` ([`BertConfig`], and the
//! sizes the encoder and its CPU reference take, [`EncoderDims`]), and the
//! sentence-transformers files around it (`sentence_bert_config.json`,
//! `1_Pooling/config.json`, `modules.json`), read and checked together into
//! the [`Settings`] the encoder runs with.

use std::path::Path;

use serde::Deserialize;

use crate::error::Result;
use crate::models::files::{json, model_error};
use crate::ops::matmul::Activation;

/// The fields of a Hugging Face BERT `config.json` the encoder uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct BertConfig {
    /// Token rows of the embedding table.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Position rows of the embedding table (the longest sequence).
    pub max_position_embeddings: usize,
    /// Token-type rows.
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// Feed-forward activation: `gelu` (erf) or `gelu_new` / `gelu_pytorch_tanh`.
    pub hidden_act: String,
}

/// The encoder's sizes, as the CPU reference encoder
/// ([`reference::bert`](crate::reference::bert)) takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderDims {
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads (head dim = hidden / heads).
    pub heads: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Layer-norm epsilon.
    pub eps: f64,
}

impl BertConfig {
    /// The sizes the reference encoder takes.
    pub fn dims(&self) -> EncoderDims {
        EncoderDims {
            hidden: self.hidden_size,
            heads: self.num_attention_heads,
            layers: self.num_hidden_layers,
            eps: self.layer_norm_eps,
        }
    }

    /// The feed-forward activation `hidden_act` names, or a model error
    /// naming `path` (the `config.json`) for one not implemented.
    fn activation(&self, path: &Path) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => Err(model_error(
                path,
                format!("activation {other} is not implemented"),
            )),
        }
    }
}

#[derive(Deserialize)]
struct SbertConfig {
    max_seq_length: usize,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

impl PoolingConfig {
    fn mean_only(&self) -> bool {
        self.pooling_mode_mean_tokens
            && !self.pooling_mode_cls_token
            && !self.pooling_mode_max_tokens
            && !self.pooling_mode_mean_sqrt_len_tokens
    }
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

/// Everything the configuration files of a checkpoint decide, checked.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// `config.json`.
    pub config: BertConfig,
    /// The feed-forward activation.
    pub act: Activation,
    /// The longest sequence in tokens (`sentence_bert_config.json`).
    pub max_seq_length: usize,
    /// Whether sentences are lower-cased before tokenising.
    pub lower_case: bool,
    /// Whether the modules end with an L2 normalisation.
    pub normalize: bool,
}

impl Settings {
    /// Reads and checks the configuration files in `dir`.
    ///
    /// Errors: [`Error::Model`](crate::Error::Model) naming the file for one
    /// missing or malformed, an activation or pooling mode the encoder does
    /// not implement, a hidden size the heads do not divide, a
    /// `max_seq_length` outside the position table.
    pub fn load(dir: &Path) -> Result<Settings> {
        let cfg_path = dir.join("config.json");
        let pooling_path = dir.join("1_Pooling/config.json");
        let sbert_path = dir.join("sentence_bert_config.json");
        let config: BertConfig = json(&cfg_path)?;
        let sbert: SbertConfig = json(&sbert_path)?;
        let pooling: PoolingConfig = json(&pooling_path)?;
        let modules: Vec<Module> = json(&dir.join("modules.json"))?;
        let act = config.activation(&cfg_path)?;
        let heads = config.num_attention_heads;
        if heads == 0 || !config.hidden_size.is_multiple_of(heads) {
            return Err(model_error(
                &cfg_path,
                format!(
                    "hidden size {} is not a multiple of {heads} heads",
                    config.hidden_size
                ),
            ));
        }
        if !pooling.mean_only() {
            return Err(model_error(
                &pooling_path,
                "only mean pooling is implemented",
            ));
        }
        if sbert.max_seq_length == 0 || sbert.max_seq_length > config.max_position_embeddings {
            return Err(model_error(
                &sbert_path,
                format!(
                    "max_seq_length {} is not within 1..={} positions",
                    sbert.max_seq_length, config.max_position_embeddings
                ),
            ));
        }
        Ok(Settings {
            act,
            max_seq_length: sbert.max_seq_length,
            lower_case: sbert.do_lower_case,
            normalize: modules.iter().any(|m| m.kind.ends_with("models.Normalize")),
            config,
        })
    }
}
