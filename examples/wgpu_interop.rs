//! flashdot inside a wgpu app: the app opens its own device, creates its own
//! buffers and writes its inputs; flashdot runs a linear layer and attention
//! on them, recorded into one submission; the app reads the result with its
//! own code (a mapped staging buffer) and checks it against the CPU reference.
//!
//! `cargo run --release --example wgpu_interop [-- --tokens 64 --heads 4 --head-dim 16]`

use clap::Parser;
use flashdot::ops::attention::{self, AttentionOptions, Causal, Layout};
use flashdot::ops::matmul::{self, Activation};
use flashdot::reference::matmul::LinearArgs;
use flashdot::{reference, verify, wgpu, Context, DType, Tensor};

#[derive(Parser)]
#[command(about = "flashdot on an app's own wgpu device and buffers")]
struct Args {
    /// Sequence length.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Head dim (hidden = heads × head dim).
    #[arg(long, default_value_t = 16)]
    head_dim: usize,
}

/// The app's side: its own instance, adapter, device and queue.
fn app_device() -> Result<(wgpu::Adapter, wgpu::Device, wgpu::Queue), String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .map_err(|e| format!("no adapter: {e}"))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("the app's device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| format!("no device: {e}"))?;
    Ok((adapter, device, queue))
}

/// An app buffer holding `data`, with the usages flashdot's tensors need.
fn app_buffer(device: &wgpu::Device, queue: &wgpu::Queue, data: &[f32]) -> wgpu::Buffer {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app data"),
        size: (data.len() * 4).max(16) as u64,
        usage: flashdot::tensor::TENSOR_USAGES,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, bytemuck::cast_slice(data));
    buffer
}

/// The app reads a buffer back its own way.
fn app_read(device: &wgpu::Device, queue: &wgpu::Queue, src: &wgpu::Buffer, n: usize) -> Vec<f32> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app readback"),
        size: (n * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(src, 0, &staging, 0, (n * 4) as u64);
    let index = queue.submit([enc.finish()]);
    staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .expect("poll");
    let view = staging.slice(..).get_mapped_range().expect("mapped");
    bytemuck::cast_slice(&view).to_vec()
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 8388608.0) - 1.0
        })
        .collect()
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (adapter, device, queue) = app_device()?;
    println!("app device on: {}", adapter.get_info().name);
    let ctx = Context::from_wgpu(&adapter, device.clone(), queue.clone());
    let (s, h, d) = (a.tokens, a.heads, a.head_dim);
    let hidden = h * d;
    // The app's inputs in its own buffers: x [s, hidden] and the weights of
    // a fused Q/K/V projection [3·hidden, hidden].
    let x = data(s * hidden, 1);
    let w = data(3 * hidden * hidden, 2)
        .iter()
        .map(|v| v / (hidden as f32).sqrt())
        .collect::<Vec<_>>();
    let xb = app_buffer(&device, &queue, &x);
    let wb = app_buffer(&device, &queue, &w);
    let tx = Tensor::from_buffer(&ctx, xb, 0, &[s, hidden], DType::F32)?;
    let tw = Tensor::from_buffer(&ctx, wb, 0, &[3 * hidden, hidden], DType::F32)?;
    // Outputs flashdot allocates, usable by the app's render passes too.
    let qkv = Tensor::zeros(&ctx, &[s, 3 * hidden], DType::F32)?;
    let out =
        Tensor::zeros_with_usage(&ctx, &[1, s, h, d], DType::F32, wgpu::BufferUsages::VERTEX)?;
    // Q, K and V as [1, s, h, d] views of the projection (no copy):
    // [s, 3·hidden] seen as [1, s, 3·h, d], heads 0..h, h..2h, 2h..3h.
    let heads = qkv.reshape(&[1, s, 3 * h, d])?;
    let (q, k, v) = (
        heads.narrow(2, 0, h)?,
        heads.narrow(2, h, h)?,
        heads.narrow(2, 2 * h, h)?,
    );
    let opts = AttentionOptions::default()
        .layout(Layout::Bshd)
        .causal(Causal::TopLeft);
    // Where the app wants the result: a buffer of its own.
    let app_out = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app result"),
        size: (s * hidden * 4) as u64,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let before = ctx.memory_stats().buffers_created;
    let t = std::time::Instant::now();
    // One submission: the projection, attention on its views, the app's copy.
    ctx.record(|| {
        matmul::linear_into(&tx, &tw, None, Activation::None, &Default::default(), &qkv)?;
        attention::attention_into(&q, &k, &v, &opts, &out, None)?;
        // The app's own commands join the recording in order.
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(
            out.buffer(),
            out.offset(),
            &app_out,
            0,
            (s * hidden * 4) as u64,
        );
        ctx.submit_encoder(enc);
        Ok(())
    })?;
    let got = app_read(&device, &queue, &app_out, s * hidden);
    let elapsed = t.elapsed();
    // The reference: projection, split, attention in f64.
    let proj = reference::matmul::linear(&x, &w, None, LinearArgs::new(s, hidden, 3 * hidden));
    let part = |i: usize| -> Vec<f32> {
        (0..s)
            .flat_map(|r| {
                proj[(r * 3 + i) * hidden..(r * 3 + i + 1) * hidden]
                    .iter()
                    .map(|&v| v as f32)
            })
            .collect()
    };
    let (rq, rk, rv) = (part(0), part(1), part(2));
    let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
        q: &rq,
        k: &rk,
        v: &rv,
        dims: [1, h, h, s, s, d, d],
        layout: Layout::Bshd,
        causal: Causal::TopLeft,
        scale: None,
        kv_len: None,
        bias: None,
        ..Default::default()
    });
    let report = verify::compare(&got, &want);
    println!(
        "linear [{s}, {hidden}] x [{}, {hidden}]ᵀ + causal attention {h} heads x {s} x {d}: \
         one submission, {:.1} ms with first-use compiles, {} buffers created, rel L2 {:.1e}",
        3 * hidden,
        elapsed.as_secs_f64() * 1e3,
        ctx.memory_stats().buffers_created - before,
        report.rel_l2
    );
    if !report.passes(1e-5) {
        return Err(format!("result differs from the CPU reference:\n{report}").into());
    }
    Ok(())
}

fn main() {
    env_logger::init();
    if let Err(e) = run(&Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
