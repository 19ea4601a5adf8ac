"""One thread per operation, batches in parallel parts: the thread layout of ``keras-fr eval``.

By default TensorFlow runs each operation on all the cores (its intra-op pool) and one operation
after another. A batch-32 inference of a network with many small operations (MSConvResNet50: 16 MSConv
blocks of narrow grouped convolutions, attention on 1x1 maps, elementwise products) then spends part of
each operation splitting it and waiting for the slowest core. The other layout: one thread per
operation (``TF_NUM_INTRAOP_THREADS=1``), as many operations at once as there are cores
(``TF_NUM_INTEROP_THREADS``), and the batch cut into that many parts that the graph runs side by side
(:func:`keras_fr.applications.inference.predict_in_parts`). Each core then runs whole convolutions on
its part of the batch with no synchronisation between them.

Measured on a 2-core AMX Xeon (``benchmarks/process_settings.py``, each setting in a fresh process, two
interleaved rounds, medians; docs/benchmarks.md, "Process settings"): MSConvResNet50's inference copy
at batch 32 76.2 -> 82.4 images/s, 87.0 with oneDNN's kept kernels too (``keras-fr eval``'s process);
IResNet100's 14.05 -> 14.88 (its convolutions are large enough to share two threads well); IResNet100
at batch 1, with nothing to cut, 7.49 -> 4.34.

Both variables are TensorFlow's own, read once when its runtime starts, and apply to everything in
the process: a batch of one runs on one core. So only ``keras-fr eval`` (:data:`BATCH_COMMANDS`),
which embeds whole batches and never a single image, sets them; a value the user set for either is
kept. A Python program of one's own can set both before its first TensorFlow operation; the library's
batch paths (:func:`keras_fr.evaluation.extract_embeddings`, the recognizer's Keras runtime) then cut
their batches (:func:`batch_parts`).
"""

import os

#: TensorFlow's variables (tensorflow/core/common_runtime/process_util.cc), read once per process.
INTRA_OP_VARIABLE = "TF_NUM_INTRAOP_THREADS"
INTER_OP_VARIABLE = "TF_NUM_INTEROP_THREADS"

#: The ``keras-fr`` sub-commands that set the layout: they only embed whole batches.
BATCH_COMMANDS = ("eval",)


def available_cores():
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _int(environ, name):
    try:
        return int(environ.get(name, "").strip() or 0)
    except ValueError:
        return 0  # TensorFlow ignores a value it cannot parse: its default


def one_thread_per_op(cores=None):
    """The variables' values of the layout: one thread per operation, ``cores`` (default: this
    process's, :func:`available_cores`) operations at once."""
    return {INTRA_OP_VARIABLE: "1", INTER_OP_VARIABLE: str(cores or available_cores())}


def parallel_batches(command, environ=None):
    """Set the one-thread-per-operation layout for ``keras-fr COMMAND`` when it is one of
    :data:`BATCH_COMMANDS` and the process may use more than one core.

    It takes effect only before TensorFlow's runtime starts (importing TensorFlow is fine); when the
    user set either variable, neither is changed.

    Returns:
        True if this call set the variables, False otherwise.
    """
    environ = os.environ if environ is None else environ
    cores = available_cores()
    if command not in BATCH_COMMANDS or cores < 2:
        return False
    if INTRA_OP_VARIABLE in environ or INTER_OP_VARIABLE in environ:
        return False
    environ.update(one_thread_per_op(cores))
    return True


def batch_parts(environ=None):
    """How many parts the library's batch paths cut a batch into: the inter-op threads when this
    process runs one thread per operation (``tf.config.threading`` or :data:`INTRA_OP_VARIABLE` is 1),
    else 1 (TensorFlow's default layout already spreads each operation over the cores)."""
    environ = os.environ if environ is None else environ
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads() or _int(environ, INTRA_OP_VARIABLE)
    if intra != 1:
        return 1
    inter = tf.config.threading.get_inter_op_parallelism_threads() or _int(environ, INTER_OP_VARIABLE)
    return max(1, inter or available_cores())
