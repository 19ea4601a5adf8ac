"""Where a recognizer's embeddings are computed: Keras, or a verified TFLite / ONNX Runtime file.

``FaceRecognizer(runtime=...)`` and ``keras-fr verify/embed/identify/enroll --runtime`` choose:

- ``"keras"``: the Keras model itself (the reference every other runtime is checked against).
- ``"tflite"``: a float32 TFLite (LiteRT) file of the model, run by the LiteRT interpreter with
  XNNPACK on all the process's cores.
- ``"onnx"``: an ONNX file of the model, run by ONNX Runtime (CPU) on all the process's cores.
- ``"auto"`` (default): the fastest of the files that can be used here (TensorFlow backend, the
  ``export`` extra installed, weights with a file to hash) among :data:`AUTO_KINDS` (a TFLite file and
  an ONNX Runtime file), or Keras when Keras is faster (and for batches larger than
  :data:`AUTO_MAX_BATCH`, when that is set). Faster: when the files are built (once), each file and
  the Keras model run one face :data:`TIMING_CALLS` times at batch 1, one after the other, and every
  file's record keeps all the median times. ``"auto"`` takes the fastest file, then stays with Keras
  when Keras took at most :data:`AUTO_MARGIN` of that file's time. No one file is the fastest for
  every network: on a 2-core AMX Xeon at batch 1, ONNX Runtime ran IResNet100 and LGAFResNet100 about
  1.3x faster than TFLite's XNNPACK and MSConvResNet50 about 5% slower (docs/benchmarks.md). A file
  that fails to build is left out (``"auto"`` says so on stderr and does not try again for that cache
  entry); when none can be built, ``"auto"`` runs Keras. An explicit ``"tflite"`` / ``"onnx"`` raises
  instead.

**How a file is made.** With the exporters of :mod:`keras_fr.export` (builtin operators only,
written atomically), then checked here on face-like images (:func:`keras_fr.export.synthetic_faces`,
preprocessed the way the model expects), at a batch of :data:`VERIFY_SAMPLES` and at batch 1: every
embedding must have cosine >= :data:`MIN_COSINE` with Keras's, or the file is not used. (The
exporters' own float32 bar, max |diff| <= 1e-4 of the output scale, is stricter than a recognizer
needs and is not applied to runtime files.)

**The cache.** A file is built once per (model name, sha256 of the weights file, keras_fr version,
runtime, input size, layer shapes) and kept in the cache folder (``cache_dir=``, else
``$KERAS_FR_CACHE/runtime``, else ``~/.cache/keras_fr/runtime``) as ``<model>-<runtime>-<key hash>``
with a ``.json`` record beside it: the key, the file's sha256 and the check's numbers. A cached file
is used only if the record's key is the expected one, the file's own sha256 matches the record and
the file reproduces the Keras model on two face-like probe images (cosine >= :data:`MIN_COSINE`, a
batch-2 call of each when the recognizer is made); anything else (a missing, truncated, tampered or unreadable entry) is rebuilt,
never trusted. Files and records are written atomically (``keras_fr._atomic``), the record last.

Weights without a file (random initialization, a built model given without ``weights``) have no hash
to key a file on: ``"auto"`` uses Keras for them, and an explicit ``"tflite"`` / ``"onnx"`` builds and
checks a file in a temporary folder, loads it into memory and deletes it: nothing is cached.
"""

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from keras_fr import _quiet
from keras_fr._atomic import file_sha256, write_text  # noqa: F401  (file_sha256: public here too)
from keras_fr._threads import available_cores

#: The runtimes a recognizer accepts.
RUNTIMES = ("auto", "keras", "tflite", "onnx")
#: Environment variable naming keras_fr's cache folder (runtime files go into its ``runtime/``).
CACHE_ENV = "KERAS_FR_CACHE"
#: Smallest per-embedding cosine with Keras that a runtime file must reach when built and when loaded.
MIN_COSINE = 0.9999
#: ``runtime="auto"`` runs batches of up to this many images in the TFLite file and larger ones in
#: Keras; ``None``: every batch in the file. Rough measurements here (dlib_resnet, batches 1 to 128,
#: docs/recognition.md "Runtimes") found the file ahead of Keras at every batch size, so there is no
#: limit until a quiet-machine run (benchmarks/compare_reference.py) shows Keras ahead somewhere.
AUTO_MAX_BATCH = None
#: The files ``"auto"`` builds, checks, times and chooses from (those whose modules are installed).
AUTO_KINDS = ("tflite", "onnx")
#: Timed batch-1 calls of the file and of Keras when ``"auto"`` builds a file (after one warm-up each).
TIMING_CALLS = 5
#: ``"auto"`` runs Keras instead of the file when Keras' batch-1 time is at most this fraction of the
#: file's (a margin against timing noise: a near tie keeps the file).
AUTO_MARGIN = 0.9
#: Face-like images in the build-time check (then the first one alone, at batch 1).
VERIFY_SAMPLES = 8
#: Probe images whose Keras embeddings the record keeps, to re-check a cached file on load.
PROBE_SAMPLES = 2
#: Layout of the cache entries; a new layout ignores (and replaces) older entries.
CACHE_LAYOUT = 1

_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}


def check_runtime(runtime, argument="`runtime`"):
    """Return ``runtime`` if it is one of :data:`RUNTIMES`, else raise ``ValueError`` naming ``argument``."""
    if not isinstance(runtime, str) or runtime not in RUNTIMES:
        raise ValueError(f"{argument} must be one of {', '.join(RUNTIMES)}; got {runtime!r}.")
    return runtime


def default_cache_dir():
    """``$KERAS_FR_CACHE/runtime``, else ``$XDG_CACHE_HOME/keras_fr/runtime``, else ``~/.cache/keras_fr/runtime``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "keras_fr")
    return os.path.join(root, "runtime")


def weights_sha256(model_name, weights):
    """The sha256 of the file behind ``weights`` (a file path or a preset tag of ``model_name``), or
    ``None`` when there is no file to hash (``None`` / ``"random"``, or a tag with no file here)."""
    if weights is None or weights == "random":
        return None
    weights = os.fspath(weights)
    if os.path.isfile(weights):
        return file_sha256(weights)
    from keras_fr.applications.weights import get_weights_file

    try:
        return file_sha256(get_weights_file(model_name, weights))
    except (ValueError, OSError):
        return None


#: The cores this process may run on (its CPU affinity), at least 1.
available_threads = available_cores


def _why_unavailable(kind):
    """Why ``kind`` ("tflite"/"onnx") cannot be built and run here, or ``""``."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return f"runtime '{kind}' needs the TensorFlow backend (the exporters trace TensorFlow graphs); " \
               f"KERAS_BACKEND is {keras.backend.backend()!r}"
    modules = ("ai_edge_litert",) if kind == "tflite" else ("onnxruntime", "tf2onnx", "onnx")
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        return f"runtime '{kind}' needs {', '.join(missing)}: pip install 'keras_fr[export]'"
    return ""


# --------------------------------------------------------------------------------------------------
# Runners: one batch in (float32, preprocessed), embeddings out
# --------------------------------------------------------------------------------------------------


class _KerasRunner:
    """The Keras model through its compiled predict function (``predict_on_batch``: a traced graph on
    TensorFlow, jitted on JAX), not an eager call: eager LGAFResNet100 at batch 1 measured 1.0
    images/s against 4.6 for the graph (benchmarks/compare_reference.py, docs/benchmarks.md).

    What runs is the model's inference copy (:func:`keras_fr.applications.inference_model`: batch
    norms folded into the convolutions, PReLUs as a maximum or a leaky ReLU, MSConv's own variant),
    made on the first call: like a runtime file, it is a snapshot of the weights at that moment."""

    def __init__(self, model):
        self.model = model
        self._inference = None

    def __call__(self, x):
        if self._inference is None:
            from keras_fr.applications.inference import inference_copy

            self._inference = inference_copy(self.model)
        from keras_fr.applications.inference import predict_in_parts

        return np.asarray(predict_in_parts(self._inference, np.asarray(x, np.float32)), np.float32)


class _TFLiteRunner:
    def __init__(self, path=None, content=None, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self._content = content  # the interpreter reads from this buffer: keep it alive
        kwargs = {"num_threads": threads or available_threads()}
        with _quiet.native_stderr():  # XNNPACK's "Created TensorFlow Lite XNNPACK delegate" line
            if content is not None:
                self.interpreter = Interpreter(model_content=content, **kwargs)
            else:
                self.interpreter = Interpreter(model_path=os.fspath(path), **kwargs)
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]
        self._shape = None

    def __call__(self, x):
        x = np.ascontiguousarray(x, np.float32)
        if x.shape != self._shape:  # re-plan only when the batch shape changes
            with _quiet.native_stderr():
                self.interpreter.resize_tensor_input(self._input, list(x.shape), strict=True)
                self.interpreter.allocate_tensors()
            self._shape = x.shape
        self.interpreter.set_tensor(self._input, x)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output), np.float32)


class _OnnxRunner:
    def __init__(self, path=None, content=None, threads=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_threads()
        options.log_severity_level = 3
        source = content if content is not None else os.fspath(path)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self._name = self.session.get_inputs()[0].name

    def __call__(self, x):
        out = self.session.run(None, {self._name: np.ascontiguousarray(x, np.float32)})[0]
        return np.asarray(out, np.float32)


_RUNNERS = {"tflite": _TFLiteRunner, "onnx": _OnnxRunner}


# --------------------------------------------------------------------------------------------------
# The runtime a recognizer holds
# --------------------------------------------------------------------------------------------------


class InferenceRuntime:
    """Embeddings of preprocessed batches, from Keras or a verified runtime file.

    Call it like a Keras model: ``runtime(x)`` or ``runtime(x, training=False)`` returns float32
    embeddings (N, D) of a float32 batch (N, H, W, 3) already preprocessed for the model.

    Attributes:
        requested: the ``runtime`` asked for (``"auto"``, ``"keras"``, ``"tflite"``, ``"onnx"``).
        name: the runtime small batches go to (``"keras"``, ``"tflite"`` or ``"onnx"``).
        max_batch: batches larger than this go to Keras (``None``: no limit); set for ``"auto"``.
        path: the cached file, or None (no file, or a file that was not cached). Also set when
            ``"auto"`` built a file and then chose Keras because Keras was timed faster (the path of
            the fastest file).
        cached: the file was found in the cache (not built by this process).
        min_cosine: the smallest cosine with Keras measured when the file was built or loaded.
        note: why ``"auto"`` stayed with Keras, if it did (no file possible, or Keras faster).
    """

    def __init__(self, model, requested, name, runner=None, path=None, cached=False, min_cosine=None,
                 max_batch=None, note="", keras_runner=None):
        self.model = model
        self.requested = requested
        self.name = name
        self._runner = runner
        # "auto" hands over the Keras runner it timed, whose inference copy is already made.
        self._keras = keras_runner if keras_runner is not None else _KerasRunner(model)
        self.path = path
        self.cached = cached
        self.min_cosine = min_cosine
        self.max_batch = max_batch
        self.note = note

    def __call__(self, x, training=False):
        if training:
            raise ValueError("an inference runtime computes embeddings only: `training` must be False.")
        if self._runner is None or (self.max_batch is not None and len(x) > self.max_batch):
            return self._keras(x)
        return self._runner(x)

    def __repr__(self):
        where = f", path={self.path!r}" if self.path else ""
        return f"InferenceRuntime(requested={self.requested!r}, name={self.name!r}{where})"


def _probe_inputs(size, count, preprocess, seed):
    from keras_fr.export import synthetic_faces

    return np.asarray(preprocess(synthetic_faces(count, size, seed=seed).astype(np.float32)), np.float32)


def _min_cosine(reference, actual):
    """The smallest per-row cosine (the exporters' rule: a zero row matches only a zero row; a
    network may give one, e.g. LGAF's quality fusion gating a low-quality face to 0), or NaN for
    another shape or non-finite outputs."""
    from keras_fr.export import ExportVerificationError, compare

    try:
        return compare(reference, actual)[3]
    except ExportVerificationError:  # shapes differ
        return float("nan")


def _check_runner(model, runner, size, preprocess):
    """The smallest cosine with Keras over a batch of face-like images and the first one alone."""
    x = _probe_inputs(size, VERIFY_SAMPLES, preprocess, seed=2024)
    reference = np.asarray(model(x, training=False), np.float32)
    return min(_min_cosine(reference, runner(x)), _min_cosine(reference[:1], runner(x[:1])))


def _export(model, kind, path):
    """Write the file with keras_fr's exporter; its check is the runtime's own (:func:`_check_runner`).

    The exporter's built-in float32 bar (max |diff| <= 1e-4 of the output scale) is a claim about
    exported files in general; a runtime file is held to what a recognizer needs, the cosine bar
    :data:`MIN_COSINE` on face-like images at batch 8 and 1. Deep networks with large random
    activations can sit between the two (MSConvResNet50 with the reference's random weights measured
    1.6e-4 of the output scale in benchmarks/compare_reference.py), so the runtime checks the cosine.
    """
    from keras_fr.export import to_onnx, to_tflite

    with _quiet.native_stderr():
        return (to_tflite if kind == "tflite" else to_onnx)(model, path, verify=False)


def _cache_key(model, model_name, weights_hash, kind, size, preprocess):
    import keras_fr

    shapes = hashlib.sha256(
        json.dumps([[w.path, list(w.shape), str(w.dtype)] for w in model.weights]).encode()
    ).hexdigest()
    return {
        "layout": CACHE_LAYOUT,
        "model": model_name,
        "weights_sha256": weights_hash,
        "keras_fr": keras_fr.__version__,
        "runtime": kind,
        "input_size": int(size),
        "layers_sha256": shapes,
        "preprocess": _preprocess_fingerprint(preprocess),
    }


def _entry_paths(cache_dir, key):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = os.path.join(cache_dir, f"{key['model']}-{key['runtime']}-{digest}")
    return stem + _SUFFIX[key["runtime"]], stem + ".json"


def _read_record(key, artifact, record_path):
    """The record of a cache entry whose key is ``key`` and whose file's sha256 is the recorded one, or
    None (missing, stale, unreadable or tampered with). The file itself is not opened here."""
    if not (os.path.isfile(artifact) and os.path.isfile(record_path)):
        return None
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)  # JSON only: a record is data, never code
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        return record if file_sha256(artifact) == record.get("artifact_sha256") else None
    except (OSError, ValueError):
        return None


def _load_cached(model, key, artifact, record_path, preprocess, threads, record=None):
    """``(runner, min_cosine, record)`` of a valid cache entry, or None (missing, stale or corrupt).

    Valid: the record is JSON with the expected key, the file's sha256 is the recorded one, and the
    file reproduces ``model`` on :data:`PROBE_SAMPLES` face-like images (so a file is never used for a
    model it does not match, even when a caller names the wrong weights file). ``record``: the entry's
    record already read by :func:`_read_record` (its checks are not repeated).
    """
    record = record if record is not None else _read_record(key, artifact, record_path)
    if record is None:
        return None
    try:
        runner = _RUNNERS[key["runtime"]](path=artifact, threads=threads)
        probe = _probe_inputs(key["input_size"], PROBE_SAMPLES, preprocess, seed=99)
        cosine = _min_cosine(np.asarray(model(probe, training=False), np.float32), runner(probe))
    except Exception:  # noqa: BLE001 - an unreadable entry of any kind is rebuilt, never trusted
        return None
    return (runner, cosine, record) if cosine >= MIN_COSINE else None


def _arcface_preprocess(x):
    return x / np.float32(127.5) - np.float32(1.0)


def _preprocess_fingerprint(preprocess):
    """A stable name for ``preprocess``: its output on a fixed ramp of pixels, hashed."""
    ramp = np.linspace(0, 255, 12, dtype=np.float32).reshape(1, 2, 2, 3)
    return hashlib.sha256(np.asarray(preprocess(ramp.copy()), np.float32).tobytes()).hexdigest()[:16]


def _build(model, kind, folder, size, preprocess, threads, content=False):
    """Export ``model`` into ``folder``, check it; returns ``(path, runner, min_cosine)``."""
    path = os.path.join(folder, f"model{_SUFFIX[kind]}")
    _export(model, kind, path)
    if content:
        with open(path, "rb") as f:
            data = f.read()
        runner = _RUNNERS[kind](content=data, threads=threads)
    else:
        runner = _RUNNERS[kind](path=path, threads=threads)
    cosine = _check_runner(model, runner, size, preprocess)
    if not cosine >= MIN_COSINE:
        raise RuntimeError(
            f"the {kind} file does not reproduce the Keras model on face-like images: min cosine "
            f"{cosine:.6f} < {MIN_COSINE}"
        )
    return path, runner, cosine


def _batch1_seconds(run, x, calls=TIMING_CALLS):
    """Median seconds of ``run(x)`` over ``calls`` calls, after one untimed warm-up call."""
    run(x)  # traces Keras' predict function / plans the interpreter
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _time_batch1(keras_runner, runners, size, preprocess):
    """``{"batch": 1, <kind>: seconds, ..., "keras": seconds}``: each file runner of ``runners`` (a dict
    by kind) and ``keras_runner`` timed on the same face-like image, one after the other, so that the
    files are compared with each other and with Keras under the same conditions."""
    x = _probe_inputs(size, 1, preprocess, seed=5)
    timing = {"batch": 1}
    for kind, runner in runners.items():
        timing[kind] = _batch1_seconds(runner, x)
    timing["keras"] = _batch1_seconds(keras_runner, x)
    return timing


def _fastest(timing, kinds):
    """The kind of ``kinds`` with the smallest positive time in ``timing`` (ties: the first), or None."""
    best, best_s = None, float("inf")
    for kind in kinds:
        try:
            seconds = float(timing[kind])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 < seconds < best_s:
            best, best_s = kind, seconds
    return best


def _keras_is_faster(timing, kind):
    """Why ``"auto"`` should run Keras instead of the ``kind`` file (``timing`` from the record), or ``""``."""
    try:
        keras_s, file_s = float(timing["keras"]), float(timing[kind])
    except (KeyError, TypeError, ValueError):
        return ""
    if not (keras_s > 0 and file_s > 0) or keras_s > AUTO_MARGIN * file_s:
        return ""
    return (f"Keras ran batch 1 in {keras_s * 1000:.1f} ms, the {kind} file in {file_s * 1000:.1f} ms "
            "(timed when the file was built)")


def _say(message):
    """One line on stderr, unless the ``keras-fr`` command is quiet and stderr is not a terminal (so
    its error output stays one line in scripts and logs)."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if _quiet.QUIET and not terminal:
        return
    print(f"keras_fr: {message}", file=sys.stderr, flush=True)


def prepare_runtime(model, model_name, weights_hash, runtime="auto", *, cache_dir=None, input_size=None,
                    preprocess=None, threads=None):
    """The :class:`InferenceRuntime` for ``model``: Keras, or a verified TFLite / ONNX file (cached).

    Args:
        model: the Keras model (single image input, single embedding output, float32).
        model_name: its registry name (part of the cache key and the file's name).
        weights_hash: sha256 of its weights file (:func:`weights_sha256`); ``None``: nothing is cached.
        runtime: one of :data:`RUNTIMES`.
        cache_dir: the cache folder (default :func:`default_cache_dir`); created if missing.
        input_size: the square crop size fed to the model (default: the model's input height, else 112).
        preprocess: how uint8-range pixels become model inputs, for the check's face-like images
            (default ``x / 127.5 - 1``).
        threads: runtime threads (default: all cores this process may use).

    Raises:
        ValueError: a bad ``runtime`` or ``cache_dir``; an explicit runtime that cannot run here (backend,
            missing extra).
        RuntimeError: an explicit runtime whose file could not be exported or does not reproduce Keras.
    """
    check_runtime(runtime)
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise ValueError(f"`cache_dir` must be a folder path; got {type(cache_dir).__name__}.")
        if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
            raise ValueError(f"`cache_dir` {os.fspath(cache_dir)!r} is a file, not a folder.")
    if runtime == "keras":
        return InferenceRuntime(model, runtime, "keras")
    size = int(input_size or model.inputs[0].shape[1] or 112)
    preprocess = preprocess or _arcface_preprocess
    cache_folder = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    if runtime == "auto":
        kinds = [kind for kind in AUTO_KINDS if not _why_unavailable(kind)]
        if not kinds:
            return InferenceRuntime(model, runtime, "keras", note=_why_unavailable(AUTO_KINDS[0]))
        if weights_hash is None:
            return InferenceRuntime(model, runtime, "keras",
                                    note="weights without a file (random or unnamed): nothing to key a cached file on")
        try:
            os.makedirs(cache_folder, exist_ok=True)
        except OSError as exc:  # "auto" never fails for want of a cache: it runs Keras and says why
            _say(f"cannot use the cache folder {cache_folder!r} ({exc}); using Keras.")
            return InferenceRuntime(model, runtime, "keras", note=f"cache folder: {exc}")
        return _auto_runtime(model, model_name, weights_hash, kinds, cache_folder, size, preprocess, threads)
    kind = runtime
    why = _why_unavailable(kind)
    if why:
        raise ValueError(f"`runtime`: {why}.")
    try:
        if weights_hash is None:  # explicit runtime, no hash: build in a temporary folder, keep nothing
            with tempfile.TemporaryDirectory(prefix="keras_fr-runtime-") as folder:
                _, runner, cosine = _build(model, kind, folder, size, preprocess, threads, content=True)
            return InferenceRuntime(model, runtime, kind, runner, min_cosine=cosine)
        os.makedirs(cache_folder, exist_ok=True)
        entry = _file_entry(model, model_name, weights_hash, kind, cache_folder, size, preprocess, threads)
    except OSError as exc:
        raise ValueError(f"`cache_dir`: {exc}") from exc
    except (RuntimeError, ValueError) as exc:
        raise RuntimeError(f"runtime {kind!r} for {model_name}: {exc}") from exc
    return InferenceRuntime(model, runtime, kind, entry.runner, path=entry.artifact, cached=entry.cached,
                            min_cosine=entry.cosine)


class _Entry:
    """One cache entry of ``kind``: its file, record, whether it was found cached, and (once opened and
    checked) its runner and min cosine."""

    def __init__(self, kind, key, artifact, record_path, record=None, cached=False, runner=None, cosine=None):
        self.kind, self.key, self.artifact, self.record_path = kind, key, artifact, record_path
        self.record, self.cached, self.runner, self.cosine = record, cached, runner, cosine

    @property
    def timing(self):
        return (self.record or {}).get("batch1_seconds")


def _file_entry(model, model_name, weights_hash, kind, cache_dir, size, preprocess, threads, known=None):
    """The checked entry of ``kind`` for ``model``: loaded from the cache, or built, checked and cached.

    ``known``: the entry's :class:`_Entry` as ``"auto"`` already read it (key, paths, and the record if
    it was valid), so the key is not computed and the file not hashed a second time.
    """
    if known is None:
        key = _cache_key(model, model_name, weights_hash, kind, size, preprocess)
        artifact, record_path = _entry_paths(cache_dir, key)
        found = _load_cached(model, key, artifact, record_path, preprocess, threads)
    else:
        key, artifact, record_path = known.key, known.artifact, known.record_path
        found = (_load_cached(model, key, artifact, record_path, preprocess, threads, record=known.record)
                 if known.record is not None else None)
    if found is not None:
        runner, cosine, record = found
        return _Entry(kind, key, artifact, record_path, record, True, runner, cosine)
    _say(f"building a verified {kind} file of {model_name} for fast inference (once; cached in {cache_dir})")
    for stale in (record_path, artifact):  # the record goes first: an entry without one is never used
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    folder = tempfile.mkdtemp(prefix=".build-", dir=cache_dir)
    try:
        built, runner, cosine = _build(model, kind, folder, size, preprocess, threads)
        del runner  # it reads the file in the build folder; the runtime opens the cached one
        record = {
            "key": key,
            "artifact": os.path.basename(artifact),
            "artifact_sha256": file_sha256(built),
            "min_cosine": cosine,
            "verified_on": f"{VERIFY_SAMPLES} synthetic face-like images (batch {VERIFY_SAMPLES} and 1)",
        }
        os.replace(built, artifact)  # same folder: atomic; the file was written whole by the exporter
        write_text(record_path, json.dumps(record, indent=1) + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    runner = _RUNNERS[kind](path=artifact, threads=threads)
    return _Entry(kind, key, artifact, record_path, record, False, runner, cosine)


def _shared_timing(entries, kinds):
    """The timing that ``"auto"`` can decide on without opening any file: every entry of ``kinds``
    has a valid record, and all records hold the same timing, which names every kind (a kind whose
    file could not be built is timed as ``None``, and needs no entry) and Keras; else None."""
    timings = [entries[kind].timing for kind in kinds if entries[kind].record is not None]
    if not timings or not isinstance(timings[0], dict) or any(t != timings[0] for t in timings):
        return None
    timing = timings[0]
    if "keras" not in timing or not all(kind in timing for kind in kinds):
        return None
    if any(entries[kind].record is None and timing[kind] is not None for kind in kinds):
        return None
    return timing


def _auto_runtime(model, model_name, weights_hash, kinds, cache_dir, size, preprocess, threads):
    """``"auto"``: the fastest verified file of ``kinds``, or Keras when Keras was timed faster.

    When the cache holds every file with one timing of them all (written when they were built), only
    the chosen file is opened (and re-checked on the probe images). Otherwise (a first use, a file
    missing, changed or failing its check, records from different timings) every file is loaded or
    built, then all of them and Keras are timed together, and that timing goes into every record. A
    file that cannot be built is timed as ``None``: later uses do not try again (delete the cache
    entry to).
    """
    keras_runner = _KerasRunner(model)  # timed against the files, then held by the runtime
    entries = {}
    for kind in kinds:
        key = _cache_key(model, model_name, weights_hash, kind, size, preprocess)
        artifact, record_path = _entry_paths(cache_dir, key)
        entries[kind] = _Entry(kind, key, artifact, record_path, _read_record(key, artifact, record_path),
                               cached=True)
    timing = _shared_timing(entries, kinds)
    best = _fastest(timing, kinds) if timing is not None else None
    if best is not None:
        entry = entries[best]
        found = _load_cached(model, entry.key, entry.artifact, entry.record_path, preprocess, threads,
                             record=entry.record)
        if found is not None:
            entry.runner, entry.cosine = found[0], found[1]
            return _auto_choice(model, entry, timing, keras_runner)
    opened, failures = {}, []
    for kind in kinds:
        try:
            opened[kind] = _file_entry(model, model_name, weights_hash, kind, cache_dir, size, preprocess, threads,
                                       known=entries[kind])
        except (RuntimeError, ValueError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _say(f"could not build a {kind} file of {model_name} ({reason}); leaving it out.")
            failures.append(f"{kind}: {reason}")
    if not opened:
        _say(f"no runtime file of {model_name} could be built; using Keras.")
        return InferenceRuntime(model, "auto", "keras", note="; ".join(failures), keras_runner=keras_runner)
    timing = _time_batch1(keras_runner, {kind: entry.runner for kind, entry in opened.items()}, size, preprocess)
    timing.update({kind: None for kind in kinds if kind not in opened})
    for entry in opened.values():
        entry.record["batch1_seconds"] = timing
        write_text(entry.record_path, json.dumps(entry.record, indent=1) + "\n")
    best = _fastest(timing, list(opened)) or next(iter(opened))
    entry = opened.pop(best)
    opened.clear()  # drop the other files' runners
    return _auto_choice(model, entry, timing, keras_runner)


def _auto_choice(model, entry, timing, keras_runner):
    """The ``"auto"`` runtime over the fastest file's ``entry``, or Keras when ``timing`` says it is faster."""
    why = _keras_is_faster(timing, entry.kind)
    if why:
        return InferenceRuntime(model, "auto", "keras", path=entry.artifact, cached=entry.cached,
                                min_cosine=entry.cosine, note=why, keras_runner=keras_runner)
    return InferenceRuntime(model, "auto", entry.kind, entry.runner, path=entry.artifact, cached=entry.cached,
                            min_cosine=entry.cosine, max_batch=AUTO_MAX_BATCH, keras_runner=keras_runner)
