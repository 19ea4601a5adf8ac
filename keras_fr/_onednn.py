"""TensorFlow's oneDNN weight cache: on in ``keras-fr``'s inference commands, kept away from training.

TensorFlow's oneDNN convolutions reorder their kernel into oneDNN's blocked layout at every call,
unless the kernel is a graph constant; a Keras model's kernels are variables, so a traced
``predict`` pays that reorder for every batch. With ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`` (read once
per process, when TensorFlow first runs such an operation) each operation keeps the reordered kernel
of its first call. Measured on a 2-core AMX Xeon, each setting in a fresh process
(``benchmarks/process_settings.py``, medians, docs/benchmarks.md): MSConvResNet50's inference copy at
batch 32 74.5 -> 79.0 images/s, IResNet100's at batch 1 8.0 -> 10.5, for one more copy of the weights
in memory.

The price is that the weights are then assumed never to change: an operation goes on using the
kernel it first saw, so ``fit`` on a model that has run updates only its biases and normalizations,
and ``set_weights`` after a first call is not seen; nothing fails, the numbers are silently wrong
(``tests/test_onednn.py`` shows both). So:

- :func:`assume_frozen_weights` sets it for the ``keras-fr`` sub-commands that only embed with
  weights loaded once (:data:`INFERENCE_COMMANDS`), never for ``train``, ``demo`` (which fine-tunes),
  ``convert`` or ``export``; a value the user set is kept.
- :func:`check_training_allowed` is what keras_fr's training models call in ``fit``: a process
  where the variable is on gets a clear error instead of a model that does not learn.

A Python program of one's own can set the variable itself (before its first TensorFlow operation) if
it never trains or changes weights after their first use.
"""

import os

#: TensorFlow's variable (tensorflow/core/util/onednn_env_vars.cc).
FROZEN_WEIGHTS_VARIABLE = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"

#: The ``keras-fr`` sub-commands that set it: they load their weights once, then only embed.
INFERENCE_COMMANDS = ("verify", "enroll", "identify", "calibrate", "embed", "eval")


def frozen_weights_assumed(environ=None):
    """Whether :data:`FROZEN_WEIGHTS_VARIABLE` is on in ``environ`` (default: this process's
    environment); TensorFlow reads ``1`` or ``true`` in any case as on."""
    value = (os.environ if environ is None else environ).get(FROZEN_WEIGHTS_VARIABLE, "")
    return value.strip().lower() in ("1", "true")


def assume_frozen_weights(command):
    """Turn the weight cache on for ``keras-fr COMMAND`` when it is one of :data:`INFERENCE_COMMANDS`.

    It takes effect only before TensorFlow runs its first convolution (importing TensorFlow is fine);
    a value the user already set is kept.

    Returns:
        True if this call set the variable, False otherwise.
    """
    if command not in INFERENCE_COMMANDS or FROZEN_WEIGHTS_VARIABLE in os.environ:
        return False
    os.environ[FROZEN_WEIGHTS_VARIABLE] = "1"
    return True


def check_training_allowed(what):
    """Raise ``RuntimeError`` when this process assumes frozen weights (``what`` names the model that
    was about to train)."""
    if frozen_weights_assumed():
        raise RuntimeError(
            f"{what} cannot train in this process: {FROZEN_WEIGHTS_VARIABLE}="
            f"{os.environ[FROZEN_WEIGHTS_VARIABLE]!r} is set, so TensorFlow's oneDNN convolutions keep "
            "the first kernels they see and training would silently leave them unchanged. Unset it "
            "(it is meant for processes that only run inference) and start a new process."
        )
