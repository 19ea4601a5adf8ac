"""Quiet by default: the real command prints no TensorFlow banner, log line, warning or colour code;
``--verbose`` brings TensorFlow's own output back."""

import json
import os
import subprocess
import sys

from _robust import ENV, run_cli


def test_info_stderr_is_empty():
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no oneDNN / cpu_feature_guard / absl banner
    assert "\x1b[" not in proc.stdout
    assert "PyTorch-comparable count" in proc.stdout  # parameter counts labelled


def test_console_script_is_quiet_too():
    script = os.path.join(os.path.dirname(sys.executable), "keras-fr")
    if not os.path.isfile(script):
        import pytest

        pytest.skip("no keras-fr console script beside this Python")
    proc = subprocess.run([script, "info"], capture_output=True, text=True, env=ENV, timeout=240)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_embed_random_weights_quiet_and_says_so(tmp_path):
    from PIL import Image

    Image.new("RGB", (112, 112), (120, 90, 60)).save(tmp_path / "a.png")
    proc = run_cli("embed", tmp_path / "a.png", tmp_path / "a.png", "--model", "iresnet18",
                   "--random-weights", "--output", tmp_path / "e.npz", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no retracing warning, no progress bar in a log
    assert "\x1b[" not in proc.stdout
    assert json.loads(proc.stdout)["weights"] == "random"


def test_onnx_export_has_no_converter_logs_or_warnings(tmp_path):
    """tf2onnx's INFO lines and NumPy FutureWarnings, TensorFlow's logs: none without --verbose."""
    proc = run_cli("export", "--model", "iresnet18", "--random-weights", "--format", "onnx",
                   "--output", tmp_path / "m.onnx", timeout=400)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "weights: RANDOM" in proc.stdout and "\x1b[" not in proc.stdout


def test_verbose_shows_tensorflow_output():
    quiet, verbose = run_cli("info"), run_cli("--verbose", "info")
    assert quiet.returncode == verbose.returncode == 0
    assert quiet.stderr == ""
    # TensorFlow's start-up lines depend on the CPU and build; when it prints any, --verbose shows them
    if not verbose.stderr:
        import pytest

        pytest.skip("this TensorFlow build prints nothing at start-up: nothing to show")
    assert "keras-fr" not in verbose.stderr and verbose.stdout == quiet.stdout
