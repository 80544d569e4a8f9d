//! Attention against the CPU reference: the shape grid, GQA/MQA, both
//! causal conventions, both layouts, bias, kv_len, LSE, f32 and f16, fully
//! masked rows, random small shapes, and a long sequence.
//!
//! Every case runs Naive and Auto, Flash with the schedules it names and
//! SplitKv with the K/V sources it names: the cases rotate through them (each
//! schedule and source meets many shapes and options without a full cross
//! product, which would take this machine's software adapter far past the CI
//! budget), and `every_schedule_on_hard_shapes` runs them all on the same
//! inputs.

mod common;

use common::*;
use flashdot::ops::attention::*;
use flashdot::{reference, verify, Context, ContextOptions, DType, Error, Tensor};
use rand::Rng;

#[derive(Debug, Clone)]
struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
    layout: Layout,
    causal: Causal,
    bias: Option<[usize; 4]>,
    kv_len: Option<Vec<u32>>,
    dtype: DType,
    lse: bool,
    /// Flash schedules to run.
    flash: &'static [FlashSchedule],
    /// Split-KV sources to run.
    split: &'static [KvReads],
    /// Whether Auto runs too (it repeats another variant's kernel, and a
    /// software adapter compiles each new kernel for seconds).
    auto: bool,
    /// The inference options.
    ext: Ext,
}

/// Inference options of a case (random slopes, sinks and mask drawn from the
/// case's seed).
#[derive(Debug, Clone, Default)]
struct Ext {
    window: Window,
    sink_tokens: usize,
    softcap: Option<f32>,
    alibi: bool,
    sinks: bool,
    /// Boolean mask of this shape (about a quarter of its entries false).
    mask: Option<[usize; 4]>,
    /// Paged K/V with pages of this many tokens: each variant also runs on
    /// the contiguous cache and the two must agree to 1e-6.
    page: Option<usize>,
    /// K and V are NaN from key 128 (past the sink tokens' tile in every
    /// schedule: tiles are up to 128 keys) to the first query's window
    /// start: a kernel that loads a key no row can see, rather than skipping
    /// its tile, outputs NaN (0·NaN is NaN). The naive kernel, which
    /// multiplies all of K and V, is left out.
    nan_outside: bool,
}

/// `c`'s K or V (`x`, `[b, hkv, sk, w]` in `c.layout`) as a page pool in
/// `c.layout`, pages assigned by `table` (`[b, max_pages]`); slots no key
/// fills are NaN, so a kernel that reads one fails the comparison.
fn to_pool(c: &Case, x: &[f32], w: usize, page: usize, table: &[u32], npages: usize) -> Vec<f32> {
    let maxp = c.sk.div_ceil(page);
    let mut pool = vec![f32::NAN; npages * page * c.hkv * w];
    for b in 0..c.b {
        for h in 0..c.hkv {
            for j in 0..c.sk {
                let pg = table[b * maxp + j / page] as usize;
                let src = match c.layout {
                    Layout::Bhsd => ((b * c.hkv + h) * c.sk + j) * w,
                    Layout::Bshd => ((b * c.sk + j) * c.hkv + h) * w,
                };
                let dst = match c.layout {
                    Layout::Bhsd => ((pg * c.hkv + h) * page + j % page) * w,
                    Layout::Bshd => ((pg * page + j % page) * c.hkv + h) * w,
                };
                pool[dst..dst + w].copy_from_slice(&x[src..src + w]);
            }
        }
    }
    pool
}

/// `x` (`[.., seq_q, sk]` rows) widened to `[.., seq_q, to]` with `fill`.
fn widen<T: Copy>(x: &[T], sk: usize, to: usize, fill: T) -> Vec<T> {
    if sk == 0 {
        return vec![fill; 0];
    }
    x.chunks(sk)
        .flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(fill, to - sk)))
        .collect()
}

static SCHEDS: [FlashSchedule; 4] = FlashSchedule::ALL;
static SPLITS: [KvReads; 2] = KvReads::ALL;

/// The `i`-th split-KV source of the rotation, as a one-element list.
fn srot(i: usize) -> &'static [KvReads] {
    let j = i % SPLITS.len();
    &SPLITS[j..j + 1]
}

/// The `i`-th schedule of the rotation, as a one-element list.
fn rot(i: usize) -> &'static [FlashSchedule] {
    let j = i % SCHEDS.len();
    &SCHEDS[j..j + 1]
}

fn shape(layout: Layout, b: usize, h: usize, s: usize, d: usize) -> Vec<usize> {
    match layout {
        Layout::Bhsd => vec![b, h, s, d],
        Layout::Bshd => vec![b, s, h, d],
    }
}

/// How a variant runs: its default, a flash schedule, or a split-KV source.
#[derive(Debug, Clone, Copy)]
enum How {
    Default,
    Sched(FlashSchedule),
    Reads(KvReads),
}

/// Runs every variant on `c`; returns the rel L2 error per variant.
fn run(c: &Case) -> Vec<(AttentionVariant, f64)> {
    run_on(&ctx(), c)
}

/// [`run`] on a given context.
fn run_on(ctx: &Context, c: &Case) -> Vec<(AttentionVariant, f64)> {
    let name = format!("{c:?}");
    let mut rng = rng(&name);
    let q = uniform(&mut rng, c.b * c.hq * c.sq * c.d);
    let mut k = uniform(&mut rng, c.b * c.hkv * c.sk * c.d);
    let mut v = uniform(&mut rng, c.b * c.hkv * c.sk * c.dv);
    if c.ext.nan_outside {
        for b in 0..c.b {
            let kvend = c
                .kv_len
                .as_ref()
                .map_or(c.sk, |l| (l[b] as usize).min(c.sk));
            let diag = match c.causal {
                Causal::TopLeft => 0,
                _ => kvend as i64 - c.sq as i64,
            };
            let start = (diag - c.ext.window.left.unwrap() as i64).max(0) as usize;
            for j in c.ext.sink_tokens.max(128)..start {
                for h in 0..c.hkv {
                    let at = |w: usize| match c.layout {
                        Layout::Bhsd => ((b * c.hkv + h) * c.sk + j) * w,
                        Layout::Bshd => ((b * c.sk + j) * c.hkv + h) * w,
                    };
                    k[at(c.d)..at(c.d) + c.d].fill(f32::NAN);
                    v[at(c.dv)..at(c.dv) + c.dv].fill(f32::NAN);
                }
            }
        }
    }
    let (gq, q) = upload_to(ctx, &q, &shape(c.layout, c.b, c.hq, c.sq, c.d), c.dtype);
    let (gk, k) = upload_to(ctx, &k, &shape(c.layout, c.b, c.hkv, c.sk, c.d), c.dtype);
    let (gv, v) = upload_to(ctx, &v, &shape(c.layout, c.b, c.hkv, c.sk, c.dv), c.dtype);
    let bias_vals = c.bias.map(|s| uniform(&mut rng, s.iter().product()));
    let x = &c.ext;
    // Paged: a pool of every sequence's pages in shuffled order plus a spare,
    // and the logical seq_k (whole pages) the bias and mask must span.
    let paged = x.page.map(|page| {
        let maxp = c.sk.div_ceil(page);
        let npages = c.b * maxp + 1;
        let mut ids: Vec<u32> = (0..npages as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.random_range(0..=i));
        }
        let table = ids[..c.b * maxp].to_vec();
        let pk = to_pool(c, &k, c.d, page, &table, npages);
        let pv = to_pool(c, &v, c.dv, page, &table, npages);
        let pshape = |w| match c.layout {
            Layout::Bhsd => vec![npages, c.hkv, page, w],
            Layout::Bshd => vec![npages, page, c.hkv, w],
        };
        let gk = upload_to(ctx, &pk, &pshape(c.d), c.dtype).0;
        let gv = upload_to(ctx, &pv, &pshape(c.dv), c.dtype).0;
        (table, maxp, maxp * page, gk, gv)
    });
    let sk_log = paged.as_ref().map_or(c.sk, |p| p.2);
    let widen_shape = |s: [usize; 4]| [s[0], s[1], s[2], sk_log];
    let gbias_c = c
        .bias
        .map(|s| Tensor::from_slice(ctx, bias_vals.as_ref().unwrap(), &s).unwrap());
    let gbias = c.bias.map(|s| {
        let vals = widen(bias_vals.as_ref().unwrap(), c.sk, sk_log, 0.0);
        Tensor::from_slice(ctx, &vals, &widen_shape(s)).unwrap()
    });
    let slopes: Vec<f32> = (0..c.hq)
        .map(|h| 2f32.powf(-8.0 * (h + 1) as f32 / c.hq as f32))
        .collect();
    let sinks: Vec<f32> = uniform(&mut rng, c.hq).iter().map(|s| 2.0 * s).collect();
    let mask_vals: Option<Vec<bool>> = x.mask.map(|s| {
        (0..s.iter().product())
            .map(|_| rng.random_bool(0.75))
            .collect()
    });
    let gmask_c = x
        .mask
        .map(|s| BoolMask::from_bools(ctx, s, mask_vals.as_ref().unwrap()).unwrap());
    let gmask = x.mask.map(|s| {
        let vals = widen(mask_vals.as_ref().unwrap(), c.sk, sk_log, false);
        BoolMask::from_bools(ctx, widen_shape(s), &vals).unwrap()
    });
    let kv_len_paged: Option<Vec<u32>> = paged
        .as_ref()
        .map(|_| c.kv_len.clone().unwrap_or(vec![c.sk as u32; c.b]));
    let (want, want_lse) = reference::attention::attention(&reference::attention::AttentionRef {
        q: &q,
        k: &k,
        v: &v,
        dims: [c.b, c.hq, c.hkv, c.sq, c.sk, c.d, c.dv],
        layout: c.layout,
        causal: c.causal,
        scale: None,
        kv_len: c.kv_len.as_deref(),
        bias: c.bias.map(|s| (&bias_vals.as_ref().unwrap()[..], s)),
        window: (x.window.left, x.window.right),
        sink_tokens: x.sink_tokens,
        softcap: x.softcap,
        alibi: x.alibi.then_some(&slopes[..]),
        sinks: x.sinks.then_some(&sinks[..]),
        mask: x.mask.map(|s| (&mask_vals.as_ref().unwrap()[..], s)),
    });
    let out = Tensor::zeros(ctx, &shape(c.layout, c.b, c.hq, c.sq, c.dv), c.dtype).unwrap();
    let lse = Tensor::zeros(ctx, &[c.b, c.hq, c.sq], DType::F32).unwrap();
    let tol = if c.dtype == DType::F16 { 5e-3 } else { 1e-5 };
    let mut errs = Vec::new();
    let runs = AttentionVariant::ALL
        .into_iter()
        .filter(|&v| c.auto || v != AttentionVariant::Auto)
        .filter(|&v| !c.ext.nan_outside || v != AttentionVariant::Naive)
        .flat_map(|v| {
            let how: Vec<How> = match v {
                AttentionVariant::Flash => c.flash.iter().map(|&s| How::Sched(s)).collect(),
                AttentionVariant::SplitKv => c.split.iter().map(|&s| How::Reads(s)).collect(),
                _ => vec![How::Default],
            };
            how.into_iter().map(move |h| (v, h))
        });
    for (var, how) in runs {
        let mut opts = AttentionOptions::default()
            .layout(c.layout)
            .causal(c.causal)
            .variant(var)
            .return_lse(c.lse);
        opts.flash_schedule = match how {
            How::Sched(s) => Some(s),
            _ => None,
        };
        opts.split_kv_reads = match how {
            How::Reads(r) => Some(r),
            _ => None,
        };
        opts.kv_len = c.kv_len.as_deref();
        opts.window = x.window;
        opts.sink_tokens = x.sink_tokens;
        opts.softcap = x.softcap;
        opts.alibi_slopes = x.alibi.then_some(&slopes[..]);
        opts.sinks = x.sinks.then_some(&sinks[..]);
        opts.bias = gbias_c.as_ref();
        opts.mask = gmask_c.as_ref();
        // Paged cases run the contiguous cache first and compare against it.
        let mut contiguous = None;
        if let Some((table, maxp, ..)) = &paged {
            if var != AttentionVariant::Naive {
                out.poison().unwrap();
                // (A schedule that refuses the options is checked below.)
                contiguous = match attention_into(&gq, &gk, &gv, &opts, &out, None) {
                    Ok(()) => Some(read(&out)),
                    Err(Error::Unsupported { .. }) => None,
                    Err(e) => panic!("{name} {var:?} {how:?} contiguous: {e}"),
                };
            }
            opts.paged = Some(PagedKv {
                block_table: table,
                max_pages: *maxp,
            });
            opts.kv_len = kv_len_paged.as_deref();
            opts.bias = gbias.as_ref();
            opts.mask = gmask.as_ref();
        }
        let (gk, gv) = paged.as_ref().map_or((&gk, &gv), |p| (&p.3, &p.4));
        out.poison().unwrap();
        lse.poison().unwrap();
        let case = format!("{name} {var:?} {how:?}");
        let run = attention_into(&gq, gk, gv, &opts, &out, c.lse.then_some(&lse));
        match plan(&gq, gk, gv, &opts) {
            // A forced schedule or source that cannot serve the shape is
            // refused, by the plan and by the call alike, never substituted;
            // so is the naive kernel for a paged cache.
            Err(Error::Unsupported { .. })
                if !matches!(how, How::Default)
                    || (paged.is_some() && var == AttentionVariant::Naive) =>
            {
                let e = run.expect_err(&case);
                assert!(matches!(e, Error::Unsupported { .. }), "{case}: {e}");
                continue;
            }
            Err(e) => panic!("{case}: plan: {e}"),
            Ok(p) => {
                match how {
                    How::Sched(s) => assert_eq!(p.schedule, Some(s), "{case}: {p}"),
                    How::Reads(r) => assert_eq!(p.kv_reads, Some(r), "{case}: {p}"),
                    How::Default => {}
                }
                run.unwrap_or_else(|e| panic!("{case}: {e}"));
            }
        }
        let got = read(&out);
        let rep = verify::compare(&got, &want);
        check(&rep, tol, &case);
        if let Some(cont) = &contiguous {
            let cont: Vec<f64> = cont.iter().map(|&x| x as f64).collect();
            check(
                &verify::compare(&got, &cont),
                1e-6,
                &format!("{case} paged vs contiguous"),
            );
        }
        // A row the reference leaves at exact zeros (every key masked) is
        // exact zeros.
        for (r, (g, w)) in got
            .chunks(c.dv.max(1))
            .zip(want.chunks(c.dv.max(1)))
            .enumerate()
        {
            if w.iter().all(|&x| x == 0.0) {
                assert!(
                    g.iter().all(|&x| x == 0.0),
                    "{case}: fully masked row {r} is {g:?}"
                );
            }
        }
        if c.lse {
            let rep = verify::compare(&lse.to_vec::<f32>().unwrap(), &want_lse);
            check(&rep, tol, &format!("{case} lse"));
        }
        errs.push((var, rep.rel_l2));
    }
    errs
}

/// The (seq_q, seq_k) grid; the other options rotate across it so that
/// each appears several times without a full cross product. In two tests (even
/// and odd positions) that run in parallel: the grid is the suite's long pole.
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn grid_f32_even() {
    grid_f32(0);
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn grid_f32_odd() {
    grid_f32(1);
}

fn grid_f32(parity: usize) {
    let seqs = [
        (1, 1),
        (1, 239),
        (3, 799),
        (113, 203),
        (128, 217),
        (108, 256),
        (256, 512),
        (512, 256),
        (1023, 1024),
        (1024, 1023),
    ];
    let dims = [32, 59, 64, 80, 111, 128, 256];
    let heads = [(9, 9), (9, 3), (9, 1)];
    let causal = [Causal::None, Causal::TopLeft, Causal::BottomRight];
    for (i, &(sq, sk)) in seqs.iter().enumerate() {
        if i % 2 != parity {
            continue;
        }
        let d = dims[i % dims.len()];
        // Long sequences keep the CPU reference affordable with fewer heads.
        let (hq, hkv) = if sq * sk > 200_000 {
            (3, [3, 1, 1][i % 3])
        } else {
            heads[i % 3]
        };
        let c = Case {
            b: 1,
            hq,
            hkv,
            sq,
            sk,
            d,
            dv: if i == 4 { 48 } else { d },
            layout: if i % 2 == 0 {
                Layout::Bhsd
            } else {
                Layout::Bshd
            },
            causal: causal[i % 3],
            bias: (i % 4 == 1).then_some([1, hq, sq, sk]),
            kv_len: None,
            dtype: DType::F32,
            lse: i % 2 == 1,
            flash: rot(i),
            split: srot(i),
            // Auto where it repeats a kernel the case compiles anyway (Rows for
            // long queries, SplitKv for short): both of its branches run without
            // new compiles.
            auto: i % 4 == 3 || sq < 64,
            ext: Ext::default(),
        };
        let errs = run(&c);
        let naive = errs
            .iter()
            .find(|e| e.0 == AttentionVariant::Naive)
            .unwrap()
            .1;
        for flash in errs.iter().filter(|e| e.0 == AttentionVariant::Flash) {
            assert!(
                flash.1 <= 2.0 * naive,
                "{c:?}: flash error {:.3e} > 2 x naive {naive:.3e} (FLASHDOT_SEED={})",
                flash.1,
                seed()
            );
        }
    }
}

/// The smallest and the largest head dim with every schedule and split-KV
/// source, under both causal conventions, in both layouts (d = 1 in the fast
/// tier; d = 256, whose kernels take most of a minute to compile on a
/// software adapter, in the long tier).
fn extreme_head_dims(dims: &[usize]) {
    for (i, &d) in dims.iter().enumerate() {
        for causal in [Causal::TopLeft, Causal::BottomRight] {
            run(&Case {
                flash: &SCHEDS,
                split: &SPLITS,
                auto: false,
                b: 1,
                hq: 2,
                hkv: 1,
                sq: 37,
                sk: 70,
                d,
                dv: d,
                layout: if i == 0 { Layout::Bshd } else { Layout::Bhsd },
                causal,
                bias: None,
                kv_len: None,
                dtype: DType::F32,
                lse: true,
                ext: Ext::default(),
            });
        }
    }
}

#[test]
fn smallest_head_dim_every_schedule() {
    extreme_head_dims(&[1]);
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn largest_head_dim_every_schedule() {
    extreme_head_dims(&[1, 256]);
}

/// Every head dim under both causal conventions (run-time options, so both
/// reuse the kernels compiled for the dim; the schedule and split-KV source
/// rotate over the dims, so each meets both conventions).
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn every_head_dim_both_causal_and_layouts() {
    for (i, d) in [32, 59, 64, 80, 111, 128, 256].into_iter().enumerate() {
        for causal in [Causal::TopLeft, Causal::BottomRight] {
            run(&Case {
                flash: rot(i + i / 2),
                split: srot(i),
                auto: false,
                b: 1,
                hq: 2,
                hkv: 1,
                sq: 37,
                sk: 70,
                d,
                dv: d,
                layout: if i % 2 == 0 {
                    Layout::Bshd
                } else {
                    Layout::Bhsd
                },
                causal,
                bias: None,
                kv_len: None,
                dtype: DType::F32,
                lse: true,
                ext: Ext::default(),
            });
        }
    }
}

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

/// seq_q > seq_k bottom-right: the first rows see no key at all (exact zeros).
#[test]
fn seq_q_past_seq_k_first_rows_see_nothing() {
    run(&Case {
        flash: &SCHEDS,
        split: &SPLITS,
        auto: false,
        b: 1,
        hq: 1,
        hkv: 1,
        sq: 50,
        sk: 20,
        d: 64,
        dv: 64,
        layout: Layout::Bhsd,
        causal: Causal::BottomRight,
        bias: None,
        kv_len: None,
        dtype: DType::F32,
        lse: true,
        ext: Ext::default(),
    });
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

#[test]
fn f16_inputs() {
    f16_cases(&[(113, 203, 64, Causal::None, Layout::Bhsd)]);
}

/// The other two schedules with f16, at an odd head dim (long tier: each
/// head dim compiles its own kernels).
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn f16_inputs_odd_head_dim() {
    f16_cases(&[
        (113, 203, 64, Causal::None, Layout::Bhsd),
        (64, 64, 59, Causal::TopLeft, Layout::Bshd),
    ]);
}

/// A decode-shaped f16 case with a large head dim.
#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn f16_decode_large_head_dim() {
    f16_cases(&[(1, 700, 128, Causal::BottomRight, Layout::Bshd)]);
}

fn f16_cases(cases: &[(usize, usize, usize, Causal, Layout)]) {
    if !ctx().info().has_f16() {
        return f16_refused(&ctx());
    }
    for (i, &(sq, sk, d, causal, layout)) in cases.iter().enumerate() {
        // Two schedules per case: every schedule meets f16.
        let j = (2 * i) % SCHEDS.len();
        run(&Case {
            flash: &SCHEDS[j..j + 2],
            split: srot(i),
            auto: i == 0,
            b: 1,
            hq: 4,
            hkv: 2,
            sq,
            sk,
            d,
            dv: d,
            layout,
            causal,
            bias: None,
            kv_len: None,
            dtype: DType::F16,
            lse: true,
            ext: Ext::default(),
        });
    }
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn random_small_shapes() {
    let mut r = rng("random small shapes");
    // Each new head-dim pair compiles new pipelines (seconds on a software
    // adapter), so the dims are drawn from 1..=16 (four vec4 classes; the
    // fixed tests cover the large and odd head dims and d_v in another class).
    for i in 0..8 {
        let hkv = r.random_range(1..4);
        let d = r.random_range(1..17);
        let c = Case {
            flash: rot(i),
            split: srot(i),
            auto: false,
            b: r.random_range(1..3),
            hq: hkv * r.random_range(1..4),
            hkv,
            sq: r.random_range(1..40),
            sk: r.random_range(1..90),
            d,
            // d_v drawn in the vec4 class of d: the kernels are compiled per
            // class pair, seconds each on a software adapter.
            dv: (d - 1) / 4 * 4 + r.random_range(1..5),
            layout: if r.random_bool(0.5) {
                Layout::Bhsd
            } else {
                Layout::Bshd
            },
            causal: [Causal::None, Causal::TopLeft, Causal::BottomRight][r.random_range(0..3)],
            bias: None,
            kv_len: None,
            dtype: DType::F32,
            lse: r.random_bool(0.5),
            ext: Ext::default(),
        };
        let c = Case {
            bias: r.random_bool(0.3).then_some([c.b, c.hq, c.sq, c.sk]),
            kv_len: r
                .random_bool(0.3)
                .then(|| (0..c.b).map(|_| r.random_range(0..=c.sk as u32)).collect()),
            ..c
        };
        run(&c);
    }
}

/// Every schedule on the same odd inputs: sizes off every tile, GQA, bias,
/// LSE, both causal conventions with seq_q < seq_k and seq_q > seq_k, kv_len,
/// d ≠ d_v.
#[test]
fn every_schedule_on_hard_shapes() {
    run(&Case {
        flash: &SCHEDS,
        split: &SPLITS,
        auto: true,
        ..hard_bshd_case()
    });
    run(&Case {
        b: 2,
        hq: 3,
        hkv: 1,
        sq: 127,
        sk: 59,
        d: 64,
        dv: 64,
        layout: Layout::Bhsd,
        causal: Causal::TopLeft,
        bias: None,
        kv_len: Some(vec![59, 20]),
        dtype: DType::F32,
        lse: true,
        flash: &SCHEDS,
        split: &SPLITS,
        auto: false,
        ext: Ext::default(),
    });
}

/// The rows schedule without subgroups (each lane fetches every K/V texel
/// itself), on a hard shape: the default context uses subgroups where the
/// adapter has them.
#[test]
fn rows_without_subgroups() {
    run_on(
        &ctx_without_subgroups(),
        &Case {
            flash: &[FlashSchedule::Rows],
            split: &[],
            auto: false,
            ..hard_bshd_case()
        },
    );
}

/// GQA 6:2 with seq_q < seq_k, odd head dims d ≠ d_v, bottom-right causal,
/// a per-head bias and the LSE, in the [b, s, h, d] layout.
fn hard_bshd_case() -> Case {
    Case {
        b: 1,
        hq: 6,
        hkv: 2,
        sq: 59,
        sk: 127,
        d: 59,
        dv: 37,
        layout: Layout::Bshd,
        causal: Causal::BottomRight,
        bias: Some([1, 6, 59, 127]),
        kv_len: None,
        dtype: DType::F32,
        lse: true,
        flash: &[],
        split: &[],
        auto: false,
        ext: Ext::default(),
    }
}

#[test]
#[ignore = "long tier: cargo test --release -- --ignored"]
fn long_sequence_flash_runs_naive_refuses() {
    let ctx = ctx();
    let (h, s, d) = (8, 16384, 64);
    let mut rng = rng("long");
    let q = uniform(&mut rng, h * s * d);
    let k = uniform(&mut rng, h * s * d);
    let v = uniform(&mut rng, h * s * d);
    let t = |x: &[f32]| Tensor::from_slice(&ctx, x, &[1, h, s, d]).unwrap();
    let (gq, gk, gv) = (t(&q), t(&k), t(&v));
    let naive = AttentionOptions::default().variant(AttentionVariant::Naive);
    let e = attention(&gq, &gk, &gv, &naive).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let opts = AttentionOptions::default()
        .variant(AttentionVariant::Flash)
        .causal(Causal::TopLeft);
    let out = attention(&gq, &gk, &gv, &opts)
        .unwrap()
        .out
        .to_vec::<f32>()
        .unwrap();
    // Spot-check rows of head 5 against the reference on that head alone
    // (causal keeps the reference to the keys each row sees).
    let hh = 5;
    let sl = |x: &[f32]| x[hh * s * d..(hh + 1) * s * d].to_vec();
    let (qh, kh, vh) = (sl(&q), sl(&k), sl(&v));
    for row in [0, 1, 4095, 9999, 16383] {
        let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
            q: &qh[row * d..(row + 1) * d],
            k: &kh[..(row + 1) * d],
            v: &vh[..(row + 1) * d],
            dims: [1, 1, 1, 1, row + 1, d, d],
            layout: Layout::Bhsd,
            causal: Causal::None,
            scale: None,
            kv_len: None,
            bias: None,
            ..Default::default()
        });
        let got = &out[(hh * s + row) * d..(hh * s + row + 1) * d];
        check(
            &verify::compare(got, &want),
            1e-5,
            &format!("long row {row}"),
        );
    }
}

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

/// A context that does not wait for best kernels first runs the rows
/// schedule's one-row form while the full row block compiles in the
/// background, then the block: both agree with the reference.
#[test]
fn rows_quick_kernel_then_best() {
    let ctx = Context::with_options(ContextOptions::default())
        .unwrap_or_else(|e| panic!("flashdot tests need a GPU adapter: {e}"));
    let (h, sq, sk, d, dv) = (2, 70, 45, 8, 12);
    let mut rng = rng("rows quick then best");
    let q = uniform(&mut rng, h * sq * d);
    let k = uniform(&mut rng, h * sk * d);
    let v = uniform(&mut rng, h * sk * dv);
    let t = |x: &[f32], s: usize, w: usize| Tensor::from_slice(&ctx, x, &[1, h, s, w]).unwrap();
    let (gq, gk, gv) = (t(&q, sq, d), t(&k, sk, d), t(&v, sk, dv));
    let (want, _) = reference::attention::attention(&reference::attention::AttentionRef {
        q: &q,
        k: &k,
        v: &v,
        dims: [1, h, h, sq, sk, d, dv],
        layout: Layout::Bhsd,
        causal: Causal::BottomRight,
        scale: None,
        kv_len: None,
        bias: None,
        ..Default::default()
    });
    let opts = AttentionOptions::default()
        .variant(AttentionVariant::Flash)
        .flash_schedule(FlashSchedule::Rows)
        .causal(Causal::BottomRight);
    let out = Tensor::zeros(&ctx, &[1, h, sq, dv], DType::F32).unwrap();
    let before = ctx.cached_pipelines();
    for call in ["first (quick form)", "after the background compile"] {
        out.poison().unwrap();
        attention_into(&gq, &gk, &gv, &opts, &out, None).unwrap();
        check(&verify::compare(&read(&out), &want), 1e-5, call);
        ctx.finish_background_compiles();
        // The one-row form, then the row block compiled in the background;
        // the second call compiles nothing new.
        assert_eq!(ctx.cached_pipelines(), before + 2, "{call}");
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
