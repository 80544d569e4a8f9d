//! The f64 GPT-2 training reference (`reference::gpt2_train`) on tiny
//! models with random, non-degenerate weights: every parameter's gradient
//! against central finite differences of its own loss, the loss against the
//! cross-entropy of `reference::gpt2::forward`'s logits, and
//! `TrainerRef::step` against AdamW written out here (decay on the 2-D
//! parameters only). CPU only.
//!
//! The finite differences: a step `h = 1e-5 · max(1, |p|)` in f64 leaves a
//! truncation error `h² · |f'''| / 6` ≈ 2e-11 · |f'''|, under 1e-9 for the
//! third derivatives of this smooth loss (|f'''| ≲ 50 assumed, not
//! measured; the observed total, ≤ 3.1e-9 over seeds 1–8, bears it out),
//! and the loss's rounding (≲ 1e3 operations on a chain, each `u` = 1.1e-16
//! relative, on a loss ≈ 2.6: ≲ 3e-13) divided by `2h` adds ≲ 1.5e-8. A
//! bound of `1e-6 + 1e-5 · |g|` is 50× over both and tight against a
//! missing term (the gradients are 1e-3 .. 1).

mod common;

use std::collections::HashMap;

use common::{rng, uniform, Rng64};
use flashdot::models::Gpt2Config;
use flashdot::ops::grad::{AdamWOptions, IGNORE_INDEX};
use flashdot::reference::gpt2;
use flashdot::reference::gpt2_train::{
    decays, loss_and_grads, param_shapes, to_f64, Params, TrainerRef,
};
use rand::Rng;

/// A test model: its config and the shape of every tensor by HF name.
struct Model {
    c: Gpt2Config,
    shapes: Vec<(String, Vec<usize>)>,
}

fn model(vocab: usize, npos: usize, embd: usize, layers: usize, heads: usize) -> Model {
    let c = Gpt2Config::new(vocab, npos, embd, layers, heads);
    Model::of(c)
}

impl Model {
    fn of(c: Gpt2Config) -> Model {
        let (e, i) = (c.n_embd, c.inner());
        let mut shapes = vec![
            ("wte.weight".to_string(), vec![c.vocab_size, e]),
            ("wpe.weight".to_string(), vec![c.n_positions, e]),
        ];
        for l in 0..c.n_layer {
            for (name, shape) in [
                ("ln_1.weight", vec![e]),
                ("ln_1.bias", vec![e]),
                ("attn.c_attn.weight", vec![e, 3 * e]),
                ("attn.c_attn.bias", vec![3 * e]),
                ("attn.c_proj.weight", vec![e, e]),
                ("attn.c_proj.bias", vec![e]),
                ("ln_2.weight", vec![e]),
                ("ln_2.bias", vec![e]),
                ("mlp.c_fc.weight", vec![e, i]),
                ("mlp.c_fc.bias", vec![i]),
                ("mlp.c_proj.weight", vec![i, e]),
                ("mlp.c_proj.bias", vec![e]),
            ] {
                shapes.push((format!("h.{l}.{name}"), shape));
            }
        }
        shapes.push(("ln_f.weight".to_string(), vec![e]));
        shapes.push(("ln_f.bias".to_string(), vec![e]));
        Model { c, shapes }
    }

    /// Random weights that keep the loss far from flat: matrices with std
    /// 0.3, biases uniform in ±0.2, layer-norm γ in 1 ± 0.3.
    fn weights(&self, r: &mut Rng64) -> gpt2::Weights {
        let std3 = 0.3 * 3f32.sqrt();
        self.shapes
            .iter()
            .map(|(name, shape)| {
                let n = shape.iter().product();
                let u = uniform(r, n);
                let v: Vec<f32> = if shape.len() == 2 {
                    u.iter().map(|x| x * std3).collect()
                } else if name.contains("ln_") && name.ends_with(".weight") {
                    u.iter().map(|x| 1.0 + 0.3 * x).collect()
                } else {
                    u.iter().map(|x| 0.2 * x).collect()
                };
                (name.clone(), v)
            })
            .collect()
    }
}

/// Random ids, and targets with the rows `ignored` set to IGNORE_INDEX.
fn batch(r: &mut Rng64, c: &Gpt2Config, n: usize, ignored: &[usize]) -> (Vec<u32>, Vec<u32>) {
    let v = c.vocab_size as u32;
    let ids = (0..n).map(|_| r.random_range(0..v)).collect();
    let mut targets: Vec<u32> = (0..n).map(|_| r.random_range(0..v)).collect();
    ignored.iter().for_each(|&i| targets[i] = IGNORE_INDEX);
    (ids, targets)
}

/// The cases: (label, model, batch, seq, ignored rows). Odd widths and
/// head dims (5, 3), an `n_inner` that is not 4 · `n_embd`, a sequence
/// shorter than `n_positions` (so some `wpe` rows are unread) and one as
/// long; GPT-2's tanh GELU and the erf one.
fn cases() -> Vec<(&'static str, Model, usize, usize, Vec<usize>)> {
    let mut a = Gpt2Config::new(13, 8, 15, 2, 3);
    a.n_inner = Some(23);
    let mut b = model(11, 7, 15, 1, 5).c;
    b.activation_function = "gelu".into();
    vec![
        ("2 blocks gelu_new", Model::of(a), 2, 5, vec![3, 6]),
        ("1 block gelu erf", Model::of(b), 3, 7, vec![0, 13, 20]),
    ]
}

#[test]
fn gradients_match_central_differences() {
    for (label, m, bsz, seq, ignored) in cases() {
        let mut r = rng(&format!("gpt2 train fd {label}"));
        let params = to_f64(&m.weights(&mut r));
        let (ids, targets) = batch(&mut r, &m.c, bsz * seq, &ignored);
        let (loss, grads) = loss_and_grads(&params, &m.c, &ids, &targets, bsz, seq);
        assert!(loss.is_finite() && loss > 0.5, "{label}: loss {loss}");
        assert_eq!(
            grads.len(),
            params.len(),
            "{label}: one gradient per parameter"
        );
        let (mut worst, mut worst_rel) = (0.0f64, 0.0f64);
        for (name, shape) in &m.shapes {
            let g = &grads[name];
            assert_eq!(
                g.len(),
                params[name].len(),
                "{label} {name}: gradient length"
            );
            let mut p = params.clone();
            for (e, &want) in g.iter().enumerate() {
                let x = params[name][e];
                let h = 1e-5 * x.abs().max(1.0);
                let mut at = |v: f64| {
                    p.get_mut(name).unwrap()[e] = v;
                    loss_and_grads(&p, &m.c, &ids, &targets, bsz, seq).0
                };
                let (hi, lo) = (x + h, x - h);
                let fd = (at(hi) - at(lo)) / (hi - lo);
                p.get_mut(name).unwrap()[e] = x;
                let err = (fd - want).abs();
                assert!(
                    want.is_finite() && err <= 1e-6 + 1e-5 * want.abs(),
                    "{label} {name}{shape:?}[{e}]: finite difference {fd:e}, gradient {want:e}, \
                     |diff| {err:.2e} (seed {})",
                    common::seed()
                );
                worst = worst.max(err);
                worst_rel = worst_rel.max(err / want.abs().max(1e-3));
            }
            // Not vacuous: every tensor the loss reads moves it.
            let max = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(max > 1e-4, "{label} {name}: gradient at most {max:e}");
        }
        // wpe rows past seq are never read: exactly 0.
        let e = m.c.n_embd;
        assert!(
            grads["wpe.weight"][seq * e..].iter().all(|&v| v == 0.0),
            "{label}: wpe rows past seq {seq} have a gradient"
        );
        eprintln!("{label}: loss {loss:.4}, worst |fd − g| {worst:.2e} (relative {worst_rel:.1e})");
    }
}

#[test]
fn every_row_ignored_is_loss_zero_and_no_gradient() {
    let (label, m, bsz, seq, _) = cases().remove(0);
    let mut r = rng(&format!("gpt2 train ignored {label}"));
    let params = to_f64(&m.weights(&mut r));
    let all: Vec<usize> = (0..bsz * seq).collect();
    let (ids, targets) = batch(&mut r, &m.c, bsz * seq, &all);
    let (loss, grads) = loss_and_grads(&params, &m.c, &ids, &targets, bsz, seq);
    assert_eq!(loss, 0.0);
    for (name, g) in &grads {
        assert!(
            g.iter().all(|&v| v == 0.0),
            "{name}: a gradient with every row ignored"
        );
    }
}

/// The mean cross-entropy of f64 `logits [rows, vocab]`, written out.
fn mean_cross_entropy(logits: &[f64], targets: &[u32], vocab: usize) -> f64 {
    let rows: Vec<f64> = logits
        .chunks_exact(vocab)
        .zip(targets)
        .filter(|(_, &t)| t != IGNORE_INDEX)
        .map(|(row, &t)| row.iter().map(|x| x.exp()).sum::<f64>().ln() - row[t as usize])
        .collect();
    rows.iter().sum::<f64>() / rows.len() as f64
}

#[test]
fn loss_is_the_cross_entropy_of_the_forward_logits() {
    for (label, m, bsz, seq, ignored) in cases() {
        let mut r = rng(&format!("gpt2 train loss {label}"));
        let weights = m.weights(&mut r);
        let (ids, targets) = batch(&mut r, &m.c, bsz * seq, &ignored);
        let f = gpt2::forward(&weights, &m.c, &ids, bsz, seq);
        let want = mean_cross_entropy(&f.logits, &targets, m.c.vocab_size);
        let (got, _) = loss_and_grads(&to_f64(&weights), &m.c, &ids, &targets, bsz, seq);
        // The same f64 forward (f32 → f64 is exact); only the two
        // cross-entropies' summation orders differ.
        assert!(
            (got - want).abs() <= 1e-13 * want.abs(),
            "{label}: loss {got}, forward's cross-entropy {want} (seed {})",
            common::seed()
        );
    }
}

#[test]
fn parameter_shapes_and_the_decay_rule() {
    for (label, m, ..) in cases() {
        assert_eq!(param_shapes(&m.c), m.shapes, "{label}");
        // nanoGPT's and HF Trainer's rule by name: every weight but the
        // layer norms' decays, no bias does.
        for (name, shape) in &m.shapes {
            let by_name = name.ends_with(".weight") && !name.contains("ln_");
            assert_eq!(decays(shape), by_name, "{label} {name} {shape:?}");
        }
    }
}

/// AdamW as `torch.optim.AdamW` states it, on f64 state.
fn adamw(
    p: &mut Params,
    m: &mut Params,
    v: &mut Params,
    g: &Params,
    t: i32,
    o: &AdamWOptions,
    shapes: &HashMap<String, usize>,
) {
    let (b1, b2) = o.betas;
    for (name, p) in p.iter_mut() {
        let wd = if shapes[name] == 2 {
            o.weight_decay
        } else {
            0.0
        };
        let (m, v, g) = (m.get_mut(name).unwrap(), v.get_mut(name).unwrap(), &g[name]);
        for i in 0..p.len() {
            p[i] *= 1.0 - o.lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let (mh, vh) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
            p[i] -= o.lr * mh / (vh.sqrt() + o.eps);
        }
    }
}

#[test]
fn trainer_steps_are_adamw_on_the_gradients() {
    let opts = AdamWOptions {
        lr: 3e-2,
        betas: (0.8, 0.95),
        eps: 1e-8,
        weight_decay: 0.1,
    };
    for (label, m, bsz, seq, ignored) in cases() {
        let mut r = rng(&format!("gpt2 train adamw {label}"));
        let weights = m.weights(&mut r);
        let dims: HashMap<String, usize> =
            m.shapes.iter().map(|(n, s)| (n.clone(), s.len())).collect();
        let mut trainer = TrainerRef::new(&weights, &m.c);
        assert!(trainer.grads().is_none() && trainer.steps() == 0);
        let p0 = to_f64(&weights);
        let zeros: Params = p0
            .iter()
            .map(|(k, v)| (k.clone(), vec![0.0; v.len()]))
            .collect();
        let (mut mom, mut vel) = (zeros.clone(), zeros);
        for t in 1..=2 {
            // A different batch each step. Each step starts from the
            // trainer's own parameters, so that the two writings' ulps do
            // not compound into the next step's loss.
            let (ids, targets) = batch(&mut r, &m.c, bsz * seq, &ignored);
            let mut p = trainer.params().clone();
            let (want_loss, g) = loss_and_grads(&p, &m.c, &ids, &targets, bsz, seq);
            let loss = trainer.step(&ids, &targets, bsz, seq, &opts);
            assert_eq!(
                loss, want_loss,
                "{label} step {t}: the loss before the update"
            );
            assert_eq!(
                trainer.grads(),
                Some(&g),
                "{label} step {t}: the gradients kept"
            );
            assert_eq!(trainer.steps(), t as u64);
            adamw(&mut p, &mut mom, &mut vel, &g, t, &opts, &dims);
            for (name, want) in &p {
                let got = &trainer.params()[name];
                // Two writings of one f64 formula: a few ulps apart, where a
                // wrong update moves by lr · wd · |p| ≳ 1e-4 or lr · 1.
                for (e, (a, b)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-13 * (1.0 + b.abs()),
                        "{label} step {t} {name}[{e}]: trainer {a}, AdamW {b} (seed {})",
                        common::seed()
                    );
                }
            }
        }
        // An unread wpe row has gradient 0, so AdamW moves it by the decay
        // alone: (1 − lr · wd)² after two steps.
        let row = seq * m.c.n_embd;
        let (w0, w2) = (
            &to_f64(&weights)["wpe.weight"],
            &trainer.params()["wpe.weight"],
        );
        let shrink = (1.0 - opts.lr * opts.weight_decay).powi(2);
        if seq < m.c.n_positions {
            assert!(
                (w2[row] - w0[row] * shrink).abs() <= 1e-15,
                "{label}: unread wpe row"
            );
        }
    }
}
