"""MarginHead: cosine logits against numpy, float32 under mixed precision, serialization."""

import keras
import numpy as np
import pytest

from keras_fr.layers.margin import MarginHead


def _np_cosines(x, w):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    return x @ w


def test_cosine_logits_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 16)).astype(np.float32) * 7.0
    head = MarginHead(11)
    out = keras.ops.convert_to_numpy(head(x))
    w = keras.ops.convert_to_numpy(head.kernel)
    assert w.shape == (16, 11)
    np.testing.assert_allclose(out, _np_cosines(x.astype(np.float64), w.astype(np.float64)), atol=1e-5)
    assert np.all(np.abs(out) <= 1.0 + 1e-6)


def test_zero_embedding_gives_zero_logits_not_nan():
    head = MarginHead(3)
    out = keras.ops.convert_to_numpy(head(np.zeros((2, 4), np.float32)))
    assert np.all(out == 0.0)


def test_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    inputs = keras.Input((8,))
    features = keras.layers.Dense(8)(inputs)  # float16 under the policy
    head = MarginHead(4)
    outputs = head(features)
    model = keras.Model(inputs, outputs)
    assert features.dtype == "float16"
    assert head.compute_dtype == "float32"
    assert head.kernel.dtype == "float32"
    out = model(np.random.rand(3, 8).astype(np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_serialization_round_trip(tmp_path):
    inputs = keras.Input((6,))
    outputs = MarginHead(5, name="margin_head")(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    x = np.random.rand(2, 6).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), atol=1e-6)
    assert again.get_layer("margin_head").get_config()["num_classes"] == 5


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        MarginHead(bad)


def test_bad_input_rank():
    with pytest.raises(ValueError, match="embedding_dim"):
        MarginHead(3)(np.zeros((2, 4, 4), np.float32))
