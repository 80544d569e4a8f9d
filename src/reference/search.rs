//! CPU reference for exact top-k inner-product search (f64 scores).

/// Best `k` (score, id) per query of `q [m, d]` over `c [n, d]`: descending score,
/// ties by lower id, NaN last. Returns `m` lists of `min(k, n)`.
pub fn topk(q: &[f32], c: &[f32], d: usize, k: usize) -> Vec<Vec<(f64, u32)>> {
    q.chunks_exact(d)
        .map(|qr| {
            let mut s: Vec<(f64, u32)> = c
                .chunks_exact(d)
                .enumerate()
                .map(|(i, cr)| {
                    let mut acc = 0.0f64;
                    for j in 0..d {
                        acc += qr[j] as f64 * cr[j] as f64;
                    }
                    (acc, i as u32)
                })
                .collect();
            s.sort_by(|a, b| match (a.0.is_nan(), b.0.is_nan()) {
                (false, true) => std::cmp::Ordering::Less,
                (true, false) => std::cmp::Ordering::Greater,
                (true, true) => a.1.cmp(&b.1),
                _ => b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)),
            });
            s.truncate(k);
            s
        })
        .collect()
}
