//! The f64 attention-backward reference (`reference::attention::attention_backward`)
//! validated by central finite differences of the forward reference on
//! tiny shapes, for every option it differentiates through: causal (both
//! alignments), GQA, per-sequence kv_len, bias (and its gradient), window,
//! soft cap, ALiBi, sinks, both layouts, seq_q ≠ seq_k both ways, and a
//! fully masked row (zero gradient, not NaN). CPU only.

mod common;

use common::{rng, uniform};
use flashdot::ops::attention::{Causal, Layout};
use flashdot::reference::attention::{attention, attention_backward, AttentionRef};

/// The loss whose gradient is checked: Σ O ∘ dO.
fn loss(a: &AttentionRef, d_out: &[f32]) -> f64 {
    let (o, _) = attention(a);
    o.iter().zip(d_out).map(|(o, g)| o * *g as f64).sum()
}

/// Central differences of `loss` in each element of the operand `which`
/// (0 q, 1 k, 2 v, 3 bias) against the reference's gradient. The step is
/// 2^-7: the f32 rounding of x ± h errs by ~1e-7 relative to x, ~5e-6
/// after the division; the truncation error is O(h²·L''') ~ 1e-4 here.
fn check(case: &str, base: &AttentionRef, d_out: &[f32]) {
    let g = attention_backward(base, d_out);
    let h = 1.0f32 / 128.0;
    let mut ops: Vec<(usize, Vec<f32>, &[f64])> = vec![
        (0, base.q.to_vec(), &g.dq),
        (1, base.k.to_vec(), &g.dk),
        (2, base.v.to_vec(), &g.dv),
    ];
    if let (Some((bias, _)), Some(db)) = (base.bias, g.dbias.as_ref()) {
        ops.push((3, bias.to_vec(), db));
    }
    for (which, vals, grad) in ops {
        assert_eq!(
            vals.len(),
            grad.len(),
            "{case}: operand {which} gradient length"
        );
        for e in 0..vals.len() {
            let at = |delta: f32| {
                let mut v = vals.clone();
                v[e] += delta;
                let mut a = *base;
                match which {
                    0 => a.q = &v,
                    1 => a.k = &v,
                    2 => a.v = &v,
                    _ => a.bias = base.bias.map(|(_, s)| (&v[..], s)),
                }
                loss(&a, d_out)
            };
            let num = (at(h) - at(-h)) / (2.0 * h as f64);
            assert!(
                grad[e].is_finite(),
                "{case}: operand {which}[{e}] is {}",
                grad[e]
            );
            assert!(
                (num - grad[e]).abs() <= 2e-3 * (1.0 + num.abs()),
                "{case}: operand {which}[{e}]: finite difference {num}, reference {}",
                grad[e]
            );
        }
    }
}

#[test]
fn backward_reference_matches_finite_differences() {
    // (b, hq, hkv, sq, sk, d, dv)
    let shapes = [
        [1, 1, 1, 3, 4, 3, 2],
        [2, 2, 1, 4, 3, 5, 3],
        [1, 4, 2, 1, 5, 2, 4],
        [1, 2, 2, 5, 2, 3, 1],
    ];
    for dims in shapes {
        let [b, hq, hkv, sq, sk, d, dv] = dims;
        let mut r = rng(&format!("backward {dims:?}"));
        let q = uniform(&mut r, b * hq * sq * d);
        let k = uniform(&mut r, b * hkv * sk * d);
        let v = uniform(&mut r, b * hkv * sk * dv);
        let d_out = uniform(&mut r, b * hq * sq * dv);
        let bias = uniform(&mut r, hq * sq * sk);
        let alibi: Vec<f32> = (0..hq).map(|h| 0.25 / (h + 1) as f32).collect();
        let sinks: Vec<f32> = (0..hq).map(|h| 0.5 - h as f32 * 0.3).collect();
        let kv_len: Vec<u32> = (0..b).map(|i| (sk - i.min(sk - 1)) as u32).collect();
        let plain = AttentionRef {
            q: &q,
            k: &k,
            v: &v,
            dims,
            ..Default::default()
        };
        let cases: Vec<(&str, AttentionRef)> = vec![
            ("plain", plain),
            (
                "bshd",
                AttentionRef {
                    layout: Layout::Bshd,
                    ..plain
                },
            ),
            (
                "causal top-left",
                AttentionRef {
                    causal: Causal::TopLeft,
                    ..plain
                },
            ),
            (
                "causal bottom-right",
                AttentionRef {
                    causal: Causal::BottomRight,
                    ..plain
                },
            ),
            (
                "kv_len",
                AttentionRef {
                    kv_len: Some(&kv_len),
                    causal: Causal::BottomRight,
                    ..plain
                },
            ),
            (
                "bias",
                AttentionRef {
                    bias: Some((&bias, [1, hq, sq, sk])),
                    ..plain
                },
            ),
            (
                "window",
                AttentionRef {
                    window: (Some(1), Some(0)),
                    ..plain
                },
            ),
            (
                "soft cap",
                AttentionRef {
                    softcap: Some(0.7),
                    scale: Some(2.0),
                    ..plain
                },
            ),
            (
                "alibi",
                AttentionRef {
                    alibi: Some(&alibi),
                    causal: Causal::BottomRight,
                    ..plain
                },
            ),
            (
                "sinks",
                AttentionRef {
                    sinks: Some(&sinks),
                    ..plain
                },
            ),
        ];
        for (name, a) in cases {
            check(&format!("{dims:?} {name}"), &a, &d_out);
        }
    }
}

#[test]
fn a_fully_masked_row_has_zero_gradient() {
    // Causal top-left with a left window of 0: query i sees key i alone;
    // with kv_len 2, queries 2 and 3 see nothing.
    let dims = [1, 1, 1, 4, 4, 3, 2];
    let mut r = rng("backward masked");
    let q = uniform(&mut r, 12);
    let k = uniform(&mut r, 12);
    let v = uniform(&mut r, 8);
    let d_out = uniform(&mut r, 8);
    let kv_len = [2u32];
    let a = AttentionRef {
        q: &q,
        k: &k,
        v: &v,
        dims,
        causal: Causal::TopLeft,
        window: (Some(0), None),
        kv_len: Some(&kv_len),
        ..Default::default()
    };
    let g = attention_backward(&a, &d_out);
    assert!(
        g.dq[6..].iter().all(|&x| x == 0.0),
        "rows 2, 3: {:?}",
        &g.dq[6..]
    );
    assert!(g.dq.iter().chain(&g.dk).chain(&g.dv).all(|x| x.is_finite()));
    check("masked rows", &a, &d_out);
}
