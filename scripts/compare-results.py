#!/usr/bin/env python3
"""Geometric-mean speed ratio of two sets of comparison-report runs.

Usage: scripts/compare-results.py 'before*/results.json' 'after*/results.json'

Each argument is a glob of `results.json` files written by
`cargo run --release --example compare -- --quick --out DIR`. For every kernel
measurement (family, variant, shape, dtype; the CPU baselines left out) the best
median over the runs of each side is taken; the ratio before/after of those is
the speed of after relative to before, and the script prints its geometric mean
per family and overall, and the three measurements that lost the most. Run the
two sides interleaved on one host (this VM's speed drifts within minutes).
"""
import json,sys,math,glob
def load(pattern):
    runs=[json.load(open(f))['records'] for f in sorted(glob.glob(pattern))]
    best={}
    for recs in runs:
        for r in recs:
            if r['cpu_baseline']: continue
            k=(r['family'],r['variant'],r['shape'],r['dtype'])
            best.setdefault(k,[]).append(r['median_ms'])
    return {k:min(v) for k,v in best.items()}, len(runs)
b,nb=load(sys.argv[1]); a,na=load(sys.argv[2])
keys=sorted(set(a)&set(b))
fam={}
for k in keys:
    fam.setdefault(k[0],[]).append(math.log(b[k]/a[k]))
allr=[x for v in fam.values() for x in v]
print(f"runs: before {nb}, after {na}; {len(keys)} matched kernel measurements (CPU baselines excluded); only in one: {len(set(a)^set(b))}")
for f,v in fam.items():
    print(f"  {f:<10} geomean speed after/before {math.exp(sum(v)/len(v)):.3f} over {len(v)}")
print(f"  all        geomean speed after/before {math.exp(sum(allr)/len(allr)):.3f}")
worst=sorted(keys,key=lambda k: b[k]/a[k])[:3]
for k in worst: print("  slowest after:", k, f"{b[k]:.3f} -> {a[k]:.3f} ms")
