//! CPU reference for masked mean pooling (f64).

/// `[batch, h]`: the mean of each sequence's first `lengths[b]` (at most
/// `seq`) rows of `x [batch, seq, h]`; zeros for a length of 0.
pub fn mean_pool(x: &[f64], lengths: &[u32], seq: usize, h: usize) -> Vec<f64> {
    let mut out = vec![0.0; lengths.len() * h];
    for (b, &len) in lengths.iter().enumerate() {
        let n = (len as usize).min(seq);
        for t in 0..n {
            for j in 0..h {
                out[b * h + j] += x[(b * seq + t) * h + j];
            }
        }
        if n > 0 {
            for v in &mut out[b * h..(b + 1) * h] {
                *v /= n as f64;
            }
        }
    }
    out
}
