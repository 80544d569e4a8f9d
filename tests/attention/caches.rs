//! KV caches and the inference options: padded caches with per-sequence
//! lengths, every option together and over a grid, windows whose outside
//! tiles are never read, `kv_append`, an empty cache with sinks.

use super::*;

/// A KV cache padded to capacity with per-sequence lengths (chunked prefill,
/// speculative decoding): bottom-right causal masking aligns to each
/// sequence's own length, so the `seq_q` new queries are its last `seq_q`
/// positions. First the reference's `kv_len` path is checked against the
/// reference run on each sequence's unpadded keys alone; then every variant,
/// schedule and K/V source against the reference, for seq_q 1, 2, 7 and 64
/// (GQA, odd capacity, a sequence shorter than seq_q whose first rows see
/// nothing).
#[test]
fn padded_cache_bottom_right_aligns_to_each_length() {
    let (b, hq, hkv, cap, d) = (3, 4, 2, 83, 64);
    for (i, sq) in [1usize, 2, 7, 64].into_iter().enumerate() {
        let kv: Vec<u32> = vec![cap as u32, (sq + 5) as u32, (sq as u32).saturating_sub(1)];
        let mut r = rng(&format!("padded cache sq {sq}"));
        let q = uniform(&mut r, b * hq * sq * d);
        let k = uniform(&mut r, b * hkv * cap * d);
        let v = uniform(&mut r, b * hkv * cap * d);
        let (padded, _) = reference::attention::attention(&reference::attention::AttentionRef {
            q: &q,
            k: &k,
            v: &v,
            dims: [b, hq, hkv, sq, cap, d, d],
            layout: Layout::Bhsd,
            causal: Causal::BottomRight,
            scale: None,
            kv_len: Some(&kv),
            bias: None,
            ..Default::default()
        });
        for bb in 0..b {
            let n = kv[bb] as usize;
            // This sequence's keys without the padding: [1, hkv, n, d].
            let cut = |x: &[f32]| -> Vec<f32> {
                (0..hkv)
                    .flat_map(|h| {
                        let at = (bb * hkv + h) * cap * d;
                        x[at..at + n * d].to_vec()
                    })
                    .collect()
            };
            let qb = &q[bb * hq * sq * d..(bb + 1) * hq * sq * d];
            let (alone, _) = reference::attention::attention(&reference::attention::AttentionRef {
                q: qb,
                k: &cut(&k),
                v: &cut(&v),
                dims: [1, hq, hkv, sq, n, d, d],
                layout: Layout::Bhsd,
                causal: Causal::BottomRight,
                scale: None,
                kv_len: None,
                bias: None,
                ..Default::default()
            });
            let got = &padded[bb * hq * sq * d..(bb + 1) * hq * sq * d];
            check(
                &verify::compare(got, &alone),
                1e-12,
                &format!("reference: padded cache vs sequence {bb} alone, seq_q {sq}"),
            );
        }
        run(&Case {
            flash: &SCHEDS,
            split: &SPLITS,
            auto: i == 0,
            b,
            hq,
            hkv,
            sq,
            sk: cap,
            d,
            dv: d,
            layout: Layout::Bhsd,
            causal: Causal::BottomRight,
            bias: None,
            kv_len: Some(kv),
            dtype: DType::F32,
            lse: true,
            ext: Ext::default(),
        });
    }
}

/// Batch 2 with different kv_len, one of them 0 (every row fully masked),
/// bias broadcast over batch or heads (long tier: its bias kernels at d 64
/// are its own; the fast tier meets the bias in the hard shapes and empty
/// sequences in the padded caches).
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn batch_kv_len_bias_broadcast_and_masked_rows() {
    for (i, bias) in [None, Some([2, 1, 20, 45]), Some([1, 6, 20, 45])]
        .into_iter()
        .enumerate()
    {
        for (j, kv) in [vec![45, 17], vec![0, 30]].into_iter().enumerate() {
            run(&Case {
                flash: rot(2 * i + j + i / 2),
                split: srot(i + j),
                auto: false,
                b: 2,
                hq: 6,
                hkv: 2,
                sq: 20,
                sk: 45,
                d: 64,
                dv: 64,
                layout: Layout::Bhsd,
                causal: Causal::None,
                bias,
                kv_len: Some(kv),
                dtype: DType::F32,
                lse: true,
                ext: Ext::default(),
            });
        }
    }
}

/// Every inference option at once (window with sink tokens, soft cap, ALiBi,
/// learned sinks, a boolean mask, a paged cache, per-sequence lengths) on
/// every kernel, GQA, bottom-right, sizes off every tile; paged equals
/// contiguous.
#[test]
fn inference_options_together_every_kernel() {
    run(&Case {
        flash: &SCHEDS,
        split: &SPLITS,
        auto: true,
        b: 2,
        hq: 4,
        hkv: 2,
        sq: 37,
        sk: 203,
        d: 16,
        dv: 16,
        layout: Layout::Bshd,
        causal: Causal::BottomRight,
        bias: None,
        kv_len: Some(vec![203, 150]),
        dtype: DType::F32,
        lse: true,
        ext: Ext {
            window: Window::left(40),
            sink_tokens: 4,
            softcap: Some(0.5),
            alibi: true,
            sinks: true,
            mask: Some([2, 1, 37, 203]),
            page: Some(16),
            nan_outside: false,
        },
    });
}

/// Keys outside every row's window (past the sink tokens) are NaN: each
/// fused kernel must skip their tiles, for decode (seq_q 1) and a prefill
/// chunk (seq_q 64). (Top-left windows are in the long-tier grid.)
#[test]
fn window_tiles_outside_are_never_read() {
    for (i, sq) in [1, 64].into_iter().enumerate() {
        let (sk, window, causal) = (700, 100, Causal::BottomRight);
        run(&Case {
            flash: &SCHEDS,
            split: if sq == 1 { &SPLITS } else { srot(i) },
            auto: false,
            b: 1,
            hq: 2,
            hkv: 1,
            sq,
            sk,
            d: 16,
            dv: 16,
            layout: Layout::Bhsd,
            causal,
            bias: None,
            kv_len: None,
            dtype: DType::F32,
            lse: true,
            ext: Ext {
                window: Window::left(window),
                sink_tokens: 4,
                nan_outside: true,
                ..Ext::default()
            },
        });
    }
}

/// `kv_append` writes each sequence's new rows at its own length, into a
/// contiguous cache or through a block table into pages, in both layouts and
/// both dtypes, and leaves every other slot as it was; then a decode step on
/// the paged cache matches the contiguous one.
#[test]
fn kv_append_contiguous_and_paged() {
    let ctx = ctx();
    let (b, hkv, d, dv, s_new) = (3, 2, 12, 7, 5);
    let dtypes: &[DType] = if ctx.info().has_f16() {
        &[DType::F32, DType::F16]
    } else {
        &[DType::F32]
    };
    for (&dtype, layout) in dtypes.iter().cycle().zip([Layout::Bshd, Layout::Bhsd]) {
        let case = format!("kv_append {dtype} {layout:?}");
        let mut r = rng(&case);
        let kv_len = [0u32, 17, 35];
        // (outer, rows) of the cache: contiguous [b, 40] or a pool of 20
        // pages of 8 with a shuffled block table of 5 pages a sequence.
        let (page, maxp, npages) = (8, 5, 20);
        let mut ids: Vec<u32> = (0..npages as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, r.random_range(0..=i));
        }
        let table = ids[..b * maxp].to_vec();
        for paged in [false, true] {
            let (outer, rows) = if paged { (npages, page) } else { (b, 40) };
            let at = |o: usize, row: usize, h: usize, w: usize| match layout {
                Layout::Bshd => ((o * rows + row) * hkv + h) * w,
                Layout::Bhsd => ((o * hkv + h) * rows + row) * w,
            };
            let nat = |bb: usize, t: usize, h: usize, w: usize| match layout {
                Layout::Bshd => ((bb * s_new + t) * hkv + h) * w,
                Layout::Bhsd => ((bb * hkv + h) * s_new + t) * w,
            };
            let cshape = |w| shape(layout, outer, hkv, rows, w);
            let (kc, mut want_k) = upload_to(
                &ctx,
                &uniform(&mut r, outer * rows * hkv * d),
                &cshape(d),
                dtype,
            );
            let (vc, mut want_v) = upload_to(
                &ctx,
                &uniform(&mut r, outer * rows * hkv * dv),
                &cshape(dv),
                dtype,
            );
            let (kn, nk) = upload_to(
                &ctx,
                &uniform(&mut r, b * s_new * hkv * d),
                &shape(layout, b, hkv, s_new, d),
                dtype,
            );
            let (vn, nv) = upload_to(
                &ctx,
                &uniform(&mut r, b * s_new * hkv * dv),
                &shape(layout, b, hkv, s_new, dv),
                dtype,
            );
            for bb in 0..b {
                for t in 0..s_new {
                    let pos = kv_len[bb] as usize + t;
                    let (o, row) = if paged {
                        (table[bb * maxp + pos / page] as usize, pos % page)
                    } else {
                        (bb, pos)
                    };
                    for h in 0..hkv {
                        want_k[at(o, row, h, d)..][..d]
                            .copy_from_slice(&nk[nat(bb, t, h, d)..][..d]);
                        want_v[at(o, row, h, dv)..][..dv]
                            .copy_from_slice(&nv[nat(bb, t, h, dv)..][..dv]);
                    }
                }
            }
            let pk = paged.then_some(PagedKv {
                block_table: &table,
                max_pages: maxp,
            });
            kv_append(&kc, &vc, &kn, &vn, &kv_len, layout, pk)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(read(&kc), want_k, "{case} paged {paged}: K cache");
            assert_eq!(read(&vc), want_v, "{case} paged {paged}: V cache");
            // Past a sequence's capacity, or a page past the pool: refused.
            let full = [0u32, 17, (maxp * page) as u32 - 4];
            let e = kv_append(
                &kc,
                &vc,
                &kn,
                &vn,
                if paged { &full } else { &[0, 36, 0] },
                layout,
                pk,
            )
            .unwrap_err();
            assert!(
                matches!(e, Error::Shape { .. }) && e.to_string().contains("capacity"),
                "{e}"
            );
        }
        let mut bad = table.clone();
        bad[3] = npages as u32;
        let pool = Tensor::zeros(&ctx, &shape(layout, npages, hkv, page, d), dtype).unwrap();
        let poolv = Tensor::zeros(&ctx, &shape(layout, npages, hkv, page, dv), dtype).unwrap();
        let kn = Tensor::zeros(&ctx, &shape(layout, b, hkv, 1, d), dtype).unwrap();
        let vn = Tensor::zeros(&ctx, &shape(layout, b, hkv, 1, dv), dtype).unwrap();
        let pk = PagedKv {
            block_table: &bad,
            max_pages: maxp,
        };
        let e = kv_append(&pool, &poolv, &kn, &vn, &kv_len, layout, Some(pk)).unwrap_err();
        assert!(e.to_string().contains("block_table[3]"), "{e}");
    }
}

/// The inference options over the shapes that hurt: each option alone and in
/// combinations (window + soft cap + sinks + paged among them), both causal
/// conventions and none, both layouts, GQA and MQA, kv_len on padded caches
/// with seq_q 1, 2, 7, 64, seq_q > seq_k, head dims 1 to 256, f32 and f16,
/// pages of 1 to 256 tokens. The options, schedules and sources rotate
/// across the cases: each new (kernel, head dims, options) set compiles for
/// seconds on a software adapter, so the grid keeps to few head-dim classes.
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn inference_options_grid() {
    let f16 = ctx().info().has_f16();
    // (seq_q, seq_k, d, d_v, option bits): window, sink tokens, soft cap,
    // ALiBi, sinks, mask, paged, bias.
    let cases = [
        (1, 239, 16, 16, 0b0100_0101u32),
        (2, 203, 16, 16, 0b0101_0011),
        (7, 127, 16, 16, 0b0010_1001),
        (64, 300, 16, 16, 0b0100_0110),
        (127, 59, 16, 16, 0b1001_0100),
        (59, 1009, 16, 16, 0b0110_1111),
        (1, 1, 16, 16, 0b0111_1111),
        (3, 64, 1, 1, 0b0101_1101),
        (33, 70, 59, 37, 0b1111_1111),
        (1, 700, 128, 128, 0b0101_0111),
        (20, 45, 256, 256, 0b0011_1001),
        (64, 64, 16, 16, 0b1000_0001),
    ];
    let heads = [(6, 2), (4, 4), (6, 1)];
    let causal = [Causal::BottomRight, Causal::TopLeft, Causal::None];
    let pages = [16, 1, 256, 7];
    for (j, &(sq, sk, d, dv, opt)) in cases.iter().enumerate() {
        let (hq, hkv) = heads[j % heads.len()];
        let causal = causal[j % causal.len()];
        let b = 1 + j % 2;
        let dtype = if f16 && j % 4 == 3 {
            DType::F16
        } else {
            DType::F32
        };
        let on = |bit: u32| opt & (1 << bit) != 0;
        let window = match (on(0), causal, j % 3) {
            (false, ..) => Window::default(),
            (true, Causal::None, _) => Window::new(5 + j % 20, 3),
            (true, _, 0) => Window::left(j % 17),
            (true, _, _) => Window {
                left: Some(30),
                right: None,
            },
        };
        let kv_len = (j % 3 != 1).then(|| (0..b).map(|bb| (sk - bb * sk / 3) as u32).collect());
        let c = Case {
            flash: rot(j),
            split: srot(j),
            auto: j % 5 == 0,
            b,
            hq,
            hkv,
            sq,
            sk,
            d,
            dv,
            layout: if j % 2 == 0 {
                Layout::Bshd
            } else {
                Layout::Bhsd
            },
            causal,
            bias: on(7).then_some([b, 1, sq, sk]),
            kv_len,
            dtype,
            lse: true,
            ext: Ext {
                window,
                sink_tokens: if on(1) { 1 + j % 4 } else { 0 },
                softcap: on(2).then_some(0.3 + (j % 3) as f32),
                alibi: on(3),
                sinks: on(4),
                mask: on(5).then_some(if j % 2 == 0 {
                    [b, 1, sq, sk]
                } else {
                    [1, hq, sq, sk]
                }),
                page: on(6).then_some(pages[j % pages.len()]),
                nan_outside: false,
            },
        };
        let t = std::time::Instant::now();
        run(&c);
        eprintln!("case {j} ({:.1} s): {c:?}", t.elapsed().as_secs_f64());
    }
}

/// With no keys every row is fully masked: zeros, and an LSE of the head's
/// sink logit when there are learned sinks (−∞ without), as the kernels give
/// for a fully masked row.

#[test]
fn empty_cache_with_sinks_gives_the_sink_lse() {
    let ctx = ctx();
    let q = Tensor::from_slice(&ctx, &[0.5f32; 2 * 3 * 3 * 4], &[2, 3, 3, 4]).unwrap();
    let kv = Tensor::zeros(&ctx, &[2, 3, 0, 4], DType::F32).unwrap();
    let sinks = [0.25f32, -1.0, 3.0];
    for with in [false, true] {
        let mut o = AttentionOptions::default().return_lse(true);
        if with {
            o = o.sinks(&sinks);
        }
        let r = attention(&q, &kv, &kv, &o).unwrap();
        assert_eq!(r.out.to_vec::<f32>().unwrap(), vec![0.0; 72]);
        let want: Vec<f32> = (0..18)
            .map(|i| {
                if with {
                    sinks[i / 3 % 3]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        assert_eq!(
            r.lse.unwrap().to_vec::<f32>().unwrap(),
            want,
            "sinks {with}"
        );
    }
}

/// A NaN score propagates with a soft cap as without one, on every kernel
/// (the cap's clamp used to turn a NaN score into the cap, so that every
/// row came out finite): each kernel's output rows are NaN with the cap
/// exactly where they are without it. A NaN in q (head 0, row 2) makes the
/// reference's row NaN, a NaN in a key every row sees (head 1, key 0) every
/// row of its head; every kernel gives NaN for the same rows (the ones that
/// merge partial softmaxes — key-split, blocks, split-KV — included: a
/// partial whose sum is NaN joins the merge) and its LSE is NaN there, and
/// every kernel matches the reference on the rows no NaN reaches.
#[test]
fn nan_scores_propagate_with_and_without_a_soft_cap() {
    let ctx = ctx();
    let (h, sq, sk, d) = (2, 5, 40, 16);
    let mut r = rng("nan scores");
    let mut q = uniform(&mut r, h * sq * d);
    let mut k = uniform(&mut r, h * sk * d);
    let v = uniform(&mut r, h * sk * d);
    q[2 * d + 5] = f32::NAN;
    k[sk * d + 3] = f32::NAN;
    let nan_row = |row: usize| row / sq == 1 || row % sq == 2;
    let t = |x: &[f32], s: usize| Tensor::from_slice(&ctx, x, &[1, h, s, d]).unwrap();
    let (gq, gk, gv) = (t(&q, sq), t(&k, sk), t(&v, sk));
    let out = Tensor::zeros(&ctx, &[1, h, sq, d], DType::F32).unwrap();
    let lse = Tensor::zeros(&ctx, &[1, h, sq], DType::F32).unwrap();
    let runs = [
        (AttentionVariant::Naive, None, None),
        (AttentionVariant::SplitKv, None, Some(KvReads::Buffers)),
        (AttentionVariant::SplitKv, None, Some(KvReads::Texels)),
    ]
    .into_iter()
    .chain(FlashSchedule::ALL.map(|s| (AttentionVariant::Flash, Some(s), None)));
    for (variant, schedule, reads) in runs {
        let mut nan_rows = Vec::new();
        for softcap in [None, Some(0.5)] {
            let case = format!("{variant:?} {schedule:?} {reads:?} softcap {softcap:?}");
            let (want, want_lse) =
                reference::attention::attention(&reference::attention::AttentionRef {
                    q: &q,
                    k: &k,
                    v: &v,
                    dims: [1, h, h, sq, sk, d, d],
                    softcap,
                    ..Default::default()
                });
            for (row, w) in want.chunks(d).enumerate() {
                let nan = nan_row(row);
                assert_eq!(w.iter().all(|x| x.is_nan()), nan, "reference row {row}");
                assert_eq!(want_lse[row].is_nan(), nan, "reference LSE of row {row}");
            }
            let mut opts = AttentionOptions::default().variant(variant);
            opts.flash_schedule = schedule;
            opts.split_kv_reads = reads;
            opts.softcap = softcap;
            out.poison().unwrap();
            match attention_into(&gq, &gk, &gv, &opts, &out, Some(&lse)) {
                Ok(()) => {}
                // The blocks schedule takes no soft cap.
                Err(Error::Unsupported { .. }) if softcap.is_some() => continue,
                Err(e) => panic!("{case}: {e}"),
            }
            let bound = Scores {
                d,
                keys: sk,
                qk: 1.0,
                v: 1.0,
                extra: 0.0,
                softcap,
                f16: false,
            }
            .bounds();
            let got = read(&out);
            let got_lse = read(&lse);
            nan_rows.push(
                got.chunks(d)
                    .map(|r| r.iter().any(|x| x.is_nan()))
                    .collect::<Vec<_>>(),
            );
            check_elements(&got, &want, bound.out, &case);
            for row in (0..h * sq).filter(|&row| nan_row(row)) {
                assert!(got_lse[row].is_nan(), "{case}: LSE of NaN row {row}");
            }
            for row in (0..h * sq).filter(|&row| !nan_row(row)) {
                let at = row * d..(row + 1) * d;
                let case = format!("{case} row {row}");
                check_elements(&got[at.clone()], &want[at], bound.out, &case);
                let l = (&got_lse[row..row + 1], &want_lse[row..row + 1]);
                check_elements(l.0, l.1, bound.lse, &format!("{case} LSE"));
            }
        }
        if let [plain, capped] = &nan_rows[..] {
            assert_eq!(
                plain, capped,
                "{variant:?} {schedule:?} {reads:?}: NaN rows without and with a soft cap"
            );
        }
    }
}
