"""Deployment benchmark: file size, batch-1 latency and batch-32 throughput per runtime, in one run.

For each model: Keras on TensorFlow (a traced tf.function), Keras with XLA (jit_compile=True), TFLite
with the LiteRT interpreter's default XNNPACK delegate in float32, float16 and int8, and ONNX Runtime
(CPU). Every file is produced by ``keras_fr.export`` and verified against Keras on the way (the
reported cosine is the export's own check). Weights are random (timings do not depend on their
values); int8 is calibrated on CelebA crops from ../shared/data when present, else synthetic faces.

Usage:
    python benchmarks/export.py                      # default models, ~5 minutes on 2 quiet cores
    python benchmarks/export.py --models iresnet50,lgaf_resnet50
    python benchmarks/export.py --quick              # one small model, few iterations (smoke test)

Prints a table and writes benchmarks/results/export.json.
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import write_json  # noqa: E402

ROOT = pathlib.Path(_bench.ROOT)
RESULTS = ROOT / "benchmarks" / "results" / "export.json"
CELEBA_IMAGES = ROOT.parent / "shared" / "data" / "celeba299" / "images"
DEFAULT_MODELS = "iresnet18,msconv_resnet26"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None,
                        help=f"comma-separated registry names (default {DEFAULT_MODELS})")
    parser.add_argument("--quick", action="store_true",
                        help="iresnet18 only, 2 timed iterations, small calibration set")
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for TFLite and ONNX Runtime (default: all cores)")
    parser.add_argument("--output", default=str(RESULTS), help="JSON results path")
    return parser.parse_args(argv)


def timed(fn, x, iterations, warmup=2):
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tflite_runner(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    state = {"shape": None}

    def run(x):
        if state["shape"] != x.shape:
            interpreter.resize_tensor_input(inp, list(x.shape))
            interpreter.allocate_tensors()
            state["shape"] = x.shape
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def onnx_runner(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def keras_runner(model, jit_compile):
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile, reduce_retracing=True)
    return lambda x: fn(tf.constant(x)).numpy()


def calibration_images(count):
    import numpy as np

    from keras_fr.export import synthetic_faces

    files = sorted(CELEBA_IMAGES.glob("*/*.jpg")) if CELEBA_IMAGES.is_dir() else []
    if len(files) >= count:
        from PIL import Image

        step = len(files) // count
        picked = files[::step][:count]
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in picked]), "celeba299"
    return synthetic_faces(count, 112, seed=0), "synthetic"


def bench_model(name, args, iterations, workdir):
    import numpy as np

    from keras_fr import export
    from keras_fr.cli._common import build_model

    model = build_model(name)
    size = int(model.input_shape[1])  # 112 for the ArcFace-crop models, 150 for dlib_resnet
    x32 = export.synthetic_faces(32, size, seed=1).astype(np.float32) / 127.5 - 1.0
    x1 = x32[:1].copy()
    num_calib = 16 if args.quick else 100
    if size == 112:
        calib, calib_source = calibration_images(num_calib + 8)
    else:  # the aligned CelebA crops are 112x112
        calib, calib_source = export.synthetic_faces(num_calib + 8, size, seed=0), "synthetic"

    rows = []

    def measure(runtime, run, size=None, report=None):
        latency = timed(run, x1, iterations)
        batch_time = timed(run, x32, max(1, iterations // 2), warmup=1)
        row = {
            "model": name, "runtime": runtime, "size_mb": None if size is None else size / 2**20,
            "latency_b1_ms": 1000 * latency, "throughput_b32_ips": 32 / batch_time,
            "min_cosine": None if report is None else report.min_cosine,
        }
        rows.append(row)
        print_row(row)

    measure("keras-tf", keras_runner(model, jit_compile=False))
    measure("keras-xla", keras_runner(model, jit_compile=True))
    for quantize in (None, "float16", "int8"):
        path = workdir / f"{name}_{quantize or 'float32'}.tflite"
        try:
            report = export.to_tflite(
                model, path, quantize=quantize,
                representative_data=calib if quantize == "int8" else None,
                num_calibration_samples=num_calib,
            )
        except export.ExportVerificationError as exc:  # a file that misses its bar is a result too
            row = {"model": name, "runtime": f"tflite-{quantize or 'float32'}", "failed": str(exc)}
            rows.append(row)
            print(f"{name:<18} {row['runtime']:<16} failed: {exc}", flush=True)
            continue
        runner = tflite_runner(path, args.threads)
        measure(f"tflite-{quantize or 'float32'}", runner, report.size_bytes, report)
        path.unlink()
    path = workdir / f"{name}.onnx"
    report = export.to_onnx(model, path)
    measure("onnxruntime", onnx_runner(path, args.threads), report.size_bytes, report)
    path.unlink()
    return rows, calib_source


HEADER = f"{'model':<18} {'runtime':<16} {'size MB':>8} {'b1 ms':>9} {'b32 img/s':>10} {'cosine':>9}"


def print_row(row):
    size = "" if row["size_mb"] is None else f"{row['size_mb']:.1f}"
    cos = "" if row["min_cosine"] is None else f"{row['min_cosine']:.5f}"
    print(f"{row['model']:<18} {row['runtime']:<16} {size:>8} {row['latency_b1_ms']:>9.1f} "
          f"{row['throughput_b32_ips']:>10.1f} {cos:>9}", flush=True)


def main(argv=None):
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # tf2onnx's numpy-2 shim
    args = parse_args(argv)
    if args.quick and args.models is None:
        models = ["iresnet18"]
    else:
        models = (args.models or DEFAULT_MODELS).split(",")
    from keras_fr.cli._common import MODELS

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {', '.join(sorted(MODELS))}")
    iterations = args.iterations or (2 if args.quick else 8)
    print(_bench.cpu_line())
    print(HEADER)
    all_rows, sources = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            rows, source = bench_model(name, args, iterations, pathlib.Path(tmp))
            all_rows.extend(rows)
            sources.add(source)
    import keras
    import tensorflow as tf

    cpu_model, cpu_features = _bench.cpu_info()
    result = {
        "command": "python benchmarks/export.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model,
            "cpu_features": cpu_features,
            "python": platform.python_version(),
        },
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "threads": args.threads,
        "iterations": iterations,
        "calibration": sorted(sources),
        "rows": all_rows,
    }
    write_json(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
