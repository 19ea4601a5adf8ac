"""keras_fr.conversion.storage: float16 kernel storage, read back by plain Keras into float32."""

import os

import h5py
import keras
import numpy as np
import pytest

from keras_fr.conversion.storage import save_weights


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    model = keras.Model(inputs, outputs)
    # Non-trivial BatchNorm statistics, so keeping them float32 is visible.
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.linspace(-1, 1, 4).astype("float32") / 3)
    bn.moving_variance.assign(np.array([1e-5, 0.1, 2.0, 3.3], "float32"))
    return model


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj.dtype) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_float16_kernels_float32_vectors_and_smaller(tmp_path):
    model = _model()
    full, half = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5"
    assert save_weights(model, full) == 0
    assert save_weights(model, half, storage_dtype="float16") == 2  # conv and fc kernels
    dtypes = _datasets(half)
    assert {d for d in dtypes.values()} == {np.dtype("float16"), np.dtype("float32")}
    assert all(d == np.float32 for n, d in _datasets(full).items())
    # Every vector (biases, BatchNorm) stayed float32; the two kernels are float16.
    assert sum(d == np.float16 for d in dtypes.values()) == 2
    assert os.path.getsize(half) < os.path.getsize(full)


def test_reads_back_into_float32_with_float16_rounding_only(tmp_path):
    model = _model()
    path = tmp_path / "m.weights.h5"
    save_weights(model, path, storage_dtype="float16")
    other = _model(seed=1)
    other.load_weights(path)
    for a, b in zip(model.weights, other.weights):
        assert b.dtype == "float32"
        expected = np.asarray(a.numpy())
        if expected.ndim >= 2:
            expected = expected.astype(np.float16).astype(np.float32)  # independent rounding
        np.testing.assert_array_equal(np.asarray(b.numpy()), expected)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(other(x), model(x), rtol=0, atol=5e-3)


def test_bad_arguments_write_nothing(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="storage_dtype"):
        save_weights(model, tmp_path / "m.weights.h5", storage_dtype="int8")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        save_weights(model, tmp_path / "m.h5")
    big = _model()
    big.get_layer("fc").kernel.assign(np.full((4, 5), 1e6, "float32"))
    with pytest.raises(ValueError, match="float16"):
        save_weights(big, tmp_path / "big.weights.h5", storage_dtype="float16")
    assert os.listdir(tmp_path) == []
