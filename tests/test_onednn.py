"""keras_fr._onednn: the oneDNN weight cache of keras-fr's inference commands, and the training guard."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_fr import _onednn
from keras_fr import cli
from keras_fr.training import FaceTrainingModel
from keras_fr.training.distillation import DistillationModel
from keras_fr.training.losses import ArcFaceLoss

VARIABLE = _onednn.FROZEN_WEIGHTS_VARIABLE

# What the module relies on and guards against, in fresh processes (TensorFlow reads the variable
# once): a bias-free convolution network trained for 4 epochs. With the variable set after TensorFlow
# is imported but before its first operation, the forward pass keeps the first kernels, so the loss
# does not move; and a kernel assigned after a predict call is not seen by the next one.
_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
from keras_fr import _onednn
_onednn.assume_frozen_weights(sys.argv[1])
import keras
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 12, 12, 8)).astype("float32")
y = rng.standard_normal((8, 12, 12, 8)).astype("float32")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((12, 12, 8)), keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
                          keras.layers.Conv2D(8, 3, padding="same", use_bias=False)])
model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
losses = model.fit(x, y, epochs=4, batch_size=8, verbose=0).history["loss"]
before = model.predict_on_batch(x)
model.layers[0].kernel.assign(model.layers[0].kernel * 2.0)
after = model.predict_on_batch(x)
print(losses[0], losses[-1], float(np.abs(after - before).max()))
"""


def _run(command):
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="1")
    out = subprocess.run([sys.executable, "-c", _SCRIPT, command], env=env, check=True, capture_output=True,
                         text=True).stdout
    first, last, change = (float(v) for v in out.split()[-3:])
    return first, last, change


def test_inference_commands_cache_kernels_and_training_would_not_learn():
    first, last, change = _run("train")  # not an inference command: the variable stays unset
    assert last < 0.9 * first and change > 0.1
    first, last, change = _run("embed")
    assert last == pytest.approx(first, rel=1e-6)  # the forward pass kept the initial kernels
    assert change == 0.0  # the assigned kernel was not seen


@pytest.mark.parametrize("command", cli.SUBCOMMANDS)
def test_set_for_the_inference_commands_only(command, monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    inference = command in ("verify", "enroll", "identify", "calibrate", "embed", "eval")
    assert _onednn.assume_frozen_weights(command) is inference
    assert os.environ.get(VARIABLE) == ("1" if inference else None)


def test_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv(VARIABLE, "0")
    assert _onednn.assume_frozen_weights("embed") is False
    assert os.environ[VARIABLE] == "0"


def test_the_command_asks_for_it(monkeypatch):
    seen = []
    monkeypatch.setattr(_onednn, "assume_frozen_weights", seen.append)
    assert cli.main(["info"]) == 0
    assert seen == ["info"]


@pytest.mark.parametrize("value, assumed", [("1", True), ("true", True), ("TRUE", True), ("0", False),
                                            ("false", False), ("", False)])
def test_reads_the_variable_as_tensorflow_does(value, assumed):
    assert _onednn.frozen_weights_assumed({VARIABLE: value}) is assumed
    assert _onednn.frozen_weights_assumed({}) is False


def _backbone():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(8)(x))


@pytest.mark.parametrize("make", ["face", "distillation"])
def test_training_models_refuse_to_fit_with_frozen_weights(make, monkeypatch):
    def build():
        if make == "face":
            model, loss = FaceTrainingModel(_backbone(), 5), ArcFaceLoss()
        else:
            model, loss = DistillationModel(_backbone(), teacher_dim=8), None
        model.compile(optimizer="sgd", loss=loss)  # compiling is fine (and a loaded model keeps its state)
        return model

    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")
    y = np.array([0, 1]) if make == "face" else np.ones((2, 8), "float32")
    monkeypatch.setenv(VARIABLE, "1")
    model = build()
    before = [np.array(w) for w in model.weights]
    with pytest.raises(RuntimeError, match=f"cannot train in this process: {VARIABLE}='1' is set.*Unset it"):
        model.fit(x, y, epochs=1, verbose=0)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.weights))  # no step was taken

    monkeypatch.setenv(VARIABLE, "0")
    model = build()
    before = [np.array(w) for w in model.trainable_weights]
    model.fit(x, y, epochs=1, verbose=0)
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(before, model.trainable_weights))
