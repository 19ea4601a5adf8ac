"""Shared test set-up: quiet TensorFlow, the TensorFlow backend, and paths to the optional real data."""

import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Tests call `keras_fr.cli.main` in this process: an inference sub-command would otherwise turn on
# oneDNN's kept kernels for the whole worker (read once), and every later training test would refuse
# to fit or, worse, not learn (keras_fr._onednn). A value set here is kept by the command.
os.environ.setdefault("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "0")
# Likewise `keras-fr eval` asks for one thread per operation (keras_fr._threads), which would make every
# later test in the worker single-threaded; 0 is TensorFlow's own default, and the command keeps it.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "0")
# FaceRecognizer caches verified runtime files under $KERAS_FR_CACHE (default ~/.cache/keras_fr): the
# tests use a folder of their own, shared by the session (and its child processes) and removed after,
# so a test run never writes into the user's home.
_TEST_CACHE = tempfile.mkdtemp(prefix="keras_fr_test_cache_")
os.environ["KERAS_FR_CACHE"] = _TEST_CACHE

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
#: ../shared/data beside the project's root: real faces, never committed. Tests skip without it.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
LFW_DIR = SHARED_DATA / "lfw112"
CELEBA_DIR = SHARED_DATA / "celeba299"


@pytest.fixture
def lfw_dir():
    if not (LFW_DIR / "pairs.txt").is_file():
        pytest.skip(f"real LFW data not found at {LFW_DIR} (it is never committed; see README)")
    return LFW_DIR


@pytest.fixture
def celeba_dir():
    if not (CELEBA_DIR / "split.csv").is_file():
        pytest.skip(f"CelebA subset not found at {CELEBA_DIR} (it is never committed; see README)")
    return CELEBA_DIR


@pytest.fixture(autouse=True)
def _reset_dtype_policy():
    """Each test starts with the default dtype policy (mixed-precision tests change it)."""
    import keras

    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True, scope="module")
def _clear_keras_session():
    """Free Keras/TF global state once per test module (per test it cost ~1 s of teardown each), and
    give the freed heap back to the system: two test workers share the machine's memory, and a worker
    that kept a large module's garbage ran the other one out of memory."""
    import keras

    from keras_fr._memory import release_memory

    yield
    keras.backend.clear_session()
    release_memory()


def pytest_configure(config):
    # Make the top-level folders (benchmarks/, examples/) importable for tests that exercise them.
    import sys

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TEST_CACHE, ignore_errors=True)


# Opt-in memory log (KERAS_FR_TEST_MEMLOG=FILE): one line per test with its process's peak resident
# memory during the test (the kernel's high-water mark, reset before each test) and the largest child
# process so far, to find the tests that make two pytest-xdist workers run out of memory.
_MEMLOG = os.environ.get("KERAS_FR_TEST_MEMLOG")


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


if _MEMLOG:
    import json
    import resource
    import time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident size
        except OSError:
            pass
        start = time.time()
        yield
        record = {
            "test": item.nodeid,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "start": start,
            "end": time.time(),
            "hwm_mb": _status_kb("VmHWM") // 1024,
            "rss_mb": _status_kb("VmRSS") // 1024,
            "children_max_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
        }
        with open(_MEMLOG, "a") as f:
            f.write(json.dumps(record) + "\n")
