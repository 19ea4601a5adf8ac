"""What every benchmark script shares: quiet TensorFlow logs, the TensorFlow backend, the project root
on ``sys.path`` (so a script runs from a checkout without installing), and atomic JSON results.

Imported by the scripts in this folder as ``import _bench`` before anything imports Keras; running a
script puts this folder first on ``sys.path``. oneDNN is left on: benchmarks measure the default path.
"""

import datetime
import json
import os
import platform
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def write_json(path, payload):
    """Write ``payload`` to ``path`` as indented JSON, atomically (a temp file renamed into place)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


#: CPU features that decide which kernels run: float32 width (AVX2 / AVX-512), bfloat16 and int8
#: units (AVX512_BF16, AMX, VNNI), native float16 (AVX512_FP16).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                "amx_bf16", "amx_int8")


def cpu_info(path="/proc/cpuinfo"):
    """``(model name, [features of CPU_FEATURES it has])`` from ``path``, or ``("unknown", [])``.

    Figures measured on one machine do not carry to another: between sessions this project has run on
    an AVX-512 + AMX machine and on an AVX2-only one, where bfloat16 autocast trains 13x slower than
    float32 and int8 TFLite files lose to float32. Every result file records which CPU it came from.
    """
    model, flags = "unknown", set()
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, [name for name in CPU_FEATURES if name in flags]


def cpu_line():
    """One line naming the CPU and its relevant features, for a benchmark's printed header."""
    model, features = cpu_info()
    return f"CPU: {model}, {os.cpu_count()} logical cores; {' '.join(features) or 'no listed features'}"


def machine_info():
    """Platform, CPU (model, count, features), visible GPUs and the TensorFlow version (imports TensorFlow)."""
    import tensorflow as tf

    model, features = cpu_info()
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": model,
        "cpu_features": features,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "gpus": [g.name for g in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
    }


def result_header(benchmark, argv=None):
    """The fields every results file starts with: name, the command that produced it, UTC date, machine."""
    args = sys.argv[1:] if argv is None else list(argv)
    return {
        "benchmark": benchmark,
        "command": " ".join([f"python benchmarks/{benchmark}.py", *args]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }


def peak_rss_mb():
    """Peak resident memory of this process since it started its program, in MiB.

    Linux's ``VmHWM`` (``/proc/self/status``) starts afresh at ``exec``; ``ru_maxrss`` does not (a
    child started by a large parent would report the parent's peak), so it is only the fallback.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_child(script, job, timeout, env=None):
    """Run ``script --child JSON(job)`` in a fresh Python process (``env``: its environment, default
    this one's) and return the dict it printed last as a JSON line, or ``{"failed": reason}``."""
    import subprocess

    cmd = [sys.executable, os.path.abspath(script), "--child", json.dumps(job)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"exit {done.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


def check_counts(parser, args, positive=(), non_negative=()):
    """``parser.error`` for an option of ``positive`` below 1 or of ``non_negative`` below 0 (options
    left at ``None`` are not checked); the names are ``args`` attributes."""
    for keys, low in ((positive, 1), (non_negative, 0)):
        for key in keys:
            value = getattr(args, key)
            if value is not None and value < low:
                parser.error(f"--{key.replace('_', '-')} must be >= {low}; got {value}")


def answer_child(args, child):
    """In a process started by :func:`run_child` (``args.child`` set): run ``child(job)`` and print its
    result as the last JSON line; True if it did, so the script's ``main`` returns."""
    if not args.child:
        return False
    print(json.dumps(child(json.loads(args.child))), flush=True)
    return True
