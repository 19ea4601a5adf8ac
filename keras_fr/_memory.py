"""Bounded garbage during long conversions, and freed memory handed back to the system.

tf2onnx's graph optimizer deep-copies the whole graph, weights included, at every pass and leaves the
copies in reference cycles. Python's cycle collector counts objects, not bytes, so it seldom runs
while those few, large objects pile up: converting LGAFResNet50 (170 MB of weights) to ONNX reached
13.4 GB of resident memory, 10.5 GB of it still held after the call returned, and a second test
worker beside it ran the machine out of memory. :func:`collect_while_growing` runs the collector from
a helper thread whenever anonymous resident memory has grown by a step since the last collection, and
:func:`release_memory` collects and returns the freed heap to the operating system afterwards.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import threading

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _statm_pages():
    try:
        with open("/proc/self/statm", "rb") as f:
            return [int(v) for v in f.read().split()]
    except (OSError, ValueError):
        return None


def resident_bytes():
    """This process's resident memory in bytes, or None where ``/proc`` is not available."""
    pages = _statm_pages()
    return pages[1] * _PAGE if pages and len(pages) > 1 else None


def anonymous_bytes():
    """This process's resident memory that no file backs (its heap and anonymous maps), in bytes, or
    None where ``/proc`` is not available.

    Garbage lives here. Resident memory as a whole also counts pages of mapped files (TensorFlow's
    libraries alone are about 1 GB), which the kernel drops and reloads under memory pressure, so
    growth measured on it can be hidden or faked by another process's load.
    """
    pages = _statm_pages()
    return (pages[1] - pages[2]) * _PAGE if pages and len(pages) > 2 else None


@functools.cache
def _malloc_trim_function():
    """glibc's ``malloc_trim``, or None elsewhere; looked up once (``find_library`` runs ``ldconfig``
    in a child process, and this is called after every export and every test module)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def _malloc_trim():
    """glibc's ``malloc_trim(0)`` (return free heap pages to the system); a no-op elsewhere."""
    trim = _malloc_trim_function()
    if trim is not None:
        trim(0)


def release_memory():
    """Collect reference cycles and hand the freed heap back to the operating system."""
    gc.collect()
    _malloc_trim()


#: TensorFlow's oneDNN builds (the default on x86) allocate tensors from a pool that keeps its
#: high-water mark for the life of the process: after LGAFResNet100 embedded 16 faces, 2 GB stayed
#: resident although every tensor was freed; with this variable set to 1 the same run kept nothing.
SYSTEM_ALLOCATOR_VARIABLE = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


def prefer_system_allocator():
    """Ask TensorFlow to allocate tensors with the system allocator (:data:`SYSTEM_ALLOCATOR_VARIABLE`),
    so that memory freed after a large batch, a second model or a conversion goes back to the system.

    It takes effect only if called before TensorFlow runs its first operation (importing TensorFlow
    is fine); a value the user already set is kept. ``keras-fr`` calls it for every sub-command but
    ``train`` and ``eval``, where the pool's reuse of same-sized buffers is what it is for
    (``keras_fr.cli.configure_process``).

    Returns:
        True if this call set the variable, False if it was already set.
    """
    if SYSTEM_ALLOCATOR_VARIABLE in os.environ:
        return False
    os.environ[SYSTEM_ALLOCATOR_VARIABLE] = "1"
    return True


@contextlib.contextmanager
def collect_while_growing(step_bytes=256 << 20, interval_s=0.25):
    """While active, collect and trim the heap (:func:`release_memory`) whenever anonymous resident
    memory (:func:`anonymous_bytes`) grew by ``step_bytes`` since the last time (checked every
    ``interval_s`` seconds from a daemon thread), and once more on exit. Where resident memory cannot
    be read, it only releases on exit.

    Example:

    >>> with collect_while_growing():  # doctest: +SKIP
    ...     tf2onnx.convert.from_function(...)
    """
    stop = threading.Event()
    watcher = None
    if anonymous_bytes() is not None:

        def watch():
            base = anonymous_bytes()
            while not stop.wait(interval_s):
                now = anonymous_bytes()
                if now is not None and now - base > step_bytes:
                    # Trim too: freed blocks kept in the heap would not show as a drop, the next
                    # step would be measured from above them and reuse them unseen, and the garbage
                    # held would grow by a step every round (seen with 16 MB blocks).
                    release_memory()
                    base = anonymous_bytes() or now

        watcher = threading.Thread(target=watch, name="keras_fr-gc-watch", daemon=True)
        watcher.start()
    try:
        yield
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
        release_memory()
