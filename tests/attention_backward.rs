//! Attention backward against the f64 reference (`reference::attention::
//! attention_backward`, itself checked by finite differences in
//! tests/attention_backward_reference.rs): the flash kernels (texel and
//! buffer sources) and the naive composed backward on shapes that hurt
//! (1, 3, 59, 127; seq_q ≠ seq_k both ways; odd head dims; 64, 128 and 256),
//! both causal alignments, GQA/MQA, kv_len, the bias and its gradient
//! (broadcast and not), window with sink tokens, soft cap, ALiBi, sinks, a
//! boolean mask, both layouts, f32 and f16, fully masked rows, empty
//! inputs; outputs NaN-poisoned first; bad input as typed errors.
//!
//! The bound is FlashAttention's: each gradient's largest error against the
//! f64 reference at most twice the naive backward's in the same precision
//! (plus the output dtype's rounding of the largest gradient and f32's
//! √n·ε accumulation error of the n-term sums, which is what both are on
//! tiny shapes), and its relative L2 error within the arithmetic's (f32
//! 2e-5, f16 storage 5e-3).

mod common;

use common::*;
use flashdot::ops::attention::*;
use flashdot::reference::attention::{attention_backward as ref_backward, AttentionRef};
use flashdot::{DType, Error, Tensor};

/// (b, hq, hkv, sq, sk, d, dv)
type Dims7 = [usize; 7];

#[derive(Clone, Default)]
struct Opts {
    layout: Layout,
    causal: Causal,
    kv_len: Option<Vec<u32>>,
    /// Bias shape, and whether its gradient is asked.
    bias: Option<([usize; 4], bool)>,
    window: Window,
    sink_tokens: usize,
    softcap: Option<f32>,
    alibi: bool,
    sinks: bool,
    mask: bool,
}

fn shape(layout: Layout, b: usize, h: usize, s: usize, d: usize) -> Vec<usize> {
    match layout {
        Layout::Bhsd => vec![b, h, s, d],
        Layout::Bshd => vec![b, s, h, d],
    }
}

/// Max |x − ref| and relative L2 of `got` against `want`.
fn errors(got: &[f32], want: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let (mut max, mut num, mut den) = (0.0f64, 0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let e = (g as f64 - w).abs();
        assert!(
            e.is_finite(),
            "a non-finite gradient {g} where the reference is {w}"
        );
        max = max.max(e);
        num += e * e;
        den += w * w;
    }
    (
        max,
        if den > 0.0 {
            (num / den).sqrt()
        } else {
            num.sqrt()
        },
    )
}

/// One case: the forward on the GPU (for out and the LSE), the backward by
/// each of `runs` and by the naive variant, all against the f64 reference.
fn case(name: &str, dims: Dims7, dtype: DType, o: &Opts, runs: &[(BackwardVariant, KvReads)]) {
    let ctx = ctx();
    let [b, hq, hkv, sq, sk, d, dv] = dims;
    let case = format!("{name} {dims:?} {dtype:?}");
    let mut r = rng(&case);
    let l = o.layout;
    let (q, qh) = upload(
        &uniform(&mut r, b * hq * sq * d),
        &shape(l, b, hq, sq, d),
        dtype,
    );
    let (k, kh) = upload(
        &uniform(&mut r, b * hkv * sk * d),
        &shape(l, b, hkv, sk, d),
        dtype,
    );
    let (v, vh) = upload(
        &uniform(&mut r, b * hkv * sk * dv),
        &shape(l, b, hkv, sk, dv),
        dtype,
    );
    let out_shape = shape(l, b, hq, sq, dv);
    let (d_out, doh) = upload(&uniform(&mut r, b * hq * sq * dv), &out_shape, dtype);
    let bias_vals = o.bias.map(|(s, _)| uniform(&mut r, s.iter().product()));
    let bias = o
        .bias
        .zip(bias_vals.as_ref())
        .map(|((s, _), x)| Tensor::from_slice(&ctx, x, &s).unwrap());
    let slopes: Vec<f32> = (0..hq).map(|h| 0.5f32.powi(h as i32 + 1)).collect();
    let sinks: Vec<f32> = uniform(&mut r, hq);
    let mask_shape = [b, 1, sq, sk];
    let mask_vals: Vec<bool> = (0..b * sq * sk).map(|i| (i * 7 + 3) % 5 != 0).collect();
    let mask = BoolMask::from_bools(&ctx, mask_shape, &mask_vals).unwrap();
    let mut opts = AttentionOptions::default()
        .layout(l)
        .causal(o.causal)
        .window(o.window)
        .sink_tokens(o.sink_tokens)
        .return_lse(true);
    if let Some(kl) = &o.kv_len {
        opts = opts.kv_len(kl);
    }
    if let Some(t) = &bias {
        opts = opts.bias(t).bias_grad(o.bias.is_some_and(|(_, g)| g));
    }
    if let Some(c) = o.softcap {
        opts = opts.softcap(c);
    }
    if o.alibi {
        opts = opts.alibi_slopes(&slopes);
    }
    if o.sinks {
        opts = opts.sinks(&sinks);
    }
    if o.mask {
        opts = opts.mask(&mask);
    }
    let fwd = attention(&q, &k, &v, &opts).unwrap();
    let a = AttentionRef {
        q: &qh,
        k: &kh,
        v: &vh,
        dims,
        layout: l,
        causal: o.causal,
        scale: None,
        kv_len: o.kv_len.as_deref(),
        bias: bias_vals.as_deref().zip(o.bias.map(|(s, _)| s)),
        window: (o.window.left, o.window.right),
        sink_tokens: o.sink_tokens,
        softcap: o.softcap,
        alibi: o.alibi.then_some(&slopes[..]),
        sinks: o.sinks.then_some(&sinks[..]),
        mask: o.mask.then_some((&mask_vals[..], mask_shape)),
    };
    let want = ref_backward(&a, &doh);
    let backward = |variant: BackwardVariant, reads: KvReads| {
        let opts = opts.backward_variant(variant).backward_reads(reads);
        let t = |s: &[usize], dt| {
            let t = Tensor::zeros(&ctx, s, dt).unwrap();
            t.poison().unwrap();
            t
        };
        let g = [
            t(q.shape(), dtype),
            t(k.shape(), dtype),
            t(v.shape(), dtype),
        ];
        let db = opts
            .bias_grad
            .then(|| t(bias.as_ref().unwrap().shape(), DType::F32));
        let into = GradientsInto {
            dq: &g[0],
            dk: &g[1],
            dv: &g[2],
            dbias: db.as_ref(),
        };
        attention_backward_into(&q, &k, &v, &fwd.out, &d_out, fwd.lse.as_ref(), &opts, &into)
            .unwrap_or_else(|e| panic!("{case} {variant:?} {reads:?}: {e}"));
        let mut got: Vec<Vec<f32>> = g.iter().map(read).collect();
        got.extend(db.as_ref().map(read));
        got
    };
    let mut refs: Vec<&[f64]> = vec![&want.dq, &want.dk, &want.dv];
    refs.extend(want.dbias.as_deref().filter(|_| opts.bias_grad));
    let naive = backward(BackwardVariant::Naive, KvReads::Buffers);
    let (eps, l2) = match dtype {
        DType::F16 => (f32::from(flashdot::f16::EPSILON) as f64, 5e-3),
        _ => (f32::EPSILON as f64, 2e-5),
    };
    for &(variant, reads) in runs {
        let got = backward(variant, reads);
        for (i, name) in ["dq", "dk", "dv", "dbias"]
            .iter()
            .enumerate()
            .take(refs.len())
        {
            let (e, rel) = errors(&got[i], refs[i]);
            let (en, _) = errors(&naive[i], refs[i]);
            let scale = refs[i].iter().fold(0.0f64, |m, x| m.max(x.abs()));
            // The gradients' own rounding (f16 outputs for f16 inputs; dbias
            // f32), and f32 accumulation over n terms (√n·ε, probabilistic):
            // where the naive backward is lucky on a short sum, 2× its error
            // can be below the rounding either order of summation makes.
            let round = if i == 3 { f32::EPSILON as f64 } else { eps };
            let n = (sq * hq / hkv.max(1) + sk + d + dv) as f64;
            let accumulate = 4.0 * f32::EPSILON as f64 * n.sqrt();
            let bound = 2.0 * en + (2.0 * round + accumulate) * scale;
            assert!(
                e <= bound && rel <= l2,
                "{case} {variant:?} {reads:?} {name}: max error {e:.3e} (bound {bound:.3e}: the \
                 naive backward's {en:.3e}), rel L2 {rel:.3e} (bound {l2:.1e}); replay with \
                 FLASHDOT_SEED={}",
                seed()
            );
        }
    }
}

const TEX: (BackwardVariant, KvReads) = (BackwardVariant::Flash, KvReads::Texels);
const BUF: (BackwardVariant, KvReads) = (BackwardVariant::Flash, KvReads::Buffers);

fn causal(c: Causal) -> Opts {
    Opts {
        causal: c,
        ..Default::default()
    }
}

fn kv_len_bshd() -> Opts {
    Opts {
        causal: Causal::BottomRight,
        kv_len: Some(vec![31, 7]),
        layout: Layout::Bshd,
        ..Default::default()
    }
}

fn bias(shape: [usize; 4], grad: bool, c: Causal) -> Opts {
    Opts {
        bias: Some((shape, grad)),
        causal: c,
        ..Default::default()
    }
}

/// Window with sink tokens, soft cap, ALiBi and sinks, bottom-right causal.
fn inference() -> Opts {
    Opts {
        causal: Causal::BottomRight,
        window: Window::left(5),
        sink_tokens: 2,
        softcap: Some(2.0),
        alibi: true,
        sinks: true,
        ..Default::default()
    }
}

/// The fast tier: each code path once (the vec4 and element loads, both
/// causal alignments with fully masked rows, the d = 64 tiles, GQA/MQA,
/// kv_len in the [b, s, h, d] layout, a broadcast bias's gradient, the
/// inference options), both flash sources on the element-load shape, f16
/// where the adapter has it. A software adapter compiles each new kernel for
/// about a second, so the rest of the grid is the long tier's.
#[test]
fn backward_against_the_reference() {
    let f32 = DType::F32;
    case(
        "odd",
        [1, 2, 2, 3, 59, 3, 5],
        f32,
        &Opts::default(),
        &[TEX, BUF],
    );
    // seq_q > seq_k bottom-right: the first rows see no key (zero gradients).
    let br = causal(Causal::BottomRight);
    case(
        "causal BR, masked rows",
        [1, 2, 1, 59, 17, 5, 7],
        f32,
        &br,
        &[TEX],
    );
    case(
        "causal TL",
        [2, 4, 2, 17, 59, 12, 4],
        f32,
        &causal(Causal::TopLeft),
        &[TEX],
    );
    case("MQA d64", [1, 4, 1, 127, 127, 64, 64], f32, &br, &[TEX]);
    case(
        "kv_len",
        [2, 2, 2, 20, 31, 16, 16],
        f32,
        &kv_len_bshd(),
        &[TEX],
    );
    let over_batch = bias([1, 2, 9, 13], true, Causal::TopLeft);
    case(
        "bias grad over batch",
        [3, 2, 2, 9, 13, 4, 4],
        f32,
        &over_batch,
        &[TEX],
    );
    case(
        "inference options",
        [1, 2, 1, 23, 40, 8, 8],
        f32,
        &inference(),
        &[TEX],
    );
    if ctx().info().has_f16() {
        case(
            "f16",
            [1, 2, 1, 23, 40, 8, 8],
            DType::F16,
            &inference(),
            &[TEX],
        );
    } else {
        f16_refused(&ctx());
    }
}

/// The long tier: the grid of shapes (1, 3, 59, 127; seq_q ≠ seq_k both
/// ways; head dims 128 and 256), every option on both flash sources, f16.
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn backward_grid() {
    let both = [TEX, BUF];
    for dt in float_dtypes(&ctx()) {
        let plain = Opts::default();
        case("one", [1, 1, 1, 1, 1, 1, 1], dt, &plain, &both);
        case("odd", [1, 2, 2, 3, 59, 3, 5], dt, &plain, &both);
        case("sq > sk", [2, 4, 2, 59, 3, 8, 8], dt, &plain, &both);
        let br = causal(Causal::BottomRight);
        case(
            "causal BR, masked rows",
            [1, 2, 1, 59, 17, 5, 7],
            dt,
            &br,
            &both,
        );
        case("MQA d64", [1, 4, 1, 127, 127, 64, 64], dt, &br, &both);
        case("d128", [1, 1, 1, 33, 65, 128, 128], dt, &bshd(), &both);
        case(
            "d256",
            [1, 1, 1, 9, 17, 256, 256],
            dt,
            &causal(Causal::TopLeft),
            &both,
        );
        case("d 256 / 1", [1, 2, 1, 5, 7, 256, 1], dt, &plain, &both);
        case(
            "kv_len",
            [2, 2, 2, 20, 31, 16, 16],
            dt,
            &kv_len_bshd(),
            &both,
        );
        case(
            "inference options",
            [1, 2, 1, 23, 40, 8, 8],
            dt,
            &inference(),
            &both,
        );
    }
    let f32 = DType::F32;
    let full = bias([2, 2, 9, 13], true, Causal::None);
    case("bias grad", [2, 2, 1, 9, 13, 8, 8], f32, &full, &[TEX, BUF]);
    let all = bias([1, 1, 9, 13], true, Causal::BottomRight);
    case(
        "bias grad over all",
        [2, 3, 3, 9, 13, 4, 4],
        f32,
        &all,
        &[TEX, BUF],
    );
    let heads = bias([2, 1, 9, 13], true, Causal::None);
    case(
        "bias grad over heads",
        [2, 3, 1, 9, 13, 4, 4],
        f32,
        &heads,
        &[TEX],
    );
    let masked = Opts {
        window: Window::new(3, 2),
        mask: true,
        bias: Some(([1, 2, 19, 19], false)),
        ..Default::default()
    };
    case(
        "two-sided window, mask, bias",
        [1, 2, 2, 19, 19, 4, 4],
        f32,
        &masked,
        &[TEX, BUF],
    );
    let long = causal(Causal::BottomRight);
    case(
        "long",
        [1, 2, 2, 1009, 1009, 64, 64],
        f32,
        &long,
        &[TEX, BUF],
    );
}

fn bshd() -> Opts {
    Opts {
        layout: Layout::Bshd,
        ..Default::default()
    }
}

/// Tensors for the error tests: q, k, v [1, 2, 4, 8], their forward.
fn small() -> (Tensor, Tensor, Tensor, AttentionOutput) {
    let ctx = ctx();
    let t = |s: &[usize]| Tensor::from_slice(&ctx, &vec![0.5f32; s.iter().product()], s).unwrap();
    let (q, k, v) = (t(&[1, 2, 4, 8]), t(&[1, 2, 4, 8]), t(&[1, 2, 4, 8]));
    let opts = AttentionOptions::default().return_lse(true);
    let fwd = attention(&q, &k, &v, &opts).unwrap();
    (q, k, v, fwd)
}

#[test]
fn backward_empty_inputs_give_zeros() {
    let ctx = ctx();
    for [sq, sk, dv] in [[0, 5, 4], [5, 0, 4], [5, 5, 0]] {
        let t = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
        let (q, k, v) = (t(&[1, 2, sq, 4]), t(&[1, 2, sk, 4]), t(&[1, 2, sk, dv]));
        let opts = AttentionOptions::default().return_lse(true);
        let fwd = attention(&q, &k, &v, &opts).unwrap();
        let d_out = t(fwd.out.shape());
        for variant in BackwardVariant::ALL {
            let o = opts.backward_variant(variant);
            let g = attention_backward(&q, &k, &v, &fwd.out, &d_out, fwd.lse.as_ref(), &o).unwrap();
            for (x, like) in [(&g.dq, &q), (&g.dk, &k), (&g.dv, &v)] {
                assert_eq!(x.shape(), like.shape());
                assert!(
                    read(x).iter().all(|&e| e == 0.0),
                    "{sq} {sk} {dv} {variant:?}"
                );
            }
        }
    }
}

#[test]
fn backward_bad_input_is_a_typed_error() {
    let ctx = ctx();
    let (q, k, v, fwd) = small();
    let lse = fwd.lse.as_ref();
    let opts = AttentionOptions::default();
    let bw = |out: &Tensor, d_out: &Tensor, lse: Option<&Tensor>, o: &AttentionOptions| {
        attention_backward(&q, &k, &v, out, d_out, lse, o).map(|_| ())
    };
    let d_out = Tensor::zeros(&ctx, fwd.out.shape(), DType::F32).unwrap();
    // No LSE: the forward ran without return_lse.
    let e = bw(&fwd.out, &d_out, None, &opts).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("return_lse"));
    // An LSE of another shape.
    let bad_lse = Tensor::zeros(&ctx, &[1, 2, 5], DType::F32).unwrap();
    let e = bw(&fwd.out, &d_out, Some(&bad_lse), &opts).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("[1, 2, 5]"),
        "{e}"
    );
    // d_out of another shape: both shapes named.
    let bad = Tensor::zeros(&ctx, &[1, 2, 4, 7], DType::F32).unwrap();
    let e = bw(&fwd.out, &bad, lse, &opts).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Shape { .. })
            && msg.contains("[1, 2, 4, 7]")
            && msg.contains("[1, 2, 4, 8]"),
        "{msg}"
    );
    // An LSE of another dtype.
    let u = Tensor::zeros(&ctx, &[1, 2, 4], DType::U32).unwrap();
    assert!(matches!(
        bw(&fwd.out, &d_out, Some(&u), &opts),
        Err(Error::DType { .. })
    ));
    // bias_grad without a bias.
    let e = bw(&fwd.out, &d_out, lse, &opts.bias_grad(true)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    // A paged cache: inference only.
    let table = [0u32];
    let paged = opts.paged(PagedKv {
        block_table: &table,
        max_pages: 1,
    });
    let e = bw(&fwd.out, &d_out, lse, &paged.kv_len(&[4])).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // A gradient sharing a buffer with an input, or of another shape.
    let g = attention_backward(&q, &k, &v, &fwd.out, &d_out, lse, &opts).unwrap();
    let into = |dq: &Tensor| {
        let gi = GradientsInto {
            dq,
            dk: &g.dk,
            dv: &g.dv,
            dbias: None,
        };
        attention_backward_into(&q, &k, &v, &fwd.out, &d_out, lse, &opts, &gi)
    };
    assert!(matches!(into(&d_out), Err(Error::InvalidArgument { .. })));
    assert!(matches!(into(&g.dk), Err(Error::InvalidArgument { .. })));
    let wrong = Tensor::zeros(&ctx, &[1, 2, 4, 9], DType::F32).unwrap();
    assert!(matches!(into(&wrong), Err(Error::Shape { .. })));
    // Tensors of two contexts.
    let other = flashdot::Context::new().unwrap();
    let d2 = Tensor::zeros(&other, fwd.out.shape(), DType::F32).unwrap();
    assert!(matches!(
        bw(&fwd.out, &d2, lse, &opts),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn backward_plans_are_visible() {
    let (q, k, v, fwd) = small();
    let lse = fwd.lse.as_ref();
    let d_out = fwd.out.clone();
    let opts = AttentionOptions::default();
    let plan = attention_backward_plan(&q, &k, &v, &fwd.out, &d_out, lse, &opts).unwrap();
    assert_eq!(plan.variant, BackwardVariant::Flash);
    let texel = ctx().profile().texel_reads;
    let want = if texel {
        KvReads::Texels
    } else {
        KvReads::Buffers
    };
    assert_eq!(plan.reads, Some(want), "{plan}");
    let naive = opts.backward_variant(BackwardVariant::Naive);
    let plan = attention_backward_plan(&q, &k, &v, &fwd.out, &d_out, lse, &naive).unwrap();
    assert_eq!(
        (plan.variant, plan.reads),
        (BackwardVariant::Naive, None),
        "{plan}"
    );
}

/// A query row with a NaN: its dq is NaN, it adds nothing to dk and dv
/// (the other rows' gradients are the reference's), as the reference says.
#[test]
fn backward_nan_row_stays_in_its_row() {
    let ctx = ctx();
    let dims = [1, 1, 1, 3, 5, 4, 4];
    let mut r = rng("nan row");
    let mut qv = uniform(&mut r, 12);
    qv[5] = f32::NAN;
    let (kv, vv, dov) = (
        uniform(&mut r, 20),
        uniform(&mut r, 20),
        uniform(&mut r, 12),
    );
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(&ctx, x, s).unwrap();
    let (q, k, v, d_out) = (
        t(&qv, &[1, 1, 3, 4]),
        t(&kv, &[1, 1, 5, 4]),
        t(&vv, &[1, 1, 5, 4]),
        t(&dov, &[1, 1, 3, 4]),
    );
    let opts = AttentionOptions::default().return_lse(true);
    let fwd = attention(&q, &k, &v, &opts).unwrap();
    let g = attention_backward(&q, &k, &v, &fwd.out, &d_out, fwd.lse.as_ref(), &opts).unwrap();
    let a = AttentionRef {
        q: &qv,
        k: &kv,
        v: &vv,
        dims,
        ..Default::default()
    };
    let want = ref_backward(&a, &dov);
    let dq = read(&g.dq);
    assert!(
        dq[4..8].iter().all(|x| x.is_nan()),
        "the NaN row's dq: {:?}",
        &dq[4..8]
    );
    let rest: Vec<f32> = [&dq[..4], &dq[8..]].concat();
    let want_rest: Vec<f64> = [&want.dq[..4], &want.dq[8..]].concat();
    check_elements(&rest, &want_rest, (1e-6, 1e-5), "dq of the other rows");
    check_elements(&read(&g.dk), &want.dk, (1e-6, 1e-5), "dk");
    check_elements(&read(&g.dv), &want.dv, (1e-6, 1e-5), "dv");
}

/// q, k and v as views of one fused `[b, s, 3 · h, d]` projection (what a
/// GPT-2 block's c_attn gives): the backward gathers them as the forward
/// does and gives the gradients of their contiguous copies, bit for bit,
/// through `attention_backward` and `_into`.
#[test]
fn backward_on_views_of_a_fused_qkv() {
    let ctx = ctx();
    let (b, s, h, d) = (2, 7, 3, 5);
    let mut r = rng("backward views");
    let fused =
        Tensor::from_slice(&ctx, &uniform(&mut r, b * s * 3 * h * d), &[b, s, 3 * h, d]).unwrap();
    let [q, k, v] = [0, 1, 2].map(|p| fused.narrow(2, p * h, h).unwrap());
    assert!(!q.is_contiguous());
    let opts = bshd_causal();
    let fwd = attention(&q, &k, &v, &opts).unwrap();
    let d_out = Tensor::from_slice(&ctx, &uniform(&mut r, b * s * h * d), &[b, s, h, d]).unwrap();
    let dense = [&q, &k, &v].map(|t| t.contiguous().unwrap());
    let want = attention_backward(
        &dense[0],
        &dense[1],
        &dense[2],
        &fwd.out,
        &d_out,
        fwd.lse.as_ref(),
        &opts,
    )
    .unwrap();
    let got = attention_backward(&q, &k, &v, &fwd.out, &d_out, fwd.lse.as_ref(), &opts).unwrap();
    let z = |_| Tensor::zeros(&ctx, &[b, s, h, d], DType::F32).unwrap();
    let [dq, dk, dv] = [0, 1, 2].map(z);
    for t in [&dq, &dk, &dv] {
        t.poison().unwrap();
    }
    let into = GradientsInto {
        dq: &dq,
        dk: &dk,
        dv: &dv,
        dbias: None,
    };
    attention_backward_into(&q, &k, &v, &fwd.out, &d_out, fwd.lse.as_ref(), &opts, &into).unwrap();
    for (name, w, g, i) in [
        ("dq", &want.dq, &got.dq, &dq),
        ("dk", &want.dk, &got.dk, &dk),
        ("dv", &want.dv, &got.dv, &dv),
    ] {
        assert_eq!(read(g), read(w), "{name}");
        assert_eq!(read(i), read(w), "{name} (into)");
    }
}

fn bshd_causal() -> AttentionOptions<'static> {
    AttentionOptions::default()
        .layout(Layout::Bshd)
        .causal(Causal::TopLeft)
        .return_lse(true)
}
