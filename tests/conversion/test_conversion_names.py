"""The Keras name -> PyTorch key rule: read from declared paths, never guessed. A module with an
underscore in its name maps correctly when declared and fails loudly when not; it never silently gets
a wrong key (the old rule read ``se_block`` as ``se.block``)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_fr.conversion.mapping import model_torch_modules  # noqa: E402
from keras_fr.conversion.mapping import NameRuleError  # noqa: E402
from keras_fr.conversion.mapping import export_state_dict  # noqa: E402
from keras_fr.conversion.mapping import load_state_dict  # noqa: E402
from keras_fr.conversion.mapping import torch_path  # noqa: E402


class _Block(keras.layers.Layer):
    """A composite layer with a sublayer whose PyTorch name has an underscore (``se_block``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.se_block = keras.layers.Dense(3, name="se_block")
        self.out_0 = keras.layers.Dense(3, name="out_0")

    def build(self, input_shape):
        self.se_block.build(input_shape)
        self.out_0.build((input_shape[0], 3))

    def call(self, x):
        return self.out_0(self.se_block(x))


class _Declared(_Block):
    torch_modules = ("se_block", "out.{}")  # its sublayers' PyTorch paths


class _Undeclared(_Block):
    pass  # declares nothing: "se_block" could be one module or two


def _model(block_class):
    inputs = keras.Input((4,))
    return keras.Model(inputs, block_class(name="head")(inputs))


def test_declared_underscore_module_maps_both_ways():
    model = _model(_Declared)
    state = export_state_dict(model)
    assert sorted(state) == [
        "head.out.0.bias", "head.out.0.weight", "head.se_block.bias", "head.se_block.weight"
    ]
    other = _model(_Declared)
    report = load_state_dict(other, state)
    assert report.ok and report.assigned == 4
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_undeclared_underscore_module_fails_loudly_both_ways():
    model = _model(_Undeclared)
    with pytest.raises(NameRuleError, match="se_block.*one module name or two"):
        export_state_dict(model)
    state = {"head.se_block.weight": np.zeros((3, 4), np.float32)}
    with pytest.raises(NameRuleError, match="se_block"):
        load_state_dict(model, state)


def test_top_level_names_of_a_family_are_closed():
    # A new module inside an MSConvResNet unit (whose `stage_{}` is one PyTorch module) or inside an
    # IResNet block must be declared: the generic rule would split it.
    for name in ("stage_1_0_se_0", "layer1_0_se_fc", "se_block"):
        with pytest.raises(NameRuleError, match=name):
            torch_path(name, model_torch_modules())
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="stage_1_0_se_0")(inputs))
    with pytest.raises(NameRuleError, match="stage_1_0_se_0"):
        export_state_dict(model)


def test_declared_paths_and_the_generic_rule():
    assert torch_path("stage_2_1_conv2_msconv", model_torch_modules()) == "stage_2.1.conv2_msconv"
    assert torch_path("basic_conv_0", model_torch_modules()) == "basic_conv.0"
    assert torch_path("layer3_4_downsample_1", model_torch_modules()) == "layer3.4.downsample.1"
    assert torch_path("local_branch", model_torch_modules()) == "local_branch"
    assert torch_path("fc_d_0", ("fc.{}", "fc_d.{}")) == "fc_d.0"
    assert torch_path("body_0", ()) == "body.0"  # one word and indices: unambiguous
    with pytest.raises(NameRuleError, match="several"):
        torch_path("a_0", ("a.{}", "a_{}"))
