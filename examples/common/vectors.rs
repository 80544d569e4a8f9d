//! Vector files for the search demo: `.npy` (f32 `[n, d]`, C order, read
//! with the `npyz` crate) and `.fvecs` (the ANN benchmarks' format). Bad files
//! are errors, never panics, and no allocation is larger than the file.
#![allow(dead_code)]

/// Reads `path` as `[n, d]` f32 rows; returns the values and `d`.
pub fn load(path: &std::path::Path) -> Result<(Vec<f32>, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&path.to_string_lossy(), &bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`load`] on a file's bytes (`name` chooses the format by its extension).
pub fn parse(name: &str, bytes: &[u8]) -> Result<(Vec<f32>, usize), String> {
    if name.ends_with(".fvecs") {
        fvecs(bytes)
    } else if name.ends_with(".npy") {
        npy(bytes)
    } else {
        Err("expected a .npy or .fvecs file".into())
    }
}

fn fvecs(bytes: &[u8]) -> Result<(Vec<f32>, usize), String> {
    let Some(head) = bytes.get(..4) else {
        return Err(".fvecs: empty or truncated file".into());
    };
    let d = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if d <= 0 {
        return Err(format!(".fvecs: a record of dimension {d}"));
    }
    let d = d as usize;
    let rec = d
        .checked_mul(4)
        .and_then(|b| b.checked_add(4))
        .ok_or(".fvecs: dimension overflows")?;
    if !bytes.len().is_multiple_of(rec) {
        return Err(format!(
            ".fvecs: size {} is not a whole number of records of dim {d}",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / rec * d);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        if r[..4] != head[..] {
            return Err(format!(".fvecs: record {i} has another dimension"));
        }
        out.extend(
            r[4..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    Ok((out, d))
}

fn npy(bytes: &[u8]) -> Result<(Vec<f32>, usize), String> {
    let file = npyz::NpyFile::new(bytes).map_err(|e| format!(".npy: {e}"))?;
    let shape = file.shape().to_vec();
    if shape.len() != 2 {
        return Err(format!(
            ".npy: expected a 2-D array [n, d], got shape {shape:?}"
        ));
    }
    if file.order() != npyz::Order::C {
        return Err(".npy: Fortran order; save the array in C order".into());
    }
    let (n, d) = (shape[0] as usize, shape[1] as usize);
    if n == 0 || d == 0 {
        return Err(format!(".npy: an empty array, shape {shape:?}"));
    }
    // The header's shape must fit in the file before anything is sized from it.
    let need = n.checked_mul(d).and_then(|v| v.checked_mul(4));
    if need.is_none_or(|b| b > bytes.len()) {
        return Err(format!(
            ".npy: shape {shape:?} needs more data than the file's {} bytes",
            bytes.len()
        ));
    }
    let v: Vec<f32> = file
        .into_vec()
        .map_err(|e| format!(".npy: {e} (the demo reads little-endian f32 arrays)"))?;
    if v.len() != n * d {
        return Err(format!(".npy: {} values for shape {shape:?}", v.len()));
    }
    Ok((v, d))
}
