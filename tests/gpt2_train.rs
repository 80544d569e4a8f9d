//! Training the GPT-2 model on the device (`models::Gpt2Trainer`) against
//! the f64 training loop (`reference::gpt2_train`, itself checked by finite
//! differences in tests/gpt2_train_reference.rs): the same init, the same
//! batches, step by step (as llm.c checks its first steps against
//! PyTorch): the gradients of the first step tensor by tensor, then the loss
//! of every step. Also the checkpoint after training saved and reloaded bit
//! for bit, and bad input as typed errors.
#![cfg(feature = "models")]

mod common;

use std::collections::HashMap;

use common::*;
use flashdot::models::{Gpt2, Gpt2Config, Gpt2Trainer};
use flashdot::ops::grad::{AdamWOptions, IGNORE_INDEX};
use flashdot::reference::gpt2_train::{Params, TrainerRef};
use flashdot::Error;
use rand::Rng;

/// A model of odd sizes (width 15, head dim 5, n_inner 60, 9 positions),
/// drawn with GPT-2's init at standard deviation `std` (0.02 is GPT-2's;
/// larger makes the attention peaked and the GELU curved).
fn model(std: f64, layers: usize, act: &str) -> Gpt2 {
    let mut c = Gpt2Config::new(23, 9, 15, layers, 3);
    c.initializer_range = std;
    c.activation_function = act.into();
    Gpt2::random(&ctx(), &c, seed()).unwrap()
}

/// `batch × seq` random ids and their targets, a few of them ignored.
fn batch(r: &mut Rng64, vocab: usize, n: usize) -> (Vec<u32>, Vec<u32>) {
    let ids = (0..n).map(|_| r.random_range(0..vocab as u32)).collect();
    let targets = (0..n)
        .map(|i| match i % 5 {
            3 => IGNORE_INDEX,
            _ => r.random_range(0..vocab as u32),
        })
        .collect();
    (ids, targets)
}

fn by_name(g: Vec<flashdot::models::NamedTensor>) -> HashMap<String, Vec<f32>> {
    g.into_iter().map(|t| (t.name, t.data)).collect()
}

/// ‖got − want‖₂ and ‖want‖₂.
fn l2(got: &[f32], want: &[f64]) -> (f64, f64) {
    let e = got
        .iter()
        .zip(want)
        .map(|(&g, w)| (g as f64 - w).powi(2))
        .sum::<f64>();
    (e.sqrt(), want.iter().map(|w| w * w).sum::<f64>().sqrt())
}

/// `steps` steps of the device trainer and the f64 loop on the same
/// batches: the first step's gradients within relative L2 `grad_tol` of
/// the reference's (of the norm of all gradients, for a tensor whose own
/// gradient vanishes: the key bias's is 0 exactly, softmax being blind to
/// a constant added to every score), each step's loss within `loss_tol`
/// (relative).
fn steps_match(case: &str, m: Gpt2, (b, s): (usize, usize), steps: usize) {
    let c = m.config().clone();
    let weights = by_name(m.tensors().unwrap());
    let opts = AdamWOptions {
        lr: 1e-2,
        betas: (0.9, 0.95),
        weight_decay: 0.1,
        ..AdamWOptions::default()
    };
    let mut gpu = Gpt2Trainer::new(m, b, s, opts).unwrap();
    let mut cpu = TrainerRef::new(&weights, &c);
    let mut r = rng(case);
    for t in 0..steps {
        let (ids, targets) = batch(&mut r, c.vocab_size, b * s);
        let got = gpu.step(&ids, &targets).unwrap() as f64;
        let want = cpu.step(&ids, &targets, b, s, &opts);
        let err = (got - want).abs() / want.abs();
        println!("{case} step {t}: loss {got:.7} (f64 {want:.7}), relative error {err:.2e}");
        if t == 0 {
            check_grads(case, &gpu, cpu.grads().unwrap());
        }
        // f32 against f64 along the same trajectory: the forward's 1e-5
        // at the first step, and each AdamW step's rounding after.
        let bound = 1e-5 * (1 + t) as f64;
        assert!(
            err <= bound,
            "{case} step {t}: loss {got} vs {want}, relative {err:.2e} > {bound:.1e}"
        );
    }
}

fn check_grads(case: &str, gpu: &Gpt2Trainer, want: &Params) {
    let got = by_name(gpu.gradients().unwrap());
    let total = want.values().flatten().map(|w| w * w).sum::<f64>().sqrt();
    for (name, w) in want {
        let g = &got[name];
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{case} {name}: non-finite gradient"
        );
        let (e, n) = l2(g, w);
        println!(
            "{case} {name}: relative L2 {:.2e} (norm {n:.2e})",
            e / n.max(1e-300)
        );
        assert!(
            e <= 1e-5 * n + 1e-6 * total,
            "{case} {name}: gradient error {e:.3e} against its norm {n:.3e} (all: {total:.3e})"
        );
    }
}

#[test]
fn training_steps_match_the_f64_loop() {
    steps_match("peaked, gelu_new", model(0.3, 2, "gelu_new"), (3, 7), 10);
    steps_match("gpt-2 init, relu", model(0.02, 1, "relu"), (2, 9), 4);
}

/// After a few steps the trained model saves and reloads bit for bit, and
/// the reloaded model's logits are the trainer's.
#[test]
fn trained_checkpoint_round_trips_bit_for_bit() {
    let m = model(0.3, 2, "gelu_new");
    let c = m.config().clone();
    let mut trainer = Gpt2Trainer::new(m, 2, 5, AdamWOptions::default()).unwrap();
    let mut r = rng("trained checkpoint");
    for _ in 0..3 {
        let (ids, targets) = batch(&mut r, c.vocab_size, 10);
        trainer.step(&ids, &targets).unwrap();
    }
    assert_eq!(trainer.steps(), 3);
    let model = trainer.into_model();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpt2_trained");
    let _ = std::fs::remove_dir_all(&dir);
    model.save(&dir).unwrap();
    let back = Gpt2::load(model.context(), &dir).unwrap();
    assert_eq!(back.tensors().unwrap(), model.tensors().unwrap());
    assert_eq!(back.config(), model.config());
    let (ids, _) = batch(&mut r, c.vocab_size, 10);
    let a = model.forward(&ids, 2, 5).unwrap().to_vec::<f32>().unwrap();
    let b = back.forward(&ids, 2, 5).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
}

#[test]
fn trainer_bad_input_is_a_typed_error() {
    let m = || model(0.02, 1, "gelu_new");
    let o = AdamWOptions::default();
    for (b, s) in [(0, 4), (2, 0)] {
        let e = Gpt2Trainer::new(m(), b, s, o).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
    let e = Gpt2Trainer::new(m(), 1, 10, o).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("n_positions"),
        "{e}"
    );
    let bad = AdamWOptions { lr: -1.0, ..o };
    assert!(matches!(
        Gpt2Trainer::new(m(), 1, 4, bad),
        Err(Error::InvalidArgument { .. })
    ));
    let mut t = Gpt2Trainer::new(m(), 2, 3, o).unwrap();
    assert!(matches!(
        t.set_lr(f64::NAN),
        Err(Error::InvalidArgument { .. })
    ));
    let ok = vec![1u32; 6];
    let e = t.step(&ok[..5], &ok).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = t.step(&ok, &ok[..5]).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("5 targets"),
        "{e}"
    );
    let mut past = ok.clone();
    past[4] = 23;
    let e = t.step(&past, &ok).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("[1, 1]"),
        "{e}"
    );
    let e = t.step(&ok, &past).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("row 4"),
        "{e}"
    );
    // A refused step runs nothing: no step is counted and training goes on.
    assert_eq!(t.steps(), 0);
    assert!(t.step(&ok, &ok).unwrap().is_finite());
    assert_eq!(t.steps(), 1);
}
