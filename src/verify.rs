//! Comparing a kernel's output with the CPU reference: max abs error, relative L2
//! error ‖out − ref‖ / ‖ref‖, non-finite count and the first mismatches.

use std::fmt;

/// Result of comparing `out` with `reference`.
#[derive(Debug, Clone)]
pub struct Report {
    /// Number of elements compared.
    pub len: usize,
    /// max |out − ref| over finite outputs.
    pub max_abs: f64,
    /// ‖out − ref‖₂ / ‖ref‖₂ (‖out − ref‖₂ alone when ‖ref‖₂ = 0); infinite if any
    /// output is non-finite where the reference is finite.
    pub rel_l2: f64,
    /// Outputs that are NaN or ±inf where the reference is finite (unwritten
    /// elements of a NaN-poisoned output land here).
    pub non_finite: usize,
    /// First few (index, out, ref) with |out − ref| > `atol + rtol·|ref|` or non-finite.
    pub mismatches: Vec<(usize, f64, f64)>,
    /// Length mismatch between the two sides, if any.
    pub len_mismatch: Option<(usize, usize)>,
}

/// Per-element tolerance used to list mismatches (the pass/fail criterion is
/// [`Report::rel_l2`]; mismatches are shown to help debugging).
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

/// Compares `out` with `reference` element-wise.
pub fn compare<T: Copy + Into<f64>>(out: &[T], reference: &[f64]) -> Report {
    let mut diff2 = 0.0f64;
    let mut ref2 = 0.0f64;
    let mut max_abs = 0.0f64;
    let mut non_finite = 0;
    let mut mismatches = Vec::new();
    for (i, (&o, &r)) in out.iter().zip(reference).enumerate() {
        let o: f64 = o.into();
        // A NaN/inf reference (e.g. NaN in the input) must be matched exactly in kind.
        if !r.is_finite() {
            if o.is_nan() != r.is_nan() || (r.is_infinite() && o != r) {
                non_finite += 1;
                if mismatches.len() < 8 {
                    mismatches.push((i, o, r));
                }
            }
            continue;
        }
        ref2 += r * r;
        if !o.is_finite() {
            non_finite += 1;
            if mismatches.len() < 8 {
                mismatches.push((i, o, r));
            }
            continue;
        }
        let e = (o - r).abs();
        diff2 += e * e;
        max_abs = max_abs.max(e);
        if e > ATOL + RTOL * r.abs() && mismatches.len() < 8 {
            mismatches.push((i, o, r));
        }
    }
    let rel_l2 = if non_finite > 0 {
        f64::INFINITY
    } else if ref2 > 0.0 {
        (diff2 / ref2).sqrt()
    } else {
        diff2.sqrt()
    };
    Report {
        len: out.len().min(reference.len()),
        max_abs,
        rel_l2,
        non_finite,
        mismatches,
        len_mismatch: (out.len() != reference.len()).then_some((out.len(), reference.len())),
    }
}

impl Report {
    /// True when lengths agree, nothing is non-finite and `rel_l2 <= tol`.
    pub fn passes(&self, tol: f64) -> bool {
        self.len_mismatch.is_none() && self.non_finite == 0 && self.rel_l2 <= tol
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((o, r)) = self.len_mismatch {
            write!(f, "LENGTH MISMATCH out {o} vs ref {r}; ")?;
        }
        write!(
            f,
            "n={} rel_l2={:.3e} max_abs={:.3e} non_finite={}",
            self.len, self.rel_l2, self.max_abs, self.non_finite
        )?;
        for (i, o, r) in &self.mismatches {
            write!(f, "\n  [{i}] out={o:.6e} ref={r:.6e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_nan_and_error() {
        let r = compare(&[1.0f32, f32::NAN], &[1.0, 2.0]);
        assert_eq!(r.non_finite, 1);
        assert!(!r.passes(1.0));
        let r = compare(&[1.0f32, 2.1], &[1.0, 2.0]);
        assert!((r.rel_l2 - 0.1 / 5f64.sqrt()).abs() < 1e-6);
        assert!(r.passes(0.05) && !r.passes(0.04));
        assert!(compare(&[1.0f32], &[1.0, 2.0]).len_mismatch.is_some());
    }
}
