#!/usr/bin/env python3
"""FAISS's IndexIVFFlat on the CPU as the baseline of flashdot's IVF curve.

Reads the corpus and queries `examples/ivf_curve.rs --write DIR` wrote
(DIR/corpus.fvecs, DIR/queries.fvecs), builds the exact IndexFlatL2 and an
IndexIVFFlat with the same nlist, k-means iterations and training points per
list, and prints recall@10 against exact search beside queries/s for one query
(median of 31) and for the batch, per nprobe: the same columns as the example.
Needs `pip install faiss-cpu`.
"""
import argparse
import os
import time

from faiss_common import faiss, fvecs


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True)
    p.add_argument("--nlist", type=int, default=512)
    p.add_argument("--niter", type=int, default=25)
    p.add_argument("--points-per-list", type=int, default=256)
    p.add_argument("--nprobe", default="1,2,4,8,16,32,64,128,256")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    faiss.omp_set_num_threads(a.threads)
    xb, d = fvecs(os.path.join(a.dir, "corpus.fvecs"))
    xq, _ = fvecs(os.path.join(a.dir, "queries.fvecs"))
    print(f"faiss {faiss.__version__}, {a.threads} threads; corpus {xb.shape[0]} x {d}, {xq.shape[0]} queries")
    flat = faiss.IndexFlatL2(d)
    flat.add(xb)
    t = time.perf_counter()
    _, exact = flat.search(xq, 10)
    fb = time.perf_counter() - t
    one = sorted(timed(lambda i: flat.search(xq[i : i + 1], 10), i) for i in range(11))[5]
    print(f"flat: 1 query {one * 1e3:.2f} ms ({1 / one:.1f} q/s); batch {fb * 1e3:.0f} ms ({xq.shape[0] / fb:.0f} q/s)")
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, a.nlist)
    ivf.cp.niter = a.niter
    ivf.cp.max_points_per_centroid = a.points_per_list
    t = time.perf_counter()
    ivf.train(xb)
    print(f"train: {a.nlist} lists in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    ivf.add(xb)
    print(f"add: {time.perf_counter() - t:.1f} s")
    print("nprobe  recall@10  1-query ms (x flat)  batch ms (x flat)")
    for npr in [int(x) for x in a.nprobe.split(",") if int(x) <= a.nlist]:
        ivf.nprobe = npr
        t = time.perf_counter()
        _, got = ivf.search(xq, 10)
        b = time.perf_counter() - t
        s = sorted(timed(lambda i: ivf.search(xq[i : i + 1], 10), i) for i in range(31))[15]
        hits = sum(len(set(g) & set(e)) for g, e in zip(got, exact))
        print(f"{npr:6}  {hits / exact.size:9.3f}  {s * 1e3:9.2f} ({one / s:5.1f}x)  {b * 1e3:8.1f} ({fb / b:5.1f}x)")


def timed(f, i):
    """Seconds `f(i)` takes."""
    t = time.perf_counter()
    f(i)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
