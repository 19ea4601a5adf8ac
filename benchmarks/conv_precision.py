"""One TensorFlow convolution in float32, bfloat16 and float16: time and rounding error.

Asks whether a lower precision could speed up inference while passing the recognizer runtime's
cosine bar (0.9999 to float32 Keras). Each case is one ``tf.nn.conv2d`` (padding "SAME", stride 1,
random inputs, kernel scaled by 1/sqrt(fan-in)) in a traced function on a variable kernel, as a Keras
model runs it: the best of ``--iters`` calls after 2 warm-up calls, and the largest difference to
the same convolution computed in float64 NumPy, relative to the largest float64 output.

Usage:
    python benchmarks/conv_precision.py
    python benchmarks/conv_precision.py --iters 20
"""

import argparse
import sys
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, write_json  # noqa: E402

import os  # noqa: E402

#: (batch, height = width, input channels, output channels, kernel size): IResNet100's batch-1 3x3
#: convolutions of stages 3 and 1, and a batch-32 1x1 one.
CASES = ((1, 14, 256, 256, 3), (1, 56, 64, 64, 3), (32, 28, 256, 256, 1))
DTYPES = ("float32", "bfloat16", "float16")
RESULTS = os.path.join(HERE, "results", "conv_precision.json")


def _reference(x, w):
    """The convolution in float64 NumPy ("SAME" padding, stride 1): the independent computation."""
    import numpy as np

    k = w.shape[0]
    pad = k // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros(x.shape[:3] + (w.shape[3],))
    for i in range(k):
        for j in range(k):
            out += np.tensordot(xp[:, i:i + x.shape[1], j:j + x.shape[2], :], w[i, j].astype(np.float64), axes=1)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=10, help="timed calls per case (default 10)")
    parser.add_argument("--output", default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    _bench.check_counts(parser, args, positive=("iters",))
    import numpy as np
    import tensorflow as tf

    print(_bench.cpu_line())
    rows = []
    rng = np.random.default_rng(0)
    for n, size, c_in, c_out, k in CASES:
        x = rng.standard_normal((n, size, size, c_in)).astype(np.float32)
        w = (rng.standard_normal((k, k, c_in, c_out)) / np.sqrt(k * k * c_in)).astype(np.float32)
        ref = _reference(x, w)
        flops = 2 * n * size * size * c_in * c_out * k * k
        for dtype in DTYPES:
            xx = tf.constant(x, dtype)
            kernel = tf.Variable(tf.constant(w, dtype))
            conv = tf.function(lambda v, kernel=kernel: tf.nn.conv2d(v, kernel, 1, "SAME"))
            for _ in range(2):
                conv(xx).numpy()
            best = float("inf")
            for _ in range(args.iters):
                start = time.perf_counter()
                out = conv(xx).numpy()
                best = min(best, time.perf_counter() - start)
            error = float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())
            row = {"batch": n, "size": size, "c_in": c_in, "c_out": c_out, "kernel": k, "dtype": dtype,
                   "ms": best * 1e3, "gflops": flops / best / 1e9, "max_rel_error": error}
            rows.append(row)
            print(f"b{n:<3d} {size:3d}x{size:<3d} {c_in:4d}->{c_out:<4d} {k}x{k} {dtype:9s} {best * 1e3:8.2f} ms "
                  f"{row['gflops']:7.1f} GFLOP/s  max rel. error {error:.1e}", flush=True)
    write_json(args.output, {**_bench.result_header("conv_precision", argv), "rows": rows})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
