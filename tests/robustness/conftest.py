"""The robustness suite: every class of bad input a user can give, through the CLI and the Python API.

Each test is one bad-input case (parametrized tests count once per parameter). At the end of the run
the number of cases tried here is printed, e.g. ``robustness: 52 bad-input cases tried, 52 passed``,
for the README to quote.
"""

import os

import numpy as np
import pytest
from PIL import Image

_RESULTS = {"passed": 0, "failed": 0, "skipped": 0}
_HERE = os.path.dirname(os.path.abspath(__file__))

def pytest_runtest_logreport(report):
    if not os.path.abspath(str(report.fspath)).startswith(_HERE):
        return
    if report.when == "call":
        _RESULTS["passed" if report.passed else "failed" if report.failed else "skipped"] += 1
    elif report.when == "setup" and (report.skipped or report.failed):
        _RESULTS["skipped" if report.skipped else "failed"] += 1


def pytest_terminal_summary(terminalreporter):
    tried = _RESULTS["passed"] + _RESULTS["failed"]
    if tried or _RESULTS["skipped"]:
        terminalreporter.write_line(
            f"robustness: {tried} bad-input cases tried, {_RESULTS['passed']} passed, "
            f"{_RESULTS['failed']} failed, {_RESULTS['skipped']} skipped"
        )


# ------------------------------------------------------------------------------------------------
# Shared inputs (built once per session: the suite must stay fast)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """Good and bad input files, made once: face crops, an iresnet18 weights file, broken files."""
    root = tmp_path_factory.mktemp("robust_inputs")
    rng = np.random.default_rng(0)
    faces = root / "faces"
    faces.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(faces / f"{i}.png")

    import keras_fr  # noqa: F401
    from keras_fr.applications import IResNet18

    r18 = root / "iresnet18.weights.h5"
    IResNet18(weights=None).save_weights(r18)
    data = r18.read_bytes()
    files = {
        "faces": faces,
        "face": faces / "0.png",
        "r18": r18,
        "truncated": root / "truncated.weights.h5",
        "one_kb": root / "one_kb.weights.h5",
        "random_h5": root / "random.weights.h5",
        "empty_h5": root / "empty.weights.h5",
        "random_keras": root / "random.keras",
        "random_pth": root / "backbone.pth",
        "empty_pth": root / "empty.pth",
        "random_npz": root / "random.npz",
        "empty_npz": root / "empty.npz",
        "random_safetensors": root / "random.safetensors",
    }
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["one_kb"].write_bytes(data[:1024])
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    noise = b"\x13" + noise[1:]  # not a pickle PROTO byte, not a zip or HDF5 signature
    for key in ("random_h5", "random_keras", "random_pth", "random_npz", "random_safetensors"):
        files[key].write_bytes(noise)
    for key in ("empty_h5", "empty_pth", "empty_npz"):
        files[key].write_bytes(b"")
    return files
