"""Activation layers: Keras' PReLU with a faster training step (what keras_fr's networks build), and
PReLU as one maximum (what :func:`keras_fr.applications.inference_model` puts in its copies)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_fr")
class MaximumPReLU(keras.layers.PReLU):
    """A PReLU computed as ``maximum(x, alpha * x)`` (``form="max"``) or ``minimum(x, alpha * x)``
    (``form="min"``): two operations instead of Keras' five.

    Equal to ``keras.layers.PReLU`` (bit for bit) when every alpha is at most 1 (``"max"``) or at
    least 1 (``"min"``); :func:`keras_fr.applications.inference_model` only puts it where that holds.
    Its gradients are PReLU's too under the same condition, but it is meant for inference copies:
    training can move an alpha across 1.

    Args:
        form: ``"max"`` or ``"min"``.
        **kwargs: as for ``keras.layers.PReLU``.
    """

    def __init__(self, form="max", **kwargs):
        super().__init__(**kwargs)
        if form not in ("max", "min"):
            raise ValueError(
                f"`form` must be 'max' (every alpha <= 1) or 'min' (every alpha >= 1); got {form!r}."
            )
        self.form = form

    def call(self, inputs):
        scaled = ops.cast(self.alpha, inputs.dtype) * inputs
        return ops.maximum(inputs, scaled) if self.form == "max" else ops.minimum(inputs, scaled)

    def get_config(self):
        return dict(super().get_config(), form=self.form)


@keras.saving.register_keras_serializable(package="keras_fr")
class PReLU(keras.layers.PReLU):
    """Keras' ``PReLU`` with a faster training step: ``where(x > 0, x, alpha * x)`` when called with
    ``training=True``, Keras' own ``relu(x) - alpha * relu(-x)`` otherwise (so inference, traced graphs
    and exported files are unchanged).

    The values are Keras' bit for bit (for ``x > 0`` both give ``x``; otherwise ``alpha * x``, computed
    exactly once either way). The gradients are Keras' except at ``x == 0`` exactly, where the input's
    gradient is ``alpha`` (PyTorch's ``PReLU`` convention) instead of Keras' 0. Automatic
    differentiation of Keras' form keeps and differentiates five operations; ``where`` needs one mask:
    on a 2-core AMX Xeon the MSConvResNet50 ``model.fit`` step (batch 32, ``mixed_bfloat16``) ran
    about 1.25x faster (docs/benchmarks.md). On TensorFlow its gradient is written out
    (``_where_prelu_tf``; the same numbers as differentiating the ``where``, in fewer passes): about
    5% more on that step.

    Args: as for ``keras.layers.PReLU``.
    """

    #: On TensorFlow, train with the hand-written gradient of ``_where_prelu_tf`` (False: automatic
    #: differentiation of the ``where``; the same numbers).
    custom_gradient = True

    def call(self, inputs, training=None):
        if not training:
            return super().call(inputs)
        alpha = ops.cast(self.alpha, inputs.dtype)
        if self.custom_gradient and keras.backend.backend() == "tensorflow":
            return _where_prelu_tf(inputs, alpha)
        return ops.where(inputs > 0, inputs, alpha * inputs)


def _where_prelu_tf(x, alpha):
    """``where(x > 0, x, alpha * x)`` with its gradient written out: ``dx = where(x > 0, dy, alpha * dy)``
    and ``dalpha = sum(min(x, 0) * dy)`` over the axes ``alpha`` is broadcast along. The same values
    as differentiating the ``where`` (which builds two selects of ``dy`` against zeros, a product for
    each branch and a sum of the two), in fewer passes over the tensor."""
    import tensorflow as tf

    @tf.custom_gradient
    def prelu(x, alpha):
        positive = x > 0
        y = tf.where(positive, x, alpha * x)

        def grad(dy):
            dx = tf.where(positive, dy, alpha * dy)
            axes = [0] + [axis + 1 for axis, size in enumerate(alpha.shape) if size == 1]
            dalpha = tf.reshape(tf.reduce_sum(tf.minimum(x, 0) * dy, axis=axes), tf.shape(alpha))
            return dx, dalpha

        return y, grad

    return prelu(x, alpha)


def is_plain_prelu(layer):
    """True for Keras' ``PReLU`` and keras_fr's :class:`PReLU` (the same inference), not for the
    other variants (:class:`MaximumPReLU`, the exporters' leaky form)."""
    return type(layer) in (keras.layers.PReLU, PReLU)
