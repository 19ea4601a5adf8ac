"""Read PyTorch-style state dicts from ``.pt``/``.pth``, ``.safetensors`` and ``.npz`` files, safely.

- ``.pt`` / ``.pth``: ``torch.load(weights_only=True)`` (torch is imported only here, lazily): a
  pickle that would build anything other than tensors and plain containers (e.g. run code through
  ``__reduce__``) is refused, never executed.
- ``.safetensors``: a NumPy-only reader (8-byte little-endian header length, a JSON header, raw
  little-endian buffers), so no torch and no ``safetensors`` package are needed.
- ``.npz``: ``numpy.load(allow_pickle=False)``.

Training checkpoints are unwrapped (``state_dict_backbone``, ``state_dict``, ``model``) and the
``module.`` (DistributedDataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes are stripped.
What is set aside (e.g. the margin-softmax class centers ``state_dict_softmax_fc``, optimizer state,
epoch counters) is recorded in the returned ``CheckpointInfo`` so the conversion report can say so.
"""

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field

import numpy as np
from keras_fr._atomic import atomic_path

#: Extensions this module reads.
SUPPORTED_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")
#: Keys of a training checkpoint dict that hold the network weights, in order of preference.
WRAPPER_KEYS = ("state_dict_backbone", "state_dict", "model", "model_state_dict", "backbone")
#: Keys of a training checkpoint dict that hold a margin-softmax classification head.
SOFTMAX_KEYS = ("state_dict_softmax_fc", "state_dict_margin", "head", "margin")
STRIP_PREFIXES = ("module.", "_orig_mod.")

_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"),  # decoded to float32 below
}
#: A header larger than this is not a safetensors header (the format caps it at 100 MB).
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely or has no recognizable weights."""


@dataclass
class CheckpointInfo:
    """What was found in a checkpoint besides the network's state dict.

    Attributes:
        path: the file read.
        format: "torch", "safetensors" or "npz".
        wrapper: the training-dict key the weights came from (e.g. "state_dict_backbone"), or None.
        stripped_prefixes: prefixes removed from every key ("module.", "_orig_mod.").
        softmax: the margin-softmax / classification head tensors set aside, name -> shape.
        other_entries: other top-level entries of a training dict that were ignored (names).
        metadata: the safetensors ``__metadata__`` (if any).
    """

    path: str
    format: str
    wrapper: str = None
    stripped_prefixes: list = field(default_factory=list)
    softmax: dict = field(default_factory=dict)
    other_entries: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


def read_safetensors(path):
    """Read a ``.safetensors`` file into a dict of NumPy arrays, with NumPy only.

    Args:
        path: the file.

    Returns:
        ``(tensors, metadata)``: name -> ``numpy.ndarray`` (BF16 is decoded to float32) and the
        header's ``__metadata__`` dict (empty if absent).

    Raises:
        CheckpointError: a malformed header, an unknown dtype, or buffers that do not fit the file.

    Example:

    >>> tensors, meta = read_safetensors("model.safetensors")
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header size).")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise CheckpointError(
            f"{path}: not a safetensors file (header size {header_len} does not fit a "
            f"{len(data)}-byte file)."
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON: {exc}).") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object).")
    buffer = memoryview(data)[8 + header_len :]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in header.items():
        try:
            dtype_name, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}.") from None
        if dtype_name not in _SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {dtype_name!r}; supported: "
                f"{', '.join(sorted(_SAFETENSORS_DTYPES))}."
            )
        dtype = _SAFETENSORS_DTYPES[dtype_name]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= begin <= end <= len(buffer)) or end - begin != count * dtype.itemsize:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({dtype_name}, shape {shape}) has data offsets "
                f"[{begin}, {end}] that do not match its size or the file."
            )
        array = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape).copy()
        if dtype_name == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array
    return tensors, dict(metadata)


def write_safetensors(path, tensors, metadata=None):
    """Write a dict of NumPy arrays as ``.safetensors`` (NumPy only; atomic replace).

    Args:
        path: destination file.
        tensors: name -> array (float64/32/16, int64/32/16/8, uint8, bool).
        metadata: optional dict of strings stored as ``__metadata__``.
    """
    reverse = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items() if k != "BF16"}
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if np.dtype(dtype) not in reverse:
            raise ValueError(f"write_safetensors: tensor {name!r} has unsupported dtype {array.dtype}.")
        raw = array.astype(dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": reverse[np.dtype(dtype)],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # keep buffers 8-byte aligned
    _atomic_write(path, [len(blob).to_bytes(8, "little"), blob, *chunks])


def _atomic_write(path, chunks):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)


def _torch_load(path):
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading a PyTorch .pt/.pth checkpoint needs torch (pip install "
            "'keras_fr[torch]'); a .safetensors or .npz copy of the weights needs nothing extra."
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        if not any("unsupported global" in line.lower() for line in first):
            # a damaged stream ("Unsupported operand", "invalid load key"), not a refused object
            detail = next((line.strip() for line in first if "unsupported" in line.lower()
                           or "load key" in line.lower()), "unreadable pickle stream")
            detail = f"damaged pickle stream: {detail[:120]}"
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail}).") from None
        detail = next((line for line in first if "unsupported global" in line.lower()), "")
        raise CheckpointError(
            f"{path}: refused to load: the checkpoint's pickle asks to build objects other than "
            "tensors and plain containers (it could run code), so it was not unpickled. "
            "Save the weights with torch.save(model.state_dict(), ...) or as .safetensors. "
            + (f"({detail.strip()})" if detail else "")
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail}).") from None


def _to_numpy(value):
    """A torch tensor or array-like -> numpy; floating tensors of any precision -> their numpy type
    (bfloat16 -> float32)."""
    if hasattr(value, "detach"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(value)


def _is_tensor(value):
    return hasattr(value, "detach") or isinstance(value, np.ndarray)


def _flatten(obj, prefix=""):
    """Nested dicts of tensors -> flat dotted names (non-tensors are skipped)."""
    flat = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif _is_tensor(value):
            flat[name] = value
    return flat


def _unwrap(obj, info):
    """Pick the network weights out of a (possibly nested) training checkpoint."""
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{info.path}: expected a state dict (a dict of tensors) or a training checkpoint dict; "
            f"found a {type(obj).__name__}."
        )
    # A flat file (safetensors, npz) may carry the wrapper as a key prefix.
    if all(isinstance(k, str) for k in obj) and not any(isinstance(v, dict) for v in obj.values()):
        groups = {}
        for key in obj:
            head, _, rest = key.partition(".")
            if rest and head in WRAPPER_KEYS + SOFTMAX_KEYS:
                groups.setdefault(head, {})[rest] = obj[key]
        if groups and sum(len(g) for g in groups.values()) == len(obj):
            obj = groups
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), dict) and any(
            _is_tensor(v) for v in _flatten(obj[key]).values()
        ):
            info.wrapper = key
            for other, value in obj.items():
                if other == key:
                    continue
                if other in SOFTMAX_KEYS and isinstance(value, dict):
                    for name, tensor in _flatten(value, other + ".").items():
                        info.softmax[name] = tuple(_to_numpy(tensor).shape)
                else:
                    info.other_entries.append(str(other))
            return _flatten(obj[key])
    flat = _flatten(obj)
    if not flat:
        raise CheckpointError(
            f"{info.path}: no tensors found; top-level entries: {sorted(map(str, obj))[:20]}."
        )
    return flat


def _strip_prefixes(state, info):
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                info.stripped_prefixes.append(prefix)
                changed = True
    # Partially prefixed (e.g. only some keys through torch.compile): strip per key.
    for prefix in STRIP_PREFIXES:
        if any(f".{prefix}" in f".{k}" for k in state):
            renamed = {}
            for k, v in state.items():
                new = ".".join(p for p in k.split(".") if p != prefix[:-1])
                if new in renamed:
                    raise CheckpointError(
                        f"{info.path}: keys {k!r} and another collide once {prefix!r} is removed."
                    )
                renamed[new] = v
            if prefix not in info.stripped_prefixes:
                info.stripped_prefixes.append(prefix)
            state = renamed
    return state


_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_NPY_MAGIC = b"\x93NUMPY"


def _check_magic(path, ext):
    """Name what a file is not, from its first bytes, before any parser (or pickle) sees it.

    A PyTorch checkpoint is a zip archive (``torch.save`` since 1.6) or a pickle stream (the legacy
    format, starting with the PROTO opcode ``0x80``); an ``.npz`` is a zip archive (or a single
    ``.npy``). Anything else is refused here, so random bytes are never reported as a pickle.
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint.")
    if ext == ".npz":
        if not (head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)) or head.startswith(_NPY_MAGIC)):
            raise CheckpointError(f"{path}: not a .npz archive (not a zip file).")
    elif ext in (".pt", ".pth", ".bin", ".ckpt"):
        if not (head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80"):
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle stream)."
            )


def read_checkpoint(path):
    """Read a checkpoint file into a flat state dict of NumPy arrays.

    Args:
        path: a ``.pt``/``.pth`` (also ``.bin``/``.ckpt`` torch files), ``.safetensors`` or
            ``.npz`` file holding a state dict or a training checkpoint dict.

    Returns:
        ``(state_dict, info)``: PyTorch key -> ``numpy.ndarray`` (prefixes stripped, wrapper
        unwrapped) and a `CheckpointInfo`.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError (a ValueError): unsupported extension, unreadable file, a pickle that
            would run code, or no tensors.

    Example:

    >>> state, info = read_checkpoint("backbone.pth")
    >>> info.wrapper, len(state)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise CheckpointError(
            f"{path}: unsupported checkpoint extension {ext!r}; expected one of "
            f"{', '.join(SUPPORTED_EXTENSIONS)}."
        )
    _check_magic(path, ext)
    if ext == ".safetensors":
        info = CheckpointInfo(path, "safetensors")
        raw, info.metadata = read_safetensors(path)
    elif ext == ".npz":
        info = CheckpointInfo(path, "npz")
        try:
            with np.load(path, allow_pickle=False) as archive:
                raw = {name: archive[name] for name in archive.files}
        except ValueError as exc:
            if "pickle" not in str(exc).lower():
                raise CheckpointError(f"{path}: not a readable .npz archive ({exc}).") from None
            raise CheckpointError(
                f"{path}: refused to read: the .npz holds pickled objects ({exc})."
            ) from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"{path}: not a readable .npz file ({exc}).") from None
    else:
        info = CheckpointInfo(path, "torch")
        raw = _torch_load(path)
    state = _unwrap(raw, info)
    state = _strip_prefixes(state, info)
    return {k: _to_numpy(v) for k, v in state.items()}, info
