"""Getting a Keras model ready to trace for export.

- ``serving_model``: a thin Functional wrapper that calls the model with ``training=False`` (BatchNorm
  uses its moving statistics; LGAF's ``FeatureQualityFusion`` uses its stored norm statistics and
  updates nothing), names the input ``input_image`` and optionally takes NCHW input.
- ``grouped_conv_clone`` / ``formulation_source``: the same network rebuilt with MSConv's
  ``grouped_conv="native"`` or ``"split"`` formulation (the same kernel variables; split computes
  per-group convolutions + concatenation, for converters that cannot express a grouped convolution).
  A model in ``"auto"`` mode is rebuilt too, because what "auto" traces to depends on the machine.
- ``native_grouped_conv_tracing``: while tracing for tf2onnx, let grouped convolutions be plain
  ``tf.nn.convolution`` calls, which tf2onnx maps to one ONNX ``Conv`` with ``group=G``. (Keras'
  TensorFlow backend wraps grouped convolutions in an XLA-compiled function because TensorFlow's CPU
  kernel lacks them; tf2onnx cannot inline that function and leaves an unsupported
  ``StatefulPartitionedCall`` node.)
"""

import contextlib

import numpy as np

from keras_fr.export import _common


def all_layers(model):
    """Every layer inside ``model``, nested models and composite layers included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def grouped_conv_info(model):
    """Return (has_grouped_conv, can_split): grouped convolutions present; an MSConv-style switch."""
    has_grouped = False
    can_split = False
    for layer in all_layers(model):
        if getattr(layer, "groups", 1) not in (None, 1):
            has_grouped = True
        if hasattr(layer, "grouped_conv"):
            has_grouped = has_grouped or getattr(layer, "groups", 1) not in (None, 1)
            can_split = True
    return has_grouped, can_split


def current_grouped_conv_mode(model):
    """The one ``grouped_conv`` setting of the model's layers (``"auto"`` included), or None if mixed."""
    modes = {getattr(layer, "grouped_conv") for layer in all_layers(model) if hasattr(layer, "grouped_conv")}
    return modes.pop() if len(modes) == 1 else None


def formulation_source(model, formulation, has_grouped, can_split):
    """The model to trace for ``formulation``: ``model`` itself when it is already set to exactly that
    formulation (or has no switch), else a verified clone rebuilt with it."""
    if not (has_grouped and can_split) or current_grouped_conv_mode(model) == formulation:
        return model
    probe = _common.verification_inputs(model, None, 2, seed=7)
    return grouped_conv_clone(model, formulation, check_inputs=probe)


def _set_grouped_conv(config, value):
    """Recursively set every layer config's ``grouped_conv`` entry; return how many were set."""
    count = 0
    if isinstance(config, dict):
        if "grouped_conv" in config and isinstance(config["grouped_conv"], str):
            config["grouped_conv"] = value
            count += 1
        for key, item in config.items():
            if key != "grouped_conv":
                count += _set_grouped_conv(item, value)
    elif isinstance(config, (list, tuple)):
        for item in config:
            count += _set_grouped_conv(item, value)
    return count


def grouped_conv_clone(model, mode="split", check_inputs=None):
    """Rebuild ``model`` with ``grouped_conv=mode`` in every layer that has the option.

    Args:
        model: a Functional Keras model.
        mode: ``"split"`` or ``"native"``.
        check_inputs: optional inputs on which the clone must reproduce the model (float32 parity).

    Returns:
        The clone, holding copies of the model's weights.

    Raises:
        ValueError: if the model has no layer with a ``grouped_conv`` option, cannot be rebuilt from
            its config, or the clone's weights or outputs differ.
    """
    try:
        from keras_fr.layers.msconv import MSConv
        from keras_fr.layers.msconv import clone_with_grouped_conv
    except ImportError:  # pragma: no cover - the layer module is part of the package
        MSConv = clone_with_grouped_conv = None
    msconv_only = MSConv is not None and all(
        isinstance(layer, MSConv) for layer in all_layers(model) if hasattr(layer, "grouped_conv")
    )
    if msconv_only and clone_with_grouped_conv is not None:
        try:
            clone = clone_with_grouped_conv(model, mode)
        except Exception as exc:  # noqa: BLE001 - surface why, whatever the layer raised
            raise ValueError(f"cannot rebuild the model with grouped_conv={mode!r}: {exc}") from exc
    else:  # generic: any layer config with a `grouped_conv` entry
        config = model.get_config()
        if _set_grouped_conv(config, mode) == 0:
            raise ValueError(
                "the model has grouped convolutions but no layer with a `grouped_conv` option, so "
                f"it cannot be rebuilt in the {mode!r} formulation."
            )
        try:
            clone = model.__class__.from_config(config)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"cannot rebuild the model with grouped_conv={mode!r}: {exc}") from exc
    source = model.get_weights()
    target = clone.get_weights()
    if [w.shape for w in source] != [w.shape for w in target]:
        raise ValueError(
            f"the {mode!r}-formulation clone has different weights than the model "
            f"({len(target)} vs {len(source)} arrays); cannot copy them."
        )
    clone.set_weights(source)
    if check_inputs is not None:
        ref = np.asarray(model(check_inputs, training=False), np.float64)
        out = np.asarray(clone(check_inputs, training=False), np.float64)
        scale = max(float(np.max(np.abs(ref))), 1e-12)
        rel = float(np.max(np.abs(ref - out))) / scale
        if not rel <= 1e-5:
            raise ValueError(
                f"the grouped_conv={mode!r} clone does not reproduce the model (max |diff| is {rel:.3g} "
                "of the output scale)."
            )
    return clone


def serving_model(model, channels_first=False):
    """A Functional wrapper around ``model`` for tracing: inference mode, one named input.

    With ``channels_first=True`` the wrapper takes (N, 3, H, W) and transposes to the model's
    channels-last layout as its first operation.
    """
    import keras

    _, height, width, channels = tuple(model.inputs[0].shape)
    if channels_first:
        inp = keras.Input(shape=(channels, height, width), name="input_image", dtype="float32")
        x = keras.layers.Permute((2, 3, 1), name="nchw_to_nhwc")(inp)
    else:
        inp = keras.Input(shape=(height, width, channels), name="input_image", dtype="float32")
        x = inp
    out = model(x, training=False)
    return keras.Model(inp, out, name=f"{model.name}_serving")


@contextlib.contextmanager
def native_grouped_conv_tracing():
    """While active, Keras' TensorFlow ``conv`` traces grouped convolutions without XLA.

    Only for building graphs that another tool converts (tf2onnx): TensorFlow's CPU kernel cannot
    run a grouped convolution, so the traced function must not be executed by TensorFlow itself.
    """
    import tensorflow as tf

    try:
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # pragma: no cover - a Keras without this module: leave tracing as it is
        yield False
        return
    original = getattr(tf_nn, "conv", None)
    if original is None:  # pragma: no cover
        yield False
        return

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        channels_last = data_format in (None, "channels_last")
        if channels_last and len(inputs.shape) == 4 and inputs.shape[-1] != kernel.shape[-2]:
            return tf.nn.convolution(
                inputs, kernel, strides, padding.upper(), data_format="NHWC", dilations=dilation_rate
            )
        return original(inputs, kernel, strides, padding, data_format, dilation_rate)

    tf_nn.conv = conv
    try:
        yield True
    finally:
        tf_nn.conv = original


def formulations(grouped_conv, has_grouped, can_split, fn):
    """The grouped-convolution formulations to try, in order."""
    if grouped_conv == "split":
        if not can_split:
            raise ValueError(
                f"{fn}: grouped_conv='split' needs a model with MSConv layers (a `grouped_conv` "
                "option); this model has none."
            )
        return ["split"]
    if grouped_conv == "auto" and has_grouped and can_split:
        return ["native", "split"]
    return ["native"]


def _edge_padded_max_pool_layer():
    import keras
    from keras import ops

    class EdgePaddedMaxPooling2D(keras.layers.Layer):
        """Max pooling padded by repeating the edge rows/columns: equal to -inf padding.

        With ``padding <= pool_size // 2`` every window that reaches into the padding also contains
        the edge pixel the padding repeats, so the maximum is unchanged; unlike -inf, the repeated
        values are ordinary activations, which int8 calibration can represent.
        """

        def __init__(self, pool_size=3, strides=None, padding=1, **kwargs):
            super().__init__(**kwargs)
            self.pool_size = pool_size
            self.strides = strides or pool_size
            self.padding = padding

        def call(self, inputs):
            p = self.padding
            x = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="symmetric") if p else inputs
            return ops.max_pool(x, pool_size=self.pool_size, strides=self.strides, padding="valid",
                                data_format="channels_last")

    return EdgePaddedMaxPooling2D


def edge_padded_max_pool_clone(model):
    """``model`` with every -inf-padded max pool (MSConv's ``PaddedMaxPooling2D``) computed with edge
    padding instead; the other layers (and their weights) are shared. Returns ``(model, count)``."""
    import keras

    try:
        from keras_fr.layers.msconv import PaddedMaxPooling2D
    except ImportError:  # pragma: no cover
        return model, 0
    pools = [layer for layer in model.layers if isinstance(layer, PaddedMaxPooling2D)]
    pools = [p for p in pools if p.padding <= p.pool_size // 2]
    if not pools:
        return model, 0
    replacement = _edge_padded_max_pool_layer()

    def clone_function(layer):
        if layer in pools:
            return replacement(
                pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding,
                name=layer.name,
            )
        return layer

    return keras.models.clone_model(model, clone_function=clone_function), len(pools)
