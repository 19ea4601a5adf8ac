"""The one place that writes output files: atomically, with the user's umask, and never half-written.

Every file keras_fr writes (embeddings, reports, exported models, galleries, converted weights) goes
through :func:`atomic_path`: the content is written to a hidden temporary file in the target's folder,
flushed to disk and moved over the target with ``os.replace`` only when complete. On any exception,
Ctrl-C (SIGINT) or SIGTERM the temporary file is removed, and the target is left as it was. The final
file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask), not the
``0o600`` of ``tempfile``.

:func:`check_writable_output` checks an output path before any work starts, so a command never
computes for minutes and then fails to write.
"""

import contextlib
import errno
import hashlib
import os
import signal
import tempfile
import threading


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _TermAsInterrupt:
    """While active (main thread only), SIGTERM and SIGINT raise KeyboardInterrupt so cleanup code runs.

    The signal is also remembered: a library running when it arrives (the TFLite converter does) may
    catch the KeyboardInterrupt and raise an error of its own, or swallow it; either way the block
    then ends as an interruption (``KeyboardInterrupt``), never as that library's error or as success.
    """

    def __enter__(self):
        self.previous, self.received = {}, None
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                try:
                    self.previous[signum] = signal.signal(signum, self._raise)
                except (ValueError, OSError):  # not settable here (embedded interpreter)
                    pass
        return self

    def _raise(self, signum, frame):
        self.received = signum
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    def check(self):
        """Raise KeyboardInterrupt if a signal arrived (even one a library swallowed)."""
        if self.received is not None:
            raise KeyboardInterrupt(f"terminated by signal {self.received}")

    def __exit__(self, exc_type, exc, tb):
        for signum, previous in self.previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            self.check()
        return False


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path to write; it becomes ``path`` only if the block completes.

    Args:
        path: the final file.
        suffix: the temporary file's suffix (default: ``path``'s own extension, which some writers
            need, e.g. ``.weights.h5`` or ``.npz``).

    Raises:
        OSError: the folder is missing or not writable, or the disk is full (with the path named).

    Example:
        >>> with atomic_path("report.json") as tmp:  # doctest: +SKIP
        ...     open(tmp, "w").write("{}")
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if suffix is None:
        suffix = "".join(
            part for part in (".weights.h5",) if base.endswith(part)
        ) or os.path.splitext(base)[1]
    with _TermAsInterrupt() as signals:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{suffix}", dir=folder)
        os.close(fd)
        try:
            yield tmp
            signals.check()
            if os.path.exists(tmp):
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


def write_bytes(path, data):
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode(encoding))


def check_writable_output(path, argument="--output"):
    """Raise ``ValueError`` naming ``argument`` if ``path`` cannot be written (checked up front).

    The folder must exist and accept a new file (tried for real, then removed); an existing ``path``
    must be a file, not a folder.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{argument} {path!r} is a folder; expected a file path.")
    if not os.path.isdir(folder):
        raise ValueError(f"{argument} {path!r}: folder {folder!r} does not exist.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".keras_fr-write-check.", dir=folder)
    except OSError as exc:
        reason = "no space left on the device" if exc.errno == errno.ENOSPC else exc.strerror
        raise ValueError(f"{argument} {path!r}: cannot write into {folder!r} ({reason}).") from None
    os.close(fd)
    os.remove(probe)


def file_sha256(path):
    """The sha256 (hex) of a file's bytes, read in 1 MiB blocks: the one hashing of files in keras_fr
    (weights registry, runtime cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
