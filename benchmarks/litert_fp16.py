"""Does XNNPACK's float16 mode make IResNet100's TFLite file faster at batch 1? (issue 17; here: no)

This CPU has AVX512-FP16. LiteRT's ``CompiledModel`` takes XNNPACK flags through its CPU options;
``TFLITE_XNNPACK_DELEGATE_FLAG_FORCE_FP16`` (``0x4``, from TensorFlow Lite's ``xnnpack_delegate.h``)
runs the float32 operators in float16. The script builds a float32 TFLite file of a keras_fr network
(random weights, seed 0; ``keras_fr.export.to_tflite``, verified against Keras as the library does)
or takes one (``--tflite``), and times at batch 1, 2 threads, the best of ``--iters`` calls after 2:

- ``interpreter``: the classic ``Interpreter`` (XNNPACK delegate with its default flags), what the
  recognizer's TFLite runtime runs;
- ``compiled``: ``CompiledModel`` on the CPU with XNNPACK's default flags;
- ``compiled fp16``: the same with ``QS8 | QU8 | FORCE_FP16`` (``0x7``).

Each also reports the smallest cosine of its outputs to the interpreter's over ``--inputs`` random
inputs (uniform in [-1, 1]); the recognizer's runtime bar is 0.9999 against Keras.

Usage:
    python benchmarks/litert_fp16.py                      # IResNet100: conversion takes ~1.5 min
    python benchmarks/litert_fp16.py --tflite m.tflite --iters 20
"""

import argparse
import os
import sys
import tempfile
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, write_json  # noqa: E402

FORCE_FP16 = 0x4
DEFAULT_INT8 = 0x1 | 0x2  # QS8 | QU8, XNNPACK's defaults in TensorFlow Lite
RESULTS = os.path.join(HERE, "results", "litert_fp16.json")


def _build(name, folder):
    import keras

    from keras_fr.applications import get_model
    from keras_fr.export import to_tflite

    keras.utils.set_random_seed(0)
    model = get_model(name, weights=None)
    path = os.path.join(folder, f"{name}.tflite")
    to_tflite(model, path)
    return path


def _best(fn, iters):
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="iresnet100", help="keras_fr network to convert (default iresnet100)")
    parser.add_argument("--tflite", default=None, help="a float32 TFLite file to time instead of converting")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per runtime (default 10)")
    parser.add_argument("--inputs", type=int, default=4, help="random inputs for the cosine (default 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    _bench.check_counts(parser, args, positive=("iters", "inputs", "threads"))
    import numpy as np
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.options import CpuOptions, Options

    print(_bench.cpu_line())
    with tempfile.TemporaryDirectory() as folder:
        if args.tflite:
            path = args.tflite
        else:
            start = time.perf_counter()
            path = _build(args.model, folder)
            print(f"built {args.model} float32 TFLite file in {time.perf_counter() - start:.0f} s", flush=True)
        interpreter = Interpreter(model_path=path, num_threads=args.threads)
        interpreter.allocate_tensors()
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        rng = np.random.default_rng(0)
        inputs = [rng.uniform(-1, 1, inp["shape"]).astype(np.float32) for _ in range(args.inputs)]

        def run_interpreter(x):
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(out["index"]).copy()

        reference = [run_interpreter(x) for x in inputs]
        runners = {"interpreter": run_interpreter}
        for label, flags in (("compiled", None), ("compiled fp16", DEFAULT_INT8 | FORCE_FP16)):
            compiled = CompiledModel.from_file(
                path, options=Options(cpu_options=CpuOptions(num_threads=args.threads, xnnpack_flags=flags)))
            ins, outs = compiled.create_input_buffers(0), compiled.create_output_buffers(0)

            def run(x, compiled=compiled, ins=ins, outs=outs):
                ins[0].write(x)
                compiled.run_by_index(0, ins, outs)
                return outs[0].read(int(np.prod(out["shape"])), np.float32).reshape(out["shape"])

            runners[label] = run
        rows = []
        for label, run in runners.items():
            seconds = _best(lambda run=run: run(inputs[0]), args.iters)
            cosines = []
            for x, ref in zip(inputs, reference):
                y = run(x).ravel().astype(np.float64)
                r = ref.ravel().astype(np.float64)
                cosines.append(float(y @ r / (np.linalg.norm(y) * np.linalg.norm(r))))
            row = {"runtime": label, "ms": seconds * 1e3, "images_per_second": 1 / seconds,
                   "min_cosine_to_interpreter": min(cosines)}
            rows.append(row)
            print(f"{label:14s} {seconds * 1e3:8.1f} ms  {1 / seconds:6.2f} images/s  "
                  f"min cosine to the interpreter {min(cosines):.6f}", flush=True)
    write_json(args.output, {**_bench.result_header("litert_fp16", argv), "model": args.tflite or args.model,
                             "threads": args.threads, "rows": rows})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
