"""keras_fr's PReLU (Keras' values, a faster training step) against Keras' own PReLU and PyTorch's."""

import numpy as np
import pytest

import keras

from keras_fr.layers.activations import MaximumPReLU, PReLU, is_plain_prelu
from keras_fr.layers.export_hooks import LeakyPReLU

RNG = np.random.default_rng(7)


def _pair(shared_axes, channels=6):
    theirs = keras.layers.PReLU(shared_axes=shared_axes)
    ours = PReLU(shared_axes=shared_axes)
    for layer in (theirs, ours):
        layer.build((None, 5, 5, channels))
    alpha = RNG.uniform(-0.5, 1.5, tuple(theirs.alpha.shape)).astype("float32")
    theirs.set_weights([alpha])
    ours.set_weights([alpha])
    return theirs, ours


def _inputs():
    x = RNG.normal(size=(3, 5, 5, 6)).astype("float32")
    x[0, 0, 0, :] = 0.0  # exact zeros: where the two gradients' conventions differ
    return x


@pytest.mark.parametrize("shared_axes", [None, [1, 2], [1, 2, 3]])
def test_values_are_keras_bit_for_bit_in_training_and_inference(shared_axes):
    theirs, ours = _pair(shared_axes)
    x = _inputs()
    for training in (False, True):
        np.testing.assert_array_equal(np.asarray(ours(x, training=training)),
                                      np.asarray(theirs(x, training=training)))


@pytest.mark.parametrize("shared_axes", [[1, 2], [1, 2, 3]])  # per channel, one slope
def test_training_gradients_are_pytorchs(shared_axes):
    torch = pytest.importorskip("torch")
    import tensorflow as tf

    theirs, ours = _pair(shared_axes)
    x = tf.constant(_inputs())
    upstream = tf.constant(RNG.normal(size=x.shape).astype("float32"))
    grads = {}
    for name, layer in (("keras", theirs), ("ours", ours)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        grads[name] = [np.asarray(g) for g in tape.gradient(loss, [x, layer.alpha])]
    # PyTorch's prelu on the same numbers (NCHW, one slope per channel or one for all).
    alpha = np.asarray(ours.alpha).reshape(-1)
    xt = torch.tensor(np.transpose(np.asarray(x), (0, 3, 1, 2)), requires_grad=True)
    wt = torch.tensor(alpha if alpha.size > 1 else alpha[:1], requires_grad=True)
    (torch.nn.functional.prelu(xt, wt) * torch.tensor(np.transpose(np.asarray(upstream), (0, 3, 1, 2)))).sum().backward()
    want_x = np.transpose(xt.grad.numpy(), (0, 2, 3, 1))
    np.testing.assert_allclose(grads["ours"][0], want_x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads["ours"][1].reshape(-1), wt.grad.numpy(), rtol=1e-4, atol=1e-4)
    # Keras' own form agrees except at the exact zeros, where its input gradient is 0.
    nonzero = np.asarray(x) != 0
    np.testing.assert_allclose(grads["ours"][0][nonzero], grads["keras"][0][nonzero], rtol=1e-6, atol=1e-6)
    assert np.all(grads["keras"][0][~nonzero] == 0) and np.any(grads["ours"][0][~nonzero] != 0)
    np.testing.assert_allclose(grads["ours"][1], grads["keras"][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared_axes", [None, [1, 2], [1, 2, 3]])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_written_gradient_is_the_where_s_gradient_in_fewer_operations(shared_axes, policy):
    """TensorFlow: the hand-written gradient against automatic differentiation of the same ``where``
    (``PReLU.custom_gradient = False``): the same numbers, and fewer selects in the backward graph."""
    import tensorflow as tf

    _, ours = _pair(shared_axes)
    layer = PReLU.from_config(dict(ours.get_config(), dtype=policy))
    layer.build((None, 5, 5, 6))
    layer.set_weights(ours.get_weights())
    x = tf.constant(_inputs())
    upstream = tf.constant(RNG.normal(size=x.shape).astype("float32"))

    def gradients(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(tf.cast(layer(v, training=True), tf.float32) * upstream)
        return tape.gradient(loss, [v, layer.alpha])

    results, selects = [], []
    try:
        for written in (True, False):
            PReLU.custom_gradient = written
            results.append([np.asarray(g, np.float64) for g in gradients(x)])
            graph = tf.function(gradients).get_concrete_function(tf.TensorSpec(x.shape)).graph
            selects.append(sum(op.type == "SelectV2" for op in graph.get_operations()))
    finally:
        PReLU.custom_gradient = True
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * max(1.0, float(np.abs(b).max())))
    assert selects[0] < selects[1]


def test_training_traces_one_select_and_inference_keeps_keras_graph():
    import tensorflow as tf

    _, ours = _pair([1, 2])
    spec = tf.TensorSpec((None, 5, 5, 6))

    def op_types(training):
        graph = tf.function(lambda v: ours(v, training=training)).get_concrete_function(spec).graph
        return [op.type for op in graph.get_operations()]

    assert "SelectV2" in op_types(True) and "Relu" not in op_types(True)
    assert "SelectV2" not in op_types(False) and op_types(False).count("Relu") == 2  # Keras' relu(x) - a * relu(-x)


def test_serialization_and_what_counts_as_a_plain_prelu():
    _, ours = _pair([1, 2])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(restored) is PReLU and restored.get_config() == ours.get_config()
    assert is_plain_prelu(ours) and is_plain_prelu(keras.layers.PReLU())
    assert not is_plain_prelu(MaximumPReLU()) and not is_plain_prelu(keras.layers.ReLU())


@pytest.mark.parametrize("family", ["msconv", "iresnet", "lgaf"])
def test_networks_build_it_and_inference_copies_still_rewrite_it(family):
    from keras_fr.applications import IResNet, LGAFResNet, MSConvResNet26, inference_model

    model = {
        "msconv": lambda: MSConvResNet26(input_shape=(32, 32, 3)),
        "iresnet": lambda: IResNet((1, 1, 1, 1), include_top=False, input_shape=(32, 32, 3)),
        "lgaf": lambda: LGAFResNet((1, 1, 1, 1), embedding_size=16, num_heads=2)  # with its heads,
    }[family]()
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.PReLU)]
    assert layers and all(type(layer) is PReLU for layer in layers)
    copy = inference_model(model)
    top = [layer for layer in copy.layers if isinstance(layer, keras.layers.PReLU)]
    # Alphas 0.25 <= 1: the max form, or (one slope after a folded batch norm) a leaky ReLU.
    assert top and all(type(layer) in (MaximumPReLU, LeakyPReLU) for layer in top)
    assert any(type(layer) is MaximumPReLU for layer in top)
