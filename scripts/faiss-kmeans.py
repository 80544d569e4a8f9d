#!/usr/bin/env python3
"""FAISS's k-means on the CPU from flashdot's start, to compare objectives.

Reads what `examples/ivf_curve.rs --write DIR` wrote after training
(DIR/train.fvecs: the training points it sampled; DIR/init.fvecs: the
centroids it started from; DIR/objective.txt: its objective per iteration),
runs faiss.Kmeans (squared L2) over the same points from the same centroids
for as many iterations, and prints both objectives per iteration and their
relative difference, with FAISS's time. Needs `pip install faiss-cpu`.
"""
import argparse
import os
import time

from faiss_common import faiss, fvecs


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    faiss.omp_set_num_threads(a.threads)
    x, d = fvecs(os.path.join(a.dir, "train.fvecs"))
    init, _ = fvecs(os.path.join(a.dir, "init.fvecs"))
    ours = [float(v) for v in open(os.path.join(a.dir, "objective.txt")).read().split()]
    k, niter = init.shape[0], len(ours)
    print(f"faiss {faiss.__version__}, {a.threads} threads; {x.shape[0]} x {d} points, {k} centroids, {niter} iterations")
    # Every point trains (no resampling) and no re-seeding: the run starts
    # where flashdot's started.
    km = faiss.Kmeans(d, k, niter=niter, max_points_per_centroid=x.shape[0], seed=1234)
    t = time.perf_counter()
    km.train(x, init_centroids=init)
    secs = time.perf_counter() - t
    theirs = list(km.obj)
    print("iteration  flashdot objective  faiss objective  relative difference")
    for i, (o, f) in enumerate(zip(ours, theirs)):
        print(f"{i:9d}  {o:18.6e}  {f:15.6e}  {(o - f) / f:+.2e}")
    print(f"faiss: {secs:.1f} s; final objectives differ by {(ours[-1] - theirs[-1]) / theirs[-1]:+.3%}")


if __name__ == "__main__":
    main()
