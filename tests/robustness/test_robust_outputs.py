"""Outputs: missing or unwritable folders are refused before any work; a full disk or an interruption
(SIGINT, SIGTERM, an exception) leaves nothing behind; files get the permissions of the umask."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _robust import ENV, cli_error, leftovers

UNWRITABLE = "/proc/keras_fr_out"  # no one, not even root, creates files in /proc


def _argv(command, inputs, tmp_path, output):
    pairs = tmp_path / "in" / "p.csv"
    pairs.parent.mkdir(exist_ok=True)
    face = inputs["face"]
    pairs.write_text(f"img1,img2,same\n{face},{face},1\n{face},{face},0\n")
    return {
        "embed": ["embed", face, "--model", "iresnet18", "--random-weights", "--output", f"{output}.npz"],
        "export": ["export", "--model", "iresnet18", "--random-weights", "--format", "onnx",
                   "--output", f"{output}.onnx"],
        "eval": ["eval", "--model", "iresnet18", "--random-weights", "--pairs", pairs,
                 "--output", f"{output}.json"],
        "eval-roc": ["eval", "--model", "iresnet18", "--random-weights", "--pairs", pairs,
                     "--roc", f"{output}.png"],
        "convert": ["convert", inputs["r18"], "--to", "torch", "--arch", "iresnet18",
                    "--output", f"{output}.npz"],
    }[command]


@pytest.fixture
def no_model_built(monkeypatch):
    """Fail the test if any command builds a model (the checks must come before any work)."""
    import keras_fr.cli._common as common
    import keras_fr.cli.eval as eval_cli
    import keras_fr.cli.export as export_cli

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the output was checked")

    for module in (common, eval_cli, export_cli):
        monkeypatch.setattr(module, "build_model", refuse)


@pytest.mark.parametrize("command", ["embed", "export", "eval", "eval-roc", "convert"])
def test_missing_output_folder(inputs, tmp_path, capsys, no_model_built, command):
    argv = _argv(command, inputs, tmp_path, tmp_path / "missing" / "out")
    cli_error(capsys, argv, "does not exist", "missing")


@pytest.mark.parametrize("command", ["embed", "export", "eval", "convert"])
def test_unwritable_output_folder(inputs, tmp_path, capsys, no_model_built, command):
    argv = _argv(command, inputs, tmp_path, UNWRITABLE)
    cli_error(capsys, argv, "cannot write into", "/proc")


def test_output_is_a_folder(inputs, tmp_path, capsys, no_model_built):
    target = tmp_path / "out.npz"
    target.mkdir()
    cli_error(capsys, ["embed", inputs["face"], "--model", "iresnet18", "--random-weights",
                       "--output", target], "is a folder")


def test_disk_full_cli_one_line_and_nothing_left(inputs, tmp_path, capsys, monkeypatch):
    def full_disk(file, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))

    monkeypatch.setattr(np, "savez", full_disk)
    out = tmp_path / "out" / "e.npz"
    out.parent.mkdir()
    cli_error(capsys, ["embed", inputs["face"], "--model", "iresnet18", "--random-weights",
                       "--output", out], "no space left")
    assert leftovers(out.parent) == []


def test_disk_full_python_keeps_the_old_file(tmp_path, monkeypatch):
    from keras_fr.evaluation import write_report

    target = tmp_path / "report.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_report(target, {"accuracy": 1.0})
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and leftovers(tmp_path) == [str(target)]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_get_the_umask_permissions(inputs, tmp_path, capsys, umask, mode):
    from keras_fr import cli
    from keras_fr.evaluation import write_report

    previous = os.umask(umask)
    try:
        assert cli.main(["embed", str(inputs["face"]), "--model", "iresnet18", "--random-weights",
                         "--output", str(tmp_path / "e.npy")]) == 0
        write_report(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(previous)
    capsys.readouterr()
    for name in ("e.npy", "e.txt", "r.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == mode, name


def test_export_file_gets_the_umask_permissions(tmp_path):
    import keras

    from keras_fr.export import to_tflite

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    previous = os.umask(0o027)
    try:
        to_tflite(model, tmp_path / "m.tflite", verify=False)
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "m.tflite").st_mode & 0o777 == 0o640
    assert leftovers(tmp_path) == [str(tmp_path / "m.tflite")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_export_leaves_nothing(tmp_path, signum):
    """The real command, killed while its temporary file exists: it is removed, no traceback."""
    out = tmp_path / "m.tflite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "keras_fr.cli", "export", "--model", "iresnet18", "--random-weights",
         "--format", "tflite", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        deadline = time.monotonic() + 180
        while not any(n.startswith(".m.tflite.") for n in os.listdir(tmp_path)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.05)
        time.sleep(0.5)  # inside the conversion
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert leftovers(tmp_path) == [], err
    assert "Traceback" not in err, err
    assert "interrupted" in err


@pytest.mark.parametrize("library", ["converts", "swallows"])
def test_a_signal_a_library_hides_still_ends_as_an_interruption(tmp_path, library):
    """A converter running when SIGTERM arrives may turn the KeyboardInterrupt into an error of its own
    (the TFLite converter did: "bad argument to internal function") or swallow it: the write must
    still end as an interruption, with no file left."""
    from keras_fr._atomic import atomic_path

    target = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler runs here
            except KeyboardInterrupt:
                if library == "converts":
                    raise RuntimeError("bad argument to internal function") from None
    assert leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
