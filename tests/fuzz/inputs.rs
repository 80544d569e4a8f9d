//! The fuzz tier's inputs: sizes, dtypes, values and tensors biased to the
//! edges (0, 1, odd, huge, overflowing products; NaN, ±Inf, subnormal), and
//! the [`LARGE`] marker for valid cases too big to run in the tier.

use flashdot::{DType, Error, Tensor};
use rand::Rng;

use crate::common::{from_f16, to_f16, Rng64};

/// A size biased to the edges.
pub fn size(r: &mut Rng64) -> usize {
    match r.random_range(0..20) {
        0 => 0,
        1..=3 => 1,
        4..=12 => r.random_range(2..9),
        13..=16 => [3, 5, 7, 31, 33, 59, 64, 127][r.random_range(0..8)],
        17 => r.random_range(100..400),
        18 => [1 << 20, 1 << 31, 1 << 40][r.random_range(0..3)],
        _ => usize::MAX / [1, 2, 3][r.random_range(0..3)],
    }
}

/// `keep`, or one time in five another [`size`]: an operand's dimension
/// that may not match the one it must agree with.
pub fn mismatch(r: &mut Rng64, keep: usize) -> usize {
    if r.random_range(0..5) == 0 {
        size(r)
    } else {
        keep
    }
}

/// f32 or u32 (refused by the float ops), and f16 with `all_kernels`.
pub fn dtype(r: &mut Rng64, all_kernels: bool) -> DType {
    if all_kernels {
        [DType::F32, DType::F32, DType::F16, DType::U32][r.random_range(0..4)]
    } else {
        [DType::F32, DType::F32, DType::U32][r.random_range(0..3)]
    }
}

/// A value: mostly ordinary, sometimes NaN, ±Inf, subnormal, huge or zero.
pub fn value(r: &mut Rng64, special: bool) -> f32 {
    if !special || r.random_range(0..40) > 0 {
        return r.random_range(-1.0..1.0);
    }
    [f32::NAN, f32::INFINITY, -f32::INFINITY, 1e-40, 3e38, 0.0][r.random_range(0..6)]
}

/// Marks a case whose valid tensors would be too large to run quickly here
/// (counted as "large", not run): the fuzz tier tests refusals and edges,
/// not throughput.
pub const LARGE: &str = "fuzz: a valid tensor too large to run in the tier";

/// A tensor of `shape`, or the error creating it returned. Shapes of more
/// than 2^16 elements are created only when they exceed the adapter's
/// buffer limit (so that creation refuses them); others are [`LARGE`].
pub fn tensor(
    ctx: &flashdot::Context,
    r: &mut Rng64,
    shape: &[usize],
    dt: DType,
    special: bool,
) -> flashdot::Result<(Tensor, Vec<f32>)> {
    let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
    match n {
        Some(n) if n <= 1 << 16 => {
            let v: Vec<f32> = (0..n).map(|_| value(r, special)).collect();
            let t = match dt {
                DType::F32 => Tensor::from_slice(ctx, &v, shape)?,
                DType::F16 => Tensor::from_slice(ctx, &to_f16(&v), shape)?,
                DType::U32 => {
                    let u: Vec<u32> = v.iter().map(|x| (x.abs() * 10.0) as u32).collect();
                    Tensor::from_slice(ctx, &u, shape)?
                }
            };
            let host = match dt {
                DType::F16 => from_f16(&to_f16(&v)),
                DType::U32 => v.iter().map(|x| (x.abs() * 10.0) as u32 as f32).collect(),
                DType::F32 => v,
            };
            Ok((t, host))
        }
        Some(n) if (n as u64).saturating_mul(dt.size()) <= ctx.info().limits.max_buffer_size => {
            Err(Error::InvalidArgument {
                op: "fuzz",
                detail: LARGE.into(),
            })
        }
        _ => Ok((Tensor::zeros(ctx, shape, dt)?, Vec::new())),
    }
}

/// [`LARGE`] for a call whose output of `dims` would be a valid tensor of
/// more than 2^22 elements (inputs with a zero dimension can ask for one of
/// gigabytes: allowed, but zero-filling it is not what the tier is for).
/// Outputs over the adapter's limits still run, to test their refusal.
pub fn large_output(ctx: &flashdot::Context, dims: &[usize]) -> flashdot::Result<()> {
    let n = dims.iter().try_fold(1u64, |a, &b| a.checked_mul(b as u64));
    match n {
        Some(n) if n > 1 << 22 && n.saturating_mul(4) <= ctx.info().limits.max_buffer_size => {
            Err(Error::InvalidArgument {
                op: "fuzz",
                detail: LARGE.into(),
            })
        }
        _ => Ok(()),
    }
}
