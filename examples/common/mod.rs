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
    /// Median wall time of a call and its device sync (what a caller waits).
    pub wall: Duration,
    /// Wall time of the first (warm-up) run, pipeline compiles included.
    #[allow(dead_code)]
    pub first: Duration,
}

/// Demo sizes: the GPU default, or a smaller one on a software (CPU) adapter
/// so that a default run ends in about a minute there. Flags given on the
/// command line always win; the sizes cut are listed by [`Sizes::report`].
pub struct Sizes {
    software: bool,
    cut: Vec<String>,
}

impl Sizes {
    pub fn new(ctx: &Context) -> Sizes {
        Sizes {
            software: ctx.info().device_type == wgpu::DeviceType::Cpu,
            cut: Vec::new(),
        }
    }

    /// `given`, else `gpu` (or `software` on a software adapter);
    /// `usize::MAX` stands for "no limit".
    pub fn pick(&mut self, flag: &str, given: Option<usize>, gpu: usize, software: usize) -> usize {
        match given {
            Some(v) => v,
            None if self.software && software != gpu => {
                self.cut.push(match gpu {
                    usize::MAX => format!("no {flag}"),
                    _ => format!("{flag} {gpu}"),
                });
                software
            }
            None => gpu,
        }
    }

    /// Says which defaults were cut for a software adapter, and the flags
    /// that restore a GPU's defaults.
    pub fn report(&self) {
        if !self.cut.is_empty() {
            println!(
                "software adapter: smaller default sizes (a GPU's defaults: {})",
                self.cut.join(" ")
            );
        }
    }
}

/// A spinner on stderr saying what the demo waits for (drawn only on a
/// terminal); cleared when dropped.
pub fn wait(what: impl Into<String>) -> indicatif::ProgressBar {
    let p = indicatif::ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    p.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    p.set_message(what.into());
    p.enable_steady_tick(Duration::from_millis(120));
    p
}

/// A progress bar of `len` steps on stderr (drawn only on a terminal).
pub fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    let p =
        indicatif::ProgressBar::new(len as u64).with_finish(indicatif::ProgressFinish::AndClear);
    p.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{human_pos}}/{{human_len}} {{elapsed}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    p
}

/// Runs `f` once to warm up (and waits for kernels compiling in the
/// background), then `reps` times. Each run is timed with GPU
/// timestamp queries (the summed time of its compute passes) where the adapter
/// has them, else by the wall clock around a device sync. A spinner named
/// `label` says which step runs (the first call compiles its kernels).
pub fn time(
    ctx: &Context,
    reps: usize,
    label: &str,
    mut f: impl FnMut() -> flashdot::Result<()>,
) -> flashdot::Result<Timing> {
    let spin = wait(format!("{label}: first call (compiles its kernels)"));
    let t = Instant::now();
    f()?;
    ctx.synchronize()?;
    let first = t.elapsed();
    // Time the kernels' fastest forms, not stand-ins serving while they compile.
    spin.set_message(format!("{label}: waiting for background compiles"));
    ctx.finish_background_compiles();
    // One untimed call of those forms: a software driver may finish a
    // pipeline's compile at its first dispatch.
    spin.set_message(format!("{label}: warm-up of the final kernels"));
    f()?;
    ctx.synchronize()?;
    let mut v = Vec::with_capacity(reps);
    let mut gpu = true;
    let mut walls = Vec::with_capacity(reps);
    for i in 0..reps.max(1) {
        spin.set_message(format!("{label}: timed run {}/{}", i + 1, reps.max(1)));
        let timing = ctx.start_gpu_timer()?;
        let t = Instant::now();
        f()?;
        ctx.synchronize()?;
        let wall = t.elapsed();
        walls.push(wall);
        match (timing, ctx.stop_gpu_timer()?) {
            (true, Some(d)) => v.push(d),
            _ => {
                gpu = false;
                v.push(wall);
            }
        }
    }
    spin.finish_and_clear();
    v.sort();
    walls.sort();
    Ok(Timing {
        median: v[v.len() / 2],
        min: v[0],
        gpu,
        wall: walls[walls.len() / 2],
        first,
    })
}

/// Wall-clock median of `reps` runs of `f` after one warm-up run.
pub fn time_cpu<T>(reps: usize, label: &str, mut f: impl FnMut() -> T) -> (T, Duration) {
    let _spin = wait(format!("{label}: CPU baseline"));
    let out = f();
    let mut v: Vec<Duration> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    v.sort();
    (out, v[v.len() / 2])
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
