"""Activation layers: PReLU as one maximum (what :func:`keras_fr.applications.inference_model` puts in
its copies)."""

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
