"""``keras-fr eval``: reports, ROC, JSON output and one-line errors (a tiny model stands in for the zoo)."""

import json

import keras
import numpy as np
import pytest

from keras_fr.cli import main
from keras_fr.evaluation import evaluate_pairs, write_bin


def _tiny_model(*_args, **_kwargs):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(4, use_bias=False, kernel_initializer=keras.initializers.RandomNormal(seed=1))(
        keras.layers.Flatten()(inputs)
    )
    return keras.Model(inputs, outputs)


@pytest.fixture
def tiny(monkeypatch):
    import keras_fr.cli.eval as eval_cli

    model = _tiny_model()
    monkeypatch.setattr(eval_cli, "build_model", lambda name, weights=None: model)
    return model


@pytest.fixture
def bin_path(tmp_path):
    rng = np.random.default_rng(0)
    images, issame = [], []
    for _ in range(10):
        face = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        images += [face, face, *rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)]
        issame += [True, False]
    return write_bin(tmp_path / "tiny.bin", np.stack(images), issame, image_format="PNG")


def test_eval_writes_report_and_roc(tmp_path, tiny, bin_path, capsys):
    out, roc = tmp_path / "report.json", tmp_path / "roc.png"
    code = main(["eval", "--model", "iresnet18", "--random-weights", "--pairs", str(bin_path), "--output", str(out), "--roc", str(roc)])
    assert code == 0
    report = json.loads(out.read_text())
    expected = evaluate_pairs(tiny, bin_path, verbose=0)
    entry = report["verification"]["tiny"]
    assert entry["accuracy"] == expected.accuracy == 1.0
    assert entry["fold_thresholds"] == expected.fold_thresholds.tolist()
    assert report["flip"] is True and report["model"] == "iresnet18"
    assert roc.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr()
    assert "tiny: accuracy 100.00%" in printed.out
    assert "--random-weights" in printed.err and report["weights"] == "random"
    assert "threshold cosine" in printed.out  # thresholds printed as cosine similarities, as verify does


def test_eval_json_and_no_flip(tmp_path, tiny, bin_path, capsys):
    code = main(["eval", "--model", "iresnet18", "--random-weights", "--pairs", str(bin_path), "--json", "--no-flip", "--nfolds", "5"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flip"] is False
    assert report["verification"]["tiny"]["nfolds"] == 5
    expected = evaluate_pairs(tiny, bin_path, flip=False, nfolds=5, verbose=0)
    assert report["verification"]["tiny"]["accuracy"] == expected.accuracy


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pairs", "MISSING.bin"], "file not found: MISSING.bin"),
        ([], "nothing to evaluate"),
        (["--pairs", "BIN", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--ijb-meta", "BIN"], "needs all of --ijb-images"),
        (["--gallery", "BIN"], "needs both --gallery and --probe"),
        (["--pairs", "BIN", "--output", "/nonexistent/dir/r.json"], "does not exist"),
    ],
)
def test_eval_errors_are_one_line(tiny, bin_path, capsys, argv, message):
    argv = [str(bin_path) if a == "BIN" else a for a in argv]
    code = main(["eval", "--model", "iresnet18", "--random-weights", *argv])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("keras-fr eval: error:")


def test_eval_reports_a_corrupt_bin(tmp_path, tiny, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x80\x04garbage")
    assert main(["eval", "--model", "iresnet18", "--random-weights", "--pairs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.bin" in err and "Traceback" not in err


def test_eval_ijb_and_identification(tmp_path, tiny, capsys):
    from PIL import Image

    from keras_fr.evaluation import evaluate_identification, evaluate_ijb

    rng = np.random.default_rng(2)
    (tmp_path / "crops").mkdir()
    for name in "abcd":
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "crops" / f"{name}.png")
    (tmp_path / "meta.txt").write_text("a.png 1 1\nb.png 1 2\nc.png 2 3\nd.png 3 4\n")
    (tmp_path / "pairs.txt").write_text("1 2 1\n1 3 0\n2 3 0\n")
    (tmp_path / "scores.txt").write_text("".join(f"{n}.png" + " 0" * 10 + f" {s}\n" for n, s in zip("abcd", (1, 0.5, 1, 1))))
    (tmp_path / "gallery.txt").write_text("crops/a.png A\ncrops/c.png C\n")
    (tmp_path / "probe.txt").write_text("crops/b.png A\ncrops/d.png C\n")
    out = tmp_path / "r.json"
    argv = ["eval", "--model", "iresnet18", "--random-weights", "--ijb-images", str(tmp_path / "crops"), "--ijb-meta", str(tmp_path / "meta.txt"),
            "--ijb-pairs", str(tmp_path / "pairs.txt"), "--ijb-scores", str(tmp_path / "scores.txt"),
            "--gallery", str(tmp_path / "gallery.txt"), "--probe", str(tmp_path / "probe.txt"), "--ranks", "1,2",
            "--output", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    ijb = evaluate_ijb(tiny, tmp_path / "crops", tmp_path / "meta.txt", tmp_path / "pairs.txt",
                       faceness_scores=np.array([1, 0.5, 1, 1]), verbose=0)
    assert report["ijb"]["tar_at_far"]["0.0001"] == ijb.tar_at_far[1e-4]
    assert report["ijb"]["auc"] == pytest.approx(ijb.auc)
    ident = evaluate_identification(tiny, tmp_path / "gallery.txt", tmp_path / "probe.txt", ranks=(1, 2), verbose=0)
    assert report["identification"]["rank_accuracy"] == {"1": ident.rank_accuracy[1], "2": 1.0}
