//! CPU reference for the embedding lookup (f64 sums).

/// `[rows, h]` rows `word[ids[r]] + pos[r % seq] + types[type_ids[r]]` for
/// `ids` of `rows = batch · seq` tokens; an id past its table gives NaN.
pub fn embedding(
    ids: &[u32],
    type_ids: Option<&[u32]>,
    (word, pos, types): (&[f32], &[f32], &[f32]),
    seq: usize,
    h: usize,
) -> Vec<f64> {
    let row = |t: &[f32], i: usize| -> Option<Vec<f64>> {
        t.get(i * h..(i + 1) * h)
            .map(|r| r.iter().map(|&v| v as f64).collect())
    };
    let mut out = Vec::with_capacity(ids.len() * h);
    for (r, &id) in ids.iter().enumerate() {
        let tt = type_ids.map_or(0, |t| t[r]) as usize;
        match (
            row(word, id as usize),
            row(pos, r % seq.max(1)),
            row(types, tt),
        ) {
            (Some(w), Some(p), Some(t)) => {
                out.extend((0..h).map(|j| w[j] + p[j] + t[j]));
            }
            _ => out.extend(std::iter::repeat_n(f64::NAN, h)),
        }
    }
    out
}
