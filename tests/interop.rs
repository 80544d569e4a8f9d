//! flashdot inside a wgpu app: a context on the app's device, tensors on the
//! app's buffers, ops recorded into one submission, contexts kept apart.

mod common;

use common::*;
use flashdot::ops::attention::{attention, AttentionOptions, Causal, Layout};
use flashdot::ops::dot::{dot, dot_into, DotVariant};
use flashdot::ops::matmul::{linear, matmul, matmul_into, Activation, MatmulOptions};
use flashdot::ops::similarity::{normalize, normalize_into};
use flashdot::reference::matmul::LinearArgs;
use flashdot::tensor::TENSOR_USAGES;
use flashdot::{reference, verify, wgpu, Context, DType, Error, Tensor};

/// An app's own device: what the adapter offers minus `drop`.
fn app_device(drop: wgpu::Features) -> (wgpu::Adapter, wgpu::Device, wgpu::Queue) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .unwrap_or_else(|e| panic!("flashdot tests need a GPU adapter: {e}"));
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: adapter.features() & !drop,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("the app's device");
    (adapter, device, queue)
}

#[test]
fn app_device_without_f16_plans_around_it() {
    let (adapter, device, queue) = app_device(wgpu::Features::SHADER_F16);
    let ctx = Context::from_wgpu(&adapter, device, queue);
    assert!(!ctx.info().has_f16() && !ctx.profile().f16);
    let e = Tensor::zeros(&ctx, &[4, 4], DType::F16).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // f32 work runs on the app's device.
    let a = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    assert_eq!(
        matmul(&a, &a).unwrap().to_vec::<f32>().unwrap(),
        vec![7.0, 10.0, 15.0, 22.0]
    );
}

#[test]
fn app_buffers_wrapped_with_checks() {
    let (adapter, device, queue) = app_device(wgpu::Features::empty());
    let ctx = Context::from_wgpu(&adapter, device.clone(), queue.clone());
    let align = ctx.profile().storage_offset_alignment as u64;
    let buffer = |usage, size| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("app"),
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let no_copy = buffer(wgpu::BufferUsages::STORAGE, 1024);
    let e = Tensor::from_buffer(&ctx, no_copy, 0, &[16], DType::F32).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("COPY_SRC"),
        "{e}"
    );
    let e =
        Tensor::from_buffer(&ctx, buffer(TENSOR_USAGES, 4096), 4, &[16], DType::F32).unwrap_err();
    assert!(e.to_string().contains("alignment"), "{e}");
    let e = Tensor::from_buffer(&ctx, buffer(TENSOR_USAGES, 64), 0, &[17], DType::F32).unwrap_err();
    assert!(e.to_string().contains("68 bytes"), "{e}");

    // Operands at an aligned offset of one app buffer, the output at another:
    // kernels bind the tensor's own range, copies start at its offset.
    let (m, k, n) = (5, 8, 12);
    let mut rng = rng("app buffer offsets");
    let (a, b) = (uniform(&mut rng, m * k), uniform(&mut rng, k * n));
    let up = |x: u64| x.div_ceil(align) * align;
    let (off_a, off_b) = (align, up(align + 4 * (m * k) as u64));
    let off_c = up(off_b + 4 * (k * n) as u64);
    let shared = buffer(TENSOR_USAGES, off_c + 4096);
    queue.write_buffer(&shared, off_a, bytemuck::cast_slice(&a));
    queue.write_buffer(&shared, off_b, bytemuck::cast_slice(&b));
    let ta = Tensor::from_buffer(&ctx, shared.clone(), off_a, &[m, k], DType::F32).unwrap();
    let tb = Tensor::from_buffer(&ctx, shared.clone(), off_b, &[k, n], DType::F32).unwrap();
    // A dispatch cannot read and write one buffer: an output there is refused.
    let inside = Tensor::from_buffer(&ctx, shared.clone(), off_c, &[m, n], DType::F32).unwrap();
    let e = matmul_into(&ta, &tb, &MatmulOptions::default(), &inside).unwrap_err();
    assert!(e.to_string().contains("out and a share one buffer"), "{e}");
    let other = buffer(TENSOR_USAGES, 2 * align + 4096);
    let out = Tensor::from_buffer(&ctx, other, align, &[m, n], DType::F32).unwrap();
    out.poison().unwrap();
    for v in flashdot::ops::matmul::MatmulVariant::all(&ctx) {
        matmul_into(&ta, &tb, &MatmulOptions::default().variant(v), &out).unwrap();
        let want = reference::matmul::matmul(&a, &b, m, k, n, false, false);
        check(
            &verify::compare(&out.to_vec::<f32>().unwrap(), &want),
            1e-5,
            &format!("{v}"),
        );
    }
    // The bytes before the operands are untouched by flashdot's writes.
    let head =
        Tensor::from_buffer(&ctx, shared.clone(), 0, &[(align / 4) as usize], DType::F32).unwrap();
    assert_eq!(
        head.to_vec::<f32>().unwrap(),
        vec![0.0; (align / 4) as usize]
    );
    // Dot over the offset tensors (its row windows start at the offset).
    let rows = Tensor::from_buffer(&ctx, shared, off_a, &[m, k], DType::F32).unwrap();
    let want = reference::dot::dot(&a, &a, k);
    check(
        &verify::compare(&dot(&rows, &rows).unwrap().to_vec::<f32>().unwrap(), &want),
        1e-6,
        "dot",
    );
    // A result usable as the app's vertex buffer.
    let v =
        Tensor::zeros_with_usage(&ctx, &[3, 4], DType::F32, wgpu::BufferUsages::VERTEX).unwrap();
    assert!(v
        .buffer()
        .usage()
        .contains(wgpu::BufferUsages::VERTEX | TENSOR_USAGES));
}

#[test]
fn tensors_of_two_contexts_are_refused_by_name() {
    let (one, two) = (ctx(), Context::new().expect("a second context"));
    let a = Tensor::zeros(&one, &[4, 8], DType::F32).unwrap();
    let b = Tensor::zeros(&two, &[4, 8], DType::F32).unwrap();
    let e = dot(&a, &b).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(
        e.to_string().contains("a is on context") && e.to_string().contains("b on another"),
        "{e}"
    );
    let e = matmul(&a, &Tensor::zeros(&two, &[8, 2], DType::F32).unwrap()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let q = Tensor::zeros(&one, &[1, 1, 2, 8], DType::F32).unwrap();
    let k = Tensor::zeros(&two, &[1, 1, 2, 8], DType::F32).unwrap();
    let e = attention(&q, &k, &k, &AttentionOptions::default()).unwrap_err();
    assert!(e.to_string().contains("k on another"), "{e}");
    let out = Tensor::zeros(&two, &[4, 8], DType::F32).unwrap();
    let e = normalize_into(&a, &out).unwrap_err();
    assert!(e.to_string().contains("out on another"), "{e}");
    let out = Tensor::zeros(&two, &[4], DType::F32).unwrap();
    assert!(dot_into(&a, &a, DotVariant::Auto, &out).is_err());
}

/// linear → normalize → dot → attention recorded into one submission; every
/// intermediate checked against the CPU reference after the scope.
#[test]
fn recorded_chain_matches_the_reference() {
    let ctx = ctx();
    let (rows, inp, hidden) = (33, 24, 16);
    let mut rng = rng("recorded chain");
    let x = uniform(&mut rng, rows * inp);
    let w = uniform(&mut rng, hidden * inp);
    let bias = uniform(&mut rng, hidden);
    let (tx, tw, tb) = (
        Tensor::from_slice(&ctx, &x, &[rows, inp]).unwrap(),
        Tensor::from_slice(&ctx, &w, &[hidden, inp]).unwrap(),
        Tensor::from_slice(&ctx, &bias, &[hidden]).unwrap(),
    );
    let submitted_before = ctx.memory_stats().buffers_created;
    let (y, unit, dots, att) = ctx
        .record(|| {
            let y = linear(&tx, &tw, Some(&tb), Activation::GeluTanh)?;
            // Inside the scope nothing has run yet: readbacks are refused.
            let e = y.to_vec::<f32>().unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
            assert!(ctx.synchronize().is_err());
            let unit = normalize(&y)?;
            let dots = dot(&unit, &y)?;
            // A host write in the scope lands in order with the ops.
            let scratch = Tensor::zeros(&ctx, &[rows, hidden], DType::F32)?;
            scratch.write(&vec![0.5f32; rows * hidden])?;
            let q = y.reshape(&[1, rows, 1, hidden])?;
            let kv = scratch.reshape(&[1, rows, 1, hidden])?;
            let opts = AttentionOptions::default()
                .layout(Layout::Bshd)
                .causal(Causal::TopLeft);
            let att = attention(&q, &kv, &q, &opts)?.out;
            Ok((y, unit, dots, att))
        })
        .unwrap();
    assert!(ctx.memory_stats().buffers_created > submitted_before);
    let want_y = reference::matmul::linear(
        &x,
        &w,
        Some(&bias),
        LinearArgs::new(rows, inp, hidden).act(Activation::GeluTanh),
    );
    let got_y = y.to_vec::<f32>().unwrap();
    check(&verify::compare(&got_y, &want_y), 1e-5, "linear");
    let want_unit = reference::similarity::normalize(&got_y, hidden);
    let got_unit = unit.to_vec::<f32>().unwrap();
    check(&verify::compare(&got_unit, &want_unit), 1e-5, "normalize");
    let want_dots = reference::dot::dot(&got_unit, &got_y, hidden);
    check(
        &verify::compare(&dots.to_vec::<f32>().unwrap(), &want_dots),
        1e-5,
        "dot",
    );
    let (want_att, _) = reference::attention::attention(&reference::attention::AttentionRef {
        q: &got_y,
        k: &vec![0.5f32; rows * hidden],
        v: &got_y,
        dims: [1, 1, 1, rows, rows, hidden, hidden],
        layout: Layout::Bshd,
        causal: Causal::TopLeft,
        scale: None,
        kv_len: None,
        bias: None,
        ..Default::default()
    });
    check(
        &verify::compare(&att.to_vec::<f32>().unwrap(), &want_att),
        1e-5,
        "attention",
    );
    // A failing op inside the scope submits nothing and returns its error.
    let e = ctx.record(|| matmul(&tx, &tx).map(|_| ())).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

/// One thread's long matmuls and another's small readbacks on one context at
/// once: every result correct. The small thread's waits are printed (a
/// measurement, not an assertion).
#[test]
fn small_readbacks_beside_long_matmuls_are_correct() {
    let ctx = ctx();
    let n = 512;
    let big = Tensor::from_slice(&ctx, &vec![1.0f32; n * n], &[n, n]).unwrap();
    let small = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0], &[1, 3]).unwrap();
    std::thread::scope(|s| {
        let long = s.spawn(|| {
            let t = std::time::Instant::now();
            for _ in 0..4 {
                let c = matmul(&big, &big).unwrap();
                assert_eq!(c.to_vec::<f32>().unwrap()[0], n as f32);
            }
            t.elapsed()
        });
        let mut waits = Vec::new();
        for _ in 0..8 {
            let t = std::time::Instant::now();
            assert_eq!(
                dot(&small, &small).unwrap().to_vec::<f32>().unwrap(),
                vec![14.0]
            );
            waits.push(t.elapsed());
        }
        let long = long.join().unwrap();
        eprintln!("4 long 512³ matmuls: {long:?}; small dot + readback waits: {waits:?}");
    });
}

/// A KV cache filled token by token, from the host (`write_at`) and from
/// device tensors (`copy_at`), inside and outside a recording; attention over
/// the filled part equals attention over the same keys given whole.
#[test]
fn kv_cache_appends_then_attention() {
    let ctx = ctx();
    let (cap, h, d, t) = (16, 2, 8, 5);
    let mut rng = rng("kv cache appends");
    let k = uniform(&mut rng, t * h * d);
    let v = uniform(&mut rng, t * h * d);
    let q = uniform(&mut rng, h * d);
    let kc = Tensor::zeros(&ctx, &[1, cap, h, d], DType::F32).unwrap();
    let vc = Tensor::zeros(&ctx, &[1, cap, h, d], DType::F32).unwrap();
    let row = |x: &[f32], i: usize| x[i * h * d..(i + 1) * h * d].to_vec();
    for i in 0..t {
        if i % 2 == 0 {
            kc.write_at(&[0, i], &row(&k, i)).unwrap();
            let dev = Tensor::from_slice(&ctx, &row(&v, i), &[h, d]).unwrap();
            ctx.record(|| vc.copy_at(&[0, i], &dev)).unwrap();
        } else {
            ctx.record(|| kc.write_at(&[0, i], &row(&k, i))).unwrap();
            let dev = Tensor::from_slice(&ctx, &row(&v, i), &[1, 1, h, d]).unwrap();
            vc.copy_at(&[0, i], &dev).unwrap();
        }
    }
    let gq = Tensor::from_slice(&ctx, &q, &[1, 1, h, d]).unwrap();
    let lens = [t as u32];
    let opts = AttentionOptions::default()
        .layout(Layout::Bshd)
        .kv_len(&lens);
    let got = attention(&gq, &kc, &vc, &opts)
        .unwrap()
        .out
        .to_vec::<f32>()
        .unwrap();
    let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
        q: &q,
        k: &k,
        v: &v,
        dims: [1, h, h, 1, t, d, d],
        layout: Layout::Bshd,
        causal: Causal::None,
        scale: None,
        kv_len: None,
        bias: None,
        ..Default::default()
    });
    check(&verify::compare(&got, &want), 1e-5, "cache");
    // Outside the shape, past its end, or half words: refused.
    assert!(matches!(
        kc.write_at(&[0, cap], &row(&k, 0)),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        kc.write_at(&[0, cap - 1], &k),
        Err(Error::Shape { .. })
    ));
    if ctx.info().has_f16() {
        let hc = Tensor::zeros(&ctx, &[4, 3], DType::F16).unwrap();
        let e = hc.write_at(&[1], &[flashdot::f16::ONE; 3]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
}

/// The `h` heads of part `part` (0 Q, 1 K, 2 V) of a `[b, s, 3·h·d]` fused
/// projection, as a contiguous `[b, s, h, d]` host array.
fn qkv_part(x: &[f32], (b, s, h, d): (usize, usize, usize, usize), part: usize) -> Vec<f32> {
    let row = 3 * h * d;
    (0..b * s)
        .flat_map(|r| x[r * row + part * h * d..r * row + (part + 1) * h * d].to_vec())
        .collect()
}

/// Q, K and V as views of one fused projection (no host split): attention
/// equals the reference on the split arrays, for f32 and f16, odd head dims,
/// seq_q ≠ seq_k; views read back as the elements they address.
#[test]
fn attention_on_views_of_a_fused_qkv() {
    let ctx = ctx();
    let mut rng = rng("fused qkv views");
    for &(b, s, h, d, dtype) in &[
        (2, 7, 3, 5, DType::F32),
        (1, 33, 2, 16, DType::F32),
        (2, 9, 3, 8, DType::F16),
    ] {
        if dtype == DType::F16 && !ctx.info().has_f16() {
            continue;
        }
        let x = uniform(&mut rng, b * s * 3 * h * d);
        let (qkv, x) = upload_to(&ctx, &x, &[b, s, 3 * h * d], dtype);
        let heads = qkv.reshape(&[b, s, 3 * h, d]).unwrap();
        let [q, k, v] = [0, 1, 2].map(|p| heads.narrow(2, p * h, h).unwrap());
        assert!(!k.is_contiguous());
        assert_eq!(k.strides(), vec![s * 3 * h * d, 3 * h * d, d, 1]);
        let want_k = qkv_part(&x, (b, s, h, d), 1);
        check(
            &verify::compare(
                &read(&k),
                &want_k.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            ),
            0.0,
            "K view read back",
        );
        // Queries: the last 4 rows only (seq_q < seq_k), a view of a view.
        let sq = 4.min(s);
        let q = q.narrow(1, s - sq, sq).unwrap();
        let opts = AttentionOptions::default()
            .layout(Layout::Bshd)
            .causal(Causal::BottomRight);
        let out = attention(&q, &k, &v, &opts).unwrap().out;
        let qh: Vec<f32> = qkv_part(&x, (b, s, h, d), 0)
            .chunks(s * h * d)
            .flat_map(|bq| bq[(s - sq) * h * d..].to_vec())
            .collect();
        let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
            q: &qh,
            k: &want_k,
            v: &qkv_part(&x, (b, s, h, d), 2),
            dims: [b, h, h, sq, s, d, d],
            layout: Layout::Bshd,
            causal: Causal::BottomRight,
            scale: None,
            kv_len: None,
            bias: None,
            ..Default::default()
        });
        let tol = if dtype == DType::F16 { 5e-3 } else { 1e-5 };
        check(
            &verify::compare(&read(&out), &want),
            tol,
            &format!("attention on views b={b} s={s} h={h} d={d} {dtype}"),
        );
    }
}

/// Writes into f16 views move whole 4-byte words: a view whose run starts on
/// a word and ends on one (or at the end of its tensor) is written exactly,
/// one that starts or ends inside a word shared with elements outside it is
/// refused with `InvalidArgument` (never a wgpu validation error, never a
/// neighbour half-overwritten), and the tensor is unchanged.
#[test]
fn f16_view_writes_move_whole_words_or_are_refused() {
    let ctx = ctx();
    if !ctx.info().has_f16() {
        // Tensors of f16 are Unsupported there: checked by context's tests.
        assert!(matches!(
            Tensor::zeros(&ctx, &[8, 3, 17], DType::F16),
            Err(Error::Unsupported { .. })
        ));
        return;
    }
    let n = 8 * 3 * 17;
    let x: Vec<flashdot::f16> = (0..n).map(|i| flashdot::f16::from_f32(i as f32)).collect();
    let t = Tensor::from_slice(&ctx, &x, &[8, 3, 17]).unwrap();
    let ones = |len: usize| vec![flashdot::f16::ONE; len];
    // Starts at element 153 (byte 306), inside a word; ends inside one at
    // element 255 (byte 510); both outside the tensor's own end.
    for (start, len) in [(3, 5), (0, 5), (1, 1)] {
        let v = t.narrow(0, start, len).unwrap();
        let e = v.write(&ones(v.len())).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("4-byte word"),
            "narrow(0, {start}, {len}): {e}"
        );
    }
    assert_eq!(
        t.to_vec::<flashdot::f16>().unwrap(),
        x,
        "refused writes wrote nothing"
    );
    // Rows 2..4 start at element 102 (byte 204) and end at 204 (byte 408):
    // whole words, written exactly; rows 6..8 end at the tensor's end.
    let mut want = x.clone();
    for (start, len) in [(2, 2), (6, 2)] {
        let v = t.narrow(0, start, len).unwrap();
        v.write(&ones(v.len())).unwrap();
        want[start * 51..(start + len) * 51].fill(flashdot::f16::ONE);
    }
    assert_eq!(t.to_vec::<flashdot::f16>().unwrap(), want);
    // The same rules for write_at: a run of odd length may end at the
    // tensor's end (its padding word is its own), not inside the tensor.
    let h = Tensor::zeros(&ctx, &[5], DType::F16).unwrap();
    h.write_at(&[2], &ones(3)).unwrap();
    let e = h.write_at(&[0], &ones(3)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let z = flashdot::f16::ZERO;
    let o = flashdot::f16::ONE;
    assert_eq!(h.to_vec::<flashdot::f16>().unwrap(), vec![z, z, o, o, o]);
    let e = t.write(&vec![0.0f32; n]).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
}

/// Views: dim-0 narrows stay contiguous (aligned ones without a copy),
/// strided ones are refused by ops that need contiguity (with the way out in
/// the message) and by writes; bad narrows are shape errors.
#[test]
fn views_contiguity_and_errors() {
    let ctx = ctx();
    let x: Vec<f32> = (0..64 * 8).map(|i| i as f32).collect();
    let t = Tensor::from_slice(&ctx, &x, &[64, 8]).unwrap();
    let rows = t.narrow(0, 32, 16).unwrap();
    assert!(rows.is_contiguous());
    assert_eq!(rows.to_vec::<f32>().unwrap(), x[32 * 8..48 * 8].to_vec());
    let odd = t.narrow(0, 3, 5).unwrap();
    assert_eq!(odd.to_vec::<f32>().unwrap(), x[3 * 8..8 * 8].to_vec());
    let d = dot(&odd, &odd.contiguous().unwrap()).map(|_| ());
    let align = ctx.profile().storage_offset_alignment.max(4) as u64;
    if odd.offset().is_multiple_of(align) {
        d.unwrap();
    } else {
        let e = d.unwrap_err();
        assert!(e.to_string().contains("contiguous()"), "{e}");
    }
    let cols = t.narrow(1, 2, 3).unwrap();
    assert!(!cols.is_contiguous());
    let want: Vec<f32> = (0..64)
        .flat_map(|r| x[r * 8 + 2..r * 8 + 5].to_vec())
        .collect();
    assert_eq!(cols.to_vec::<f32>().unwrap(), want);
    assert_eq!(cols.contiguous().unwrap().to_vec::<f32>().unwrap(), want);
    let e = matmul(&cols, &t.narrow(0, 0, 3).unwrap()).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("contiguous()"),
        "{e}"
    );
    let e = cols.write(&vec![0.0f32; 64 * 3]).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(matches!(
        cols.reshape(&[192]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(t.narrow(2, 0, 1), Err(Error::Shape { .. })));
    assert!(matches!(t.narrow(1, 7, 2), Err(Error::Shape { .. })));
    assert!(matches!(
        t.narrow(1, usize::MAX, 2),
        Err(Error::Shape { .. })
    ));
    // An empty view reads back empty.
    assert!(t
        .narrow(1, 8, 0)
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
        .is_empty());
}

/// `copy_from` writes a view in place: a strided one (the columns of a
/// fused projection, 4-D and 3-D) through the scatter kernel, an unaligned
/// row run through a buffer copy, inside a recording too; every element
/// outside the view keeps its value. f16 strided views, other shapes and
/// dtypes are refused.
#[test]
fn copy_from_writes_views_in_place() {
    let ctx = ctx();
    let mut r = rng("copy_from");
    let (rows, h, d) = (7, 3, 5);
    let base = uniform(&mut r, rows * 3 * h * d);
    let t = Tensor::from_slice(&ctx, &base, &[rows, 3 * h, d]).unwrap();
    let mut want = base.clone();
    for part in 0..3 {
        let src = uniform(&mut r, rows * h * d);
        let dev = Tensor::from_slice(&ctx, &src, &[rows, h, d]).unwrap();
        let view = t.narrow(1, part * h, h).unwrap();
        assert!(!view.is_contiguous());
        if part == 1 {
            ctx.record(|| view.copy_from(&dev)).unwrap();
        } else {
            view.copy_from(&dev).unwrap();
        }
        for (i, &v) in src.iter().enumerate() {
            let (row, rest) = (i / (h * d), i % (h * d));
            want[row * 3 * h * d + part * h * d + rest] = v;
        }
        assert_eq!(t.to_vec::<f32>().unwrap(), want, "part {part}");
    }
    // A strided source is gathered first; a contiguous unaligned row run.
    let other = uniform(&mut r, 3 * 3 * h * d);
    let cols = Tensor::from_slice(&ctx, &other, &[3, 3 * h, d]).unwrap();
    let rows_view = t.narrow(0, 2, 3).unwrap().narrow(2, 1, 3).unwrap();
    rows_view.copy_from(&cols.narrow(2, 0, 3).unwrap()).unwrap();
    for row in 0..3 {
        for j in 0..3 * h {
            for k in 1..4 {
                want[((row + 2) * 3 * h + j) * d + k] = other[(row * 3 * h + j) * d + k - 1];
            }
        }
    }
    assert_eq!(t.to_vec::<f32>().unwrap(), want);
    let run = t.narrow(0, 1, 2).unwrap();
    let src = uniform(&mut r, 2 * 3 * h * d);
    run.copy_from(&Tensor::from_slice(&ctx, &src, &[2, 3 * h, d]).unwrap())
        .unwrap();
    want[3 * h * d..3 * 3 * h * d].copy_from_slice(&src);
    assert_eq!(t.to_vec::<f32>().unwrap(), want);

    let small = Tensor::zeros(&ctx, &[rows, h, d], DType::F32).unwrap();
    let e = t.copy_from(&small).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("[7, 3, 5]"),
        "{e}"
    );
    let u = Tensor::zeros(&ctx, &[rows, 3 * h, d], DType::U32).unwrap();
    assert!(matches!(t.copy_from(&u), Err(Error::DType { .. })));
    let e = t
        .narrow(1, 0, h)
        .unwrap()
        .copy_from(&t.narrow(1, h, h).unwrap());
    assert!(matches!(e, Err(Error::InvalidArgument { .. })));
    if float_dtypes(&ctx).contains(&DType::F16) {
        let hf = Tensor::zeros(&ctx, &[rows, 2 * h], DType::F16).unwrap();
        let src = Tensor::zeros(&ctx, &[rows, h], DType::F16).unwrap();
        let e = hf.narrow(1, 0, h).unwrap().copy_from(&src).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
}

/// 300 different matmuls recorded in one submission (more parameter blocks
/// than the arena's first buffer holds, so it grows mid-recording): every
/// result matches the reference, so no op read another's parameters.
#[test]
fn long_recording_keeps_every_ops_parameters() {
    let ctx = ctx();
    let mut rng = rng("long recording");
    let (inp, outd) = (8, 8);
    let w = uniform(&mut rng, inp * outd);
    let tw = Tensor::from_slice(&ctx, &w, &[inp, outd]).unwrap();
    let xs: Vec<Vec<f32>> = (0..300)
        .map(|i| uniform(&mut rng, (1 + i % 13) * inp))
        .collect();
    let txs: Vec<Tensor> = xs
        .iter()
        .map(|x| Tensor::from_slice(&ctx, x, &[x.len() / inp, inp]).unwrap())
        .collect();
    let outs = ctx
        .record(|| {
            txs.iter()
                .map(|x| matmul(x, &tw))
                .collect::<flashdot::Result<Vec<_>>>()
        })
        .unwrap();
    for (i, (x, o)) in xs.iter().zip(&outs).enumerate() {
        let want = reference::matmul::matmul(x, &w, x.len() / inp, inp, outd, false, false);
        check(
            &verify::compare(&o.to_vec::<f32>().unwrap(), &want),
            1e-5,
            &format!("op {i}"),
        );
    }
}

/// Steady state: repeated `_into` calls (matmul on texels or buffers, dot,
/// flash attention) create no buffer or texture once warm.
#[test]
fn steady_state_calls_create_no_buffers() {
    // A context of its own: other tests' work in flight on the shared one
    // may rightly make the parameter arena take another chunk.
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    let a = Tensor::from_slice(&ctx, &vec![0.5f32; 64 * 64], &[64, 64]).unwrap();
    let c = Tensor::zeros(&ctx, &[64, 64], DType::F32).unwrap();
    let x = Tensor::from_slice(&ctx, &vec![0.5f32; 768], &[1, 768]).unwrap();
    let d = Tensor::zeros(&ctx, &[1], DType::F32).unwrap();
    let q = Tensor::from_slice(&ctx, &vec![0.1f32; 4 * 32 * 64], &[1, 4, 32, 64]).unwrap();
    let o = Tensor::zeros(&ctx, &[1, 4, 32, 64], DType::F32).unwrap();
    let opts = AttentionOptions::default();
    let calls = || -> flashdot::Result<()> {
        matmul_into(&a, &a, &MatmulOptions::default(), &c)?;
        dot_into(&x, &x, DotVariant::Auto, &d)?;
        flashdot::ops::attention::attention_into(&q, &q, &q, &opts, &o, None)?;
        Ok(())
    };
    for _ in 0..3 {
        calls().unwrap();
        ctx.record(calls).unwrap();
    }
    ctx.synchronize().unwrap();
    let before = ctx.memory_stats().buffers_created;
    for _ in 0..5 {
        calls().unwrap();
        ctx.record(calls).unwrap();
    }
    ctx.synchronize().unwrap();
    assert_eq!(ctx.memory_stats().buffers_created, before);
    assert_eq!(c.to_vec::<f32>().unwrap()[0], 16.0);
}

/// `to_vec_async` does not block: polled by hand, it returns `Pending` or
/// the data, and once pending it is woken (by the context's poller thread)
/// and then yields the data.
#[test]
fn async_readback_wakes_instead_of_blocking() {
    use std::future::Future;
    use std::sync::mpsc;
    use std::task::{Context as TaskCx, Poll, Wake, Waker};
    struct Chan(std::sync::Mutex<mpsc::Sender<()>>);
    impl Wake for Chan {
        fn wake(self: std::sync::Arc<Self>) {
            let _ = self.0.lock().unwrap().send(());
        }
    }
    let ctx = ctx();
    let n = 256;
    let big = Tensor::from_slice(&ctx, &vec![1.0f32; n * n], &[n, n]).unwrap();
    let c = matmul(&big, &big).unwrap();
    let (tx, rx) = mpsc::channel();
    let waker = Waker::from(std::sync::Arc::new(Chan(std::sync::Mutex::new(tx))));
    let mut fut = Box::pin(c.to_vec_async::<f32>());
    let mut cx = TaskCx::from_waker(&waker);
    let mut polls = 0;
    let got = loop {
        polls += 1;
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => break r.unwrap(),
            Poll::Pending => rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the poller wakes the future"),
        }
    };
    assert_eq!(got.len(), n * n);
    assert!(got.iter().all(|&v| v == n as f32));
    eprintln!("async readback ready after {polls} polls");
}

/// Four threads recording on one context at once, each chain verified: the
/// recordings and the parameter arena's chunks do not mix threads' work.
#[test]
fn threads_record_at_once() {
    let ctx = ctx();
    std::thread::scope(|s| {
        for t in 0..4 {
            let ctx = ctx.clone();
            s.spawn(move || {
                let mut rng = rng(&format!("recording thread {t}"));
                for i in 0..25 {
                    let (m, k, n) = (1 + (i * 7 + t) % 19, 1 + (i * 3) % 11, 1 + (i + t) % 9);
                    let a = uniform(&mut rng, m * k);
                    let b = uniform(&mut rng, k * n);
                    let ta = Tensor::from_slice(&ctx, &a, &[m, k]).unwrap();
                    let tb = Tensor::from_slice(&ctx, &b, &[k, n]).unwrap();
                    let (c, d) = ctx
                        .record(|| {
                            let c = matmul(&ta, &tb)?;
                            let d = dot(&c, &c)?;
                            Ok((c, d))
                        })
                        .unwrap();
                    let want = reference::matmul::matmul(&a, &b, m, k, n, false, false);
                    let got = c.to_vec::<f32>().unwrap();
                    check(
                        &verify::compare(&got, &want),
                        1e-5,
                        &format!("thread {t} op {i}"),
                    );
                    let want_d = reference::dot::dot(&got, &got, n);
                    let tol = dot_tolerance(&got, &got, n, &want_d);
                    check(
                        &verify::compare(&d.to_vec::<f32>().unwrap(), &want_d),
                        tol,
                        &format!("thread {t} dot {i}"),
                    );
                }
            });
        }
    });
}
