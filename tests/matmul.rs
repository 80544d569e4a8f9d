//! Matmul and linear against the CPU reference: every variant, odd shapes,
//! transposes, broadcasts, epilogues, f32 and f16, empty cases.

mod common;

use common::*;
use flashdot::ops::matmul::*;
use flashdot::reference::matmul::LinearArgs;
use flashdot::{reference, verify, Context, DType, Error, Limit, Tensor};

/// Shapes that hurt: ones, primes, tile multiples and not, k ≫ m, n.
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (1, 1009, 3),
    (3, 5, 7),
    (60, 60, 60),
    (64, 64, 64),
    (127, 129, 131),
    (1, 101, 255),
];

/// Larger shapes, in the long tier.
const LARGE_SHAPES: [(usize, usize, usize); 2] = [(512, 512, 512), (257, 1024, 33)];

/// f32 inputs: rel L2 < 1e-5 (k ≤ 1024); f16 storage: < 5e-3 against the f32
/// reference on the unrounded inputs.
fn tol(dtype: DType) -> f64 {
    if dtype == DType::F16 {
        5e-3
    } else {
        1e-5
    }
}

/// Whether the variant in `opts` serves `a · b` (as `op` runs it): a forced
/// tile configuration that cannot read the shape is refused by the plan, and
/// then the call must refuse too, with `Unsupported` (checked here); every
/// other variant serves every shape.
#[track_caller]
fn serves(
    a: &Tensor,
    b: &Tensor,
    opts: &MatmulOptions,
    op: impl FnOnce() -> Result<(), Error>,
) -> bool {
    match plan(a, b, opts) {
        Err(Error::Unsupported { detail, .. })
            if matches!(opts.variant, MatmulVariant::Tiled(_)) =>
        {
            let e = op().expect_err(&detail);
            assert!(matches!(e, Error::Unsupported { .. }), "{e}");
            false
        }
        _ => true,
    }
}

/// One product: `a [m, k] · b [k, n]`, A stored `[k, m]` if `ta`, B
/// `[n, k]` if `tb`, both in `dtype`.
#[derive(Debug, Clone, Copy)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    dtype: DType,
}

impl Case {
    /// `m × k · k × n`, f32, neither transposed.
    fn new(m: usize, k: usize, n: usize) -> Case {
        Case {
            m,
            k,
            n,
            ta: false,
            tb: false,
            dtype: DType::F32,
        }
    }
    fn transposed(self, ta: bool, tb: bool) -> Case {
        Case { ta, tb, ..self }
    }
    fn dtype(self, dtype: DType) -> Case {
        Case { dtype, ..self }
    }
}

/// Runs `c` with each of `variants` that serves it against the reference.
fn run_matmul_on(ctx: &Context, c: Case, variants: &[MatmulVariant]) {
    let Case {
        m,
        k,
        n,
        ta,
        tb,
        dtype,
    } = c;
    let case = format!("matmul m={m} k={k} n={n} ta={ta} tb={tb} {dtype}");
    let mut rng = rng(&case);
    let a = uniform(&mut rng, m * k);
    let b = uniform(&mut rng, k * n);
    let want = reference::matmul::matmul(&a, &b, m, k, n, ta, tb);
    let sa = if ta { [k, m] } else { [m, k] };
    let sb = if tb { [n, k] } else { [k, n] };
    let (ga, _) = upload_to(ctx, &a, &sa, dtype);
    let (gb, _) = upload_to(ctx, &b, &sb, dtype);
    let out = Tensor::zeros(ctx, &[m, n], DType::F32).unwrap();
    for &v in variants {
        let opts = MatmulOptions::default().transpose(ta, tb).variant(v);
        out.poison().unwrap();
        if !serves(&ga, &gb, &opts, || matmul_into(&ga, &gb, &opts, &out)) {
            continue;
        }
        matmul_into(&ga, &gb, &opts, &out).unwrap_or_else(|e| panic!("{case} {v}: {e}"));
        check(
            &verify::compare(&read(&out), &want),
            tol(dtype),
            &format!("{case} {v}"),
        );
    }
}

#[test]
fn matmul_f32_shapes_every_variant() {
    let vs = MatmulVariant::all(&ctx());
    for (m, k, n) in SHAPES {
        run_matmul_on(&ctx(), Case::new(m, k, n), &vs);
    }
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn matmul_large_shapes_every_variant() {
    let vs = MatmulVariant::all(&ctx());
    for (m, k, n) in LARGE_SHAPES {
        for dtype in float_dtypes(&ctx()) {
            run_matmul_on(&ctx(), Case::new(m, k, n).dtype(dtype), &vs);
        }
    }
}

#[test]
fn matmul_transposes_every_variant() {
    let vs = MatmulVariant::all(&ctx());
    for (m, k, n) in [(3, 5, 7), (127, 129, 131), (64, 64, 64), (33, 36, 40)] {
        for (ta, tb) in [(true, false), (false, true), (true, true)] {
            run_matmul_on(&ctx(), Case::new(m, k, n).transposed(ta, tb), &vs);
        }
    }
}

/// The texel kernel without subgroups (every invocation fetches each row of A
/// itself), on shapes that are not tile multiples, B as [k, n] and as [n, k].
#[test]
fn texel_kernel_without_subgroups() {
    let ctx = ctx_without_subgroups();
    let v = [MatmulVariant::Tiled(TileConfig::Texel {
        wg: 8,
        tm: 32,
        tn: 8,
    })];
    run_matmul_on(&ctx, Case::new(60, 60, 60), &v);
    run_matmul_on(&ctx, Case::new(33, 36, 70).transposed(false, true), &v);
}

#[test]
fn matmul_f16_every_variant() {
    if !ctx().info().has_f16() {
        return f16_refused(&ctx());
    }
    let vs = MatmulVariant::all(&ctx());
    for (m, k, n) in SHAPES {
        run_matmul_on(&ctx(), Case::new(m, k, n).dtype(DType::F16), &vs);
    }
    run_matmul_on(
        &ctx(),
        Case::new(127, 129, 131)
            .transposed(false, true)
            .dtype(DType::F16),
        &vs,
    );
}

#[test]
fn matmul_f16_output() {
    let ctx = ctx();
    let (m, k, n) = (67, 64, 72);
    let mut rng = rng("f16 out");
    let a = uniform(&mut rng, m * k);
    let b = uniform(&mut rng, k * n);
    let want = reference::matmul::matmul(&a, &b, m, k, n, false, false);
    let ga = Tensor::from_slice(&ctx, &a, &[m, k]).unwrap();
    let gb = Tensor::from_slice(&ctx, &b, &[k, n]).unwrap();
    if !ctx.info().has_f16() {
        // f32 inputs, f16 output: refused by the plan, before any work.
        let opts = MatmulOptions::default().out_dtype(DType::F16);
        let e = plan(&ga, &gb, &opts).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let e = matmul_with(&ga, &gb, &opts).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        return f16_refused(&ctx);
    }
    for v in MatmulVariant::all(&ctx) {
        let opts = MatmulOptions::default().variant(v).out_dtype(DType::F16);
        if !serves(&ga, &gb, &opts, || matmul_with(&ga, &gb, &opts).map(|_| ())) {
            continue;
        }
        let out = matmul_with(&ga, &gb, &opts).unwrap();
        assert_eq!(out.dtype(), DType::F16);
        check(
            &verify::compare(&read(&out), &want),
            5e-3,
            &format!("f16 out {v}"),
        );
    }
}

#[test]
fn matmul_batched_broadcast() {
    let ctx = ctx();
    // (a batch dims, b batch dims, out batch dims)
    let cases: [(&[usize], &[usize], &[usize]); 4] = [
        (&[4], &[4], &[4]),
        (&[4], &[1], &[4]),
        (&[], &[3], &[3]),
        (&[3, 1], &[1, 2], &[3, 2]),
    ];
    // k and n multiples of 4 once: the vec4 and texel kernels take that shape.
    for ((ba, bb, bo), (m, k, n)) in cases
        .into_iter()
        .flat_map(|c| [(c, (19, 23, 29)), (c, (19, 24, 28))])
    {
        let case = format!("batched {ba:?} x {bb:?}, m={m} k={k} n={n}");
        let mut rng = rng(&case);
        let na: usize = ba.iter().product();
        let nb: usize = bb.iter().product();
        let a = uniform(&mut rng, na * m * k);
        let b = uniform(&mut rng, nb * k * n);
        let sa: Vec<usize> = ba.iter().copied().chain([m, k]).collect();
        let sb: Vec<usize> = bb.iter().copied().chain([k, n]).collect();
        let ga = Tensor::from_slice(&ctx, &a, &sa).unwrap();
        let gb = Tensor::from_slice(&ctx, &b, &sb).unwrap();
        // Reference: broadcast by hand over the (at most 2-d) batch shape.
        let nd = bo.len();
        let pad = |s: &[usize]| -> Vec<usize> {
            let mut v = vec![1; nd - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (pa, pb) = (pad(ba), pad(bb));
        let mut want = Vec::new();
        let nz: usize = bo.iter().product();
        for z in 0..nz {
            let mut idx = vec![0; nd];
            let mut r = z;
            for d in (0..nd).rev() {
                idx[d] = r % bo[d];
                r /= bo[d];
            }
            let flat = |p: &[usize]| {
                (0..nd).fold(0, |acc, d| acc * p[d] + if p[d] == 1 { 0 } else { idx[d] })
            };
            let (ia, ib) = (flat(&pa), flat(&pb));
            want.extend(reference::matmul::matmul(
                &a[ia * m * k..(ia + 1) * m * k],
                &b[ib * k * n..(ib + 1) * k * n],
                m,
                k,
                n,
                false,
                false,
            ));
        }
        for v in MatmulVariant::all(&ctx) {
            let opts = MatmulOptions::default().variant(v);
            let out_shape: Vec<usize> = bo.iter().copied().chain([m, n]).collect();
            let out = Tensor::zeros(&ctx, &out_shape, DType::F32).unwrap();
            out.poison().unwrap();
            if !serves(&ga, &gb, &opts, || matmul_into(&ga, &gb, &opts, &out)) {
                continue;
            }
            matmul_into(&ga, &gb, &opts, &out).unwrap_or_else(|e| panic!("{case} {v}: {e}"));
            check(
                &verify::compare(&read(&out), &want),
                1e-5,
                &format!("{case} {v}"),
            );
        }
    }
}

#[test]
fn linear_every_epilogue() {
    let ctx = ctx();
    let vs = MatmulVariant::all(&ctx);
    for (rows, inp, outf) in [(37, 64, 48), (5, 13, 7)] {
        for act in Activation::ALL {
            for with_bias in [false, true] {
                let case = format!("linear {rows}x{inp}->{outf} {act:?} bias={with_bias}");
                let mut rng = rng(&case);
                // Scaled so activations see both signs and their nonlinear range.
                let x: Vec<f32> = uniform(&mut rng, rows * inp)
                    .iter()
                    .map(|v| v * 3.0)
                    .collect();
                let w = uniform(&mut rng, outf * inp);
                let bias = uniform(&mut rng, outf);
                let alpha = 0.75;
                let want = reference::matmul::linear(
                    &x,
                    &w,
                    with_bias.then_some(&bias[..]),
                    LinearArgs::new(rows, inp, outf).act(act).alpha(alpha),
                );
                // x given as [.., in] with two leading dims to check the flattening.
                let gx = Tensor::from_slice(&ctx, &x, &[1, rows, inp]).unwrap();
                let gw = Tensor::from_slice(&ctx, &w, &[outf, inp]).unwrap();
                let gb = Tensor::from_slice(&ctx, &bias, &[outf]).unwrap();
                let out = Tensor::zeros(&ctx, &[1, rows, outf], DType::F32).unwrap();
                for &v in &vs {
                    let opts = MatmulOptions::default().variant(v).alpha(alpha);
                    out.poison().unwrap();
                    let linear_run =
                        || linear_into(&gx, &gw, with_bias.then_some(&gb), act, &opts, &out);
                    let x2 = gx.reshape(&[rows, inp]).unwrap();
                    if !serves(&x2, &gw, &opts.transpose(false, true), linear_run) {
                        continue;
                    }
                    linear_run().unwrap_or_else(|e| panic!("{case} {v}: {e}"));
                    check(
                        &verify::compare(&read(&out), &want),
                        1e-5,
                        &format!("{case} {v}"),
                    );
                }
            }
        }
    }
}

#[test]
fn empty_and_k_zero() {
    let ctx = ctx();
    let z = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
    for v in MatmulVariant::all(&ctx) {
        let o = MatmulOptions::default().variant(v);
        assert_eq!(
            matmul_with(&z(&[0, 5]), &z(&[5, 3]), &o).unwrap().shape(),
            &[0, 3]
        );
        assert_eq!(
            matmul_with(&z(&[4, 5]), &z(&[5, 0]), &o).unwrap().shape(),
            &[4, 0]
        );
        // k = 0: the empty sum, so a zero matrix plus bias.
        let (a0, b0) = (z(&[3, 0]), z(&[0, 2]));
        if !serves(&a0, &b0, &o, || matmul_with(&a0, &b0, &o).map(|_| ())) {
            continue;
        }
        let c = matmul_with(&z(&[3, 0]), &z(&[0, 2]), &o).unwrap();
        assert_eq!(c.to_vec::<f32>().unwrap(), vec![0.0; 6], "{v}");
        let bias = Tensor::from_slice(&ctx, &[1.0f32, -2.0], &[2]).unwrap();
        let y = linear_with(&z(&[3, 0]), &z(&[2, 0]), Some(&bias), Activation::Relu, &o).unwrap();
        assert_eq!(
            y.to_vec::<f32>().unwrap(),
            vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
            "{v}"
        );
    }
}

#[test]
fn shape_errors_name_both_shapes() {
    let ctx = ctx();
    let z = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
    let e = matmul(&z(&[3, 4]), &z(&[5, 6])).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "matmul", .. }), "{e}");
    assert!(
        e.to_string().contains("[3, 4]") && e.to_string().contains("[5, 6]"),
        "{e}"
    );
    let e = matmul(&z(&[2, 3, 4]), &z(&[3, 4, 5])).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = matmul(&z(&[4]), &z(&[4, 5])).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = linear(&z(&[2, 3]), &z(&[4, 5]), None, Activation::None).unwrap_err();
    assert!(
        e.to_string().contains("[2, 3]") && e.to_string().contains("[4, 5]"),
        "{e}"
    );
    let e = linear(&z(&[2, 3]), &z(&[4, 3]), Some(&z(&[5])), Activation::None).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    if ctx.info().has_f16() {
        let h = Tensor::zeros(&ctx, &[3, 4], DType::F16).unwrap();
        let e = matmul(&h, &z(&[4, 5])).unwrap_err();
        assert!(matches!(e, Error::DType { .. }), "{e}");
    } else {
        f16_refused(&ctx);
    }
}

#[test]
fn operand_over_binding_limit_is_clear_error() {
    let ctx = ctx();
    let max = ctx.info().limits.max_storage_buffer_binding_size as usize;
    let k = 1024;
    let m = max / (4 * k) + 1;
    let a = Tensor::zeros(&ctx, &[m, k], DType::F32).unwrap();
    let b = Tensor::zeros(&ctx, &[k, 1], DType::F32).unwrap();
    let e = matmul(&a, &b).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { kind: Limit::StorageBinding, limit, .. } if limit == max as u64),
        "{e}"
    );
    // The message names the limit and gives sizes in MiB.
    let text = e.to_string();
    assert!(
        text.contains("max_storage_buffer_binding_size") && text.contains(" MiB"),
        "{e}"
    );
}

/// The autotuner caches its winner per shape class on its context: the
/// plan and a product of the same class get it without tuning, another
/// class has none.
#[test]
fn autotune_caches_the_winner_per_shape_class() {
    let ctx = Context::new().unwrap();
    let z = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
    let opts = MatmulOptions::default().variant(MatmulVariant::Autotune);
    let (a, b) = (z(&[64, 64]), z(&[64, 64]));
    assert_eq!(tuned_config(&a, &b, &opts), None);
    matmul_with(&a, &b, &opts).unwrap();
    let c = tuned_config(&a, &b, &opts).expect("a winner once tuned");
    assert_eq!(plan(&a, &b, &opts).unwrap().kernel, MatmulVariant::Tiled(c));
    // 60 rounds up to 64 and keeps k and n multiples of 4: the same class.
    assert_eq!(tuned_config(&z(&[60, 60]), &z(&[60, 60]), &opts), Some(c));
    // B read transposed, or k not a multiple of 4: other classes.
    assert_eq!(tuned_config(&a, &b, &opts.transpose(false, true)), None);
    assert_eq!(tuned_config(&z(&[64, 63]), &z(&[63, 64]), &opts), None);
}
