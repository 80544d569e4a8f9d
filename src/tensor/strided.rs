//! The strided copies: a gather copies a view ([`Tensor::narrow`]) into a new
//! contiguous tensor ([`Tensor::contiguous`]); a scatter copies a tensor into
//! a view ([`Tensor::copy_from`]: a gradient written into its columns of a
//! fused projection's). They live beside the tensor, not among the ops, so
//! that making a view contiguous never calls up into an op. Kernel source:
//! `tensor/strided.wgsl`, on 32-bit words for every dtype (two f16 elements
//! per word; the scatter takes 32-bit elements only, as a word of a view can
//! hold an f16 element outside it).

use super::{shape_str, Tensor};
use crate::context::{Bind, Spec, Window};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shader;

const SRC: &str = include_str!("strided.wgsl");
const OP: &str = "Tensor::contiguous";

crate::shader::params! {
    /// Mirrors `Params` in `tensor/strided.wgsl`.
    pub(crate) struct GatherParams {
        /// Output elements.
        n: u32,
        /// The view's first element from the source binding's start.
        src_off: u32,
        _p0: u32,
        _p1: u32,
        /// The view's shape, padded with leading 1s to 4 dims.
        shape: [u32; 4],
        /// Its element strides, innermost last.
        strides: [u32; 4],
    }
}

crate::shader::defines! {
    /// Defines of `tensor/strided.wgsl`.
    pub(crate) enum GatherDefine {
        Half = "HALF",
        Scatter = "SCATTER",
    }
}

/// One strided-copy specialisation: 16-bit elements or 32-bit ones, into a
/// contiguous tensor or (32-bit only) into a view.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GatherSpec {
    pub half: bool,
    pub scatter: bool,
}

impl Spec for GatherSpec {
    fn family(&self) -> &'static str {
        "gather"
    }
    fn entry(&self) -> &'static str {
        "gather"
    }
    fn source(&self) -> Result<String> {
        let mut defines = Vec::new();
        if self.half {
            defines.push(GatherDefine::Half);
        }
        if self.scatter {
            defines.push(GatherDefine::Scatter);
        }
        shader::render(self, SRC, DType::U32, false, &defines, &[])
    }
}

impl GatherSpec {
    #[cfg(test)]
    pub(crate) fn reachable() -> Vec<GatherSpec> {
        vec![
            GatherSpec {
                half: false,
                scatter: false,
            },
            GatherSpec {
                half: true,
                scatter: false,
            },
            GatherSpec {
                half: false,
                scatter: true,
            },
        ]
    }
}

/// Merges dims that are contiguous with each other (and drops size-1 dims), so
/// that views of up to 4 irregular dims fit the kernel.
fn collapse(shape: &[usize], strides: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (&n, &s) in shape.iter().zip(strides) {
        if n == 1 {
            continue;
        }
        match out.last_mut() {
            Some((pn, ps)) if *ps == s * n => {
                *pn *= n;
                *ps = s;
            }
            _ => out.push((n, s)),
        }
    }
    out.into_iter().unzip()
}

/// What the gather kernel reads of a view: its dims merged into at most 4,
/// their strides, and the storage window of its buffer that holds its span.
struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    window: Window,
}

/// The checks a strided copy of the view `src` makes before it copies (the
/// view's dims merge into 4, its span fits one storage window, the copy fits
/// one binding), so that a planner can make them without copying; `what`
/// names the view in errors.
fn layout(src: &Tensor, strides: &[usize], what: &str) -> Result<Layout> {
    layout_for(OP, src, strides, what)
}

fn layout_for(op: &'static str, src: &Tensor, strides: &[usize], what: &str) -> Result<Layout> {
    let (shape, strides) = collapse(src.shape(), strides);
    if shape.len() > 4 {
        return Err(Error::InvalidArgument {
            op,
            detail: format!(
                "{what} of shape {} whose strides do not merge into 4 dims",
                shape_str(src.shape())
            ),
        });
    }
    let ctx = src.context();
    let eb = src.dtype().size();
    let span = shape
        .iter()
        .zip(&strides)
        .map(|(&n, &s)| (n as u64 - 1) * s as u64)
        .sum::<u64>()
        + 1;
    let too_large = |size: u64| Error::TooLarge {
        op,
        what: format!("{what} of shape {}", shape_str(src.shape())),
        size,
        limit: ctx.max_binding(),
        kind: crate::error::Limit::StorageBinding,
    };
    // The kernel reads 32-bit words: f16 windows start on a word.
    let w = ctx
        .window(src.buffer().size(), eb, src.offset() / eb, span)
        .ok_or_else(|| too_large(span * eb))?;
    let out_bytes = super::padded_bytes(src.len(), src.dtype());
    if out_bytes > ctx.max_binding() {
        return Err(too_large(out_bytes));
    }
    Ok(Layout {
        shape,
        strides,
        window: w,
    })
}

impl Tensor {
    /// Fails as [`Tensor::contiguous`] would on this tensor, without copying
    /// (a planner's check of a view it will gather); `name` names it.
    pub(crate) fn check_gather(&self, name: &str) -> Result<()> {
        if self.is_dense() || self.is_empty() {
            return Ok(());
        }
        layout(self, &self.strides(), &format!("{name}, a view")).map(|_| ())
    }
}

/// The kernel's parameters for `n` elements of a view of (merged) `shape`
/// and `strides` read or written through window `w` (the layout checks
/// keep every figure below one binding's elements, so within u32).
fn params(n: usize, shape: &[usize], strides: &[usize], w: &Window) -> GatherParams {
    let pad = 4 - shape.len();
    let mut p = GatherParams {
        n: n as u32,
        src_off: w.elem_offset,
        ..Default::default()
    };
    p.shape = [1; 4];
    for (i, (&n, &s)) in shape.iter().zip(strides).enumerate() {
        p.shape[pad + i] = n as u32;
        p.strides[pad + i] = s as u32;
    }
    p
}

/// Copies the view `src` (shape, element strides, byte offset) into `out`, a
/// new contiguous tensor of the same shape and dtype.
pub(crate) fn gather_into(src: &Tensor, strides: &[usize], out: &Tensor) -> Result<()> {
    let n = src.len();
    if n == 0 {
        return Ok(());
    }
    let Layout {
        shape,
        strides,
        window: w,
    } = layout(src, strides, "a view")?;
    let ctx = src.context();
    let p = params(n, &shape, &strides, &w);
    let half = src.dtype() == DType::F16;
    let pipeline = ctx.pipeline(&GatherSpec {
        half,
        scatter: false,
    })?;
    let words = if half { n.div_ceil(2) } else { n };
    ctx.scoped(OP, || {
        let ubuf = ctx.uniform(&p);
        let mut enc = ctx.encoder();
        let (gx, gy) = ctx.grid((words as u32).div_ceil(256));
        ctx.dispatch(
            &mut enc,
            &pipeline,
            &ubuf,
            &[(1, Bind::window(src.buffer(), &w)), (2, out.bind())],
            (gx, gy, 1),
        );
        ctx.submit(enc);
        Ok(())
    })
}

impl Tensor {
    /// Copies `src` (this tensor's shape and dtype) into this tensor on the
    /// device, in queue order with the ops; this tensor may be a view
    /// ([`Tensor::narrow`], [`Tensor::reshape`] of one), whose elements are
    /// written in place and the rest of its buffer left as it was (e.g. the
    /// gradients of q, k and v into their columns of a fused `[rows, 3 · e]`
    /// projection's gradient). `src` may be a view too (gathered first).
    ///
    /// Errors: [`Error::Shape`] naming both shapes; [`Error::DType`] for
    /// `src` of another dtype; [`Error::InvalidArgument`] for tensors of two
    /// contexts or one buffer, an f16 strided view (its words hold elements
    /// outside it), or a view whose strides do not merge into 4 dims;
    /// [`Error::TooLarge`] for a copy past one storage binding.
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        const OP: &str = "Tensor::copy_from";
        // Not `same_context`: that one also asks for bindable tensors, and
        // this one writes views it cannot bind.
        Tensor::one_context(OP, &[("self", self), ("src", src)])?;
        Tensor::disjoint(OP, &[("self", self)], &[("src", src)])?;
        crate::error::expect_dtype(OP, "src", src.dtype(), &[self.dtype()])?;
        if src.shape() != self.shape() {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "src {} copied into a tensor of shape {}",
                    shape_str(src.shape()),
                    shape_str(self.shape())
                ),
            });
        }
        if self.is_empty() {
            return Ok(());
        }
        let src = src.contiguous()?;
        if self.is_contiguous() {
            // One buffer copy (an f16 run that starts or ends inside a word
            // holding elements outside it is refused by its check).
            return self.copy_run(OP, self.offset, self.bytes(), &src);
        }
        if self.dtype() == DType::F16 {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!(
                    "writing into an f16 view of shape {} whose 32-bit words hold elements \
                     outside it: copy into the tensor it views, or an f32 one",
                    shape_str(self.shape())
                ),
            });
        }
        let Layout {
            shape,
            strides,
            window: w,
        } = layout_for(OP, self, &self.strides(), "the destination view")?;
        let ctx = self.context();
        let p = params(self.len(), &shape, &strides, &w);
        let pipeline = ctx.pipeline(&GatherSpec {
            half: false,
            scatter: true,
        })?;
        ctx.scoped(OP, || {
            let ubuf = ctx.uniform(&p);
            let mut enc = ctx.encoder();
            let (gx, gy) = ctx.grid((self.len() as u32).div_ceil(256));
            ctx.dispatch(
                &mut enc,
                &pipeline,
                &ubuf,
                &[(1, src.bind()), (2, Bind::window(self.buffer(), &w))],
                (gx, gy, 1),
            );
            ctx.submit(enc);
            Ok(())
        })
    }
}
