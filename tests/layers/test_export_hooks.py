"""The export hooks (keras_fr.layers.export_hooks) on toy layers: the exporter swaps in what a layer
asks for, copies its weights, checks the rebuilt model, keeps declared layers float32 in int8, and
names no architecture itself. No converter runs here (fast)."""

import pathlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_fr.export import _prepare  # noqa: E402
from keras_fr.layers.export_hooks import ExportHooks  # noqa: E402
from keras_fr.layers.export_hooks import ExportTarget  # noqa: E402
from keras_fr.layers.export_hooks import GraphConv2D  # noqa: E402
from keras_fr.layers.export_hooks import LeakyPReLU  # noqa: E402
from keras_fr.layers.export_hooks import export_variant_of  # noqa: E402
from keras_fr.layers.export_hooks import keeps_float32_in_int8  # noqa: E402

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "keras_fr"


class Scale(ExportHooks, keras.layers.Layer):
    """y = x * w; asks for its ``ScaleForOnnx`` twin in ONNX files."""

    export_grouped_conv_modes = ("native", "split")

    def __init__(self, wrong=False, **kwargs):
        super().__init__(**kwargs)
        self.wrong = wrong

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="w")

    def call(self, x):
        return x * self.w

    def export_variant(self, target):
        if target.format != "onnx":
            return None
        return ScaleForOnnx(wrong=self.wrong, name=self.name)


class ScaleForOnnx(Scale):
    def call(self, x):
        return x * (self.w + (1.0 if self.wrong else 0.0))

    def export_variant(self, target):
        return None


class Fragile(ExportHooks, keras.layers.Layer):
    keep_float32_in_int8 = True

    def call(self, x):
        return x / (keras.ops.sum(x, axis=-1, keepdims=True) + 1.0)


def _model(wrong=False):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(4, 1, name="conv")(inputs)
    x = Scale(wrong=wrong, name="scale")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = Fragile(name="fragile")(x)
    return keras.Model(inputs, x)


def test_variant_swapped_weights_copied_and_checked():
    model = _model()
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    assert _prepare.export_source(model, ExportTarget("tflite")) is model  # nobody asks: as it is
    source = _prepare.export_source(model, ExportTarget("onnx"), check_inputs=x)
    assert source is not model
    swapped = source.get_layer("scale")
    assert type(swapped) is ScaleForOnnx
    np.testing.assert_array_equal(swapped.w.numpy(), model.get_layer("scale").w.numpy())
    assert source.get_layer("conv") is model.get_layer("conv")  # the others are shared, not copied
    np.testing.assert_allclose(source(x), model(x), rtol=1e-6)
    with pytest.raises(ValueError, match="does not reproduce"):
        _prepare.export_source(_model(wrong=True), ExportTarget("onnx"), check_inputs=x)


def test_declarations_are_read_from_the_layers():
    model = _model()
    assert _prepare.float32_layer_names(model) == ["fragile"]
    assert _prepare.grouped_conv_info(model) == (False, True)
    with pytest.raises(ValueError, match="grouped_conv"):
        ExportTarget("onnx", grouped_conv="loop")


def test_a_variant_hidden_in_a_composite_layer_fails_loudly():
    class Holder(keras.layers.Layer):  # no export_variant of its own
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = Scale(name="inner")

        def call(self, x):
            return self.inner(x)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Holder(name="holder")(inputs))
    assert [layer.name for layer in _prepare.walk_layers(model)][-2:] == ["holder", "inner"]
    with pytest.raises(ValueError, match="inner"):
        _prepare.export_source(model, ExportTarget("onnx"))


def _traced_op_types(layer, shape):
    import tensorflow as tf

    fn = tf.function(lambda x: layer(x))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}


def test_grouped_or_dilated_conv2d_gets_one_graph_convolution():
    grouped = keras.layers.Conv2D(8, 3, groups=4, name="g")
    dilated = keras.layers.Conv2D(8, 3, dilation_rate=2, name="d")
    plain = keras.layers.Conv2D(8, 3, name="p")
    for target in (ExportTarget("onnx"), ExportTarget("tflite"), ExportTarget("tflite", quantize="int8")):
        assert isinstance(export_variant_of(grouped, target), GraphConv2D)
        assert isinstance(export_variant_of(dilated, target), GraphConv2D)
        assert export_variant_of(plain, target) is None
    # The split formulation leaves grouped convolutions to the layers that split them.
    assert export_variant_of(grouped, ExportTarget("onnx", grouped_conv="split")) is None
    assert isinstance(export_variant_of(dilated, ExportTarget("onnx", grouped_conv="split")), GraphConv2D)
    # Only the ONNX grouped one is required (tf2onnx cannot read Keras' XLA function); the rest speed up.
    assert export_variant_of(grouped, ExportTarget("onnx")).export_speed_only is False
    assert export_variant_of(grouped, ExportTarget("tflite")).export_speed_only is True
    assert export_variant_of(dilated, ExportTarget("onnx")).export_speed_only is True

    x = np.random.default_rng(1).normal(size=(1, 9, 9, 8)).astype("float32")
    for conv in (grouped, dilated):
        graph = GraphConv2D.from_config(conv.get_config())
        conv.build(x.shape)
        graph.build(x.shape)
        graph.set_weights(conv.get_weights())
        np.testing.assert_allclose(graph(x), conv(x), rtol=1e-5, atol=1e-6)  # eagerly: Keras' own conv
    # Traced, Keras' dilated convolution is space-to-batch around a convolution (which XNNPACK cannot
    # run in a TFLite file); the graph formulation is one Conv2D with dilations.
    graph = GraphConv2D.from_config(dilated.get_config())
    graph.build(x.shape)
    assert "SpaceToBatchND" in _traced_op_types(dilated, x.shape)
    ops = _traced_op_types(graph, x.shape)
    assert "Conv2D" in ops and "SpaceToBatchND" not in ops and "BatchToSpaceND" not in ops


@pytest.mark.parametrize("slope", [0.25, -0.6, 1.7, 0.0])
def test_leaky_prelu_computes_the_single_slope_prelu_eagerly_and_traced_as_one_leaky_relu(slope):
    import tensorflow as tf

    prelu = keras.layers.PReLU(shared_axes=[1, 2, 3], name="act")
    x = np.random.default_rng(3).normal(size=(2, 5, 5, 6)).astype("float32")
    prelu.build(x.shape)
    prelu.set_weights([np.full(prelu.alpha.shape, slope, "float32")])
    variant = export_variant_of(prelu, ExportTarget("tflite", quantize="int8"))
    assert type(variant) is LeakyPReLU and variant.name == "act" and variant.export_speed_only
    variant.build(x.shape)
    variant.set_weights(prelu.get_weights())
    expected = np.where(x > 0, x, np.float32(slope) * x)  # NumPy's PReLU (negative and > 1 slopes too)
    np.testing.assert_allclose(np.asarray(variant(x)), expected, rtol=1e-6, atol=1e-7)
    traced = tf.function(lambda v: variant(v))
    np.testing.assert_allclose(traced(x).numpy(), expected, rtol=1e-6, atol=1e-7)
    ops = {op.type for op in traced.get_concrete_function(tf.TensorSpec(x.shape)).graph.get_operations()}
    assert "LeakyRelu" in ops and "Maximum" not in ops and "Mul" not in ops
    # Set after tracing, a new slope needs a new trace (the slope is a constant of the graph): the
    # exporters copy the weights first. A fresh trace reads the new value.
    variant.set_weights([np.full(prelu.alpha.shape, 0.5, "float32")])
    np.testing.assert_allclose(tf.function(lambda v: variant(v))(x).numpy(), np.where(x > 0, x, 0.5 * x),
                               rtol=1e-6)


def test_prelus_in_int8_files_single_slope_leaky_per_channel_float32_float_files_untouched():
    shared = keras.layers.PReLU(shared_axes=[1, 2, 3], name="shared")
    shared.build((None, 4, 4, 3))
    per_channel = keras.layers.PReLU(shared_axes=[1, 2], name="per_channel")
    per_channel.build((None, 4, 4, 3))
    int8 = ExportTarget("tflite", quantize="int8")
    assert export_variant_of(per_channel, int8) is None and keeps_float32_in_int8(per_channel)
    assert not keeps_float32_in_int8(shared) and not keeps_float32_in_int8(export_variant_of(shared, int8))
    assert not keeps_float32_in_int8(keras.layers.Conv2D(3, 1)) and keeps_float32_in_int8(Fragile())
    with pytest.raises(ValueError, match="3 slopes"):
        LeakyPReLU.from_prelu(per_channel)
    for target in (ExportTarget("tflite"), ExportTarget("tflite", quantize="float16"),
                   ExportTarget("tflite", quantize="dynamic"), ExportTarget("onnx")):
        assert export_variant_of(shared, target) is None and export_variant_of(per_channel, target) is None
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, per_channel(shared(keras.layers.Conv2D(3, 1, name="conv")(inputs))))
    assert _prepare.float32_layer_names(model) == ["per_channel"]


def test_a_speed_only_variant_inside_a_composite_layer_is_left_as_it_is():
    class Holder(keras.layers.Layer):  # no export_variant of its own
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(3, 3, padding="same", dilation_rate=2, name="inner_conv")

        def call(self, x):
            return self.conv(x)

    inputs = keras.Input((8, 8, 3))
    inner = Holder(name="holder")(inputs)
    outputs = keras.layers.Conv2D(3, 3, padding="same", dilation_rate=2, name="outer_conv")(inner)
    model = keras.Model(inputs, outputs)
    clone = _prepare.export_source(model, ExportTarget("tflite"))
    # The graph's own dilated convolution is swapped; the one inside the composite layer stays (no error).
    assert isinstance(clone.get_layer("outer_conv"), GraphConv2D)
    assert type(clone.get_layer("holder").conv) is keras.layers.Conv2D


def test_the_package_uses_no_private_keras():
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if "keras.src" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
