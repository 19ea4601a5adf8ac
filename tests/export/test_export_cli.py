"""``keras-fr export``: argument errors (one line, exit 2, nothing written), an export end to end whose
file is checked here with onnxruntime / the LiteRT interpreter, and a failing verification."""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("tf2onnx")

from keras_fr.cli import main  # noqa: E402
from keras_fr.cli import export as export_cli  # noqa: E402
from test_export_common import assert_builtin_only  # noqa: E402
from test_export_common import assert_no_leftovers  # noqa: E402
from test_export_common import faces  # noqa: E402
from test_export_common import keras_out  # noqa: E402
from test_export_common import parity  # noqa: E402
from test_export_common import run_onnx_file  # noqa: E402
from test_export_common import run_tflite_file  # noqa: E402
from test_export_common import tiny_msconv_model  # noqa: E402


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--format", "onnx", "--output", "m.tflite"], "must end with .onnx"),
        (["--format", "tflite", "--output", "m.tflite", "--channels-first"], "--channels-first"),
        (["--format", "tflite", "--output", "m.tflite", "--opset", "17"], "--opset applies"),
        (["--format", "onnx", "--output", "m.onnx", "--quantize", "float16"], "--quantize applies"),
        (["--format", "onnx", "--output", "m.onnx", "--opset", "9"], "--opset must be"),
        (["--format", "tflite", "--output", "m.tflite", "--quantize", "int8"], "needs --calibration"),
        (["--format", "tflite", "--output", "m.tflite", "--quantize", "int8", "--calibration", "nope"],
         "--calibration not found"),
        (["--format", "tflite", "--output", "m.tflite", "--calibration", "."], "only used with"),
        (["--format", "tflite", "--output", "missing/m.tflite"], "does not exist"),
    ],
)
def test_bad_arguments_one_line_errors(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    built = []
    monkeypatch.setattr(export_cli, "build_model", lambda *a, **k: built.append(a))
    code = main(["export", "--model", "iresnet18", "--random-weights", *extra])
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith("keras-fr export: error:") and message in line
    assert built == []  # rejected before any model is built
    assert_no_leftovers(tmp_path)


def test_unknown_model_and_format_rejected(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # --model accepts registry and builder names, so an unknown one is a one-line error naming it
    assert main(["export", "--model", "nope", "--random-weights", "--format", "onnx", "--output", "m.onnx"]) == 2
    line = _error_line(capsys)
    assert "--model" in line and "'nope'" in line
    with pytest.raises(SystemExit) as info:
        main(["export", "--model", "iresnet18", "--format", "pb", "--output", "m.pb"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert_no_leftovers(tmp_path)


@pytest.fixture
def tiny(monkeypatch):
    model = tiny_msconv_model()
    monkeypatch.setattr(export_cli, "build_model", lambda name, weights=None: model)
    return model


def test_export_onnx_channels_first_json(tmp_path, capsys, tiny):
    out = tmp_path / "m.onnx"
    code = main(["export", "--model", "msconv_resnet26", "--random-weights", "--format", "onnx", "--output", str(out),
                 "--channels-first", "--opset", "15", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "onnx" and report["verified"] is True
    assert report["weights"] == "random" and report["model"] == "msconv_resnet26"  # says which weights
    assert report["input_shape"] == [None, 3, 16, 16]
    x = faces(5, 16, seed=3)
    rel, cos = parity(keras_out(tiny, x), run_onnx_file(out, np.transpose(x, (0, 3, 1, 2))))
    assert rel <= 1e-4 and cos >= 0.99999


def test_export_tflite_float16_text_output(tmp_path, capsys, tiny):
    out = tmp_path / "m.tflite"
    assert main(["export", "--model", "msconv_resnet26", "--random-weights", "--format", "tflite", "--output", str(out),
                 "--quantize", "float16"]) == 0
    text = capsys.readouterr().out
    assert "verified on" in text and "min cosine" in text and "CONV_2D" in text
    assert "weights: RANDOM (--random-weights)" in text
    assert_builtin_only(out)
    x = faces(3, 16, seed=4)
    _, cos = parity(keras_out(tiny, x), run_tflite_file(out, x))
    assert cos >= 0.999


def test_export_tflite_int8_with_calibration_folder_json(tmp_path, capfd, tiny):
    from PIL import Image

    from test_export_common import face_pixels

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, img in enumerate(face_pixels(24, 16, seed=9)):
        Image.fromarray(img).save(calib / f"{i:02d}.png")
    out = tmp_path / "m8.tflite"
    assert main(["export", "--model", "msconv_resnet26", "--random-weights", "--format", "tflite", "--output", str(out),
                 "--quantize", "int8", "--calibration", str(calib), "--num-calibration", "16",
                 "--json"]) == 0
    # File descriptor 1 holds only the JSON: the converter's C++ log lines go to stderr.
    report = json.loads(capfd.readouterr().out)
    assert report["quantize"] == "int8" and "QUANTIZE" in report["ops"]
    x = faces(4, 16, seed=10)
    _, cos = parity(keras_out(tiny, x), run_tflite_file(out, x))
    assert cos >= 0.98


def test_failing_verification_is_a_one_line_error(tmp_path, capsys, tiny, monkeypatch):
    from keras_fr.export import _onnx

    monkeypatch.setattr(_onnx, "run_onnx", lambda p, x, **k: -np.ones((len(x), 32), np.float32))
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "msconv_resnet26", "--random-weights", "--format", "onnx", "--output", str(out)]) == 2
    line = _error_line(capsys)
    assert "does not reproduce" in line and "not kept" in line
    assert_no_leftovers(tmp_path)


@pytest.mark.large
def test_real_model_with_weights_file_end_to_end(tmp_path, capsys):
    from keras_fr.applications.iresnet import IResNet18
    from test_export_common import randomize_bn

    model = randomize_bn(IResNet18(), seed=3)
    weights = tmp_path / "r18.weights.h5"
    model.save_weights(weights)
    out = tmp_path / "r18.onnx"
    assert main(["export", "--model", "iresnet18", "--weights", str(weights), "--format", "onnx",
                 "--output", str(out), "--channels-first", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [None, 3, 112, 112] and report["output_shape"] == [None, 512]
    assert report["weights"] == str(weights) and report["model"] == "iresnet18"
    x = faces(4, 112, seed=8)
    rel, cos = parity(keras_out(model, x), run_onnx_file(out, np.transpose(x, (0, 3, 1, 2))))
    assert rel <= 1e-4 and cos >= 0.99999
