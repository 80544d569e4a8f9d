//! Every kernel spec the planners can produce, on every device profile below,
//! parsed and validated by naga and translated to SPIR-V (Vulkan), MSL
//! (Metal), HLSL (DX12) and GLSL ES 3.1 (GL): how portability to backends this
//! machine cannot run is checked, without a GPU. Also checks that each params
//! struct mirrors its WGSL struct field by field.
//!
//! GLSL is not asked of specs that use f16 or subgroups: wgpu's GL backend
//! offers neither `SHADER_F16` nor `SUBGROUP`, so the planners never produce
//! them there.

use std::collections::BTreeMap;
use std::sync::Mutex;

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

use crate::context::{DeviceProfile, Spec};
use crate::ops::{
    attention, dot, embedding, grad, matmul, norm, pooling, sample, search, similarity,
};
use crate::shader::Params;
use crate::tensor::strided as gather;

/// Device profiles that span what the planners branch on: a discrete GPU
/// with f16 and 32-lane subgroups, one with neither, a software adapter with
/// 8-lane subgroups (lavapipe's), the same without subgroups, and WebGPU's
/// minimum limits (small textures and workgroup memory).
pub(crate) fn profiles() -> Vec<DeviceProfile> {
    let base = DeviceProfile {
        device_type: wgpu::DeviceType::DiscreteGpu,
        f16: true,
        subgroups: true,
        min_subgroup: 32,
        subgroups_of_8: true,
        max_storage_binding: 1 << 31,
        max_uniform_binding: 64 << 10,
        max_storage_buffers: 16,
        max_buffer: 1 << 32,
        workgroup_memory: 48 << 10,
        max_invocations: 1024,
        max_workgroup_size: [1024, 1024, 64],
        max_workgroups_per_dim: 65535,
        max_texture_2d: 16384,
        max_texture_layers: 2048,
        storage_offset_alignment: 256,
        uniform_offset_alignment: 256,
        texel_reads: false,
        min_array_layers: 1,
    };
    let cpu = DeviceProfile {
        device_type: wgpu::DeviceType::Cpu,
        min_subgroup: 8,
        max_storage_binding: 128 << 20,
        workgroup_memory: 32 << 10,
        texel_reads: true,
        ..base.clone()
    };
    let minimal = wgpu::Limits::default();
    vec![
        base.clone(),
        DeviceProfile {
            f16: false,
            subgroups: false,
            subgroups_of_8: false,
            ..base.clone()
        },
        cpu.clone(),
        DeviceProfile {
            subgroups: false,
            subgroups_of_8: false,
            ..cpu
        },
        DeviceProfile {
            max_storage_binding: minimal.max_storage_buffer_binding_size,
            max_uniform_binding: minimal.max_uniform_buffer_binding_size,
            max_storage_buffers: minimal.max_storage_buffers_per_shader_stage,
            workgroup_memory: minimal.max_compute_workgroup_storage_size,
            max_invocations: minimal.max_compute_invocations_per_workgroup,
            max_workgroup_size: [256, 256, 64],
            max_texture_2d: minimal.max_texture_dimension_2d,
            max_texture_layers: minimal.max_texture_array_layers,
            ..base
        },
    ]
}

/// A spec's name, WGSL and entry point.
struct Kernel {
    family: &'static str,
    name: String,
    source: crate::Result<String>,
    entry: &'static str,
}

fn kernel<S: Spec>(s: &S) -> Kernel {
    Kernel {
        family: s.family(),
        name: format!("{s:?}"),
        source: s.source(),
        entry: s.entry(),
    }
}

/// Every reachable spec of every family.
fn all_kernels() -> Vec<Kernel> {
    let p = profiles();
    let mut v: Vec<Kernel> = Vec::new();
    v.extend(dot::DotSpec::reachable().iter().map(kernel));
    v.extend(similarity::SimilaritySpec::reachable().iter().map(kernel));
    v.extend(gather::GatherSpec::reachable().iter().map(kernel));
    v.extend(embedding::EmbeddingSpec::reachable().iter().map(kernel));
    v.extend(norm::NormSpec::reachable().iter().map(kernel));
    v.extend(pooling::PoolSpec::reachable().iter().map(kernel));
    v.extend(sample::SampleSpec::reachable().iter().map(kernel));
    v.extend(matmul::reachable_specs().iter().map(kernel));
    v.extend(search::reachable_specs(&p).iter().map(kernel));
    v.extend(search::kmeans_specs().iter().map(kernel));
    v.extend(search::nearest_specs(&p).iter().map(kernel));
    v.extend(attention::reachable_specs(&p).iter().map(kernel));
    v.extend(grad::reachable_specs().iter().map(kernel));
    v
}

#[derive(Default, Debug)]
struct Tally {
    specs: usize,
    spirv: usize,
    msl: usize,
    hlsl: usize,
    glsl: usize,
    failures: Vec<String>,
}

fn check(k: &Kernel, t: &Mutex<Tally>) {
    let fail = |what: String| {
        t.lock()
            .unwrap()
            .failures
            .push(format!("{}: {what}", k.name));
    };
    let src = match &k.source {
        Ok(s) => s,
        Err(e) => return fail(format!("template: {e}")),
    };
    let module = match naga::front::wgsl::parse_str(src) {
        Ok(m) => m,
        Err(e) => return fail(format!("parse: {}", e.emit_to_string(src))),
    };
    let validate = |caps: Capabilities| {
        Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .map_err(Box::new)
    };
    let info = match validate(Capabilities::all()) {
        Ok(i) => i,
        Err(e) => return fail(format!("validation: {}", e.emit_to_string(src))),
    };
    let needs_glsl = !(src.contains("enable f16") || src.contains("subgroup"));
    let stage = naga::ShaderStage::Compute;
    let mut ok = [false; 4];
    // SPIR-V 1.3 (subgroup operations), as wgpu's Vulkan backend writes.
    let spv_opts = spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    let spv_pipe = spv::PipelineOptions {
        shader_stage: stage,
        entry_point: k.entry.into(),
    };
    match validate(spv::supported_capabilities())
        .map_err(|e| e.to_string())
        .and_then(|i| {
            spv::write_vec(&module, &i, &spv_opts, Some(&spv_pipe)).map_err(|e| e.to_string())
        }) {
        Ok(_) => ok[0] = true,
        Err(e) => fail(format!("SPIR-V: {e}")),
    }
    let msl_opts = msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    let msl_pipe = msl::PipelineOptions {
        entry_point: Some((stage, k.entry.into())),
        ..Default::default()
    };
    match validate(msl::supported_capabilities())
        .map_err(|e| e.to_string())
        .and_then(|i| {
            msl::write_string(&module, &i, &msl_opts, &msl_pipe).map_err(|e| e.to_string())
        }) {
        Ok(_) => ok[1] = true,
        Err(e) => fail(format!("MSL: {e}")),
    }
    // Shader model 6.2: 16-bit types and wave intrinsics.
    let hlsl_opts = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_2,
        ..Default::default()
    };
    let hlsl_pipe = hlsl::PipelineOptions {
        entry_point: Some((stage, k.entry.into())),
    };
    let hlsl_out = validate(hlsl::supported_capabilities())
        .map_err(|e| e.to_string())
        .and_then(|i| {
            let mut s = String::new();
            hlsl::Writer::new(&mut s, &hlsl_opts, &hlsl_pipe)
                .write(&module, &i, None)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    match hlsl_out {
        Ok(()) => ok[2] = true,
        Err(e) => fail(format!("HLSL: {e}")),
    }
    if needs_glsl {
        let glsl_opts = glsl::Options::default();
        let glsl_pipe = glsl::PipelineOptions {
            shader_stage: stage,
            entry_point: k.entry.into(),
            multiview: None,
        };
        let glsl_out = validate(glsl::supported_capabilities())
            .map_err(|e| e.to_string())
            .and_then(|i| {
                let mut s = String::new();
                glsl::Writer::new(
                    &mut s,
                    &module,
                    &i,
                    &glsl_opts,
                    &glsl_pipe,
                    Default::default(),
                )
                .and_then(|mut w| w.write())
                .map(|_| ())
                .map_err(|e| e.to_string())
            });
        match glsl_out {
            Ok(()) => ok[3] = true,
            Err(e) => fail(format!("GLSL: {e}")),
        }
    }
    drop(info);
    let mut t = t.lock().unwrap();
    t.specs += 1;
    t.spirv += ok[0] as usize;
    t.msl += ok[1] as usize;
    t.hlsl += ok[2] as usize;
    t.glsl += ok[3] as usize;
}

#[test]
fn every_reachable_spec_validates_on_every_backend() {
    let kernels = all_kernels();
    let tally = Mutex::new(Tally::default());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(k) = kernels.get(i) else { break };
                check(k, &tally);
            });
        }
    });
    let t = tally.into_inner().unwrap();
    let mut per_family: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &kernels {
        *per_family.entry(k.family).or_default() += 1;
    }
    println!(
        "{} specs ({per_family:?}): SPIR-V {}, MSL {}, HLSL {}, GLSL {} (GLSL: specs without f16 or subgroups)",
        t.specs, t.spirv, t.msl, t.hlsl, t.glsl
    );
    assert!(
        t.failures.is_empty(),
        "{} of {} kernel translations failed; first ones:\n{}",
        t.failures.len(),
        kernels.len(),
        t.failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(t.specs > 0 && t.specs == kernels.len());
}

/// A spec whose WGSL is broken must fail the check, naming the spec (the
/// check above cannot pass vacuously).
#[test]
fn a_broken_kernel_is_caught() {
    let good = dot::DotSpec::reachable().remove(0);
    let src = good.source().unwrap();
    let broken = Kernel {
        family: "dot",
        name: format!("{good:?}"),
        source: Ok(src.replacen("return;", "return 1.0;", 1)),
        entry: good.entry(),
    };
    let t = Mutex::new(Tally::default());
    check(&broken, &t);
    let t = t.into_inner().unwrap();
    assert_eq!(t.specs, 0);
    assert!(t.failures[0].starts_with(&broken.name), "{:?}", t.failures);
}

/// Field names and byte offsets of a WGSL struct, as naga lays it out.
fn wgsl_struct(src: &str, name: &str) -> Vec<(String, usize)> {
    let module = naga::front::wgsl::parse_str(src).expect("params source parses");
    for (_, ty) in module.types.iter() {
        if ty.name.as_deref() == Some(name) {
            if let naga::TypeInner::Struct { members, .. } = &ty.inner {
                return members
                    .iter()
                    .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                    .collect();
            }
        }
    }
    panic!("no struct {name} in the source");
}

fn mirrors<P: Params>(src: crate::Result<String>) {
    let wgsl = wgsl_struct(&src.expect("source"), "Params");
    let rust: Vec<(String, usize)> = P::FIELDS.iter().map(|&(n, o)| (n.to_string(), o)).collect();
    assert_eq!(rust, wgsl, "{}", std::any::type_name::<P>());
    let size = wgsl.last().map_or(0, |l| l.1 + 4).next_multiple_of(16);
    assert_eq!(
        std::mem::size_of::<P>(),
        size,
        "{}",
        std::any::type_name::<P>()
    );
}

#[test]
fn params_structs_mirror_their_wgsl() {
    mirrors::<dot::DotParams>(dot::DotSpec::reachable()[0].source());
    mirrors::<similarity::SimilarityParams>(similarity::SimilaritySpec::reachable()[0].source());
    mirrors::<gather::GatherParams>(gather::GatherSpec::reachable()[0].source());
    mirrors::<embedding::EmbeddingParams>(embedding::EmbeddingSpec::reachable()[0].source());
    mirrors::<norm::NormParams>(norm::NormSpec::reachable()[0].source());
    mirrors::<pooling::PoolParams>(pooling::PoolSpec::reachable()[0].source());
    for s in sample::SampleSpec::reachable() {
        mirrors::<sample::SampleParams>(s.source());
    }
    mirrors::<matmul::MatmulParams>(matmul::reachable_specs()[0].source());
    mirrors::<search::TopkParams>(search::reachable_specs(&profiles())[0].source());
    mirrors::<search::KMeansParams>(search::kmeans_specs()[0].source());
    mirrors::<search::NearestParams>(search::nearest_specs(&profiles())[0].source());
    mirrors::<attention::AttentionParams>(attention::reachable_specs(&profiles())[0].source());
    grad_params_mirror_their_wgsl();
}

/// Each `grad` kernel's params struct against the WGSL of one of its specs.
fn grad_params_mirror_their_wgsl() {
    use crate::tensor::DType;
    use grad::{GradKernel as K, GradSpec};
    let src = |kernel| {
        GradSpec {
            dtype: DType::F32,
            kernel,
        }
        .source()
    };
    mirrors::<grad::ColSumParams>(GradSpec::column_sum(DType::F32, DType::F32).source());
    mirrors::<grad::ActParams>(src(K::Activation {
        act: matmul::Activation::GeluErf,
        backward: true,
    }));
    mirrors::<grad::AddParams>(src(K::Add { accumulate: false }));
    mirrors::<grad::NormGradParams>(src(K::NormRows {
        residual: true,
        rows: false,
    }));
    mirrors::<grad::NormGradParams>(src(K::NormPartials { residual: false }));
    mirrors::<grad::EmbeddingGradParams>(src(K::EmbeddingRows));
    mirrors::<pooling::PoolParams>(src(K::PoolBackward));
    mirrors::<grad::CrossEntropyParams>(src(K::CrossEntropy { rows: true }));
    mirrors::<grad::CrossEntropyParams>(src(K::LossSum));
    mirrors::<grad::AdamWParams>(src(K::AdamW));
    mirrors::<grad::TransposeParams>(src(K::Transpose));
}

/// A search batch's scan records at most `MAX_BATCH_PASSES` dispatches (one
/// per chunk and query block) while its candidates fit a binding, on every
/// profile, for one chunk and for many.
#[test]
fn a_search_batch_records_a_bounded_number_of_passes() {
    use search::{batch_size, SearchPlan, MAX_BATCH_PASSES};
    for p in profiles() {
        for (k, m) in [(1, 1 << 20), (10, 1 << 20), (100, 5000)] {
            let plan = SearchPlan::new(&p, k, m, 128).unwrap();
            for chunks in [1, 3, 700] {
                let slices = chunks * 4;
                let b = batch_size(128 << 20, &plan, slices, chunks);
                let passes = chunks * b.div_ceil(plan.qb as usize);
                assert!(b >= 1, "{p:?}");
                assert!(
                    passes <= MAX_BATCH_PASSES.max(chunks),
                    "{passes} passes for {b} queries over {chunks} chunks (qb {})",
                    plan.qb
                );
                let bytes = (b * slices * plan.slice_slots() * 8) as u64;
                assert!(bytes <= 128 << 20 || b == 1, "{bytes} bytes of candidates");
            }
        }
    }
}

/// The IVF list scan is grouped from 8 queries a list on software adapters,
/// from 2 on GPUs, and as forced when forced.
#[test]
fn ivf_grouping_follows_the_adapter_and_queries_per_list() {
    use search::ivf_group;
    for p in profiles() {
        let least = if p.device_type == wgpu::DeviceType::Cpu {
            8
        } else {
            2
        };
        for per_list in [0, 1, 2, 7, 8, 16] {
            assert_eq!(ivf_group(&p, Some(false), per_list), 1);
            assert_eq!(ivf_group(&p, Some(true), per_list), per_list.max(1));
            let want = if per_list < least { 1 } else { per_list };
            assert_eq!(
                ivf_group(&p, None, per_list),
                want,
                "{p:?} at {per_list} queries a list"
            );
        }
    }
}
