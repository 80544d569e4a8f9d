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

mod caches;
mod calls;
#[path = "../common/mod.rs"]
mod common;
mod shapes;

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
    let p = Prepared::new(ctx, c);
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
    runs.filter_map(|(var, how)| p.run(c, var, how).map(|e| (var, e)))
        .collect()
}

/// A case's K and V as a page pool (every sequence's pages in shuffled
/// order plus a spare) with its block table, and the options' tensors
/// widened to the logical seq_k (whole pages).
struct Pool {
    table: Vec<u32>,
    max_pages: usize,
    k: Tensor,
    v: Tensor,
    kv_len: Vec<u32>,
    bias: Option<Tensor>,
    mask: Option<BoolMask>,
}

/// A case's inputs on the device, the reference's answer and its bounds,
/// and the outputs every run writes into.
struct Prepared {
    name: String,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Option<Tensor>,
    mask: Option<BoolMask>,
    pool: Option<Pool>,
    slopes: Vec<f32>,
    sinks: Vec<f32>,
    want: Vec<f64>,
    want_lse: Vec<f64>,
    bound: Bounds,
    out: Tensor,
    lse: Tensor,
}

/// `c`'s q, k and v (random, `[b, h, s, d]` in `c.layout`); with
/// `nan_outside`, K and V NaN outside every row's window (see [`Ext`]).
fn host_qkv(c: &Case, rng: &mut Rng64) -> [Vec<f32>; 3] {
    let q = uniform(rng, c.b * c.hq * c.sq * c.d);
    let mut k = uniform(rng, c.b * c.hkv * c.sk * c.d);
    let mut v = uniform(rng, c.b * c.hkv * c.sk * c.dv);
    if !c.ext.nan_outside {
        return [q, k, v];
    }
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
    [q, k, v]
}

impl Pool {
    /// The pool of `c`'s K and V (`k`, `v` on the host) in pages of `page`.
    fn new(
        ctx: &Context,
        c: &Case,
        (k, v): (&[f32], &[f32]),
        page: usize,
        rng: &mut Rng64,
    ) -> Pool {
        let maxp = c.sk.div_ceil(page);
        let npages = c.b * maxp + 1;
        let mut ids: Vec<u32> = (0..npages as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.random_range(0..=i));
        }
        let table = ids[..c.b * maxp].to_vec();
        let pshape = |w| match c.layout {
            Layout::Bhsd => vec![npages, c.hkv, page, w],
            Layout::Bshd => vec![npages, page, c.hkv, w],
        };
        let up = |x: &[f32], w| {
            let pool = to_pool(c, x, w, page, &table, npages);
            upload_to(ctx, &pool, &pshape(w), c.dtype).0
        };
        Pool {
            k: up(k, c.d),
            v: up(v, c.dv),
            kv_len: c.kv_len.clone().unwrap_or(vec![c.sk as u32; c.b]),
            max_pages: maxp,
            table,
            bias: None,
            mask: None,
        }
    }
}

impl Prepared {
    fn new(ctx: &Context, c: &Case) -> Prepared {
        let name = format!("{c:?}");
        let mut rng = rng(&name);
        let [q, k, v] = host_qkv(c, &mut rng);
        let (gq, q) = upload_to(ctx, &q, &shape(c.layout, c.b, c.hq, c.sq, c.d), c.dtype);
        let (gk, k) = upload_to(ctx, &k, &shape(c.layout, c.b, c.hkv, c.sk, c.d), c.dtype);
        let (gv, v) = upload_to(ctx, &v, &shape(c.layout, c.b, c.hkv, c.sk, c.dv), c.dtype);
        let bias_vals = c.bias.map(|s| uniform(&mut rng, s.iter().product()));
        let x = &c.ext;
        let mut pool = x
            .page
            .map(|page| (Pool::new(ctx, c, (&k, &v), page, &mut rng), page));
        let slopes: Vec<f32> = (0..c.hq)
            .map(|h| 2f32.powf(-8.0 * (h + 1) as f32 / c.hq as f32))
            .collect();
        let sinks: Vec<f32> = uniform(&mut rng, c.hq).iter().map(|s| 2.0 * s).collect();
        let mask_vals: Option<Vec<bool>> = x.mask.map(|s| {
            (0..s.iter().product())
                .map(|_| rng.random_bool(0.75))
                .collect()
        });
        // The paged calls' bias and mask span the pool's logical seq_k.
        if let Some((pool, page)) = &mut pool {
            let sk_log = pool.max_pages * *page;
            let wide = |s: [usize; 4]| [s[0], s[1], s[2], sk_log];
            pool.bias = c.bias.map(|s| {
                let vals = widen(bias_vals.as_ref().unwrap(), c.sk, sk_log, 0.0);
                Tensor::from_slice(ctx, &vals, &wide(s)).unwrap()
            });
            pool.mask = x.mask.map(|s| {
                let vals = widen(mask_vals.as_ref().unwrap(), c.sk, sk_log, false);
                BoolMask::from_bools(ctx, wide(s), &vals).unwrap()
            });
        }
        let (want, want_lse) =
            reference::attention::attention(&reference::attention::AttentionRef {
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
        // ALiBi's largest distance penalty.
        let alibi = match x.alibi {
            true => slopes[0] as f64 * (c.sk + c.sq) as f64,
            false => 0.0,
        };
        let bound = Scores {
            d: c.d,
            keys: c.sk,
            qk: max_abs(&q) * max_abs(&k),
            v: max_abs(&v),
            extra: alibi + bias_vals.as_deref().map_or(0.0, max_abs),
            softcap: x.softcap,
            f16: c.dtype == DType::F16,
        }
        .bounds();
        Prepared {
            name,
            q: gq,
            k: gk,
            v: gv,
            bias: c
                .bias
                .map(|s| Tensor::from_slice(ctx, bias_vals.as_ref().unwrap(), &s).unwrap()),
            mask: x
                .mask
                .map(|s| BoolMask::from_bools(ctx, s, mask_vals.as_ref().unwrap()).unwrap()),
            pool: pool.map(|p| p.0),
            slopes,
            sinks,
            want,
            want_lse,
            bound,
            out: Tensor::zeros(ctx, &shape(c.layout, c.b, c.hq, c.sq, c.dv), c.dtype).unwrap(),
            lse: Tensor::zeros(ctx, &[c.b, c.hq, c.sq], DType::F32).unwrap(),
        }
    }

    /// The options of run `how` of variant `var` on the contiguous K and V.
    fn options<'a>(&'a self, c: &'a Case, var: AttentionVariant, how: How) -> AttentionOptions<'a> {
        let x = &c.ext;
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
        opts.alibi_slopes = x.alibi.then_some(&self.slopes[..]);
        opts.sinks = x.sinks.then_some(&self.sinks[..]);
        opts.bias = self.bias.as_ref();
        opts.mask = self.mask.as_ref();
        opts
    }

    /// Runs `var` (`how`) and checks it: against the reference, and paged
    /// against the contiguous cache; a forced schedule or source that
    /// cannot serve the shape is refused by the plan and the call alike
    /// (`None`). Returns the rel L2 error.
    fn run(&self, c: &Case, var: AttentionVariant, how: How) -> Option<f64> {
        let (out, lse) = (&self.out, &self.lse);
        let mut opts = self.options(c, var, how);
        // Paged cases run the contiguous cache first and compare against it.
        let mut contiguous = None;
        if let Some(pool) = &self.pool {
            if var != AttentionVariant::Naive {
                out.poison().unwrap();
                // (A schedule that refuses the options is checked below.)
                contiguous = match attention_into(&self.q, &self.k, &self.v, &opts, out, None) {
                    Ok(()) => Some(read(out)),
                    Err(Error::Unsupported { .. }) => None,
                    Err(e) => panic!("{} {var:?} {how:?} contiguous: {e}", self.name),
                };
            }
            opts.paged = Some(PagedKv {
                block_table: &pool.table,
                max_pages: pool.max_pages,
            });
            opts.kv_len = Some(&pool.kv_len);
            opts.bias = pool.bias.as_ref();
            opts.mask = pool.mask.as_ref();
        }
        let (gk, gv) = self
            .pool
            .as_ref()
            .map_or((&self.k, &self.v), |p| (&p.k, &p.v));
        out.poison().unwrap();
        lse.poison().unwrap();
        let case = format!("{} {var:?} {how:?}", self.name);
        let run = attention_into(&self.q, gk, gv, &opts, out, c.lse.then_some(lse));
        match plan(&self.q, gk, gv, &opts) {
            // A forced schedule or source that cannot serve the shape is
            // refused, by the plan and by the call alike, never substituted;
            // so is the naive kernel for a paged cache.
            Err(Error::Unsupported { .. })
                if !matches!(how, How::Default)
                    || (self.pool.is_some() && var == AttentionVariant::Naive) =>
            {
                let e = run.expect_err(&case);
                assert!(matches!(e, Error::Unsupported { .. }), "{case}: {e}");
                return None;
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
        Some(self.check(c, &case, contiguous.as_deref()))
    }

    /// Checks the run just made against the reference (and against the
    /// contiguous cache's output `contiguous`, for a paged run); returns
    /// the rel L2 error.
    fn check(&self, c: &Case, case: &str, contiguous: Option<&[f32]>) -> f64 {
        let tol = if c.dtype == DType::F16 { 5e-3 } else { 1e-5 };
        let (want, want_lse) = (&self.want, &self.want_lse);
        let got = read(&self.out);
        let rep = verify::compare(&got, want);
        check(&rep, tol, case);
        check_elements(&got, want, self.bound.out, case);
        if let Some(cont) = contiguous {
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
            let got_lse = self.lse.to_vec::<f32>().unwrap();
            let rep = verify::compare(&got_lse, want_lse);
            check(&rep, tol, &format!("{case} lse"));
            check_elements(&got_lse, want_lse, self.bound.lse, &format!("{case} lse"));
        }
        rep.rel_l2
    }
}

/// Largest |x| (0 for none).
fn max_abs(x: &[f32]) -> f64 {
    x.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()))
}

/// What bounds the error of an attention call against its f64 reference
/// (fed the same, f16-rounded where stored so, inputs).
#[derive(Debug, Clone, Copy)]
struct Scores {
    /// Head dim: each score sums `d` products.
    d: usize,
    /// Keys a row may see: each softmax sums up to this many terms.
    keys: usize,
    /// max|q| · max|k|.
    qk: f64,
    /// max|v|.
    v: f64,
    /// The largest magnitude added to a scaled score (ALiBi, bias).
    extra: f64,
    softcap: Option<f32>,
    /// Outputs stored as f16 (and the naive kernel's probabilities).
    f16: bool,
}

/// Per-element bounds `(atol, rtol)`: `|got − ref| ≤ atol + rtol·|ref|`.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    out: (f64, f64),
    lse: (f64, f64),
}

impl Scores {
    /// The bounds the arithmetic gives, with u = 2^-24 (f32's unit
    /// roundoff, an ulp at most 2u) and n the keys:
    ///
    /// - a score `scale·q·k` sums `d` f32 products: within 2√d·u·scale·d·qk
    ///   (Higham & Mary's probabilistic bound, λ = 2, as `dot_tolerance`),
    ///   plus 4 roundings of its magnitude (scale, soft cap, ALiBi, bias)
    ///   and the soft cap's own cap·4u: `δs`;
    /// - an output is a softmax-weighted mean of v: a score error moves its
    ///   weights by at most 2δs relative; an exp is within 3 + 2|x| ulp
    ///   (Vulkan's bound), which the weights average to at most 3 + 2·ln n
    ///   (the softmax's entropy bounds Σ p·|s − max|), at three stages (the
    ///   weights, the online softmax's rescales, a merge of partial
    ///   softmaxes); the two sums of up to n terms (the denominator, each
    ///   accumulator) are within 2√n·u each. So
    ///   `atol = v·(2δs + 3·(3 + 2 ln n)·2u + 4√n·u)`, `rtol = 2u` (the
    ///   final division);
    /// - f16: the output rounds once more (rtol + 2^-11) and the naive
    ///   kernel stores its probabilities as f16 (atol + v·2^-11);
    /// - the LSE, `max + ln(sum)` in f32 whatever the dtype: δs for the max,
    ///   the sum's relative error as above with v = 1, ln within 2^-21
    ///   absolute: `atol = 3δs + 3·(3 + 2 ln n)·2u + 4√n·u + 8u`, `rtol = 2u`.
    fn bounds(&self) -> Bounds {
        let u = f32::EPSILON as f64 / 2.0;
        let (d, n) = (self.d.max(1) as f64, self.keys.max(1) as f64);
        let scale = 1.0 / d.sqrt();
        let magnitude = scale * d * self.qk;
        let capped = self.softcap.map_or(magnitude, |c| magnitude.min(c as f64));
        let cap = self.softcap.map_or(0.0, |c| c as f64);
        let ds = 2.0 * d.sqrt() * u * magnitude + 4.0 * u * (capped + self.extra) + 4.0 * u * cap;
        let softmax = 3.0 * (3.0 + 2.0 * n.ln()) * 2.0 * u + 4.0 * n.sqrt() * u;
        let h = if self.f16 { 1.0 / 2048.0 } else { 0.0 };
        Bounds {
            out: (self.v * (2.0 * ds + softmax + h), 2.0 * u + h),
            lse: (3.0 * ds + softmax + 8.0 * u, 2.0 * u),
        }
    }
}
