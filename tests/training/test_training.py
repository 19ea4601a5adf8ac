"""FaceTrainingModel learns, serializes, resumes after SIGKILL and stops on NaN."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from keras_fr.training.losses import ArcFaceLoss
from keras_fr.training import (
    FaceTrainingModel,
    NonFiniteLossError,
    StopOnNaN,
    training_callbacks,
)

SIZE = 32


def make_identities(num_ids=8, per_id=16, size=SIZE, seed=0):
    """Coloured-pattern 'faces': each identity a random 4x4 colour pattern, each image shifted + noisy."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for identity in range(num_ids):
        pattern = rng.uniform(-1, 1, (4, 4, 3))
        base = np.kron(pattern, np.ones((size // 4, size // 4, 1)))
        for _ in range(per_id):
            dy, dx = rng.integers(-2, 3, 2)
            img = np.roll(base, (dy, dx), axis=(0, 1)) + rng.normal(0, 0.25, base.shape)
            images.append(np.clip(img, -1, 1))
            labels.append(identity)
    return np.asarray(images, np.float32), np.asarray(labels, np.int32)


def tiny_backbone(size=SIZE, dim=32):
    inputs = keras.Input((size, size, 3), name="input_image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dim, name="fc")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="features")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


def test_training_model_learns_identities():
    keras.utils.set_random_seed(0)
    x, y = make_identities()
    held_x, held_y = make_identities(seed=0)  # same patterns...
    rng = np.random.default_rng(123)
    # ...but fresh noise and shifts: re-draw the per-image noise with another generator.
    held_x = np.clip(held_x + rng.normal(0, 0.1, held_x.shape).astype(np.float32), -1, 1)
    model = FaceTrainingModel(tiny_backbone(), num_classes=8)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=ArcFaceLoss(scale=16.0, margin=0.3),
        metrics=["sparse_categorical_accuracy"],
    )
    before = np.mean(np.argmax(model.predict(held_x, verbose=0), -1) == held_y)
    history = model.fit(x, y, batch_size=16, epochs=6, shuffle=True, verbose=0)
    after = np.mean(np.argmax(model.predict(held_x, verbose=0), -1) == held_y)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert after >= 0.9, (before, after)
    assert after > before + 0.4, (before, after)
    # The backbone is the embedding model: same-identity embeddings are closer than others.
    emb = model.embed(held_x)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    same = held_y[:, None] == held_y[None, :]
    assert sim[same].mean() > sim[~same].mean() + 0.3


def test_wrapper_and_backbone_serialize(tmp_path):
    keras.utils.set_random_seed(1)
    x, y = make_identities(num_ids=3, per_id=4)
    model = FaceTrainingModel(
        tiny_backbone(), num_classes=3, augmentation=keras.layers.RandomFlip("horizontal")
    )
    model.compile(optimizer="sgd", loss=ArcFaceLoss())
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "train.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(again, FaceTrainingModel)
    assert again.compiled and isinstance(again.loss, ArcFaceLoss)  # its compile state came back too
    assert again.num_classes == 3
    assert isinstance(again.augmentation, keras.layers.RandomFlip)
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), atol=1e-5)
    # The backbone on its own: a plain functional model, saved and reloaded without the head.
    model.backbone.save(tmp_path / "backbone.keras")
    backbone = keras.saving.load_model(tmp_path / "backbone.keras", safe_mode=True)
    assert backbone.output_shape == (None, 32)
    np.testing.assert_allclose(
        model.backbone.predict(x, verbose=0), backbone.predict(x, verbose=0), atol=1e-5
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone"):
        FaceTrainingModel("resnet", 3)
    with pytest.raises(ValueError, match="num_classes"):
        FaceTrainingModel(tiny_backbone(), 0)


def test_nan_loss_stops_with_clear_message():
    x, y = make_identities(num_ids=2, per_id=16)  # 32 images, 4 batches of 8
    x[20:] = np.nan  # batch 3 (0-based 2) onwards
    model = FaceTrainingModel(tiny_backbone(), num_classes=2)
    model.compile(optimizer="sgd", loss=ArcFaceLoss())
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 3.*learning rate"):
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=training_callbacks())
    # Without raising: training stops after that batch, the message is kept.
    callback = StopOnNaN(raise_error=False)
    model = FaceTrainingModel(tiny_backbone(), num_classes=2)
    model.compile(optimizer="sgd", loss=ArcFaceLoss())
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 1
    assert callback.message is not None and "nan" in callback.message.lower()


_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {tests_dir!r})
    import numpy as np, keras, tensorflow as tf
    from test_training import make_identities, tiny_backbone
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training import FaceTrainingModel, training_callbacks

    mode, workdir = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    x, y = make_identities(num_ids=4, per_id=8)
    model = FaceTrainingModel(tiny_backbone(), num_classes=4)
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=16, alpha=0.1)
    model.compile(keras.optimizers.SGD(schedule, momentum=0.9), loss=ArcFaceLoss(scale=16.0))
    epochs_run = []
    start_iterations = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)
            start_iterations.append(int(self.model.optimizer.iterations.numpy()))
        def on_train_batch_end(self, batch, logs=None):
            if mode == "kill" and epochs_run[-1] == 2 and batch == 1:
                open(os.path.join(workdir, "in_epoch_3"), "w").close()
                time.sleep(120)  # the parent kills us here, mid-epoch

    backup = None if mode == "full" else os.path.join(workdir, "backup")
    callbacks = training_callbacks(backup) + [Probe()]
    model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
    np.savez(os.path.join(workdir, mode + ".npz"), *[w.numpy() for w in model.weights])
    with open(os.path.join(workdir, mode + ".json"), "w") as f:
        json.dump({{"epochs": epochs_run, "start_iterations": start_iterations}}, f)
    """
)


@pytest.mark.large
def test_resume_after_sigkill(tmp_path):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests_dir=tests_dir))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(tests_dir))

    def run(mode):
        return subprocess.run(
            [sys.executable, str(script), mode, str(tmp_path)], env=env, capture_output=True,
            text=True, timeout=300,
        )

    child = subprocess.Popen(
        [sys.executable, str(script), "kill", str(tmp_path)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    marker = tmp_path / "in_epoch_3"
    deadline = time.time() + 300
    while not marker.exists():
        assert child.poll() is None, child.communicate()
        assert time.time() < deadline, "child never reached epoch 3"
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not (tmp_path / "kill.npz").exists()

    resumed = run("resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    info = json.loads((tmp_path / "resume.json").read_text())
    # Epochs 1 and 2 (0-based 0, 1) were complete: it goes on with epoch 3, optimizer state restored.
    assert info["epochs"] == [2, 3]
    assert info["start_iterations"] == [8, 12]

    full = run("full")
    assert full.returncode == 0, full.stderr[-3000:]
    a, b = np.load(tmp_path / "resume.npz"), np.load(tmp_path / "full.npz")
    assert len(a.files) == len(b.files)
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)


# ---- recipes (keras_fr.training.recipes) ----

from keras_fr import recipes  # noqa: E402
from keras_fr.training.losses import CosFaceLoss  # noqa: E402


@pytest.mark.torch
def test_sgd_with_l2_matches_torch_sgd_weight_decay():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    t = rng.normal(size=(8, 1)).astype(np.float32)
    w0 = rng.normal(size=(3, 1)).astype(np.float32)

    w_t = torch.tensor(w0, requires_grad=True)
    opt_t = torch.optim.SGD([w_t], lr=0.1, momentum=0.9, weight_decay=0.05)
    for _ in range(4):
        opt_t.zero_grad()
        ((torch.tensor(x) @ w_t - torch.tensor(t)) ** 2).mean().backward()
        opt_t.step()

    import tensorflow as tf

    w_k = keras.Variable(w0)
    opt_k = recipes.SGDWithL2(0.1, momentum=0.9, l2=0.05)
    for _ in range(4):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((x @ w_k.value - t) ** 2)
        opt_k.apply_gradients([(tape.gradient(loss, w_k.value), w_k)])
    np.testing.assert_allclose(w_k.numpy(), w_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    # Keras' decoupled weight_decay would differ: the test can tell the two apart.
    w_d = keras.Variable(w0)
    opt_d = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05)
    for _ in range(4):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((x @ w_d.value - t) ** 2)
        opt_d.apply_gradients([(tape.gradient(loss, w_d.value), w_d)])
    assert np.abs(w_d.numpy() - w_t.detach().numpy()).max() > 1e-4


def test_cosine_schedule_formula():
    half = recipes.CosineDecayTo(0.02, 5e-6, 100)
    quarter = recipes.CosineDecayTo(0.02, 5e-6, 100, shape="quarter")
    for step in (0, 25, 50, 100, 150):
        t = min(step / 100, 1.0)
        assert float(half(step)) == pytest.approx(5e-6 + (0.02 - 5e-6) * (1 + np.cos(np.pi * t)) / 2, rel=1e-5)
        assert float(quarter(step)) == pytest.approx(5e-6 + (0.02 - 5e-6) * np.cos(np.pi / 2 * t), rel=1e-5, abs=1e-9)
    with pytest.raises(ValueError, match="shape"):
        recipes.CosineDecayTo(0.1, 0.0, 10, shape="full")


def test_msconv_recipe_scaled():
    r = recipes.msconv_recipe(num_images=1000, batch_size=64)
    assert r.steps_per_epoch == 16 and r.epochs == 20 and r.batch_size == 64
    assert r.learning_rate == pytest.approx(0.01)  # 0.02 * 64 / 128
    assert float(r.schedule(0)) == pytest.approx(0.01)
    assert float(r.schedule(16 * 20)) == pytest.approx(2.5e-6, rel=1e-4)
    assert isinstance(r.loss, ArcFaceLoss) and r.loss.margin == 0.5 and r.loss.scale == 64
    assert r.optimizer.l2 == 5e-4 and r.optimizer.momentum == 0.9
    assert isinstance(r.augmentation, keras.layers.RandomFlip)
    assert any(isinstance(c, StopOnNaN) for c in r.callbacks)
    assert recipes.msconv_recipe(1000, batch_size=64, scale_lr=False).learning_rate == pytest.approx(0.02)
    # The recipe's pieces drive fit.
    x, y = make_identities(num_ids=2, per_id=4)
    r = recipes.msconv_recipe(num_images=8, batch_size=8, epochs=1)
    model = FaceTrainingModel(tiny_backbone(), 2, augmentation=r.augmentation)
    model.compile(optimizer=r.optimizer, loss=r.loss)
    history = model.fit(x, y, batch_size=r.batch_size, epochs=r.epochs, callbacks=r.callbacks, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(r.optimizer.iterations.numpy()) == r.steps_per_epoch * r.epochs


def test_sgd_with_l2_acts_inside_fit():
    x, y = make_identities(num_ids=2, per_id=4)
    kernels = []
    for l2 in (0.0, 0.5):
        keras.utils.set_random_seed(7)
        model = FaceTrainingModel(tiny_backbone(), 2)
        start = model.backbone.get_layer("fc").kernel.numpy()
        model.compile(optimizer=recipes.SGDWithL2(0.1, l2=l2), loss=ArcFaceLoss())
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        kernels.append(model.backbone.get_layer("fc").kernel.numpy())
    # Without momentum, one step: w1(l2) = w1(0) - lr * l2 * w0.
    np.testing.assert_allclose(kernels[1], kernels[0] - 0.1 * 0.5 * start, atol=1e-5)


def test_lgaf_recipe_steps(tmp_path):
    r = recipes.lgaf_recipe(num_images=1000, batch_size=256, loss="cosface", backup_dir=tmp_path / "b")
    assert r.steps_per_epoch == 4 and r.epochs == 26
    assert r.learning_rate == pytest.approx(0.05)  # 0.1 * 256 / 512
    expected = {0: 0.05, 47: 0.05, 49: 0.005, 79: 0.005, 81: 5e-4, 95: 5e-4, 97: 5e-5}
    for step, lr in expected.items():
        assert float(r.schedule(step)) == pytest.approx(lr, rel=1e-5), step
    assert isinstance(r.loss, CosFaceLoss) and r.loss.margin == 0.4
    assert [getattr(layer, "probability", None) for layer in r.augmentation.layers[1:]] == [0.2] * 3
    assert isinstance(r.callbacks[0], keras.callbacks.BackupAndRestore)
    with pytest.raises(ValueError, match="loss"):
        recipes.lgaf_recipe(1000, loss="softmax")
    with pytest.raises(ValueError, match="num_images"):
        recipes.msconv_recipe(0)


# ---- examples/finetune.py ----


@pytest.mark.large
def test_finetune_example_tiny(tmp_path):
    """The example end to end on a generated folder tree and pair CSV (no shared data needed)."""
    from PIL import Image

    from examples import finetune

    x, y = make_identities(num_ids=3, per_id=6, size=32)
    root = tmp_path / "images"  # read_pairs_csv resolves paths against <csv folder>/images
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / f"person_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((image + 1) * 127.5).astype(np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "split.csv").write_text(
        "identity,split,images\nperson_0,train,6\nperson_1,train,6\nperson_2,test,6\n"
    )
    rows = ["img1,img2,same"]
    for k in range(10):
        a, b = 12 + k % 6, 12 + (k + 1) % 6
        rows.append(f"person_2/{a}.png,person_2/{b}.png,1")
        rows.append(f"person_2/{a}.png,person_0/{k % 6}.png,0")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out" / "backbone.keras"
    summary = finetune.main([
        "--model", "iresnet18", "--image-size", "112", "--embedding-size", "32",  # IResNet heads need 112
        "--data-root", str(root), "--split-csv", str(tmp_path / "split.csv"),
        "--pairs", str(tmp_path / "pairs.csv"), "--eval-every", "0",
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--output", str(out),
    ])
    assert summary["identities"] == 2  # only the train split
    assert summary["num_pairs"] == 20 and 0.0 <= summary["accuracy"] <= 1.0
    assert np.isfinite(summary["loss"][0])
    backbone = keras.saving.load_model(out, safe_mode=True)
    assert backbone.output_shape == (None, 32)
    assert not (tmp_path / "out" / "backbone.keras.backup").exists()  # removed after success


def test_training_model_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    x, y = make_identities(num_ids=2, per_id=4)
    model = FaceTrainingModel(tiny_backbone(), 2)
    assert model.backbone.get_layer("fc").compute_dtype == "bfloat16"
    assert model.margin_head.compute_dtype == "float32"
    model.compile(optimizer="sgd", loss=ArcFaceLoss())
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    logits = model(x[:2])
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_old_module_names_are_the_training_subpackage_modules():
    """keras_fr.losses & co. were top-level modules before training became one subpackage: the old
    names must give the very same module objects (so registrations and monkeypatches are shared)."""
    import importlib

    for name in ("losses", "recipes", "callbacks", "distillation"):
        old = importlib.import_module(f"keras_fr.{name}")
        new = importlib.import_module(f"keras_fr.training.{name}")
        assert old is new, name
    from keras_fr.training import FaceTrainingModel as a
    from keras_fr.training.models import FaceTrainingModel as b

    assert a is b
