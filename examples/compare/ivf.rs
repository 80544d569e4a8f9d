//! The report's IVF section: the recall–throughput curve of `IvfIndex`
//! against the flat index on the same clustered corpus (one query and a
//! batch of 256, nprobe 1 to 256), with FAISS's `IndexIVFFlat` on the CPU
//! (`scripts/faiss-ivf.py`) as its baseline where `faiss` imports.

use flashdot::ops::search::Storage;
use flashdot::ops::similarity::Metric;
use flashdot::Context;

use crate::curve::{measure, Corpus, CurveOptions};
use crate::{fail, Args, R};

/// The corpus and index of a sweep: (n, dim, nlist, k-means iterations,
/// training points a list, nprobe values).
fn sweep(quick: bool) -> (usize, usize, usize, usize, usize, Vec<usize>) {
    if quick {
        (20_000, 128, 64, 5, 256, vec![1, 4, 16, 64])
    } else {
        let nprobe = vec![1, 2, 4, 8, 16, 32, 64, 128, 256];
        (1_000_000, 128, 4096, 10, 32, nprobe)
    }
}

/// The section's markdown (and, with `--out`, DIR/ivf.md and the FAISS
/// input files under DIR/ivf-data).
pub(crate) fn ivf_section(ctx: &Context, a: &Args) -> R<String> {
    let (n, dim, nlist, niter, ppl, nprobe) = sweep(a.quick);
    let c = Corpus::clustered(n, dim, 2000, 0.5, 256);
    let opts = CurveOptions {
        nlist,
        metric: Metric::L2,
        storage: Storage::F32,
        niter,
        points_per_list: ppl,
        nprobe: nprobe.clone(),
        write_training: None,
    };
    let mut log = String::new();
    let curve = measure(ctx, &c, &opts, &mut |line| {
        log.push_str(&format!("- {line}\n"))
    })?;
    let mut s = format!(
        "\n## ivf: recall@10 and speed against the flat index ({n} x {dim} f32, L2, {nlist} lists, \
         2,000 clusters of spread 0.5 on a power-law spectrum; 1 query: median of 31; batch: 256 queries)\n\n{log}\n{}",
        curve.table()
    );
    s.push_str(&faiss_rows(&c, a, nlist, niter, ppl, &nprobe)?);
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join("ivf.md"), &s))
            .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    }
    Ok(s)
}

/// FAISS's rows from `scripts/faiss-ivf.py` on the same corpus, or one line
/// saying why there are none.
fn faiss_rows(
    c: &Corpus,
    a: &Args,
    nlist: usize,
    niter: usize,
    ppl: usize,
    nprobe: &[usize],
) -> R<String> {
    let has = std::process::Command::new("python3")
        .args(["-c", "import faiss"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        return Ok(
            "\nFAISS baseline: `faiss` does not import here (`pip install faiss-cpu` adds it).\n"
                .into(),
        );
    }
    let dir = match &a.out {
        Some(d) => d.join("ivf-data"),
        None => std::env::temp_dir().join(format!("flashdot-ivf-{}", std::process::id())),
    };
    c.write(&dir)
        .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let list: Vec<String> = nprobe.iter().map(|p| p.to_string()).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/faiss-ivf.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--dir")
        .arg(&dir)
        .args(["--nlist", &nlist.to_string(), "--niter", &niter.to_string()])
        .args([
            "--points-per-list",
            &ppl.to_string(),
            "--nprobe",
            &list.join(","),
        ])
        .output()
        .map_err(|e| fail(format!("{script}: {e}")))?;
    if a.out.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !out.status.success() {
        return Ok(format!(
            "\nFAISS baseline failed: {}\n",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(format!(
        "\nFAISS `IndexIVFFlat` on the CPU, same corpus, lists and k-means settings (`scripts/faiss-ivf.py`):\n\n```\n{}\n```\n",
        String::from_utf8_lossy(&out.stdout).trim()
    ))
}
