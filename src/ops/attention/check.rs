//! The one check of an attention call, shared by [`attention`](super::attention),
//! [`attention_into`](super::attention_into) and [`plan`](super::plan): the
//! operands (one context; q, k and v may be views, the rest is bound as it
//! is), the shapes and dtypes (which yield the call's [`Dims`]) and the
//! option values; then, for `attention_into` only, the outputs it was given.

use super::options::{AttentionOptions, Layout, MAX_HEAD_DIM, OP};
use crate::error::{expect_dtype, Error, Result};
use crate::tensor::{shape_str, DType, Tensor};

/// The operands and options of a call as the caller gave them: q, k and v
/// may be strided or misaligned views, read through one gather copy each
/// ([`Tensor::contiguous`]) when the call runs.
#[derive(Clone, Copy)]
pub(crate) struct Inputs<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub opts: &'a AttentionOptions<'a>,
}

/// The extents of a call (after [`check`]) and the dtype of q, k, v and out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
    /// K/V's outer extent and rows per outer index: (batch, seq_k), or for a
    /// paged cache (pages, page size).
    pub kv_outer: usize,
    pub kv_rows: usize,
    pub dtype: DType,
}

impl Dims {
    /// The output's shape in `layout`.
    pub fn out_shape(&self, layout: Layout) -> Vec<usize> {
        in_layout(layout, self.b, self.hq, self.sq, self.dv)
    }

    /// The LSE's shape, `[batch, heads_q, seq_q]`.
    pub fn lse_shape(&self) -> [usize; 3] {
        [self.b, self.hq, self.sq]
    }

    /// Whether a call writes nothing: no output elements, and no LSE rows
    /// when `lse` is asked for.
    pub fn writes_nothing(&self, lse: bool) -> bool {
        self.b * self.hq * self.sq == 0 || (self.dv == 0 && !lse)
    }

    /// Fails with [`Error::TooLarge`] naming `what` when one f32 matrix
    /// `[batch, heads_q, seq_q, seq_k]` (a score matrix, or dS) would exceed
    /// one storage binding of `limit` bytes.
    pub fn check_scores(&self, what: &str, limit: u64) -> Result<()> {
        let bytes = (self.b * self.hq * self.sq * self.sk) as u64 * 4;
        if bytes > limit {
            return Err(Error::TooLarge {
                op: OP,
                what: format!(
                    "{what} [{}, {}, {}, {}] f32",
                    self.b, self.hq, self.sq, self.sk
                ),
                size: bytes,
                limit,
                kind: crate::Limit::StorageBinding,
            });
        }
        Ok(())
    }

    /// Fails with [`Error::TooLarge`] when q, k, v or the output would
    /// exceed one storage binding of `limit` bytes (the kernels bind each
    /// whole).
    pub fn check_bindings(&self, layout: Layout, limit: u64) -> Result<()> {
        let esize = self.dtype.size();
        let (o, r) = (self.kv_outer, self.kv_rows);
        for (name, shape) in [
            ("q", in_layout(layout, self.b, self.hq, self.sq, self.d)),
            ("k", in_layout(layout, o, self.hkv, r, self.d)),
            ("v", in_layout(layout, o, self.hkv, r, self.dv)),
            ("out", self.out_shape(layout)),
        ] {
            let bytes = shape.iter().product::<usize>() as u64 * esize;
            if bytes > limit {
                return Err(Error::TooLarge {
                    op: OP,
                    what: format!("tensor {name} {}", shape_str(&shape)),
                    size: bytes,
                    limit,
                    kind: crate::Limit::StorageBinding,
                });
            }
        }
        Ok(())
    }
}

/// `[outer, heads, seq, dim]` in `layout`.
fn in_layout(layout: Layout, outer: usize, heads: usize, seq: usize, dim: usize) -> Vec<usize> {
    match layout {
        Layout::Bhsd => vec![outer, heads, seq, dim],
        Layout::Bshd => vec![outer, seq, heads, dim],
    }
}

/// Checks a call's operands, shapes, dtypes and options; yields its dims.
/// Copies and dispatches nothing: a view of q, k or v is checked to be
/// readable by the gather copy the call will make of it.
pub(crate) fn check(x: &Inputs) -> Result<Dims> {
    operands(x)?;
    let dims = shapes(x)?;
    values(x, dims.hq)?;
    extents(x, &dims)?;
    for (name, t) in [("q", x.q), ("k", x.k), ("v", x.v)] {
        t.check_gather(name)?;
    }
    Ok(dims)
}

/// The inputs a kernel binds as they are (not copied first): q, k and v
/// where they are dense, the bias and the mask words.
pub(crate) fn bound_inputs<'a>(x: &Inputs<'a>) -> Vec<(&'static str, &'a Tensor)> {
    let mut v: Vec<(&str, &Tensor)> = [("q", x.q), ("k", x.k), ("v", x.v)]
        .into_iter()
        .filter(|(_, t)| t.is_dense())
        .collect();
    v.extend(x.opts.bias.map(|t| ("bias", t)));
    v.extend(x.opts.mask.map(|m| ("mask", m.words())));
    v
}

/// One context for every tensor; the bias and the mask bindable as they are.
fn operands(x: &Inputs) -> Result<()> {
    let mut all = vec![("q", x.q), ("k", x.k), ("v", x.v)];
    let mut direct = Vec::new();
    direct.extend(x.opts.bias.map(|t| ("bias", t)));
    direct.extend(x.opts.mask.map(|m| ("mask", m.words())));
    for (name, t) in &direct {
        Tensor::require_dense(OP, name, t)?;
    }
    all.extend(direct);
    one_context(&all)
}

/// Fails unless every tensor lives on the first one's context (as
/// [`Tensor::same_context`], which also asks each to be dense: q, k and v
/// need not be).
pub(crate) fn one_context(tensors: &[(&str, &Tensor)]) -> Result<()> {
    Tensor::one_context(OP, tensors)
}

/// A shape error of the call naming all three shapes, then `why`.
fn shape_error(x: &Inputs, why: String) -> Error {
    let detail = format!(
        "q {}, k {}, v {} ({:?} layout): {why}",
        shape_str(x.q.shape()),
        shape_str(x.k.shape()),
        shape_str(x.v.shape()),
        x.opts.layout
    );
    Error::Shape { op: OP, detail }
}

/// The shapes and dtypes of q, k and v (and the block table's pages):
/// the call's dims.
fn shapes(x: &Inputs) -> Result<Dims> {
    let (q, k, v, o) = (x.q, x.k, x.v, x.opts);
    let bad = |why: String| shape_error(x, why);
    if [q, k, v].iter().any(|t| t.shape().len() != 4) {
        return Err(bad("all three must be 4-D".into()));
    }
    let split = |s: &[usize]| match o.layout {
        Layout::Bhsd => (s[0], s[1], s[2], s[3]),
        Layout::Bshd => (s[0], s[2], s[1], s[3]),
    };
    let (b, hq, sq, d) = split(q.shape());
    let (bk, hkv, kv_rows, dk) = split(k.shape());
    let (bv, hv, skv, dv) = split(v.shape());
    if o.paged.is_none() && (b != bk || b != bv) {
        return Err(bad("batch sizes differ".into()));
    }
    if bk != bv {
        return Err(bad("k and v must have the same number of pages".into()));
    }
    let sk = match o.paged {
        Some(pk) => match pk.problem(b, bk) {
            Some(why) => return Err(bad(why)),
            None => pk.max_pages * kv_rows,
        },
        None => kv_rows,
    };
    if hkv != hv || kv_rows != skv {
        return Err(bad("k and v must have the same heads and seq_k".into()));
    }
    if d != dk {
        return Err(bad(format!("q's head dim {d} differs from k's {dk}")));
    }
    if hkv == 0 && hq > 0 || hkv > 0 && hq % hkv != 0 {
        return Err(bad(format!(
            "heads_q {hq} must be a multiple of heads_kv {hkv} (GQA/MQA)"
        )));
    }
    expect_dtype(OP, "q", q.dtype(), &DType::FLOAT)?;
    expect_dtype(OP, "k", k.dtype(), &[q.dtype()])?;
    expect_dtype(OP, "v", v.dtype(), &[q.dtype()])?;
    if d == 0 || d > MAX_HEAD_DIM || dv > MAX_HEAD_DIM {
        return Err(Error::Unsupported {
            op: OP,
            detail: format!("head dims d={d}, d_v={dv}: supported are 1..={MAX_HEAD_DIM}"),
        });
    }
    Ok(Dims {
        b,
        hq,
        hkv,
        sq,
        sk,
        d,
        dv,
        kv_outer: bk,
        kv_rows,
        dtype: q.dtype(),
    })
}

/// The option values: a finite scale, finite per-head slopes and sinks (one
/// a query head), a positive finite soft cap, windows the kernels' i32s hold.
fn values(x: &Inputs, hq: usize) -> Result<()> {
    let o = x.opts;
    let invalid = |detail: String| Error::InvalidArgument { op: OP, detail };
    if let Some(s) = o.scale.filter(|s| !s.is_finite()) {
        return Err(invalid(format!("scale must be finite, got {s}")));
    }
    for (what, xs) in [("alibi_slopes", o.alibi_slopes), ("sinks", o.sinks)] {
        let Some(xs) = xs else { continue };
        if xs.len() != hq {
            let why = format!("{what} has {} entries for heads_q {hq}", xs.len());
            return Err(shape_error(x, why));
        }
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Err(invalid(format!(
                "{what}[{i}] is {}; it must be finite",
                xs[i]
            )));
        }
    }
    if let Some(cap) = o.softcap.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(invalid(format!(
            "softcap must be positive and finite, got {cap}"
        )));
    }
    let wmax = i32::MAX as usize;
    let past = |w: Option<usize>| w.is_some_and(|w| w > wmax);
    if past(o.window.left) || past(o.window.right) || o.sink_tokens > wmax {
        return Err(invalid(format!(
            "window {:?} / sink_tokens {} past {wmax}",
            o.window, o.sink_tokens
        )));
    }
    Ok(())
}

/// The per-call extents of the options: kv_len one a sequence, the mask
/// and the bias `[batch|1, heads_q|1, seq_q, seq_k]` (the bias f32).
fn extents(x: &Inputs, dims: &Dims) -> Result<()> {
    let (o, b, hq, sq, sk) = (x.opts, dims.b, dims.hq, dims.sq, dims.sk);
    let bad = |why: String| shape_error(x, why);
    let fits = |s: &[usize]| {
        s.len() == 4 && (s[0] == b || s[0] == 1) && (s[1] == hq || s[1] == 1) && s[2..] == [sq, sk]
    };
    let want = format!("[{b}|1, {hq}|1, {sq}, {sk}]");
    if let Some(kl) = o.kv_len.filter(|kl| kl.len() != b) {
        return Err(bad(format!(
            "kv_len has {} entries for batch {b}",
            kl.len()
        )));
    }
    if let Some(m) = o.mask.filter(|m| !fits(&m.shape())) {
        let s = shape_str(&m.shape());
        return Err(bad(format!("mask is {s}, expected {want}")));
    }
    if let Some(bias) = o.bias {
        expect_dtype(OP, "bias", bias.dtype(), &[DType::F32])?;
        if !fits(bias.shape()) {
            let s = shape_str(bias.shape());
            return Err(bad(format!("bias is {s}, expected {want}")));
        }
    }
    Ok(())
}

/// Checks the outputs given to [`attention_into`](super::attention_into):
/// bindable as they are, on q's context, in buffers of their own, `out` of
/// the output's shape and q's dtype, `lse` f32 `[batch, heads_q, seq_q]`.
pub(crate) fn outputs(x: &Inputs, dims: &Dims, out: &Tensor, lse: Option<&Tensor>) -> Result<()> {
    let mut outs = vec![("out", out)];
    outs.extend(lse.map(|t| ("lse", t)));
    Tensor::disjoint(OP, &outs, &bound_inputs(x))?;
    Tensor::same_context(OP, &outs)?;
    one_context(&[("out", out), ("q", x.q)])?;
    let want = dims.out_shape(x.opts.layout);
    expect_dtype(OP, "out", out.dtype(), &[dims.dtype])?;
    if out.shape() != want.as_slice() {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "out is {}, expected {}",
                shape_str(out.shape()),
                shape_str(&want)
            ),
        });
    }
    if let Some(l) = lse {
        expect_dtype(OP, "lse", l.dtype(), &[DType::F32])?;
        if l.shape() != dims.lse_shape() {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "lse is {}, expected {}",
                    shape_str(l.shape()),
                    shape_str(&dims.lse_shape())
                ),
            });
        }
    }
    Ok(())
}
