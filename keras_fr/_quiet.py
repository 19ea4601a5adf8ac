"""Quiet by default: the ``keras-fr`` command shows its own output, not TensorFlow's start-up chatter.

TensorFlow 2.21 prints its banner (``oneDNN custom operations are on``, ``cpu_feature_guard``, "All log
messages before absl::InitializeLog() ...") from C++ while it is imported, before it reads
``TF_CPP_MIN_LOG_LEVEL``, so the variable alone does not silence it. When the process is the
``keras-fr`` command (``keras-fr ...`` or ``python -m keras_fr.cli ...``) and ``--verbose`` is not
among its arguments (nor ``KERAS_FR_VERBOSE=1`` set), :func:`startup` therefore

- sets ``TF_CPP_MIN_LOG_LEVEL=3`` (unless the user set it) for the C++ logs after start-up, and
- captures file descriptor 2 while ``keras_fr`` imports Keras and TensorFlow; what was captured is
  dropped, or written back to stderr if the import fails (so an import error is never hidden).

:func:`quiet_runtime` (called by the command before it runs) lowers TensorFlow's and absl's Python
loggers to errors (no ``tf.function`` retracing warnings, no converter INFO lines) and ignores the
``FutureWarning`` / ``DeprecationWarning`` noise of third-party converters. ``import keras_fr`` in
a user's own program changes nothing: this module acts only for the command.
"""

import contextlib
import logging
import os
import sys
import tempfile
import warnings

VERBOSE_ENV = "KERAS_FR_VERBOSE"

#: Set by :func:`quiet_runtime`: library code may then silence native chatter (see :func:`native_stderr`).
QUIET = False


def is_command():
    """True when this process is the ``keras-fr`` command."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 in ("keras-fr", "keras-fr.exe", "keras-fr-script.py"):
        return True
    orig = list(getattr(sys, "orig_argv", []) or [])
    for i, arg in enumerate(orig[:-1]):
        if arg == "-m":
            return orig[i + 1] in ("keras_fr.cli", "keras_fr")
    return False


def wants_verbose(argv=None):
    """True when ``--verbose`` is among the command's arguments or ``KERAS_FR_VERBOSE=1``."""
    if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0"):
        return True
    args = sys.argv[1:] if argv is None else argv
    return "--verbose" in args


@contextlib.contextmanager
def _capture_fd2(replay_on_error=True):
    """Point file descriptor 2 at a temporary file for the block; replay it if the block raises."""
    try:
        saved = os.dup(2)
        capture = tempfile.TemporaryFile()
    except OSError:  # no usable fd 2: nothing to quieten
        yield
        return
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    os.dup2(capture.fileno(), 2)
    failed = True
    try:
        yield
        failed = False
    finally:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if failed and replay_on_error:  # what the native code said may explain the failure
            capture.seek(0)
            data = capture.read()
            if data:
                os.write(2, data)
        capture.close()


@contextlib.contextmanager
def native_stderr():
    """Around native calls that log on their own (the LiteRT interpreter's "Created TensorFlow Lite
    XNNPACK delegate" line): silent while the command is quiet, a no-op otherwise."""
    if not QUIET:
        yield
        return
    with _capture_fd2():
        yield


@contextlib.contextmanager
def startup():
    """Around the import of TensorFlow: silent for the command unless verbose; a no-op otherwise."""
    if not is_command() or wants_verbose():
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    with _capture_fd2():
        yield


def quiet_runtime():
    """Silence TensorFlow's and absl's Python logs and converter warnings for the rest of the run."""
    global QUIET
    QUIET = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl", "tf2onnx", "h5py", "jax", "onnx", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        with contextlib.suppress(Exception):
            tf.get_logger().setLevel(logging.ERROR)
            tf.autograph.set_verbosity(0)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
