//! Device loss: after `ctx.device().destroy()`, no call panics or hangs;
//! wgpu reports the loss once the work in flight has drained (the next poll
//! after that fires the device-lost callback), and from then on every kind
//! of call returns `Error::DeviceLost`. The test bounds that time.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use flashdot::ops::attention::{attention, AttentionOptions};
use flashdot::ops::dot::dot;
use flashdot::ops::matmul::matmul;
use flashdot::ops::search::{FlatIndex, IndexOptions};
use flashdot::ops::similarity::normalize;
use flashdot::{Context, DType, Error, Tensor};

#[test]
fn every_call_after_destroy_is_device_lost() {
    let ctx = Context::new().unwrap_or_else(|e| panic!("flashdot tests need a GPU adapter: {e}"));
    let a = Tensor::from_slice(&ctx, &[1.0f32; 64], &[8, 8]).unwrap();
    let q = Tensor::from_slice(&ctx, &[0.5f32; 64], &[1, 1, 8, 8]).unwrap();
    let mut index = FlatIndex::new(&ctx, 8, IndexOptions::default()).unwrap();
    index.add(&[1.0f32; 64]).unwrap();
    // Work in flight when the device goes.
    let pending = matmul(&a, &a).unwrap();
    ctx.device().destroy();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        // The transition: calls return errors or Ok (their results are lost
        // with the device), never panic, until the loss is reported.
        let t = std::time::Instant::now();
        let mut calls = 0;
        loop {
            calls += 1;
            match dot(&a, &a) {
                Err(Error::DeviceLost(_)) => break,
                _ if t.elapsed() > Duration::from_secs(30) => break,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        eprintln!(
            "device loss reported after {calls} calls, {:?}",
            t.elapsed()
        );
        let lost = |what: &str, r: flashdot::Result<()>| {
            let ok = matches!(r, Err(Error::DeviceLost(_)));
            (what.to_string(), ok, format!("{r:?}"))
        };
        let results = vec![
            lost(
                "to_vec of work in flight",
                pending.to_vec::<f32>().map(|_| ()),
            ),
            lost(
                "Tensor::zeros",
                Tensor::zeros(&ctx, &[4], DType::F32).map(|_| ()),
            ),
            lost(
                "Tensor::from_slice",
                Tensor::from_slice(&ctx, &[1.0f32; 4], &[4]).map(|_| ()),
            ),
            lost("write", a.write(&[2.0f32; 64])),
            lost("dot", dot(&a, &a).map(|_| ())),
            lost("matmul", matmul(&a, &a).map(|_| ())),
            lost("normalize", normalize(&a).map(|_| ())),
            lost(
                "attention",
                attention(&q, &q, &q, &AttentionOptions::default()).map(|_| ()),
            ),
            lost("index add", index.add(&[1.0f32; 8])),
            lost("index search", index.search(&[1.0f32; 8], 1).map(|_| ())),
            lost("record", ctx.record(|| dot(&a, &a).map(|_| ()))),
            lost("synchronize", ctx.synchronize()),
            lost("to_vec", a.to_vec::<f32>().map(|_| ())),
        ];
        let _ = tx.send(results);
    });
    let results = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("calls on a destroyed device returned within 2 minutes");
    // The worker drops the context's objects after sending: let it finish
    // before the process exits (on GL, Mesa's EGL teardown at exit racing
    // a thread still deleting objects aborted with a double free).
    worker.join().expect("the worker thread ends");
    let bad: Vec<_> = results.iter().filter(|(_, ok, _)| !ok).collect();
    assert!(bad.is_empty(), "not DeviceLost: {bad:#?}");
}
