//! CPU reference for normalisation, cosine and all-pairs scores (f64).

/// Rows of `x [n, d]` divided by their L2 norm; zero rows stay zero.
pub fn normalize(x: &[f32], d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d.max(1)) {
        let mut ss = 0.0f64;
        for &v in row {
            ss += v as f64 * v as f64;
        }
        let inv = if ss > 0.0 { 1.0 / ss.sqrt() } else { 0.0 };
        for &v in row {
            out.push(v as f64 * inv);
        }
    }
    out
}

/// Row-wise cosine of `a`, `b` (`[n, d]`); 0 where either row is zero.
pub fn cosine(a: &[f32], b: &[f32], d: usize) -> Vec<f64> {
    a.chunks_exact(d.max(1))
        .zip(b.chunks_exact(d.max(1)))
        .map(|(x, y)| {
            let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
            for j in 0..d {
                let (u, v) = (x[j] as f64, y[j] as f64);
                xy += u * v;
                xx += u * u;
                yy += v * v;
            }
            if xx > 0.0 && yy > 0.0 {
                xy / (xx.sqrt() * yy.sqrt())
            } else {
                0.0
            }
        })
        .collect()
}

/// All-pairs inner products `q [m, d] · cᵀ` (`c [n, d]`) → `[m, n]`.
pub fn scores(q: &[f32], c: &[f32], d: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for qr in q.chunks_exact(d) {
        for cr in c.chunks_exact(d) {
            let mut acc = 0.0f64;
            for j in 0..d {
                acc += qr[j] as f64 * cr[j] as f64;
            }
            out.push(acc);
        }
    }
    out
}
