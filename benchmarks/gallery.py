"""Gallery search: query time and memory of exact 1:N search, NumPy against faiss, at 10k-1M faces.

Synthetic unit embeddings (Gaussian, normalized; one row per person, so identity aggregation is the
worst case for faiss's over-fetch). For each gallery size and engine of
``keras_fr.recognition.Gallery``: the index build time (faiss), the median time of a single-query
search (the ``identify`` case) and of a 64-query batch, and the resident memory the gallery adds
(``ru_maxrss`` deltas are unreliable across sizes, so the figure is the arrays' own bytes plus, for
faiss, the index's copy). Both engines must return the same top-5; the script checks it.

Usage:
    python benchmarks/gallery.py                       # 10k, 100k, 1M rows; 128-d and 512-d
    python benchmarks/gallery.py --quick               # 2k rows only

Writes ``benchmarks/results/gallery.json``.
"""

import argparse
import os
import statistics
import time

import _bench  # noqa: F401  (project root on sys.path, quiet logs)
import numpy as np
from _bench import HERE, write_json

from keras_fr.recognition.gallery import Gallery  # noqa: E402


def _timed(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def run(size, dim, repeat, rng):
    g = Gallery(dim)
    emb = rng.standard_normal((size, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    # Bulk enrollment (one row per person) without a Python loop over add().
    g._embeddings = emb
    g._labels = np.arange(size, dtype=np.int64)
    g._names = [f"p{i}" for i in range(size)]
    one = rng.standard_normal((1, dim), dtype=np.float32)
    batch = rng.standard_normal((64, dim), dtype=np.float32)
    row = {"rows": size, "dim": dim, "embeddings_mb": emb.nbytes / 2**20}
    t1, res_np = _timed(lambda: g.search(one, 5, engine="numpy"), repeat)
    t64, _ = _timed(lambda: g.search(batch, 5, engine="numpy"), repeat)
    row["numpy_ms_1"] = 1e3 * t1
    row["numpy_ms_64"] = 1e3 * t64
    try:
        import faiss  # noqa: F401
    except ImportError:
        return row
    start = time.perf_counter()
    g._index = None
    res_fa = g.search(one, 5, engine="faiss")
    row["faiss_build_s"] = time.perf_counter() - start
    t1, res_fa = _timed(lambda: g.search(one, 5, engine="faiss"), repeat)
    t64, _ = _timed(lambda: g.search(batch, 5, engine="faiss"), repeat)
    row["faiss_ms_1"] = 1e3 * t1
    row["faiss_ms_64"] = 1e3 * t64
    row["faiss_index_mb"] = g._index.ntotal * dim * 4 / 2**20
    row["same_top5"] = [n for n, _ in res_np[0]] == [n for n, _ in res_fa[0]]
    assert row["same_top5"], "numpy and faiss disagree"
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dims", default="128,512")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "gallery.json"))
    args = parser.parse_args(argv)
    sizes = [2000] if args.quick else [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'rows':>8} {'dim':>4} {'MB':>7} {'np 1q ms':>9} {'np 64q ms':>10} "
          f"{'faiss 1q':>9} {'faiss 64q':>10} {'build s':>8}")
    for dim in dims:
        for size in sizes:
            row = run(size, dim, args.repeat, rng)
            rows.append(row)
            print(f"{row['rows']:>8} {dim:>4} {row['embeddings_mb']:>7.1f} {row['numpy_ms_1']:>9.2f} "
                  f"{row['numpy_ms_64']:>10.2f} {row.get('faiss_ms_1', float('nan')):>9.2f} "
                  f"{row.get('faiss_ms_64', float('nan')):>10.2f} {row.get('faiss_build_s', float('nan')):>8.2f}",
                  flush=True)
    write_json(args.output, {**_bench.result_header("gallery", argv), "rows": rows})


if __name__ == "__main__":
    main()
