"""Batch inference speed under TensorFlow's process-wide settings: the tensor allocator and oneDNN's kept
kernels (what ``keras_fr.cli.configure_process`` chooses per ``keras-fr`` sub-command).

Two variables, each read once per process by TensorFlow, so every combination runs in its own fresh
child process:

- ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR`` (``keras_fr._memory``): 0 keeps TensorFlow's pool, 1 hands freed
  tensors back to the system;
- ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS`` (``keras_fr._onednn``): 1 lets each oneDNN convolution keep the
  kernel it reordered on its first call (inference only: training would not learn).

Each child builds the model with random weights (speed does not depend on them), makes its inference
copy (``keras_fr.applications.inference_model``, what the library's batch paths run) and times
``predict_on_batch`` on one random batch: ``--warmup`` untimed calls, then ``--iters`` timed ones; the
best and the median are reported with the child's peak resident memory (``VmHWM``). The combinations
are run ``--rounds`` times, interleaved, so a slow minute of the machine does not favour one of them.

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

#: (label, allocator value, frozen-weights value); the labels say which keras-fr sub-commands run so.
SETTINGS = (
    ("pool (Python default; keras-fr train)", "0", "0"),
    ("pool + kept kernels (keras-fr eval)", "0", "1"),
    ("system (keras-fr export, convert, demo)", "1", "0"),
    ("system + kept kernels (keras-fr verify, embed, ...)", "1", "1"),
)
DEFAULT_CASES = ("msconv_resnet50:32", "iresnet100:32", "iresnet100:1")
RESULTS = os.path.join(HERE, "results", "process_settings.json")


def _child(job):
    import numpy as np

    from keras_fr.applications import get_model
    from keras_fr.applications.inference import inference_copy

    model = inference_copy(get_model(job["model"], weights=None))
    size = model.input_shape[1] or 112
    x = np.random.default_rng(0).random((job["batch"], size, size, 3), dtype=np.float32) * 2 - 1
    for _ in range(job["warmup"]):
        model.predict_on_batch(x)
    times = []
    for _ in range(job["iters"]):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"best_img_s": job["batch"] / times[0], "median_img_s": job["batch"] / times[len(times) // 2],
            "peak_mb": _bench.peak_rss_mb()}


def _run_child(job, allocator, frozen, timeout):
    return _bench.run_child(__file__, job, timeout, env=dict(os.environ, **{ALLOCATOR: allocator, FROZEN: frozen}))


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
        runs = {label: [] for label, _, _ in SETTINGS}
        for _ in range(args.rounds):
            for label, allocator, frozen in SETTINGS:
                runs[label].append(_run_child(job, allocator, frozen, args.child_timeout))
        for label, allocator, frozen in SETTINGS:
            ok = [r for r in runs[label] if "failed" not in r]
            row = {"model": model, "batch": batch, "setting": label, ALLOCATOR: allocator, FROZEN: frozen,
                   "runs": runs[label]}
            if ok:
                row["best_img_s"] = max(r["best_img_s"] for r in ok)
                row["median_img_s"] = sorted(r["median_img_s"] for r in ok)[len(ok) // 2]
                row["peak_mb"] = max(r["peak_mb"] for r in ok)
            rows.append(row)
            shown = (f"best {row['best_img_s']:7.2f}  median {row['median_img_s']:7.2f} img/s  peak "
                     f"{row['peak_mb']:6.0f} MB" if ok else runs[label][-1]["failed"])
            print(f"{model:16s} b{batch:<3d} {label:52s} {shown}", flush=True)
    write_json(args.output, {**_bench.result_header("process_settings", argv), "rounds": args.rounds,
                             "rows": rows, "seconds": time.perf_counter() - started})
    print(f"wrote {args.output} ({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
