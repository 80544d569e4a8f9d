//! A GPT-2-architecture causal language model on flashdot's kernels, with
//! Hugging Face's tensor names and `config.json`, so that the same code
//! loads a GPT-2 checkpoint in safetensors form and saves one that
//! `transformers` loads.
//!
//! The forward, per block (pre-LN): `ln_1` → `c_attn` (one projection to q,
//! k and v) → causal attention per head (q, k, v read as views of that
//! projection) → `c_proj` → residual add → `ln_2` → `c_fc` with its
//! activation fused → `c_proj` → residual add; then `ln_f` and the logits
//! `ln_f(x) · wteᵀ` (the LM head tied to the token embeddings). f32
//! throughout; one submission a forward.
//!
//! The configuration is read in `config`, the parameters' sources (file or
//! seeded init) and layouts are in `params`, the activations a forward
//! writes in `activations`, and each part of the model (in `blocks`) loads
//! its own tensors. On the device the `Conv1D` weights (`c_attn`, `c_proj`,
//! `c_fc`, stored `[in, out]` in the file) are `[out, in]`, what
//! [`linear`](crate::ops::matmul::linear) and the linear backward take:
//! transposed on load, back on save and [`Gpt2::tensors`].

mod activations;
mod blocks;
mod config;
mod decode;
mod grads;
mod params;
mod train;

pub use activations::Gpt2Activations;
pub use config::Gpt2Config;
pub use decode::{CacheLayout, Gpt2Cache};
pub use params::NamedTensor;
pub use train::Gpt2Trainer;

use std::path::Path;

use activations::{check_seq, shape_of};
use blocks::Transformer;
use params::Source;

use crate::error::{Error, Result};
use crate::models::files::{model_error, read};
use crate::{Context, Tensor};

/// A GPT-2-architecture language model on a [`Context`] (f32).
///
/// ```no_run
/// # fn main() -> flashdot::Result<()> {
/// use flashdot::models::{Gpt2, Gpt2Config};
/// let ctx = flashdot::Context::new()?;
/// let model = Gpt2::random(&ctx, &Gpt2Config::new(97, 64, 48, 2, 3), 1)?;
/// let logits = model.forward(&[5, 17, 3, 9], 2, 2)?; // [2, 2, 97]
/// model.save(std::path::Path::new("tiny-gpt2"))?;
/// let back = Gpt2::load(&ctx, std::path::Path::new("tiny-gpt2"))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Gpt2 {
    ctx: Context,
    config: Gpt2Config,
    model: Transformer,
}

impl Gpt2 {
    /// The checkpoint's file of tensors in a model folder.
    pub const WEIGHTS: &'static str = "model.safetensors";
    /// Its configuration file.
    pub const CONFIG: &'static str = "config.json";

    /// Loads `dir/config.json` and `dir/model.safetensors` (Hugging Face's
    /// GPT-2 layout: `wte.weight`, `wpe.weight`, `h.{i}.…`, `ln_f.…`, also
    /// under `transformer.`; other tensors, such as old checkpoints'
    /// `attn.bias` masks or a tied `lm_head.weight`, are not read).
    ///
    /// Errors: [`Error::Model`] naming the file for one missing, truncated
    /// or malformed, a config that fails [`Gpt2Config::validate`], or a
    /// tensor missing (also past the file's blocks), not f32 or of
    /// another shape than the config gives (naming the tensor and both
    /// shapes); GPU errors from the uploads.
    pub fn load(ctx: &Context, dir: &Path) -> Result<Gpt2> {
        let config = Gpt2Config::load(&dir.join(Self::CONFIG))?;
        let path = dir.join(Self::WEIGHTS);
        let bytes = read(&path)?;
        let source = Source::file(ctx, &path, &bytes)?;
        Self::build(ctx, config, &source)
    }

    /// A model of `config` with GPT-2's init drawn from `seed` (the same
    /// values on every platform): weights normal with std
    /// `initializer_range` (0.02), the projections into the residual stream
    /// (`attn.c_proj`, `mlp.c_proj`) scaled by `1/√(2 · n_layer)`, biases
    /// zero, layer norms γ 1 and β 0. Tensors are drawn in load order
    /// (`wte`, `wpe`, each block's, `ln_f`), each in its file layout.
    ///
    /// Errors: [`Error::InvalidArgument`] for a config that fails
    /// [`Gpt2Config::validate`]; [`Error::TooLarge`] for a tensor past one
    /// buffer (before it is drawn); GPU errors.
    pub fn random(ctx: &Context, config: &Gpt2Config, seed: u64) -> Result<Gpt2> {
        config.validate()?;
        Self::build(ctx, config.clone(), &Source::random(ctx, seed))
    }

    fn build(ctx: &Context, config: Gpt2Config, source: &Source) -> Result<Gpt2> {
        // The blocks are loaded one by one (nothing is sized from n_layer):
        // a config claiming more than the file holds fails at the first
        // missing tensor, which the error names.
        let model = Transformer::load(&source.root(), &config, config.activation()?)?;
        Ok(Gpt2 {
            ctx: ctx.clone(),
            config,
            model,
        })
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` (creating
    /// `dir`) in Hugging Face's layout and names, with the metadata
    /// `format: pt` that `transformers` asks for; [`load`](Self::load)
    /// reads back the same config and the same bits.
    ///
    /// Errors: [`Error::Model`] naming the file or folder that cannot be
    /// written; readback errors.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| model_error(dir, e))?;
        let tensors = self.tensors()?;
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|t| t.data.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let path = dir.join(Self::WEIGHTS);
        let views = tensors
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    b,
                )
                .map_err(|e| model_error(&path, e))?;
                Ok((t.name.as_str(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        let file =
            safetensors::tensor::serialize(views, Some(meta)).map_err(|e| model_error(&path, e))?;
        std::fs::write(&path, file).map_err(|e| model_error(&path, e))?;
        self.config.save(&dir.join(Self::CONFIG))
    }

    /// Every parameter read back in the checkpoint's names and layouts
    /// (`Conv1D` weights `[in, out]`), in load order: what
    /// [`save`](Self::save) writes and what the CPU reference
    /// ([`reference::gpt2`](crate::reference::gpt2)) takes.
    ///
    /// Errors: readback errors.
    pub fn tensors(&self) -> Result<Vec<NamedTensor>> {
        self.model.params().iter().map(|p| p.to_host()).collect()
    }

    /// The model's `config.json`.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The context the model runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The activations of a forward over `batch × seq` tokens (see
    /// [`Gpt2Activations`]; `keep` keeps every block's).
    ///
    /// Errors: [`Error::Shape`] for `seq` past `n_positions`; GPU errors
    /// ([`Error::TooLarge`] for a tensor past one buffer).
    pub fn activations(&self, batch: usize, seq: usize, keep: bool) -> Result<Gpt2Activations> {
        Gpt2Activations::new(&self.ctx, &self.config, batch, seq, keep)
    }

    /// The logits `[batch, seq, vocab]` f32 of token `ids` (`batch · seq`
    /// of them, row-major `[batch, seq]`), each position seeing its own
    /// sequence's tokens up to itself. One submission.
    ///
    /// Errors: as [`forward_into`](Self::forward_into) and
    /// [`activations`](Self::activations).
    pub fn forward(&self, ids: &[u32], batch: usize, seq: usize) -> Result<Tensor> {
        let acts = self.activations(batch, seq, false)?;
        self.forward_into(ids, &acts)?;
        Ok(acts.logits().clone())
    }

    /// [`forward`](Self::forward) into `acts` (their shape gives `batch`
    /// and `seq`; the logits are [`Gpt2Activations::logits`]).
    ///
    /// Errors: [`Error::Shape`] for `ids` not `batch · seq` long;
    /// [`Error::InvalidArgument`] for an id past the vocabulary (naming its
    /// position) or activations made for a model of another shape; GPU
    /// errors.
    pub fn forward_into(&self, ids: &[u32], acts: &Gpt2Activations) -> Result<()> {
        let (batch, seq) = (acts.batch, acts.seq);
        check_seq(&self.config, seq)?;
        if acts.made_for != shape_of(&self.config) {
            return Err(Error::InvalidArgument {
                op: "Gpt2::forward",
                detail: format!(
                    "activations made for a model of (vocab, n_embd, n_inner, n_head, n_layer) \
                     {:?}, this one is {:?}",
                    acts.made_for,
                    shape_of(&self.config)
                ),
            });
        }
        if ids.len() != batch * seq {
            return Err(Error::Shape {
                op: "Gpt2::forward",
                detail: format!("{} ids for batch {batch} × seq {seq}", ids.len()),
            });
        }
        let vocab = self.config.vocab_size;
        if let Some(i) = ids.iter().position(|&t| t as usize >= vocab) {
            return Err(Error::InvalidArgument {
                op: "Gpt2::forward",
                detail: format!(
                    "token id {} at [{}, {}] is past the vocabulary of {vocab}",
                    ids[i],
                    i / seq,
                    i % seq
                ),
            });
        }
        if ids.is_empty() {
            return Ok(());
        }
        let ids = Tensor::from_slice(&self.ctx, ids, &[batch, seq])?;
        self.ctx.record(|| self.model.forward(&ids, acts, None))
    }
}
