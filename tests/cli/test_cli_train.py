"""``keras-fr train CONFIG`` end to end on a tiny synthetic image folder (issue 16).

4 identities x 6 images of 32x32, a conv/BatchNormalization/PReLU backbone, the LGAF recipe (its
augmentations on, so their random state must resume too), a 20-pair verification set, 2 epochs of 3
steps. A run stopped after 4 steps (mid-epoch) and started again must end with the same weights as
an uninterrupted run; wrong configs end with one line naming the field and exit code 2.
"""

import csv
import json
import os

import keras
import numpy as np
import pytest

from keras_fr.cli import main

CONFIG = """
def tiny():
    import keras
    x = inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16)(x)
    return keras.Model(inputs, x)

config = dict(
    model=tiny,
    data={"type": "folder", "path": "faces"},
    recipe="lgaf",
    recipe_args={"scale_lr": False},
    batch_size=8,
    epochs=2,
    loss={"type": "arcface", "scale": 16.0, "margin": 0.2},
    evaluation=[{"path": "pairs.csv", "name": "pairs"}],
    output="run",
    seed=1,
)
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("cli_train")
    rng = np.random.default_rng(0)
    files = []
    for c in range(4):
        pattern = rng.integers(0, 256, (4, 4, 3))
        for i in range(6):
            image = np.kron(pattern, np.ones((8, 8, 1))) + rng.normal(0, 25, (32, 32, 3))
            (root / "faces" / f"id{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "faces" / f"id{c}" / f"{i}.png")
            files.append((c, f"faces/id{c}/{i}.png"))
    with open(root / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["img1", "img2", "same"])
        for k in range(10):
            writer.writerow([files[k][1], files[k + 1 if k % 6 != 5 else k - 1][1], 1])
            writer.writerow([files[k][1], files[(k + 6) % 24][1], 0])
    (root / "config.py").write_text(CONFIG)
    return root


def _train(workdir, *args):
    return main(["train", str(workdir / "config.py"), "--quiet", *args])


def _weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.fixture(scope="module")
def full_run(workdir):
    keras.utils.set_random_seed(99)  # the engine must not depend on the state it finds
    assert _train(workdir, "--output", str(workdir / "full")) == 0
    return workdir / "full"


def test_train_writes_backbone_logs_and_checkpoint(full_run):
    for name in ("backbone.keras", "log.csv", "summary.json", "config.json", "checkpoint/state.json"):
        assert (full_run / name).is_file(), name
    with open(full_run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and [r["step"] for r in rows] == ["3", "6"]
    assert 0.0 <= float(rows[-1]["pairs_accuracy"]) <= 1.0  # the verification callback ran
    state = json.loads((full_run / "checkpoint" / "state.json").read_text())
    assert state["step"] == state["total_steps"] == 6 and state["finished"]
    assert len([n for n in os.listdir(full_run / "checkpoint") if n.endswith(".weights.h5")]) == 1
    assert not [n for n in os.listdir(full_run) if n.startswith(".")]  # no temporary file left
    model = keras.saving.load_model(full_run / "backbone.keras", compile=False)
    assert model.output_shape == (None, 16)


def test_train_writes_tensorboard_logs(full_run):
    import tensorflow as tf

    pytest.importorskip("tensorboard")
    events = sorted((full_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    tags = set()
    for path in events:
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    assert "epoch_loss" in tags, sorted(tags)


def test_resume_after_interruption_gives_the_same_weights(workdir, full_run, capsys):
    out = workdir / "interrupted"
    assert _train(workdir, "--output", str(out), "--stop-after-steps", "4") == 0
    assert "step 4 of 6" in capsys.readouterr().out
    assert not (out / "backbone.keras").exists()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and not state["finished"]
    keras.utils.set_random_seed(7)
    assert _train(workdir, "--output", str(out)) == 0
    resumed, full = _weights(out / "backbone.keras"), _weights(full_run / "backbone.keras")
    initial_moved = max(float(np.max(np.abs(a - b))) for a, b in zip(resumed, _weights_at_start(workdir)))
    assert initial_moved > 1e-3
    for a, b in zip(resumed, full):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def _weights_at_start(workdir):
    from keras_fr.training.config import load_config

    cfg = load_config(workdir / "config.py")
    keras.utils.set_random_seed(cfg.seed)
    return cfg.model().get_weights()


def test_a_checkpoint_of_another_run_is_refused(workdir, full_run, capsys):
    text = (workdir / "config.py").read_text().replace("batch_size=8", "batch_size=4")
    (workdir / "other.py").write_text(text)
    assert main(["train", str(workdir / "other.py"), "--quiet", "--output", str(full_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "batch_size" in err and "different run" in err


BAD = [
    ("model=tiny,", "", "`model` is required"),
    ('recipe="lgaf",', 'recipe="adaface",', "`recipe`"),
    ("batch_size=8,", "batch_size=0,", "`batch_size`"),
    ("batch_size=8,", "batch_size=800,", "`batch_size` (800) exceeds"),
    ('"path": "faces"', '"path": "no_such_folder"', "`data.path`"),
    ("epochs=2,", "epochs=2, batchsize=8,", "unknown key(s) ['batchsize']"),
    ("seed=1,", "seed=1, strategy='horovod',", "`strategy`"),
    ("seed=1,", "seed=1, partial_fc=1.5,", "`partial_fc`"),
    ('"path": "pairs.csv"', '"path": "missing.csv"', "`evaluation[0].path`"),
    ('"scale": 16.0', '"scale": "big"', "`loss.scale`"),
    ("model=tiny,", "model='resnet9000',", "`model.name`"),
    ("seed=1,", "seed=1, strategy='multiworker', partial_fc=0.5,", "over several workers is not done"),
]


@pytest.mark.parametrize("old,new,expected", BAD, ids=[b[2] for b in BAD])
def test_bad_config_is_one_line_naming_the_field(workdir, capsys, old, new, expected):
    text = (workdir / "config.py").read_text()
    assert old in text
    (workdir / "bad.py").write_text(text.replace(old, new, 1))
    assert main(["train", str(workdir / "bad.py"), "--quiet", "--output", str(workdir / "bad_run")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-fr train: error:"), captured.err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in captured.err


def test_config_files_that_are_not_configs(workdir, capsys):
    (workdir / "empty.py").write_text("x = 1\n")
    (workdir / "config.yaml").write_text("model: iresnet50\n")
    (workdir / "broken.py").write_text("config = dict(\n")
    for name, expected in (("empty.py", "defines no `config`"), ("config.yaml", "expected a Python file"),
                           ("broken.py", "failed to run"), ("absent.py", "not found")):
        assert main(["train", str(workdir / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err


def test_partial_fc_run_resumes_exactly(workdir):
    text = (workdir / "config.py").read_text().replace("seed=1,", "seed=1, partial_fc=0.5,")
    (workdir / "pfc.py").write_text(text)
    run = ["train", str(workdir / "pfc.py"), "--quiet", "--output"]
    assert main([*run, str(workdir / "pfc_full")]) == 0
    assert main([*run, str(workdir / "pfc_resumed"), "--stop-after-steps", "2"]) == 0
    assert main([*run, str(workdir / "pfc_resumed")]) == 0
    full, resumed = _weights(workdir / "pfc_full" / "backbone.keras"), _weights(workdir / "pfc_resumed" / "backbone.keras")
    for a, b in zip(resumed, full):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    state = json.loads((workdir / "pfc_full" / "checkpoint" / "state.json").read_text())
    assert state["fingerprint"]["partial_fc"] == 0.5
