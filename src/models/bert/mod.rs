//! A BERT-family sentence encoder (sentence-transformers layout) on
//! flashdot's kernels: embedding lookup, then per layer Q/K/V projections,
//! attention over each sequence's own tokens (`kv_len`: padding is never
//! attended), output projection, residual + layer norm, GELU feed-forward,
//! residual + layer norm; then masked mean pooling and L2 normalisation.
//!
//! The configuration files are read in `config`, the tokenizer in
//! `tokenizer`, the weights through the prefix-scoped source of `weights`,
//! and each part of the encoder (in `encoder`) loads its own tensors.

mod config;
mod encoder;
mod tokenizer;
mod weights;

pub use config::{BertConfig, EncoderDims};
pub use tokenizer::Batch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use config::Settings;
use encoder::{Encoder, Step, Workspace};
use tokenizer::Tokenizer;
use weights::Weights;

use crate::error::{expect_dtype, Error, Result};
use crate::models::files::read;
use crate::ops::pooling::mean_pool_into;
use crate::ops::similarity::normalize;
use crate::{Context, DType, Tensor};

/// A sentence-transformers BERT-family encoder loaded on a [`Context`].
///
/// ```no_run
/// # fn main() -> flashdot::Result<()> {
/// use flashdot::models::{default_model_dir, SentenceEncoder};
/// let ctx = flashdot::Context::new()?;
/// let enc = SentenceEncoder::load(&ctx, &default_model_dir(), flashdot::DType::F32)?;
/// let e = enc.embed(&["The weather is lovely today.", "It's so sunny outside!"])?; // [2, 384]
/// let host: Vec<f32> = e.to_vec()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SentenceEncoder {
    ctx: Context,
    config: BertConfig,
    dtype: DType,
    dir: PathBuf,
    max_seq_length: usize,
    normalize: bool,
    tokenizer: Tokenizer,
    encoder: Encoder,
    /// The activations of the last batch shape, reused by the next forward
    /// of that shape (no per-call allocation and zero-fill of ~70 MB at
    /// 32 × 128). Reuse is safe across calls and threads: every forward's
    /// writes and reads of it are commands of one submission, and
    /// submissions run in order.
    work: Mutex<Option<Arc<Workspace>>>,
}

impl SentenceEncoder {
    /// Loads the checkpoint in `dir` (see the module docs for its files) with
    /// its weights in `dtype` (f32, or f16 converted on load; activations are
    /// stored in the same dtype, statistics and pooling accumulate in f32).
    /// Sentences are truncated to `max_seq_length` of
    /// `sentence_bert_config.json`, as sentence-transformers does (not to the
    /// tokenizer file's own truncation).
    ///
    /// Errors: [`Error::DType`] for a `dtype` other than f32 or f16;
    /// [`Error::Model`] for a missing or malformed file (naming it, and how
    /// to fetch the model), a tensor missing or of the wrong shape (naming
    /// it), an activation or pooling mode this encoder does not implement;
    /// [`Error::Unsupported`] for f16 on an adapter without it; GPU errors.
    pub fn load(ctx: &Context, dir: &Path, dtype: DType) -> Result<SentenceEncoder> {
        expect_dtype("SentenceEncoder::load", "dtype", dtype, &DType::FLOAT)?;
        let s = Settings::load(dir)?;
        let tokenizer = Tokenizer::load(
            &dir.join("tokenizer.json"),
            s.max_seq_length,
            s.lower_case,
            s.config.vocab_size,
        )?;
        let path = dir.join("model.safetensors");
        let bytes = read(&path)?;
        let weights = Weights::parse(ctx, &path, &bytes, dtype)?;
        let encoder = Encoder::load(&weights.root(), &s.config, s.act)?;
        Ok(SentenceEncoder {
            ctx: ctx.clone(),
            config: s.config,
            dtype,
            dir: dir.to_path_buf(),
            max_seq_length: s.max_seq_length,
            normalize: s.normalize,
            tokenizer,
            encoder,
            work: Mutex::new(None),
        })
    }

    /// The model's `config.json`.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }
    /// The longest sequence (tokens, `[CLS]` and `[SEP]` included); longer
    /// sentences are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }
    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }
    /// Weight and activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The context the encoder runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Tokenises `sentences` as sentence-transformers does for this model
    /// (surrounding whitespace stripped, truncated to
    /// [`max_seq_length`](Self::max_seq_length), padded to the longest).
    ///
    /// Errors: [`Error::Model`] if the tokenizer fails.
    pub fn tokenize(&self, sentences: &[&str]) -> Result<Batch> {
        self.tokenizer.tokenize(sentences)
    }

    /// Sentence embeddings `[n, dim]` f32 on the device (L2-normalised when
    /// the checkpoint's modules end with Normalize, as all-MiniLM-L6-v2's
    /// do). One submission for the whole forward pass.
    ///
    /// Errors: as [`tokenize`](Self::tokenize) and [`embed_batch`](Self::embed_batch).
    pub fn embed(&self, sentences: &[&str]) -> Result<Tensor> {
        self.embed_batch(&self.tokenize(sentences)?)
    }

    /// Embeddings of a tokenised batch (see [`embed`](Self::embed)).
    ///
    /// Errors: [`Error::Shape`] for a batch whose ids are not `lengths.len()
    /// × seq` or whose `seq` passes the position table; GPU errors.
    pub fn embed_batch(&self, batch: &Batch) -> Result<Tensor> {
        Ok(self.forward(batch, false)?.0)
    }

    /// The forward pass, also returning the hidden states `[batch, seq,
    /// hidden]` after the embeddings and after each layer when `states` is
    /// set (to locate a mismatch against the reference encoder stage by
    /// stage). One submission.
    ///
    /// Errors: as [`embed_batch`](Self::embed_batch).
    pub fn forward(&self, batch: &Batch, states: bool) -> Result<(Tensor, Vec<Tensor>)> {
        self.check(batch)?;
        let (n, seq, h) = (batch.len(), batch.seq, self.config.hidden_size);
        let ctx = &self.ctx;
        if n == 0 || seq == 0 {
            return Ok((Tensor::zeros(ctx, &[n, h], DType::F32)?, Vec::new()));
        }
        let ids = Tensor::from_slice(ctx, &batch.ids, &[n, seq])?;
        let ws = self.workspace(n, seq)?;
        let step = Step::new(&batch.lengths, self.dtype);
        ctx.record(|| {
            let mut kept = Vec::new();
            self.encoder.forward(&ids, &ws, &step, |x| {
                if states {
                    // A copy: the workspace is overwritten by the next layer.
                    let s = Tensor::zeros(ctx, &[n, seq, h], self.dtype)?;
                    s.copy_at(&[], x)?;
                    kept.push(s);
                }
                Ok(())
            })?;
            Ok((self.pool(&ws.x, batch)?, kept))
        })
    }

    /// Refuses a batch whose ids are not `n × seq` or longer than the
    /// position table.
    fn check(&self, batch: &Batch) -> Result<()> {
        let (n, seq, positions) = (batch.len(), batch.seq, self.config.max_position_embeddings);
        if batch.ids.len() != n * seq || seq > positions {
            return Err(Error::Shape {
                op: "SentenceEncoder::forward",
                detail: format!(
                    "{} ids for {n} sentences of {seq} tokens (at most {positions} positions)",
                    batch.ids.len(),
                ),
            });
        }
        Ok(())
    }

    /// The workspace for `n × seq` tokens: the last one if its shape is
    /// that, else a new one that replaces it.
    fn workspace(&self, n: usize, seq: usize) -> Result<Arc<Workspace>> {
        let mut slot = self.work.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(w) if w.n == n && w.seq == seq => Ok(w.clone()),
            _ => {
                let w = Arc::new(Workspace::new(&self.ctx, &self.config, self.dtype, n, seq)?);
                *slot = Some(w.clone());
                Ok(w)
            }
        }
    }

    /// The sentence-transformers modules after the encoder: masked mean
    /// pooling of the last hidden state `x [n · seq, hidden]` over each
    /// sentence's real tokens (f32), then L2 normalisation if the
    /// checkpoint has it.
    fn pool(&self, x: &Tensor, batch: &Batch) -> Result<Tensor> {
        let (n, seq, h) = (batch.len(), batch.seq, self.config.hidden_size);
        let pooled = Tensor::zeros(&self.ctx, &[n, h], DType::F32)?;
        mean_pool_into(&x.reshape(&[n, seq, h])?, &batch.lengths, &pooled)?;
        if self.normalize {
            normalize(&pooled)
        } else {
            Ok(pooled)
        }
    }
}
