//! A GPT-2 checkpoint's `config.json` ([`Gpt2Config`], the fields of
//! Hugging Face's `GPT2Config` the model reads), its checks, and the
//! `config.json` a saved model writes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::files::model_error;
use crate::ops::attention::MAX_HEAD_DIM;
use crate::ops::matmul::Activation;

/// The fields of a Hugging Face GPT-2 `config.json` the model uses (others
/// in the file are ignored). Build one in code with [`Gpt2Config::new`];
/// [`validate`](Gpt2Config::validate) says whether flashdot runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Gpt2Config {
    /// Token rows of `wte` (and logits per position: the LM head is tied).
    pub vocab_size: usize,
    /// Position rows of `wpe`: the longest sequence.
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads (head dim `n_embd / n_head`).
    pub n_head: usize,
    /// Feed-forward width; `null` (the usual) is `4 · n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Feed-forward activation: `gelu_new` (GPT-2's, the tanh form; also
    /// `gelu_pytorch_tanh`), `gelu` (erf), `relu`, `silu` / `swish`.
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// The standard deviation of the random init ([`Gpt2::random`](super::Gpt2::random)).
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    /// Scores scaled by `1/√head_dim` (GPT-2's); `false` leaves them unscaled.
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// Scores further divided by the layer index + 1 (off in GPT-2; not
    /// implemented: `true` is refused).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// The LM head is `wte` (GPT-2's; an untied `lm_head` is not
    /// implemented: `false` is refused).
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn default_init() -> f64 {
    0.02
}
fn yes() -> bool {
    true
}

/// What [`Gpt2Config::save`] writes besides the config's own fields, so that
/// Hugging Face's `AutoConfig` and `GPT2LMHeadModel` read the file.
#[derive(Serialize)]
struct HfConfig<'a> {
    model_type: &'static str,
    architectures: [&'static str; 1],
    n_ctx: usize,
    #[serde(flatten)]
    config: &'a Gpt2Config,
}

impl Gpt2Config {
    /// GPT-2's defaults (`gelu_new`, epsilon 1e-5, init std 0.02, scaled
    /// scores, tied LM head, `n_inner` 4 · `n_embd`) at these sizes.
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Gpt2Config {
        Gpt2Config {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            layer_norm_epsilon: default_eps(),
            activation_function: default_act(),
            initializer_range: default_init(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: true,
        }
    }

    /// Feed-forward width: `n_inner`, or `4 · n_embd`.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    /// Head dim, `n_embd / n_head` (0 with no heads).
    pub fn head_dim(&self) -> usize {
        self.n_embd.checked_div(self.n_head).unwrap_or(0)
    }

    /// The scale of the attention scores: `1/√head_dim`, or 1 without
    /// `scale_attn_weights`.
    pub fn attn_scale(&self) -> f64 {
        match self.scale_attn_weights {
            true => 1.0 / (self.head_dim() as f64).sqrt(),
            false => 1.0,
        }
    }

    /// The feed-forward activation `activation_function` names.
    ///
    /// Errors: [`Error::InvalidArgument`] for a name not implemented.
    pub fn activation(&self) -> Result<Activation> {
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::GeluErf),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(invalid(format!(
                "activation_function {other:?} is not implemented (gelu_new, gelu_pytorch_tanh, \
                 gelu, relu, silu, swish are)"
            ))),
        }
    }

    /// Checks that flashdot runs this configuration: every size positive,
    /// `n_embd` a multiple of `n_head` with a head dim of at most 256 (the
    /// attention kernels'), a vocabulary u32 ids can name, a finite
    /// non-negative epsilon, a finite non-negative init std, an implemented
    /// activation, a tied LM head and no per-layer score scaling.
    ///
    /// Errors: [`Error::InvalidArgument`] saying which field is wrong.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_head", self.n_head),
            ("n_inner", self.inner()),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(format!("{name} is 0")));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(invalid(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            )));
        }
        if self.head_dim() > MAX_HEAD_DIM {
            return Err(invalid(format!(
                "head dim {} (n_embd {} / n_head {}) is over the attention kernels' {MAX_HEAD_DIM}",
                self.head_dim(),
                self.n_embd,
                self.n_head
            )));
        }
        if u32::try_from(self.vocab_size).is_err() {
            return Err(invalid(format!(
                "vocab_size {} is past what u32 token ids name",
                self.vocab_size
            )));
        }
        for (name, v) in [
            ("layer_norm_epsilon", self.layer_norm_epsilon),
            ("initializer_range", self.initializer_range),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(format!("{name} must be finite and >= 0, got {v}")));
            }
        }
        self.activation()?;
        if self.scale_attn_by_inverse_layer_idx {
            return Err(invalid(
                "scale_attn_by_inverse_layer_idx is not implemented".into(),
            ));
        }
        if !self.tie_word_embeddings {
            return Err(invalid(
                "an untied lm_head (tie_word_embeddings false) is not implemented".into(),
            ));
        }
        Ok(())
    }

    /// Reads and validates `path` (a `config.json`).
    ///
    /// Errors: [`Error::Model`] naming the file for one missing, malformed
    /// or failing [`validate`](Gpt2Config::validate) (its message).
    pub fn load(path: &Path) -> Result<Gpt2Config> {
        let c: Gpt2Config = crate::models::files::json(path)?;
        c.validate().map_err(|e| match e {
            Error::InvalidArgument { detail, .. } => model_error(path, detail),
            e => e,
        })?;
        Ok(c)
    }

    /// Writes the config to `path` as Hugging Face's `GPT2Config` JSON
    /// (with `model_type` and `architectures`, so that `transformers` reads
    /// it); [`load`](Gpt2Config::load) reads back an equal config.
    ///
    /// Errors: [`Error::Model`] naming the file if it cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let hf = HfConfig {
            model_type: "gpt2",
            architectures: ["GPT2LMHeadModel"],
            n_ctx: self.n_positions,
            config: self,
        };
        let text = serde_json::to_string_pretty(&hf).map_err(|e| model_error(path, e))?;
        std::fs::write(path, text + "\n").map_err(|e| model_error(path, e))
    }
}

fn invalid(detail: String) -> Error {
    Error::InvalidArgument {
        op: "Gpt2Config",
        detail,
    }
}
