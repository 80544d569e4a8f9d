//! The model loader on bad files: a tiny synthetic sentence-transformers
//! checkpoint (one layer, hidden 8, a seven-token WordPiece vocabulary) is
//! written to a temporary folder, checked to load and to match the f64
//! reference encoder, then every file of it is truncated at every byte,
//! flipped at random bytes and given lying sizes. Each load must return a
//! model or an [`Error::Model`] naming the file: no panic, and no allocation
//! sized from a header the file cannot back (a config claiming 2^60 layers
//! once built a list of 2^64 tensor names).
#![cfg(feature = "models")]

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use common::*;
use flashdot::models::{EncoderDims, SentenceEncoder};
use flashdot::reference::bert;
use flashdot::{verify, DType, Error};
use rand::Rng;

const HIDDEN: usize = 8;
const FF: usize = 16;
const VOCAB: usize = 7;
const POSITIONS: usize = 16;

fn config(layers: &str, vocab: &str, hidden: &str) -> String {
    format!(
        r#"{{"hidden_act": "gelu", "hidden_size": {hidden}, "intermediate_size": {FF},
  "layer_norm_eps": 1e-12, "max_position_embeddings": {POSITIONS},
  "num_attention_heads": 2, "num_hidden_layers": {layers}, "type_vocab_size": 2,
  "vocab_size": {vocab}}}"#
    )
}

const TOKENIZER: &str = r###"{"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [
  {"id": 0, "special": true, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
  {"id": 1, "special": true, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
  {"id": 2, "special": true, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
  {"id": 3, "special": true, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}],
 "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
 "pre_tokenizer": {"type": "BertPreTokenizer"},
 "post_processor": {"type": "TemplateProcessing",
  "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
  "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
  "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
 "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
 "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
  "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "##s": 6}}}"###;

/// The tiny checkpoint's tensors (random, seeded) by name.
fn weights() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let mut r = rng("tiny model weights");
    let mut w = HashMap::new();
    let mut put = |name: String, shape: Vec<usize>| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.random_range(-0.5..0.5)).collect();
        w.insert(name, (shape, v));
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        vec![VOCAB, HIDDEN],
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![POSITIONS, HIDDEN],
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
    );
    put("embeddings.LayerNorm.weight".into(), vec![HIDDEN]);
    put("embeddings.LayerNorm.bias".into(), vec![HIDDEN]);
    let p = |s: &str| format!("encoder.layer.0.{s}");
    for name in ["query", "key", "value"] {
        put(
            p(&format!("attention.self.{name}.weight")),
            vec![HIDDEN, HIDDEN],
        );
        put(p(&format!("attention.self.{name}.bias")), vec![HIDDEN]);
    }
    put(p("attention.output.dense.weight"), vec![HIDDEN, HIDDEN]);
    put(p("attention.output.dense.bias"), vec![HIDDEN]);
    put(p("intermediate.dense.weight"), vec![FF, HIDDEN]);
    put(p("intermediate.dense.bias"), vec![FF]);
    put(p("output.dense.weight"), vec![HIDDEN, FF]);
    put(p("output.dense.bias"), vec![HIDDEN]);
    for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
        put(p(&format!("{ln}.weight")), vec![HIDDEN]);
        put(p(&format!("{ln}.bias")), vec![HIDDEN]);
    }
    w
}

fn safetensors_bytes(w: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(name, (shape, v))| {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name.clone(), shape.clone(), b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

/// The checkpoint's files, by path under the model folder.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("config.json", config("1", &VOCAB.to_string(), &HIDDEN.to_string()).into_bytes()),
        (
            "sentence_bert_config.json",
            br#"{"max_seq_length": 12, "do_lower_case": false}"#.to_vec(),
        ),
        (
            "modules.json",
            br#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#
                .to_vec(),
        ),
        (
            "1_Pooling/config.json",
            br#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}"#
                .to_vec(),
        ),
        ("tokenizer.json", TOKENIZER.as_bytes().to_vec()),
        ("model.safetensors", safetensors_bytes(&weights())),
    ]
}

/// A fresh folder under the target directory for this test's files.
fn folder(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("model_files_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    dir
}

fn write_all(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Loads `dir` inside `catch_unwind`: `Ok(true)` for a model, `Ok(false)`
/// for an [`Error::Model`] (naming a file of the folder: a flipped size in
/// `config.json` is found wrong against `model.safetensors`), otherwise a
/// failure message.
fn try_load(ctx: &flashdot::Context, dir: &Path) -> Result<bool, String> {
    match catch_unwind(AssertUnwindSafe(|| {
        SentenceEncoder::load(ctx, dir, DType::F32)
    })) {
        Ok(Ok(enc)) => {
            // A load that succeeds must give a model that runs (or reports
            // a typed error), whatever the flipped bytes made of it.
            match catch_unwind(AssertUnwindSafe(|| enc.embed(&["hello worlds", "world"]))) {
                Ok(Ok(t)) => t.to_vec::<f32>().map(|_| true).map_err(|e| e.to_string()),
                // A tokenizer that fails only on some words fails there.
                Ok(Err(Error::Model { path, .. })) if path.ends_with("tokenizer.json") => Ok(false),
                Ok(Err(e)) => Err(format!("a loaded model failed to embed: {e}")),
                Err(p) => Err(format!(
                    "a loaded model panicked in embed: {}",
                    panic_message(&*p)
                )),
            }
        }
        Ok(Err(Error::Model { path, .. })) if Path::new(&path).starts_with(dir) => Ok(false),
        Ok(Err(e)) => Err(format!("expected a Model error naming a file, got {e}")),
        Err(p) => Err(format!("panic: {}", panic_message(&*p))),
    }
}

#[test]
fn tiny_checkpoint_matches_the_reference() {
    let ctx = ctx();
    let dir = folder("valid");
    write_all(&dir, &files());
    let enc = SentenceEncoder::load(&ctx, &dir, DType::F32).unwrap();
    let batch = enc.tokenize(&["hello worlds", "world"]).unwrap();
    // [CLS] hello world ##s [SEP] and [CLS] world [SEP], padded.
    assert_eq!(batch.ids, [2, 4, 5, 6, 3, 2, 5, 3, 0, 0]);
    let got = enc.embed_batch(&batch).unwrap().to_vec::<f32>().unwrap();
    let w: bert::Weights = weights().into_iter().map(|(k, (_, v))| (k, v)).collect();
    let dims = EncoderDims {
        hidden: HIDDEN,
        heads: 2,
        layers: 1,
        eps: 1e-12,
    };
    let mut want = Vec::new();
    for (b, &len) in batch.lengths.iter().enumerate() {
        let ids = &batch.ids[b * batch.seq..b * batch.seq + len as usize];
        let e = bert::encode(&w, &dims, ids, &[len], len as usize);
        let norm = e.iter().map(|v| v * v).sum::<f64>().sqrt();
        want.extend(e.iter().map(|v| v / norm));
    }
    check(
        &verify::compare(&got, &want),
        1e-5,
        "tiny checkpoint vs reference",
    );
}

#[test]
fn every_truncation_and_random_flips_are_model_errors() {
    let ctx = ctx();
    let dir = folder("broken");
    let good = files();
    let mut r = rng("model file flips");
    let (mut loaded, mut refused, mut failures) = (0, 0, Vec::new());
    write_all(&dir, &good);
    for (i, (name, bytes)) in good.iter().enumerate() {
        let mut attempt = |content: &[u8], what: String| {
            std::fs::write(dir.join(name), content).unwrap();
            match try_load(&ctx, &dir) {
                Ok(true) => loaded += 1,
                Ok(false) => refused += 1,
                Err(e) => failures.push(format!("{name} {what}: {e}")),
            }
        };
        for cut in 0..bytes.len() {
            attempt(&bytes[..cut], format!("truncated to {cut} bytes"));
        }
        for _ in 0..300 {
            let mut b = bytes.clone();
            let flips = r.random_range(1..4);
            let mut at = Vec::new();
            for _ in 0..flips {
                // Most flips in the first 512 bytes: headers and configs.
                let p = if r.random() {
                    r.random_range(0..b.len().min(512))
                } else {
                    r.random_range(0..b.len())
                };
                b[p] ^= 1 << r.random_range(0..8);
                at.push(p);
            }
            attempt(&b, format!("(file {i}) with bits flipped at {at:?}"));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    eprintln!(
        "model files: {loaded} corrupted checkpoints still loaded (and embedded), {refused} refused with a Model error"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(refused > 0);
}

/// Configs and headers that claim more than the file holds: refused before
/// anything is allocated from the claim.
#[test]
fn lying_sizes_are_refused() {
    let ctx = ctx();
    let dir = folder("lying");
    let good = files();
    let huge = (1u64 << 60).to_string();
    let lies = [
        ("layers", config(&huge, "7", "8")),
        ("layers", config("2", "7", "8")),
        ("vocab", config("1", &huge, "8")),
        ("hidden", config("1", "7", &huge)),
        ("vocab below the tokenizer's", config("1", "5", "8")),
    ];
    for (what, cfg) in lies {
        write_all(&dir, &good);
        std::fs::write(dir.join("config.json"), cfg).unwrap();
        let e = SentenceEncoder::load(&ctx, &dir, DType::F32).unwrap_err();
        assert!(
            matches!(&e, Error::Model { .. }),
            "config with a lying {what}: {e}"
        );
        eprintln!("lying {what}: {e}");
    }
    // A safetensors header claiming a tensor far past the file's end.
    let st = &good
        .iter()
        .find(|(n, _)| *n == "model.safetensors")
        .unwrap()
        .1;
    let header_len = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(st[8..8 + header_len].to_vec()).unwrap();
    let lying = header.replacen("[7,8]", "[7000000000,8]", 1);
    assert_ne!(lying, header, "the word table's shape is in the header");
    let mut b = (lying.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(lying.as_bytes());
    b.extend_from_slice(&st[8 + header_len..]);
    write_all(&dir, &good);
    std::fs::write(dir.join("model.safetensors"), b).unwrap();
    let e = SentenceEncoder::load(&ctx, &dir, DType::F32).unwrap_err();
    assert!(matches!(&e, Error::Model { .. }), "{e}");
}

/// A tensor missing from `model.safetensors`, or of a shape `config.json`
/// does not give it: a Model error naming the file and the tensor's full
/// name.
#[test]
fn a_missing_or_misshapen_tensor_is_named() {
    let ctx = ctx();
    let dir = folder("tensors");
    let name = "encoder.layer.0.attention.self.key.weight";
    let mut missing = weights();
    missing.remove(name);
    // A task model's `bert.` prefix still finds the others.
    let missing: HashMap<_, _> = missing
        .into_iter()
        .map(|(k, v)| (format!("bert.{k}"), v))
        .collect();
    let mut misshapen = weights();
    misshapen.get_mut(name).unwrap().0 = vec![HIDDEN / 2, HIDDEN * 2];
    for (what, w) in [("missing", missing), ("misshapen", misshapen)] {
        write_all(&dir, &files());
        std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&w)).unwrap();
        let e = SentenceEncoder::load(&ctx, &dir, DType::F32).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, Error::Model { path, .. } if path.ends_with("model.safetensors"))
                && msg.contains(name),
            "{what} {name}: {msg}"
        );
        eprintln!("{what}: {msg}");
    }
}
