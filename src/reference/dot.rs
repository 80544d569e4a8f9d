//! CPU reference for batched dot products.

/// `a`, `b`: `n × d` row-major. Returns `n` dot products accumulated in f64.
pub fn dot(a: &[f32], b: &[f32], d: usize) -> Vec<f64> {
    assert_eq!(a.len(), b.len(), "reference::dot: a and b lengths differ");
    if d == 0 {
        return Vec::new();
    }
    a.chunks_exact(d)
        .zip(b.chunks_exact(d))
        .map(|(x, y)| {
            let mut acc = 0.0f64;
            for j in 0..d {
                acc += x[j] as f64 * y[j] as f64;
            }
            acc
        })
        .collect()
}
