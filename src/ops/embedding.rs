//! Embedding lookup: the sum of token, position and token-type rows for a
//! batch of token ids (a BERT encoder's input, before its layer norm).
//! Kernel source: `ops/embedding.wgsl`.

use crate::context::{Bind, Spec};
use crate::error::{expect_dtype, Error, Result};
use crate::shader;
use crate::tensor::{shape_str, DType, Tensor};

const SRC: &str = include_str!("embedding.wgsl");
const OP: &str = "embedding";

crate::shader::params! {
    /// Mirrors `Params` in `ops/embedding.wgsl`.
    pub(crate) struct EmbeddingParams {
        /// Rows (batch · seq) and values per row.
        rows: u32,
        h: u32,
        seq: u32,
        vocab: u32,
        /// Rows of the position and token-type tables.
        npos: u32,
        ntypes: u32,
        _p0: u32,
        _p1: u32,
    }
}

crate::shader::defines! {
    /// Defines of `ops/embedding.wgsl`.
    pub(crate) enum EmbeddingDefine {
        TypeIds = "TYPE_IDS",
    }
}

/// One embedding kernel specialisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EmbeddingSpec {
    pub dtype: DType,
    pub type_ids: bool,
}

impl Spec for EmbeddingSpec {
    fn family(&self) -> &'static str {
        "embedding"
    }
    fn entry(&self) -> &'static str {
        "embedding"
    }
    fn source(&self) -> Result<String> {
        let d: &[EmbeddingDefine] = if self.type_ids {
            &[EmbeddingDefine::TypeIds]
        } else {
            &[]
        };
        shader::render(self, SRC, self.dtype, false, d, &[])
    }
}

impl EmbeddingSpec {
    #[cfg(test)]
    pub(crate) fn reachable() -> Vec<EmbeddingSpec> {
        [DType::F32, DType::F16]
            .into_iter()
            .flat_map(|dtype| [false, true].map(|type_ids| EmbeddingSpec { dtype, type_ids }))
            .collect()
    }
}

/// The tables of an embedding layer: `word [vocab, h]`, `pos [max_pos, h]`,
/// `types [n_types, h]`, one dtype (f32 or f16).
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingTables<'a> {
    /// Token rows.
    pub word: &'a Tensor,
    /// Position rows (position `t` of every sequence reads row `t`).
    pub pos: &'a Tensor,
    /// Token-type (segment) rows.
    pub types: &'a Tensor,
}

/// The operands' contexts, buffers, dtypes and shapes; `(batch, seq, h)`.
fn check(
    ids: &Tensor,
    type_ids: Option<&Tensor>,
    tables: EmbeddingTables<'_>,
    out: &Tensor,
) -> Result<(usize, usize, usize)> {
    let EmbeddingTables { word, pos, types } = tables;
    let mut all = vec![("ids", ids), ("word", word), ("pos", pos), ("types", types)];
    all.extend(type_ids.map(|t| ("type_ids", t)));
    Tensor::disjoint(OP, &[("out", out)], &all)?;
    all.push(("out", out));
    Tensor::same_context(OP, &all)?;
    let bad = |detail: String| Err(Error::Shape { op: OP, detail });
    expect_dtype(OP, "ids", ids.dtype(), &[DType::U32])?;
    if let Some(t) = type_ids {
        expect_dtype(OP, "type_ids", t.dtype(), &[DType::U32])?;
    }
    expect_dtype(OP, "word", word.dtype(), &DType::FLOAT)?;
    for (name, t) in [("pos", pos), ("types", types), ("out", out)] {
        expect_dtype(OP, name, t.dtype(), &[word.dtype()])?;
    }
    if ids.shape().len() != 2 {
        return bad(format!(
            "ids must be [batch, seq] u32, got {} {}",
            ids.dtype(),
            shape_str(ids.shape())
        ));
    }
    if let Some(t) = type_ids {
        if t.shape() != ids.shape() {
            return bad(format!(
                "type_ids must be u32 of the ids' shape {}, got {} {}",
                shape_str(ids.shape()),
                t.dtype(),
                shape_str(t.shape())
            ));
        }
    }
    let (batch, seq) = (ids.shape()[0], ids.shape()[1]);
    let dtype = word.dtype();
    let h = word.shape().get(1).copied().unwrap_or(0);
    for (name, t) in [("word", word), ("pos", pos), ("types", types)] {
        if t.shape().len() != 2 || t.shape()[1] != h {
            return bad(format!(
                "tables must be [rows, h] of one float dtype: word is {} {}, {name} is {} {}",
                dtype,
                shape_str(word.shape()),
                t.dtype(),
                shape_str(t.shape())
            ));
        }
    }
    if seq > pos.shape()[0] {
        return bad(format!(
            "sequences of {seq} tokens need {seq} position rows; pos is {}",
            shape_str(pos.shape())
        ));
    }
    if out.shape() != [batch, seq, h] {
        return bad(format!(
            "out is {} {}, expected {dtype} {}",
            out.dtype(),
            shape_str(out.shape()),
            shape_str(&[batch, seq, h])
        ));
    }
    Ok((batch, seq, h))
}

/// `out [batch, seq, h] = word[ids] + pos[t] + types[type_ids]` for `ids
/// [batch, seq]` u32 (and `type_ids` of the same shape, or all 0 when `None`).
/// An id past its table gives a row of NaN (ids on the device cannot be
/// checked without a readback).
///
/// Errors: [`Error::Shape`] naming the tensors whose shapes do not fit
/// (tables of different widths, `seq` over the position table, `out` not
/// `[batch, seq, h]`); [`Error::DType`] for ids not u32, tables not of one
/// float dtype, or `out` not of the tables' dtype;
/// [`Error::TooLarge`] for a table over one storage binding;
/// [`Error::InvalidArgument`] for tensors of two contexts or an output that
/// shares a buffer with an input.
pub fn embedding_into(
    ids: &Tensor,
    type_ids: Option<&Tensor>,
    tables: EmbeddingTables<'_>,
    out: &Tensor,
) -> Result<()> {
    let EmbeddingTables { word, pos, types } = tables;
    let (batch, seq, h) = check(ids, type_ids, tables, out)?;
    let ctx = ids.context();
    for (name, t) in [("word", word), ("pos", pos), ("types", types), ("out", out)] {
        if t.padded_bytes() > ctx.max_binding() {
            return Err(Error::TooLarge {
                op: OP,
                what: format!("{name} {}", shape_str(t.shape())),
                size: t.padded_bytes(),
                limit: ctx.max_binding(),
                kind: crate::Limit::StorageBinding,
            });
        }
    }
    if out.is_empty() {
        return Ok(());
    }
    let n = batch * seq * h;
    if n > u32::MAX as usize {
        return Err(Error::TooLarge {
            op: OP,
            what: "the output's element count".into(),
            size: n as u64,
            limit: u32::MAX as u64,
            kind: crate::Limit::U32Index,
        });
    }
    let spec = EmbeddingSpec {
        dtype: word.dtype(),
        type_ids: type_ids.is_some(),
    };
    let pipe = ctx.pipeline(&spec)?;
    let p = EmbeddingParams {
        rows: (batch * seq) as u32,
        h: h as u32,
        seq: seq as u32,
        vocab: word.shape()[0] as u32,
        npos: pos.shape()[0] as u32,
        ntypes: types.shape()[0] as u32,
        ..Default::default()
    };
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let mut binds: Vec<(u32, Bind)> = vec![
            (1, ids.bind()),
            (2, word.bind()),
            (3, pos.bind()),
            (4, types.bind()),
            (6, out.bind()),
        ];
        if let Some(t) = type_ids {
            binds.push((5, t.bind()));
        }
        let mut enc = ctx.encoder();
        let (gx, gy) = ctx.grid((n as u32).div_ceil(256));
        ctx.dispatch(&mut enc, &pipe, &ubuf, &binds, (gx, gy, 1));
        ctx.submit(enc);
        Ok(())
    })
}
