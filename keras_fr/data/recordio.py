"""insightface's MXNet RecordIO training sets (``train.rec``, ``train.idx``, ``property``), without mxnet.

The format, as facts (dmlc-core ``recordio`` + mxnet ``recordio.py`` + insightface's datasets):

- ``.rec``: a sequence of records. Each record is the little-endian uint32 magic ``0xced7230a``, a
  uint32 ``lrecord`` whose upper 3 bits are ``cflag`` and lower 29 bits the payload ``length``, the
  payload, then zero padding to a multiple of 4 bytes. A payload that contains the magic word at a
  4-byte-aligned offset is written in parts, the magic word itself removed at each cut: ``cflag`` 1 =
  first part, 2 = middle part, 3 = last part (0 = a whole record); the reader joins the parts with the
  magic word in between.
- ``.idx``: text lines ``key<TAB>byte offset`` of each record in the ``.rec``.
- Payload of an image record: the ``IRHeader`` struct ``'IfQQ'`` (uint32 ``flag``, float32 ``label``,
  uint64 ``id``, uint64 ``id2``; 24 bytes), then, if ``flag > 0``, ``flag`` float32 labels (the header's
  own label field is then unused), then the encoded image (JPEG/PNG).
- insightface's sets: record 0 has ``flag > 0`` and labels ``(a, b)``: images are keys ``1 .. a-1``,
  keys ``a .. b-1`` are one record per identity whose labels are its image key range. An image's class
  is its header label (the first of its label array when ``flag > 0``). ``property`` holds
  ``num_classes,height,width``.
"""

import collections
import contextlib
import numbers
import os
import struct

import numpy as np
import tensorflow as tf

from keras_fr._atomic import atomic_path
from keras_fr.data.folder import _batched_pipeline, _check_batch_size, _image_size, decode_and_resize

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24

IRHeader = collections.namedtuple("IRHeader", ["flag", "label", "id", "id2"])


def _pad(length):
    return (4 - length % 4) % 4


def encode_record(payload):
    """Encode one payload as the bytes of a RecordIO record.

    A payload containing the magic word at a 4-byte-aligned offset is split
    into several parts, as the RecordIO format requires.

    Args:
        payload: The record's payload, as bytes (or any bytes-like object).

    Returns:
        The encoded record (one or more parts, each with its header and
        padding), as `bytes`.
    """
    payload = bytes(payload)
    out = []
    start = 0
    aligned = len(payload) - len(payload) % 4
    for i in range(0, aligned, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            part = payload[start:i]
            cflag = 1 if start == 0 else 2
            out += [_MAGIC_BYTES, struct.pack("<I", (cflag << 29) | len(part)), part, b"\0" * _pad(len(part))]
            start = i + 4
    part = payload[start:]
    cflag = 3 if start else 0
    out += [_MAGIC_BYTES, struct.pack("<I", (cflag << 29) | len(part)), part, b"\0" * _pad(len(part))]
    return b"".join(out)


def pack_header(label, payload, id=0, id2=0):
    """Prefix a payload with an `IRHeader`, making an image record's payload.

    Args:
        label: The label: a number is stored in the header's `label` field
            (with `flag=0`); an array-like is stored as float32 values right
            after the header (with `flag` set to its size).
        payload: The bytes that follow the header, e.g. an encoded image.
        id: The header's `id` field (uint64). Defaults to `0`.
        id2: The header's `id2` field (uint64). Defaults to `0`.

    Returns:
        The header, the labels (if `label` is an array) and the payload, as
        `bytes`.
    """
    if isinstance(label, numbers.Number):
        return struct.pack(_IR_FORMAT, 0, float(label), id, id2) + bytes(payload)
    label = np.asarray(label, dtype="<f4").ravel()
    return struct.pack(_IR_FORMAT, label.size, 0.0, id, id2) + label.tobytes() + bytes(payload)


def unpack_header(record):
    """Split a record's payload into its `IRHeader` and the rest.

    Args:
        record: The bytes of a record's payload, as `pack_header` makes them.

    Returns:
        A tuple `(header, payload)`: `header` is an `IRHeader` whose `label`
        is a float, or a float32 array when `header.flag > 0`; `payload` is
        the bytes after the header and labels.

    Raises:
        ValueError: If the record is shorter than the 24-byte header, or
            shorter than the number of labels the header announces.
    """
    if len(record) < _IR_SIZE:
        raise ValueError(f"record of {len(record)} bytes is shorter than the 24-byte IRHeader.")
    flag, label, id_, id2 = struct.unpack(_IR_FORMAT, record[:_IR_SIZE])
    payload = record[_IR_SIZE:]
    if flag > 0:
        if len(payload) < 4 * flag:
            raise ValueError(f"record header announces {flag} labels but the record is too short.")
        label = np.frombuffer(payload[: 4 * flag], dtype="<f4").copy()
        payload = payload[4 * flag :]
    return IRHeader(flag, label, id_, id2), payload


class RecordIOReader:
    """Random access to an indexed RecordIO file (``.rec`` + ``.idx``), thread-safe (``os.pread``).

    Args:
        rec_path: the ``.rec`` file.
        idx_path: the ``.idx`` file (default: ``rec_path`` with ``.idx``).

    Attributes:
        keys: sorted record keys.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a malformed index line or record.

    Example:

    >>> reader = RecordIOReader("faces_emore/train.rec")
    >>> header, image_bytes = reader.read_image(1)
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path) if idx_path else os.path.splitext(self.rec_path)[0] + ".idx"
        for path in (self.rec_path, self.idx_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"RecordIO file {path!r} not found.")
        self.offsets = {}
        with open(self.idx_path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 2:
                    raise ValueError(
                        f"{self.idx_path!r} line {number}: expected 'key<TAB>offset', got {line!r}."
                    )
                self.offsets[int(fields[0])] = int(fields[1])
        self.keys = sorted(self.offsets)
        self._fd = os.open(self.rec_path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    def close(self):
        """Close the `.rec` file. Calling it again does nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_part(self, offset):
        head = os.pread(self._fd, 8, offset)
        if len(head) < 8:
            raise ValueError(f"{self.rec_path!r}: truncated record header at byte {offset}.")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise ValueError(
                f"{self.rec_path!r}: bad magic 0x{magic:08x} at byte {offset} (expected 0x{MAGIC:08x});"
                " is the .idx file from this .rec?"
            )
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        data = os.pread(self._fd, length, offset + 8)
        if len(data) < length:
            raise ValueError(f"{self.rec_path!r}: truncated record at byte {offset}.")
        return cflag, data, offset + 8 + length + _pad(length)

    def read(self, key):
        """The payload bytes of record ``key`` (multi-part records joined)."""
        if key not in self.offsets:
            raise KeyError(f"no record with key {key} in {self.idx_path!r}.")
        cflag, data, offset = self._read_part(self.offsets[key])
        if cflag == 0:
            return data
        if cflag != 1:
            raise ValueError(f"{self.rec_path!r}: record {key} starts with part flag {cflag}.")
        parts = [data]
        while cflag != 3:
            cflag, data, offset = self._read_part(offset)
            if cflag not in (2, 3):
                raise ValueError(f"{self.rec_path!r}: record {key} has part flag {cflag} mid-record.")
            parts += [_MAGIC_BYTES, data]
        return b"".join(parts)

    def read_header(self, key):
        """``(IRHeader, payload)`` of record ``key``."""
        return unpack_header(self.read(key))

    def read_image(self, key):
        """``(integer class label, encoded image bytes)`` of image record ``key``."""
        header, payload = self.read_header(key)
        label = header.label
        if not isinstance(label, numbers.Number):
            label = label[0]
        return int(label), payload

    def image_keys(self):
        """The image record keys: ``1 .. a-1`` for insightface's layout (record 0 header), else all."""
        if 0 in self.offsets:
            header, _ = self.read_header(0)
            if header.flag > 0:
                return list(range(1, int(header.label[0])))
        return list(self.keys)


def _resolve(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        rec = os.path.join(path, "train.rec")
    else:
        rec = path
    if not os.path.isfile(rec):
        raise FileNotFoundError(f"RecordIO file {rec!r} not found (give a folder with train.rec or the .rec).")
    return rec


def read_property(path):
    """Read insightface's `property` file.

    Args:
        path: The path of the `property` file, which holds
            `num_classes,height,width`.

    Returns:
        A tuple of ints `(num_classes, height, width)`.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file does not hold three comma-separated integers.
    """
    path = os.fspath(path)
    with open(path) as f:
        fields = f.read().strip().split(",")
    try:
        num_classes, height, width = (int(v) for v in fields)
    except ValueError:
        raise ValueError(
            f"{path!r} must hold 'num_classes,height,width'; got {','.join(fields)!r}."
        ) from None
    return num_classes, height, width


def recordio_dataset(
    path,
    image_size=112,
    batch_size=64,
    shuffle=True,
    seed=None,
    preprocess=True,
    augmentation=None,
    drop_remainder=False,
    repeat=False,
    shuffle_buffer=None,
    num_parallel_calls=None,
):
    """A ``tf.data`` pipeline of ``(images, labels)`` from an insightface RecordIO set, without mxnet.

    Args:
        path: a folder with ``train.rec``, ``train.idx`` (and ``property``), or the ``.rec`` file.
        image_size, batch_size, shuffle, seed, preprocess, augmentation, drop_remainder, repeat,
            shuffle_buffer, num_parallel_calls: as for ``image_folder_dataset``.

    Returns:
        ``(dataset, info)``: the dataset and a dict with ``num_images``, ``num_classes`` (from
        ``property`` if present, else None) and ``reader`` (the ``RecordIOReader``).

    Raises:
        FileNotFoundError: missing files. ValueError: malformed files or arguments.

    Example:

    >>> dataset, info = recordio_dataset("faces_emore/", batch_size=128)
    >>> model = FaceTrainingModel(backbone, num_classes=info["num_classes"])
    """
    size = _image_size(image_size)
    _check_batch_size(batch_size)
    rec = _resolve(path)
    reader = RecordIOReader(rec)
    keys = np.asarray(reader.image_keys(), np.int64)
    if keys.size == 0:
        raise ValueError(f"{rec!r} holds no image records.")
    prop = os.path.join(os.path.dirname(rec), "property")
    num_classes = read_property(prop)[0] if os.path.isfile(prop) else None

    def read(key):
        label, payload = reader.read_image(int(key))
        return np.int32(label), payload

    def load(key):
        label, payload = tf.numpy_function(read, [key], (tf.int32, tf.string), stateful=False)
        label.set_shape(())
        return decode_and_resize(payload, size, preprocess), label

    dataset = _batched_pipeline(
        tf.data.Dataset.from_tensor_slices(keys), len(keys), load, batch_size, shuffle, seed,
        shuffle_buffer, repeat, num_parallel_calls, drop_remainder, augmentation,
    )
    info = {"num_images": int(keys.size), "num_classes": num_classes, "reader": reader}
    return dataset, info


def _encode_image(image, image_format):
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    import io

    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"images must be encoded bytes or uint8 RGB arrays (H, W, 3); got {array.dtype} {array.shape}."
        )
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format={"jpg": "JPEG", "png": "PNG"}[image_format], quality=95)
    return buffer.getvalue()


def write_recordio(directory, images, labels, image_format="png", prefix="train", image_size=None):
    """Write images in insightface's RecordIO layout: ``<prefix>.rec``, ``<prefix>.idx`` and ``property``.

    Record 0 is the header (labels ``(a, b)``), images are keys ``1 .. n`` sorted by label, then one
    record per identity with its image key range, exactly the layout ``recordio_dataset`` reads (and
    insightface's own loaders). Files are written to temporary names and renamed at the end.

    Args:
        directory: output folder (created).
        images: a sequence of encoded image bytes or uint8 RGB arrays.
        labels: integer labels in ``[0, num_classes)``, one per image.
        image_format: ``"png"`` (lossless, default) or ``"jpg"`` for arrays.
        prefix: file name prefix (``train``).
        image_size: (height, width) for ``property``; default: the first array's size or 112x112.

    Returns:
        The path of the ``.rec`` file.

    Raises:
        ValueError: mismatched lengths, negative labels or bad images.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    if len(images) != labels.size:
        raise ValueError(f"{len(images)} images but {labels.size} labels.")
    if labels.size == 0 or labels.min() < 0:
        raise ValueError("`labels` must be non-empty non-negative integers.")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"`image_format` must be 'png' or 'jpg'; got {image_format!r}.")
    if image_size is None:
        first = images[0]
        image_size = (112, 112) if isinstance(first, (bytes, bytearray)) else np.asarray(first).shape[:2]
    os.makedirs(directory, exist_ok=True)
    order = np.argsort(labels, kind="stable")
    num_classes = int(labels.max()) + 1
    n = labels.size
    records = {}
    for key, i in enumerate(order, 1):
        records[key] = pack_header(float(labels[i]), _encode_image(images[i], image_format), id=key)
    first_id_key = n + 1
    for c in range(num_classes):
        keys = np.nonzero(labels[order] == c)[0] + 1
        start, end = (int(keys[0]), int(keys[-1]) + 1) if keys.size else (0, 0)
        records[first_id_key + c] = pack_header([start, end], b"", id=first_id_key + c)
    records[0] = pack_header([first_id_key, first_id_key + num_classes], b"")
    targets = {
        "rec": os.path.join(directory, prefix + ".rec"),
        "idx": os.path.join(directory, prefix + ".idx"),
        "property": os.path.join(directory, "property"),
    }

    with contextlib.ExitStack() as stack:  # all three are renamed into place only if all were written
        temps = {k: stack.enter_context(atomic_path(target, suffix="")) for k, target in targets.items()}
        offset = 0
        with open(temps["rec"], "wb") as rec, open(temps["idx"], "w") as idx:
            for key in sorted(records):
                blob = encode_record(records[key])
                rec.write(blob)
                idx.write(f"{key}\t{offset}\n")
                offset += len(blob)
        with open(temps["property"], "w") as f:
            f.write(f"{num_classes},{int(image_size[0])},{int(image_size[1])}")
    return targets["rec"]
