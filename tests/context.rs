//! Context, tensors and error plumbing.

mod common;

use common::*;
use flashdot::ops::dot::{dot_with, DotVariant};
use flashdot::{f16, reference, verify, Context, ContextOptions, DType, Error, Tensor};

#[test]
fn info_reports_adapter() {
    let ctx = ctx();
    let text = ctx.info().to_string();
    assert!(text.contains(&ctx.info().name), "{text}");
    assert!(ctx.info().limits.max_storage_buffer_binding_size > 0);
}

#[test]
fn upload_length_mismatch_is_shape_error() {
    let ctx = ctx();
    let e = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(e.to_string().contains("[2, 2]"), "{e}");
}

#[test]
fn roundtrip_odd_lengths() {
    let ctx = ctx();
    let mut rng = rng("roundtrip");
    for n in [0usize, 1, 3, 1009] {
        let x = uniform(&mut rng, n);
        let t = Tensor::from_slice(&ctx, &x, &[n]).unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), x);
        if ctx.info().has_f16() {
            let h = to_f16(&x);
            let t = Tensor::from_slice(&ctx, &h, &[n]).unwrap();
            assert_eq!(t.to_vec::<f16>().unwrap(), h);
        }
    }
    let t = Tensor::zeros(&ctx, &[3], DType::F32).unwrap();
    assert!(matches!(t.to_vec::<u32>(), Err(Error::DType { .. })));
}

/// A closure that panics inside `Context::record` ends the recording as a
/// return does: later readbacks and recordings on that thread work.
#[test]
fn record_ends_when_its_closure_panics() {
    let ctx = ctx();
    let t = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0], &[1, 3]).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctx.record(|| -> flashdot::Result<()> { panic!("inside a recording") })
    }));
    assert!(panicked.is_err());
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    let d = ctx.record(|| dot_with(&t, &t, DotVariant::Auto)).unwrap();
    assert_eq!(d.to_vec::<f32>().unwrap(), vec![14.0]);
}

#[test]
fn f16_without_feature_is_unsupported() {
    let ctx = Context::with_options(
        ContextOptions::default().without_features(wgpu::Features::SHADER_F16),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!ctx.info().has_f16());
    let e = Tensor::from_slice(&ctx, &[f16::ONE; 4], &[2, 2]).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let e = Tensor::zeros(&ctx, &[2], DType::F16).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}

#[test]
fn too_large_tensor_is_error_not_panic() {
    let ctx = ctx();
    let max = ctx.info().limits.max_buffer_size;
    let n = (max / 4 + 1024) as usize;
    let e = Tensor::zeros(&ctx, &[n], DType::F32).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

#[test]
fn context_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Context>();
    assert_send_sync::<Tensor>();
    let ctx = ctx();
    std::thread::scope(|s| {
        for t in 0..4 {
            let ctx = ctx.clone();
            s.spawn(move || {
                let mut rng = rng(&format!("thread {t}"));
                for i in 0..50 {
                    let (n, d) = (1 + i * 7, 1 + (i * 13 + t) % 97);
                    let a = uniform(&mut rng, n * d);
                    let b = uniform(&mut rng, n * d);
                    let ta = Tensor::from_slice(&ctx, &a, &[n, d]).unwrap();
                    let tb = Tensor::from_slice(&ctx, &b, &[n, d]).unwrap();
                    let v = DotVariant::ALL[i % 3];
                    let got = dot_with(&ta, &tb, v).unwrap().to_vec::<f32>().unwrap();
                    let want = reference::dot::dot(&a, &b, d);
                    let tol = dot_tolerance(&a, &b, d, &want);
                    let r = verify::compare(&got, &want);
                    check(&r, tol, &format!("thread {t} call {i} n={n} d={d} {v:?}"));
                }
            });
        }
    });
}

#[test]
fn memory_stats_track_live_and_peak_bytes() {
    // A context of its own: other tests allocate concurrently on the shared one.
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    let before = ctx.memory_stats();
    let t = Tensor::zeros(&ctx, &[1000, 256], DType::F32).unwrap();
    let during = ctx.memory_stats();
    assert_eq!(during.live_bytes, before.live_bytes + 1000 * 256 * 4);
    assert!(during.peak_bytes >= during.live_bytes);
    drop(t);
    let after = ctx.memory_stats();
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.peak_bytes, during.peak_bytes);
    ctx.reset_peak_memory();
    assert_eq!(ctx.memory_stats().peak_bytes, after.live_bytes);
}

#[test]
fn gpu_timer_measures_passes() {
    let ctx = Context::new().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ctx.stop_gpu_timer().unwrap(), None, "no timer was running");
    let a = Tensor::from_slice(&ctx, &vec![1.0f32; 4096 * 64], &[4096, 64]).unwrap();
    let started = ctx.start_gpu_timer().unwrap();
    assert_eq!(started, ctx.info().has_timestamps());
    dot_with(&a, &a, DotVariant::Naive).unwrap();
    let t = ctx.stop_gpu_timer().unwrap();
    if started {
        let t = t.expect("a timer was running");
        assert!(
            t > std::time::Duration::ZERO && t < std::time::Duration::from_secs(60),
            "{t:?}"
        );
    } else {
        assert_eq!(t, None);
    }
}

/// `FLASHDOT_DUMP_WGSL=dir` writes each generated shader, its spec on the
/// first line, as the pipeline is built.
#[test]
fn dump_wgsl_writes_generated_shaders() {
    let dir = std::env::temp_dir().join(format!("flashdot-dump-{}", std::process::id()));
    std::env::set_var("FLASHDOT_DUMP_WGSL", &dir);
    // A fresh context: its pipeline cache is empty, so the kernel is built.
    let fresh = Context::with_options(ContextOptions::default())
        .unwrap_or_else(|e| panic!("flashdot tests need a GPU adapter: {e}"));
    let a = Tensor::from_slice(&fresh, &[1.0f32, 2.0, 3.0], &[1, 3]).unwrap();
    let cos = flashdot::ops::similarity::cosine(&a, &a).unwrap();
    std::env::remove_var("FLASHDOT_DUMP_WGSL");
    let cos = cos.to_vec::<f32>().unwrap()[0];
    assert!((cos - 1.0).abs() < 1e-6, "{cos}");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    let dumped = files
        .iter()
        .map(|f| std::fs::read_to_string(f.path()).unwrap())
        .find(|s| s.starts_with("// SimilaritySpec"))
        .expect("a similarity shader in the dump folder");
    assert!(dumped.contains("fn cosine"), "{dumped}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Shapes whose element or byte count overflows are `TooLarge` (or a shape
/// mismatch), never wrapped into a small allocation.
#[test]
fn overflowing_shapes_are_errors() {
    let ctx = ctx();
    let e = Tensor::zeros(&ctx, &[1 << 62], DType::F32).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let e = Tensor::zeros(&ctx, &[1 << 40, 1 << 40], DType::F32).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let e = Tensor::from_slice::<f32>(&ctx, &[], &[1 << 62, 4]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // 2^64 − 2 bytes: representable, but rounding up to whole 4-byte words
    // once wrapped to 0 and allocated a 16-byte buffer (found by the fuzz tier).
    let e = Tensor::zeros(&ctx, &[usize::MAX / 2, 1], DType::F16).unwrap_err();
    if ctx.info().has_f16() {
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    } else {
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }
    let t = Tensor::zeros(&ctx, &[4], DType::F32).unwrap();
    let e = t.reshape(&[1 << 32, 1 << 32, 2]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

/// No adapter because a name narrowed the search: the error names the
/// filter and lists the adapters that are present, instead of telling the
/// user to install a driver they have.
#[test]
fn no_adapter_message_fits_the_cause() {
    let present = ctx().info().name.clone();
    let e = Context::with_options(
        ContextOptions::default().with_adapter_name("no-such-adapter-flashdot"),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::NoAdapter { .. }), "{e}");
    assert!(
        msg.contains("no-such-adapter-flashdot") && msg.contains(&present),
        "{msg}"
    );
    assert!(!msg.contains("apt-get"), "{msg}");
}
