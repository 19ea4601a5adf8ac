"""keras_fr._memory: garbage held in reference cycles stays bounded while a conversion runs.

The cycles here are what tf2onnx leaves behind (a few objects, each holding a large buffer): Python's
automatic collector counts objects, so it is disabled in both runs and only the watcher can free them.
"""

import gc
import os
import threading
import time
import weakref

import numpy as np
import pytest

from keras_fr import _memory

CHUNK = 4 * 2**20  # small enough for the heap (not a map of its own), where freed blocks are reused
COUNT = 150  # 600 MB of cycles in all
STEP = 16 * 2**20  # the watcher's step in these tests: four chunks


def _make_cycles(until=None):
    """Leave COUNT chunks in reference cycles (fewer if ``until()`` turns true after one); return the
    most chunks alive at once.

    Counted through weak references right after each allocation rather than read from the process's
    resident memory: on a loaded machine the kernel drops and reloads pages of mapped libraries, which
    moves resident memory by hundreds of megabytes while this runs (CI saw 881 MB of growth for 960 MB
    held).
    """
    alive = []
    most = 0
    for i in range(COUNT):
        chunk = np.full(CHUNK, i % 251, np.uint8)  # pages touched: resident
        alive.append(weakref.ref(chunk))
        node = [chunk]
        node.append(node)  # a reference cycle: only the cycle collector frees it
        del node, chunk
        most = max(most, sum(ref() is not None for ref in alive))
        time.sleep(0.03)  # the watcher's chance to run, even on a loaded machine
        if until is not None and until():
            break
    return most


def _most_held(use_watcher, until=None):
    # Start from a trimmed heap: the previous run's freed chunks (or another test's, in the same worker)
    # would otherwise sit in the heap, the chunks of this run would reuse them, and resident memory would
    # not grow for the watcher to see. A full-suite run on 2026-12-06 failed this way: 150 of 150 held,
    # while the test alone passed.
    _memory.release_memory()
    enabled = gc.isenabled()
    gc.disable()
    try:
        if use_watcher:
            with _memory.collect_while_growing(step_bytes=STEP, interval_s=0.01):
                return _make_cycles(until)
        return _make_cycles(until)
    finally:
        _memory.release_memory()
        if enabled:
            gc.enable()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_resident_and_anonymous_bytes_see_an_allocation():
    before = _memory.resident_bytes(), _memory.anonymous_bytes()
    block = np.ones(256 * 2**20, np.uint8)
    after = _memory.resident_bytes(), _memory.anonymous_bytes()
    assert after[0] - before[0] >= 200 * 2**20
    assert after[1] - before[1] >= 200 * 2**20
    assert 0 < after[1] < after[0]  # the libraries' pages are resident but file-backed
    del block


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_watcher_bounds_garbage_held_in_cycles():
    unbounded = _most_held(use_watcher=False)
    bounded = _most_held(use_watcher=True)
    # Without the watcher every chunk stays until the end; with it, about one step (4 chunks) plus one
    # or two on a quiet machine (6 of 150 measured). How late the watcher thread runs on a loaded
    # machine has no bound: in two full-suite runs beside another test worker it let 11 of 20 and 56
    # of 150 chunks pile up. So this only asserts that it collected during the run; the trim is
    # checked deterministically below, the real figures are in docs/architecture.md.
    assert unbounded == COUNT
    assert bounded < COUNT, (bounded, unbounded)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_watcher_trims_the_heap_when_it_collects(monkeypatch):
    # Freed blocks kept in the heap do not show as a drop in resident memory: without a trim the next
    # step is measured from above them, they are reused unseen, and the garbage alive at once grew by a
    # step every round (10-19 chunks of 16 MB with a 4-chunk step, against 5-6 with the trim).
    calls = []
    release = _memory.release_memory

    def spy():
        calls.append(threading.current_thread().name)
        release()

    monkeypatch.setattr(_memory, "release_memory", spy)
    # Stops at the watcher's first collection (_most_held itself releases on the main thread too).
    _most_held(use_watcher=True, until=lambda: "keras_fr-gc-watch" in calls)
    assert "keras_fr-gc-watch" in calls, calls  # the watcher itself, not only the exit


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_release_memory_frees_cycles_and_returns_the_heap():
    gc.disable()
    try:
        before = _memory.anonymous_bytes()
        _make_cycles()
        held = _memory.anonymous_bytes()
        _memory.release_memory()
        after = _memory.anonymous_bytes()
    finally:
        gc.enable()
    assert held - before >= 0.9 * COUNT * CHUNK
    assert after - before <= 6 * CHUNK


def test_watcher_stops_its_thread_and_reraises():
    with pytest.raises(KeyError):
        with _memory.collect_while_growing():
            raise KeyError("inside")
    assert not any(t.name == "keras_fr-gc-watch" for t in threading.enumerate())


def test_prefer_system_allocator_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv(_memory.SYSTEM_ALLOCATOR_VARIABLE, "0")
    assert _memory.prefer_system_allocator() is False
    assert os.environ[_memory.SYSTEM_ALLOCATOR_VARIABLE] == "0"
    monkeypatch.delenv(_memory.SYSTEM_ALLOCATOR_VARIABLE)
    assert _memory.prefer_system_allocator() is True
    assert os.environ[_memory.SYSTEM_ALLOCATOR_VARIABLE] == "1"


_HELD_AFTER_FREE = """
import sys
from keras_fr import _memory
if sys.argv[1] == "system":
    _memory.prefer_system_allocator()
import tensorflow as tf
x = tf.random.uniform((128, 1024, 1024))  # 512 MB
y = x + 1.0
del x, y
_memory.release_memory()
print(_memory.anonymous_bytes())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_system_allocator_gives_freed_tensors_back():
    # What prefer_system_allocator relies on, in fresh processes (the allocator is chosen once): with
    # oneDNN's pool the freed gigabyte stays resident, with the system allocator it does not. oneDNN is
    # switched on explicitly: TensorFlow enables it by default only on CPUs with AVX512_VNNI,
    # AVX512_BF16 or AMX, and on an AVX2-only EPYC (2026-12-06) it ran without it, so there was no pool
    # (255 MB held in both modes; with TF_ENABLE_ONEDNN_OPTS=1: 1,311 MB against 255).
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != _memory.SYSTEM_ALLOCATOR_VARIABLE}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    held = {}
    for mode in ("pool", "system"):
        out = subprocess.run([sys.executable, "-c", _HELD_AFTER_FREE, mode], env=env, check=True,
                             capture_output=True, text=True).stdout
        held[mode] = int(out.split()[-1])
    assert held["pool"] - held["system"] >= 700 * 2**20, {k: v / 2**20 for k, v in held.items()}
