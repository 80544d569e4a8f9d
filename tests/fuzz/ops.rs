//! One generator/checker per public op: each draws its inputs from the
//! case's rng (biased to the edges by `inputs`), calls the op, and compares
//! a result of ordinary f32 inputs with the f64 reference. The draws' order
//! is what a printed `FLASHDOT_SEED=… FLASHDOT_FUZZ_CASE=…` replays: a change
//! to any draw here changes which case a printed command reproduces.

use flashdot::ops::attention::{attention, AttentionOptions, AttentionVariant, Causal, Layout};
use flashdot::ops::dot::{dot_with, DotVariant};
use flashdot::ops::embedding::{embedding_into, EmbeddingTables};
use flashdot::ops::matmul::{
    linear, matmul_with, Activation, MatmulOptions, MatmulVariant, TileConfig,
};
use flashdot::ops::norm::layer_norm_into;
use flashdot::ops::pooling::mean_pool_into;
use flashdot::ops::search::{
    assign, assign_tensor, FlatIndex, Index, IndexOptions, IvfIndex, IvfOptions, IvfSearchParams,
    KMeansOptions, Storage, MAX_ID,
};
use flashdot::ops::similarity::{cosine, normalize, scores, Metric};
use flashdot::{reference, verify, DType, Tensor};
use rand::Rng;

use super::grad as g;
use super::inputs::{dtype, large_output, mismatch, size, tensor, value};
use crate::common::{cosine_tolerance, dot_tolerance, Rng64};

/// What every op's case shares: the context, whether values may be special
/// (NaN, ±Inf, subnormal, huge), and whether the long tier's forced kernels
/// are in play (the long tier's; see the driver's `case`).
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub ctx: &'a flashdot::Context,
    pub sp: bool,
    pub all_kernels: bool,
}

/// A case's result: `Ok(None)` (passed or typed error), `Ok(Some(why))` for a
/// wrong result, or the error the op (or the case's own setup) returned.
pub type Check = flashdot::Result<Option<String>>;

/// The wrong-result outcome of `what` (op and shape).
fn differs(what: String) -> Check {
    Ok(Some(format!("{what} differs from the reference")))
}

/// An op's case: draws its inputs from the rng, calls the op, checks it.
pub type Gen = fn(Env<'_>, &mut Rng64) -> Check;

/// One generator/checker per op. The case draws its op as an index into this
/// table, so its order is part of every printed reproduction: keep it (new
/// ops go last; a new row still changes which case a seed and number name).
pub const OPS: [(&str, Gen); 24] = [
    ("tensor", tensor_case),
    ("dot", dot_case),
    ("cosine", cosine_case),
    ("normalize", normalize_case),
    ("scores", scores_case),
    ("matmul", matmul_case),
    ("linear", linear_case),
    ("attention", attention_case),
    ("index", index_case),
    ("embedding", embedding_case),
    ("layer_norm", layer_norm_case),
    ("mean_pool", mean_pool_case),
    ("ivf", ivf_case),
    ("assign", assign_case),
    (
        "attention_backward",
        crate::backward::attention_backward_case,
    ),
    ("column_sum", g::column_sum_case),
    ("activation", g::activation_case),
    ("grad_add", g::add_case),
    ("linear_bwd", g::linear_backward_case),
    ("norm_bwd", g::layer_norm_backward_case),
    ("embed_bwd", g::embedding_backward_case),
    ("pool_bwd", g::mean_pool_backward_case),
    ("xentropy", g::cross_entropy_case),
    ("adamw", g::adamw_case),
];

/// Creation, reshape, narrow and contiguous copy of a random tensor.
fn tensor_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let shape: Vec<usize> = (0..r.random_range(0..4)).map(|_| size(r)).collect();
    let dt = dtype(r, e.all_kernels);
    let (t, _) = tensor(e.ctx, r, &shape, dt, e.sp)?;
    let new: Vec<usize> = (0..r.random_range(0..4)).map(|_| size(r)).collect();
    let _ = t.reshape(&new);
    if !shape.is_empty() {
        let dim = r.random_range(0..shape.len() + 1);
        let v = t.narrow(dim, size(r), size(r))?;
        if v.len() <= 1 << 16 {
            v.contiguous()?;
        }
    }
    Ok(None)
}

/// The operands of the row-wise pair ops (dot, cosine, normalize): `a` of
/// `[n, d]`, and `b` of the same shape or (one time in five) another.
struct Pair {
    n: usize,
    d: usize,
    a: Tensor,
    av: Vec<f32>,
    b: Tensor,
    bv: Vec<f32>,
    /// Inputs the reference comparison applies to: ordinary f32 values of
    /// matching, non-empty shapes.
    finite: bool,
}

fn pair(e: Env<'_>, r: &mut Rng64) -> flashdot::Result<Pair> {
    let (n, d) = (size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (a, av) = tensor(e.ctx, r, &[n, d], dt, e.sp)?;
    let (n2, d2) = if r.random_range(0..5) == 0 {
        (size(r), size(r))
    } else {
        (n, d)
    };
    let (b, bv) = tensor(e.ctx, r, &[n2, d2], dt, e.sp)?;
    let finite = !e.sp && dt == DType::F32 && (n2, d2) == (n, d) && !av.is_empty();
    Ok(Pair {
        n,
        d,
        a,
        av,
        b,
        bv,
        finite,
    })
}

fn dot_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let p = pair(e, r)?;
    let variant = if e.all_kernels {
        DotVariant::ALL[r.random_range(0..3)]
    } else {
        DotVariant::Auto
    };
    let got = dot_with(&p.a, &p.b, variant)?.to_vec::<f32>()?;
    if p.finite {
        let want = reference::dot::dot(&p.av, &p.bv, p.d);
        let tol = dot_tolerance(&p.av, &p.bv, p.d, &want);
        if !verify::compare(&got, &want).passes(tol) {
            return differs(format!("dot [{}, {}]", p.n, p.d));
        }
    }
    Ok(None)
}

fn cosine_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let p = pair(e, r)?;
    let got = cosine(&p.a, &p.b)?.to_vec::<f32>()?;
    let want = reference::similarity::cosine(&p.av, &p.bv, p.d);
    if p.finite && !verify::compare(&got, &want).passes(cosine_tolerance(&p.av, &p.bv, p.d, &want))
    {
        return differs(format!("cosine [{}, {}]", p.n, p.d));
    }
    Ok(None)
}

/// Draws both operands like [`dot_case`] (so that the draws stay those of
/// the shared arm they came from) and normalises the first.
fn normalize_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let p = pair(e, r)?;
    let got = normalize(&p.a)?;
    if p.finite {
        let want = reference::similarity::normalize(&p.av, p.d);
        if !verify::compare(&got.to_vec::<f32>()?, &want).passes(1e-5) {
            return differs(format!("normalize [{}, {}]", p.n, p.d));
        }
    }
    Ok(None)
}

fn scores_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (m, n, d) = (size(r), size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (q, _) = tensor(e.ctx, r, &[m, d], dt, e.sp)?;
    let d2 = mismatch(r, d);
    let (c, _) = tensor(e.ctx, r, &[n, d2], dt, e.sp)?;
    let metric = [Metric::Cosine, Metric::InnerProduct, Metric::L2][r.random_range(0..3)];
    large_output(e.ctx, &[m, n])?;
    scores(&q, &c, metric)?;
    Ok(None)
}

/// The left operand of matmul and linear: `a` of `[m, k]`, the output's
/// `n`, and the `k2` the right operand gets (one time in five not `k`).
struct Lhs {
    m: usize,
    k: usize,
    n: usize,
    k2: usize,
    dt: DType,
    a: Tensor,
    av: Vec<f32>,
}

fn lhs(e: Env<'_>, r: &mut Rng64) -> flashdot::Result<Lhs> {
    let (m, k, n) = (size(r), size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let k2 = mismatch(r, k);
    let (a, av) = tensor(e.ctx, r, &[m, k], dt, e.sp)?;
    large_output(e.ctx, &[m, n])?;
    Ok(Lhs {
        m,
        k,
        n,
        k2,
        dt,
        a,
        av,
    })
}

fn linear_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let Lhs { n, k2, dt, a, .. } = lhs(e, r)?;
    let (w, _) = tensor(e.ctx, r, &[n, k2], dt, e.sp)?;
    let nb = mismatch(r, n);
    let (b, _) = tensor(e.ctx, r, &[nb], dt, e.sp)?;
    let act = Activation::ALL[r.random_range(0..Activation::ALL.len())];
    linear(&a, &w, r.random::<bool>().then_some(&b), act)?;
    Ok(None)
}

/// A tile field the plan refuses (zero or odd) or one far too large.
fn bad_field(r: &mut Rng64) -> u32 {
    [0u32, 3, 5, 1 << 20][r.random_range(0..4)]
}

/// Forced configs: a candidate (compiled once; long tier only), or one with
/// a zero or odd field (refused before any compile).
fn matmul_variant(r: &mut Rng64, all_kernels: bool) -> MatmulVariant {
    match r.random_range(0..8) {
        0 => MatmulVariant::Naive,
        1 | 2 if all_kernels => MatmulVariant::Tiled(
            TileConfig::CANDIDATES[r.random_range(0..TileConfig::CANDIDATES.len())],
        ),
        3 => MatmulVariant::Tiled(TileConfig::Broadcast {
            wg: bad_field(r),
            tm: 4,
            tn: 4,
        }),
        4 => MatmulVariant::Tiled(TileConfig::Shared {
            wx: 8,
            wy: 8,
            tm: bad_field(r),
            bk: 8,
        }),
        5 => MatmulVariant::Tiled(TileConfig::Texel {
            wg: 8,
            tm: 32,
            tn: bad_field(r),
        }),
        _ => MatmulVariant::Auto,
    }
}

fn matmul_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let l = lhs(e, r)?;
    let (m, k, n, k2) = (l.m, l.k, l.n, l.k2);
    let (b, bv) = tensor(e.ctx, r, &[k2, n], l.dt, e.sp)?;
    let variant = matmul_variant(r, e.all_kernels);
    let alpha = if r.random_range(0..10) == 0 {
        value(r, true)
    } else {
        1.0
    };
    let opts = MatmulOptions::default().variant(variant).alpha(alpha);
    let got = matmul_with(&l.a, &b, &opts)?;
    let fine = !e.sp
        && alpha == 1.0
        && l.dt == DType::F32
        && k2 == k
        && !l.av.is_empty()
        && !bv.is_empty();
    if fine {
        let want = reference::matmul::matmul(&l.av, &bv, m, k, n, false, false);
        if !verify::compare(&got.to_vec::<f32>()?, &want).passes(1e-5) {
            return differs(format!("matmul {m}x{k}x{n} {variant:?}"));
        }
    }
    Ok(None)
}

/// An attention size: mostly 0..9, one time in six any [`size`].
pub fn small(r: &mut Rng64) -> usize {
    if r.random_range(0..6) == 0 {
        size(r)
    } else {
        r.random_range(0..9)
    }
}

/// Head dims 8, or one the plan refuses: each valid head dim compiles its
/// own kernels (seconds each on a software adapter), and head dims are the
/// attention tests' grid.
pub fn head_dim(r: &mut Rng64) -> usize {
    if r.random_range(0..8) == 0 {
        [0, 257, 1 << 20, usize::MAX][r.random_range(0..4)]
    } else {
        8
    }
}

/// Random options: causal mode, variant (forced in the long tier), LSE,
/// layout, and now and then `lens` as kv_len, `bias`, or an odd scale.
pub fn attention_options<'t>(
    r: &mut Rng64,
    all_kernels: bool,
    lens: &'t [u32],
    bias: &'t Tensor,
) -> AttentionOptions<'t> {
    let mut opts = AttentionOptions::default()
        .causal([Causal::None, Causal::TopLeft, Causal::BottomRight][r.random_range(0..3)])
        .variant(if all_kernels {
            [
                AttentionVariant::Auto,
                AttentionVariant::Naive,
                AttentionVariant::Flash,
                AttentionVariant::SplitKv,
            ][r.random_range(0..4)]
        } else {
            AttentionVariant::Auto
        })
        .return_lse(r.random());
    if r.random() {
        opts = opts.layout(Layout::Bshd);
    }
    if r.random_range(0..3) == 0 {
        opts = opts.kv_len(lens);
    }
    if r.random_range(0..4) == 0 {
        opts = opts.bias(bias);
    }
    if r.random_range(0..8) == 0 {
        opts = opts.scale(value(r, true));
    }
    opts
}

fn attention_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (b, hq, sq, sk) = (small(r), small(r), small(r), small(r));
    let d = head_dim(r);
    let hkv = if r.random() { hq } else { small(r) };
    let dt = dtype(r, e.all_kernels);
    let (q, _) = tensor(e.ctx, r, &[b, hq, sq, d], dt, e.sp)?;
    let (k, _) = tensor(e.ctx, r, &[b, hkv, sk, d], dt, e.sp)?;
    let dv = if r.random_range(0..8) == 0 {
        head_dim(r)
    } else {
        d
    };
    let (v, _) = tensor(e.ctx, r, &[b, hkv, sk, dv], dt, e.sp)?;
    let nl = small(r).min(64);
    let lens: Vec<u32> = (0..nl).map(|_| r.random_range(0..12)).collect();
    let (bias, _) = tensor(e.ctx, r, &[1, 1, sq, sk], DType::F32, e.sp)?;
    let opts = attention_options(r, e.all_kernels, &lens, &bias);
    large_output(e.ctx, &[b, hq, sq, dv])?;
    attention(&q, &k, &v, &opts)?;
    Ok(None)
}

/// Ids from a small range, so that repeats and removals of stored ids
/// happen; now and then one past MAX_ID.
fn index_id(r: &mut Rng64) -> u64 {
    match r.random_range(0..50) {
        0 => MAX_ID + 1,
        1 => u64::MAX,
        x => x as u64,
    }
}

/// Adds up to 40 rows (or a ragged length) to `idx` (any index, through the
/// trait), with or without ids, then sometimes removes and reconstructs a
/// few ids.
fn index_fill(e: Env<'_>, r: &mut Rng64, idx: &mut dyn Index, dim: usize) -> flashdot::Result<()> {
    let rows = r.random_range(0..40usize);
    let len = if r.random_range(0..6) == 0 {
        r.random_range(0..300)
    } else {
        rows.saturating_mul(dim).min(1 << 16)
    };
    let data: Vec<f32> = (0..len).map(|_| value(r, e.sp)).collect();
    if r.random_range(0..3) == 0 {
        let n = len / dim.max(1) + usize::from(r.random_range(0..8) == 0);
        let ids: Vec<u64> = (0..n.min(64)).map(|_| index_id(r)).collect();
        idx.add_with_ids(&data, &ids)?;
    } else {
        idx.add(&data)?;
    }
    if r.random_range(0..3) == 0 {
        let gone: Vec<u64> = (0..r.random_range(0..8)).map(|_| index_id(r)).collect();
        idx.remove_ids(&gone)?;
        idx.reconstruct(index_id(r))?;
    }
    Ok(())
}

fn index_case(e: Env<'_>, r: &mut Rng64) -> Check {
    // Dims from a few classes (each dim is its own scan kernel).
    let dims: &[usize] = if e.all_kernels {
        &[0, 1, 3, 8, 59, 1 << 40, usize::MAX]
    } else {
        &[0, 3, 8, 1 << 40, usize::MAX]
    };
    let dim = dims[r.random_range(0..dims.len())];
    let storage = [Storage::F32, Storage::F16, Storage::Int8][r.random_range(0..3)];
    // L2 and filters on two dims only: each (dim, k class, storage, metric,
    // filter) is its own scan kernel, and their compiles made the index
    // cases most of the long tier.
    let narrow = dim == 8 || (e.all_kernels && dim == 3);
    let metric = [Metric::Cosine, Metric::InnerProduct, Metric::L2]
        [r.random_range(0..if narrow { 3 } else { 2 })];
    let mut idx = FlatIndex::new(
        e.ctx,
        dim,
        IndexOptions::default().storage(storage).metric(metric),
    )?;
    index_fill(e, r, &mut idx, dim)?;
    let ql = if r.random_range(0..6) == 0 {
        r.random_range(0..50)
    } else {
        dim.min(1 << 12)
    };
    let q: Vec<f32> = (0..ql).map(|_| value(r, e.sp)).collect();
    // Each k class and query block is its own kernel: a few of each (k > n,
    // k > 16, k past workgroup memory).
    let k = [0, 1, 5, 17, 1025, usize::MAX][r.random_range(0..6)];
    if narrow && r.random() {
        let keep = r.random_range(1..5u64);
        idx.search_filtered(&q, k, |id| id % keep == 0)?;
    } else {
        idx.search(&q, k)?;
    }
    Ok(None)
}

/// An `nprobe` for `nlist` lists: mostly valid, else 0, one past `nlist` or
/// huge.
fn nprobe_for(r: &mut Rng64, nlist: usize) -> usize {
    match r.random_range(0..8) {
        0 => 0,
        1 => nlist.saturating_add(1),
        2 => usize::MAX,
        3 => nlist,
        _ => r.random_range(1..=nlist.max(1)),
    }
}

/// The IVF index: creation with `nlist` and `nprobe` at the edges (nprobe 0
/// or past nlist; nlist past the training rows), add and search before
/// training, training on random rows (too few, ragged, special values),
/// `set_nprobe`, adds with and without ids, removal and reconstruction, then
/// a search with a per-call `nprobe` (invalid ones included), filtered or
/// not, whether or not the adds were refused. Besides panics, wrong results are: an untrained index that adds or
/// searches, a failed training that leaves it trained, an invalid `nprobe`
/// accepted, and a result naming an id the index does not hold (or the
/// filter refused).
fn ivf_case(e: Env<'_>, r: &mut Rng64) -> Check {
    // Dim 8 is the flat index case's narrow dim (every metric, filters), so
    // the lists' scan kernels are the ones it compiles; 0 and 2^40 are
    // refused.
    let dim = [0, 8, 8, 8, 8, 8, 8, 1 << 40][r.random_range(0..8)];
    let storage = [Storage::F32, Storage::F16, Storage::Int8][r.random_range(0..3)];
    let metric = [Metric::Cosine, Metric::InnerProduct, Metric::L2][r.random_range(0..3)];
    // No huge nlist: each list is an index, made when the IVF index is.
    let nlist = [0, 1, 2, 3, 7, 64][r.random_range(0..6)];
    let default_nprobe = if r.random_range(0..6) == 0 {
        nprobe_for(r, nlist)
    } else {
        r.random_range(1..=nlist.max(1))
    };
    let km = KMeansOptions::default().niter(r.random_range(1..3));
    let opts = IvfOptions::new(nlist)
        .metric(metric)
        .storage(storage)
        .nprobe(default_nprobe)
        .kmeans(km);
    let mut ivf = IvfIndex::new(e.ctx, dim, opts)?;
    let one: Vec<f32> = (0..dim).map(|_| value(r, e.sp)).collect();
    if ivf.search(&one, 1).is_ok() || ivf.add(&one).is_ok() || !ivf.is_empty() {
        return Ok(Some("an untrained IVF index searched or added".into()));
    }
    let rows = r.random_range(0..40usize);
    let len = if r.random_range(0..6) == 0 {
        r.random_range(0..300)
    } else {
        rows.saturating_mul(dim).min(1 << 16)
    };
    let train: Vec<f32> = (0..len).map(|_| value(r, e.sp)).collect();
    if let Err(err) = ivf.train(&train) {
        if ivf.is_trained() {
            return Ok(Some(format!(
                "a failed training left the index trained: {err}"
            )));
        }
        return Err(err);
    }
    if r.random_range(0..4) == 0 {
        let p = nprobe_for(r, nlist);
        let valid = (1..=nlist).contains(&p);
        if ivf.set_nprobe(p).is_ok() != valid
            || ivf.nprobe() != if valid { p } else { default_nprobe }
        {
            return Ok(Some(format!("set_nprobe({p}) with {nlist} lists")));
        }
    }
    // A refused add or removal leaves the index searchable: search anyway,
    // and report the refusal if the search passes.
    let filled = index_fill(e, r, &mut ivf, dim);
    let ql = if r.random_range(0..6) == 0 {
        r.random_range(0..50)
    } else {
        dim.min(1 << 12) * r.random_range(1..4)
    };
    let q: Vec<f32> = (0..ql).map(|_| value(r, e.sp)).collect();
    let k = [0, 1, 5, 17, 1025, usize::MAX][r.random_range(0..6)];
    let p = r.random::<bool>().then(|| nprobe_for(r, nlist));
    let params = p.map_or_else(IvfSearchParams::default, IvfSearchParams::nprobe);
    let keep = r.random_range(1..5u64);
    let filtered = r.random::<bool>();
    let res = if filtered {
        ivf.search_filtered(&q, k, params, |id| id % keep == 0)?
    } else {
        ivf.search_with(&q, k, params)?
    };
    if let Some(p) = p.filter(|p| !(1..=nlist).contains(p)) {
        return Ok(Some(format!("nprobe {p} of {nlist} lists was accepted")));
    }
    let foreign = res.ids.iter().find(|&&id| {
        id >= 0 && (!ivf.contains(id as u64) || (filtered && !(id as u64).is_multiple_of(keep)))
    });
    if res.ids.len() != res.m * k || foreign.is_some() {
        return Ok(Some(format!(
            "IVF search [{}, {k}]: {} ids, or one not stored or not allowed ({foreign:?})",
            res.m,
            res.ids.len()
        )));
    }
    filled.map(|()| None)
}

fn embedding_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (b, s, h, vocab) = (size(r), size(r), size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let id_dt = if r.random_range(0..5) > 0 {
        DType::U32
    } else {
        dt
    };
    let (ids, _) = tensor(e.ctx, r, &[b, s], id_dt, false)?;
    let (word, _) = tensor(e.ctx, r, &[vocab, h], dt, e.sp)?;
    let npos = size(r);
    let (pos, _) = tensor(e.ctx, r, &[npos, h], dt, e.sp)?;
    let (types, _) = tensor(e.ctx, r, &[2, h], dt, e.sp)?;
    let (out, _) = tensor(e.ctx, r, &[b, s, h], dt, false)?;
    embedding_into(
        &ids,
        None,
        EmbeddingTables {
            word: &word,
            pos: &pos,
            types: &types,
        },
        &out,
    )?;
    Ok(None)
}

fn layer_norm_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (rows, h) = (size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (x, xv) = tensor(e.ctx, r, &[rows, h], dt, e.sp)?;
    let h2 = mismatch(r, h);
    let (g, gv) = tensor(e.ctx, r, &[h2], dt, e.sp)?;
    let (bt, bv) = tensor(e.ctx, r, &[h2], dt, e.sp)?;
    let (out, _) = tensor(e.ctx, r, &[rows, h], dt, false)?;
    let eps = if r.random_range(0..8) == 0 {
        value(r, true)
    } else {
        1e-5
    };
    layer_norm_into(&x, None, &g, &bt, eps, &out)?;
    if !e.sp && dt == DType::F32 && h2 == h && eps == 1e-5 && !xv.is_empty() {
        let want = reference::norm::layer_norm(&xv, None, &gv, &bv, 1e-5, h);
        if !verify::compare(&out.to_vec::<f32>()?, &want).passes(1e-4) {
            return differs(format!("layer_norm [{rows}, {h}]"));
        }
    }
    Ok(None)
}

fn mean_pool_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let (b, s, h) = (size(r), size(r), size(r));
    let dt = dtype(r, e.all_kernels);
    let (x, _) = tensor(e.ctx, r, &[b, s, h], dt, e.sp)?;
    let nl = if r.random_range(0..5) == 0 {
        size(r).min(64)
    } else {
        b.min(1 << 12)
    };
    let lens: Vec<u32> = (0..nl)
        .map(|_| r.random_range(0..2 * s.clamp(1, 1000) as u32))
        .collect();
    let (out, _) = tensor(e.ctx, r, &[b, h], DType::F32, false)?;
    mean_pool_into(&x, &lens, &out)?;
    Ok(None)
}

/// Nearest-centroid assignment (host rows or a device tensor): dims 0 and
/// 2^40, no centroids, ragged rows, special values. Besides panics, wrong
/// results are: a label past the centroids, a result of another length, and
/// (on finite inputs) a label whose f64 score is not a best one within the
/// f32 bound.
fn assign_case(e: Env<'_>, r: &mut Rng64) -> Check {
    let dim = [0, 1, 3, 8, 59, 1 << 40][r.random_range(0..6)];
    let d = dim.min(64);
    let k = [0, 1, 2, 3, 7, 64, 65][r.random_range(0..7)];
    let n = [0, 1, 3, 33, 127][r.random_range(0..5)];
    let ragged = usize::from(r.random_range(0..8) == 0);
    let data: Vec<f32> = (0..n * d + ragged).map(|_| value(r, e.sp)).collect();
    let cents: Vec<f32> = (0..k * d).map(|_| value(r, e.sp)).collect();
    let metric = [Metric::Cosine, Metric::InnerProduct, Metric::L2][r.random_range(0..3)];
    let got = if r.random::<bool>() && ragged == 0 && d > 0 {
        let x = Tensor::from_slice(e.ctx, &data, &[n, d])?;
        assign_tensor(&x, &cents, dim, metric)?
    } else {
        assign(e.ctx, &data, &cents, dim, metric)?
    };
    // With dim 1 a "ragged" row is one more point.
    let n = data.len() / d.max(1);
    let what = format!("assign [{n}, {dim}] to {k} {metric:?}");
    if got.labels.len() != n
        || got.distances.len() != n
        || got.labels.iter().any(|&l| l as usize >= k)
    {
        return differs(what);
    }
    if data
        .iter()
        .chain(&cents)
        .any(|v| !v.is_finite() || v.abs() > 1e30)
        || metric == Metric::Cosine
    {
        return Ok(None);
    }
    let (x, c): (Vec<f64>, Vec<f64>) = (
        data.iter().map(|&v| v as f64).collect(),
        cents.iter().map(|&v| v as f64).collect(),
    );
    let (_, best) = reference::kmeans::nearest(&x, d, &c, metric);
    for (i, p) in x.chunks_exact(d).enumerate() {
        let l = got.labels[i] as usize;
        let mine = reference::kmeans::score(p, &c[l * d..(l + 1) * d], metric);
        // Rows of values in [-1, 1): norms at most d.
        let tol = 4.0 * (d as f64 + 4.0) * f32::EPSILON as f64 * 2.0 * d as f64;
        if (mine - best[i]).abs() > tol {
            return differs(what);
        }
    }
    Ok(None)
}
