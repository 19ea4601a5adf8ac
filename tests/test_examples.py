"""Each example in examples/ runs as a user would run it (a subprocess), with tiny options.

An example is skipped, with the reason, only when a package it needs is not importable. The checks
read the numbers the examples print and hold them to the same bars as the library's own tests.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")


def _needs(*modules):
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not importable (install the matching extra)")


def _run(script, *args, timeout=600):
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), *args],
        capture_output=True, text=True, env=ENV, cwd=REPO, timeout=timeout,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def _floats(pattern, text):
    return [float(v) for v in re.findall(pattern, text)]


def test_quickstart(tmp_path):
    out = _run("quickstart.py", "--model", "msconv_resnet26", "--image-size", "64", "--limit", "4")
    # the PyTorch-comparable count, as `keras-fr info` and the README print it (not count_params())
    assert "msconv_resnet26: 18,554,881 parameters (PyTorch-comparable count)" in out
    rows = [line for line in out.splitlines() if re.match(r"^\s+\S+/\S+\s+-?\d\.\d{3}", line)]
    assert len(rows) == 4
    # The similarity matrix has ones on its diagonal and is symmetric.
    matrix = [[float(v) for v in row.split()[1:]] for row in rows]
    for i in range(4):
        assert matrix[i][i] == pytest.approx(1.0, abs=1e-3)
        for j in range(4):
            assert matrix[i][j] == pytest.approx(matrix[j][i], abs=1e-3)


def test_quickstart_with_landmarks(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from keras_fr.preprocessing import ARCFACE_TEMPLATE

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (150, 180, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    marks = tmp_path / "marks.json"
    marks.write_text(json.dumps({"p.png": (ARCFACE_TEMPLATE + 15).tolist()}))
    out = _run("quickstart.py", "--model", "msconv_resnet26", "--image-size", "32",
               "--images", str(tmp_path / "p.png"), str(tmp_path / "c.png"), "--landmarks", str(marks))
    assert "2 images (given)" in out


def test_evaluate_pairs_synthetic():
    out = _run("evaluate_pairs.py", "--synthetic", "--model", "iresnet18", "--limit-per-fold", "1",
               "--batch-size", "16")
    assert "20 pairs, 40 images" in out
    match = re.search(r"^accuracy (\d\.\d+) \+- (\d\.\d+)", out, re.M)
    assert match, out
    assert 0.0 <= float(match.group(1)) <= 1.0


def test_evaluate_pairs_lfw_subset(lfw_dir):
    out = _run("evaluate_pairs.py", "--pairs", str(lfw_dir), "--model", "iresnet18",
               "--limit-per-fold", "1", "--batch-size", "16")
    # One same and one different pair from each of the 10 folds.
    assert "20 pairs, 40 images" in out


def test_convert_checkpoint_demo_reference():
    _needs("torch")
    out = _run("convert_checkpoint.py", "--arch", "iresnet18", "--samples", "2")
    assert "converted to iresnet18" in out
    diff = _floats(r"max \|diff\| ([0-9.e+-]+)", out)
    cosine = _floats(r"min cosine ([0-9.]+)", out)
    assert diff and diff[0] <= 1e-4
    assert cosine and cosine[0] >= 0.99999
    assert "parity OK" in out


def test_export_and_run():
    _needs("tf2onnx", "onnxruntime", "ai_edge_litert")
    out = _run("export_and_run.py", "--model", "msconv_resnet26", "--image-size", "32", "--batch", "2")
    cosines = _floats(r"ran it: .* min cosine ([0-9.]+)", out)
    assert len(cosines) == 2 and min(cosines) >= 0.99999
    assert "parity OK" in out
