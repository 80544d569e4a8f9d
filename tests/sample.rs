//! Next-token sampling (greedy, temperature, top-p) against the f64
//! reference: random logits over GPT-2-sized vocabularies, rows picked in
//! any order and repeated, ties, masked (−inf), +inf and NaN logits, every
//! typed error.
//!
//! The device token must be the reference's, except where u lies within a
//! rounding margin of a token's span (or the f32 masses make another nucleus
//! threshold possible): then any token whose span is within the margin of u,
//! under any such threshold, is accepted. The margin, as a fraction of the
//! kept mass, is derived from the kernel's f32 arithmetic (ε = 2⁻²⁴): each
//! weight exp(y), y = (x − m)·(1/T), is off by (3|y|)ε from rounding y plus
//! Vulkan's exp bound of (3 + 2|y|) ulp = (6 + 4|y|)ε: (6 + 7|y|)ε; the
//! cumulative masses are serial sums of a chunk (⌈vocab/256⌉ terms) then of
//! the 256 chunk partials, ≤ (⌈vocab/256⌉ + 256)ε relative, and u·M adds ε.
//! Numerator and denominator each carry them: margin =
//! 2ε·(⌈vocab/256⌉ + 257 + Σ_j p_j (6 + 7|y_j|)) — 3e-5 to 6e-5 here, a
//! worst case; the report counts how many draws needed it.

mod common;

use common::*;
use flashdot::ops::sample::{sample, sample_into, SampleOptions};
use flashdot::reference::sample as refs;
use flashdot::{Context, ContextOptions, DType, Error, Tensor};
use rand::Rng;

const EPS: f64 = 1.0 / (1u64 << 24) as f64;
/// The largest f32 below 1: u·M may round up to M.
const BELOW_ONE: f32 = 1.0 - f32::EPSILON / 2.0;

/// The rounding margin of a draw from `row` (see the module docs).
fn margin(row: &[f32], temperature: f32) -> f64 {
    let p = refs::probabilities(row, temperature);
    let m = row[refs::argmax(row) as usize] as f64;
    let weighted: f64 = row
        .iter()
        .zip(&p)
        .filter(|(_, &pj)| pj > 0.0)
        .map(|(&x, &pj)| {
            let y = if x as f64 == m {
                0.0
            } else {
                (x as f64 - m) / temperature as f64
            };
            pj * (6.0 + 7.0 * y.abs())
        })
        .sum();
    2.0 * EPS * (row.len().div_ceil(256) as f64 + 257.0 + weighted)
}

/// How a device token agreed with the reference.
#[derive(Debug, Default)]
struct Tally {
    exact: usize,
    near: usize,
}

/// Fails unless `got` is the reference's token for `row` at `u`, or (not
/// greedy, no NaN) a token kept under a threshold the f32 masses allow
/// whose span is within the margin of `u`.
#[track_caller]
fn agree(got: u32, row: &[f32], u: f32, opts: &SampleOptions, case: &str, tally: &mut Tally) {
    let want = refs::sample(row, u, opts);
    if got == want {
        tally.exact += 1;
        return;
    }
    let exact_only = opts.temperature == 0.0 || row.iter().any(|x| x.is_nan());
    let mut why = format!(
        "{case}: u = {u:.9} gave token {got}, the reference {want} (replay with \
         FLASHDOT_SEED={})",
        seed()
    );
    if !exact_only {
        let p = refs::probabilities(row, opts.temperature);
        let mg = margin(row, opts.temperature);
        let u = u as f64;
        for tau in refs::thresholds(&p, opts.top_p, mg) {
            let spans = refs::spans(&p, tau);
            let span = |t: u32| spans.iter().find(|s| s.token == t).copied();
            if let Some(s) = span(got) {
                if u >= s.lo - mg && u < s.hi + mg {
                    tally.near += 1;
                    return;
                }
            }
            why.push_str(&format!(
                "\n  threshold {tau:.6e}: token {got} {:?}, token {want} {:?}, margin {mg:.2e}",
                span(got),
                span(want)
            ));
        }
    }
    panic!("{why}");
}

/// An output tensor of `m` tokens, poisoned (u32::MAX) so an unwritten
/// token is caught.
fn poisoned_tokens(ctx: &Context, m: usize) -> Tensor {
    let t = Tensor::zeros(ctx, &[m], DType::U32).unwrap();
    t.poison().unwrap();
    t
}

/// Draws `rows` of the `[n, vocab]` logits `lv` (uploaded as `dtype`), each
/// with its uniform, and checks every token against the reference (fed the values
/// the device holds); the tokens and those values.
fn run_case(
    lv: &[f32],
    n: usize,
    dtype: DType,
    (rows, uniforms): (&[u32], &[f32]),
    opts: &SampleOptions,
    case: &str,
    tally: &mut Tally,
) -> (Vec<u32>, Vec<f32>) {
    let ctx = ctx();
    let vocab = lv.len() / n;
    let (logits, lv) = upload(lv, &[n, vocab], dtype);
    let out = poisoned_tokens(&ctx, rows.len());
    sample_into(&logits, rows, uniforms, opts, &out).unwrap();
    let got = out.to_vec::<u32>().unwrap();
    for (i, (&r, &u)) in rows.iter().zip(uniforms).enumerate() {
        let row = &lv[r as usize * vocab..(r as usize + 1) * vocab];
        let c = format!("{case} output {i} (row {r})");
        agree(got[i], row, u, opts, &c, tally);
    }
    (got, lv)
}

/// Uniforms in [0, 1), the first 0 and the last the largest below 1.
fn uniforms(r: &mut Rng64, m: usize) -> Vec<f32> {
    let mut u: Vec<f32> = (0..m).map(|_| r.random_range(0.0f32..1.0)).collect();
    u[0] = 0.0;
    if m > 1 {
        u[m - 1] = BELOW_ONE;
    }
    u
}

const TEMPERATURES: [f32; 4] = [0.0, 0.7, 1.0, 1.5];
const TOP_P: [f32; 4] = [1.0, 0.9, 0.5, 0.01];

#[test]
fn tokens_match_the_reference() {
    let ctx = ctx();
    let mut r = rng("sample reference");
    let mut tally = Tally::default();
    for vocab in [1usize, 3, 59, 127, 1009, 50257] {
        // f16 logits on the smaller vocabularies (the kernel reads them
        // as f32: only the input differs).
        let dtypes = if vocab <= 1009 {
            float_dtypes(&ctx)
        } else {
            vec![DType::F32]
        };
        for dtype in dtypes {
            let n = 5;
            // Row k spreads its logits by a scale of its own: flat rows
            // (many tokens in the nucleus) to peaked ones (top_p 0.01 keeps
            // the argmax alone).
            let scales = [1.0f32, 4.0, 12.0, 30.0, 2.0];
            let lv: Vec<f32> = (0..n * vocab)
                .map(|i| scales[i / vocab] * uniform(&mut r, 1)[0])
                .collect();
            // Rows in any order, with repeats.
            let m = 9;
            let rows: Vec<u32> = (0..m).map(|_| r.random_range(0..n as u32)).collect();
            for temperature in TEMPERATURES {
                for top_p in TOP_P {
                    if temperature == 0.0 && top_p < 0.5 {
                        continue;
                    }
                    let u = uniforms(&mut r, m);
                    let opts = SampleOptions { temperature, top_p };
                    let case = format!("vocab {vocab} {dtype} T {temperature} top_p {top_p}");
                    let (got, held) =
                        run_case(&lv, n, dtype, (&rows, &u), &opts, &case, &mut tally);
                    if top_p == 0.01 {
                        top_p_small_is_the_argmax(&held, vocab, &rows, &got, &opts, &case);
                    }
                }
            }
        }
    }
    eprintln!(
        "sample: {} tokens the reference's, {} within the rounding margin",
        tally.exact, tally.near
    );
}

/// Where the most probable token alone holds top_p (with the margin to
/// spare), the nucleus is that token (and its ties).
fn top_p_small_is_the_argmax(
    lv: &[f32],
    vocab: usize,
    rows: &[u32],
    got: &[u32],
    opts: &SampleOptions,
    case: &str,
) {
    for (i, &r) in rows.iter().enumerate() {
        let row = &lv[r as usize * vocab..(r as usize + 1) * vocab];
        let p = refs::probabilities(row, opts.temperature);
        let top = refs::argmax(row);
        if p[top as usize] >= opts.top_p as f64 + margin(row, opts.temperature) {
            // f16 logits may tie at the maximum: every tie is kept.
            assert_eq!(
                row[got[i] as usize], row[top as usize],
                "{case} output {i}: token {} is not the maximum's {top}",
                got[i]
            );
        }
    }
}

/// [`sample`] allocates the output and gives [`sample_into`]'s tokens.
#[test]
fn sample_allocates_its_output() {
    let ctx = ctx();
    let mut r = rng("sample alloc");
    let lv = uniform(&mut r, 3 * 127);
    let logits = Tensor::from_slice(&ctx, &lv, &[3, 127]).unwrap();
    let (rows, u) = ([2u32, 0, 2], [0.1f32, 0.5, 0.9]);
    let opts = SampleOptions::default();
    let t = sample(&logits, &rows, &u, &opts).unwrap();
    assert_eq!((t.shape(), t.dtype()), (&[3usize][..], DType::U32));
    let out = poisoned_tokens(&ctx, 3);
    sample_into(&logits, &rows, &u, &opts, &out).unwrap();
    assert_eq!(t.to_vec::<u32>().unwrap(), out.to_vec::<u32>().unwrap());
}

/// Greedy ties go to the lowest index, across and within invocations'
/// strides; equal logits everywhere: token 0 greedy, and every token kept
/// by any top_p (all tie at the threshold).
#[test]
fn ties_and_equal_logits() {
    let mut tally = Tally::default();
    let vocab = 1009;
    let mut lv = vec![0.0f32; 3 * vocab];
    // Row 0: maxima at 300, 44 + 256 = 300 shares an invocation with 44;
    // 45 does not.
    for j in [300, 44, 45, 900] {
        lv[j] = 5.0;
    }
    // Row 1: maxima in invocation 255 and invocation 3 (at 259).
    lv[vocab + 255] = 2.0;
    lv[vocab + 3 + 256] = 2.0;
    // Row 2: all equal.
    for v in &mut lv[2 * vocab..] {
        *v = -3.25;
    }
    let greedy = SampleOptions::greedy();
    let (got, _) = run_case(
        &lv,
        3,
        DType::F32,
        (&[0, 1, 2], &[0.5; 3]),
        &greedy,
        "ties",
        &mut tally,
    );
    assert_eq!(got, [44, 255, 0]);
    let u = [0.0, 0.3, 0.999, BELOW_ONE];
    for top_p in TOP_P {
        let opts = SampleOptions {
            temperature: 1.0,
            top_p,
        };
        let (got, _) = run_case(
            &lv,
            3,
            DType::F32,
            (&[2; 4], &u),
            &opts,
            "equal",
            &mut tally,
        );
        // Uniform over all: u = 0.3 draws ⌊0.3 · 1009⌋.
        assert_eq!(got[..3], [0, 302, 1007], "equal logits, top_p {top_p}");
    }
}

/// −inf logits are never drawn; a row of −inf is all ties (greedy 0,
/// uniform sampling); +inf logits share the mass between them.
#[test]
fn infinite_logits() {
    let mut r = rng("sample inf");
    let mut tally = Tally::default();
    let vocab = 1009;
    let mut lv = uniform(&mut r, 3 * vocab);
    // Row 0: all but 12 tokens masked.
    let open: Vec<usize> = (0..12).map(|_| r.random_range(0..vocab)).collect();
    for (j, v) in lv[..vocab].iter_mut().enumerate() {
        if !open.contains(&j) {
            *v = f32::NEG_INFINITY;
        }
    }
    // Row 1: all masked. Row 2: two +inf among finite logits.
    for v in &mut lv[vocab..2 * vocab] {
        *v = f32::NEG_INFINITY;
    }
    lv[2 * vocab + 17] = f32::INFINITY;
    lv[2 * vocab + 700] = f32::INFINITY;
    let m = 64;
    let mut u = uniforms(&mut r, m);
    let rows: Vec<u32> = (0..m as u32).map(|i| i % 3).collect();
    // Two draws of row 2, one each side of its +inf tokens' halves.
    u[2] = 0.49;
    u[5] = 0.51;
    for temperature in TEMPERATURES {
        for top_p in [1.0, 0.5] {
            let opts = SampleOptions { temperature, top_p };
            let case = format!("inf T {temperature} top_p {top_p}");
            let (got, _) = run_case(&lv, 3, DType::F32, (&rows, &u), &opts, &case, &mut tally);
            for (i, &t) in got.iter().enumerate() {
                match rows[i] {
                    0 => assert!(open.contains(&(t as usize)), "{case}: masked token {t}"),
                    2 => assert!(t == 17 || t == 700, "{case}: token {t} is not +inf"),
                    _ => {}
                }
            }
            if temperature == 0.0 {
                assert_eq!(
                    (got[1], got[2]),
                    (0, 17),
                    "{case}: argmax of −inf and +inf rows"
                );
            } else {
                assert_eq!(
                    (got[2], got[5]),
                    (17, 700),
                    "{case}: the +inf tokens split u"
                );
            }
        }
    }
}

/// A row holding NaN gives its first NaN's index at every temperature and
/// top_p (NaN ranks above every number, as in torch.argmax).
#[test]
fn nan_logits_give_the_first_nan() {
    let mut r = rng("sample nan");
    let mut tally = Tally::default();
    let vocab = 1009;
    let mut lv = uniform(&mut r, 2 * vocab);
    lv[600] = f32::NAN;
    lv[333] = f32::NAN;
    lv[vocab + 1000] = f32::NAN;
    lv[vocab + 7] = f32::INFINITY;
    for temperature in TEMPERATURES {
        for top_p in [1.0, 0.5] {
            let opts = SampleOptions { temperature, top_p };
            let u = [0.0, 0.25, 0.99, 0.5];
            let case = format!("NaN T {temperature} top_p {top_p}");
            let (got, _) = run_case(
                &lv,
                2,
                DType::F32,
                (&[0, 1, 0, 1], &u),
                &opts,
                &case,
                &mut tally,
            );
            assert_eq!(got, [333, 1000, 333, 1000], "{case}");
        }
    }
}

/// More outputs than one grid dimension holds (65,535 workgroups).
#[test]
fn outputs_past_one_grid_dimension() {
    let ctx = ctx();
    let mut r = rng("sample grid");
    let (n, vocab, m) = (4, 3, 70_000);
    let lv = uniform(&mut r, n * vocab);
    let logits = Tensor::from_slice(&ctx, &lv, &[n, vocab]).unwrap();
    let rows: Vec<u32> = (0..m).map(|_| r.random_range(0..n as u32)).collect();
    let u: Vec<f32> = (0..m).map(|_| r.random_range(0.0f32..1.0)).collect();
    let mut tally = Tally::default();
    for opts in [SampleOptions::greedy(), SampleOptions::default()] {
        let out = poisoned_tokens(&ctx, m);
        sample_into(&logits, &rows, &u, &opts, &out).unwrap();
        let got = out.to_vec::<u32>().unwrap();
        for i in 0..m {
            let row = &lv[rows[i] as usize * vocab..(rows[i] as usize + 1) * vocab];
            agree(
                got[i],
                row,
                u[i],
                &opts,
                &format!("grid {opts:?} output {i}"),
                &mut tally,
            );
        }
    }
}

/// Empty `rows` run nothing and succeed.
#[test]
fn empty_rows() {
    let ctx = ctx();
    let logits = Tensor::zeros(&ctx, &[2, 5], DType::F32).unwrap();
    let t = sample(&logits, &[], &[], &SampleOptions::default()).unwrap();
    assert_eq!(t.shape(), &[0]);
    let none = Tensor::zeros(&ctx, &[0, 5], DType::F32).unwrap();
    sample(&none, &[], &[], &SampleOptions::greedy()).unwrap();
}

#[track_caller]
fn shape_err<T: std::fmt::Debug>(r: flashdot::Result<T>, names: &str) {
    match r {
        Err(e @ Error::Shape { .. }) => assert!(e.to_string().contains(names), "{e}"),
        other => panic!("expected a Shape error naming {names}, got {other:?}"),
    }
}

#[track_caller]
fn invalid<T: std::fmt::Debug>(r: flashdot::Result<T>, names: &str) {
    match r {
        Err(e @ Error::InvalidArgument { .. }) => {
            assert!(e.to_string().contains(names), "{e}")
        }
        other => panic!("expected InvalidArgument naming {names}, got {other:?}"),
    }
}

#[test]
fn every_error_is_typed() {
    let ctx = ctx();
    let logits = Tensor::zeros(&ctx, &[3, 5], DType::F32).unwrap();
    let ok = SampleOptions::default();
    let out2 = Tensor::zeros(&ctx, &[2], DType::U32).unwrap();
    let go = |l: &Tensor, rows: &[u32], u: &[f32], o: &SampleOptions, out: &Tensor| {
        let r = sample_into(l, rows, u, o, out);
        assert!(
            out.to_vec::<u32>().unwrap().iter().all(|&t| t == 0),
            "written"
        );
        r
    };
    // Shapes.
    let flat = Tensor::zeros(&ctx, &[15], DType::F32).unwrap();
    shape_err(go(&flat, &[0, 1], &[0.0; 2], &ok, &out2), "[15]");
    let cube = Tensor::zeros(&ctx, &[1, 3, 5], DType::F32).unwrap();
    shape_err(go(&cube, &[0, 1], &[0.0; 2], &ok, &out2), "[1, 3, 5]");
    let no_vocab = Tensor::zeros(&ctx, &[3, 0], DType::F32).unwrap();
    shape_err(go(&no_vocab, &[0, 1], &[0.0; 2], &ok, &out2), "[3, 0]");
    shape_err(go(&logits, &[0, 1], &[0.0; 3], &ok, &out2), "got 3");
    let out3 = Tensor::zeros(&ctx, &[3], DType::U32).unwrap();
    shape_err(go(&logits, &[0, 1], &[0.0; 2], &ok, &out3), "got [3]");
    let out_2d = Tensor::zeros(&ctx, &[2, 1], DType::U32).unwrap();
    shape_err(go(&logits, &[0, 1], &[0.0; 2], &ok, &out_2d), "[2, 1]");
    // Dtypes.
    let ids = Tensor::zeros(&ctx, &[3, 5], DType::U32).unwrap();
    let e = go(&ids, &[0, 1], &[0.0; 2], &ok, &out2).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let f_out = Tensor::zeros(&ctx, &[2], DType::F32).unwrap();
    let e = sample_into(&logits, &[0, 1], &[0.0; 2], &ok, &f_out).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    // Arguments.
    invalid(go(&logits, &[0, 3], &[0.0; 2], &ok, &out2), "rows[1] is 3");
    for u in [1.0, -0.0001, f32::NAN, 2.0] {
        invalid(go(&logits, &[0, 1], &[0.5, u], &ok, &out2), "uniforms[1]");
    }
    for temperature in [-1.0, f32::NAN, f32::INFINITY] {
        let o = SampleOptions { temperature, ..ok };
        invalid(go(&logits, &[0, 1], &[0.0; 2], &o, &out2), "temperature");
    }
    for top_p in [0.0, -0.5, 1.0001, f32::NAN] {
        let o = SampleOptions { top_p, ..ok };
        invalid(go(&logits, &[0, 1], &[0.0; 2], &o, &out2), "top_p");
    }
    // Empty rows are still checked against the options.
    let none = Tensor::zeros(&ctx, &[0], DType::U32).unwrap();
    let o = SampleOptions { top_p: 0.0, ..ok };
    invalid(sample_into(&logits, &[], &[], &o, &none), "top_p");
    // out over the logits' buffer.
    let alias = Tensor::from_buffer(&ctx, logits.buffer().clone(), 0, &[2], DType::U32).unwrap();
    invalid(
        sample_into(&logits, &[0, 1], &[0.0; 2], &ok, &alias),
        "share one buffer",
    );
    // Another context.
    let other = Context::new().unwrap();
    let theirs = Tensor::zeros(&other, &[2], DType::U32).unwrap();
    invalid(
        sample_into(&logits, &[0, 1], &[0.0; 2], &ok, &theirs),
        "context",
    );
    // Past one storage binding: logits, and the host table of rows.
    let mut limits = ctx.info().limits.clone();
    limits.max_storage_buffer_binding_size = 1 << 16;
    let small = Context::with_options(ContextOptions::default().with_limits(limits)).unwrap();
    let big = Tensor::zeros(&small, &[20, 1000], DType::F32).unwrap();
    let out = Tensor::zeros(&small, &[1], DType::U32).unwrap();
    let e = sample_into(&big, &[0], &[0.0], &ok, &out).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { .. }) && e.to_string().contains("logits"),
        "{e}"
    );
    let few = Tensor::zeros(&small, &[1, 4], DType::F32).unwrap();
    let m = 10_000;
    let out = Tensor::zeros(&small, &[m], DType::U32).unwrap();
    let e = sample_into(&few, &vec![0; m], &vec![0.0; m], &ok, &out).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { .. }) && e.to_string().contains("table"),
        "{e}"
    );
}
