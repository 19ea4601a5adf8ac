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


def machine_info():
    """Platform, CPU count, visible GPUs and the TensorFlow version (imports TensorFlow)."""
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
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
