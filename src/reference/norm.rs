//! CPU reference for layer norm (f64).

/// Layer norm of each `h`-row of `x` (plus `residual`, if given):
/// `(z − mean) / √(var + eps) · gamma + beta`, biased variance.
pub fn layer_norm(
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    h: usize,
) -> Vec<f64> {
    let z: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 + residual.map_or(0.0, |r| r[i] as f64))
        .collect();
    layer_norm_f64(&z, gamma, beta, eps, h)
}

/// [`layer_norm`] of f64 rows (the encoder reference's stages).
pub fn layer_norm_f64(z: &[f64], gamma: &[f32], beta: &[f32], eps: f64, h: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(z.len());
    for row in z.chunks_exact(h.max(1)) {
        let mean = row.iter().sum::<f64>() / h as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / h as f64;
        let inv = 1.0 / (var + eps).sqrt();
        out.extend(
            row.iter()
                .enumerate()
                .map(|(j, v)| (v - mean) * inv * gamma[j] as f64 + beta[j] as f64),
        );
    }
    out
}
