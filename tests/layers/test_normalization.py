"""keras_fr's BatchNormalization: its fused training step against a float64 NumPy batch norm (output,
gradients, moving statistics), against Keras' own layer, and where it must stay Keras' layer."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from keras_fr.layers.normalization import BatchNormalization

EPSILON = 1e-5
MOMENTUM = 0.9


def make_layer(shape, seed, cls=BatchNormalization, **kwargs):
    layer = cls(epsilon=EPSILON, momentum=MOMENTUM, **kwargs)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    layer.set_weights([
        rng.uniform(0.5, 2.0, channels).astype("float32"),  # gamma
        rng.uniform(-1.0, 1.0, channels).astype("float32"),  # beta
        rng.uniform(-1.0, 1.0, channels).astype("float32"),  # moving mean
        rng.uniform(0.5, 2.0, channels).astype("float32"),  # moving variance
    ])
    return layer


def numpy_training_step(x, upstream, gamma, beta, moving_mean, moving_variance):
    """Batch norm in training mode, float64: output, d(sum(y * upstream))/d(x, gamma, beta), new
    moving statistics (population variance, as Keras)."""
    x = x.astype("float64")
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    mean = x.mean(axes)
    variance = ((x - mean) ** 2).mean(axes)
    inv = 1.0 / np.sqrt(variance + EPSILON)
    x_hat = (x - mean) * inv
    y = x_hat * gamma + beta
    g_hat = upstream * gamma
    dx = inv / count * (count * g_hat - g_hat.sum(axes) - x_hat * (g_hat * x_hat).sum(axes))
    dgamma = (upstream * x_hat).sum(axes)
    dbeta = upstream.sum(axes)
    new_mean = MOMENTUM * moving_mean + (1 - MOMENTUM) * mean
    new_variance = MOMENTUM * moving_variance + (1 - MOMENTUM) * variance
    return y, dx, dgamma, dbeta, new_mean, new_variance


def run_training_step(layer, x, upstream, traced):
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
        return (y,) + tuple(tape.gradient(loss, [x, layer.gamma.value, layer.beta.value]))

    fn = tf.function(step) if traced else step
    return [np.asarray(t, "float64") for t in fn(tf.constant(x))]


@pytest.mark.parametrize("shape", [(4, 5, 6, 8), (6, 8), (1, 8), (1, 1, 1, 8)])
@pytest.mark.parametrize("traced", [False, True])
def test_training_step_matches_float64_numpy(shape, traced):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3.0 + 1.5).astype("float32")
    upstream = rng.standard_normal(shape).astype("float32")
    layer = make_layer(shape, seed=2)
    gamma, beta, moving_mean, moving_variance = [w.astype("float64") for w in layer.get_weights()]
    expected = numpy_training_step(x, upstream, gamma, beta, moving_mean, moving_variance)
    y, dx, dgamma, dbeta = run_training_step(layer, x, upstream, traced)
    np.testing.assert_allclose(y, expected[0], atol=1e-5)
    np.testing.assert_allclose(dx, expected[1], atol=1e-5)
    np.testing.assert_allclose(dgamma, expected[2], atol=1e-4)
    np.testing.assert_allclose(dbeta, expected[3], atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), expected[4], atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), expected[5], atol=1e-5)


def test_bfloat16_training_step_is_normalized_in_float32():
    shape = (8, 7, 7, 16)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 4.0 + 2.0).astype("float32")
    x_bf16 = np.asarray(tf.cast(tf.cast(x, "bfloat16"), "float32"))  # what the layer receives
    upstream = rng.standard_normal(shape).astype("float32")
    layer = make_layer(shape, seed=4, dtype="mixed_bfloat16")
    weights = [w.astype("float64") for w in layer.get_weights()]
    expected = numpy_training_step(x_bf16, upstream, *weights)
    y = layer(tf.constant(x_bf16, "bfloat16"), training=True)
    assert y.dtype == tf.bfloat16
    assert layer.moving_variance.dtype == "float32"
    # One bfloat16 rounding of the output (8-bit significand); the statistics stay float32.
    np.testing.assert_allclose(np.asarray(tf.cast(y, "float32")), expected[0], rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(layer.moving_mean.numpy(), expected[4], atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), expected[5], rtol=1e-5)


def test_same_step_as_keras_batch_normalization():
    shape = (4, 6, 6, 8)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype("float32") * 2.0
    upstream = rng.standard_normal(shape).astype("float32")
    ours = make_layer(shape, seed=6)
    theirs = make_layer(shape, seed=6, cls=keras.layers.BatchNormalization)
    for a, b in zip(run_training_step(ours, x, upstream, True), run_training_step(theirs, x, upstream, True)):
        np.testing.assert_allclose(a, b, atol=2e-5)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def graph_ops(layer, shape, training):
    fn = tf.function(lambda x: layer(x, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, "float32")).graph
    return {op.type for op in graph.get_operations()}


def test_training_graph_uses_the_fused_kernel_and_inference_graph_does_not():
    shape = (2, 5, 5, 8)
    layer = make_layer(shape, seed=7)
    assert "FusedBatchNormV3" in graph_ops(layer, shape, training=True)
    # Inference is Keras' graph: what exporters and converted checkpoints see is unchanged.
    inference = graph_ops(layer, shape, training=False)
    assert not any(op.startswith("FusedBatchNorm") for op in inference)
    keras_inference = graph_ops(make_layer(shape, seed=7, cls=keras.layers.BatchNormalization), shape, False)
    assert inference == keras_inference


def test_fused_training_can_be_switched_off(monkeypatch):
    shape = (2, 5, 5, 8)
    layer = make_layer(shape, seed=12)
    monkeypatch.setattr(BatchNormalization, "fused_training", False)
    assert not any(op.startswith("FusedBatchNorm") for op in graph_ops(layer, shape, training=True))


@pytest.mark.parametrize("case", ["frozen", "synchronized", "renorm", "rank3"])
def test_cases_it_leaves_to_keras(case):
    shape = (2, 5, 8) if case == "rank3" else (2, 5, 5, 8)
    if case == "renorm":  # renorm has extra weights: built without make_layer's four
        layer = BatchNormalization(epsilon=EPSILON, momentum=MOMENTUM, renorm=True)
        layer.build(shape)
    else:
        layer = make_layer(shape, seed=8, synchronized=case == "synchronized")
    if case == "frozen":
        layer.trainable = False
    assert not any(op.startswith("FusedBatchNorm") for op in graph_ops(layer, shape, training=True))
    if case == "frozen":  # a frozen layer normalizes with its moving statistics and keeps them
        before = [w.copy() for w in layer.get_weights()]
        x = np.random.default_rng(9).standard_normal(shape).astype("float32")
        y = np.asarray(layer(x, training=True))
        gamma, beta, mean, variance = before
        np.testing.assert_allclose(y, (x - mean) / np.sqrt(variance + EPSILON) * gamma + beta, atol=1e-5)
        for a, b in zip(before, layer.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_mask_is_left_to_keras():
    shape = (2, 5, 8)
    x = np.random.default_rng(10).standard_normal(shape).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
    ours = make_layer(shape, seed=11)
    theirs = make_layer(shape, seed=11, cls=keras.layers.BatchNormalization)
    np.testing.assert_allclose(ours(x, training=True, mask=mask), theirs(x, training=True, mask=mask), atol=1e-6)


def test_config_round_trip_and_saved_model(tmp_path):
    layer = BatchNormalization(epsilon=EPSILON, momentum=MOMENTUM, center=False, name="bn")
    again = BatchNormalization.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert keras.saving.get_registered_name(BatchNormalization) == "keras_fr>BatchNormalization"
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, BatchNormalization(name="bn")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("bn")) is BatchNormalization


@pytest.mark.parametrize("name", ["iresnet18", "msconv_resnet26", "lgaf_resnet50"])
def test_every_network_builds_its_batch_norms_from_it(name):
    from keras_fr.applications import get_model
    from keras_fr.layers.traversal import walk_layers

    model = get_model(name, weights=None)
    norms = [layer for layer in walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 20
    assert [layer.name for layer in norms if not isinstance(layer, BatchNormalization)] == []
