//! Shapes: the grid, the extreme and every head dim, seq_q past
//! seq_k, f16, random small shapes, every schedule on hard shapes, the rows
//! schedule's forms, a long sequence.

use super::*;

/// The (seq_q, seq_k) grid; the other options rotate across it so that
/// each appears several times without a full cross product. In two tests (even
/// and odd positions) that run in parallel: the grid is the suite's long pole.
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn grid_f32_even() {
    grid_f32(0);
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn grid_f32_odd() {
    grid_f32(1);
}

fn grid_f32(parity: usize) {
    let seqs = [
        (1, 1),
        (1, 239),
        (3, 799),
        (113, 203),
        (128, 217),
        (108, 256),
        (256, 512),
        (512, 256),
        (1023, 1024),
        (1024, 1023),
    ];
    let dims = [32, 59, 64, 80, 111, 128, 256];
    let heads = [(9, 9), (9, 3), (9, 1)];
    let causal = [Causal::None, Causal::TopLeft, Causal::BottomRight];
    for (i, &(sq, sk)) in seqs.iter().enumerate() {
        if i % 2 != parity {
            continue;
        }
        let d = dims[i % dims.len()];
        // Long sequences keep the CPU reference affordable with fewer heads.
        let (hq, hkv) = if sq * sk > 200_000 {
            (3, [3, 1, 1][i % 3])
        } else {
            heads[i % 3]
        };
        let c = Case {
            b: 1,
            hq,
            hkv,
            sq,
            sk,
            d,
            dv: if i == 4 { 48 } else { d },
            layout: if i % 2 == 0 {
                Layout::Bhsd
            } else {
                Layout::Bshd
            },
            causal: causal[i % 3],
            bias: (i % 4 == 1).then_some([1, hq, sq, sk]),
            kv_len: None,
            dtype: DType::F32,
            lse: i % 2 == 1,
            flash: rot(i),
            split: srot(i),
            // Auto where it repeats a kernel the case compiles anyway (Rows for
            // long queries, SplitKv for short): both of its branches run without
            // new compiles.
            auto: i % 4 == 3 || sq < 64,
            ext: Ext::default(),
        };
        let errs = run(&c);
        let naive = errs
            .iter()
            .find(|e| e.0 == AttentionVariant::Naive)
            .unwrap()
            .1;
        for flash in errs.iter().filter(|e| e.0 == AttentionVariant::Flash) {
            assert!(
                flash.1 <= 2.0 * naive,
                "{c:?}: flash error {:.3e} > 2 x naive {naive:.3e} (FLASHDOT_SEED={})",
                flash.1,
                seed()
            );
        }
    }
}

/// The smallest and the largest head dim with every schedule and split-KV
/// source, under both causal conventions, in both layouts (d = 1 in the fast
/// tier; d = 256, whose kernels take most of a minute to compile on a
/// software adapter, in the long tier).
fn extreme_head_dims(dims: &[usize]) {
    for (i, &d) in dims.iter().enumerate() {
        for causal in [Causal::TopLeft, Causal::BottomRight] {
            run(&Case {
                flash: &SCHEDS,
                split: &SPLITS,
                auto: false,
                b: 1,
                hq: 2,
                hkv: 1,
                sq: 37,
                sk: 70,
                d,
                dv: d,
                layout: if i == 0 { Layout::Bshd } else { Layout::Bhsd },
                causal,
                bias: None,
                kv_len: None,
                dtype: DType::F32,
                lse: true,
                ext: Ext::default(),
            });
        }
    }
}

#[test]
fn smallest_head_dim_every_schedule() {
    extreme_head_dims(&[1]);
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn largest_head_dim_every_schedule() {
    extreme_head_dims(&[1, 256]);
}

/// Every head dim under both causal conventions (run-time options, so both
/// reuse the kernels compiled for the dim; the schedule and split-KV source
/// rotate over the dims, so each meets both conventions).
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn every_head_dim_both_causal_and_layouts() {
    for (i, d) in [32, 59, 64, 80, 111, 128, 256].into_iter().enumerate() {
        for causal in [Causal::TopLeft, Causal::BottomRight] {
            run(&Case {
                flash: rot(i + i / 2),
                split: srot(i),
                auto: false,
                b: 1,
                hq: 2,
                hkv: 1,
                sq: 37,
                sk: 70,
                d,
                dv: d,
                layout: if i % 2 == 0 {
                    Layout::Bshd
                } else {
                    Layout::Bhsd
                },
                causal,
                bias: None,
                kv_len: None,
                dtype: DType::F32,
                lse: true,
                ext: Ext::default(),
            });
        }
    }
}

/// seq_q > seq_k bottom-right: the first rows see no key at all (exact zeros).
#[test]
fn seq_q_past_seq_k_first_rows_see_nothing() {
    run(&Case {
        flash: &SCHEDS,
        split: &SPLITS,
        auto: false,
        b: 1,
        hq: 1,
        hkv: 1,
        sq: 50,
        sk: 20,
        d: 64,
        dv: 64,
        layout: Layout::Bhsd,
        causal: Causal::BottomRight,
        bias: None,
        kv_len: None,
        dtype: DType::F32,
        lse: true,
        ext: Ext::default(),
    });
}

#[test]
fn f16_inputs() {
    f16_cases(&[(113, 203, 64, Causal::None, Layout::Bhsd)]);
}

/// The other two schedules with f16, at an odd head dim (long tier: each
/// head dim compiles its own kernels).
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn f16_inputs_odd_head_dim() {
    f16_cases(&[
        (113, 203, 64, Causal::None, Layout::Bhsd),
        (64, 64, 59, Causal::TopLeft, Layout::Bshd),
    ]);
}

/// A decode-shaped f16 case with a large head dim.
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn f16_decode_large_head_dim() {
    f16_cases(&[(1, 700, 128, Causal::BottomRight, Layout::Bshd)]);
}

fn f16_cases(cases: &[(usize, usize, usize, Causal, Layout)]) {
    if !ctx().info().has_f16() {
        return f16_refused(&ctx());
    }
    for (i, &(sq, sk, d, causal, layout)) in cases.iter().enumerate() {
        // Two schedules per case: every schedule meets f16.
        let j = (2 * i) % SCHEDS.len();
        run(&Case {
            flash: &SCHEDS[j..j + 2],
            split: srot(i),
            auto: i == 0,
            b: 1,
            hq: 4,
            hkv: 2,
            sq,
            sk,
            d,
            dv: d,
            layout,
            causal,
            bias: None,
            kv_len: None,
            dtype: DType::F16,
            lse: true,
            ext: Ext::default(),
        });
    }
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn random_small_shapes() {
    let mut r = rng("random small shapes");
    // Each new head-dim pair compiles new pipelines (seconds on a software
    // adapter), so the dims are drawn from 1..=16 (four vec4 classes; the
    // fixed tests cover the large and odd head dims and d_v in another class).
    for i in 0..8 {
        let hkv = r.random_range(1..4);
        let d = r.random_range(1..17);
        let c = Case {
            flash: rot(i),
            split: srot(i),
            auto: false,
            b: r.random_range(1..3),
            hq: hkv * r.random_range(1..4),
            hkv,
            sq: r.random_range(1..40),
            sk: r.random_range(1..90),
            d,
            // d_v drawn in the vec4 class of d: the kernels are compiled per
            // class pair, seconds each on a software adapter.
            dv: (d - 1) / 4 * 4 + r.random_range(1..5),
            layout: if r.random_bool(0.5) {
                Layout::Bhsd
            } else {
                Layout::Bshd
            },
            causal: [Causal::None, Causal::TopLeft, Causal::BottomRight][r.random_range(0..3)],
            bias: None,
            kv_len: None,
            dtype: DType::F32,
            lse: r.random_bool(0.5),
            ext: Ext::default(),
        };
        let c = Case {
            bias: r.random_bool(0.3).then_some([c.b, c.hq, c.sq, c.sk]),
            kv_len: r
                .random_bool(0.3)
                .then(|| (0..c.b).map(|_| r.random_range(0..=c.sk as u32)).collect()),
            ..c
        };
        run(&c);
    }
}

/// Every schedule on the same odd inputs: sizes off every tile, GQA, bias,
/// LSE, both causal conventions with seq_q < seq_k and seq_q > seq_k, kv_len,
/// d ≠ d_v.
#[test]
fn every_schedule_on_hard_shapes() {
    run(&Case {
        flash: &SCHEDS,
        split: &SPLITS,
        auto: true,
        ..hard_bshd_case()
    });
    run(&Case {
        b: 2,
        hq: 3,
        hkv: 1,
        sq: 127,
        sk: 59,
        d: 64,
        dv: 64,
        layout: Layout::Bhsd,
        causal: Causal::TopLeft,
        bias: None,
        kv_len: Some(vec![59, 20]),
        dtype: DType::F32,
        lse: true,
        flash: &SCHEDS,
        split: &SPLITS,
        auto: false,
        ext: Ext::default(),
    });
}

/// The rows schedule without subgroups (each lane fetches every K/V texel
/// itself), on a hard shape: the default context uses subgroups where the
/// adapter has them.
#[test]
fn rows_without_subgroups() {
    run_on(
        &ctx_without_subgroups(),
        &Case {
            flash: &[FlashSchedule::Rows],
            split: &[],
            auto: false,
            ..hard_bshd_case()
        },
    );
}

/// GQA 6:2 with seq_q < seq_k, odd head dims d ≠ d_v, bottom-right causal,
/// a per-head bias and the LSE, in the [b, s, h, d] layout.
fn hard_bshd_case() -> Case {
    Case {
        b: 1,
        hq: 6,
        hkv: 2,
        sq: 59,
        sk: 127,
        d: 59,
        dv: 37,
        layout: Layout::Bshd,
        causal: Causal::BottomRight,
        bias: Some([1, 6, 59, 127]),
        kv_len: None,
        dtype: DType::F32,
        lse: true,
        flash: &[],
        split: &[],
        auto: false,
        ext: Ext::default(),
    }
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn long_sequence_flash_runs_naive_refuses() {
    let ctx = ctx();
    let (h, s, d) = (8, 16384, 64);
    let mut rng = rng("long");
    let q = uniform(&mut rng, h * s * d);
    let k = uniform(&mut rng, h * s * d);
    let v = uniform(&mut rng, h * s * d);
    let t = |x: &[f32]| Tensor::from_slice(&ctx, x, &[1, h, s, d]).unwrap();
    let (gq, gk, gv) = (t(&q), t(&k), t(&v));
    let naive = AttentionOptions::default().variant(AttentionVariant::Naive);
    let e = attention(&gq, &gk, &gv, &naive).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let opts = AttentionOptions::default()
        .variant(AttentionVariant::Flash)
        .causal(Causal::TopLeft);
    let out = attention(&gq, &gk, &gv, &opts)
        .unwrap()
        .out
        .to_vec::<f32>()
        .unwrap();
    // Spot-check rows of head 5 against the reference on that head alone
    // (causal keeps the reference to the keys each row sees).
    let hh = 5;
    let sl = |x: &[f32]| x[hh * s * d..(hh + 1) * s * d].to_vec();
    let (qh, kh, vh) = (sl(&q), sl(&k), sl(&v));
    for row in [0, 1, 4095, 9999, 16383] {
        let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
            q: &qh[row * d..(row + 1) * d],
            k: &kh[..(row + 1) * d],
            v: &vh[..(row + 1) * d],
            dims: [1, 1, 1, 1, row + 1, d, d],
            layout: Layout::Bhsd,
            causal: Causal::None,
            scale: None,
            kv_len: None,
            bias: None,
            ..Default::default()
        });
        let got = &out[(hh * s + row) * d..(hh * s + row + 1) * d];
        let case = format!("long row {row}");
        check(&verify::compare(got, &want), 1e-5, &case);
        let bound = Scores {
            d,
            keys: row + 1,
            qk: max_abs(&qh) * max_abs(&kh),
            v: max_abs(&vh),
            extra: 0.0,
            softcap: None,
            f16: false,
        };
        check_elements(got, &want, bound.bounds().out, &case);
    }
}

/// A context that does not wait for best kernels first runs the rows
/// schedule's one-row form while the full row block compiles in the
/// background, then the block: both agree with the reference.
#[test]
fn rows_quick_kernel_then_best() {
    let ctx = Context::with_options(ContextOptions::default())
        .unwrap_or_else(|e| panic!("flashdot tests need a GPU adapter: {e}"));
    let (h, sq, sk, d, dv) = (2, 70, 45, 8, 12);
    let mut rng = rng("rows quick then best");
    let q = uniform(&mut rng, h * sq * d);
    let k = uniform(&mut rng, h * sk * d);
    let v = uniform(&mut rng, h * sk * dv);
    let t = |x: &[f32], s: usize, w: usize| Tensor::from_slice(&ctx, x, &[1, h, s, w]).unwrap();
    let (gq, gk, gv) = (t(&q, sq, d), t(&k, sk, d), t(&v, sk, dv));
    let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
        q: &q,
        k: &k,
        v: &v,
        dims: [1, h, h, sq, sk, d, dv],
        layout: Layout::Bhsd,
        causal: Causal::BottomRight,
        scale: None,
        kv_len: None,
        bias: None,
        ..Default::default()
    });
    let opts = AttentionOptions::default()
        .variant(AttentionVariant::Flash)
        .flash_schedule(FlashSchedule::Rows)
        .causal(Causal::BottomRight);
    let out = Tensor::zeros(&ctx, &[1, h, sq, dv], DType::F32).unwrap();
    let before = ctx.cached_pipelines();
    for call in ["first (quick form)", "after the background compile"] {
        out.poison().unwrap();
        attention_into(&gq, &gk, &gv, &opts, &out, None).unwrap();
        let got = read(&out);
        check(&verify::compare(&got, &want), 1e-5, call);
        let bound = Scores {
            d,
            keys: sk,
            qk: max_abs(&q) * max_abs(&k),
            v: max_abs(&v),
            extra: 0.0,
            softcap: None,
            f16: false,
        };
        check_elements(&got, &want, bound.bounds().out, call);
        ctx.finish_background_compiles();
        // The one-row form, then the row block compiled in the background;
        // the second call compiles nothing new.
        assert_eq!(ctx.cached_pipelines(), before + 2, "{call}");
    }
}
