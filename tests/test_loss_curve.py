"""benchmarks/loss_curve.py: issue 17's "same loss curve as PyTorch" check compares like with like.

Its PyTorch ArcFace must be keras_fr's ``ArcFaceLoss`` (value and gradients, computed by torch
autograd against TensorFlow's), the per-step losses it recovers from Keras' running means must be
the true per-batch losses of a real ``model.fit``, and the comparison must flag a curve that leaves
the tolerance. One short float32 run of both sides on real faces ends it (skipped without the data).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba299"


@pytest.fixture(scope="module")
def loss_curve():
    sys.path.insert(0, str(BENCH_DIR))  # the script imports its sibling `_bench`
    try:
        spec = importlib.util.spec_from_file_location("loss_curve_under_test", BENCH_DIR / "loss_curve.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_torch_arcface_matches_keras_fr_arcface_loss_and_its_gradients(loss_curve):
    torch = pytest.importorskip("torch")
    import tensorflow as tf

    from keras_fr.layers import MarginHead
    from keras_fr.training.losses import ArcFaceLoss

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((6, 16)).astype("float32")
    weight = rng.standard_normal((16, 10)).astype("float32")  # MarginHead's (dim, classes)
    labels = np.array([0, 3, 3, 9, 5, 1], "int32")

    head = MarginHead(10)
    head.build((None, 16))
    head.kernel.assign(weight)
    x = tf.Variable(emb)
    with tf.GradientTape() as tape:
        ours = ArcFaceLoss(scale=64.0, margin=0.5)(labels, head(x))
    grad_x, grad_w = tape.gradient(ours, [x, head.kernel])

    temb = torch.tensor(emb, requires_grad=True)
    tweight = torch.tensor(weight.T.copy(), requires_grad=True)  # (classes, dim)
    ref = loss_curve.torch_arcface_loss(temb, tweight, torch.from_numpy(labels).long())
    ref.backward()

    np.testing.assert_allclose(float(ours), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(grad_x.numpy(), temb.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_w.numpy(), tweight.grad.numpy().T, rtol=1e-4, atol=1e-6)
    # The margin is on: without it the same cosines give a smaller loss.
    plain = ArcFaceLoss(scale=64.0, margin=0.0)(labels, head(x))
    assert float(plain) < float(ours) - 1.0


def test_per_step_losses_are_the_batch_losses_model_fit_computed(loss_curve):
    import keras

    # A model that never changes (learning rate 0): each batch's loss is known exactly in NumPy.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 3)).astype("float32")
    y = rng.standard_normal((12, 1)).astype("float32") * np.repeat([1.0, 5.0, 0.2, 3.0], 3)[:, None]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    means = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            means.append(float(logs["loss"]))

    model.fit(x, y, batch_size=3, epochs=1, shuffle=False, callbacks=[Record()], verbose=0)
    pred = x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy()
    expected = ((pred - y) ** 2).reshape(4, 3).mean(axis=1)
    assert not np.allclose(means, expected, rtol=1e-3)  # Keras logs running means, not batch losses
    np.testing.assert_allclose(loss_curve.per_step_losses(means), expected, rtol=1e-4)


def test_compare_curves_flags_a_step_outside_the_tolerance_and_nan(loss_curve):
    ref = [40.0, 45.0, 50.0, 48.0]
    assert loss_curve.compare_curves([40.2, 45.1, 49.9, 48.3], ref, 0.01)["agree"]
    off = loss_curve.compare_curves([40.2, 45.1, 52.0, 48.3], ref, 0.01)
    assert not off["agree"] and off["worst_step"] == 3
    assert off["max_rel_diff"] == pytest.approx(2.0 / 50.0)
    assert not loss_curve.compare_curves([40.0, float("nan"), 50.0, 48.0], ref, 0.5)["agree"]
    with pytest.raises(ValueError, match="different lengths"):
        loss_curve.compare_curves([1.0], ref, 0.01)


@pytest.mark.skipif(not (CELEBA / "images").is_dir(), reason=f"celeba299 not found at {CELEBA} (never committed)")
def test_a_short_float32_run_gives_the_same_curve_in_both_frameworks(loss_curve, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    result = loss_curve.run("iresnet18", steps=3, batch=8, precision="float32", data_dir=str(CELEBA),
                            workdir=str(tmp_path))
    assert len(result["keras_losses"]) == len(result["torch_losses"]) == 3
    assert result["num_classes"] == 240  # every celeba299 train identity is a class
    # Training moves the loss (so the comparison is not of two constant curves) ...
    assert abs(result["torch_losses"][-1] - result["torch_losses"][0]) > 0.1
    # ... and both frameworks move it the same way (float32: well inside the 0.5% bar).
    assert result["agree"] and result["max_rel_diff"] < 1e-3, result["max_rel_diff"]
