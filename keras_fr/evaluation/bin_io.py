"""insightface ``.bin`` verification sets, read without ever running code from the file.

A ``.bin`` (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...) is a pickle of the tuple
``(bins, issame_list)``: ``bins`` is a list of ``2 * P`` encoded images (JPEG/PNG bytes; pair ``i`` is
``bins[2i]``, ``bins[2i + 1]``) and ``issame_list`` a list of ``P`` booleans. Most were written by
Python 2, whose ``str`` images are read back as ``bytes`` (``encoding="bytes"``).

A pickle can name any Python callable and call it while loading. :func:`read_bin` therefore uses an
unpickler whose ``find_class`` never returns a real Python global: plain containers, bytes, strings,
numbers and booleans are all such a file needs. The one exception is how old pickle protocols spell
bytes: Python 3 writes ``bytes`` at protocols 0-2 as ``_codecs.encode(text, "latin1")`` and
``bytearray`` as ``builtins.bytearray(...)``; for these two names the unpickler returns its own small
decoders, which accept only those data arguments. Every other global is refused before anything runs.
"""

import io
import os
import pickle

import numpy as np

from keras_fr._atomic import atomic_path
from keras_fr.evaluation.pairset import EncodedImages  # noqa: F401 - public here since the start
from keras_fr.evaluation.pairset import PairSet


def _latin1_bytes(path, args):
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    if len(args) == 0:
        return b""
    raise pickle.UnpicklingError(f"{path}: unexpected arguments for a pickled bytes value.")


def _safe_decoder(path, kind):
    """Stand-ins for ``_codecs.encode`` / ``bytearray`` that only rebuild bytes from latin-1 text."""

    def decode(*args):
        data = _latin1_bytes(path, args)
        return bytearray(data) if kind == "bytearray" else data

    return decode


_BYTES_GLOBALS = {
    ("_codecs", "encode"): "bytes",
    ("builtins", "bytes"): "bytes",  # b"" at protocols 0-2
    ("__builtin__", "bytes"): "bytes",
    ("builtins", "bytearray"): "bytearray",
    ("__builtin__", "bytearray"): "bytearray",
}


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Loads only plain data: no real Python global (class or function) is ever returned."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module, name):
        module = module.decode("latin-1") if isinstance(module, bytes) else module
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        kind = _BYTES_GLOBALS.get((module, name))
        if kind is not None:
            return _safe_decoder(self._path, kind)
        raise pickle.UnpicklingError(
            f"refusing to load the Python global {module}.{name}: a verification .bin "
            "holds only lists of image bytes and booleans, and loading globals could run code "
            "(re-save it with plain lists, e.g. keras_fr.evaluation.write_bin)."
        )

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"{self._path}: persistent references are not allowed in a .bin file.")


def _as_bytes(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    return None


def read_bin(path, check_images=True):
    """Read an insightface verification ``.bin`` safely.

    Args:
        path: the ``.bin`` file.
        check_images: decode every image once now (about 0.3 ms per 112x112 JPEG) so that a broken
            entry is reported here, naming its index; the pixels are not kept (they are decoded again,
            batch by batch, when embedded). ``False`` defers every error to decoding time.

    Returns:
        A :class:`keras_fr.evaluation.PairSet` whose ``images`` is an :class:`EncodedImages` of ``2 * P``
        entries and whose ``pairs`` are ``(2i, 2i + 1)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not such a pickle (truncated, corrupt, holding Python globals,
            another structure), if an entry is not image bytes or a flag is not a boolean, or if
            ``len(images) != 2 * len(issame)``.

    Example:
        >>> pairs = read_bin("lfw.bin")  # doctest: +SKIP
        >>> len(pairs), len(pairs.images)  # doctest: +SKIP
        (6000, 12000)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"verification .bin file not found: {path}")
    with open(path, "rb") as f:
        try:
            obj = _NoGlobalsUnpickler(f, path).load()
        except pickle.UnpicklingError as exc:
            if "truncated" in str(exc):
                raise ValueError(f"{path}: truncated .bin file (the pickle ends early).") from None
            raise ValueError(f"{path}: not a valid verification .bin: {exc}") from None
        except EOFError:
            raise ValueError(f"{path}: truncated .bin file (the pickle ends early).") from None
        except Exception as exc:  # corrupt opcodes raise many exception types
            raise ValueError(
                f"{path}: corrupt .bin file, cannot be unpickled ({type(exc).__name__}: {exc})."
            ) from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(
            f"{path}: expected a pickled pair (images, issame); got {type(obj).__name__}"
            + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
            + "."
        )
    bins, issame_list = obj
    if not isinstance(bins, (list, tuple)) or not isinstance(issame_list, (list, tuple)):
        raise ValueError(
            f"{path}: expected lists of images and of flags; got {type(bins).__name__} and "
            f"{type(issame_list).__name__}."
        )
    if len(bins) != 2 * len(issame_list):
        raise ValueError(
            f"{path}: {len(bins)} images for {len(issame_list)} pairs; a .bin holds exactly 2 images per "
            f"pair (expected {2 * len(issame_list)})."
        )
    if not issame_list:
        raise ValueError(f"{path}: the file holds no pairs.")
    images = []
    for i, value in enumerate(bins):
        data = _as_bytes(value)
        if data is None:
            raise ValueError(f"{path}: image entry {i} is {type(value).__name__}, expected encoded image bytes.")
        images.append(data)
    issame = np.zeros(len(issame_list), dtype=bool)
    for i, flag in enumerate(issame_list):
        if isinstance(flag, (bool, np.bool_)) or (isinstance(flag, int) and flag in (0, 1)):
            issame[i] = bool(flag)
        else:
            raise ValueError(f"{path}: issame entry {i} is {flag!r}, expected a boolean.")
    encoded = EncodedImages(images, source=path)
    if check_images:
        from PIL import Image

        for i, data in enumerate(images):
            try:
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
            except Exception as exc:
                raise ValueError(
                    f"{path}: image entry {i} is not a readable image ({type(exc).__name__}: {exc})."
                ) from None
    n = len(issame)
    pairs = np.stack([np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)], axis=1)
    return PairSet(images=encoded, pairs=pairs, issame=issame, source=path, nfolds=10)


def _encode(image, fmt):
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"`images` entries must be encoded bytes or RGB uint8 arrays (H, W, 3); got "
            f"{array.dtype} {array.shape}."
        )
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_bin(path, images, issame, image_format="JPEG"):
    """Write a verification ``.bin`` in insightface's format (plain lists, no Python globals).

    The file is ``pickle.dump((bins, issame_list), f, protocol=pickle.HIGHEST_PROTOCOL)`` with ``bins``
    a list of encoded image bytes and ``issame_list`` a list of bools, written to a temporary file in the
    same folder and then moved into place.

    Args:
        path: output file.
        images: ``2 * P`` images, each encoded bytes or an RGB uint8 (H, W, 3) array (encoded here),
            or one (2P, H, W, 3) uint8 array. Pair ``i`` is ``images[2i]``, ``images[2i + 1]``.
        issame: ``P`` flags.
        image_format: ``"JPEG"`` (insightface's files) or ``"PNG"`` (lossless).

    Returns:
        ``path``.

    Raises:
        ValueError: if the counts do not match or an image is not uint8 RGB.

    Example:
        >>> faces = np.zeros((4, 112, 112, 3), "uint8")
        >>> write_bin("tiny.bin", faces, [True, False])  # doctest: +SKIP
    """
    if image_format not in ("JPEG", "PNG"):
        raise ValueError(f"`image_format` must be 'JPEG' or 'PNG'; got {image_format!r}.")
    issame_list = [bool(v) for v in np.asarray(issame).ravel()]
    images = list(images)
    if len(images) != 2 * len(issame_list):
        raise ValueError(
            f"`images` must hold 2 images per pair: {len(images)} images for {len(issame_list)} pairs."
        )
    bins = [_encode(image, image_format) for image in images]
    path = os.fspath(path)
    with atomic_path(path, suffix=".bin") as tmp:
        with open(tmp, "wb") as f:
            pickle.dump((bins, issame_list), f, protocol=pickle.HIGHEST_PROTOCOL)
    return path
