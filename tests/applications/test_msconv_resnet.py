"""MSConvResNet26/50/101: reference layout, shapes, inputs, serialization, precision, backends."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

from keras_fr.applications import common
from keras_fr.applications import msconv_resnet
from keras_fr.applications.msconv_resnet import MSConvResNet26, MSConvResNet50, MSConvResNet101
from keras_fr.layers.msconv import MSConv, clone_with_grouped_conv

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = (32, 32, 3)
BN_STATS = ("moving_mean", "moving_variance")


def _param_count(model):
    """Weights that correspond to PyTorch parameters: everything but BN moving statistics."""
    return sum(
        int(np.prod(w.shape)) for w in model.weights if w.path.rsplit("/", 1)[-1] not in BN_STATS
    )


def _randomize(model, seed=0):
    """Non-trivial values for every weight (BN statistics included) that keep activations tame."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        shape = tuple(w.shape)
        leaf = w.path.rsplit("/", 1)[-1]
        if leaf == "kernel":
            v = rng.normal(0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        elif leaf == "gamma":
            v = rng.uniform(0.5, 1.0, shape)
        elif leaf in ("beta", "moving_mean", "bias"):
            v = rng.normal(0, 0.1, shape)
        elif leaf == "moving_variance":
            v = rng.uniform(0.5, 1.5, shape)
        elif leaf == "alpha":
            v = rng.uniform(0.1, 0.4, shape)
        else:
            raise AssertionError(f"unexpected weight {w.path}")
        values.append(v.astype("float32"))
    model.set_weights(values)


def _images(n=2, size=32, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def small_model():
    """One MSConvResNet26 at 32x32 with random (non-default) weights, shared by several tests."""
    model = MSConvResNet26(input_shape=SMALL)
    _randomize(model)
    return model


# ---------------------------------------------------------------------------------------------
# Reference layout


def _expected_torch_keys(depths):
    """The reference state_dict (keys -> PyTorch shapes), written from docs/reference.md section 1."""
    keys = {}

    def conv(prefix, cin, cout, k, groups=1):
        keys[f"{prefix}.weight"] = (cout, cin // groups, k, k)

    def bn(prefix, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{leaf}"] = (c,)

    def prelu(prefix):
        keys[f"{prefix}.weight"] = (1,)

    def cbp(prefix, cin, cout, k=1, groups=1):
        conv(f"{prefix}.0", cin, cout, k, groups)
        bn(f"{prefix}.1", cout)
        prelu(f"{prefix}.2")

    cbp("basic_conv", 3, 64, 7)
    stages = [(64, 128, 256), (256, 256, 512), (512, 512, 1024), (1024, 1024, 2048)]
    for s, ((cin, mid, cout), n) in enumerate(zip(stages, depths), start=1):
        for b in range(n):
            p = f"stage_{s}.{b}"
            c_in = cin if b == 0 else cout
            cbp(f"{p}.conv1", c_in, mid)
            m = f"{p}.conv2_msconv"
            d = max(mid // 16, 32)
            cbp(f"{m}.convs.0", mid, mid, 3, 32)
            cbp(f"{m}.convs.1", mid, mid, 3, 32)
            cbp(f"{m}.fc", mid, d)
            cbp(f"{m}.fcs.0", d, mid)
            cbp(f"{m}.fcs.1", d, mid)
            cbp(f"{m}.fc_d", mid, mid)
            conv(f"{p}.conv3.0", mid, cout, 1)
            bn(f"{p}.conv3.1", cout)
            if c_in != cout:
                conv(f"{p}.shortcut.0", c_in, cout, 1)
                bn(f"{p}.shortcut.1", cout)
            prelu(f"{p}.prelu")
    keys["classifier.weight"] = (512, 2048)
    keys["classifier.bias"] = (512,)
    return keys


_LEAF = {
    "kernel": "weight",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
    "alpha": "weight",
    "bias": "bias",
}


def _torch_shape(keras_shape, leaf):
    if leaf == "kernel" and len(keras_shape) == 4:  # [kh, kw, in/groups, out] -> [out, in/groups, kh, kw]
        return (keras_shape[3], keras_shape[2], keras_shape[0], keras_shape[1])
    if leaf == "kernel":  # Dense [in, out] -> Linear [out, in]
        return (keras_shape[1], keras_shape[0])
    if leaf == "alpha":
        return (int(np.prod(keras_shape)),)
    return tuple(keras_shape)


def test_layer_names_map_to_reference_state_dict(small_model):
    """Keras layer-name chains joined by "_" equal the PyTorch keys with "." -> "_" (the naming rule)."""
    expected = {k.replace(".", "_"): v for k, v in _expected_torch_keys((2, 2, 2, 2)).items()}
    got = {}
    for w in small_model.weights:
        parts = w.path.split("/")
        key = "_".join(parts[:-1] + [_LEAF[parts[-1]]])
        assert key not in got, key
        got[key] = _torch_shape(tuple(w.shape), parts[-1])
    assert got == expected
    assert "stage_2_0_conv2_msconv_convs_1_0_weight" in got


@pytest.mark.parametrize(
    "builder,depths,expected",
    [(MSConvResNet26, (2, 2, 2, 2), 18_554_881), (MSConvResNet50, (3, 4, 6, 3), 31_555_201)],
)
def test_parameter_count(builder, depths, expected):
    model = builder(input_shape=SMALL)
    assert _param_count(model) == expected
    reference = _expected_torch_keys(depths)
    assert sum(int(np.prod(s)) for k, s in reference.items() if "running" not in k) == expected


@pytest.mark.large
def test_parameter_count_101():
    model = MSConvResNet101(input_shape=SMALL)
    assert _param_count(model) == 57_320_265
    assert len([l for l in model.layers if isinstance(l, MSConv)]) == 3 + 4 + 23 + 3


def test_every_prelu_has_one_parameter(small_model):
    alphas = [w for w in small_model.weights if w.path.endswith("/alpha")]
    # stem 1 + per block (conv1 1 + MSConv 6 + output 1) * 8 blocks
    assert len(alphas) == 1 + 8 * 8
    assert all(tuple(np.shape(w)) == (1, 1, 1) for w in alphas)


def test_max_pool_pads_with_minus_infinity(small_model):
    """The stem's max pool sees negative activations; padding must never win a window."""
    stem = keras.Model(small_model.input, small_model.get_layer("basic_conv_2").output)
    pool = keras.Model(small_model.input, small_model.get_layer("maxpool").output)
    x = _images(2, 32)
    # Make the stem's activations strictly negative: BN beta far below zero.
    bn = small_model.get_layer("basic_conv_1")
    original = bn.get_weights()
    try:
        gamma, beta, mean, var = original
        bn.set_weights([gamma * 0.01, np.full_like(beta, -3.0), mean, var])
        a = np.asarray(stem(x, training=False))
        assert (a < 0).all()
        out = np.asarray(pool(x, training=False))
    finally:
        bn.set_weights(original)
    ap = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    h = (a.shape[1] + 2 - 3) // 2 + 1
    expected = np.stack(
        [np.stack([ap[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2)) for j in range(h)], 1)
         for i in range(h)],
        1,
    )
    np.testing.assert_array_equal(out, expected)
    assert (out < 0).all()


# ---------------------------------------------------------------------------------------------
# Shapes and inputs


def test_output_shapes_112():
    model = MSConvResNet26()
    assert model.input.name == "input_image" or model.layers[0].name == "input_image"
    assert model.output_shape == (None, 512)
    assert model.get_layer("classifier").kernel.shape == (2048, 512)
    headless = MSConvResNet26(include_top=False)
    assert headless.output_shape == (None, 4, 4, 2048)


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_pooling_shapes_and_values(pooling):
    model = MSConvResNet26(include_top=False, input_shape=(64, 64, 3))
    _randomize(model)
    pooled = MSConvResNet26(include_top=False, input_shape=(64, 64, 3), pooling=pooling)
    pooled.set_weights(model.get_weights())
    x = _images(2, 64)
    fmap = np.asarray(model(x, training=False))
    assert fmap.shape == (2, 2, 2, 2048)
    vec = np.asarray(pooled(x, training=False))
    assert vec.shape == (2, 2048)
    ref = fmap.mean(axis=(1, 2)) if pooling == "avg" else fmap.max(axis=(1, 2))
    np.testing.assert_allclose(vec, ref, rtol=1e-5, atol=1e-6)


def test_smallest_and_non_square_sizes(small_model):
    out = np.asarray(small_model(_images(2, 32), training=False))
    assert out.shape == (2, 512) and np.isfinite(out).all()
    model = MSConvResNet26(include_top=False, input_shape=(32, 48, 3))
    assert model.output_shape == (None, 1, 2, 2048)
    dynamic = MSConvResNet26(input_shape=(None, None, 3))
    assert np.asarray(dynamic(_images(1, 40), training=False)).shape == (1, 512)


def test_custom_input_tensor():
    inputs = keras.Input((48, 48, 3), name="pixels")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    model = MSConvResNet26(input_tensor=scaled, include_top=False, pooling="avg")
    assert model.inputs[0] is inputs or model.inputs[0].name == "pixels"
    assert model.output_shape == (None, 2048)
    assert model.get_layer("scale") is not None


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(input_shape=(64, 64, 1)), "input_shape"),
        (dict(input_shape=(31, 64, 3)), "input_shape"),
        (dict(input_shape=(64, 64)), "input_shape"),
        (dict(pooling="sum", include_top=False), "pooling"),
        (dict(embedding_size=0), "embedding_size"),
        (dict(embedding_size=2.5), "embedding_size"),
        (dict(weights="no/such/file.weights.h5"), "weights"),
        (dict(weights=42), "weights"),
        (dict(grouped_conv="loop"), "grouped_conv"),
    ],
)
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MSConvResNet26(**kwargs)


def test_bad_input_tensor():
    with pytest.raises(ValueError, match="input_tensor"):
        MSConvResNet26(input_tensor=keras.Input((64, 64)))  # rank 3
    with pytest.raises(ValueError, match="input_tensor"):
        MSConvResNet26(input_tensor=keras.Input((64, 64, 4)))
    with pytest.raises(ValueError, match="input_tensor"):
        MSConvResNet26(input_tensor=keras.Input((16, 64, 3)))


def test_weights_existing_file_of_wrong_kind(tmp_path):
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"not weights")
    with pytest.raises(ValueError, match="weights"):
        MSConvResNet26(input_shape=SMALL, weights=str(bad))


def test_preprocess_input_reexported():
    assert msconv_resnet.preprocess_input is common.preprocess_input
    x = np.array([[[[0, 127.5, 255]]]], dtype="float32")
    before = x.copy()
    np.testing.assert_allclose(msconv_resnet.preprocess_input(x), [[[[-1.0, 0.0, 1.0]]]])
    np.testing.assert_array_equal(x, before)


# ---------------------------------------------------------------------------------------------
# Serialization


def test_keras_file_round_trip(small_model, tmp_path):
    x = _images(2, 32)
    expected = np.asarray(small_model(x, training=False))
    path = tmp_path / "model.keras"
    small_model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(restored(x, training=False)), expected)
    assert [l.name for l in restored.layers] == [l.name for l in small_model.layers]


def test_weights_file_round_trip(small_model, tmp_path):
    x = _images(2, 32)
    expected = np.asarray(small_model(x, training=False))
    path = tmp_path / "model.weights.h5"
    small_model.save_weights(path)
    fresh = MSConvResNet26(input_shape=SMALL, weights=str(path))
    np.testing.assert_array_equal(np.asarray(fresh(x, training=False)), expected)


def test_headless_model_loads_full_model_weights(tmp_path):
    """include_top=False takes the backbone of a full (112x112) model's weights file by name."""
    full = MSConvResNet26()
    _randomize(full, seed=3)
    path = tmp_path / "full.weights.h5"
    full.save_weights(path)
    headless = MSConvResNet26(include_top=False, input_shape=(64, 64, 3), weights=str(path))
    owners = [layer for layer in headless.layers if layer.weights]
    assert len(owners) == len([l for l in full.layers if l.weights]) - 1  # all but `classifier`
    for layer in owners:
        mine, theirs = layer.get_weights(), full.get_layer(layer.name).get_weights()
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b)


def test_split_grouped_conv_model_matches_native(small_model):
    split = clone_with_grouped_conv(small_model, "split")
    assert all(
        l.grouped_conv == "split" for l in split.layers if isinstance(l, MSConv)
    )
    x = _images(2, 32)
    np.testing.assert_allclose(
        np.asarray(split(x, training=False)),
        np.asarray(small_model(x, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )
    built = MSConvResNet26(input_shape=SMALL, grouped_conv="split")
    built.set_weights(small_model.get_weights())
    np.testing.assert_allclose(
        np.asarray(built(x, training=False)), np.asarray(small_model(x, training=False)),
        rtol=1e-4, atol=1e-4,
    )


# ---------------------------------------------------------------------------------------------
# Precision, compilation, backends


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(small_model, policy):
    keras.config.set_dtype_policy(policy)
    model = MSConvResNet26(input_shape=SMALL)
    keras.config.set_dtype_policy("float32")
    compute = "float16" if policy == "mixed_float16" else "bfloat16"
    msconv = [l for l in model.layers if isinstance(l, MSConv)][0]
    assert msconv.compute_dtype == compute
    assert msconv.fc_d_0.compute_dtype == compute  # sub-layers follow the block's policy
    assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32
    model.set_weights(small_model.get_weights())
    x = _images(2, 32)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    out = np.asarray(out)
    ref = np.asarray(small_model(x, training=False))
    assert np.isfinite(out).all()
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.98, cos


def test_jit_compile_matches_eager(small_model):
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("jit_compile via tf.function applies to the TensorFlow backend")
    x = _images(2, 32)
    eager = np.asarray(small_model(x, training=False))
    compiled = tf.function(lambda t: small_model(t, training=False), jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(x)), eager, rtol=1e-4, atol=1e-4)


_TORCH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "torch", keras.backend.backend()
    from keras_fr.applications.msconv_resnet import MSConvResNet26
    weights, inputs, output = sys.argv[1:4]
    model = MSConvResNet26(input_shape=(32, 32, 3), weights=weights)
    y = model(np.load(inputs), training=False)
    np.save(output, keras.ops.convert_to_numpy(y))
    """
)


def test_torch_backend_forward_matches_tensorflow(small_model, tmp_path):
    pytest.importorskip("torch")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares the TensorFlow backend with the PyTorch backend")
    x = _images(2, 32)
    expected = np.asarray(small_model(x, training=False))
    weights = tmp_path / "w.weights.h5"
    small_model.save_weights(weights)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run_torch.py"
    script.write_text(_TORCH_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, str(script), str(weights), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
