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
error naming it, rather than tracing the wrong formulation.

:class:`ExportHooks` is a mixin holding the defaults and this documentation; inheriting from it is
optional (the exporters look the names up on any layer). :func:`export_variant_of` is what the
exporters call: the layer's own answer, or for Keras' own ``Conv2D`` with ``groups > 1`` in an ONNX
file, the same convolution as a :class:`GraphGroupedConv2D`.
"""

import dataclasses

import keras

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


@keras.saving.register_keras_serializable(package="keras_fr")
class GraphGroupedConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` whose grouped convolution is one TensorFlow graph operation when traced.

    Keras' TensorFlow backend runs a grouped convolution as an XLA-compiled function, because
    TensorFlow's CPU kernel has none; a graph converter (tf2onnx) cannot look inside that function.
    Traced in a ``tf.function`` on the TensorFlow backend, this layer emits a plain
    ``tf.nn.convolution`` with the grouped kernel instead, which tf2onnx maps to one ONNX ``Conv``
    with ``group=G``. Run eagerly (or on another backend, or with ``groups == 1``) it is Keras'
    ``Conv2D``, so it can be checked against the original layer on any machine. A graph traced from it
    is for converters only: TensorFlow itself cannot run it on a CPU.

    Same arguments, weights and configuration as ``keras.layers.Conv2D``.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 or keras.backend.backend() != "tensorflow":
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf  # the TensorFlow backend is active, so TensorFlow is imported already

        if tf.executing_eagerly():
            return super().convolution_op(inputs, kernel)
        return tf.nn.convolution(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=self.padding.upper(),
            data_format="NHWC" if self.data_format == "channels_last" else "NCHW",
            dilations=list(self.dilation_rate),
        )


def export_variant_of(layer, target):
    """What the exporters trace for ``layer`` in ``target``: a replacement layer, or None (as it is).

    The layer's own ``export_variant`` when it has one; otherwise, for Keras' ``Conv2D`` with
    ``groups > 1`` in an ONNX file in the native formulation, a :class:`GraphGroupedConv2D` with the
    same configuration; otherwise None.
    """
    hook = getattr(layer, "export_variant", None)
    if callable(hook):
        return hook(target)
    if (
        type(layer) is keras.layers.Conv2D
        and layer.groups > 1
        and target.format == "onnx"
        and target.grouped_conv == "native"
    ):
        return GraphGroupedConv2D.from_config(layer.get_config())
    return None
