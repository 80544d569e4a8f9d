//! The linear layer's backward: dx, dw and db against the f64 reference for
//! every activation, leading dimensions, f16 storage and f16 gradients,
//! skipped gradients, and zero rows.

use super::*;

/// The rows of `x`, `w`, `dy`, `pre` a case uploads and what they hold.
struct Layer {
    x: Tensor,
    w: Tensor,
    dy: Tensor,
    pre: Tensor,
    xv: Vec<f32>,
    wv: Vec<f32>,
    dyv: Vec<f32>,
    prev: Vec<f32>,
}

fn layer(r: &mut Rng64, lead: &[usize], inp: usize, out: usize, dtype: DType) -> Layer {
    let rows: usize = lead.iter().product();
    let shape = |last| [lead, &[last]].concat();
    let (x, xv) = upload(&uniform(r, rows * inp), &shape(inp), dtype);
    let (w, wv) = upload(&uniform(r, out * inp), &[out, inp], dtype);
    let (dy, dyv) = upload(&uniform(r, rows * out), &shape(out), dtype);
    let pre: Vec<f32> = uniform(r, rows * out).iter().map(|v| 3.0 * v).collect();
    let (pre, prev) = upload(&pre, &shape(out), dtype);
    Layer {
        x,
        w,
        dy,
        pre,
        xv,
        wv,
        dyv,
        prev,
    }
}

/// Bounds of dx, dw and db: each is a sum of products of dz with x or w (k
/// terms: out for dx, rows for dw and db), so `k·u·Σ|dz||·|`, with dz's own
/// error (the activation's bound; in f16 storage dz is rounded to f16 before
/// the products) added to |dz|.
fn bounds(l: &Layer, act: Activation, dims: (usize, usize, usize), f16: bool) -> [Vec<f64>; 3] {
    let (rows, _, out) = dims;
    let dz = match act {
        Activation::None => l.dyv.iter().map(|&v| v as f64).collect(),
        _ => reference::grad::activation_backward(&l.prev, &l.dyv, act),
    };
    let err: Vec<f64> = match act {
        Activation::None => vec![0.0; dz.len()],
        _ => act_bound(&l.prev, &l.dyv),
    };
    // |dz| plus the error of the dz the products read, relative to k·u.
    let (ku_dx, ku_dw) = ((out + 2) as f64 * U, (rows + 2) as f64 * U);
    let round = if f16 && act != Activation::None {
        U16
    } else {
        0.0
    };
    let mag = |ku: f64| -> Vec<f32> {
        dz.iter()
            .zip(&err)
            .map(|(d, e)| (d.abs() * (1.0 + round / ku) + e / ku) as f32)
            .collect()
    };
    let g = |m: &[f32]| {
        reference::grad::linear_backward(&abs(&l.xv), &abs(&l.wv), m, None, Activation::None, dims)
    };
    let (a, b) = (g(&mag(ku_dx)), g(&mag(ku_dw)));
    let scale = |v: &[f64], ku: f64| v.iter().map(|s| ku * s).collect::<Vec<f64>>();
    [
        scale(&a.dx, ku_dx),
        scale(&b.dw, ku_dw),
        scale(&b.db, ku_dw),
    ]
}

#[test]
fn linear_backward_matches_the_reference() {
    let mut r = rng("grad linear");
    // (leading dims, in, out): 1, 3, 59, 127, a 3-D x, and rows and in
    // multiples of 4 (where CPU adapters transpose dz before dW).
    let shapes: [(&[usize], usize, usize); 7] = [
        (&[1], 1, 1),
        (&[3], 59, 127),
        (&[127], 3, 59),
        (&[59], 127, 3),
        (&[3, 5], 7, 9),
        (&[1009], 16, 33),
        (&[4, 33], 20, 13),
    ];
    let mut acts = Activation::ALL.iter().cycle();
    for dtype in dtypes() {
        for &(lead, inp, out) in &shapes {
            let rows: usize = lead.iter().product();
            let l = layer(&mut r, lead, inp, out, dtype);
            // Each shape meets two activations, every activation many shapes.
            for &act in [acts.next().unwrap(), acts.next().unwrap()] {
                let g = linear_backward(&l.x, &l.w, &l.dy, act, Some(&l.pre)).unwrap();
                let dims = (rows, inp, out);
                let pre = (act != Activation::None).then_some(&l.prev[..]);
                let want = reference::grad::linear_backward(&l.xv, &l.wv, &l.dyv, pre, act, dims);
                let [bx, bw, bb] = bounds(&l, act, dims, dtype == DType::F16);
                let case = format!(
                    "linear backward {act:?} {dtype} x {:?} -> {out}",
                    l.x.shape()
                );
                assert_eq!(g.dx.shape(), l.x.shape());
                within(
                    &read(&g.dx),
                    &want.dx,
                    &bx,
                    DType::F32,
                    &format!("{case} dx"),
                );
                within(
                    &read(&g.dw),
                    &want.dw,
                    &bw,
                    DType::F32,
                    &format!("{case} dw"),
                );
                within(
                    &read(&g.db),
                    &want.db,
                    &bb,
                    DType::F32,
                    &format!("{case} db"),
                );
            }
        }
    }
}

/// Into caller tensors: f16 gradients, skipped ones left untouched.
#[test]
fn linear_backward_into_writes_what_it_is_given() {
    let mut r = rng("grad linear into");
    let (rows, inp, out) = (59, 7, 127);
    for dtype in dtypes() {
        let l = layer(&mut r, &[rows], inp, out, dtype);
        let act = Activation::GeluErf;
        let dims = (rows, inp, out);
        let want = reference::grad::linear_backward(&l.xv, &l.wv, &l.dyv, Some(&l.prev), act, dims);
        let [bx, bw, bb] = bounds(&l, act, dims, dtype == DType::F16);
        for gdt in dtypes() {
            let (dx, dw, db) = (
                poisoned(&[rows, inp], gdt),
                poisoned(&[out, inp], gdt),
                poisoned(&[out], gdt),
            );
            let into = LinearGradsInto {
                dx: Some(&dx),
                dw: None,
                db: Some(&db),
            };
            linear_backward_into(&l.x, &l.w, &l.dy, act, Some(&l.pre), into).unwrap();
            let case = format!("linear backward into {dtype} -> {gdt}");
            within(&read(&dx), &want.dx, &bx, gdt, &format!("{case} dx"));
            within(&read(&db), &want.db, &bb, gdt, &format!("{case} db"));
            assert!(
                read(&dw).iter().all(|v| v.is_nan()),
                "{case}: dw was skipped"
            );
            let into = LinearGradsInto {
                dw: Some(&dw),
                ..Default::default()
            };
            linear_backward_into(&l.x, &l.w, &l.dy, act, Some(&l.pre), into).unwrap();
            within(&read(&dw), &want.dw, &bw, gdt, &format!("{case} dw"));
        }
    }
}

/// No rows: nothing flows back, so dw and db are zero (written, not left).
#[test]
fn linear_backward_of_no_rows_is_zero() {
    for dtype in dtypes() {
        let z = |s: &[usize]| Tensor::zeros(&ctx(), s, dtype).unwrap();
        let (x, w, dy) = (z(&[0, 5]), z(&[3, 5]), z(&[0, 3]));
        let (dw, db) = (poisoned(&[3, 5], dtype), poisoned(&[3], dtype));
        let into = LinearGradsInto {
            dx: Some(&x.clone()),
            dw: Some(&dw),
            db: Some(&db),
        };
        // dx would share x's buffer: refused; without it, zeros.
        assert!(linear_backward_into(&x, &w, &dy, Activation::None, None, into).is_err());
        let dx = z(&[0, 5]);
        let into = LinearGradsInto {
            dx: Some(&dx),
            ..into
        };
        linear_backward_into(&x, &w, &dy, Activation::None, None, into).unwrap();
        assert!(read(&dw).iter().chain(&read(&db)).all(|&v| v == 0.0));
        let g = linear_backward(&x, &w, &dy, Activation::Relu, Some(&dy)).unwrap();
        assert_eq!(g.dx.shape(), &[0, 5]);
        assert!(read(&g.dw).iter().all(|&v| v == 0.0));
    }
}
