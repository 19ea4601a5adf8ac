"""Forward-pass throughput of the keras_fr networks on this machine (TensorFlow backend).

For each model and batch size, two ways of running inference:

- ``eager``: Keras' default inference path, ``model.predict_on_batch(x)`` (Keras wraps the model in a
  ``tf.function`` without XLA on CPU-only machines);
- ``jit``: ``tf.function(lambda x: model(x, training=False), jit_compile=True)`` (XLA).

Each measurement runs warm-up calls (tracing and compilation excluded), then timed calls until both a
minimum number of calls and a minimum time are reached; the reported throughput is the batch size
divided by the median call time. Also reported per model: parameters (every weight but BatchNorm
moving statistics, the PyTorch parameter count) and GFLOPs per 112x112 image, counted by
TensorFlow's profiler on the frozen inference graph at batch 1 (convolutions, matmuls and elementwise
ops; one multiply-add counts as 2 FLOPs; MSConv models are counted on their split-grouped-conv clone,
whose nested-XLA-free graph the profiler can see).

oneDNN stays on (TensorFlow's default on x86 CPUs). Run on a quiet machine; a full run of the six
default models takes about 5-6 minutes on 2 CPU cores.

Usage:
    python benchmarks/inference.py                      # full run, writes benchmarks/results/inference.json
    python benchmarks/inference.py --quick              # smoke test: MSConvResNet26, tiny counts
    python benchmarks/inference.py --models msconv_resnet50 --batch-sizes 32 --modes jit
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, write_json  # noqa: E402

from keras_fr.applications import MODELS, get_builder  # noqa: E402
from keras_fr.applications.common import count_parameters  # noqa: E402

#: The models this benchmark covers by default (issues 2 and 3).
BENCHMARKED = (
    "msconv_resnet26",
    "msconv_resnet50",
    "msconv_resnet101",
    "iresnet50",
    "iresnet100",
    "lgaf_resnet100",
)
DEFAULT_MODELS = list(BENCHMARKED)
MODES = ("eager", "jit")
SIZE = 112


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"registry names (default: all of {', '.join(DEFAULT_MODELS)}; comma-separated also accepted)",
    )
    parser.add_argument(
        "--batch-sizes", nargs="+", type=int, default=None, help="batch sizes (default: 1 32)"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="inference paths to time"
    )
    parser.add_argument(
        "--grouped-conv",
        choices=("auto", "native", "split"),
        default="auto",
        help="how MSConv computes its grouped convolutions (same weights and outputs; default auto: "
        "split on TensorFlow without a GPU)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: msconv_resnet26 (unless --models), batch sizes 1 and 2, minimal counts",
    )
    parser.add_argument(
        "--output",
        default=os.path.join(HERE, "results", "inference.json"),
        help="JSON results file (default: benchmarks/results/inference.json)",
    )
    args = parser.parse_args(argv)
    if args.models is None:
        args.models = ["msconv_resnet26"] if args.quick else DEFAULT_MODELS
    args.models = [m for item in args.models for m in item.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.batch_sizes is None:
        args.batch_sizes = [1, 2] if args.quick else [1, 32]
    if any(b < 1 for b in args.batch_sizes):
        parser.error("--batch-sizes must be positive integers")
    return args


def build_model(name, grouped_conv):
    try:
        builder = get_builder(name)
    except (ImportError, AttributeError, ValueError) as exc:
        return None, f"not available ({type(exc).__name__}: {exc})"
    kwargs = {"grouped_conv": grouped_conv} if name.startswith("msconv") else {}
    return builder(input_shape=(SIZE, SIZE, 3), **kwargs), None


def parameter_count(model):
    # The PyTorch-parameter count (frozen weights included, BN/fusion statistics excluded).
    return count_parameters(model)


def gflops_per_image(model):
    """FLOPs of one 112x112 forward pass from TensorFlow's profiler (multiply-add = 2 FLOPs).

    TensorFlow runs a native grouped convolution on CPU inside a nested XLA function that the
    profiler does not see into, so MSConv models are counted on their ``grouped_conv="split"`` clone
    (same weights and arithmetic, ordinary convolutions).
    """
    import tensorflow as tf

    from keras_fr.layers.msconv import MSConv, clone_with_grouped_conv, resolve_grouped_conv

    if any(isinstance(l, MSConv) and resolve_grouped_conv(l.grouped_conv) == "native" for l in model.layers):
        model = clone_with_grouped_conv(model, "split")
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, SIZE, SIZE, 3), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)  # also inlines nested functions
    graph_def = frozen.graph.as_graph_def()
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        builder = tf.compat.v1.profiler.ProfileOptionBuilder
        options = builder(builder.float_operation()).with_empty_output().build()
        profile = tf.compat.v1.profiler.profile(
            graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
    return profile.total_float_ops / 1e9


def time_calls(fn, x, warmup, min_calls, min_seconds, max_calls):
    """Median seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        _block(fn(x))
    times = []
    start = time.perf_counter()
    while len(times) < max_calls and (
        len(times) < min_calls or time.perf_counter() - start < min_seconds
    ):
        t0 = time.perf_counter()
        _block(fn(x))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def _block(y):
    # Results must be materialized before the clock stops.
    import numpy as np

    np.asarray(y)


def settings_for(batch, quick):
    """(warm-up calls, min calls, min seconds, max calls).

    Batch 1: at least 3 timed calls and 1.5 s. Larger batches: 2 timed calls (a batch-32 call of a
    100-layer network takes several seconds on 2 cores), which keeps the full run near 5 minutes.
    """
    if quick:
        return 1, 2, 0.0, 2
    if batch == 1:
        return 2, 3, 1.5, 50
    return 1, 2, 0.0, 2


def run(args):
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    results = []
    for name in args.models:
        keras.backend.clear_session()
        t0 = time.perf_counter()
        model, why = build_model(name, args.grouped_conv)
        if model is None:
            print(f"{name}: skipped, {why}", flush=True)
            results.append({"model": name, "skipped": why})
            continue
        entry = {
            "model": name,
            "parameters": parameter_count(model),
            "build_seconds": round(time.perf_counter() - t0, 2),
            "throughput": [],
        }
        if name.startswith("msconv"):
            entry["grouped_conv"] = args.grouped_conv
        if not args.no_flops:
            entry["gflops_per_image"] = round(gflops_per_image(model), 3)
        jit_fn = tf.function(lambda x: model(x, training=False), jit_compile=True)
        for batch in args.batch_sizes:
            x = rng.uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype("float32")
            warmup, min_calls, min_seconds, max_calls = settings_for(batch, args.quick)
            for mode in args.modes:
                fn = model.predict_on_batch if mode == "eager" else jit_fn
                t_start = time.perf_counter()
                seconds, calls = time_calls(fn, x, warmup, min_calls, min_seconds, max_calls)
                row = {
                    "batch_size": batch,
                    "mode": mode,
                    "seconds_per_call": seconds,
                    "images_per_second": batch / seconds,
                    "timed_calls": calls,
                    "total_seconds": round(time.perf_counter() - t_start, 2),
                }
                entry["throughput"].append(row)
                print(
                    f"{name:18s} batch {batch:3d} {mode:5s} {row['images_per_second']:8.2f} img/s "
                    f"({calls} calls, {row['total_seconds']:.1f} s incl. warm-up)",
                    flush=True,
                )
        results.append(entry)
        del model, jit_fn
    return results


def print_table(results, batch_sizes, modes):
    cols = [f"b{b} {m}" for b in batch_sizes for m in modes]
    header = f"{'model':18s} {'params':>12s} {'GFLOPs':>7s} " + " ".join(f"{c:>10s}" for c in cols)
    print()
    print("images/s (higher is better); GFLOPs per 112x112 image, multiply-add = 2 FLOPs")
    print(header)
    print("-" * len(header))
    for entry in results:
        if "skipped" in entry:
            print(f"{entry['model']:18s} skipped: {entry['skipped']}")
            continue
        by_key = {(r["batch_size"], r["mode"]): r["images_per_second"] for r in entry["throughput"]}
        gflops = entry.get("gflops_per_image")
        cells = [
            f"{by_key[(b, m)]:10.2f}" if (b, m) in by_key else f"{'-':>10s}"
            for b in batch_sizes
            for m in modes
        ]
        print(
            f"{entry['model']:18s} {entry['parameters']:12,d} "
            f"{(f'{gflops:.2f}' if gflops is not None else '-'):>7s} " + " ".join(cells)
        )


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    results = run(args)
    print_table(results, args.batch_sizes, args.modes)
    payload = {
        "benchmark": "inference",
        "command": "python benchmarks/inference.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "input_size": SIZE,
        "flops_method": "tf.compat.v1.profiler float_operation on the frozen batch-1 inference "
        "graph; a multiply-add counts as 2 FLOPs",
        "modes": {
            "eager": "model.predict_on_batch (Keras' tf.function, no XLA on CPU)",
            "jit": "tf.function(model(x, training=False), jit_compile=True)",
        },
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        },
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    write_json(args.output, payload)
    print(f"\nwrote {args.output} (total {payload['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
