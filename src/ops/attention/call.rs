//! A checked and planned call on its way to the kernels: what each kernel's
//! `run` takes.

use super::check::Dims;
use super::options::AttentionOptions;
use super::spec::{slot, AttentionParams};
use crate::context::{Bind, Context, Table};
use crate::tensor::Tensor;

/// One attention call: its operands bindable as they are (views of q, k, v
/// already copied), its outputs, dims, options, uniform params and aux table.
pub(crate) struct Call<'a> {
    pub ctx: &'a Context,
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    /// The additive bias.
    pub bias: Option<&'a Tensor>,
    /// The boolean mask's words.
    pub mask: Option<&'a Tensor>,
    pub out: &'a Tensor,
    pub lse: Option<&'a Tensor>,
    pub dims: &'a Dims,
    pub opts: &'a AttentionOptions<'a>,
    /// The params every kernel reads (a kernel that adds its own sets them
    /// on a copy).
    pub params: AttentionParams,
    /// kv_len, the block table, the per-head slopes and sinks.
    pub aux: Table<'a>,
}

impl Call<'_> {
    /// The bindings every fused kernel shares: q, its output `out` (the
    /// call's, or split-KV's partial outputs), the aux table, the bias, the
    /// mask and the per-row statistics `stats` (the LSE, or split-KV's
    /// partial (max, sum)).
    pub fn binds<'b>(&'b self, out: Bind<'b>, stats: Option<Bind<'b>>) -> Vec<(u32, Bind<'b>)> {
        let mut binds = vec![
            (slot::Q, self.q.bind()),
            (slot::OUT, out),
            (slot::AUX, self.aux.bind()),
        ];
        if let Some(b) = self.bias {
            binds.push((slot::BIAS, b.bind()));
        }
        if let Some(m) = self.mask {
            binds.push((slot::MASK, m.bind()));
        }
        if let Some(s) = stats {
            binds.push((slot::STATS, s));
        }
        binds
    }

    /// K and V bound as the storage buffers they are.
    pub fn kv_buffers(&self) -> [(u32, Bind<'_>); 2] {
        [(slot::K, self.k.bind()), (slot::V, self.v.bind())]
    }
}
