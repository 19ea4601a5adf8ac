"""Throughput of keras_fr vs the PyTorch reference, with the same converted weights.

For MSConvResNet50, IResNet-100 and LGAFResNet100: the PyTorch reference network gets random
weights (``keras_fr.torch_reference.randomize_``), its state dict is converted into the keras_fr
model (``keras_fr.conversion.load_state_dict``, strict), the outputs are checked to agree, and both
are timed at batch 1 and 32 on 112x112 inputs in one run: PyTorch in eval mode under
``torch.no_grad()`` with ``torch.set_num_threads(<cores>)``; Keras as the best of the eager call and
a compiled (XLA, TensorFlow backend) call. Prints images/s and the ratio keras_fr / PyTorch, and
writes ``benchmarks/results/compare_reference.json``.

Usage:
    python benchmarks/compare_reference.py            # full run (a few minutes on 2 cores)
    python benchmarks/compare_reference.py --quick    # check it runs: tiny batches, one iteration
"""

import argparse
import os
import pathlib
import sys
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import write_json  # noqa: E402

import numpy as np  # noqa: E402

MODELS = ("msconv_resnet50", "iresnet100", "lgaf_resnet100")
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "compare_reference.json"


def _time(fn, x, iters, warmup):
    for _ in range(warmup):
        fn(x)
    best = float("inf")
    for _ in range(iters):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


def _keras_callables(model, jit=True):
    import keras

    calls = {"eager": lambda x: np.asarray(model(x, training=False))}
    if jit and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda x: model(x, training=False), jit_compile=True)
        calls["jit"] = lambda x: np.asarray(compiled(x))
    return calls


def bench_model(name, batch_sizes, iters, warmup, jit=True):
    import torch

    from keras_fr.conversion import (
        build_keras_model,
        compare_outputs,
        infer_architecture,
        load_state_dict,
    )
    from keras_fr.torch_reference import build_reference, randomize_

    net = randomize_(build_reference(name), input_size=112, seed=0)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    model = build_keras_model(infer_architecture(state))
    load_state_dict(model, state)
    rng = np.random.default_rng(0)
    rows = []
    calls = _keras_callables(model, jit)
    for batch in batch_sizes:
        x = np.clip(rng.normal(0, 0.5, (batch, 112, 112, 3)), -1, 1).astype("float32")
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

        def torch_call(inp):
            with torch.no_grad():
                return net(inp)

        max_diff, cos = compare_outputs(torch_call(xt).numpy(), calls["eager"](x))
        n = iters if iters else (5 if batch == 1 else 3)
        t_torch = _time(torch_call, xt, n, warmup)
        keras_times = {mode: _time(fn, x, n, warmup) for mode, fn in calls.items()}
        mode, t_keras = min(keras_times.items(), key=lambda item: item[1])
        rows.append({
            "model": name,
            "batch": batch,
            "torch_img_s": batch / t_torch,
            "keras_img_s": batch / t_keras,
            "keras_mode": mode,
            "iters": n,
            "keras_img_s_by_mode": {m: batch / t for m, t in keras_times.items()},
            "ratio_keras_over_torch": t_torch / t_keras,
            "max_abs_diff": max_diff,
            "min_cosine": float(cos.min()),
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny batches, one iteration")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (best of)")
    parser.add_argument("--output", default=str(RESULTS), help="JSON results file")
    parser.add_argument("--no-jit", action="store_true",
                        help="time Keras eagerly only (skips the XLA compilation of each batch size)")
    args = parser.parse_args(argv)

    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    batch_sizes = (1, 2) if args.quick else (1, 32)
    # best-of iterations: 5 at batch 1, 3 at batch 32 (a full run stays near 5 minutes on 2 cores)
    iters = args.iters or (1 if args.quick else None)
    warmup = 1 if args.quick else 2

    rows = []
    for name in args.models:
        rows += bench_model(name, batch_sizes, iters, warmup, jit=not args.no_jit)

    print(f"{'model':<17}{'batch':>6}{'torch img/s':>13}{'keras img/s':>13}{'mode':>7}"
          f"{'ratio':>8}{'max|diff|':>11}")
    for r in rows:
        print(f"{r['model']:<17}{r['batch']:>6}{r['torch_img_s']:>13.2f}{r['keras_img_s']:>13.2f}"
              f"{r['keras_mode']:>7}{r['ratio_keras_over_torch']:>8.2f}{r['max_abs_diff']:>11.2e}")
    import keras

    result = {
        "command": " ".join([pathlib.Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
        "quick": args.quick,
        "threads": threads,
        "torch": torch.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "iters": iters,
        "rows": rows,
    }
    write_json(args.output, result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
