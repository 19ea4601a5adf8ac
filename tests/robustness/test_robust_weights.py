"""Weights and checkpoint files that are not what they claim: one line naming the file, in the CLI
(exit 2) and as a ValueError in Python; no pickle talk for non-pickles, no Keras warning flood."""

import os
import warnings

import pytest
from _robust import cli_error, leftovers, one_error_line, run_cli

BAD_WEIGHTS = [
    ("truncated", "truncated or corrupted HDF5"),
    ("one_kb", "not a readable Keras weights file"),
    ("random_h5", "not a readable Keras weights file (not an HDF5 file)"),
    ("empty_h5", "empty file"),
    ("random_keras", "not a readable .keras model file"),
]


@pytest.mark.parametrize("key,message", BAD_WEIGHTS)
def test_cli_bad_weights_file(inputs, tmp_path, capsys, key, message):
    path = inputs[key]
    cli_error(capsys, ["embed", inputs["face"], "--model", "iresnet18", "--weights", path,
                       "--output", tmp_path / "e.npz"], os.path.basename(path), message)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("key,message", BAD_WEIGHTS)
def test_python_bad_weights_file(inputs, key, message):
    from keras_fr.applications import get_model

    with pytest.raises(ValueError) as info:
        get_model("iresnet18", weights=str(inputs[key]))
    text = str(info.value)
    assert message in text and str(inputs[key]) in text and len(text.splitlines()) == 1


def test_python_other_architecture_named_without_warning_flood(inputs):
    from keras_fr.applications import get_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as info:
            get_model("IResNet50", weights=str(inputs["r18"]))
    text = str(info.value)
    assert "holds the weights of iresnet18" in text and "iresnet50" in text and len(text.splitlines()) == 1
    assert [str(w.message) for w in caught] == []


def test_python_other_architecture_headless(inputs):
    from keras_fr.applications import get_model

    with pytest.raises(ValueError, match="holds the weights of iresnet18"):
        get_model("msconv_resnet26", weights=str(inputs["r18"]), include_top=False, pooling="avg")


def test_cli_other_architecture_is_one_line_on_stderr(inputs, tmp_path):
    """The real command: all of stderr is one line (no banner, no 128 UserWarnings)."""
    proc = run_cli("embed", inputs["face"], "--model", "iresnet50", "--weights", inputs["r18"],
                   "--output", tmp_path / "e.npz")
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc.stderr, "embed", "iresnet18.weights.h5", "holds the weights of iresnet18")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["iresnet18", "dlib_resnet"])
def test_recorded_fingerprint_matches_the_builder(name):
    import numpy as np

    from keras_fr.applications import get_model
    from keras_fr.applications.registry import get_record

    model = get_model(name, weights=None)
    built = (len(model.weights), int(sum(int(np.prod(w.shape)) for w in model.weights)))
    assert get_record(name).weights_fingerprint == built


def _pickle_talk(text):
    return any(words in text for words in ("refused", "could run code", "pickled objects", "asks to build"))


BAD_CHECKPOINTS = [
    ("random_pth", "not a PyTorch checkpoint"),
    ("empty_pth", "empty file"),
    ("random_npz", "not a .npz archive"),
    ("empty_npz", "empty file"),
    ("random_safetensors", "not a safetensors file"),
]


@pytest.mark.parametrize("key,message", BAD_CHECKPOINTS)
def test_cli_convert_bad_checkpoint(inputs, tmp_path, capsys, key, message):
    line = cli_error(capsys, ["convert", inputs[key], "--output", tmp_path / "out.weights.h5"],
                     os.path.basename(inputs[key]), message)
    assert not _pickle_talk(line)  # random bytes are not a pickle: no talk of refusing one
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("key,message", BAD_CHECKPOINTS)
def test_python_read_bad_checkpoint(inputs, key, message):
    from keras_fr.conversion.readers import read_checkpoint

    with pytest.raises(ValueError) as info:
        read_checkpoint(inputs[key])
    assert message in str(info.value) and not _pickle_talk(str(info.value))


def test_cli_missing_weights_file(inputs, tmp_path, capsys):
    cli_error(capsys, ["embed", inputs["face"], "--model", "iresnet18", "--weights",
                       tmp_path / "nope.weights.h5", "--output", tmp_path / "e.npz"],
              "--weights", "nope.weights.h5")


def test_cli_unknown_preset_tag(inputs, tmp_path, capsys):
    cli_error(capsys, ["embed", inputs["face"], "--model", "iresnet18", "--weights", "no_such_tag",
                       "--output", tmp_path / "e.npz"], "no_such_tag")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["embed", "export", "eval"])
def test_cli_no_silent_random_weights(inputs, tmp_path, capsys, command):
    argv = {
        "embed": ["embed", inputs["face"], "--output", tmp_path / "e.npz"],
        "export": ["export", "--format", "onnx", "--output", tmp_path / "m.onnx"],
        "eval": ["eval", "--pairs", inputs["faces"]],
    }[command]
    argv = argv[:1] + ["--model", "iresnet18"] + argv[1:]
    if command == "eval":  # a pairs set is read first: give a valid one
        pairs = tmp_path / "p.csv"
        face = inputs["face"]
        pairs.write_text(f"img1,img2,same\n{face},{face},1\n{face},{face},0\n")
        argv[-1] = pairs
    cli_error(capsys, argv, "no real weights on this machine", "--weights FILE|TAG", "--random-weights")
    assert [p for p in leftovers(tmp_path) if not p.endswith("p.csv")] == []


def test_cli_weights_and_random_weights_exclude_each_other(inputs, tmp_path, capsys):
    from keras_fr import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["embed", str(inputs["face"]), "--model", "iresnet18", "--weights", str(inputs["r18"]),
                  "--random-weights", "--output", str(tmp_path / "e.npz")])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_convert_arch_accepts_builder_names(inputs, tmp_path, capsys):
    from keras_fr import cli

    out = tmp_path / "r18.npz"
    assert cli.main(["convert", str(inputs["r18"]), "--to", "torch", "--arch", "IResNet18",
                     "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    with pytest.raises(SystemExit) as info:
        cli.main(["convert", str(inputs["r18"]), "--to", "torch", "--arch", "resnet9000",
                  "--output", str(out)])
    assert info.value.code == 2 and "resnet9000" in capsys.readouterr().err
