"""The MSConv layer against an independent computation of the reference block (docs/reference.md section 1).

The reference forward is re-implemented here in float64 NumPy from the written description, with a
direct strided, dilated, grouped convolution (explicit symmetric padding, one multiply-add per kernel
tap), and, where PyTorch is installed, with PyTorch's own ``conv2d(stride, dilation, groups)``, which
is exactly what the converted checkpoints were trained with.
"""

import numpy as np
import pytest

import keras

from keras_fr.layers.msconv import MSConv, PaddedMaxPooling2D

RNG = np.random.default_rng(1234)

SUB_BLOCKS = ("convs_0", "convs_1", "fc", "fcs_0", "fcs_1", "fc_d")


def _randomize(layer, rng=RNG):
    """Give every weight a non-trivial value (BN statistics included), so every term matters."""
    values = []
    for w in layer.weights:
        shape = tuple(w.shape)
        leaf = w.path.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = np.prod(shape[:-1])
            v = rng.normal(0, 1.0 / np.sqrt(fan_in), shape)
        elif leaf == "gamma":
            v = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("beta", "moving_mean"):
            v = rng.normal(0, 0.2, shape)
        elif leaf == "moving_variance":
            v = rng.uniform(0.5, 2.0, shape)
        elif leaf == "alpha":
            v = rng.uniform(0.05, 0.5, shape)
        else:
            raise AssertionError(f"unexpected weight {w.path}")
        values.append(v.astype("float32"))
    layer.set_weights(values)


def _weights_by_block(layer):
    """{"convs_0": {"kernel": ..., "gamma": ..., ..., "alpha": ...}, ...} as float64."""
    out = {}
    for w in layer.weights:
        parts = w.path.split("/")
        sub, leaf = parts[-2], parts[-1]
        block = sub.rsplit("_", 1)[0]
        out.setdefault(block, {})[leaf] = np.asarray(w.numpy(), dtype=np.float64)
    return out


def numpy_conv(x, kernel, stride, dilation, groups, pad):
    """Direct definition: out[i, j] = sum_k xpad[s*i + d*ki, s*j + d*kj] . W[ki, kj] per group."""
    kh, kw, cin_g, cout = kernel.shape
    n, h, w, cin = x.shape
    assert cin == cin_g * groups
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    cout_g = cout // groups
    out = np.zeros((n, ho, wo, cout))
    for g in range(groups):
        xs = slice(g * cin_g, (g + 1) * cin_g)
        os_ = slice(g * cout_g, (g + 1) * cout_g)
        for ki in range(kh):
            for kj in range(kw):
                r0, c0 = dilation * ki, dilation * kj
                patch = xp[:, r0 : r0 + stride * (ho - 1) + 1 : stride, c0 : c0 + stride * (wo - 1) + 1 : stride, xs]
                out[..., os_] += patch @ kernel[ki, kj][:, os_]
    return out


def torch_conv(x, kernel, stride, dilation, groups, pad):
    torch = pytest.importorskip("torch")
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    wt = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    y = torch.nn.functional.conv2d(xt, wt, stride=stride, padding=pad, dilation=dilation, groups=groups)
    return y.numpy().transpose(0, 2, 3, 1)


def reference_msconv(x, weights, stride, dilations, groups, squeeze="multiply", conv=numpy_conv):
    """The reference MSConv forward in inference mode, written from docs/reference.md section 1."""

    def bn(y, p):
        return (y - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-5) * p["gamma"] + p["beta"]

    def prelu(y, p):
        alpha = p["alpha"].reshape(-1)
        assert alpha.size == 1  # PyTorch PReLU(): one parameter
        return np.where(y >= 0, y, alpha[0] * y)

    def cbp(y, name, **conv_args):
        p = weights[name]
        return prelu(bn(conv(y, p["kernel"], **conv_args), p), p)

    x = x.astype(np.float64)
    u1 = cbp(x, "convs_0", stride=stride, dilation=dilations[0], groups=groups, pad=dilations[0])
    u2 = cbp(x, "convs_1", stride=stride, dilation=dilations[1], groups=groups, pad=dilations[1])
    u3 = u1 * u2 if squeeze == "multiply" else u1 + u2
    s = u3.mean(axis=(1, 2), keepdims=True)
    one = dict(stride=1, dilation=1, groups=1, pad=0)
    z = cbp(s, "fc", **one)
    a = cbp(z, "fcs_0", **one)
    b = cbp(z, "fcs_1", **one)
    c = 1.0 / (1.0 + np.exp(-(a - b + 1e-6)))
    v = (u1 - u2) * c + u2
    return cbp(v, "fc_d", **one)


def _make(x_shape, **kwargs):
    layer = MSConv(name="msconv", **kwargs)
    layer.build(x_shape)
    _randomize(layer)
    return layer


CASES = [
    # (strides, dilations, squeeze, spatial size)
    (1, (1, 2), "multiply", 9),
    (2, (1, 2), "multiply", 10),  # the reference's strided block: stride 2 with dilation 2
    (2, (1, 2), "multiply", 9),  # odd size: PyTorch's floor arithmetic
    (2, (2, 3), "multiply", 11),  # K5 + K7 (Table 5): stride 2, dilation 3 (not a multiple)
    (2, (2, 1), "add", 8),  # K5 + K3, MSConv* (Table 6)
    (1, (1, 1), "add", 7),  # K3 + K3
]


@pytest.mark.parametrize("strides,dilations,squeeze,size", CASES)
def test_matches_direct_computation(strides, dilations, squeeze, size):
    x = RNG.normal(size=(2, size, size, 64)).astype("float32")
    layer = _make(x.shape, strides=strides, dilations=dilations, squeeze=squeeze)
    expected = reference_msconv(x, _weights_by_block(layer), strides, dilations, 32, squeeze)
    out = np.asarray(layer(x, training=False))
    assert out.shape == expected.shape == (2, -(-size // strides), -(-size // strides), 64)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides,dilations,size", [(2, (1, 2), 10), (2, (1, 2), 7), (2, (2, 3), 9)])
def test_matches_pytorch_strided_dilated_conv(strides, dilations, size):
    pytest.importorskip("torch")
    x = RNG.normal(size=(2, size, size, 64)).astype("float32")
    layer = _make(x.shape, strides=strides, dilations=dilations)
    expected = reference_msconv(x, _weights_by_block(layer), strides, dilations, 32, conv=torch_conv)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-4)


def test_numpy_reference_agrees_with_pytorch_conv():
    """The two independent convolutions agree with each other (guards the test's own reference)."""
    pytest.importorskip("torch")
    x = RNG.normal(size=(1, 9, 9, 8))
    k = RNG.normal(size=(3, 3, 2, 8))
    for stride, dilation in ((1, 1), (2, 2), (2, 3), (1, 2)):
        np.testing.assert_allclose(
            numpy_conv(x, k, stride, dilation, 4, dilation),
            torch_conv(x, k, stride, dilation, 4, dilation),
            rtol=1e-10,
            atol=1e-10,
        )


def test_filters_and_min_dim():
    """Changing the channel count: F = filters, attention width d = max(F // r, L)."""
    x = RNG.normal(size=(1, 6, 6, 64)).astype("float32")
    layer = _make(x.shape, filters=128, reduction=16, min_dim=4)
    fc_kernel = [w for w in layer.weights if w.path.endswith("/fc_0/kernel")][0]
    assert tuple(fc_kernel.shape) == (1, 1, 128, 8)
    conv_kernel = [w for w in layer.weights if w.path.endswith("/convs_1_0/kernel")][0]
    assert tuple(conv_kernel.shape) == (3, 3, 2, 128)
    expected = reference_msconv(x, _weights_by_block(layer), 1, (1, 2), 32)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-4)


def test_sublayer_names_follow_pytorch_paths():
    layer = _make((1, 8, 8, 64))
    paths = {w.path for w in layer.weights}
    expected = set()
    for block in SUB_BLOCKS:
        expected |= {
            f"msconv/{block}_0/kernel",
            f"msconv/{block}_1/gamma",
            f"msconv/{block}_1/beta",
            f"msconv/{block}_1/moving_mean",
            f"msconv/{block}_1/moving_variance",
            f"msconv/{block}_2/alpha",
        }
    assert paths == expected
    # Reference sizes for C = 64: d = max(64 // 16, 32) = 32.
    shapes = {w.path: tuple(w.shape) for w in layer.weights}
    assert shapes["msconv/convs_0_0/kernel"] == (3, 3, 2, 64)
    assert shapes["msconv/fc_0/kernel"] == (1, 1, 64, 32)
    assert shapes["msconv/fcs_1_0/kernel"] == (1, 1, 32, 64)
    assert shapes["msconv/fc_d_0/kernel"] == (1, 1, 64, 64)


def test_every_prelu_has_one_parameter():
    layer = _make((1, 8, 8, 64))
    alphas = [w for w in layer.weights if w.path.endswith("/alpha")]
    assert len(alphas) == 6
    assert all(int(np.prod(w.shape)) == 1 for w in alphas)
    # And it is one slope for every channel and position: negative inputs scale uniformly.
    prelu = layer.fc_d_2
    prelu.set_weights([np.full(prelu.weights[0].shape, 0.3, "float32")])
    y = np.asarray(prelu(-np.ones((2, 3, 3, 64), "float32")))
    np.testing.assert_allclose(y, -0.3, rtol=0, atol=1e-7)


@pytest.mark.parametrize("strides,dilations", [(1, (1, 2)), (2, (1, 2)), (2, (2, 3))])
def test_split_grouped_conv_equals_native(strides, dilations):
    x = RNG.normal(size=(2, 9, 9, 64)).astype("float32")
    native = _make(x.shape, strides=strides, dilations=dilations, grouped_conv="native")
    split = MSConv(strides=strides, dilations=dilations, grouped_conv="split", name="msconv")
    split.build(x.shape)
    assert [tuple(w.shape) for w in split.weights] == [tuple(w.shape) for w in native.weights]
    assert [w.path for w in split.weights] == [w.path for w in native.weights]
    split.set_weights(native.get_weights())
    np.testing.assert_allclose(np.asarray(split(x)), np.asarray(native(x)), rtol=1e-5, atol=1e-5)
    # Both agree with the reference, not merely with each other.
    expected = reference_msconv(x, _weights_by_block(native), strides, dilations, 32)
    np.testing.assert_allclose(np.asarray(split(x)), expected, rtol=1e-4, atol=1e-4)


def test_get_config_round_trip():
    x = RNG.normal(size=(1, 8, 8, 64)).astype("float32")
    layer = _make(
        x.shape, strides=2, groups=16, reduction=8, min_dim=16, dilations=(2, 3),
        squeeze="add", grouped_conv="split",
    )
    config = layer.get_config()
    for key, value in dict(
        strides=2, groups=16, reduction=8, min_dim=16, dilations=[2, 3], squeeze="add",
        grouped_conv="split", filters=None,
    ).items():
        assert config[key] == value, key
    clone = MSConv.from_config(config)
    assert clone.get_config() == config
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))
    # Through Keras' own (de)serialization by registered name.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, MSConv) and restored.get_config() == config


def test_defaults_are_the_reference():
    config = MSConv().get_config()
    assert config["groups"] == 32 and config["reduction"] == 16 and config["min_dim"] == 32
    assert config["dilations"] == [1, 2] and config["strides"] == 1
    assert config["squeeze"] == "multiply" and config["grouped_conv"] == "auto"


def test_auto_grouped_conv_resolves_by_backend_and_device():
    import tensorflow as tf

    from keras_fr.layers.msconv import onednn_grouped_conv_available, resolve_grouped_conv

    for mode in ("native", "split", "onednn"):
        assert resolve_grouped_conv(mode) == mode
    on_tf_cpu = keras.backend.backend() == "tensorflow" and not tf.config.list_logical_devices("GPU")
    expected = ("onednn" if onednn_grouped_conv_available() else "split") if on_tf_cpu else "native"
    assert resolve_grouped_conv("auto") == expected
    with pytest.raises(ValueError, match="`grouped_conv` must be 'auto', 'native', 'split' or 'onednn'; got 'fast'"):
        resolve_grouped_conv("fast")


def test_onednn_availability_is_probed_and_auto_falls_back_to_split(monkeypatch):
    """Where TensorFlow cannot run the grouped convolution's gradients (oneDNN off), ``"auto"`` is
    ``"split"`` and an explicit ``"onednn"`` says why; the probe is made once per dtype."""
    import subprocess
    import sys

    from keras_fr.layers import msconv

    script = ("from keras_fr.layers import msconv as m; "
              "print(m.onednn_grouped_conv_available(), m.resolve_grouped_conv('auto'))")
    env = dict(__import__("os").environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "split"]

    calls = []

    def failing(dtype, strided_dilation=False):
        calls.append(dtype)
        raise RuntimeError("no kernel")

    monkeypatch.setattr(msconv, "_probe_onednn_grouped_conv", failing)
    msconv.onednn_grouped_conv_available.cache_clear()
    try:
        assert not msconv.onednn_grouped_conv_available("float32")
        assert not msconv.onednn_grouped_conv_available("float32") and calls == ["float32"]  # cached
        if keras.backend.backend() == "tensorflow" and not msconv._tensorflow_sees_gpu():
            assert msconv.resolve_grouped_conv("auto", "bfloat16") == "split" and calls == ["float32", "bfloat16"]
        layer = MSConv(grouped_conv="onednn", name="needs_onednn")
        with pytest.raises(RuntimeError, match="needs_onednn.*grouped_conv='onednn' needs TensorFlow's oneDNN grouped "
                                               "convolution in float32.*use grouped_conv='split'"):
            layer(np.zeros((1, 6, 6, 32), "float32"))
    finally:
        msconv.onednn_grouped_conv_available.cache_clear()


@pytest.mark.parametrize("strides,dilations", [(1, (1, 2)), (2, (1, 2)), (2, (2, 3)), (3, (2, 1))])
def test_onednn_grouped_conv_equals_split_forward_and_gradients(strides, dilations):
    import tensorflow as tf

    from keras_fr.layers.msconv import onednn_grouped_conv_available

    if keras.backend.backend() != "tensorflow" or not onednn_grouped_conv_available():
        pytest.skip("TensorFlow's oneDNN grouped convolution is not available here")
    x = tf.constant(RNG.normal(size=(2, 11, 11, 64)).astype("float32"))
    split = _make(x.shape, strides=strides, dilations=dilations, grouped_conv="split")
    onednn = MSConv(strides=strides, dilations=dilations, grouped_conv="onednn", name="msconv")
    onednn.build(x.shape)
    onednn.set_weights(split.get_weights())
    assert not onednn.supports_jit and split.supports_jit  # XLA would not run oneDNN's kernel
    results = []
    for layer in (split, onednn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.cos(y))
        grads = tape.gradient(loss, [x, layer.convs_0_0.kernel, layer.convs_1_0.kernel])
        results.append([y, *grads])
    for a, b in zip(*results):
        scale = max(float(np.max(np.abs(b))), 1e-6)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5 * scale)
    # One Conv2D per 3x3 branch (plus the four 1x1 convolutions) in the traced graph.
    graph = tf.function(lambda v: onednn(v, training=False)).get_concrete_function(tf.TensorSpec(x.shape)).graph
    assert sum(op.type == "Conv2D" for op in graph.get_operations()) == 2 + 4
    if strides > 1 and max(dilations) > 1 and onednn_grouped_conv_available("float32", strided_dilation=True):
        # In inference oneDNN takes the stride and the dilation together: nothing sliced before or
        # after, and the same outputs; training keeps the slice (oneDNN's input gradient is slow).
        assert not any(op.type == "StridedSlice" for op in graph.get_operations())
        np.testing.assert_allclose(np.asarray(onednn(x, training=False)), np.asarray(split(x, training=False)),
                                   rtol=0, atol=1e-5 * float(np.max(np.abs(np.asarray(split(x, training=False))))))
        trained = tf.function(lambda v: onednn(v, training=True)).get_concrete_function(tf.TensorSpec(x.shape)).graph
        assert any(op.type == "StridedSlice" for op in trained.get_operations())


def test_onednn_grouped_conv_in_mixed_bfloat16():
    import tensorflow as tf

    from keras_fr.layers.msconv import onednn_grouped_conv_available

    if keras.backend.backend() != "tensorflow" or not onednn_grouped_conv_available("bfloat16"):
        pytest.skip("TensorFlow's oneDNN grouped convolution in bfloat16 is not available here")
    x = tf.constant(RNG.normal(size=(2, 9, 9, 64)).astype("float32"))
    reference = _make(x.shape, strides=2, grouped_conv="split")
    want = np.asarray(reference(x, training=False))
    layer = MSConv(strides=2, grouped_conv="onednn", dtype="mixed_bfloat16", name="msconv")
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    got = np.asarray(tf.cast(layer(x, training=False), tf.float32))
    cosine = np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want)
    assert got.dtype == np.float32 and cosine > 0.999


def test_auto_grouped_conv_trains_like_native():
    """Same outputs and the same gradients as the native grouped convolution (weights shared)."""
    import tensorflow as tf

    x = tf.constant(RNG.normal(size=(2, 9, 9, 64)).astype("float32"))
    native = _make(x.shape, strides=2, grouped_conv="native")
    auto = MSConv(strides=2, name="msconv")
    auto.build(x.shape)
    auto.set_weights(native.get_weights())
    outputs, grads = [], []
    for layer in (native, auto):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.square(y))
        outputs.append(np.asarray(y))
        grads.append([np.asarray(g) for g in tape.gradient(loss, layer.trainable_weights)])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    assert len(grads[0]) == len(grads[1]) > 0
    for g_native, g_auto in zip(*grads):
        scale = max(float(np.max(np.abs(g_native))), 1e-6)
        np.testing.assert_allclose(g_auto, g_native, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(squeeze="sum"), "squeeze"),
        (dict(grouped_conv="loop"), "grouped_conv"),
        (dict(dilations=(1, 2, 3)), "dilations"),
        (dict(dilations=(0, 2)), "dilations"),
        (dict(strides=0), "strides"),
        (dict(strides=(1, 2)), "strides"),
        (dict(groups=0), "groups"),
        (dict(reduction=1.5), "reduction"),
        (dict(filters=-4), "filters"),
    ],
)
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MSConv(**kwargs)


def test_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="groups"):
        MSConv()(np.zeros((1, 8, 8, 48), "float32"))


def _numpy_maxpool_neg_inf(x, k, s, p):
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
    ho = (x.shape[1] + 2 * p - k) // s + 1
    wo = (x.shape[2] + 2 * p - k) // s + 1
    out = np.empty((x.shape[0], ho, wo, x.shape[3]))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j] = xp[:, i * s : i * s + k, j * s : j * s + k].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("size", [8, 9])
def test_padded_max_pool_pads_with_minus_infinity(size):
    # Strictly negative activations: zero padding would put 0 on every border window.
    x = -RNG.uniform(0.1, 2.0, size=(2, size, size, 3)).astype("float32")
    out = np.asarray(PaddedMaxPooling2D(3, strides=2, padding=1)(x))
    expected = _numpy_maxpool_neg_inf(x, 3, 2, 1)
    np.testing.assert_array_equal(out, expected.astype("float32"))
    assert (out < 0).all()
    # And it is the PyTorch op itself where PyTorch is available.
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 3, 2, 1)
    np.testing.assert_array_equal(out, t.numpy().transpose(0, 2, 3, 1))


def test_padded_max_pool_config_and_bad_padding():
    pool = PaddedMaxPooling2D(3, strides=2, padding=1, name="maxpool")
    clone = PaddedMaxPooling2D.from_config(pool.get_config())
    assert clone.get_config() == pool.get_config()
    with pytest.raises(ValueError, match="padding"):
        PaddedMaxPooling2D(3, padding=2)


def test_training_updates_batchnorm_with_pytorch_momentum():
    """training=True normalizes with batch statistics; moving mean = 0.9 * old + 0.1 * batch mean
    (PyTorch momentum 0.1)."""
    x = RNG.normal(size=(4, 8, 8, 64)).astype("float32")
    layer = _make(x.shape, strides=2)
    before = _weights_by_block(layer)
    layer(x, training=True)
    branch = numpy_conv(x.astype(np.float64), before["convs_1"]["kernel"], 2, 2, 32, 2)
    expected = 0.9 * before["convs_1"]["moving_mean"] + 0.1 * branch.mean(axis=(0, 1, 2))
    got = [w for w in layer.weights if w.path.endswith("/convs_1_1/moving_mean")][0]
    np.testing.assert_allclose(np.asarray(got.numpy()), expected, rtol=1e-4, atol=1e-5)


def test_split_packs_narrow_groups_into_block_diagonal_convolutions_with_the_same_outputs_and_gradients():
    import tensorflow as tf

    from keras_fr.layers.msconv import split_pack_size

    # The largest divisor of `groups` whose input channels fit in the pack width.
    assert [split_pack_size(32, c) for c in (4, 8, 16, 32, 64)] == [8, 4, 2, 1, 1]
    assert split_pack_size(16, 3) == 8 and split_pack_size(32, 4, 0) == 1 and split_pack_size(6, 8) == 3
    x = tf.constant(RNG.normal(size=(2, 9, 9, 128)).astype("float32"))  # 4 channels per group: 8 packed
    packed = MSConv(strides=2, grouped_conv="split", name="msconv")
    packed.build(x.shape)
    one_per_group = MSConv(strides=2, grouped_conv="split", name="msconv")
    one_per_group._split_pack_channels = one_per_group._split_pack_channels_training = 0
    one_per_group.build(x.shape)
    one_per_group.set_weights(packed.get_weights())

    def forward_and_grads(layer, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.cos(y))
        kernels = [layer.convs_0_0.kernel, layer.convs_1_0.kernel]
        return y, tape.gradient(loss, [x, *kernels])

    def conv_ops(layer, training):
        graph = tf.function(lambda v: layer(v, training=training)).get_concrete_function(
            tf.TensorSpec(x.shape)).graph
        return sum(op.type == "Conv2D" for op in graph.get_operations())

    for training in (False, True):  # packed 32 channels wide in inference, 128 in training
        y_packed, g_packed = forward_and_grads(packed, training)
        y_plain, g_plain = forward_and_grads(one_per_group, training)
        np.testing.assert_allclose(y_packed.numpy(), y_plain.numpy(), rtol=1e-5, atol=1e-5)
        for a, b in zip(g_packed, g_plain):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    # Two branches of 32 groups: in inference 4 packed convolutions each instead of 32, in training
    # one (32 groups x 4 channels fit in 128); plus the four 1x1 ones.
    assert conv_ops(packed, False) == 2 * 4 + 4 and conv_ops(one_per_group, False) == 2 * 32 + 4
    assert conv_ops(packed, True) == 2 * 1 + 4 and conv_ops(one_per_group, True) == 2 * 32 + 4
