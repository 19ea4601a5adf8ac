"""How a layer tells the exporters (``keras_fr.export``) what it needs in a TFLite or ONNX file.

The exporters know no architecture. Before tracing a model for a file they walk its layers (the
Functional graph's ``model.layers``, nested models' ``layers`` and each layer's public attributes that
hold layers) and ask every layer three things, all optional (a layer without them is exported as it
is):

``export_variant(target) -> keras.layers.Layer | None``
    A layer to trace *instead of* this one for ``target`` (an :class:`ExportTarget`), or ``None`` when
    this layer suits the target as it is. The replacement must compute the same function with the
    same weights in the same order (``get_weights()`` of this layer fits its ``set_weights()``): the
    exporter copies the weights across, checks on a few inputs that the rebuilt model reproduces the
    original (relative max difference <= 1e-5) and only then traces it. Keep the layer's ``name``, so
    the operators of the file still carry it. Example: MSConv answers ``grouped_conv="split"`` with a
    copy of itself that computes its grouped convolutions per group; ``PaddedMaxPooling2D`` answers an
    int8 target with edge padding instead of -inf padding (the same maxima, and finite values that int8
    calibration can represent).

``export_grouped_conv_modes``  (class attribute, a tuple, default ``()``)
    The grouped-convolution formulations ``export_variant`` accepts in ``target.grouped_conv``:
    ``"native"`` (one grouped convolution operator) and/or ``"split"`` (ordinary convolutions on
    channel slices, concatenated). A model with at least one layer listing ``"split"`` can be
    exported with ``grouped_conv="split"``, and ``grouped_conv="auto"`` falls back to it when the
    native formulation does not convert.

``keep_float32_in_int8``  (class attribute, a bool, default ``False``)
    True: in a full-integer int8 TFLite file, this layer's operators stay float32 (they are
    calibrated with the others, then left out of quantization). For arithmetic that int8 cannot
    carry, e.g. LGAF's ``FeatureQualityFusion`` (normalized feature norms divided by their sum).

A layer that has ``export_variant`` answers for itself and every layer inside it: the exporter does
not look into it for variants (MSConv's replacement brings its own grouped convolutions). The exporter
rebuilds the Functional graph, so it can swap only layers of the graph (nested models included); if a
layer inside a composite layer without ``export_variant`` asks for a variant, the export fails with an
error naming it, rather than tracing the wrong formulation. A variant that only makes the file faster
(its ``export_speed_only`` attribute is true) is skipped there instead: the original computes the same.

:class:`ExportHooks` is a mixin holding the defaults and this documentation; inheriting from it is
optional (the exporters look the names up on any layer). :func:`export_variant_of` is what the
exporters call: the layer's own answer, or for some of Keras' own layers a formulation that converts
better (a grouped or dilated ``Conv2D`` as one graph convolution, :class:`GraphConv2D`; in int8 files a
single-slope ``PReLU`` as :class:`LeakyPReLU`). :func:`keeps_float32_in_int8` says which layers stay
float32 in int8 files (those that ask, and per-channel PReLUs).
"""

import dataclasses

import keras
import numpy as np

from keras_fr.layers.activations import is_plain_prelu
from keras_fr.layers.convolution import Conv2D

#: Export formats and grouped-convolution formulations an :class:`ExportTarget` can name.
FORMATS = ("tflite", "onnx")
GROUPED_CONV_FORMULATIONS = ("native", "split")
QUANTIZE_MODES = (None, "float16", "dynamic", "int8")


@dataclasses.dataclass(frozen=True)
class ExportTarget:
    """The file a model is being traced for.

    Attributes:
        format: ``"tflite"`` or ``"onnx"``.
        quantize: the TFLite quantization, ``None`` (float32), ``"float16"``, ``"dynamic"`` or
            ``"int8"`` (full-integer: activations are calibrated); always ``None`` for ONNX.
        grouped_conv: the grouped-convolution formulation being tried, ``"native"`` or ``"split"``.
    """

    format: str
    quantize: object = None
    grouped_conv: str = "native"

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"ExportTarget: `format` must be one of {FORMATS}; got {self.format!r}.")
        if self.quantize not in QUANTIZE_MODES:
            raise ValueError(
                f"ExportTarget: `quantize` must be one of {QUANTIZE_MODES}; got {self.quantize!r}."
            )
        if self.grouped_conv not in GROUPED_CONV_FORMULATIONS:
            raise ValueError(
                f"ExportTarget: `grouped_conv` must be one of {GROUPED_CONV_FORMULATIONS}; got "
                f"{self.grouped_conv!r}."
            )


class ExportHooks:
    """Mixin with the export hooks' defaults: export as is, no grouped-conv switch, int8 allowed.

    See the module docstring for the contract of each member.
    """

    #: Grouped-convolution formulations ``export_variant`` accepts (``"native"``, ``"split"``).
    export_grouped_conv_modes = ()
    #: Keep this layer's operators float32 in a full-integer int8 TFLite file.
    keep_float32_in_int8 = False

    def export_variant(self, target):
        """The layer to trace instead of this one for ``target`` (an ``ExportTarget``), or None."""
        del target
        return None


def graph_conv2d(inputs, kernel, strides, padding, dilation_rate, data_format="channels_last"):
    """One TensorFlow ``Conv2D`` graph operation, grouped and/or dilated, or None when not traced.

    Returns None (the caller runs Keras' own convolution) unless the TensorFlow backend is tracing a
    graph. Keras' TensorFlow backend runs a grouped convolution as an XLA-compiled function (the CPU
    kernel has none) and a dilated one through ``tf.nn.convolution``, which traces it as
    space-to-batch + convolution + batch-to-space. Converters cannot look inside the first, and the
    second reaches a TFLite file as ``SPACE_TO_BATCH_ND`` / ``BATCH_TO_SPACE_ND`` operators that
    XNNPACK does not run (in float32 and int8 files alike: each one splits the delegated graph). One
    ``Conv2D`` with a ``dilations`` attribute and the grouped kernel becomes one TFLite ``CONV_2D``
    (dilation factors, grouped filter) and one ONNX ``Conv`` (``dilations``, ``group``). TensorFlow
    itself cannot run such a graph on a CPU: it is for converters only.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf  # the TensorFlow backend is active, so TensorFlow is imported already

    if tf.executing_eagerly():
        return None
    return tf.nn.conv2d(
        inputs,
        kernel,
        strides=list(strides),
        padding=padding.upper(),
        data_format="NHWC" if data_format == "channels_last" else "NCHW",
        dilations=list(dilation_rate),
    )


@keras.saving.register_keras_serializable(package="keras_fr")
class GraphConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` whose grouped or dilated convolution is one TensorFlow graph operation when traced.

    See :func:`graph_conv2d`: traced in a ``tf.function`` on the TensorFlow backend, a grouped
    (``groups > 1``) or dilated convolution is emitted as one ``tf.nn.conv2d`` with the grouped kernel
    and ``dilations``, which tf2onnx maps to one ONNX ``Conv`` and the TFLite converter to one
    ``CONV_2D`` that XNNPACK runs. Run eagerly (or on another backend, or as a plain convolution) it
    is Keras' ``Conv2D``, so it can be checked against the original layer on any machine.

    Same arguments, weights and configuration as ``keras.layers.Conv2D``.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups > 1 or any(d != 1 for d in self.dilation_rate):
            out = graph_conv2d(inputs, kernel, self.strides, self.padding, self.dilation_rate,
                               self.data_format)
            if out is not None:
                return out
        return super().convolution_op(inputs, kernel)


#: The earlier name of :class:`GraphConv2D` (grouped convolutions only, then).
GraphGroupedConv2D = GraphConv2D


def _slope_count(prelu):
    return int(np.prod(prelu.alpha.shape)) if prelu.built else None


@keras.saving.register_keras_serializable(package="keras_fr")
class LeakyPReLU(keras.layers.PReLU):
    """A single-slope ``PReLU`` traced as one leaky ReLU operator, for full-integer int8 TFLite files.

    XNNPACK runs no int8 ``PRELU``: in an int8 file each one falls back to TFLite's reference kernel
    and splits the delegated graph (MSConvResNet50, whose 129 PReLUs all have one slope, ran its int8
    file in 117 pieces, slower than its float32 file). A PReLU with one slope for every position is
    ``leaky_relu(x, a)``; traced on TensorFlow this layer emits ``tf.nn.leaky_relu`` with the slope read
    from its weight as a constant, which the converter maps to ``LEAKY_RELU``. In an int8 file that
    operator keeps the slope as a 32-bit fixed-point multiplier (not an int8 constant), and XNNPACK
    runs it. Any slope works, negative or above 1 (``x`` where ``x > 0``, else ``a x``).

    Run eagerly (or on another backend) it is Keras' ``PReLU``, so the exporters' check compares it with
    the original. The weights are PReLU's (one ``alpha``); the slope is read when the layer is traced,
    so set the weights first (the exporters do). Earlier, ``max(x, a * x)`` was tried: the same function,
    but its int8 ``MUL`` by a quantized slope and the shared scale of ``MAXIMUM`` cost the trained
    ``open_distill`` weights too much (min cosine 0.80 against 0.990 with ``PRELU``).
    """

    @classmethod
    def from_prelu(cls, layer):
        """The leaky formulation of ``layer`` (a ``PReLU`` with one slope: same configuration and name)."""
        count = _slope_count(layer)
        if count not in (None, 1):
            raise ValueError(f"LeakyPReLU: layer {layer.name!r} has {count} slopes; a leaky ReLU has one.")
        return cls.from_config(layer.get_config())

    def call(self, inputs):
        if keras.backend.backend() == "tensorflow" and _slope_count(self) == 1:
            import tensorflow as tf  # the TensorFlow backend is active, so TensorFlow is imported already

            if not tf.executing_eagerly():
                with tf.init_scope():  # the slope's current value, as a constant of the traced graph
                    slope = float(np.asarray(self.alpha.numpy()).reshape(-1)[0])
                return tf.nn.leaky_relu(inputs, alpha=slope)
        return super().call(inputs)


def keeps_float32_in_int8(layer):
    """Whether ``layer``'s operators stay float32 in a full-integer int8 TFLite file.

    The layer's own ``keep_float32_in_int8``; otherwise true for Keras' ``PReLU`` with more than one
    slope (per-channel, as in the IResNets): XNNPACK has no int8 ``PRELU``, so an int8 one would run
    outside the delegate and split its graph, while a float32 ``PRELU`` between ``DEQUANTIZE`` and
    ``QUANTIZE`` stays inside it, with float slopes. (A single-slope PReLU becomes :class:`LeakyPReLU`.)
    """
    if getattr(layer, "keep_float32_in_int8", False):
        return True
    return is_plain_prelu(layer) and (_slope_count(layer) or 0) > 1


def wants_graph_conv(layer, target):
    """Whether a ``Conv2D`` should be traced as :class:`GraphConv2D` for ``target``: a dilated one in
    every file; a grouped one in the native formulation."""
    dilated = any(d != 1 for d in layer.dilation_rate)
    return dilated or (layer.groups > 1 and target.grouped_conv == "native")


def export_variant_of(layer, target):
    """What the exporters trace for ``layer`` in ``target``: a replacement layer, or None (as it is).

    The layer's own ``export_variant`` when it has one; otherwise, for Keras' own layers:

    - ``Conv2D``, dilated (every file) or grouped (native formulation): a :class:`GraphConv2D` with the
      same configuration (required for grouped convolutions in ONNX files; for TFLite files it keeps
      XNNPACK's graph whole);
    - ``PReLU`` with one slope, in int8 files: a :class:`LeakyPReLU` (``LEAKY_RELU``, which XNNPACK runs
      in int8). Per-channel PReLUs are not replaced: they stay float32 in int8 files
      (:func:`keeps_float32_in_int8`). Float files keep ``PRELU`` (XNNPACK runs it in float32).

    Where the variant only makes a file faster it carries ``export_speed_only = True``, and the
    exporter leaves the original in place when it sits where it cannot be swapped (inside a composite
    layer without ``export_variant``).
    """
    hook = getattr(layer, "export_variant", None)
    if callable(hook):
        return hook(target)
    if type(layer) in (keras.layers.Conv2D, Conv2D) and wants_graph_conv(layer, target):
        variant = GraphConv2D.from_config(layer.get_config())
        variant.export_speed_only = not (layer.groups > 1 and target.format == "onnx")
        return variant
    if is_plain_prelu(layer) and target.quantize == "int8" and _slope_count(layer) == 1:
        variant = LeakyPReLU.from_prelu(layer)
        variant.export_speed_only = True
        return variant
    return None
