"""keras_fr._memory: garbage held in reference cycles stays bounded while a conversion runs.

The cycles here are what tf2onnx leaves behind (a few objects, each holding a large buffer): Python's
automatic collector counts objects, so it is disabled in both runs and only the watcher can free them.
"""

import gc
import os
import time

import numpy as np
import pytest

from keras_fr import _memory

CHUNK = 48 * 2**20
COUNT = 20  # about 1 GB of cycles in all


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("this kernel cannot reset the resident-memory high-water mark")


def _peak_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def _make_cycles():
    for i in range(COUNT):
        node = [np.full(CHUNK, i % 251, np.uint8)]  # pages touched: resident
        node.append(node)  # a reference cycle: only the cycle collector frees it
        del node
        time.sleep(0.05)  # the watcher's chance to run, even on a loaded machine


def _growth(use_watcher):
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        _reset_peak()
        before = _memory.resident_bytes()
        if use_watcher:
            with _memory.collect_while_growing(step_bytes=128 * 2**20, interval_s=0.01):
                _make_cycles()
        else:
            _make_cycles()
        return _peak_bytes() - before
    finally:
        gc.collect()
        if enabled:
            gc.enable()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_resident_bytes_sees_an_allocation():
    before = _memory.resident_bytes()
    block = np.ones(256 * 2**20, np.uint8)
    after = _memory.resident_bytes()
    assert after - before >= 200 * 2**20
    del block


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_watcher_bounds_garbage_held_in_cycles():
    unbounded = _growth(use_watcher=False)
    bounded = _growth(use_watcher=True)
    # Without the watcher every chunk stays until the end; with it, about one step plus a few chunks.
    assert unbounded >= 0.9 * COUNT * CHUNK
    assert bounded <= 128 * 2**20 + 6 * CHUNK, (bounded / 2**20, unbounded / 2**20)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_release_memory_frees_cycles_and_returns_the_heap():
    gc.disable()
    try:
        before = _memory.resident_bytes()
        _make_cycles()
        held = _memory.resident_bytes()
        _memory.release_memory()
        after = _memory.resident_bytes()
    finally:
        gc.enable()
    assert held - before >= 0.9 * COUNT * CHUNK
    assert after - before <= 2 * CHUNK


def test_watcher_stops_its_thread_and_reraises():
    import threading

    with pytest.raises(KeyError):
        with _memory.collect_while_growing():
            raise KeyError("inside")
    assert not any(t.name == "keras_fr-gc-watch" for t in threading.enumerate())
