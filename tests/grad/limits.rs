//! Limits: an operand, a scratch buffer or a host-built table past one
//! storage binding is `TooLarge` naming what does not fit, before any
//! gradient is written (a context that requests a 64 KiB binding limit makes
//! the shapes small); the row kernels past one grid dimension.

use super::*;
use flashdot::{Context, ContextOptions, Error, Limit};

const LIMIT: u64 = 1 << 16;

/// A context whose storage bindings hold 64 KiB.
fn small() -> Context {
    let mut limits = ctx().info().limits.clone();
    limits.max_storage_buffer_binding_size = LIMIT;
    let opts = ContextOptions::default().with_limits(limits);
    Context::with_options(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A TooLarge error of `op` at the binding limit whose message names `what`.
#[track_caller]
fn too_large<T: std::fmt::Debug>(r: flashdot::Result<T>, op: &str, what: &str) {
    match r {
        Err(e @ Error::TooLarge { .. }) => {
            let Error::TooLarge {
                op: o, kind, limit, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*o, *kind, *limit), (op, Limit::StorageBinding, LIMIT));
            assert!(e.to_string().contains(what), "{e} does not name {what}");
        }
        other => panic!("expected {op} TooLarge naming {what}, got {other:?}"),
    }
}

fn poisoned_on(ctx: &Context, shape: &[usize]) -> Tensor {
    let t = Tensor::zeros(ctx, shape, DType::F32).unwrap();
    t.poison().unwrap();
    t
}

/// dy past the binding (its dz would be too): refused before dx, computed
/// first, is written.
#[test]
fn linear_backward_past_a_binding_writes_nothing() {
    let ctx = small();
    let rows = 9000; // dy [9000, 2] f32: 72,000 bytes
    let x = Tensor::zeros(&ctx, &[rows, 1], DType::F32).unwrap();
    let w = Tensor::zeros(&ctx, &[2, 1], DType::F32).unwrap();
    let dy = Tensor::zeros(&ctx, &[rows, 2], DType::F32).unwrap();
    let dx = poisoned_on(&ctx, &[rows, 1]);
    let into = LinearGradsInto {
        dx: Some(&dx),
        ..Default::default()
    };
    let r = linear_backward_into(&x, &w, &dy, Activation::None, None, into);
    too_large(r, "linear_backward", "dy [9000, 2]");
    assert!(dx.to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()));
}

/// The CSR of token positions (rows + 1 + tokens words) past the binding
/// while dy and the table fit.
#[test]
fn embedding_csr_past_a_binding_is_too_large() {
    let ctx = small();
    let (n, rows) = (8000, 10_000); // 18,001 words: 72,004 bytes
    let dy = Tensor::zeros(&ctx, &[1, n, 1], DType::F32).unwrap();
    let word = Tensor::zeros(&ctx, &[rows, 1], DType::F32).unwrap();
    let ids: Vec<u32> = (0..n as u32).collect();
    let grads = EmbeddingGrads {
        word: Some(&word),
        ..Default::default()
    };
    let r = embedding_backward_into(&ids, None, &dy, grads);
    too_large(r, "embedding_backward", "CSR");
}

/// A word per row for the targets and the row losses: past the binding for
/// one f16 class per row, whose logits fit.
#[test]
fn cross_entropy_targets_past_a_binding_are_too_large() {
    let ctx = small();
    if !ctx.info().has_f16() {
        return f16_refused(&ctx);
    }
    let n = 20_000; // logits 40,000 bytes, targets 80,000
    let logits = Tensor::zeros(&ctx, &[n, 1], DType::F16).unwrap();
    let dl = Tensor::zeros(&ctx, &[n, 1], DType::F16).unwrap();
    let targets = vec![0u32; n];
    let r = cross_entropy_into(&logits, &targets, &CrossEntropyOptions::default(), &dl);
    too_large(r, "cross_entropy", "targets");
}

/// Layer norm's per-row statistics (two f32 a row) past the binding, for
/// h = 1 rows whose tensors fit.
#[test]
fn layer_norm_statistics_past_a_binding_are_too_large() {
    let ctx = small();
    let rows = 9000; // x 36,000 bytes, statistics 72,000
    let t = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
    let (x, dy, gamma) = (t(&[rows, 1]), t(&[rows, 1]), t(&[1]));
    let (dx, dg, db) = (poisoned_on(&ctx, &[rows, 1]), t(&[1]), t(&[1]));
    let grads = NormGrads {
        dx: &dx,
        dgamma: &dg,
        dbeta: &db,
    };
    let r = layer_norm_backward_into(&x, None, &gamma, 1e-5, &dy, grads);
    too_large(r, "layer_norm_backward", "layer-norm statistics");
    assert!(dx.to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()));
}

/// The workgroup-per-row schedules over 70,000 rows: more workgroups than
/// one grid dimension takes (65,535), so the grid folds into y and every
/// row must still be covered once.
#[test]
fn row_kernels_past_one_grid_dimension_cover_every_row() {
    use super::grad_bounds::{ce_bounds, layer_norm_bounds};
    use flashdot::ops::norm::NormVariant;
    let mut r = rng("grad limits grid");
    let (rows, h) = (70_000, 3);
    let f = DType::F32;
    let (x, xv) = upload(&uniform(&mut r, rows * h), &[rows, h], f);
    let (gamma, gv) = upload(&uniform(&mut r, h), &[h], f);
    let (dy, dyv) = upload(&uniform(&mut r, rows * h), &[rows, h], f);
    let dx = poisoned(&[rows, h], f);
    let (dg, db) = (poisoned(&[h], f), poisoned(&[h], f));
    let grads = NormGrads {
        dx: &dx,
        dgamma: &dg,
        dbeta: &db,
    };
    let wg = NormVariant::Workgroup;
    layer_norm_backward_with(&x, None, &gamma, 1e-5, &dy, wg, grads).unwrap();
    let want = reference::grad::layer_norm_backward(&xv, None, &gv, 1e-5, &dyv, h);
    let [bx, bg, bb] = layer_norm_bounds(&xv, None, &gv, 1e-5, &dyv, h);
    let case = format!("layer norm backward Workgroup [{rows}, {h}]");
    within(&read(&dx), &want.dx, &bx, f, &format!("{case} dx"));
    within(&read(&dg), &want.dgamma, &bg, f, &format!("{case} dgamma"));
    within(&read(&db), &want.dbeta, &bb, f, &format!("{case} dbeta"));

    let targets: Vec<u32> = (0..rows).map(|_| r.random_range(0..h as u32)).collect();
    let dl = poisoned(&[rows, h], f);
    let opts = CrossEntropyOptions {
        variant: wg,
        ..Default::default()
    };
    let out = cross_entropy_into(&x, &targets, &opts, &dl).unwrap();
    let want = reference::grad::cross_entropy(&xv, &targets, h, opts.ignore_index);
    let [bl, bd, bloss] = ce_bounds(&xv, &targets, h, opts.ignore_index);
    let case = format!("cross entropy Workgroup [{rows}, {h}]");
    within(
        &read(&out.row_losses),
        &want.row_losses,
        &bl,
        f,
        &format!("{case} rows"),
    );
    within(
        &read(&dl),
        &want.dlogits,
        &bd,
        f,
        &format!("{case} dlogits"),
    );
    within(
        &read(&out.loss),
        &[want.loss],
        &bloss,
        f,
        &format!("{case} loss"),
    );
}
