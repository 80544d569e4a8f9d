//! The GPU context: instance, adapter, device and queue, the optional features
//! and limits in use, the pipeline cache and the error-scope plumbing every
//! operation runs inside.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, GpuErrorKind, Result};

/// Options for opening a [`Context`]. The default picks the best adapter on any
/// backend; the standard wgpu variables `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
/// `WGPU_POWER_PREF` apply where the matching field is left unset.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Restrict to these backends (e.g. `wgpu::Backends::VULKAN`). `None`: `WGPU_BACKEND` or all.
    pub backends: Option<wgpu::Backends>,
    /// Prefer low-power (integrated) or high-performance (discrete) adapters.
    /// `None`: `WGPU_POWER_PREF`, else high performance.
    pub power_preference: Option<wgpu::PowerPreference>,
    /// Case-insensitive substring of the adapter name. `None`: `WGPU_ADAPTER_NAME`, else any.
    pub adapter_name: Option<String>,
    /// Optional features to leave off even where the adapter has them (for testing
    /// fallbacks, e.g. `wgpu::Features::SHADER_F16`).
    pub disable_features: wgpu::Features,
    /// Compile the fastest form of every kernel before its first use. Off (the
    /// default), a kernel whose fastest form compiles for seconds on this
    /// adapter (attention's [`FlashSchedule::Rows`](crate::ops::attention::FlashSchedule::Rows))
    /// first runs a form that compiles quickly while the fast one compiles on
    /// a background thread, and switches once it is ready; results are the
    /// same either way. Tests set it so that each call runs a known kernel.
    pub wait_for_best_kernels: bool,
}

impl ContextOptions {
    /// Options restricted to one backend.
    pub fn with_backend(mut self, backends: wgpu::Backends) -> Self {
        self.backends = Some(backends);
        self
    }

    /// Options that leave `features` disabled.
    pub fn without_features(mut self, features: wgpu::Features) -> Self {
        self.disable_features |= features;
        self
    }
}

/// Optional wgpu features flashdot's kernels can use.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

/// What the context runs on: adapter identity, features in use and key limits.
#[derive(Debug, Clone)]
pub struct ContextInfo {
    /// Adapter name as the driver reports it (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub name: String,
    /// Backend (Vulkan, Metal, Dx12, Gl).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// Driver name.
    pub driver: String,
    /// Driver version/details.
    pub driver_info: String,
    /// Optional features enabled on the device (subset of [`OPTIONAL_FEATURES`]).
    pub features: wgpu::Features,
    /// Smallest and largest subgroup size the adapter may use.
    pub subgroup_size: (u32, u32),
    /// The device's limits (the adapter's own, not wgpu's defaults).
    pub limits: wgpu::Limits,
}

impl ContextInfo {
    /// Whether f16 storage and arithmetic (`SHADER_F16`) is enabled.
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }
    /// Whether subgroup operations (`SUBGROUP`) are enabled.
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// Whether subgroup operations are enabled and every subgroup has at
    /// least `lanes` lanes (kernels that share values among groups of lanes).
    pub fn has_subgroups_of(&self, lanes: u32) -> bool {
        self.has_subgroups() && self.subgroup_size.0 >= lanes
    }
    /// Whether GPU timestamp queries are enabled.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }
    /// Whether this is a software (CPU) adapter such as lavapipe or WARP.
    pub fn is_cpu(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}

impl fmt::Display for ContextInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        writeln!(f, "adapter:        {}", self.name)?;
        writeln!(f, "backend:        {:?}", self.backend)?;
        writeln!(f, "device type:    {:?}", self.device_type)?;
        writeln!(f, "driver:         {} ({})", self.driver, self.driver_info)?;
        let mut feats = Vec::new();
        if self.has_f16() {
            feats.push("SHADER_F16");
        }
        if self.has_subgroups() {
            feats.push("SUBGROUP");
        }
        if self.has_timestamps() {
            feats.push("TIMESTAMP_QUERY");
        }
        let feats = if feats.is_empty() {
            "(none)".to_string()
        } else {
            feats.join(", ")
        };
        writeln!(f, "features:       {feats}")?;
        writeln!(
            f,
            "subgroup size:  {}..={}",
            self.subgroup_size.0, self.subgroup_size.1
        )?;
        writeln!(
            f,
            "max storage binding:   {:.0} MiB",
            mib(l.max_storage_buffer_binding_size)
        )?;
        writeln!(
            f,
            "max buffer size:       {:.0} MiB",
            mib(l.max_buffer_size)
        )?;
        writeln!(
            f,
            "workgroup memory:      {} KiB",
            l.max_compute_workgroup_storage_size / 1024
        )?;
        writeln!(
            f,
            "workgroup invocations: {} (x {}, y {}, z {})",
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_size_x,
            l.max_compute_workgroup_size_y,
            l.max_compute_workgroup_size_z
        )?;
        writeln!(
            f,
            "workgroups per dim:    {}",
            l.max_compute_workgroups_per_dimension
        )?;
        write!(
            f,
            "storage offset align:  {} B",
            l.min_storage_buffer_offset_alignment
        )
    }
}

/// Key of a cached compute pipeline: kernel name plus specialisation string.
pub(crate) type PipelineKey = (&'static str, String);

/// Device memory held in flashdot's buffers (tensors, index chunks, kernel
/// scratch, readback staging; the small parameter blocks are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// Bytes in buffers alive now.
    pub live_bytes: u64,
    /// Most bytes alive at once since the context opened or [`Context::reset_peak_memory`].
    pub peak_bytes: u64,
}

#[derive(Default)]
struct MemCounter {
    live: AtomicU64,
    peak: AtomicU64,
}

/// Timestamp queries written around every compute pass while a GPU timer runs.
struct GpuTimer {
    queries: wgpu::QuerySet,
    used: u32,
}

/// Compute passes one GPU timer can measure.
const TIMER_PASSES: u32 = 1024;

/// A buffer whose bytes count in the context's [`MemoryStats`] while it lives.
pub(crate) struct Tracked {
    buffer: wgpu::Buffer,
    counter: Arc<MemCounter>,
}

impl std::ops::Deref for Tracked {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.counter
            .live
            .fetch_sub(self.buffer.size(), Ordering::Relaxed);
    }
}

/// A texture whose bytes count in the context's [`MemoryStats`] while it lives.
pub(crate) struct TrackedTexture {
    texture: wgpu::Texture,
    bytes: u64,
    counter: Arc<MemCounter>,
}

impl std::ops::Deref for TrackedTexture {
    type Target = wgpu::Texture;
    fn deref(&self) -> &wgpu::Texture {
        &self.texture
    }
}

impl Drop for TrackedTexture {
    fn drop(&mut self) {
        self.counter.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl TrackedTexture {
    /// Bytes of the texture's texels.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// A pipeline's source: WGSL, entry point, override constants.
type PipelineSource = (String, &'static str, Vec<(&'static str, f64)>);

/// Kernels compiled in the background (see [`Context::pipeline_or_quick`]).
#[derive(Default)]
struct Background {
    /// Keys ever queued (a failed compile is not retried).
    queued: HashSet<PipelineKey>,
    /// Queued, to start at the next submit.
    deferred: Vec<(PipelineKey, PipelineSource)>,
    /// Started threads not yet joined.
    running: Vec<std::thread::JoinHandle<()>>,
}

pub(crate) struct Inner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: ContextInfo,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    background: Mutex<Background>,
    wait_for_best: bool,
    lost: Arc<Mutex<Option<String>>>,
    /// Per-op tuning results (e.g. the matmul autotuner's winners), keyed by op and shape class.
    pub(crate) tuning: Mutex<HashMap<String, String>>,
    memory: Arc<MemCounter>,
    timer: Mutex<Option<GpuTimer>>,
    _adapter: wgpu::Adapter,
    _instance: wgpu::Instance,
}

/// An open GPU device with its queue and pipeline cache.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`: several threads may run
/// operations on one context at once.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish()
    }
}

fn type_rank(t: wgpu::DeviceType, pref: wgpu::PowerPreference) -> u32 {
    use wgpu::DeviceType::*;
    match (t, pref) {
        (IntegratedGpu, wgpu::PowerPreference::LowPower) => 0,
        (DiscreteGpu, wgpu::PowerPreference::LowPower) => 1,
        (DiscreteGpu, _) => 0,
        (IntegratedGpu, _) => 1,
        (VirtualGpu, _) => 2,
        (Other, _) => 3,
        (Cpu, _) => 4,
    }
}

impl Context {
    /// Opens the best adapter (discrete GPU, then integrated, then anything else,
    /// software adapters last) with default options. Blocks until the device is ready.
    ///
    /// Errors: [`Error::NoAdapter`] when no adapter is reachable (the message says how
    /// to install lavapipe), [`Error::RequestDevice`] when the device cannot be opened.
    pub fn new() -> Result<Self> {
        Self::with_options(ContextOptions::default())
    }

    /// Blocking [`Context::new_async`] with explicit options.
    pub fn with_options(options: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// Opens a context asynchronously. See [`ContextOptions`] for adapter selection.
    pub async fn new_async(options: ContextOptions) -> Result<Self> {
        let backends = options
            .backends
            .or_else(wgpu::Backends::from_env)
            .unwrap_or(wgpu::Backends::all());
        let pref = options
            .power_preference
            .or_else(wgpu::PowerPreference::from_env)
            .unwrap_or(wgpu::PowerPreference::HighPerformance);
        let name_filter = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .map(|s| s.to_lowercase());

        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
        let instance = wgpu::Instance::new(desc);

        let mut adapters = instance.enumerate_adapters(backends).await;
        adapters.retain(|a| {
            let info = a.get_info();
            name_filter
                .as_ref()
                .is_none_or(|n| info.name.to_lowercase().contains(n))
        });
        // Stable sort keeps the enumeration order among equals (backend priority).
        adapters.sort_by_key(|a| type_rank(a.get_info().device_type, pref));
        let adapter = adapters
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoAdapter {
                details: format!(
                    "backends {backends:?}{}",
                    name_filter
                        .map(|n| format!(", name containing '{n}'"))
                        .unwrap_or_default()
                ),
            })?;
        Self::from_adapter(instance, adapter, &options).await
    }

    async fn from_adapter(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        options: &ContextOptions,
    ) -> Result<Self> {
        let ainfo = adapter.get_info();
        let features = adapter.features() & OPTIONAL_FEATURES & !options.disable_features;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("flashdot"),
                required_features: features,
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: ainfo.name.clone(),
                message: e.to_string(),
            })?;
        let lost = Arc::new(Mutex::new(None));
        {
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                *lost.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("{reason:?}: {msg}"));
            });
        }
        // Errors outside our scopes should not exist; if one does, log it rather
        // than let wgpu's default handler panic in the caller's process.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            log::error!("flashdot: uncaptured wgpu error: {e}");
        }));
        let info = ContextInfo {
            name: ainfo.name.clone(),
            backend: ainfo.backend,
            device_type: ainfo.device_type,
            driver: ainfo.driver.clone(),
            driver_info: ainfo.driver_info.clone(),
            features,
            subgroup_size: (ainfo.subgroup_min_size, ainfo.subgroup_max_size),
            limits: device.limits(),
        };
        Ok(Context {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                pipelines: Mutex::new(HashMap::new()),
                background: Mutex::default(),
                wait_for_best: options.wait_for_best_kernels,
                lost,
                tuning: Mutex::new(HashMap::new()),
                memory: Arc::default(),
                timer: Mutex::new(None),
                _adapter: adapter,
                _instance: instance,
            }),
        })
    }

    /// Adapter name, backend, device type, driver, features in use and key limits.
    pub fn info(&self) -> &ContextInfo {
        &self.inner.info
    }

    /// The underlying wgpu device (for interop).
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The underlying wgpu queue (for interop).
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Fails with [`Error::DeviceLost`] once the device-lost callback has fired.
    pub fn check_alive(&self) -> Result<()> {
        match &*self.inner.lost.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(msg) => Err(Error::DeviceLost(msg.clone())),
            None => Ok(()),
        }
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes and turns
    /// whatever wgpu reports into an [`Error::Gpu`] tagged with `op`.
    pub(crate) fn scoped<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        let dev = &self.inner.device;
        let internal = dev.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let errs = [
            (
                GpuErrorKind::Validation,
                pollster::block_on(validation.pop()),
            ),
            (GpuErrorKind::OutOfMemory, pollster::block_on(oom.pop())),
            (GpuErrorKind::Internal, pollster::block_on(internal.pop())),
        ];
        self.check_alive()?;
        for (kind, e) in errs {
            if let Some(e) = e {
                return Err(Error::Gpu {
                    op,
                    kind,
                    message: e.to_string(),
                });
            }
        }
        out
    }

    /// Returns the cached pipeline for `key`, building it with `build` on first use.
    /// `build` returns the full WGSL source, the entry point and override constants.
    pub(crate) fn pipeline(
        &self,
        key: PipelineKey,
        build: impl FnOnce() -> (String, &'static str, Vec<(&'static str, f64)>),
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.lock_pipelines().get(&key) {
            return Ok(p.clone());
        }
        // Built outside the lock: shader compilation takes seconds on software
        // adapters and other threads should not wait on unrelated kernels.
        let (source, entry, constants) = build();
        let dev = &self.inner.device;
        let pipeline = self.scoped(key.0, || {
            let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key.0),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            Ok(
                dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(key.0),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        // Kernels initialise the workgroup memory they read.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                }),
            )
        })?;
        let pipeline = Arc::new(pipeline);
        Ok(self.lock_pipelines().entry(key).or_insert(pipeline).clone())
    }

    /// The pipeline for `key` if it is built; else, unless the context waits
    /// for best kernels, `quick()` (a form that compiles fast), and `build`'s
    /// pipeline (its source made only on a cache miss) is compiled on a background thread that starts after the next
    /// submit has finished (so that it competes with neither the quick
    /// compile nor the first call); once per key, and should it fail,
    /// `quick()` serves from then on. Waiting contexts build `key` now. The
    /// flag says whether the pipeline is `key`'s.
    pub(crate) fn pipeline_or_quick(
        &self,
        key: PipelineKey,
        build: impl FnOnce() -> PipelineSource,
        quick: impl FnOnce() -> Result<Arc<wgpu::ComputePipeline>>,
    ) -> Result<(Arc<wgpu::ComputePipeline>, bool)> {
        if let Some(p) = self.lock_pipelines().get(&key) {
            return Ok((p.clone(), true));
        }
        if self.inner.wait_for_best {
            return Ok((self.pipeline(key, build)?, true));
        }
        let quick = quick()?;
        let mut bg = self.lock_background();
        if bg.queued.insert(key.clone()) {
            bg.deferred.push((key, build()));
        }
        Ok((quick, false))
    }

    fn lock_background(&self) -> std::sync::MutexGuard<'_, Background> {
        self.inner
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the deferred background compiles, each after the work
    /// submitted so far.
    fn start_background_compiles(&self) {
        let mut bg = self.lock_background();
        for (key, build) in std::mem::take(&mut bg.deferred) {
            let ctx = self.clone();
            bg.running.push(std::thread::spawn(move || {
                let done = ctx.synchronize().and_then(|()| ctx.pipeline(key, || build));
                if let Err(e) = done {
                    log::warn!("background kernel compile failed, the quick form stays: {e}");
                }
            }));
        }
    }

    /// Blocks until the kernels compiling in the background (see
    /// [`ContextOptions::wait_for_best_kernels`]) are ready, so that later
    /// calls run their fastest forms: a warm-up for latency-sensitive callers.
    pub fn finish_background_compiles(&self) {
        self.start_background_compiles();
        let running = std::mem::take(&mut self.lock_background().running);
        for h in running {
            let _ = h.join();
        }
    }

    fn lock_pipelines(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>> {
        self.inner
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_tuning(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.inner.tuning.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device memory flashdot holds now and at its peak.
    pub fn memory_stats(&self) -> MemoryStats {
        let m = &self.inner.memory;
        MemoryStats {
            live_bytes: m.live.load(Ordering::Relaxed),
            peak_bytes: m.peak.load(Ordering::Relaxed),
        }
    }

    /// Restarts peak tracking from the bytes alive now.
    pub fn reset_peak_memory(&self) {
        let m = &self.inner.memory;
        m.peak
            .store(m.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn track(&self, buffer: wgpu::Buffer) -> Tracked {
        let m = &self.inner.memory;
        let live = m.live.fetch_add(buffer.size(), Ordering::Relaxed) + buffer.size();
        m.peak.fetch_max(live, Ordering::Relaxed);
        Tracked {
            buffer,
            counter: m.clone(),
        }
    }

    /// Creates a one-mip, uncompressed texture counted in
    /// [`Context::memory_stats`].
    pub(crate) fn create_texture(&self, desc: &wgpu::TextureDescriptor<'_>) -> TrackedTexture {
        let texture = self.inner.device.create_texture(desc);
        let texel = desc.format.block_copy_size(None).unwrap_or(0) as u64;
        let s = desc.size;
        let bytes = s.width as u64 * s.height as u64 * s.depth_or_array_layers as u64 * texel;
        let m = &self.inner.memory;
        let live = m.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        m.peak.fetch_max(live, Ordering::Relaxed);
        TrackedTexture {
            texture,
            bytes,
            counter: m.clone(),
        }
    }

    /// Creates a buffer counted in [`Context::memory_stats`].
    pub(crate) fn create_buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> Tracked {
        self.track(self.inner.device.create_buffer(desc))
    }

    /// Creates an initialised buffer counted in [`Context::memory_stats`].
    pub(crate) fn create_buffer_init(
        &self,
        desc: &wgpu::util::BufferInitDescriptor<'_>,
    ) -> Tracked {
        use wgpu::util::DeviceExt;
        self.track(self.inner.device.create_buffer_init(desc))
    }

    /// Starts timing on the GPU: until [`Context::stop_gpu_timer`], every compute
    /// pass flashdot records on this context (from any thread) gets timestamp
    /// queries. Returns `false`, and times nothing, when the adapter lacks
    /// `TIMESTAMP_QUERY`.
    pub fn start_gpu_timer(&self) -> Result<bool> {
        if !self.info().has_timestamps() {
            return Ok(false);
        }
        let queries = self.scoped("gpu timer", || {
            Ok(self
                .inner
                .device
                .create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("gpu timer"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * TIMER_PASSES,
                }))
        })?;
        *self.inner.timer.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(GpuTimer { queries, used: 0 });
        Ok(true)
    }

    /// Stops the GPU timer and returns the summed execution time of the passes
    /// it measured (waiting for them to finish). `None` if no timer was running
    /// or more than 1024 passes were recorded (their sum would be incomplete).
    pub fn stop_gpu_timer(&self) -> Result<Option<std::time::Duration>> {
        let Some(t) = self
            .inner
            .timer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(None);
        };
        if t.used == 0 || t.used >= 2 * TIMER_PASSES {
            return Ok((t.used == 0).then_some(std::time::Duration::ZERO));
        }
        let bytes = t.used as u64 * 8;
        let resolve = self.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gpu timer"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let out = crate::Tensor::zeros(self, &[t.used as usize * 2], crate::DType::U32)?;
        self.scoped("gpu timer", || {
            let mut enc = self.encoder();
            enc.resolve_query_set(&t.queries, 0..t.used, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, out.buffer(), 0, bytes);
            self.submit(enc);
            Ok(())
        })?;
        let words = out.to_vec::<u32>()?;
        let ticks: Vec<u64> = words
            .chunks_exact(2)
            .map(|w| w[0] as u64 | (w[1] as u64) << 32)
            .collect();
        let period = self.inner.queue.get_timestamp_period() as f64;
        let ns: f64 = ticks
            .chunks_exact(2)
            .map(|p| p[1].saturating_sub(p[0]) as f64 * period)
            .sum();
        Ok(Some(std::time::Duration::from_nanos(ns as u64)))
    }

    /// Number of pipelines built so far (each kernel + specialisation once).
    pub fn cached_pipelines(&self) -> usize {
        self.lock_pipelines().len()
    }

    /// Blocks until all submitted work has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        self.check_alive()
    }

    pub(crate) fn max_binding(&self) -> u64 {
        self.inner.info.limits.max_storage_buffer_binding_size
    }

    /// Creates a uniform buffer holding `params`.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, params: &T) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.inner
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Splits `groups` workgroups over x and y so that neither exceeds the
    /// per-dimension limit; kernels rebuild the linear id as `x + y * num_workgroups.x`
    /// and drop ids past the end.
    pub(crate) fn grid(&self, groups: u32) -> (u32, u32) {
        let max = self
            .inner
            .info
            .limits
            .max_compute_workgroups_per_dimension
            .max(1);
        if groups <= max {
            (groups, 1)
        } else {
            let y = groups.div_ceil(max);
            (groups.div_ceil(y), y)
        }
    }
}

/// A window onto a buffer no larger than one storage binding: the binding starts at
/// an aligned byte offset at or before the wanted element, and `elem_offset` says how
/// many elements into the binding the wanted element lies.
pub(crate) struct Window {
    pub offset: u64,
    pub size: u64,
    pub elem_offset: u32,
}

impl Context {
    /// Computes the binding window that starts at element `first` (of `elem_bytes`
    /// each) and covers `count` elements, in a buffer of `buffer_size` bytes.
    /// Returns `None` if the span cannot fit in one binding.
    pub(crate) fn window(
        &self,
        buffer_size: u64,
        elem_bytes: u64,
        first: u64,
        count: u64,
    ) -> Option<Window> {
        // At least 16 so that vec4 kernels see window offsets in whole vec4s.
        let align = (self.inner.info.limits.min_storage_buffer_offset_alignment as u64).max(16);
        let start = first * elem_bytes;
        let offset = start / align * align;
        let end = (start + count * elem_bytes).div_ceil(4) * 4;
        let end = end.min(buffer_size);
        let size = (end - offset).max(4);
        if size > self.max_binding() {
            return None;
        }
        Some(Window {
            offset,
            size,
            elem_offset: ((start - offset) / elem_bytes) as u32,
        })
    }
}

/// One binding of a dispatch: a buffer range or a texture view.
pub(crate) enum Bind<'a> {
    Buffer {
        buffer: &'a wgpu::Buffer,
        offset: u64,
        size: u64,
    },
    Texture(&'a wgpu::TextureView),
}

impl<'a> Bind<'a> {
    /// The whole buffer.
    pub fn whole(buffer: &'a wgpu::Buffer) -> Self {
        Bind::Buffer {
            buffer,
            offset: 0,
            size: buffer.size(),
        }
    }
    /// A window of a buffer.
    pub fn window(buffer: &'a wgpu::Buffer, w: &Window) -> Self {
        Bind::Buffer {
            buffer,
            offset: w.offset,
            size: w.size,
        }
    }
    /// A texture view.
    pub fn texture(view: &'a wgpu::TextureView) -> Self {
        Bind::Texture(view)
    }
}

impl Context {
    /// Records one dispatch: binding 0 is the uniform `params`, bindings 1.. are
    /// `binds` in order; `groups` is (x, y) workgroups.
    pub(crate) fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        params: &wgpu::Buffer,
        binds: &[Bind<'_>],
        groups: (u32, u32),
    ) {
        self.encode3(enc, pipeline, params, binds, (groups.0, groups.1, 1))
    }

    /// [`Context::encode`] with a z dimension.
    pub(crate) fn encode3(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        params: &wgpu::Buffer,
        binds: &[Bind<'_>],
        groups: (u32, u32, u32),
    ) {
        let slots: Vec<u32> = (1..=binds.len() as u32).collect();
        self.encode_slots(enc, pipeline, params, binds, &slots, groups)
    }

    /// [`Context::encode3`] with explicit binding numbers for `binds` (for kernels
    /// whose optional resources leave gaps).
    pub(crate) fn encode_slots(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        params: &wgpu::Buffer,
        binds: &[Bind<'_>],
        slots: &[u32],
        groups: (u32, u32, u32),
    ) {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params.as_entire_binding(),
        }];
        for (b, &slot) in binds.iter().zip(slots) {
            let resource = match *b {
                Bind::Buffer {
                    buffer,
                    offset,
                    size,
                } => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset,
                    size: std::num::NonZeroU64::new(size),
                }),
                Bind::Texture(view) => wgpu::BindingResource::TextureView(view),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: slot,
                resource,
            });
        }
        let bg = self
            .inner
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
        let mut timer = self.inner.timer.lock().unwrap_or_else(|e| e.into_inner());
        let writes = timer.as_mut().and_then(|t| {
            (t.used + 2 <= 2 * TIMER_PASSES).then(|| {
                t.used += 2;
                wgpu::ComputePassTimestampWrites {
                    query_set: &t.queries,
                    beginning_of_pass_write_index: Some(t.used - 2),
                    end_of_pass_write_index: Some(t.used - 1),
                }
            })
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: writes,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
    }

    /// A fresh command encoder.
    pub(crate) fn encoder(&self) -> wgpu::CommandEncoder {
        self.inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    /// Submits recorded work.
    pub(crate) fn submit(&self, enc: wgpu::CommandEncoder) {
        self.inner.queue.submit([enc.finish()]);
        self.start_background_compiles();
    }
}
