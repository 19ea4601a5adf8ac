"""keras_fr._threads and predict_in_parts: one thread per operation, batches cut into parallel parts."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_fr import _threads
from keras_fr import cli
from keras_fr.applications import inference
from keras_fr.applications.inference import predict_in_parts
from keras_fr.evaluation import extract_embeddings

INTRA, INTER = _threads.INTRA_OP_VARIABLE, _threads.INTER_OP_VARIABLE


@pytest.mark.parametrize("command", cli.SUBCOMMANDS)
def test_set_for_eval_only(command, monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 3)
    environ = {}
    assert _threads.parallel_batches(command, environ) is (command == "eval")
    assert environ == ({INTRA: "1", INTER: "3"} if command == "eval" else {})


@pytest.mark.parametrize("environ", [{INTRA: "4"}, {INTER: "2"}, {INTRA: "0"}])
def test_keeps_what_the_user_set(environ, monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    before = dict(environ)
    assert _threads.parallel_batches("eval", environ) is False
    assert environ == before


def test_not_on_one_core(monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 1)
    environ = {}
    assert _threads.parallel_batches("eval", environ) is False
    assert environ == {}


def test_the_command_asks_for_it(monkeypatch):
    seen = []
    monkeypatch.setattr(_threads, "parallel_batches", seen.append)
    assert cli.main(["info"]) == 0
    assert seen == ["info"]


@pytest.mark.parametrize("environ, parts", [
    ({INTRA: "1", INTER: "3"}, 3),
    ({INTRA: "1"}, 5),  # TensorFlow's default inter-op threads: the cores
    ({INTRA: " 1 "}, 5),
    ({}, 1),
    ({INTRA: "0"}, 1),
    ({INTRA: "2", INTER: "4"}, 1),
    ({INTRA: "one"}, 1),
])
def test_batch_parts_from_the_environment(environ, parts, monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 5)
    assert _threads.batch_parts(environ) == parts


def test_eval_process_cuts_batches_into_one_part_per_core():
    # End to end in a fresh process: the command's settings, then what the batch paths read.
    script = ("from keras_fr import cli, _threads\ncli.configure_process('eval')\n"
              "import os\nprint(os.environ.get('TF_NUM_INTRAOP_THREADS', 'unset'), _threads.batch_parts(), "
              "_threads.available_cores())")
    env = {k: v for k, v in os.environ.items() if k not in (INTRA, INTER)}
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    cores = int(out[2])
    assert out[:2] == (["1", str(cores)] if cores > 1 else ["unset", "1"])


def _model(outputs="one"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.PReLU()(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    embedding = keras.layers.Dense(4)(pooled)
    if outputs == "dict":
        return keras.Model(inputs, {"embedding": embedding, "pooled": pooled})
    return keras.Model(inputs, embedding)


def _batch(n):
    return np.random.default_rng(1).standard_normal((n, 8, 8, 3)).astype("float32")


@pytest.mark.parametrize("n, parts", [(5, 2), (7, 3), (4, 4), (2, 3), (1, 2), (6, 1)])
def test_predict_in_parts_equals_each_image_alone(n, parts):
    model = _model()
    x = _batch(n)
    # The independent computation: each image through the model on its own, in order.
    alone = np.concatenate([np.asarray(model(x[i:i + 1], training=False)) for i in range(n)])
    out = predict_in_parts(model, x, parts=parts)
    assert isinstance(out, np.ndarray) and out.shape == (n, 4)
    np.testing.assert_allclose(out, alone, rtol=1e-5, atol=1e-6)
    assert (parts in inference._PARTS_FUNCTIONS.get(model, {})) is (1 < parts <= n)


def test_predict_in_parts_keeps_the_output_structure():
    model = _model("dict")
    x = _batch(5)
    out = predict_in_parts(model, x, parts=2)
    expected = model.predict_on_batch(x)
    assert set(out) == {"embedding", "pooled"}
    for key in expected:
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parts", [0, -1, 1.5, True, "2"])
def test_predict_in_parts_rejects_bad_parts(parts):
    with pytest.raises(ValueError, match="`parts` must be a positive integer"):
        predict_in_parts(_model(), _batch(2), parts=parts)


def test_extract_embeddings_cuts_its_batches_where_the_process_runs_one_thread_per_op(monkeypatch):
    model = _model()
    faces = (np.random.default_rng(2).random((6, 8, 8, 3)) * 255).astype("uint8")
    kwargs = dict(batch_size=3, verbose=0, image_size=(8, 8), optimize=False)
    monkeypatch.setattr(_threads, "batch_parts", lambda environ=None: 1)
    whole = extract_embeddings(model, faces, **kwargs)
    assert model not in inference._PARTS_FUNCTIONS
    monkeypatch.setattr(_threads, "batch_parts", lambda environ=None: 2)
    cut = extract_embeddings(model, faces, **kwargs)
    assert 2 in inference._PARTS_FUNCTIONS[model]
    np.testing.assert_allclose(cut, whole, rtol=1e-5, atol=1e-6)
