//! The pipeline cache: one compiled pipeline per kernel spec and context, built
//! on first use, and the background compiles that let a quick form of a kernel
//! serve while its slow-to-compile best form is built.
//!
//! A kernel spec ([`KernelSpec`]) is a typed, hashable value per kernel family
//! (the ops declare them); it is both the cache key and the only input to the
//! kernel's WGSL, so two calls that share a spec share a pipeline and nothing
//! else can make their sources differ. `FLASHDOT_DUMP_WGSL=dir` writes every
//! generated shader to `dir` as it is compiled.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Context;
use crate::error::Result;

/// A kernel specialisation: everything its WGSL and entry point depend on.
pub(crate) trait Spec: fmt::Debug + Clone + Eq + Hash + Send + Sync + 'static {
    /// The kernel family (names the op in errors and labels the pipeline).
    fn family(&self) -> &'static str;
    /// The WGSL entry point.
    fn entry(&self) -> &'static str;
    /// The WGSL source; a malformed template is an error.
    fn source(&self) -> Result<String>;
}

/// A [`Spec`] behind a pointer, hashable and comparable across families.
pub(crate) trait KernelSpec: fmt::Debug + Send + Sync {
    fn family(&self) -> &'static str;
    fn entry(&self) -> &'static str;
    fn source(&self) -> Result<String>;
    fn as_any(&self) -> &dyn Any;
    fn eq_dyn(&self, other: &dyn KernelSpec) -> bool;
    fn hash_dyn(&self, state: &mut dyn Hasher);
    fn boxed(&self) -> Box<dyn KernelSpec>;
}

impl<S: Spec> KernelSpec for S {
    fn family(&self) -> &'static str {
        Spec::family(self)
    }
    fn entry(&self) -> &'static str {
        Spec::entry(self)
    }
    fn source(&self) -> Result<String> {
        Spec::source(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn eq_dyn(&self, other: &dyn KernelSpec) -> bool {
        other.as_any().downcast_ref::<S>() == Some(self)
    }
    fn hash_dyn(&self, mut state: &mut dyn Hasher) {
        std::any::TypeId::of::<S>().hash(&mut state);
        self.hash(&mut state);
    }
    fn boxed(&self) -> Box<dyn KernelSpec> {
        Box::new(self.clone())
    }
}

/// The cache key: an owned spec.
pub(crate) struct SpecKey(Box<dyn KernelSpec>);

impl PartialEq for SpecKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(&*other.0)
    }
}
impl Eq for SpecKey {}
impl Hash for SpecKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash_dyn(state)
    }
}
impl Clone for SpecKey {
    fn clone(&self) -> Self {
        SpecKey(self.0.boxed())
    }
}
impl fmt::Debug for SpecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

type Pipelines = HashMap<SpecKey, Arc<wgpu::ComputePipeline>>;

/// Kernels compiled in the background (see [`Context::pipeline_or_quick`]).
#[derive(Default)]
struct Background {
    /// Specs ever queued (a failed compile is not retried).
    queued: HashSet<SpecKey>,
    /// Queued, to start at the next submit.
    deferred: Vec<SpecKey>,
    /// Started threads not yet joined.
    running: Vec<std::thread::JoinHandle<()>>,
}

/// The per-context pipeline state.
#[derive(Default)]
pub(crate) struct PipelineCache {
    pipelines: Mutex<Pipelines>,
    background: Mutex<Background>,
    /// Per-op tuning tables (the matmul autotuner's winners by shape class),
    /// one of each type, made on first use: each op keeps its own typed key.
    tuning: Mutex<HashMap<std::any::TypeId, Box<dyn Any + Send>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `source` to `$FLASHDOT_DUMP_WGSL/<family>-<hash>.wgsl` when set (a
/// debugging aid: the spec is the file's first comment line).
fn dump(spec: &dyn KernelSpec, source: &str) {
    let Some(dir) = std::env::var_os("FLASHDOT_DUMP_WGSL") else {
        return;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.hash_dyn(&mut h);
    let path =
        std::path::Path::new(&dir).join(format!("{}-{:016x}.wgsl", spec.family(), h.finish()));
    let text = format!("// {spec:?}\n// entry point: {}\n{source}", spec.entry());
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        log::warn!("FLASHDOT_DUMP_WGSL: cannot write {}: {e}", path.display());
    }
}

impl Context {
    /// Returns the cached pipeline for `spec`, compiling it on first use.
    pub(crate) fn pipeline<S: Spec>(&self, spec: &S) -> Result<Arc<wgpu::ComputePipeline>> {
        self.pipeline_dyn(spec)
    }

    fn pipeline_dyn(&self, spec: &dyn KernelSpec) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = SpecKey(spec.boxed());
        if let Some(p) = lock(&self.inner.cache.pipelines).get(&key) {
            return Ok(p.clone());
        }
        // Built outside the lock: shader compilation takes seconds on software
        // adapters and other threads should not wait on unrelated kernels.
        let source = spec.source()?;
        dump(spec, &source);
        let label = spec.family();
        let dev = &self.inner.device;
        let started = std::time::Instant::now();
        let pipeline = self.scoped(label, || {
            let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            Ok(
                dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(label),
                    layout: None,
                    module: &module,
                    entry_point: Some(spec.entry()),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[],
                        // Kernels initialise the workgroup memory they read.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                }),
            )
        })?;
        let took = started.elapsed();
        if took.as_secs_f64() > 1.0 {
            // A first call that waits seconds should say why.
            log::info!("flashdot: compiled {spec:?} in {:.1} s", took.as_secs_f64());
        }
        let pipeline = Arc::new(pipeline);
        Ok(lock(&self.inner.cache.pipelines)
            .entry(key)
            .or_insert(pipeline)
            .clone())
    }

    /// Whether the pipeline for `spec` is compiled.
    pub(crate) fn has_pipeline<S: Spec>(&self, spec: &S) -> bool {
        lock(&self.inner.cache.pipelines).contains_key(&SpecKey(spec.boxed()))
    }

    /// The pipeline for `best` if it is built; else, unless the context waits
    /// for best kernels, `quick`'s (a form that compiles fast), and `best` is
    /// compiled on a background thread that starts after the next submit has
    /// finished (so that it competes with neither the quick compile nor the
    /// first call); once per spec, and should it fail, `quick` serves from
    /// then on. Waiting contexts build `best` now. The flag says whether the
    /// pipeline is `best`'s.
    pub(crate) fn pipeline_or_quick<S: Spec>(
        &self,
        best: &S,
        quick: &S,
    ) -> Result<(Arc<wgpu::ComputePipeline>, bool)> {
        if self.inner.wait_for_best || self.has_pipeline(best) {
            return Ok((self.pipeline(best)?, true));
        }
        let pipe = self.pipeline(quick)?;
        let mut bg = lock(&self.inner.cache.background);
        let key = SpecKey(best.boxed());
        if bg.queued.insert(key.clone()) {
            bg.deferred.push(key);
        }
        Ok((pipe, false))
    }

    /// Starts the deferred background compiles, each after the work
    /// submitted so far.
    pub(super) fn start_background_compiles(&self) {
        let mut bg = lock(&self.inner.cache.background);
        for key in std::mem::take(&mut bg.deferred) {
            let ctx = self.clone();
            bg.running.push(std::thread::spawn(move || {
                let done = ctx
                    .synchronize()
                    .and_then(|()| ctx.pipeline_dyn(&*key.0).map(|_| ()));
                if let Err(e) = done {
                    log::warn!("background kernel compile failed, the quick form stays: {e}");
                }
            }));
        }
    }

    /// Blocks until the kernels compiling in the background (see
    /// [`ContextOptions::wait_for_best_kernels`](super::ContextOptions::wait_for_best_kernels))
    /// are ready, so that later calls run their fastest forms: a warm-up for
    /// latency-sensitive callers.
    pub fn finish_background_compiles(&self) {
        self.start_background_compiles();
        let running = std::mem::take(&mut lock(&self.inner.cache.background).running);
        for h in running {
            let _ = h.join();
        }
    }

    /// Number of pipelines built so far (each kernel spec once).
    pub fn cached_pipelines(&self) -> usize {
        lock(&self.inner.cache.pipelines).len()
    }

    /// Runs `f` on this context's tuning table of type `T`, made empty on
    /// first use (an op's own typed table, such as the matmul autotuner's
    /// winners by shape class).
    pub(crate) fn with_tuning<T: Any + Send + Default, R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut tables = lock(&self.inner.cache.tuning);
        let table = tables
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()));
        // Keyed by its type's id, the entry is always a `T`.
        f(table
            .downcast_mut()
            .expect("a tuning table of its key's type"))
    }
}
