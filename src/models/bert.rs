//! A BERT-family sentence encoder (sentence-transformers layout) on
//! flashdot's kernels: embedding lookup, then per layer Q/K/V projections,
//! attention over each sequence's own tokens (`kv_len`: padding is never
//! attended), output projection, residual + layer norm, GELU feed-forward,
//! residual + layer norm; then masked mean pooling and L2 normalisation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{guard_tokenizer, model_error, read};
use crate::error::{Error, Result};
use crate::ops::attention::{attention_into, AttentionOptions, Layout};
use crate::ops::embedding::{embedding_into, EmbeddingTables};
use crate::ops::matmul::{linear_into, Activation, MatmulOptions};
use crate::ops::norm::layer_norm_into;
use crate::ops::pooling::mean_pool_into;
use crate::ops::similarity::normalize;
use crate::reference::bert::{EncoderDims, Weights};
use crate::{Context, DType, Tensor};

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

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

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

#[derive(Debug)]
struct Linear {
    w: Tensor,
    b: Tensor,
}

#[derive(Debug)]
struct Norm {
    g: Tensor,
    b: Tensor,
}

#[derive(Debug)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln1: Norm,
    ff1: Linear,
    ff2: Linear,
    ln2: Norm,
}

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
    lower_case: bool,
    act: Activation,
    normalize: bool,
    tokenizer: tokenizers::Tokenizer,
    word: Tensor,
    pos: Tensor,
    types: Tensor,
    ln: Norm,
    layers: Vec<Layer>,
    /// The activations of the last batch shape, reused by the next forward
    /// of that shape (no per-call allocation and zero-fill of ~70 MB at
    /// 32 × 128). Reuse is safe across calls and threads: every forward's
    /// writes and reads of it are commands of one submission, and
    /// submissions run in order.
    work: Mutex<Option<Arc<Workspace>>>,
}

/// Activation tensors for batches of `n × seq` tokens.
#[derive(Debug)]
struct Workspace {
    n: usize,
    seq: usize,
    emb: Tensor,
    x: Tensor,
    x1: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    att: Tensor,
    a: Tensor,
    f: Tensor,
    f2: Tensor,
}

impl Workspace {
    fn new(ctx: &Context, c: &BertConfig, dtype: DType, n: usize, seq: usize) -> Result<Workspace> {
        let (rows, h) = (n * seq, c.hidden_size);
        let z = |shape: &[usize]| Tensor::empty(ctx, shape, dtype);
        Ok(Workspace {
            n,
            seq,
            emb: z(&[n, seq, h])?,
            x: z(&[rows, h])?,
            x1: z(&[rows, h])?,
            q: z(&[rows, h])?,
            k: z(&[rows, h])?,
            v: z(&[rows, h])?,
            att: z(&[rows, h])?,
            a: z(&[rows, h])?,
            f: z(&[rows, c.intermediate_size])?,
            f2: z(&[rows, h])?,
        })
    }
}

fn json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read(path)?).map_err(|e| model_error(path, e))
}

/// The checkpoint's f32 tensors by name, checked to exist with the expected
/// shapes.
fn load_weights(path: &Path, c: &BertConfig) -> Result<Weights> {
    let bytes = read(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| model_error(path, e))?;
    let (h, f) = (c.hidden_size, c.intermediate_size);
    // Each layer has 16 tensors: a config claiming more layers than the file
    // holds is refused before the list of expected names is built from it.
    if c.num_hidden_layers > st.len() / 16 {
        return Err(model_error(
            path,
            format!(
                "config.json gives {} layers, but the file holds {} tensors (16 a layer)",
                c.num_hidden_layers,
                st.len()
            ),
        ));
    }
    let mut want: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for i in 0..c.num_hidden_layers {
        let p = |s: &str| format!("encoder.layer.{i}.{s}");
        for name in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            want.push((p(&format!("{name}.weight")), vec![h, h]));
            want.push((p(&format!("{name}.bias")), vec![h]));
        }
        want.push((p("intermediate.dense.weight"), vec![f, h]));
        want.push((p("intermediate.dense.bias"), vec![f]));
        want.push((p("output.dense.weight"), vec![h, f]));
        want.push((p("output.dense.bias"), vec![h]));
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            want.push((p(&format!("{ln}.weight")), vec![h]));
            want.push((p(&format!("{ln}.bias")), vec![h]));
        }
    }
    let mut out = Weights::new();
    for (name, shape) in want {
        // Checkpoints saved from BertModel name tensors without a prefix,
        // those saved from a task model with `bert.`.
        let t = st
            .tensor(&name)
            .or_else(|_| st.tensor(&format!("bert.{name}")))
            .map_err(|_| model_error(path, format!("no tensor {name}")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape.as_slice() {
            return Err(model_error(
                path,
                format!(
                    "{name} is {:?} {:?}, expected F32 {shape:?} (from config.json)",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(name, v);
    }
    Ok(out)
}

impl SentenceEncoder {
    /// Loads the checkpoint in `dir` (see the module docs for its files) with
    /// its weights in `dtype` (f32, or f16 converted on load; activations are
    /// stored in the same dtype, statistics and pooling accumulate in f32).
    /// Sentences are truncated to `max_seq_length` of
    /// `sentence_bert_config.json`, as sentence-transformers does (not to the
    /// tokenizer file's own truncation).
    ///
    /// Errors: [`Error::Model`] for a missing or malformed file (naming it,
    /// and how to fetch the model), a tensor missing or of the wrong shape,
    /// an activation or pooling mode this encoder does not implement;
    /// [`Error::Unsupported`] for f16 on an adapter without it; GPU errors.
    pub fn load(ctx: &Context, dir: &Path, dtype: DType) -> Result<SentenceEncoder> {
        let config: BertConfig = json(&dir.join("config.json"))?;
        let sbert: SbertConfig = json(&dir.join("sentence_bert_config.json"))?;
        let pooling: PoolingConfig = json(&dir.join("1_Pooling/config.json"))?;
        let modules: Vec<Module> = json(&dir.join("modules.json"))?;
        let cfg_path = dir.join("config.json");
        let act = match config.hidden_act.as_str() {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => {
                return Err(model_error(
                    &cfg_path,
                    format!("activation {other} is not implemented"),
                ))
            }
        };
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(model_error(
                &cfg_path,
                format!(
                    "hidden size {} is not a multiple of {} heads",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        if !pooling.pooling_mode_mean_tokens
            || pooling.pooling_mode_cls_token
            || pooling.pooling_mode_max_tokens
            || pooling.pooling_mode_mean_sqrt_len_tokens
        {
            return Err(model_error(
                &dir.join("1_Pooling/config.json"),
                "only mean pooling is implemented",
            ));
        }
        if sbert.max_seq_length == 0 || sbert.max_seq_length > config.max_position_embeddings {
            return Err(model_error(
                &dir.join("sentence_bert_config.json"),
                format!(
                    "max_seq_length {} is not within 1..={} positions",
                    sbert.max_seq_length, config.max_position_embeddings
                ),
            ));
        }
        let normalize = modules.iter().any(|m| m.kind.ends_with("models.Normalize"));
        let tok_path = dir.join("tokenizer.json");
        let tok_bytes = read(&tok_path)?;
        let mut tokenizer =
            guard_tokenizer(&tok_path, || tokenizers::Tokenizer::from_bytes(&tok_bytes))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: sbert.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| model_error(&tok_path, e))?;
        tokenizer.with_padding(None);
        // A tokenizer file can parse yet fail to encode (a special token
        // missing from its vocabulary): report it at load, not first use.
        guard_tokenizer(&tok_path, || tokenizer.encode("a test sentence", true))?;
        // Token ids index the embedding table on the device, unchecked there.
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(model_error(
                &tok_path,
                format!(
                    "the tokenizer has {vocab} tokens, more than config.json's vocab_size {}",
                    config.vocab_size
                ),
            ));
        }
        let w = load_weights(&dir.join("model.safetensors"), &config)?;
        let up = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let v = &w[name];
            match dtype {
                DType::F16 => {
                    let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
                    Tensor::from_slice(ctx, &h, shape)
                }
                DType::F32 => Tensor::from_slice(ctx, v, shape),
                DType::U32 => Err(Error::InvalidArgument {
                    op: "SentenceEncoder::load",
                    detail: "weights are f32 or f16, not u32".into(),
                }),
            }
        };
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let lin = |p: &str, out: usize, inp: usize| -> Result<Linear> {
            Ok(Linear {
                w: up(&format!("{p}.weight"), &[out, inp])?,
                b: up(&format!("{p}.bias"), &[out])?,
            })
        };
        let norm = |p: &str| -> Result<Norm> {
            Ok(Norm {
                g: up(&format!("{p}.weight"), &[h])?,
                b: up(&format!("{p}.bias"), &[h])?,
            })
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = |s: &str| format!("encoder.layer.{i}.{s}");
                Ok(Layer {
                    q: lin(&p("attention.self.query"), h, h)?,
                    k: lin(&p("attention.self.key"), h, h)?,
                    v: lin(&p("attention.self.value"), h, h)?,
                    o: lin(&p("attention.output.dense"), h, h)?,
                    ln1: norm(&p("attention.output.LayerNorm"))?,
                    ff1: lin(&p("intermediate.dense"), f, h)?,
                    ff2: lin(&p("output.dense"), h, f)?,
                    ln2: norm(&p("output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SentenceEncoder {
            ctx: ctx.clone(),
            word: up("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            pos: up(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            types: up(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            ln: norm("embeddings.LayerNorm")?,
            layers,
            config,
            dtype,
            dir: dir.to_path_buf(),
            max_seq_length: sbert.max_seq_length,
            lower_case: sbert.do_lower_case,
            act,
            normalize,
            tokenizer,
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
        let encs = guard_tokenizer(&self.dir.join("tokenizer.json"), || {
            self.tokenizer.encode_batch(texts, true)
        })?;
        let seq = encs.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = vec![0u32; encs.len() * seq];
        let mut lengths = Vec::with_capacity(encs.len());
        for (b, e) in encs.iter().enumerate() {
            ids[b * seq..b * seq + e.get_ids().len()].copy_from_slice(e.get_ids());
            lengths.push(e.get_ids().len() as u32);
        }
        Ok(Batch { ids, lengths, seq })
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
        const OP: &str = "SentenceEncoder::forward";
        let (n, seq, h) = (batch.len(), batch.seq, self.config.hidden_size);
        if batch.ids.len() != n * seq || seq > self.config.max_position_embeddings {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "{} ids for {n} sentences of {seq} tokens (at most {} positions)",
                    batch.ids.len(),
                    self.config.max_position_embeddings
                ),
            });
        }
        let ctx = &self.ctx;
        if n == 0 || seq == 0 {
            return Ok((Tensor::zeros(ctx, &[n, h], DType::F32)?, Vec::new()));
        }
        let ids = Tensor::from_slice(ctx, &batch.ids, &[n, seq])?;
        let heads = self.config.num_attention_heads;
        let dh = h / heads;
        let eps = self.config.layer_norm_eps as f32;
        let rows = n * seq;
        let opts = AttentionOptions::default()
            .layout(Layout::Bshd)
            .kv_len(&batch.lengths);
        // Activations stay in the weights' dtype (matmul defaults to f32 out).
        let mm = MatmulOptions::default().out_dtype(self.dtype);
        let linear = |x: &Tensor, p: &Linear, act, out: &Tensor| {
            linear_into(x, &p.w, Some(&p.b), act, &mm, out)
        };
        let ws = {
            let mut slot = self.work.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                Some(w) if w.n == n && w.seq == seq => w.clone(),
                _ => {
                    let w = Arc::new(Workspace::new(ctx, &self.config, self.dtype, n, seq)?);
                    *slot = Some(w.clone());
                    w
                }
            }
        };
        let w = &*ws;
        let heads4 = |t: &Tensor| t.reshape(&[n, seq, heads, dh]);
        ctx.record(|| {
            let mut kept = Vec::new();
            // A copy of the hidden state (the workspace is overwritten).
            let keep = |kept: &mut Vec<Tensor>, x: &Tensor| -> Result<()> {
                if states {
                    let s = Tensor::zeros(ctx, &[n, seq, h], self.dtype)?;
                    s.copy_at(&[], x)?;
                    kept.push(s);
                }
                Ok(())
            };
            let tables = EmbeddingTables {
                word: &self.word,
                pos: &self.pos,
                types: &self.types,
            };
            embedding_into(&ids, None, tables, &w.emb)?;
            layer_norm_into(
                &w.emb.reshape(&[rows, h])?,
                None,
                &self.ln.g,
                &self.ln.b,
                eps,
                &w.x,
            )?;
            keep(&mut kept, &w.x)?;
            for l in &self.layers {
                linear(&w.x, &l.q, Activation::None, &w.q)?;
                linear(&w.x, &l.k, Activation::None, &w.k)?;
                linear(&w.x, &l.v, Activation::None, &w.v)?;
                let att4 = heads4(&w.att)?;
                attention_into(
                    &heads4(&w.q)?,
                    &heads4(&w.k)?,
                    &heads4(&w.v)?,
                    &opts,
                    &att4,
                    None,
                )?;
                linear(&w.att, &l.o, Activation::None, &w.a)?;
                layer_norm_into(&w.a, Some(&w.x), &l.ln1.g, &l.ln1.b, eps, &w.x1)?;
                linear(&w.x1, &l.ff1, self.act, &w.f)?;
                linear(&w.f, &l.ff2, Activation::None, &w.f2)?;
                layer_norm_into(&w.f2, Some(&w.x1), &l.ln2.g, &l.ln2.b, eps, &w.x)?;
                keep(&mut kept, &w.x)?;
            }
            let x = &w.x;
            let pooled = Tensor::zeros(ctx, &[n, h], DType::F32)?;
            mean_pool_into(&x.reshape(&[n, seq, h])?, &batch.lengths, &pooled)?;
            let out = if self.normalize {
                normalize(&pooled)?
            } else {
                pooled
            };
            Ok((out, kept))
        })
    }
}
