"""inference_model: the copy computes what the model computes (Keras' own batch normalization and
PReLU are the reference), rewrites exactly what it may, leaves the model alone, and is what the
library's batch paths run."""

import numpy as np
import pytest

import keras

from keras_fr.applications import get_model, inference_model
from keras_fr.applications.inference import inference_copy
from keras_fr.layers import MaximumPReLU, MSConv
from keras_fr.layers.export_hooks import LeakyPReLU
from keras_fr.layers.msconv import _MSConvForInference
from keras_fr.layers.activations import is_plain_prelu
from keras_fr.layers.normalization import BatchNormalization


def randomize_norms(model, seed=0):
    """Moving statistics, scales and offsets far from the identity, so a wrong fold shows; PReLU
    alphas of both signs (all at most 1)."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if is_plain_prelu(layer) and layer.built:
            layer.alpha.assign(rng.uniform(-0.5, 1.0, layer.alpha.shape))
        if isinstance(layer, keras.layers.BatchNormalization) and layer.built:
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, c))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, c))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, c))
    return model


def norms_in(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def assert_same_outputs(a, b, x, rtol=1e-5):
    """Traced (``predict``), as the library runs copies: a LeakyPReLU reads its slope only when traced."""
    ya = np.asarray(a.predict(x, verbose=0), np.float64)
    yb = np.asarray(b.predict(x, verbose=0), np.float64)
    assert ya.shape == yb.shape
    np.testing.assert_allclose(yb, ya, rtol=rtol, atol=rtol * np.abs(ya).max())


def images(shape=(3, 16, 16, 3), seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def toy():
    """Every producer the fold handles, and each case it must leave alone."""
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_nobias")(inp)
    x = BatchNormalization(name="bn_ours")(x)                                  # folded
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv_bias")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name="bn_keras")(x)      # folded, into a bias
    y = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x)
    y = keras.layers.BatchNormalization(name="bn_depthwise", scale=False)(y)   # folded (no gamma)
    z = keras.layers.Conv2D(16, 1, name="conv_shared_out")(x)
    zn = keras.layers.BatchNormalization(name="bn_of_shared_out", center=False)(z)  # z is read twice: kept
    s = keras.layers.Add(name="add")([y, zn, z])
    s = keras.layers.BatchNormalization(name="bn_after_add")(s)                # after an Add: kept
    a = keras.layers.Conv2D(16, 1, activation="relu", name="conv_relu")(s)
    a = keras.layers.BatchNormalization(name="bn_after_relu")(a)               # activation between: kept
    v = keras.layers.GlobalAveragePooling2D()(a)
    v = keras.layers.Dense(6, use_bias=False, name="dense")(v)
    v = keras.layers.BatchNormalization(name="bn_dense")(v)                    # folded
    return keras.Model(inp, v, name="toy")


def test_toy_folds_exactly_the_foldable_pairs_and_keeps_the_function():
    model = randomize_norms(toy())
    folded = inference_model(model)
    assert folded is not model and folded.name == "toy"
    assert sorted(norms_in(folded)) == ["bn_after_add", "bn_after_relu", "bn_of_shared_out"]
    assert type(folded.get_layer("prelu")) is MaximumPReLU and folded.get_layer("prelu").form == "max"
    for name in ("conv_nobias", "conv_bias", "depthwise", "dense"):
        assert folded.get_layer(name).use_bias, name
    assert not folded.get_layer("conv_shared_out").bias is None  # unchanged layer, copied as is
    assert_same_outputs(model, folded, images())


def test_model_itself_is_unchanged_and_still_saves(tmp_path):
    model = randomize_norms(toy())
    before = [np.array(w) for w in model.weights]
    x = images()
    reference = np.asarray(model(x, training=False))
    inference_model(model)
    assert len(model.weights) == len(before)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(np.asarray(w), b)
    assert model.get_layer("conv_nobias").bias is None
    path = tmp_path / "toy.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(x, training=False)), reference, rtol=1e-6, atol=1e-6)


def test_shared_producer_and_channels_first_are_left_alone():
    inp = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="twice")
    x = keras.layers.BatchNormalization(name="bn_a")(conv(inp))
    x = keras.layers.BatchNormalization(name="bn_b")(conv(x))
    first = keras.layers.Conv2D(4, 1, data_format="channels_first", name="cf")(x)
    out = keras.layers.BatchNormalization(axis=1, name="bn_cf")(first)
    model = randomize_norms(keras.Model(inp, out))
    assert inference_model(model) is model  # nothing to fold: the model itself


def test_nested_model_is_folded_too():
    inner_in = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, use_bias=False, name="inner_conv")(inner_in)
    h = keras.layers.BatchNormalization(name="inner_bn")(h)
    inner = keras.Model(inner_in, h, name="inner")
    inp = keras.Input((16, 16, 3))
    out = keras.layers.GlobalAveragePooling2D()(inner(inp))
    model = randomize_norms(keras.Model(inp, out))
    folded = inference_model(model)
    assert norms_in(folded.get_layer("inner")) == []
    assert norms_in(model.get_layer("inner")) == ["inner_bn"]
    assert_same_outputs(model, folded, images())


def test_not_functional_is_a_type_error():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 1)

        def call(self, x):
            return self.conv(x)

    sub = Sub()
    with pytest.raises(TypeError, match="`model` must be a Functional Keras model"):
        inference_model(sub)
    assert inference_copy(sub) is sub


@pytest.mark.parametrize("name, kept, leaky", [("iresnet18", 9, 0), ("msconv_resnet26", 0, 9),
                                               ("lgaf_resnet50", 25, 0)])
def test_applications(name, kept, leaky):
    """IResNet: every convolution and the embedding's Dense take their batch norm; what stays is the
    pre-activation bn1 of each block (after an Add, or the input) and bn2 after the last Add. Every
    top-level PReLU becomes a MaximumPReLU, except MSConvResNet's single-slope ones after a folded
    batch norm (the stem's and each unit's first), which become LeakyPReLUs; its MSConv layers
    become their inference variants."""
    model = randomize_norms(get_model(name, weights=None))
    folded = inference_model(model)
    assert len(norms_in(folded)) == kept
    prelus = [layer for layer in model.layers if isinstance(layer, keras.layers.PReLU)]
    kinds = [type(folded.get_layer(p.name)) for p in prelus]
    assert prelus and set(kinds) <= {MaximumPReLU, LeakyPReLU} and kinds.count(LeakyPReLU) == leaky
    msconvs = [layer for layer in model.layers if isinstance(layer, MSConv)]
    assert all(type(folded.get_layer(m.name)) is _MSConvForInference for m in msconvs)
    assert (len(msconvs) > 0) == name.startswith("msconv")
    for layer in folded.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            producer = layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
            assert type(producer) not in (keras.layers.Conv2D, keras.layers.Dense), layer.name
    x = images((2, 112, 112, 3))
    a, b = model.predict(x, verbose=0), folded.predict(x, verbose=0)  # traced, as the library runs it
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99999
    np.testing.assert_allclose(b, a, atol=2e-4 * np.abs(a).max())


def test_mixed_precision_policy_is_kept():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = randomize_norms(toy())
    folded = inference_model(model)
    conv = folded.get_layer("conv_nobias")
    assert conv.dtype_policy.name == "mixed_bfloat16"
    assert conv.kernel.dtype == "float32"
    assert_same_outputs(model, folded, images(), rtol=3e-2)


def test_extract_embeddings_runs_the_folded_copy(monkeypatch):
    from keras_fr.applications import inference
    from keras_fr.evaluation import extract_embeddings

    model = randomize_norms(get_model("iresnet18", weights=None))
    faces = np.random.default_rng(3).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    made = []
    original = inference.inference_copy
    monkeypatch.setattr(inference, "inference_copy", lambda m: made.append(original(m)) or made[-1])
    folded = extract_embeddings(model, faces, batch_size=2, verbose=0)
    assert len(made) == 1 and len(norms_in(made[0])) == 9
    plain = extract_embeddings(model, faces, batch_size=2, verbose=0, optimize=False)
    assert len(made) == 1
    np.testing.assert_allclose(folded, plain, atol=1e-5)


def test_keras_runtime_runs_a_folded_snapshot():
    from keras_fr.recognition.runtime import prepare_runtime

    model = randomize_norms(get_model("iresnet18", weights=None))
    runtime = prepare_runtime(model, "iresnet18", None, "keras")
    x = images((2, 112, 112, 3))
    np.testing.assert_allclose(runtime(x), np.asarray(model(x, training=False)),
                               atol=2e-4 * np.abs(np.asarray(model(x, training=False))).max())
    assert len(norms_in(runtime._keras._inference)) == 9


@pytest.mark.parametrize("low, high, form", [(-3.0, 1.0, "max"), (1.0, 4.0, "min")])
def test_maximum_prelu_is_prelu_bit_for_bit(low, high, form):
    rng = np.random.default_rng(5)
    alpha = rng.uniform(low, high, (1, 1, 6)).astype("float32")
    alpha[..., 0] = 1.0  # the boundary belongs to both forms
    x = rng.normal(0, 3, (4, 5, 5, 6)).astype("float32")
    x[0, 0, 0] = 0.0
    reference = keras.layers.PReLU(shared_axes=[1, 2])
    reference.build(x.shape)
    reference.alpha.assign(alpha)
    ours = MaximumPReLU(form=form, shared_axes=[1, 2])
    ours.build(x.shape)
    ours.alpha.assign(alpha)
    np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(reference(x)))
    wrong = MaximumPReLU(form="min" if form == "max" else "max", shared_axes=[1, 2])
    wrong.build(x.shape)
    wrong.alpha.assign(alpha)
    assert not np.array_equal(np.asarray(wrong(x)), np.asarray(reference(x)))  # the form matters


def test_prelu_with_alphas_on_both_sides_of_one_is_kept():
    inp = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(4, 1, use_bias=False)(inp)
    mixed = keras.layers.PReLU(shared_axes=[1, 2], name="mixed")(keras.layers.BatchNormalization()(conv))
    above = keras.layers.PReLU(shared_axes=[1, 2], name="above")(mixed)
    model = randomize_norms(keras.Model(inp, above))
    model.get_layer("mixed").alpha.assign(np.array([[[0.2, 1.5, -0.3, 0.9]]], "float32"))
    model.get_layer("above").alpha.assign(np.array([[[1.5, 2.0, 1.0, 3.0]]], "float32"))
    copy = inference_model(model)
    assert type(copy.get_layer("mixed")) is keras.layers.PReLU
    assert type(copy.get_layer("above")) is MaximumPReLU and copy.get_layer("above").form == "min"
    assert_same_outputs(model, copy, images((2, 8, 8, 4)))


def test_inference_copy_saves_and_loads(tmp_path):
    model = randomize_norms(toy())
    copy = inference_model(model)
    path = tmp_path / "copy.keras"
    copy.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded.get_layer("prelu")) is MaximumPReLU
    x = images()
    np.testing.assert_array_equal(np.asarray(reloaded(x, training=False)), np.asarray(copy(x, training=False)))


def test_single_slope_prelu_is_leaky_after_a_folded_norm_only():
    """After a folded batch norm a single-slope PReLU becomes one leaky ReLU (fused into the
    convolution); after a residual Add it stays a MaximumPReLU: TensorFlow 2.21's oneDNN fusion of
    Conv2D + BiasAdd + Add + LeakyRelu ignores the slope (computes 0.2), which the traced comparison
    below catches for these slopes."""
    inp = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv_a")(inp)
    a = BatchNormalization(name="bn_a")(a)
    a = keras.layers.PReLU(shared_axes=[1, 2, 3], name="after_bn")(a)
    b = keras.layers.Conv2D(4, 1, use_bias=False, name="conv_b")(a)
    b = BatchNormalization(name="bn_b")(b)
    s = keras.layers.Add(name="add")([b, a])
    s = keras.layers.PReLU(shared_axes=[1, 2, 3], name="after_add")(s)
    per_channel = keras.layers.Conv2D(4, 1, use_bias=False, name="conv_c")(s)
    per_channel = BatchNormalization(name="bn_c")(per_channel)
    per_channel = keras.layers.PReLU(shared_axes=[1, 2], name="per_channel")(per_channel)
    model = randomize_norms(keras.Model(inp, per_channel))
    model.get_layer("after_bn").alpha.assign(np.full((1, 1, 1), -0.3, "float32"))
    model.get_layer("after_add").alpha.assign(np.full((1, 1, 1), 0.6, "float32"))
    copy = inference_model(model)
    assert type(copy.get_layer("after_bn")) is LeakyPReLU
    assert type(copy.get_layer("after_add")) is MaximumPReLU
    assert type(copy.get_layer("per_channel")) is MaximumPReLU  # a leaky ReLU has one slope
    assert sorted(norms_in(copy)) == []
    assert_same_outputs(model, copy, images((3, 8, 8, 4)))


def _msconv_toy(grouped_conv="auto", strides=2):
    inp = keras.Input((9, 9, 3))  # an image, so the exporters take it
    x = keras.layers.Conv2D(64, 1, name="widen")(inp)
    x = MSConv(strides=strides, grouped_conv=grouped_conv, name="msconv")(x)
    model = randomize_norms(keras.Model(inp, x))
    layer = model.get_layer("msconv")
    for prefix, slope in zip(layer._prefixes(), (-0.4, 0.25, 1.6, 0.1, -0.05, 0.7)):
        layer._block(prefix)[2].alpha.assign(np.full((1, 1, 1), slope, "float32"))
    return model


@pytest.mark.parametrize("grouped_conv", ["split", "onednn", "native"])
@pytest.mark.parametrize("strides", [1, 2])
def test_msconv_inference_variant_is_msconv_in_inference(grouped_conv, strides):
    from keras_fr.layers.msconv import onednn_grouped_conv_available
    from keras_fr.layers.normalization import ChannelBias

    if grouped_conv == "onednn" and (keras.backend.backend() != "tensorflow"
                                     or not onednn_grouped_conv_available()):
        pytest.skip("TensorFlow's oneDNN grouped convolution is not available here")
    model = _msconv_toy(grouped_conv, strides)
    assert MSConv(name="unbuilt").inference_variant() is None
    copy = inference_model(model)
    variant = copy.get_layer("msconv")
    assert type(variant) is _MSConvForInference and variant.grouped_conv == grouped_conv
    inner = list(variant._flatten_layers(include_self=False))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in inner)
    assert sum(isinstance(layer, ChannelBias) for layer in inner) == 6
    assert sum(type(layer) is LeakyPReLU for layer in inner) == 6
    assert variant.inference_variant() is None and inference_model(copy) is copy  # nothing left to do
    assert_same_outputs(model, copy, images((3, 9, 9, 3)))


def test_msconv_inference_copy_saves_loads_and_exports(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from keras_fr.export import to_tflite

    model = _msconv_toy()
    copy = inference_model(model)
    path = tmp_path / "copy.keras"
    copy.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded.get_layer("msconv")) is _MSConvForInference
    x = images((3, 9, 9, 3))
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), copy.predict(x, verbose=0))
    # The exporters rebuild the variant with the same weights (and check the file against it).
    to_tflite(copy, tmp_path / "copy.tflite", verification_data=x)
    assert (tmp_path / "copy.tflite").stat().st_size > 0
