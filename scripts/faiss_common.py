"""What scripts/faiss-ivf.py and scripts/faiss-kmeans.py share: the faiss
import (a clear exit where the wheel is missing) and the .fvecs reader for the
files `examples/ivf_curve.rs --write DIR` writes."""
import numpy as np

try:
    import faiss  # noqa: F401 (re-exported)
except ImportError:
    raise SystemExit("faiss is not installed: pip install faiss-cpu")


def fvecs(path):
    """Rows of an .fvecs file (each row: its dimension as int32, then the
    values as float32) as an [n, d] float32 array, and d."""
    raw = np.fromfile(path, dtype="<i4")
    d = int(raw[0])
    return raw.reshape(-1, d + 1)[:, 1:].copy().view("<f4"), d
