//! Next-token sampling on the device: greedy, temperature and top-p
//! (nucleus), one token per chosen logits row, so a decoder never reads its
//! logits back. Kernel source: `ops/sample.wgsl`; the f64 reference is
//! [`crate::reference::sample`].
//!
//! The randomness is the caller's: each output takes a uniform u in [0, 1)
//! (from a seeded RNG, so a run replays exactly), and the token is the
//! inverse of the kept tokens' cumulative distribution at u, in index order.

use crate::context::{Bind, Spec};
use crate::error::{expect_dtype, Error, Result};
use crate::shader;
use crate::tensor::{shape_str, DType, Tensor};

const SRC: &str = include_str!("sample.wgsl");
const OP: &str = "sample";

crate::shader::params! {
    /// Mirrors `Params` in `ops/sample.wgsl`.
    pub(crate) struct SampleParams {
        /// Outputs (a workgroup each) and tokens per logits row.
        outputs: u32,
        vocab: u32,
        /// 1 / temperature, rounded to f32 (unused by the greedy kernel).
        inv_temperature: f32,
        /// The nucleus' mass; 1 skips the threshold search.
        top_p: f32,
    }
}

crate::shader::defines! {
    /// Defines of `ops/sample.wgsl`.
    pub(crate) enum SampleDefine {
        Greedy = "GREEDY",
    }
}

/// One sampling kernel specialisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SampleSpec {
    pub dtype: DType,
    /// Temperature 0: the argmax only.
    pub greedy: bool,
}

impl Spec for SampleSpec {
    fn family(&self) -> &'static str {
        "sample"
    }
    fn entry(&self) -> &'static str {
        if self.greedy {
            "sample_greedy"
        } else {
            "sample"
        }
    }
    fn source(&self) -> Result<String> {
        let d: &[SampleDefine] = if self.greedy {
            &[SampleDefine::Greedy]
        } else {
            &[]
        };
        shader::render(self, SRC, self.dtype, false, d, &[])
    }
}

impl SampleSpec {
    #[cfg(test)]
    pub(crate) fn reachable() -> Vec<SampleSpec> {
        [DType::F32, DType::F16]
            .into_iter()
            .flat_map(|dtype| [false, true].map(|greedy| SampleSpec { dtype, greedy }))
            .collect()
    }
}

/// Options of [`sample_into`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// Divides the logits before the softmax; 0 is greedy (the argmax, and
    /// `top_p` is not used). Finite and ≥ 0. Default 1.
    pub temperature: f32,
    /// The nucleus: the smallest set of most probable tokens whose
    /// probability mass is ≥ `top_p` is kept (all tokens tied with its least
    /// probable one included), the rest never sampled. In (0, 1]; 1 keeps
    /// every token. Default 1.
    pub top_p: f32,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            temperature: 1.0,
            top_p: 1.0,
        }
    }
}

impl SampleOptions {
    /// Greedy decoding: temperature 0, the argmax of each row.
    pub fn greedy() -> Self {
        SampleOptions {
            temperature: 0.0,
            top_p: 1.0,
        }
    }
}

/// `out[i]` = a token of row `rows[i]` of `logits [n, vocab]` (f32 or f16),
/// drawn with the uniform `uniforms[i]` ∈ [0, 1): `rows` may come in any
/// order and repeat (e.g. each sequence's last real position of
/// `[batch · s_new, vocab]`). `out` is `[rows.len()]` u32.
///
/// With `temperature` 0, the argmax (equal logits: the lowest index).
/// Else p = softmax(logits / temperature) (shifted by the row's maximum,
/// f32), the nucleus of `top_p` kept (see [`SampleOptions::top_p`]), and the
/// token is the first index i whose running kept mass over indices ≤ i
/// exceeds u · (kept mass); where rounding leaves no index past it, the last
/// kept one. A −inf logit is never sampled, unless every logit of the row
/// is −inf (then all tie: the argmax is 0, sampling is uniform); +inf
/// logits share the whole mass. A row holding a NaN gives its first NaN's
/// index at any temperature (NaN ranks above every number, as in
/// `torch.argmax`).
///
/// Errors: [`Error::Shape`] for logits not 2-D or with no tokens (vocab
/// 0), `rows` and `uniforms` of different lengths, or `out` not
/// `[rows.len()]` (naming the shapes); [`Error::DType`] for u32 logits or
/// `out` not u32; [`Error::InvalidArgument`] for a row index ≥ n (naming
/// it), a uniform outside [0, 1), a temperature negative or not finite, a
/// `top_p` outside (0, 1], `out` sharing a buffer with `logits`, or tensors
/// of two contexts; [`Error::TooLarge`] past one storage binding. Empty
/// `rows`: nothing runs.
pub fn sample_into(
    logits: &Tensor,
    rows: &[u32],
    uniforms: &[f32],
    opts: &SampleOptions,
    out: &Tensor,
) -> Result<()> {
    // Contexts first: buffers of two devices can compare equal.
    Tensor::same_context(OP, &[("logits", logits), ("out", out)])?;
    Tensor::disjoint(OP, &[("out", out)], &[("logits", logits)])?;
    expect_dtype(OP, "logits", logits.dtype(), &DType::FLOAT)?;
    expect_dtype(OP, "out", out.dtype(), &[DType::U32])?;
    let bad = |detail: String| Err(Error::Shape { op: OP, detail });
    let [n, vocab] = *logits.shape() else {
        return bad(format!(
            "logits must be [n, vocab], got {}",
            shape_str(logits.shape())
        ));
    };
    if vocab == 0 {
        return bad(format!(
            "logits {} have no tokens to sample",
            shape_str(logits.shape())
        ));
    }
    if uniforms.len() != rows.len() || out.shape() != [rows.len()] {
        return bad(format!(
            "{} rows need as many uniforms (got {}) and out [{}] u32 (got {})",
            rows.len(),
            uniforms.len(),
            rows.len(),
            shape_str(out.shape())
        ));
    }
    let invalid = |detail: String| Err(Error::InvalidArgument { op: OP, detail });
    if let Some((i, &r)) = rows.iter().enumerate().find(|&(_, &r)| r as usize >= n) {
        return invalid(format!(
            "rows[{i}] is {r}, past the {n} rows of logits {}",
            shape_str(logits.shape())
        ));
    }
    if let Some((i, &u)) = uniforms
        .iter()
        .enumerate()
        .find(|&(_, u)| !(0.0..1.0).contains(u))
    {
        return invalid(format!("uniforms[{i}] is {u}, outside [0, 1)"));
    }
    let t = opts.temperature;
    if !(t.is_finite() && t >= 0.0) {
        return invalid(format!("temperature must be finite and ≥ 0, got {t}"));
    }
    if !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
        return invalid(format!("top_p must be in (0, 1], got {}", opts.top_p));
    }
    let ctx = logits.context();
    let picks_bytes = (rows.len() as u64).saturating_mul(8);
    let sizes = [
        (
            format!("logits {}", shape_str(logits.shape())),
            logits.padded_bytes(),
        ),
        (
            format!("out {}", shape_str(out.shape())),
            out.padded_bytes(),
        ),
        (
            format!("the table of {} rows and uniforms", rows.len()),
            picks_bytes,
        ),
    ];
    for (what, size) in sizes {
        if size > ctx.max_binding() {
            return Err(Error::TooLarge {
                op: OP,
                what,
                size,
                limit: ctx.max_binding(),
                kind: crate::Limit::StorageBinding,
            });
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let spec = SampleSpec {
        dtype: logits.dtype(),
        greedy: t == 0.0,
    };
    let pipe = ctx.pipeline(&spec)?;
    let p = SampleParams {
        outputs: rows.len() as u32,
        vocab: vocab as u32,
        inv_temperature: if t == 0.0 { 0.0 } else { 1.0 / t },
        top_p: opts.top_p,
    };
    // Per output: its row and its uniform's bits.
    let table: Vec<u32> = rows
        .iter()
        .zip(uniforms)
        .flat_map(|(&r, &u)| [r, u.to_bits()])
        .collect();
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let picks = ctx.table(&table);
        let binds: Vec<(u32, Bind)> = vec![(1, logits.bind()), (2, picks.bind()), (3, out.bind())];
        let mut enc = ctx.encoder();
        let (gx, gy) = ctx.grid(rows.len() as u32);
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })
}

/// [`sample_into`] into a new `[rows.len()]` u32 tensor.
///
/// Errors: as [`sample_into`].
pub fn sample(
    logits: &Tensor,
    rows: &[u32],
    uniforms: &[f32],
    opts: &SampleOptions,
) -> Result<Tensor> {
    let out = Tensor::empty(logits.context(), &[rows.len()], DType::U32)?;
    sample_into(logits, rows, uniforms, opts, &out)?;
    Ok(out)
}
