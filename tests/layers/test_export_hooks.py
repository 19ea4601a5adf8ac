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
from keras_fr.layers.export_hooks import GraphGroupedConv2D  # noqa: E402
from keras_fr.layers.export_hooks import export_variant_of  # noqa: E402

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


def test_keras_grouped_conv2d_gets_the_graph_formulation_for_onnx_only():
    conv = keras.layers.Conv2D(8, 3, groups=4, name="g")
    assert isinstance(export_variant_of(conv, ExportTarget("onnx")), GraphGroupedConv2D)
    assert export_variant_of(conv, ExportTarget("tflite")) is None
    assert export_variant_of(conv, ExportTarget("onnx", grouped_conv="split")) is None
    graph = GraphGroupedConv2D.from_config(conv.get_config())
    x = np.random.default_rng(1).normal(size=(1, 6, 6, 8)).astype("float32")
    conv.build(x.shape)
    graph.build(x.shape)
    graph.set_weights(conv.get_weights())
    np.testing.assert_allclose(graph(x), conv(x), rtol=1e-5, atol=1e-6)  # eagerly: Keras' own conv


def test_the_package_uses_no_private_keras():
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if "keras.src" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
