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
better (a grouped or dilated ``Conv2D`` as one graph convolution, :class:`GraphConv2D`). PReLUs are
traced as they are (see :class:`Int8PReLU` for why int8 files keep ``PRELU``).
"""

import dataclasses

import keras
import numpy as np

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


@keras.saving.register_keras_serializable(package="keras_fr")
class Int8PReLU(keras.layers.PReLU):
    """``PReLU`` written as ``max(x, a * x)`` for full-integer int8 TFLite files.

    XNNPACK runs no int8 ``PRELU``: in an int8 file each one falls back to TFLite's reference kernel
    and splits the delegated graph (an MSConvResNet26 file had 63 partitions), which made int8 slower
    than float32 for MSConv. ``MAXIMUM`` and ``MUL`` of int8 tensors run well (measured: MSConvResNet26's
    int8 file 26.6 -> 15.2 ms at batch 1 on a 2-core AVX2 machine, with random weights).

    **The exporters do not use it.** On trained weights it costs too much accuracy: the int8 file of
    keras_fr's own ``msconv_resnet50`` / ``open_distill`` weights reached a min cosine to Keras of 0.80
    with MSConv's PReLUs in this form, 0.981 with only the network's other PReLUs in it, and 0.990
    with none (the same calibration; random weights, whose slopes are all 0.25, had passed at 0.98).
    It stays available for experiments. ``max(x, a * x)``
    is PReLU exactly when every slope ``a`` is at most 1; with ``slopes_above_one=True`` (some slope
    above 1) the layer computes ``max(x, min(a, 1) x) + min(x, max(a, 1) x) - x``, also exact. The
    weights are PReLU's (one ``alpha``), so a PReLU's ``get_weights()`` fit; ``from_prelu`` chooses the
    flag from the slopes. Float32 files keep ``PRELU`` (XNNPACK runs it, faster than the two operators).
    """

    def __init__(self, slopes_above_one=False, **kwargs):
        super().__init__(**kwargs)
        self.slopes_above_one = bool(slopes_above_one)

    @classmethod
    def from_prelu(cls, layer):
        """The int8 formulation of the built PReLU ``layer`` (same configuration and name)."""
        config = layer.get_config()
        config["slopes_above_one"] = bool(any(np.any(np.asarray(w) > 1) for w in layer.get_weights()))
        return cls.from_config(config)

    def call(self, inputs):
        alpha = keras.ops.cast(self.alpha, inputs.dtype)
        if not self.slopes_above_one:
            return keras.ops.maximum(inputs, alpha * inputs)
        low = keras.ops.minimum(alpha, 1.0)
        high = keras.ops.maximum(alpha, 1.0)
        return keras.ops.maximum(inputs, low * inputs) + keras.ops.minimum(inputs, high * inputs) - inputs

    def get_config(self):
        config = super().get_config()
        config["slopes_above_one"] = self.slopes_above_one
        return config


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
      XNNPACK's graph whole).

    Where the variant only makes a file faster it carries ``export_speed_only = True``, and the
    exporter leaves the original in place when it sits where it cannot be swapped (inside a composite
    layer without ``export_variant``). PReLUs stay PReLUs in every file, int8 included (see
    :class:`Int8PReLU`).
    """
    hook = getattr(layer, "export_variant", None)
    if callable(hook):
        return hook(target)
    if type(layer) is keras.layers.Conv2D and wants_graph_conv(layer, target):
        variant = GraphConv2D.from_config(layer.get_config())
        variant.export_speed_only = not (layer.groups > 1 and target.format == "onnx")
        return variant
    return None
