"""keras_fr's Conv2D: its bfloat16 1x1 training step (a matrix product) against a float64 NumPy
convolution and Keras' own layer, the cases it leaves to Keras, and the networks that build it."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from keras_fr.layers.convolution import Conv2D


def bfloat16(values):
    """``values`` rounded to bfloat16 (as the layer's inputs and kernel are), back in float64."""
    return np.asarray(tf.cast(tf.cast(values, tf.bfloat16), tf.float64))


def make_pair(filters, strides, padding, use_bias, activation, channels, seed, dtype="mixed_bfloat16"):
    """keras_fr's layer and Keras' with the same configuration and weights."""
    kwargs = dict(strides=strides, padding=padding, use_bias=use_bias, activation=activation, dtype=dtype)
    ours, theirs = Conv2D(filters, 1, **kwargs), keras.layers.Conv2D(filters, 1, **kwargs)
    for layer in (ours, theirs):
        layer.build((None, None, None, channels))
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((1, 1, channels, filters)).astype("float32") * 0.3]
    if use_bias:
        weights.append(rng.standard_normal(filters).astype("float32"))
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


def training_step(layer, x, upstream):
    """Output and d(sum(y * upstream)) / d(x, kernel[, bias]) of one traced training call."""
    variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
        return (y,) + tuple(tape.gradient(loss, [x] + [v.value for v in variables]))

    return [np.asarray(tf.cast(t, "float64")) for t in step(tf.constant(x))]


def numpy_step(x, upstream, kernel, bias, strides, tanh):
    """The same step in float64 on bfloat16-rounded operands: a 1x1 convolution samples every
    ``strides``-th row and column (it never pads)."""
    x, kernel, upstream = bfloat16(x), bfloat16(kernel[0, 0]), bfloat16(upstream)
    sampled = x[:, ::strides, ::strides, :]
    y = np.einsum("nhwc,cf->nhwf", sampled, kernel)
    if bias is not None:
        y = y + bfloat16(bias)
    if tanh:  # smooth, so bfloat16 rounding cannot flip a branch as it could at a ReLU's kink
        y = np.tanh(y)
    dy = upstream * (1 - y**2) if tanh else upstream
    dx = np.zeros_like(x)
    dx[:, ::strides, ::strides, :] = np.einsum("nhwf,cf->nhwc", dy, kernel)
    grads = [dx, np.einsum("nhwc,nhwf->cf", sampled, dy)[None, None]]
    if bias is not None:
        grads.append(dy.sum((0, 1, 2)))
    return [y] + grads


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("strides,padding,size", [
    (1, "valid", 6), (2, "valid", 6), (2, "valid", 7), (2, "same", 7), (3, "same", 8), ((1, 1), "same", 5),
])
@pytest.mark.parametrize("use_bias,activation", [(False, None), (True, "tanh")])
def test_bfloat16_training_step_matches_float64_numpy(strides, padding, size, use_bias, activation):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, size, size, 16)).astype("float32")
    ours, _ = make_pair(8, strides, padding, use_bias, activation, 16, seed=4)
    step = int(np.atleast_1d(strides)[0])
    upstream = rng.standard_normal((3, -(-size // step), -(-size // step), 8)).astype("float32")
    weights = ours.get_weights()
    expected = numpy_step(x, upstream, weights[0], weights[1] if use_bias else None, step, activation == "tanh")
    actual = training_step(ours, x, upstream)
    assert len(actual) == len(expected)
    for name, a, e in zip(["output", "input gradient", "kernel gradient", "bias gradient"], actual, expected):
        assert a.shape == e.shape, name
        # bfloat16 keeps 8 significant bits; the gradients are sums of terms rounded to them (and,
        # with tanh, of its derivative computed in bfloat16): a few parts in a hundred of the largest.
        assert relative_error(a, e) < 3e-2, name


@pytest.mark.parametrize("strides", [1, 2])
def test_same_step_as_keras_conv2d(strides):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 9, 9, 32)).astype("float32")
    ours, theirs = make_pair(24, strides, "valid", True, None, 32, seed=6)
    out = -(-9 // strides)  # a 1x1 kernel at "valid": ceil(9 / strides) rows and columns
    upstream = rng.standard_normal((4, out, out, 24)).astype("float32")
    for a, b in zip(training_step(ours, x, upstream), training_step(theirs, x, upstream)):
        assert relative_error(a, b) < 1.5e-2


def op_types(layer, channels, training, dtype="float32"):
    fn = tf.function(lambda v: layer(v, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec((None, None, None, channels), dtype)).graph
    return {op.type for op in graph.get_operations()}


def test_bfloat16_training_is_a_matrix_product_and_inference_is_keras_graph():
    ours, theirs = make_pair(8, 2, "same", False, None, 4, seed=7)
    training = op_types(ours, 4, True)
    assert "MatMul" in training and "Conv2D" not in training
    inference = op_types(ours, 4, False)
    assert "Conv2D" in inference and "MatMul" not in inference
    assert inference == op_types(theirs, 4, False)  # exporters and converters see Keras' graph


@pytest.mark.parametrize("case", ["float32", "3x3", "grouped", "dilated", "switched_off"])
def test_cases_it_leaves_to_keras(case, monkeypatch):
    kwargs = dict(dtype="float32" if case == "float32" else "mixed_bfloat16")
    kernel_size = 3 if case == "3x3" else 1
    if case == "grouped":
        kwargs["groups"] = 2
    if case == "dilated":
        kwargs["dilation_rate"] = 2
    if case == "switched_off":
        monkeypatch.setattr(Conv2D, "matmul_training", False)
    layer, theirs = Conv2D(8, kernel_size, **kwargs), keras.layers.Conv2D(8, kernel_size, **kwargs)
    for each in (layer, theirs):
        each.build((None, None, None, 4))
    theirs.set_weights(layer.get_weights())
    ops_seen = op_types(layer, 4, True)
    # The graph Keras' layer traces (grouped: its own function around the convolution).
    assert "MatMul" not in ops_seen and ops_seen == op_types(theirs, 4, True)
    x = np.random.default_rng(8).standard_normal((2, 9, 9, 4)).astype("float32")
    np.testing.assert_array_equal(layer(x, training=True), theirs(x, training=True))


def test_unknown_batch_and_spatial_sizes_keep_the_static_channels():
    layer, _ = make_pair(6, 2, "valid", True, None, 4, seed=9)
    fn = tf.function(lambda v: layer(v, training=True))
    concrete = fn.get_concrete_function(tf.TensorSpec((None, None, None, 4), "float32"))
    assert concrete.structured_outputs.shape.as_list() == [None, None, None, 6]
    assert tuple(fn(tf.zeros((3, 5, 7, 4))).shape) == (3, 3, 4, 6)


def test_config_round_trip_and_saved_model(tmp_path):
    layer = Conv2D(8, 1, strides=2, use_bias=False, name="pointwise")
    assert Conv2D.from_config(layer.get_config()).get_config() == layer.get_config()
    assert keras.saving.get_registered_name(Conv2D) == "keras_fr>Conv2D"
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, Conv2D(4, 1, name="pointwise")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("pointwise")) is Conv2D
    x = np.random.default_rng(10).standard_normal((2, 6, 6, 3)).astype("float32")
    np.testing.assert_array_equal(loaded(x), model(x))


def test_msconv_networks_build_their_1x1_convolutions_from_it():
    from keras_fr.applications import MSConvResNet26
    from keras_fr.layers.traversal import walk_layers

    model = MSConvResNet26(input_shape=(32, 32, 3))
    pointwise = [layer for layer in walk_layers(model)
                 if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)]
    # Per unit: reduce, expand (and a shortcut); inside MSConv: fc, fcs_0, fcs_1, fc_d.
    assert len(pointwise) > 40
    assert [layer.name for layer in pointwise if type(layer) is not Conv2D] == []


def test_msconv_attention_and_fusion_convolutions_take_the_matrix_product_in_bfloat16_training():
    """MSConv calls its 1x1 convolutions without passing ``training``: Keras' call context must hand
    them the outer call's, so that a bfloat16 training step reaches the matrix product."""
    from keras_fr.layers.msconv import MSConv

    layer = MSConv(groups=4, min_dim=8, grouped_conv="split", dtype="mixed_bfloat16")
    layer.build((None, 8, 8, 32))

    def matmuls(training):
        fn = tf.function(lambda v: layer(v, training=training))
        graph = fn.get_concrete_function(tf.TensorSpec((None, 8, 8, 32), "float32")).graph
        return sum(op.type == "MatMul" for op in graph.get_operations())

    assert matmuls(True) == 4  # fc, fcs_0, fcs_1, fc_d
    assert matmuls(False) == 0
