//! Embedding backward (`embedding.wgsl`) for the forward
//! [`embedding_into`](crate::ops::embedding::embedding_into): the gradient
//! of each table row is the sum of the `dy` rows of the tokens that read it,
//! without atomics. The host sorts the token positions by table row (a
//! stable counting sort into a CSR: offsets, then positions in increasing
//! order) and uploads it; an invocation per (table row, column) adds its
//! rows in that order, so the result is deterministic and a row that no
//! token read is zero.

use super::spec::{GradKernel, GradSpec};
use super::{fit_binding, fit_words, run, Pass};
use crate::context::Bind;
use crate::error::{expect_dtype, Error, Result};
use crate::tensor::{shape_str, DType, Tensor};

const OP: &str = "embedding_backward";

crate::shader::params! {
    /// Mirrors `Params` in `ops/grad/embedding.wgsl`.
    pub(crate) struct EmbeddingGradParams {
        /// Rows of the table's gradient and values per row.
        rows: u32,
        h: u32,
        /// Where this table's offsets and positions start in the CSR table.
        offsets: u32,
        positions: u32,
    }
}

/// The gradients [`embedding_backward_into`] writes, one per table of
/// [`EmbeddingTables`](crate::ops::embedding::EmbeddingTables), each of its
/// table's shape (`[rows, h]`) and of `dy`'s dtype; `None` skips a table
/// (a frozen one).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddingGrads<'a> {
    /// `[vocab, h]`: row `v` sums the tokens whose id is `v`.
    pub word: Option<&'a Tensor>,
    /// `[max_pos, h]`: row `t < seq` sums position `t` of every sequence;
    /// rows from `seq` on are zero.
    pub pos: Option<&'a Tensor>,
    /// `[n_types, h]`: row `k` sums the tokens of type `k`.
    pub types: Option<&'a Tensor>,
}

/// The gradients of `out = word[ids] + pos[t] + types[type_ids]` for
/// `dy [batch, seq, h]` (f32 or f16) and the forward's host ids (`batch ·
/// seq` of them, row-major; `type_ids` likewise, or all 0 when `None`).
/// Each table's gradient is written whole: rows no token read are zero.
/// Sums in f32 in increasing token order (deterministic). The ids are host
/// slices (a training loop's batch is on the host): they are checked, and
/// sorted into the CSR the kernel reads.
///
/// Errors: [`Error::Shape`] for `dy` not 3-D, ids not `batch · seq` long, a
/// gradient not `[rows, h]`, or a position table shorter than `seq`;
/// [`Error::DType`] for a gradient not of `dy`'s dtype or u32 `dy`;
/// [`Error::InvalidArgument`] for an id or type id past its table (naming
/// the token), a gradient sharing a buffer with `dy`, or tensors of two
/// contexts; [`Error::TooLarge`] past one storage binding.
pub fn embedding_backward_into(
    ids: &[u32],
    type_ids: Option<&[u32]>,
    dy: &Tensor,
    grads: EmbeddingGrads<'_>,
) -> Result<()> {
    let outs: Vec<(&str, &Tensor)> = [
        ("word", grads.word),
        ("pos", grads.pos),
        ("types", grads.types),
    ]
    .into_iter()
    .filter_map(|(n, t)| t.map(|t| (n, t)))
    .collect();
    Tensor::disjoint(OP, &outs, &[("dy", dy)])?;
    let mut all = vec![("dy", dy)];
    all.extend(&outs);
    Tensor::same_context(OP, &all)?;
    expect_dtype(OP, "dy", dy.dtype(), &DType::FLOAT)?;
    let bad = |detail: String| Err(Error::Shape { op: OP, detail });
    let [batch, seq, h] = *dy.shape() else {
        return bad(format!(
            "dy must be [batch, seq, h], got {}",
            shape_str(dy.shape())
        ));
    };
    // Past usize only for an empty dy (h = 0), which no ids can match.
    let n = batch.saturating_mul(seq);
    for (name, len) in [
        ("ids", Some(ids.len())),
        ("type_ids", type_ids.map(<[u32]>::len)),
    ] {
        if let Some(len) = len.filter(|&l| l != n) {
            return bad(format!(
                "{len} {name} for dy {} ({n} tokens)",
                shape_str(dy.shape())
            ));
        }
    }
    for (name, t) in &outs {
        expect_dtype(OP, name, t.dtype(), &[dy.dtype()])?;
        if t.shape().len() != 2 || t.shape()[1] != h {
            return bad(format!(
                "the {name} gradient is {}, expected [rows, {h}] for dy {}",
                shape_str(t.shape()),
                shape_str(dy.shape())
            ));
        }
    }
    if let Some(pos) = grads.pos.filter(|p| p.shape()[0] < seq) {
        return bad(format!(
            "the pos gradient is {}, but dy {} has sequences of {seq} tokens: it needs {seq} \
             position rows",
            shape_str(pos.shape()),
            shape_str(dy.shape())
        ));
    }
    fit_binding(OP, &all)?;
    let word_key = |r: usize| ids[r];
    let pos_key = |r: usize| (r % seq.max(1)) as u32;
    let type_key = |r: usize| type_ids.map_or(0, |t| t[r]);
    let keys: [(&str, Option<&Tensor>, &Key); 3] = [
        ("id", grads.word, &word_key),
        ("position", grads.pos, &pos_key),
        ("type id", grads.types, &type_key),
    ];
    // Ids are checked even when h = 0 (every gradient empty), as the
    // forward lookup checks them.
    let mut words = 0usize;
    for (what, grad, key) in keys {
        let Some(grad) = grad else { continue };
        let rows = grad.shape()[0];
        if let Some(r) = (0..n).find(|&r| key(r) as usize >= rows) {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!(
                    "token {r} (sequence {}, position {}) has {what} {}, past the {rows} rows of \
                     its table",
                    r / seq.max(1),
                    r % seq.max(1),
                    key(r)
                ),
            });
        }
        words = words.saturating_add(rows.saturating_add(n).saturating_add(1));
    }
    if h == 0 {
        return Ok(());
    }
    let ctx = dy.context();
    // The CSR of each table: [offsets (rows + 1) | positions (n)] in one
    // table; `keys` gives each token's row.
    fit_words(ctx, OP, words, "the token CSR of the tables")?;
    let mut csr: Vec<u32> = Vec::with_capacity(words);
    let mut tables = Vec::new();
    for (_, grad, key) in keys {
        let Some(grad) = grad else { continue };
        let rows = grad.shape()[0];
        let offsets = csr.len();
        csr.extend(counting_sort(n, rows, key));
        tables.push((grad, rows, offsets, offsets + rows + 1));
    }
    let table = ctx.table(&csr);
    let passes: Vec<Pass> = tables
        .iter()
        .filter(|(grad, ..)| !grad.is_empty())
        .map(|&(grad, rows, offsets, positions)| {
            let p = EmbeddingGradParams {
                rows: rows as u32,
                h: h as u32,
                offsets: offsets as u32,
                positions: positions as u32,
            };
            let spec = GradSpec {
                dtype: dy.dtype(),
                kernel: GradKernel::EmbeddingRows,
            };
            let binds: Vec<(u32, Bind)> = vec![(1, table.bind()), (2, dy.bind()), (3, grad.bind())];
            Pass::new(ctx, spec, &p, binds, rows * h, 64)
        })
        .collect();
    if passes.is_empty() {
        return Ok(());
    }
    run(ctx, OP, &passes)
}

/// Each token's row in one table.
type Key<'a> = dyn Fn(usize) -> u32 + 'a;

/// The CSR of `n` tokens over `rows` table rows by `key` (each < `rows`):
/// `rows + 1` offsets, then the tokens sorted by row, in increasing order
/// within a row (a stable counting sort).
fn counting_sort(n: usize, rows: usize, key: &Key) -> Vec<u32> {
    let mut out = vec![0u32; rows + 1 + n];
    for r in 0..n {
        out[key(r) as usize + 1] += 1;
    }
    for i in 0..rows {
        out[i + 1] += out[i];
    }
    let (offsets, positions) = out.split_at_mut(rows + 1);
    let mut next: Vec<u32> = offsets[..rows].to_vec();
    for r in 0..n {
        let k = key(r) as usize;
        positions[next[k] as usize] = r as u32;
        next[k] += 1;
    }
    out
}
