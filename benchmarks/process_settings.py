"""Batch inference speed under TensorFlow's process-wide settings: the tensor allocator, oneDNN's kept
kernels and the thread layout (what ``keras_fr.cli.configure_process`` chooses per ``keras-fr``
sub-command).

Variables read once per process by TensorFlow, so every combination runs in its own fresh child
process:

- ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR`` (``keras_fr._memory``): 0 keeps TensorFlow's pool, 1 hands freed
  tensors back to the system;
- ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS`` (``keras_fr._onednn``): 1 lets each oneDNN convolution keep the
  kernel it reordered on its first call (inference only: training would not learn);
- ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` (``keras_fr._threads``): 1 / the cores runs
  one thread per operation, and the batch is cut into one part per core that the graph runs side by
  side; 0 / 0 is TensorFlow's default (each operation on all the cores).

Each child builds the model with random weights (speed does not depend on them), makes its inference
copy (``keras_fr.applications.inference_model``, what the library's batch paths run) and times
``predict_in_parts`` (``predict_on_batch``, cut into parts under one thread per operation: what
``extract_embeddings`` runs) on one random batch: ``--warmup`` untimed calls, then ``--iters`` timed
ones; the best and the median are reported with the child's peak resident memory (``VmHWM``). The
combinations are run ``--rounds`` times, interleaved, so a slow minute of the machine does not favour
one of them.

Usage:
    python benchmarks/process_settings.py                       # MSConvResNet50 b32, IResNet100 b32 and b1
    python benchmarks/process_settings.py --cases msconv_resnet50:32 --rounds 3
"""

import argparse
import os
import sys
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, write_json  # noqa: E402

from keras_fr._memory import SYSTEM_ALLOCATOR_VARIABLE as ALLOCATOR  # noqa: E402
from keras_fr._onednn import FROZEN_WEIGHTS_VARIABLE as FROZEN  # noqa: E402
from keras_fr._threads import INTER_OP_VARIABLE as INTER  # noqa: E402
from keras_fr._threads import INTRA_OP_VARIABLE as INTRA  # noqa: E402
from keras_fr._threads import one_thread_per_op  # noqa: E402

#: (label, the variables' values); the labels say which keras-fr sub-commands run so. "0" for the thread
#: counts is TensorFlow's own default (each operation on all cores).
_DEFAULT_THREADS = {INTRA: "0", INTER: "0"}
_ONE_THREAD_PER_OP = one_thread_per_op()  # what keras-fr eval sets
SETTINGS = (
    ("pool (Python default; keras-fr train)", {ALLOCATOR: "0", FROZEN: "0", **_DEFAULT_THREADS}),
    ("pool + kept kernels", {ALLOCATOR: "0", FROZEN: "1", **_DEFAULT_THREADS}),
    ("pool + one thread per op", {ALLOCATOR: "0", FROZEN: "0", **_ONE_THREAD_PER_OP}),
    ("pool + kept kernels + one thread per op (keras-fr eval)",
     {ALLOCATOR: "0", FROZEN: "1", **_ONE_THREAD_PER_OP}),
    ("system (keras-fr export, convert, demo)", {ALLOCATOR: "1", FROZEN: "0", **_DEFAULT_THREADS}),
    ("system + kept kernels (keras-fr verify, embed, ...)", {ALLOCATOR: "1", FROZEN: "1", **_DEFAULT_THREADS}),
)
DEFAULT_CASES = ("msconv_resnet50:32", "iresnet100:32", "iresnet100:1")
RESULTS = os.path.join(HERE, "results", "process_settings.json")


def _child(job):
    import numpy as np

    from keras_fr.applications import get_model
    from keras_fr.applications.inference import inference_copy, predict_in_parts

    model = inference_copy(get_model(job["model"], weights=None))
    size = model.input_shape[1] or 112
    x = np.random.default_rng(0).random((job["batch"], size, size, 3), dtype=np.float32) * 2 - 1
    for _ in range(job["warmup"]):
        predict_in_parts(model, x)  # predict_on_batch, in parallel parts under one thread per op
    times = []
    for _ in range(job["iters"]):
        start = time.perf_counter()
        predict_in_parts(model, x)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"best_img_s": job["batch"] / times[0], "median_img_s": job["batch"] / times[len(times) // 2],
            "peak_mb": _bench.peak_rss_mb()}


def _run_child(job, variables, timeout):
    return _bench.run_child(__file__, job, timeout, env=dict(os.environ, **variables))


def _case(text):
    model, _, batch = text.partition(":")
    if not model or not batch.isdigit() or int(batch) < 1:
        raise argparse.ArgumentTypeError(f"a case is MODEL:BATCH, e.g. msconv_resnet50:32; got {text!r}")
    from keras_fr.applications import canonical_name, get_builder

    try:
        get_builder(model)  # an unknown name fails here, before any child runs, with the known ones
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return canonical_name(model), int(batch)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", type=_case, default=[_case(c) for c in DEFAULT_CASES],
                        help=f"MODEL:BATCH pairs (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all settings (default 2)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per child (default 6; 15 at batch 1)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--child-timeout", type=int, default=1200, help="seconds per child")
    parser.add_argument("--output", default=RESULTS, help="JSON results file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _bench.check_counts(parser, args, positive=("rounds", "child_timeout", "iters"), non_negative=("warmup",))
    return args


def main(argv=None):
    args = parse_args(argv)
    if _bench.answer_child(args, _child):
        return 0
    started = time.perf_counter()
    print(_bench.cpu_line())
    rows = []
    for model, batch in args.cases:
        job = {"model": model, "batch": batch, "warmup": args.warmup,
               "iters": args.iters or (15 if batch == 1 else 6)}
        runs = {label: [] for label, _ in SETTINGS}
        for _ in range(args.rounds):
            for label, variables in SETTINGS:
                runs[label].append(_run_child(job, variables, args.child_timeout))
        for label, variables in SETTINGS:
            ok = [r for r in runs[label] if "failed" not in r]
            row = {"model": model, "batch": batch, "setting": label, **variables, "runs": runs[label]}
            if ok:
                row["best_img_s"] = max(r["best_img_s"] for r in ok)
                row["median_img_s"] = sorted(r["median_img_s"] for r in ok)[len(ok) // 2]
                row["peak_mb"] = max(r["peak_mb"] for r in ok)
            rows.append(row)
            shown = (f"best {row['best_img_s']:7.2f}  median {row['median_img_s']:7.2f} img/s  peak "
                     f"{row['peak_mb']:6.0f} MB" if ok else runs[label][-1]["failed"])
            print(f"{model:16s} b{batch:<3d} {label:56s} {shown}", flush=True)
    write_json(args.output, {**_bench.result_header("process_settings", argv), "rounds": args.rounds,
                             "rows": rows, "seconds": time.perf_counter() - started})
    print(f"wrote {args.output} ({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
