//! Plans: which kernel each op picks from the device profile and the shapes,
//! and that a forced variant, schedule or source that cannot serve a call is
//! `Unsupported` (from the plan and from the call alike), never substituted.

mod common;

use common::*;
use flashdot::ops::attention::{self, AttentionOptions, AttentionVariant, FlashSchedule, KvReads};
use flashdot::ops::matmul::{self, MatmulOptions, MatmulVariant, TileConfig};
use flashdot::ops::search::{FlatIndex, IndexOptions, Scan};
use flashdot::ops::{dot, similarity::Metric};
use flashdot::{Context, ContextOptions, DType, Error, Tensor};

fn zeros(ctx: &Context, shape: &[usize]) -> Tensor {
    Tensor::zeros(ctx, shape, DType::F32).unwrap()
}

/// A context on the same adapter with small limits: 16-texel textures, 4 KiB
/// of workgroup memory, 64 KiB storage bindings.
fn small_ctx() -> Context {
    let mut limits = ctx().info().limits.clone();
    limits.max_texture_dimension_2d = 16;
    limits.max_compute_workgroup_storage_size = 4096;
    limits.max_storage_buffer_binding_size = 64 << 10;
    Context::with_options(
        ContextOptions::default()
            .wait_for_best_kernels(true)
            .with_limits(limits),
    )
    .unwrap_or_else(|e| panic!("flashdot tests need a GPU adapter: {e}"))
}

#[track_caller]
fn unsupported<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) -> String {
    match r {
        Err(Error::Unsupported { detail, .. }) => detail,
        other => panic!("{what}: expected Unsupported, got {other:?}"),
    }
}

#[test]
fn plans_follow_the_device_profile() {
    let ctx = ctx();
    let p = ctx.profile();
    let att = |sq: usize, sk: usize| {
        let q = zeros(&ctx, &[1, 2, sq, 64]);
        let kv = zeros(&ctx, &[1, 2, sk, 64]);
        attention::plan(&q, &kv, &kv, &AttentionOptions::default()).unwrap()
    };
    // Decode: few queries over many keys split the keys.
    let decode = att(1, 4096);
    assert_eq!(decode.variant, AttentionVariant::SplitKv, "{decode}");
    let prefill = att(256, 256);
    let short = att(20, 100);
    assert_eq!(prefill.variant, AttentionVariant::Flash, "{prefill}");
    let mm = |m, k, n| {
        matmul::plan(
            &zeros(&ctx, &[m, k]),
            &zeros(&ctx, &[k, n]),
            &MatmulOptions::default(),
        )
        .unwrap()
    };
    let (aligned, odd) = (mm(64, 64, 64), mm(3, 5, 7));
    let d768 = dot::plan(
        &zeros(&ctx, &[10, 768]),
        &zeros(&ctx, &[10, 768]),
        dot::DotVariant::Auto,
    )
    .unwrap();
    if p.texel_reads {
        // Software adapters: texel reads and barrier-free kernels.
        assert_eq!(decode.kv_reads, Some(KvReads::Texels), "{decode}");
        assert_eq!(prefill.schedule, Some(FlashSchedule::Rows), "{prefill}");
        assert_eq!(short.schedule, Some(FlashSchedule::KeySplit), "{short}");
        assert!(
            matches!(
                aligned.kernel,
                MatmulVariant::Tiled(TileConfig::Texel { .. })
            ),
            "{aligned}"
        );
        assert!(
            matches!(
                odd.kernel,
                MatmulVariant::Tiled(TileConfig::Broadcast { .. })
            ),
            "{odd}"
        );
        assert_eq!(d768.kernel, dot::DotVariant::Naive, "{d768}");
    } else {
        assert_eq!(decode.kv_reads, Some(KvReads::Buffers), "{decode}");
        assert_eq!(prefill.schedule, Some(FlashSchedule::Tiles), "{prefill}");
        assert_eq!(short.schedule, Some(FlashSchedule::Tiles), "{short}");
        assert!(
            matches!(
                aligned.kernel,
                MatmulVariant::Tiled(TileConfig::Shared { .. })
            ),
            "{aligned}"
        );
        // A shape of no tile multiple runs the same device default, with
        // its edges guarded (no vec4 requirement on a GPU's shared tiles).
        assert_eq!(odd.kernel, aligned.kernel, "{odd}");
        assert_eq!(d768.kernel, dot::DotVariant::Workgroup, "{d768}");
    }
    // Search: k ≤ 16 keeps lists in registers, larger k sorts slices.
    let index = FlatIndex::new(&ctx, 32, IndexOptions::default().metric(Metric::Cosine)).unwrap();
    assert!(matches!(
        index.plan(1, 10).unwrap().scan,
        Scan::Lists { l: 10, .. }
    ));
    assert_eq!(index.plan(4, 100).unwrap().scan, Scan::Sort);
    // A forced choice that can serve is what runs.
    let q = zeros(&ctx, &[1, 2, 20, 64]);
    for s in FlashSchedule::ALL {
        let o = AttentionOptions::default()
            .variant(AttentionVariant::Flash)
            .flash_schedule(s);
        assert_eq!(attention::plan(&q, &q, &q, &o).unwrap().schedule, Some(s));
    }
}

#[test]
fn forced_choices_that_cannot_serve_are_unsupported() {
    let ctx = ctx();
    // Matmul: the vec4-reading kernels on shapes they cannot read.
    let (a, b) = (zeros(&ctx, &[8, 6]), zeros(&ctx, &[6, 8]));
    for c in [
        TileConfig::Texel {
            wg: 8,
            tm: 32,
            tn: 8,
        },
        TileConfig::Vec4 {
            wg: 8,
            tm: 24,
            tn: 2,
        },
    ] {
        let o = MatmulOptions::default().variant(MatmulVariant::Tiled(c));
        let why = unsupported(matmul::plan(&a, &b, &o), &format!("{c} k=6"));
        assert!(why.contains("multiple of 4"), "{why}");
        unsupported(matmul::matmul_with(&a, &b, &o), &format!("{c} call"));
    }
    // A workgroup over the adapter's limits (a valid configuration otherwise).
    let big = TileConfig::Shared {
        wx: 64,
        wy: 64,
        tm: 1,
        bk: 1,
    };
    assert!(
        64 * 64 > ctx.profile().max_invocations,
        "adapter allows 4096 invocations"
    );
    let o = MatmulOptions::default().variant(MatmulVariant::Tiled(big));
    let why = unsupported(
        matmul::matmul_with(&zeros(&ctx, &[4, 4]), &zeros(&ctx, &[4, 4]), &o),
        "wide wg",
    );
    assert!(why.contains("workgroup"), "{why}");
    // Attention: the key-split merge at d_v 256 needs 66 KiB of workgroup
    // memory (this adapter's limit is checked, not assumed).
    let (q, kv) = (zeros(&ctx, &[1, 1, 4, 256]), zeros(&ctx, &[1, 1, 9, 256]));
    let o = AttentionOptions::default()
        .variant(AttentionVariant::Flash)
        .flash_schedule(FlashSchedule::KeySplit);
    if 64 * (8 + 64 * 16) > ctx.profile().workgroup_memory {
        let why = unsupported(attention::plan(&q, &kv, &kv, &o), "key-split d_v 256");
        assert!(why.contains("workgroup memory"), "{why}");
        unsupported(attention::attention(&q, &kv, &kv, &o), "key-split call");
    }

    // On small limits: textures of 16 texels, 4 KiB of workgroup memory.
    let small = small_ctx();
    // Head dim 128: a tile of 8 keys needs 8 KiB of workgroup memory.
    let (q, kv) = (
        zeros(&small, &[1, 2, 8, 128]),
        zeros(&small, &[1, 2, 40, 128]),
    );
    let flash = AttentionOptions::default().variant(AttentionVariant::Flash);
    for s in [
        FlashSchedule::Rows,
        FlashSchedule::Tiles,
        FlashSchedule::Blocks,
    ] {
        let o = flash.flash_schedule(s);
        unsupported(attention::plan(&q, &kv, &kv, &o), &format!("{s:?}"));
        unsupported(
            attention::attention(&q, &kv, &kv, &o),
            &format!("{s:?} call"),
        );
    }
    let o = AttentionOptions::default()
        .variant(AttentionVariant::SplitKv)
        .split_kv_reads(KvReads::Texels);
    let why = unsupported(attention::plan(&q, &kv, &kv, &o), "split-KV texels");
    assert!(why.contains("texture"), "{why}");
    unsupported(
        attention::attention(&q, &kv, &kv, &o),
        "split-KV texels call",
    );
    // Unforced, the planner picks what serves, and it runs.
    let (q, kv) = (zeros(&small, &[1, 2, 8, 8]), zeros(&small, &[1, 2, 40, 8]));
    let auto = attention::plan(&q, &kv, &kv, &AttentionOptions::default()).unwrap();
    assert_ne!(auto.schedule, Some(FlashSchedule::Rows), "{auto}");
    let out = attention::attention(&q, &kv, &kv, &AttentionOptions::default()).unwrap();
    assert_eq!(out.out.to_vec::<f32>().unwrap(), vec![0.0; 2 * 8 * 8]);
    let o = AttentionOptions::default().variant(AttentionVariant::SplitKv);
    assert_eq!(
        attention::plan(&q, &kv, &kv, &o).unwrap().kv_reads,
        Some(KvReads::Buffers)
    );
    let texel = TileConfig::Texel {
        wg: 8,
        tm: 32,
        tn: 8,
    };
    let o = MatmulOptions::default().variant(MatmulVariant::Tiled(texel));
    let (a, b) = (zeros(&small, &[64, 64]), zeros(&small, &[64, 64]));
    let why = unsupported(matmul::plan(&a, &b, &o), "texel on 16-texel textures");
    assert!(why.contains("texture"), "{why}");
    let shared = TileConfig::Shared {
        wx: 16,
        wy: 16,
        tm: 4,
        bk: 16,
    };
    let o = MatmulOptions::default().variant(MatmulVariant::Tiled(shared));
    unsupported(matmul::matmul_with(&a, &b, &o), "shared tiles in 4 KiB");
}

/// Tile configurations with a field of 0 (or past what the kernels unroll)
/// are `InvalidArgument` naming the field, before any pipeline is built.
#[test]
fn degenerate_tile_configs_are_invalid_arguments() {
    let ctx = ctx();
    let (a, b) = (zeros(&ctx, &[4, 4]), zeros(&ctx, &[4, 4]));
    for (c, field) in [
        (
            TileConfig::Shared {
                wx: 0,
                wy: 8,
                tm: 4,
                bk: 16,
            },
            "wx = 0",
        ),
        (
            TileConfig::Broadcast {
                wg: 64,
                tm: 0,
                tn: 4,
            },
            "tm = 0",
        ),
        (
            TileConfig::Vec4 {
                wg: 8,
                tm: 4,
                tn: 0,
            },
            "tn = 0",
        ),
        (
            TileConfig::Texel {
                wg: 8,
                tm: 1000,
                tn: 8,
            },
            "tm = 1000",
        ),
    ] {
        let o = MatmulOptions::default().variant(MatmulVariant::Tiled(c));
        let e = matmul::matmul_with(&a, &b, &o).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains(field),
            "{e}"
        );
    }
    // A dim no texture line holds is refused at construction (it used to
    // divide by zero on the first add).
    let e = FlatIndex::new(&ctx, 1 << 62, IndexOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}
