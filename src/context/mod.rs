//! The GPU context, in layers: opening the instance, adapter, device and queue
//! (this file), the [`DeviceProfile`] that planners decide from, device memory
//! accounting (`memory`), the pipeline cache with background compiles
//! (`pipelines`), the GPU timer (`timer`), the one readback path
//! (`readback`), recordings (`record`), host writes in recording order
//! (`write`), the dispatch helpers (`dispatch`, with the parameter `arena` and
//! the bind-group cache `bindcache`), and the texel pool with its copies of
//! buffers into vec4 textures (`texels`). Nothing here knows tensors or ops.

mod arena;
mod bindcache;
mod dispatch;
mod memory;
mod pipelines;
mod profile;
mod readback;
mod record;
mod texels;
mod timer;
mod write;

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::error::{Error, GpuErrorKind, Result};

pub(crate) use arena::{Param, Table};
pub(crate) use bindcache::BindCache;
pub(crate) use dispatch::{Bind, Window};
pub use memory::MemoryStats;
pub(crate) use memory::{Tracked, TrackedTexture};
pub(crate) use pipelines::Spec;
pub use profile::DeviceProfile;
pub(crate) use readback::Wait;
pub(crate) use texels::{vec4_format, vec4_texture, PooledTexels, TexelGrid};

/// Options for opening a [`Context`]. The default picks the best adapter on any
/// backend; the standard wgpu variables `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
/// `WGPU_POWER_PREF` apply where the matching field is left unset.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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
    /// adapter (attention's `Rows` schedule)
    /// first runs a form that compiles quickly while the fast one compiles on
    /// a background thread, and switches once it is ready; results are the
    /// same either way. Tests set it so that each call runs a known kernel.
    pub wait_for_best_kernels: bool,
    /// Limits to request instead of the adapter's own (each within the
    /// adapter's): a smaller storage binding or workgroup memory, for example,
    /// to exercise the paths that split large work on small test data.
    pub limits: Option<wgpu::Limits>,
}

impl ContextOptions {
    /// Options restricted to one backend.
    pub fn with_backend(mut self, backends: wgpu::Backends) -> Self {
        self.backends = Some(backends);
        self
    }

    /// Options restricted to adapters whose name contains `name`
    /// (case-insensitive).
    pub fn with_adapter_name(mut self, name: impl Into<String>) -> Self {
        self.adapter_name = Some(name.into());
        self
    }

    /// Options that leave `features` disabled.
    pub fn without_features(mut self, features: wgpu::Features) -> Self {
        self.disable_features |= features;
        self
    }

    /// Options that compile every kernel's best form before its first use
    /// (see [`ContextOptions::wait_for_best_kernels`]).
    pub fn wait_for_best_kernels(mut self, wait: bool) -> Self {
        self.wait_for_best_kernels = wait;
        self
    }

    /// Options that request `limits` instead of the adapter's own.
    pub fn with_limits(mut self, limits: wgpu::Limits) -> Self {
        self.limits = Some(limits);
        self
    }
}

/// Optional wgpu features flashdot's kernels can use.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

/// What the context runs on: adapter identity, features in use and key limits.
#[derive(Debug, Clone)]
#[non_exhaustive]
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

pub(crate) struct Inner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: ContextInfo,
    profile: DeviceProfile,
    cache: pipelines::PipelineCache,
    wait_for_best: bool,
    lost: Arc<Mutex<Option<String>>>,
    memory: Arc<memory::MemCounter>,
    arena: Mutex<arena::ParamArena>,
    texels: Arc<texels::TexelPool>,
    binds: Arc<bindcache::BindCache>,
    poller: std::sync::OnceLock<readback::Poller>,
    timer: Mutex<Option<timer::GpuTimer>>,
    /// Command buffers of a [`Context::record`] scope, submitted together.
    recording: Mutex<record::Recordings>,
    _adapter: wgpu::Adapter,
    /// The instance a context opened itself (none for an app's device).
    _instance: Option<wgpu::Instance>,
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
        // Unless a backend is named, the primary backends (Vulkan, Metal,
        // DX12) are probed first and GL only when they offer no adapter:
        // probing GL through EGL prints warnings on headless machines that
        // have a Vulkan driver.
        let forced = options.backends.or_else(wgpu::Backends::from_env);
        let tries = match forced {
            Some(b) => vec![b],
            None => vec![wgpu::Backends::PRIMARY, wgpu::Backends::SECONDARY],
        };
        let pref = options
            .power_preference
            .or_else(wgpu::PowerPreference::from_env)
            .unwrap_or(wgpu::PowerPreference::HighPerformance);
        let name_filter = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .map(|s| s.to_lowercase());
        for &backends in &tries {
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
            if let Some(adapter) = adapters.into_iter().next() {
                return Self::from_adapter(instance, adapter, &options).await;
            }
        }
        let searched = tries.iter().fold(wgpu::Backends::empty(), |a, &b| a | b);
        let narrowed = forced.is_some() || name_filter.is_some();
        Err(Error::NoAdapter {
            details: format!(
                "backends {searched:?}{}",
                name_filter
                    .map(|n| format!(", name containing '{n}'"))
                    .unwrap_or_default()
            ),
            hint: no_adapter_hint(narrowed).await,
        })
    }

    async fn from_adapter(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        options: &ContextOptions,
    ) -> Result<Self> {
        let ainfo = adapter.get_info();
        let features = adapter.features() & OPTIONAL_FEATURES & !options.disable_features;
        let limits = options.limits.clone().unwrap_or_else(|| adapter.limits());
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
        Ok(Self::assemble(
            &adapter,
            device,
            queue,
            lost,
            options.wait_for_best_kernels,
            Some(instance),
        ))
    }

    /// A context on an app's own device and queue (a renderer's, an engine's):
    /// flashdot's tensors and ops then live on the device the app already
    /// drives, with no copy through the host. `adapter` is the one `device`
    /// was requested from.
    ///
    /// The device is used with the features and limits it was created with:
    /// flashdot plans around what is missing (f16 tensors without
    /// `SHADER_F16` are [`Error::Unsupported`], kernels that need subgroups
    /// or more workgroup memory are not planned). The app's device-lost and
    /// uncaptured-error handlers are left alone: flashdot catches its own
    /// errors with error scopes, and reports a lost device through the
    /// errors of its calls (a poll that fails is [`Error::DeviceLost`]), not
    /// through a callback of its own. Kernels are compiled before their first
    /// use (no background compiles on the app's device).
    pub fn from_wgpu(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Context {
        Self::assemble(
            adapter,
            device,
            queue,
            Arc::new(Mutex::new(None)),
            true,
            None,
        )
    }

    fn assemble(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        lost: Arc<Mutex<Option<String>>>,
        wait_for_best: bool,
        instance: Option<wgpu::Instance>,
    ) -> Context {
        let ainfo = adapter.get_info();
        let info = ContextInfo {
            name: ainfo.name.clone(),
            backend: ainfo.backend,
            device_type: ainfo.device_type,
            driver: ainfo.driver.clone(),
            driver_info: ainfo.driver_info.clone(),
            features: device.features() & OPTIONAL_FEATURES,
            subgroup_size: (ainfo.subgroup_min_size, ainfo.subgroup_max_size),
            limits: device.limits(),
        };
        let binds = Arc::new(bindcache::BindCache::default());
        Context {
            inner: Arc::new(Inner {
                device,
                queue,
                profile: DeviceProfile::from_info(&info),
                info,
                cache: Default::default(),
                wait_for_best,
                lost,
                memory: Arc::default(),
                arena: arena::ParamArena::new(),
                texels: Arc::new(texels::TexelPool::new(binds.clone())),
                binds,
                poller: Default::default(),
                timer: Mutex::new(None),
                recording: Mutex::default(),
                _adapter: adapter.clone(),
                _instance: instance,
            }),
        }
    }

    /// Adapter name, backend, device type, driver, features in use and key limits.
    pub fn info(&self) -> &ContextInfo {
        &self.inner.info
    }

    /// What the planners decide from: device type, features, limits and the
    /// policy derived from them.
    pub fn profile(&self) -> &DeviceProfile {
        &self.inner.profile
    }

    /// Bind groups held by the context's cache (for its test in `ops::dot`).
    #[cfg(test)]
    pub(crate) fn bind_groups_cached(&self) -> usize {
        self.inner.binds.len()
    }

    pub(crate) fn texel_pool(&self) -> Arc<texels::TexelPool> {
        self.inner.texels.clone()
    }

    /// Frees the device memory flashdot keeps for reuse between calls (the
    /// pooled texel copies of operands; tensors and compiled kernels stay).
    /// Later calls allocate again as needed.
    pub fn empty_cache(&self) {
        self.inner.texels.clear();
        self.inner.binds.clear();
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
    ///
    /// A destroyed device is only reported to the device-lost callback by a
    /// poll, so each call first polls (non-blocking, ~0.1 µs): every call
    /// after `device().destroy()` is [`Error::DeviceLost`], not a validation
    /// error about invalid objects (contexts made by [`Context::from_wgpu`]
    /// leave the callback to the app and report [`Error::Gpu`] instead).
    pub(crate) fn scoped<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _ = self.inner.device.poll(wgpu::PollType::Poll);
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
        if errs.iter().any(|(_, e)| e.is_some()) {
            let _ = self.inner.device.poll(wgpu::PollType::Poll);
        }
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

    /// Blocks until all submitted work has finished.
    ///
    /// Errors: [`Error::DeviceLost`]; [`Error::InvalidArgument`] inside
    /// [`Context::record`] (the recorded work is not submitted yet).
    pub fn synchronize(&self) -> Result<()> {
        self.not_recording("Context::synchronize")?;
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        self.check_alive()
    }
}

/// What to tell a caller who found no adapter: when a backend or name
/// narrowed the search and other adapters exist, which ones (the cause is
/// the filter, not a missing driver); otherwise how to install lavapipe.
async fn no_adapter_hint(narrowed: bool) -> String {
    const INSTALL: &str = "On a machine without a GPU install Mesa's software Vulkan driver \
        (lavapipe): `apt-get install mesa-vulkan-drivers` on Debian/Ubuntu, `dnf install \
        mesa-vulkan-drivers` on Fedora; check with `vulkaninfo --summary`";
    if !narrowed {
        return INSTALL.into();
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::all();
    let present: Vec<String> = wgpu::Instance::new(desc)
        .enumerate_adapters(wgpu::Backends::all())
        .await
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
        })
        .collect();
    if present.is_empty() {
        return INSTALL.into();
    }
    format!(
        "The search was narrowed (a backend or adapter name, from ContextOptions or \
         WGPU_BACKEND / WGPU_ADAPTER_NAME); adapters present: {}",
        present.join(", ")
    )
}
