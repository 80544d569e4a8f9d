//! The `grad` family's one kernel spec: which kernel ([`GradKernel`]), its
//! storage dtype and flags. It is the pipeline-cache key and the only input
//! to the WGSL templates (one file per kernel, beside its launcher).

use crate::context::Spec;
use crate::error::Result;
use crate::ops::matmul::Activation;
use crate::shader;
use crate::tensor::DType;

const ACTIVATION: &str = include_str!("activation.wgsl");
const ADAMW: &str = include_str!("adamw.wgsl");
const ADD: &str = include_str!("add.wgsl");
const COLSUM: &str = include_str!("colsum.wgsl");
const CROSS_ENTROPY: &str = include_str!("cross_entropy.wgsl");
const EMBEDDING: &str = include_str!("embedding.wgsl");
const NORM: &str = include_str!("norm.wgsl");
const POOLING: &str = include_str!("pooling.wgsl");
const TRANSPOSE: &str = include_str!("transpose.wgsl");

crate::shader::defines! {
    /// Defines of the `grad` family's templates.
    pub(crate) enum GradDefine {
        InF16 = "IN_F16",
        OutF16 = "OUT_F16",
        ActRelu = "ACT_RELU",
        ActGeluTanh = "ACT_GELU_TANH",
        ActGeluErf = "ACT_GELU_ERF",
        ActSilu = "ACT_SILU",
        Backward = "BACKWARD",
        Accumulate = "ACCUMULATE",
        Residual = "RESIDUAL",
        Rows = "ROWS",
        Partials = "PARTIALS",
        LossSum = "LOSS_SUM",
    }
}

/// The kernels of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum GradKernel {
    /// Column sums of blocks of rows (`colsum.wgsl`); input and output
    /// element types (f32 or f16; the spec's dtype is f16 if either is).
    ColumnSum { input: DType, output: DType },
    /// `act(x)` or, `backward`, `dy · act'(x)` (`activation.wgsl`).
    Activation { act: Activation, backward: bool },
    /// `out = a + b` or, `accumulate`, `out += b` (`add.wgsl`).
    Add { accumulate: bool },
    /// Layer-norm backward per row: dx and each row's (mean, rstd)
    /// (`norm.wgsl`); `rows`: an invocation per row, else a workgroup.
    NormRows { residual: bool, rows: bool },
    /// Layer-norm backward: dγ and dβ partial sums over blocks of rows.
    NormPartials { residual: bool },
    /// Sums of dy rows per table row through a CSR (`embedding.wgsl`).
    EmbeddingRows,
    /// Masked mean pooling backward (`pooling.wgsl`): dy f32, dx of dtype.
    PoolBackward,
    /// Fused softmax cross-entropy per row (`cross_entropy.wgsl`); `rows`: an
    /// invocation per row, else a workgroup.
    CrossEntropy { rows: bool },
    /// The mean of the per-row losses (f32).
    LossSum,
    /// One AdamW step (`adamw.wgsl`): the gradient in dtype, the rest f32.
    AdamW,
    /// A 2-D transpose (`transpose.wgsl`), for the linear backward.
    Transpose,
}

/// One `grad` kernel specialisation: the kernel and its storage type `T`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GradSpec {
    pub dtype: DType,
    pub kernel: GradKernel,
}

impl GradSpec {
    /// The column-sum spec reading `input` and writing `output`.
    pub fn column_sum(input: DType, output: DType) -> GradSpec {
        let f16 = input == DType::F16 || output == DType::F16;
        GradSpec {
            dtype: if f16 { DType::F16 } else { DType::F32 },
            kernel: GradKernel::ColumnSum { input, output },
        }
    }
}

fn act_define(act: Activation) -> Option<GradDefine> {
    match act {
        Activation::Relu => Some(GradDefine::ActRelu),
        Activation::GeluTanh => Some(GradDefine::ActGeluTanh),
        Activation::GeluErf => Some(GradDefine::ActGeluErf),
        Activation::Silu => Some(GradDefine::ActSilu),
        _ => None,
    }
}

impl Spec for GradSpec {
    fn family(&self) -> &'static str {
        "grad"
    }
    fn entry(&self) -> &'static str {
        match self.kernel {
            GradKernel::ColumnSum { .. } => "column_sum",
            GradKernel::Activation {
                backward: false, ..
            } => "activation",
            GradKernel::Activation { backward: true, .. } => "activation_backward",
            GradKernel::Add { accumulate: false } => "add",
            GradKernel::Add { accumulate: true } => "accumulate",
            GradKernel::NormRows { rows: true, .. } => "layer_norm_backward_rows",
            GradKernel::NormRows { rows: false, .. } => "layer_norm_backward",
            GradKernel::NormPartials { .. } => "layer_norm_backward_partials",
            GradKernel::EmbeddingRows => "embedding_backward",
            GradKernel::PoolBackward => "mean_pool_backward",
            GradKernel::CrossEntropy { rows: true } => "cross_entropy_rows",
            GradKernel::CrossEntropy { rows: false } => "cross_entropy",
            GradKernel::LossSum => "loss_sum",
            GradKernel::AdamW => "adamw_step",
            GradKernel::Transpose => "transpose",
        }
    }
    fn source(&self) -> Result<String> {
        use GradDefine as D;
        let mut d = Vec::new();
        let norm: String;
        let src: &str = match self.kernel {
            GradKernel::ColumnSum { input, output } => {
                d.extend((input == DType::F16).then_some(D::InF16));
                d.extend((output == DType::F16).then_some(D::OutF16));
                COLSUM
            }
            GradKernel::Activation { act, backward } => {
                d.extend(act_define(act));
                d.extend(backward.then_some(D::Backward));
                ACTIVATION
            }
            GradKernel::Add { accumulate } => {
                d.extend(accumulate.then_some(D::Accumulate));
                ADD
            }
            GradKernel::NormRows { residual, rows } => {
                d.extend(residual.then_some(D::Residual));
                d.extend(rows.then_some(D::Rows));
                norm = [crate::ops::norm::Z_SRC, NORM].concat();
                &norm
            }
            GradKernel::NormPartials { residual } => {
                d.extend(residual.then_some(D::Residual));
                d.push(D::Partials);
                norm = [crate::ops::norm::Z_SRC, NORM].concat();
                &norm
            }
            GradKernel::EmbeddingRows => EMBEDDING,
            GradKernel::PoolBackward => POOLING,
            GradKernel::CrossEntropy { rows } => {
                d.extend(rows.then_some(D::Rows));
                CROSS_ENTROPY
            }
            GradKernel::LossSum => {
                d.push(D::LossSum);
                CROSS_ENTROPY
            }
            GradKernel::AdamW => ADAMW,
            GradKernel::Transpose => TRANSPOSE,
        };
        shader::render(self, src, self.dtype, false, &d, &[])
    }
}

/// Every spec the family's launchers can produce (f32 and f16 storage).
#[cfg(test)]
pub(crate) fn reachable() -> Vec<GradSpec> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let spec = |kernel| GradSpec { dtype, kernel };
        for output in [DType::F32, DType::F16] {
            v.push(GradSpec::column_sum(dtype, output));
        }
        for act in Activation::ALL {
            for backward in [false, true] {
                v.push(spec(GradKernel::Activation { act, backward }));
            }
        }
        for flag in [false, true] {
            v.push(spec(GradKernel::Add { accumulate: flag }));
            v.push(spec(GradKernel::NormPartials { residual: flag }));
            v.push(spec(GradKernel::CrossEntropy { rows: flag }));
            for rows in [false, true] {
                v.push(spec(GradKernel::NormRows {
                    residual: flag,
                    rows,
                }));
            }
        }
        v.push(spec(GradKernel::EmbeddingRows));
        v.push(spec(GradKernel::PoolBackward));
        v.push(spec(GradKernel::AdamW));
        v.push(spec(GradKernel::Transpose));
    }
    v.push(GradSpec {
        dtype: DType::F32,
        kernel: GradKernel::LossSum,
    });
    v
}
