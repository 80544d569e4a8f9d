//! Native CPU baselines for the comparison report: what the host CPU already
//! does without a GPU, with every core. Matmul and attention use the `gemm`
//! crate (blocked, SIMD, multithreaded through rayon); dots and the search
//! scan split rows across scoped threads with 8-lane accumulators that the
//! compiler vectorises.
#![allow(dead_code)]

/// Threads the baselines use: one per core the process may run on.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Rows per thread for `rows` rows (at least 1).
fn per_thread(rows: usize) -> usize {
    rows.div_ceil(threads()).max(1)
}

/// f32 dot of two equal-length slices, 8 independent accumulators.
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Row-wise dots of `x` and `y` (`[n, d]` each), rows split across threads.
pub fn dot_rows(x: &[f32], y: &[f32], d: usize) -> Vec<f32> {
    let n = x.len() / d.max(1);
    let mut out = vec![0.0f32; n];
    let per = per_thread(n);
    std::thread::scope(|s| {
        for ((o, xc), yc) in out
            .chunks_mut(per)
            .zip(x.chunks(per * d))
            .zip(y.chunks(per * d))
        {
            s.spawn(move || {
                for ((o, xr), yr) in o.iter_mut().zip(xc.chunks_exact(d)).zip(yc.chunks_exact(d)) {
                    *o = dot8(xr, yr);
                }
            });
        }
    });
    out
}

/// `a [m, k] · b` in f32, row-major, with `b` `[k, n]` or, with
/// `b_transposed`, `[n, k]` (read through strides, not copied).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, b_transposed: bool) -> Vec<f32> {
    assert!(
        a.len() >= m * k && b.len() >= k * n,
        "cpu::matmul: operand too short"
    );
    let mut dst = vec![0.0f32; m * n];
    if m == 0 || n == 0 {
        return dst;
    }
    let (rhs_cs, rhs_rs) = if b_transposed {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    // SAFETY: the lengths are checked above and every stride stays inside
    // its operand: dst is m×n row-major, a is m×k row-major, and b is k×n
    // (row-major, or its n×k transpose read column-wise).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads()),
        );
    }
    dst
}

/// Non-causal attention over `[heads, s, d]` Q, K, V (scale 1/√d), composed
/// from the GEMM: S = Q·Kᵀ, a row softmax, O = P·V, one head at a time.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], heads: usize, s: usize, d: usize) -> Vec<f32> {
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = Vec::with_capacity(heads * s * d);
    for h in 0..heads {
        let r = h * s * d..(h + 1) * s * d;
        let mut p = matmul(&q[r.clone()], &k[r.clone()], s, d, s, true);
        for row in p.chunks_exact_mut(s) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x * scale - max).exp();
                sum += *x;
            }
            row.iter_mut().for_each(|x| *x /= sum);
        }
        out.extend(matmul(&p, &v[r], s, s, d, false));
    }
    out
}

/// The `k` best inner products of `q` over `corpus` (`[n, d]`), best first,
/// as (score, row): each thread scans its rows keeping its own top k, then
/// the lists are merged.
pub fn topk(corpus: &[f32], q: &[f32], d: usize, k: usize) -> Vec<(f32, u32)> {
    let n = corpus.len() / d.max(1);
    let per = per_thread(n);
    let mut all: Vec<(f32, u32)> = std::thread::scope(|s| {
        let hs: Vec<_> = corpus
            .chunks(per * d)
            .enumerate()
            .map(|(t, c)| {
                s.spawn(move || {
                    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
                    for (i, row) in c.chunks_exact(d).enumerate() {
                        let sc = dot8(row, q);
                        if best.len() < k || sc > best[best.len() - 1].0 {
                            let at = best.partition_point(|b| b.0 >= sc);
                            best.insert(at, (sc, (t * per + i) as u32));
                            best.truncate(k);
                        }
                    }
                    best
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    all
}
