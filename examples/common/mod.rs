//! Shared by the demos: the `--backend` flag, context creation, timing.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use flashdot::{Context, ContextOptions};

/// Backend names accepted by `--backend`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Backend {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

/// Opens the context (best adapter, or the named backend) and prints it.
pub fn open(backend: Option<Backend>) -> Result<Context, flashdot::Error> {
    let ctx = context(backend)?;
    let i = ctx.info();
    println!("adapter: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
    Ok(ctx)
}

/// Opens the context (best adapter, or the named backend).
pub fn context(backend: Option<Backend>) -> Result<Context, flashdot::Error> {
    let mut opts = ContextOptions::default();
    if let Some(b) = backend {
        opts = opts.with_backend(match b {
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
        });
    }
    Context::with_options(opts)
}

/// Median and minimum of timed runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub median: Duration,
    pub min: Duration,
    /// Whether the times are GPU timestamps (else wall clock around a sync).
    pub gpu: bool,
    /// Wall time of the first (warm-up) run, pipeline compiles included.
    #[allow(dead_code)]
    pub first: Duration,
}

/// Runs `f` once to warm up (and waits for kernels compiling in the
/// background), then `reps` times. Each run is timed with GPU
/// timestamp queries (the summed time of its compute passes) where the adapter
/// has them, else by the wall clock around a device sync.
pub fn time(
    ctx: &Context,
    reps: usize,
    mut f: impl FnMut() -> flashdot::Result<()>,
) -> flashdot::Result<Timing> {
    let t = Instant::now();
    f()?;
    ctx.synchronize()?;
    let first = t.elapsed();
    // Time the kernels' fastest forms, not stand-ins serving while they compile.
    ctx.finish_background_compiles();
    let mut v = Vec::with_capacity(reps);
    let mut gpu = true;
    for _ in 0..reps.max(1) {
        let timing = ctx.start_gpu_timer()?;
        let t = Instant::now();
        f()?;
        ctx.synchronize()?;
        let wall = t.elapsed();
        match (timing, ctx.stop_gpu_timer()?) {
            (true, Some(d)) => v.push(d),
            _ => {
                gpu = false;
                v.push(wall);
            }
        }
    }
    v.sort();
    Ok(Timing {
        median: v[v.len() / 2],
        min: v[0],
        gpu,
        first,
    })
}

/// Exits non-zero with the error's message.
pub fn exit_on_error<T>(r: Result<T, flashdot::Error>) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    })
}

/// Deterministic pseudo-random values in [-0.5, 0.5) (xorshift), the same on every run.
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Float storage accepted by `--dtype`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FloatType {
    F32,
    F16,
}

impl From<FloatType> for flashdot::DType {
    fn from(t: FloatType) -> flashdot::DType {
        match t {
            FloatType::F32 => flashdot::DType::F32,
            FloatType::F16 => flashdot::DType::F16,
        }
    }
}
