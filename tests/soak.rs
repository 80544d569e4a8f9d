//! Concurrency and soak: four threads share one `Context` for 1,000 mixed
//! calls each, and one thread runs 10,000 mixed calls while flashdot's
//! device memory (`memory_stats`) and the process's resident set are
//! sampled. Every result is checked against the f64 reference. The figures
//! are printed (`--nocapture`); the tests assert correctness and that
//! device memory stops growing after warm-up (caches and pools are bounded),
//! not timings.

mod common;

use common::*;
use flashdot::ops::attention::{attention, AttentionOptions, Causal};
use flashdot::ops::dot::dot;
use flashdot::ops::matmul::{linear, matmul, Activation};
use flashdot::ops::norm::layer_norm_into;
use flashdot::ops::similarity::{cosine, normalize};
use flashdot::reference::attention::AttentionRef;
use flashdot::reference::matmul::LinearArgs;
use flashdot::{reference, verify, Context, DType, Tensor};
use rand::Rng;

/// Shapes the calls draw from: a few of each op, not tile multiples, so that
/// the kernels compile once and the calls then exercise the steady state.
const ROWS: [usize; 4] = [1, 3, 17, 59];
const DIMS: [usize; 3] = [5, 8, 33];

/// One mixed call (op chosen by `i`), verified; returns its name.
fn call(ctx: &Context, rng: &mut Rng64, i: usize) -> &'static str {
    let n = ROWS[rng.random_range(0..ROWS.len())];
    let d = DIMS[rng.random_range(0..DIMS.len())];
    let (a, b) = (uniform(rng, n * d), uniform(rng, n * d));
    let c = Call {
        ctx,
        i,
        n,
        d,
        ta: Tensor::from_slice(ctx, &a, &[n, d]).unwrap(),
        tb: Tensor::from_slice(ctx, &b, &[n, d]).unwrap(),
        a,
        b,
    };
    match i % 6 {
        0 => c.dot(),
        1 => c.cosine_normalize(),
        2 => c.matmul(rng),
        3 => c.linear(rng),
        4 => c.layer_norm(rng),
        _ => c.attention(rng),
    }
}

/// What every mixed call starts from: `a` and `b` of `[n, d]`, on the host
/// and uploaded. Each op draws any further inputs from the call's rng after
/// these, so a thread's sequence of calls stays the same.
struct Call<'a> {
    ctx: &'a Context,
    i: usize,
    n: usize,
    d: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    ta: Tensor,
    tb: Tensor,
}

impl Call<'_> {
    fn up(&self, v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(self.ctx, v, shape).unwrap()
    }

    /// Names the call in a failed check.
    fn what(&self, op: &str) -> String {
        format!("call {}: {op} [{}, {}]", self.i, self.n, self.d)
    }

    fn dot(&self) -> &'static str {
        let (a, b, d) = (&self.a, &self.b, self.d);
        let got = read(&dot(&self.ta, &self.tb).unwrap());
        let want = reference::dot::dot(a, b, d);
        check(
            &verify::compare(&got, &want),
            dot_tolerance(a, b, d, &want),
            &self.what("dot"),
        );
        "dot"
    }

    fn cosine_normalize(&self) -> &'static str {
        let (a, b, d) = (&self.a, &self.b, self.d);
        let got = read(&cosine(&self.ta, &self.tb).unwrap());
        let want = reference::similarity::cosine(a, b, d);
        check(
            &verify::compare(&got, &want),
            cosine_tolerance(a, b, d, &want),
            &self.what("cosine"),
        );
        let got = read(&normalize(&self.ta).unwrap());
        check(
            &verify::compare(&got, &reference::similarity::normalize(a, d)),
            1e-5,
            &self.what("normalize"),
        );
        "cosine+normalize"
    }

    fn matmul(&self, rng: &mut Rng64) -> &'static str {
        let (n, d) = (self.n, self.d);
        let k = DIMS[rng.random_range(0..DIMS.len())];
        let w = uniform(rng, d * k);
        let got = read(&matmul(&self.ta, &self.up(&w, &[d, k])).unwrap());
        let want = reference::matmul::matmul(&self.a, &w, n, d, k, false, false);
        check(&verify::compare(&got, &want), 1e-5, &self.what("matmul"));
        "matmul"
    }

    fn linear(&self, rng: &mut Rng64) -> &'static str {
        let (n, d) = (self.n, self.d);
        let out = DIMS[rng.random_range(0..DIMS.len())];
        let (w, bias) = (uniform(rng, out * d), uniform(rng, out));
        let got = read(
            &linear(
                &self.ta,
                &self.up(&w, &[out, d]),
                Some(&self.up(&bias, &[out])),
                Activation::GeluTanh,
            )
            .unwrap(),
        );
        let want = reference::matmul::linear(
            &self.a,
            &w,
            Some(&bias),
            LinearArgs::new(n, d, out).act(Activation::GeluTanh),
        );
        check(&verify::compare(&got, &want), 1e-5, &self.what("linear"));
        "linear"
    }

    fn layer_norm(&self, rng: &mut Rng64) -> &'static str {
        let (n, d) = (self.n, self.d);
        let (g, beta) = (uniform(rng, d), uniform(rng, d));
        let out = Tensor::zeros(self.ctx, &[n, d], DType::F32).unwrap();
        let (tg, tbeta) = (self.up(&g, &[d]), self.up(&beta, &[d]));
        layer_norm_into(&self.ta, None, &tg, &tbeta, 1e-5, &out).unwrap();
        let want = reference::norm::layer_norm(&self.a, None, &g, &beta, 1e-5, d);
        check(
            &verify::compare(&read(&out), &want),
            1e-4,
            &self.what("layer_norm"),
        );
        "layer_norm"
    }

    /// 2 query heads over 1 KV head, seq_q = n, seq_k = 7.
    fn attention(&self, rng: &mut Rng64) -> &'static str {
        let (n, d) = (self.n, self.d);
        let (hq, sk) = (2, 7);
        let q = uniform(rng, hq * n * d);
        let (k, v) = (uniform(rng, sk * d), uniform(rng, sk * d));
        let causal = [Causal::None, Causal::BottomRight][self.i % 2];
        let opts = AttentionOptions::default().causal(causal);
        let got = attention(
            &self.up(&q, &[1, hq, n, d]),
            &self.up(&k, &[1, 1, sk, d]),
            &self.up(&v, &[1, 1, sk, d]),
            &opts,
        )
        .unwrap();
        let (want, _) = reference::attention::attention(&AttentionRef {
            q: &q,
            k: &k,
            v: &v,
            dims: [1, hq, 1, n, sk, d, d],
            layout: opts.layout,
            causal,
            scale: None,
            kv_len: None,
            bias: None,
            ..Default::default()
        });
        check(
            &verify::compare(&read(&got.out), &want),
            1e-5,
            &self.what("attention"),
        );
        "attention"
    }
}

/// Resident set of this process in bytes (Linux), or 0 elsewhere.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn four_threads_share_one_context() {
    let ctx = ctx();
    // Compile the kernels first, on this thread: on the GL backend a thread
    // waiting for wgpu's context lock while another compiles for over 6 s
    // panics inside wgpu-hal (gfx-rs/wgpu#5299), and a software adapter
    // under load can take that long. The threads then share warm pipelines.
    let mut warm = rng("soak warm-up");
    for i in 0..6 * ROWS.len() * DIMS.len() * 4 {
        call(&ctx, &mut warm, i);
    }
    let t = std::time::Instant::now();
    std::thread::scope(|s| {
        for th in 0..4 {
            let ctx = ctx.clone();
            s.spawn(move || {
                let mut rng = rng(&format!("soak thread {th}"));
                for i in 0..1000 {
                    call(&ctx, &mut rng, i + th);
                }
            });
        }
    });
    eprintln!(
        "4 threads x 1,000 verified calls on one context: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn ten_thousand_calls_hold_memory_flat() {
    let ctx = ctx();
    let mut rng = rng("soak");
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let mut samples = Vec::new();
    let t = std::time::Instant::now();
    for i in 0..10_000 {
        call(&ctx, &mut rng, i);
        if (i + 1) % 1000 == 0 {
            let m = ctx.memory_stats();
            samples.push((i + 1, m.live_bytes, rss()));
            eprintln!(
                "after {:>6} calls: flashdot device memory {:7.2} MiB live ({} buffers created), process RSS {:7.1} MiB",
                i + 1,
                mb(m.live_bytes),
                m.buffers_created,
                mb(rss())
            );
        }
    }
    eprintln!(
        "10,000 verified calls in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // After warm-up (the first 2,000 calls fill the pools and caches), the
    // device memory flashdot holds must not grow: every tensor of a call is
    // dropped at its end, and pools are bounded.
    let warm = samples[1].1;
    for &(calls, live, _) in &samples[2..] {
        assert!(
            live <= warm,
            "device memory grew after warm-up: {} MiB after {calls} calls, {} MiB after 2,000",
            mb(live),
            mb(warm)
        );
    }
    let (first, last) = (samples[1].2, samples[samples.len() - 1].2);
    eprintln!(
        "RSS from 2,000 to 10,000 calls: {:+.1} MiB",
        mb(last) - mb(first)
    );
}
