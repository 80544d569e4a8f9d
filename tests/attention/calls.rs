//! What a call refuses, and what it takes: shape and option errors.

use super::*;

#[test]
fn shape_errors() {
    let ctx = ctx();
    let z = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
    let o = AttentionOptions::default();
    let e = attention(
        &z(&[1, 4, 8, 16]),
        &z(&[1, 3, 8, 16]),
        &z(&[1, 3, 8, 16]),
        &o,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(
        e.to_string().contains("[1, 4, 8, 16]") && e.to_string().contains("[1, 3, 8, 16]"),
        "{e}"
    );
    let e = attention(
        &z(&[1, 2, 8, 16]),
        &z(&[1, 2, 8, 8]),
        &z(&[1, 2, 8, 16]),
        &o,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = attention(
        &z(&[1, 2, 8, 300]),
        &z(&[1, 2, 8, 300]),
        &z(&[1, 2, 8, 300]),
        &o,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let kl = [3u32, 4];
    let o2 = AttentionOptions::default().kv_len(&kl);
    let e = attention(
        &z(&[1, 2, 8, 16]),
        &z(&[1, 2, 8, 16]),
        &z(&[1, 2, 8, 16]),
        &o2,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Empty inputs: no dispatch, empty or zero results.
    let r = attention(
        &z(&[1, 2, 0, 16]),
        &z(&[1, 2, 8, 16]),
        &z(&[1, 2, 8, 16]),
        &o,
    )
    .unwrap();
    assert_eq!(r.out.shape(), &[1, 2, 0, 16]);
    let r = attention(
        &z(&[1, 2, 3, 16]),
        &z(&[1, 2, 0, 16]),
        &z(&[1, 2, 0, 16]),
        &o,
    )
    .unwrap();
    assert_eq!(r.out.to_vec::<f32>().unwrap(), vec![0.0; 96]);
}

/// The inference options refuse bad values with errors naming them.
#[test]
fn inference_option_errors() {
    let ctx = ctx();
    let z = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
    let (q, k) = (z(&[2, 4, 3, 8]), z(&[2, 2, 10, 8]));
    let err = |o: &AttentionOptions| attention(&q, &k, &k, o).unwrap_err().to_string();
    let e = err(&AttentionOptions::default().softcap(0.0));
    assert!(e.contains("softcap"), "{e}");
    let e = err(&AttentionOptions::default().alibi_slopes(&[1.0; 3]));
    assert!(
        e.contains("alibi_slopes has 3 entries for heads_q 4"),
        "{e}"
    );
    let e = err(&AttentionOptions::default().sinks(&[0.0, f32::NAN, 0.0, 0.0]));
    assert!(e.contains("sinks[1]"), "{e}");
    let m = BoolMask::from_bools(&ctx, [1, 1, 3, 9], &[true; 27]).unwrap();
    let e = err(&AttentionOptions::default().mask(&m));
    assert!(
        e.contains("mask is [1, 1, 3, 9], expected [2|1, 4|1, 3, 10]"),
        "{e}"
    );
    assert!(BoolMask::from_u8(&ctx, [1, 1, 3, 10], &[1; 29]).is_err());
    // Paged: the table's length and its pages are checked; the naive kernel
    // cannot read pages.
    let pool = z(&[5, 2, 4, 8]);
    let paged = |t: &'static [u32]| PagedKv {
        block_table: t,
        max_pages: 3,
    };
    let e = attention(
        &q,
        &pool,
        &pool,
        &AttentionOptions::default().paged(paged(&[0, 1, 2])),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("block table has 3 entries for batch 2"), "{e}");
    let e = attention(
        &q,
        &pool,
        &pool,
        &AttentionOptions::default().paged(paged(&[0, 1, 2, 3, 4, 5])),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("block_table[5] = 5 is past the pool's 5 pages"),
        "{e}"
    );
    let o = AttentionOptions::default()
        .paged(paged(&[0, 1, 2, 3, 4, 0]))
        .variant(AttentionVariant::Naive);
    let e = attention(&q, &pool, &pool, &o).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}

/// q, k and v as views of one fused QKV projection (strided, and
/// misaligned after narrowing the queries): `plan` takes what the call
/// takes and plans what a contiguous copy would; the call matches the
/// contiguous one. A bias or an output that is a view the kernels cannot
/// bind is refused by the plan and the call alike.
#[test]
fn plan_and_call_take_views_alike() {
    let ctx = ctx();
    let (b, s, h, d) = (2, 9, 2, 8);
    let mut r = rng("views");
    let x = uniform(&mut r, b * s * 3 * h * d);
    let qkv = Tensor::from_slice(&ctx, &x, &[b, s, 3 * h, d]).unwrap();
    let [q, k, v] = [0, 1, 2].map(|p| qkv.narrow(2, p * h, h).unwrap());
    let q = q.narrow(1, 1, s - 1).unwrap();
    assert!(!k.is_contiguous());
    let dense = |t: &Tensor| t.contiguous().unwrap();
    let (cq, ck, cv) = (dense(&q), dense(&k), dense(&v));
    for variant in [AttentionVariant::Auto, AttentionVariant::Naive] {
        let opts = AttentionOptions::default()
            .layout(Layout::Bshd)
            .causal(Causal::BottomRight)
            .variant(variant);
        let on_views = plan(&q, &k, &v, &opts).unwrap_or_else(|e| panic!("{variant:?}: {e}"));
        let on_copies = plan(&cq, &ck, &cv, &opts).unwrap();
        assert_eq!(
            (on_views.variant, on_views.schedule, on_views.kv_reads),
            (on_copies.variant, on_copies.schedule, on_copies.kv_reads),
            "{variant:?}: {on_views} vs {on_copies}"
        );
        let got = read(&attention(&q, &k, &v, &opts).unwrap().out);
        let want = read(&attention(&cq, &ck, &cv, &opts).unwrap().out);
        assert_eq!(got, want, "{variant:?}: views vs contiguous copies");
    }
    let wide = Tensor::zeros(&ctx, &[1, 2, s - 1, 2 * s], DType::F32).unwrap();
    let bias = wide.narrow(3, 1, s).unwrap();
    let opts = AttentionOptions::default().layout(Layout::Bshd).bias(&bias);
    let e = plan(&q, &k, &v, &opts).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = attention(&q, &k, &v, &opts).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let opts = AttentionOptions::default().layout(Layout::Bshd);
    let big = Tensor::zeros(&ctx, &[b, s - 1, h, 2 * d], DType::F32).unwrap();
    let out = big.narrow(3, 0, d).unwrap();
    let e = attention_into(&q, &k, &v, &opts, &out, None).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("out"),
        "{e}"
    );
}

/// Dtype mismatches are `Error::DType` naming the operand, from the plan
/// and the call alike: k of another dtype, u32 operands, an f16 bias, an
/// f16 LSE or an output of another dtype, mixed `kv_append` operands.
#[test]
fn dtype_mismatches_name_the_operand() {
    let ctx = ctx();
    let z = |s: &[usize], dt| Tensor::zeros(&ctx, s, dt).unwrap();
    let f = |s: &[usize]| z(s, DType::F32);
    let (q, kv) = (f(&[1, 2, 3, 8]), f(&[1, 2, 5, 8]));
    let dtype_of = |e: Error| match e {
        Error::DType { what, .. } => what,
        e => panic!("expected Error::DType, got {e}"),
    };
    let u = z(&[1, 2, 5, 8], DType::U32);
    let o = AttentionOptions::default();
    assert_eq!(dtype_of(plan(&q, &u, &kv, &o).unwrap_err()), "k");
    assert_eq!(dtype_of(attention(&q, &kv, &u, &o).unwrap_err()), "v");
    let uq = z(&[1, 2, 3, 8], DType::U32);
    assert_eq!(dtype_of(attention(&uq, &u, &u, &o).unwrap_err()), "q");
    let out = f(&[1, 2, 3, 8]);
    let lse = z(&[1, 2, 3], DType::U32);
    let e = attention_into(&q, &kv, &kv, &o, &out, Some(&lse)).unwrap_err();
    assert_eq!(dtype_of(e), "lse");
    let out_u = z(&[1, 2, 3, 8], DType::U32);
    assert_eq!(
        dtype_of(attention_into(&q, &kv, &kv, &o, &out_u, None).unwrap_err()),
        "out"
    );
    let bias = z(&[1, 2, 3, 5], DType::U32);
    let ob = AttentionOptions::default().bias(&bias);
    assert_eq!(dtype_of(plan(&q, &kv, &kv, &ob).unwrap_err()), "bias");
    let e = BoolMask::from_words(f(&[1, 1, 3, 1]), 5).unwrap_err();
    assert_eq!(dtype_of(e), "mask words");
    let (kc, kn) = (f(&[1, 4, 2, 8]), z(&[1, 1, 2, 8], DType::U32));
    let e = kv_append(
        &kc,
        &kc.clone(),
        &kn,
        &f(&[1, 1, 2, 8]),
        &[0],
        Layout::Bshd,
        None,
    );
    assert_eq!(dtype_of(e.unwrap_err()), "k_new");
}
