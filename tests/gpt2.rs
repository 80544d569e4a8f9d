//! The GPT-2-architecture model (`models::Gpt2`) on tiny random checkpoints:
//! the forward against the f64 reference (`reference::gpt2`) stage by stage
//! (every block's residual stream and attention log-sum-exp, then the
//! logits) at seq 1, 7 and 33, batch 1 and 3, head dims 16 and 17, outputs
//! NaN-poisoned first; causality; GPT-2's seeded init; save → load bit for
//! bit; and bad input and bad files as typed errors, never a panic.
#![cfg(feature = "models")]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use flashdot::models::{Gpt2, Gpt2Activations, Gpt2Config, NamedTensor};
use flashdot::reference::gpt2 as reference;
use flashdot::{verify, Error};
use rand::Rng;

const VOCAB: usize = 97;
const POSITIONS: usize = 40;
const LAYERS: usize = 2;
const HEADS: usize = 3;

/// A Hugging Face GPT-2 `config.json` as `transformers` writes one (with
/// fields the model does not read), at the tiny sizes.
fn config_json(n_embd: usize, n_inner: Option<usize>, layers: usize) -> String {
    let inner = n_inner.map_or("null".to_string(), |n| n.to_string());
    format!(
        r#"{{"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1, "bos_token_id": 0, "embd_pdrop": 0.1, "eos_token_id": 0,
  "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
  "n_ctx": {POSITIONS}, "n_embd": {n_embd}, "n_head": {HEADS}, "n_inner": {inner},
  "n_layer": {layers}, "n_positions": {POSITIONS}, "resid_pdrop": 0.1,
  "summary_activation": null, "summary_type": "cls_index", "vocab_size": {VOCAB}}}"#
    )
}

/// The two model shapes of the forward test: head dim 16 with `n_inner`
/// 4 · 48 and GPT-2's epsilon, and head dim 17 (odd, `n_embd` 51 not a
/// multiple of 4) with `n_inner` 100 and an epsilon of 0.01 (GPT-2's 1e-5
/// moves the normalised values by about 1e-5 relative here, which a
/// relative L2 bound of 1e-5 would not tell from its absence).
const SHAPES: [(usize, Option<usize>, f64); 2] = [(48, None, 1e-5), (51, Some(100), 1e-2)];

/// `json` with another `layer_norm_epsilon`.
fn with_eps(json: &str, eps: f64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["layer_norm_epsilon"] = eps.into();
    v.to_string()
}

fn config(n_embd: usize, n_inner: Option<usize>) -> Gpt2Config {
    serde_json::from_str(&config_json(n_embd, n_inner, LAYERS)).unwrap()
}

/// A checkpoint's tensors in Hugging Face's names and layout, seeded, at
/// scales that make the attention peaked and the GELU curved (GPT-2's init
/// leaves both nearly linear): q·k scores of a few units, feed-forward
/// pre-activations of about 1.5, layer norms and biases away from 1 and 0.
fn checkpoint(c: &Gpt2Config, case: &str) -> Vec<NamedTensor> {
    let mut r = rng(case);
    let (e, f) = (c.n_embd, c.inner());
    let mut out = Vec::new();
    let mut put = |name: String, shape: Vec<usize>, centre: f32, half: f32| {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| centre + r.random_range(-half..half))
            .collect();
        out.push(NamedTensor { name, shape, data });
    };
    // Uniform in ±a has std a/√3.
    let std = |s: f32| s * 3f32.sqrt();
    put("wte.weight".into(), vec![VOCAB, e], 0.0, 1.0);
    put("wpe.weight".into(), vec![POSITIONS, e], 0.0, 1.0);
    for i in 0..c.n_layer {
        let p = |s: &str| format!("h.{i}.{s}");
        for ln in ["ln_1", "ln_2"] {
            put(p(&format!("{ln}.weight")), vec![e], 1.0, 0.5);
            put(p(&format!("{ln}.bias")), vec![e], 0.0, 0.3);
        }
        let conv = [
            ("attn.c_attn", e, 3 * e, 2.0 / (e as f32).sqrt()),
            ("attn.c_proj", e, e, 1.0 / (e as f32).sqrt()),
            ("mlp.c_fc", e, f, 1.5 / (e as f32).sqrt()),
            ("mlp.c_proj", f, e, 1.0 / (f as f32).sqrt()),
        ];
        for (name, inp, o, s) in conv {
            put(p(&format!("{name}.weight")), vec![inp, o], 0.0, std(s));
            put(p(&format!("{name}.bias")), vec![o], 0.0, 0.2);
        }
    }
    put("ln_f.weight".into(), vec![e], 1.0, 0.5);
    put("ln_f.bias".into(), vec![e], 0.0, 0.3);
    out
}

fn safetensors_bytes(tensors: &[NamedTensor], prefix: &str) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)
                    .unwrap();
            (format!("{prefix}{}", t.name), view)
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

/// A fresh folder under the target directory for this test's files.
fn folder(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gpt2_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a checkpoint folder: `config.json` and `model.safetensors`.
fn write(dir: &Path, config: &str, weights: &[u8]) {
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
}

fn weights_map(tensors: &[NamedTensor]) -> reference::Weights {
    tensors
        .iter()
        .map(|t| (t.name.clone(), t.data.clone()))
        .collect()
}

fn ids(case: &str, n: usize) -> Vec<u32> {
    let mut r = rng(case);
    (0..n).map(|_| r.random_range(0..VOCAB as u32)).collect()
}

/// Poisons every tensor a kept forward writes that the test reads.
fn poison(acts: &Gpt2Activations, layers: usize) {
    acts.logits().poison().unwrap();
    for i in 0..=layers {
        if let Some(h) = acts.hidden(i) {
            h.poison().unwrap();
        }
        if let Some(l) = acts.lse(i) {
            l.poison().unwrap();
        }
    }
}

/// The relative L2 error every f32 stage is held to (the f32 roundings of
/// two blocks at these widths come to a few 1e-7).
const TOL: f64 = 1e-5;

/// Runs `model` on random ids at every (batch, seq) of the grid, kept and
/// not, against the reference on `weights`; returns the worst logits error.
fn forward_matches(model: &Gpt2, weights: &reference::Weights, what: &str) -> f64 {
    let c = model.config();
    let mut worst = 0.0f64;
    for (batch, seq) in [(1, 1), (1, 7), (1, 33), (3, 1), (3, 7), (3, 33)] {
        let case = format!("{what}: batch {batch}, seq {seq}");
        let ids = ids(&case, batch * seq);
        let want = reference::forward(weights, c, &ids, batch, seq);
        let acts = model.activations(batch, seq, true).unwrap();
        poison(&acts, c.n_layer);
        model.forward_into(&ids, &acts).unwrap();
        for (i, h) in want.hidden.iter().enumerate() {
            let got = acts.hidden(i).unwrap().to_vec::<f32>().unwrap();
            check(
                &verify::compare(&got, h),
                TOL,
                &format!("{case}: stream {i}"),
            );
        }
        for (i, l) in want.lse.iter().enumerate() {
            let got = acts.lse(i).unwrap().to_vec::<f32>().unwrap();
            check(&verify::compare(&got, l), TOL, &format!("{case}: lse {i}"));
        }
        let logits = acts.logits();
        assert_eq!(logits.shape(), [batch, seq, VOCAB]);
        let r = verify::compare(&logits.to_vec::<f32>().unwrap(), &want.logits);
        check(&r, TOL, &format!("{case}: logits (kept)"));
        worst = worst.max(r.rel_l2);
        // Without keep: one set of activations for both blocks.
        let plain = model.forward(&ids, batch, seq).unwrap();
        let r = verify::compare(&plain.to_vec::<f32>().unwrap(), &want.logits);
        check(&r, TOL, &format!("{case}: logits"));
        worst = worst.max(r.rel_l2);
    }
    worst
}

#[test]
fn forward_matches_the_reference_stage_by_stage() {
    for (e, inner, eps) in SHAPES {
        let json = with_eps(&config_json(e, inner, LAYERS), eps);
        let c: Gpt2Config = serde_json::from_str(&json).unwrap();
        let what = format!(
            "n_embd {e}, head dim {}, n_inner {}",
            c.head_dim(),
            c.inner()
        );
        let tensors = checkpoint(&c, &what);
        let dir = folder(&format!("forward_{e}"));
        write(&dir, &json, &safetensors_bytes(&tensors, ""));
        let model = Gpt2::load(&ctx(), &dir).unwrap();
        assert_eq!(model.config(), &c);
        let worst = forward_matches(&model, &weights_map(&tensors), &what);
        eprintln!("{what}: worst logits rel L2 {worst:.2e} (seed {})", seed());
    }
}

/// GPT-2's own init (std 0.02: near-uniform attention) through the same
/// grid, its tensors exported by the model; also with one block and with
/// none (embeddings, `ln_f`, logits).
#[test]
fn gpt2_init_forward_matches_the_reference() {
    for layers in [LAYERS, 1, 0] {
        let c: Gpt2Config = serde_json::from_str(&config_json(48, None, layers)).unwrap();
        let model_seed = rng(&format!("init forward {layers}")).random::<u64>();
        let model = Gpt2::random(&ctx(), &c, model_seed).unwrap();
        let weights = weights_map(&model.tensors().unwrap());
        let what = format!("GPT-2 init, {layers} blocks");
        let worst = forward_matches(&model, &weights, &what);
        eprintln!("{what}: worst logits rel L2 {worst:.2e} (seed {})", seed());
    }
}

/// A position's logits do not depend on later tokens: changing the last
/// token of every sequence leaves the earlier positions' logits bit for bit.
#[test]
fn later_tokens_change_no_earlier_logits() {
    let c = config(51, Some(100));
    let model = Gpt2::random(&ctx(), &c, 7).unwrap();
    let (batch, seq) = (3, 19);
    let mut a = ids("causal", batch * seq);
    let before = model
        .forward(&a, batch, seq)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    for b in 0..batch {
        a[b * seq + seq - 1] = (a[b * seq + seq - 1] + 1) % VOCAB as u32;
    }
    let after = model
        .forward(&a, batch, seq)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    for b in 0..batch {
        for t in 0..seq {
            let row = |x: &[f32]| x[(b * seq + t) * VOCAB..][..VOCAB].to_vec();
            let same = row(&before) == row(&after);
            assert_eq!(same, t < seq - 1, "sequence {b}, position {t}");
        }
    }
}

/// The init is GPT-2's: seeded (same seed, same bits; another seed, other
/// values), weights of std 0.02, residual projections 0.02/√(2·n_layer),
/// zero biases, layer norms 1 and 0.
#[test]
fn random_init_is_gpt2s() {
    let c = config(48, None);
    let t = Gpt2::random(&ctx(), &c, 42).unwrap().tensors().unwrap();
    let again = Gpt2::random(&ctx(), &c, 42).unwrap().tensors().unwrap();
    let other = Gpt2::random(&ctx(), &c, 43).unwrap().tensors().unwrap();
    assert_eq!(bits(&t), bits(&again));
    assert_ne!(t[0].data, other[0].data);
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 4 + 12 * LAYERS);
    assert_eq!(
        &names[..4],
        [
            "wte.weight",
            "wpe.weight",
            "h.0.ln_1.weight",
            "h.0.ln_1.bias"
        ]
    );
    assert_eq!(names[names.len() - 1], "ln_f.bias");
    let proj = 0.02 / (2.0 * LAYERS as f64).sqrt();
    for x in &t {
        let n = x.data.len() as f64;
        let mean = x.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let sd = (x
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let name = x.name.as_str();
        if name.contains("ln_") {
            let want = if name.ends_with("weight") { 1.0 } else { 0.0 };
            assert!(x.data.iter().all(|&v| v == want), "{name}");
        } else if name.ends_with("bias") {
            assert!(x.data.iter().all(|&v| v == 0.0), "{name}");
        } else {
            let want = if name.ends_with("c_proj.weight") {
                proj
            } else {
                0.02
            };
            // n ≥ 2,304 draws: the sample std is within 6 % (> 4 sd of it).
            assert!(
                (sd / want - 1.0).abs() < 0.06,
                "{name}: std {sd:.5}, want {want:.5}"
            );
            assert!(
                mean.abs() < 4.0 * want / n.sqrt(),
                "{name}: mean {mean:.2e}"
            );
        }
    }
    let shape = |name: &str| t.iter().find(|x| x.name == name).unwrap().shape.clone();
    assert_eq!(shape("h.1.attn.c_attn.weight"), [48, 144]);
    assert_eq!(shape("h.1.mlp.c_fc.weight"), [48, 192]);
    assert_eq!(shape("h.1.mlp.c_proj.weight"), [192, 48]);
}

fn bits(t: &[NamedTensor]) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    t.iter()
        .map(|x| {
            let b = x.data.iter().map(|v| v.to_bits()).collect();
            (x.name.clone(), x.shape.clone(), b)
        })
        .collect()
}

/// Save → load gives the same config and bits, and saving again the same
/// files; a checkpoint written in Hugging Face's layout (also under
/// `GPT2LMHeadModel`'s `transformer.` prefix) reads back as written, so the
/// `Conv1D` transposition on load and on save undo each other.
#[test]
fn save_and_load_round_trip_bit_for_bit() {
    let c = config(51, Some(100));
    let model = Gpt2::random(&ctx(), &c, rng("round trip").random()).unwrap();
    let (a, b) = (folder("save_a"), folder("save_b"));
    model.save(&a).unwrap();
    let back = Gpt2::load(&ctx(), &a).unwrap();
    assert_eq!(back.config(), &c);
    assert_eq!(
        bits(&back.tensors().unwrap()),
        bits(&model.tensors().unwrap())
    );
    back.save(&b).unwrap();
    for f in ["config.json", "model.safetensors"] {
        let read = |d: &Path| std::fs::read(d.join(f)).unwrap();
        assert!(read(&a) == read(&b), "{f} differs after a second save");
    }
    let bytes = std::fs::read(a.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let format = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned());
    assert_eq!(format.as_deref(), Some("pt"));
    let hf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(hf["model_type"], "gpt2");
    assert_eq!(hf["n_inner"], 100);

    let written = checkpoint(&c, "written checkpoint");
    for prefix in ["", "transformer."] {
        let dir = folder("written");
        write(
            &dir,
            &config_json(51, Some(100), LAYERS),
            &safetensors_bytes(&written, prefix),
        );
        let got = Gpt2::load(&ctx(), &dir).unwrap().tensors().unwrap();
        let mut want = written.clone();
        want.sort_by(|x, y| x.name.cmp(&y.name));
        let mut got = got;
        got.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(bits(&got), bits(&want), "prefix {prefix:?}");
    }
}

#[track_caller]
fn expect<T: std::fmt::Debug>(r: flashdot::Result<T>, what: &str, ok: impl Fn(&Error) -> bool) {
    match r {
        Err(e) if ok(&e) => eprintln!("{what}: {e}"),
        other => panic!("{what}: unexpected {other:?}"),
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = config(48, None);
    let model = Gpt2::random(&ctx(), &c, 1).unwrap();
    let mut bad = ids("bad ids", 14);
    bad[9] = VOCAB as u32;
    expect(
        model.forward(&bad, 2, 7),
        "id = vocab",
        |e| matches!(e, Error::InvalidArgument { detail, .. } if detail.contains("[1, 2]")),
    );
    let long = ids("long", POSITIONS + 1);
    expect(
        model.forward(&long, 1, POSITIONS + 1),
        "seq > n_positions",
        |e| matches!(e, Error::Shape { detail, .. } if detail.contains("n_positions")),
    );
    expect(
        model.activations(2, POSITIONS + 1, true),
        "activations past n_positions",
        |e| matches!(e, Error::Shape { .. }),
    );
    expect(model.forward(&bad[..13], 2, 7), "13 ids for 2 × 7", |e| {
        matches!(e, Error::Shape { .. })
    });
    let other = Gpt2::random(&ctx(), &config(51, Some(100)), 1).unwrap();
    let acts = other.activations(2, 7, false).unwrap();
    expect(
        model.forward_into(&bad[..14], &acts),
        "another model's activations",
        |e| matches!(e, Error::InvalidArgument { .. }),
    );
    // Empty batches are empty logits.
    assert_eq!(model.forward(&[], 0, 5).unwrap().shape(), [0, 5, VOCAB]);
    assert_eq!(model.forward(&[], 2, 0).unwrap().shape(), [2, 0, VOCAB]);
    // Configs flashdot does not run.
    let json = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&config_json(48, None, 2)).unwrap();
        edit(&mut v);
        v
    };
    let cases: [(&str, serde_json::Value); 5] = [
        ("n_embd % n_head", json(&|v| v["n_head"] = 5.into())),
        (
            "head dim 300",
            json(&|v| {
                v["n_embd"] = 300.into();
                v["n_head"] = 1.into()
            }),
        ),
        (
            "quick_gelu",
            json(&|v| v["activation_function"] = "quick_gelu".into()),
        ),
        (
            "untied head",
            json(&|v| v["tie_word_embeddings"] = false.into()),
        ),
        ("no positions", json(&|v| v["n_positions"] = 0.into())),
    ];
    for (what, v) in cases {
        let cfg: Gpt2Config = serde_json::from_value(v.clone()).unwrap();
        expect(Gpt2::random(&ctx(), &cfg, 1), what, |e| {
            matches!(e, Error::InvalidArgument { .. })
        });
        let dir = folder("bad_config");
        write(&dir, &v.to_string(), &[]);
        expect(
            Gpt2::load(&ctx(), &dir),
            what,
            |e| matches!(e, Error::Model { path, .. } if path.ends_with("config.json")),
        );
    }
}

/// Bad checkpoints: a missing tensor, one of the wrong shape (a `Conv1D`
/// weight stored as `[out, in]`), an f16 tensor, more blocks claimed than
/// the file holds (up to 2^64 − 1: nothing is sized from the claim), missing files, and the file truncated at every byte of its header
/// and at 100 points of its data: each an [`Error::Model`] naming the file
/// (and the tensor), never a panic.
#[test]
fn bad_files_are_typed_errors() {
    let c = config(48, None);
    let good = checkpoint(&c, "bad files");
    let cfg = config_json(48, None, LAYERS);
    let dir = folder("bad_files");
    let load = |config: &str, weights: &[u8]| {
        write(&dir, config, weights);
        Gpt2::load(&ctx(), &dir)
    };
    let names_file = |e: &Error, needles: &[&str]| {
        matches!(e, Error::Model { path, detail }
            if path.ends_with("model.safetensors") && needles.iter().all(|n| detail.contains(n)))
    };
    let without: Vec<NamedTensor> = good
        .iter()
        .filter(|t| t.name != "h.1.mlp.c_fc.bias")
        .cloned()
        .collect();
    expect(
        load(&cfg, &safetensors_bytes(&without, "")),
        "missing tensor",
        |e| names_file(e, &["h.1.mlp.c_fc.bias"]),
    );
    let mut transposed = good.clone();
    let t = transposed
        .iter_mut()
        .find(|t| t.name == "h.0.attn.c_attn.weight")
        .unwrap();
    t.shape = vec![144, 48];
    expect(
        load(&cfg, &safetensors_bytes(&transposed, "")),
        "wrong shape",
        |e| names_file(e, &["h.0.attn.c_attn.weight", "[144, 48]", "[48, 144]"]),
    );
    let three = config_json(48, None, 3);
    expect(
        load(&three, &safetensors_bytes(&good, "")),
        "3 blocks claimed",
        |e| names_file(e, &["no tensor h.2.ln_1.weight"]),
    );
    let huge = config_json(48, None, usize::MAX);
    expect(
        load(&huge, &safetensors_bytes(&good, "")),
        "2^64 blocks claimed",
        |e| names_file(e, &["no tensor h.2.ln_1.weight"]),
    );
    // An f16 tensor where f32 is expected.
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
    let data: Vec<Vec<u8>> = good
        .iter()
        .map(|t| t.data.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    for (t, d) in good.iter().zip(&data) {
        let (dtype, bytes) = match t.name.as_str() {
            "ln_f.bias" => (safetensors::Dtype::F16, &d[..d.len() / 2]),
            _ => (safetensors::Dtype::F32, &d[..]),
        };
        let v = safetensors::tensor::TensorView::new(dtype, t.shape.clone(), bytes).unwrap();
        views.push((t.name.clone(), v));
    }
    let f16 = safetensors::tensor::serialize(views, None).unwrap();
    expect(load(&cfg, &f16), "f16 tensor", |e| {
        names_file(e, &["ln_f.bias", "F16"])
    });
    // Missing files.
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    expect(Gpt2::load(&ctx(), &dir), "no weights file", |e| {
        names_file(e, &[])
    });
    std::fs::remove_file(dir.join("config.json")).unwrap();
    expect(
        Gpt2::load(&ctx(), &dir),
        "no config file",
        |e| matches!(e, Error::Model { path, .. } if path.ends_with("config.json")),
    );
    // Truncated: every byte of the header, 100 points of the data.
    let full = safetensors_bytes(&good, "");
    let header = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let cuts =
        (0..=header).chain((0..100).map(|k| header + 1 + k * (full.len() - header - 2) / 99));
    std::fs::write(dir.join("config.json"), &cfg).unwrap();
    for cut in cuts {
        std::fs::write(dir.join("model.safetensors"), &full[..cut]).unwrap();
        match Gpt2::load(&ctx(), &dir) {
            Err(e) if names_file(&e, &[]) => {}
            other => panic!("truncated at byte {cut} of {}: {other:?}", full.len()),
        }
    }
}
