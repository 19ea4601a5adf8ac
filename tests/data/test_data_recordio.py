"""RecordIO: byte layout checked by hand, multi-part records, insightface's header layout, the dataset."""

import struct

import numpy as np
import pytest

from keras_fr.data.recordio import (
    MAGIC,
    RecordIOReader,
    encode_record,
    pack_header,
    read_property,
    recordio_dataset,
    unpack_header,
    write_recordio,
)

MAGIC_LE = bytes([0x0A, 0x23, 0xD7, 0xCE])  # 0xced7230a, little-endian


def test_single_record_bytes_by_hand():
    assert struct.pack("<I", MAGIC) == MAGIC_LE
    # magic, lrecord = cflag 0 << 29 | length 5, payload, 3 bytes of padding to 4-byte alignment.
    assert encode_record(b"hello") == MAGIC_LE + bytes([5, 0, 0, 0]) + b"hello" + b"\0\0\0"
    assert encode_record(b"abcd") == MAGIC_LE + bytes([4, 0, 0, 0]) + b"abcd"


def test_magic_inside_payload_splits_into_parts():
    payload = b"AAAA" + MAGIC_LE + b"BB" + b"CC" + MAGIC_LE + b"D"
    expected = (
        MAGIC_LE + struct.pack("<I", (1 << 29) | 4) + b"AAAA"            # first part
        + MAGIC_LE + struct.pack("<I", (2 << 29) | 4) + b"BBCC"          # middle part
        + MAGIC_LE + struct.pack("<I", (3 << 29) | 1) + b"D" + b"\0\0\0"  # last part, padded
    )
    assert encode_record(payload) == expected
    # Not at a 4-byte-aligned offset: no split.
    unaligned = b"A" + MAGIC_LE + b"ZZZ"
    assert encode_record(unaligned)[4:8] == struct.pack("<I", 8)


def test_reader_joins_parts(tmp_path):
    payloads = [b"x" * 7, b"AAAA" + MAGIC_LE + b"BBBB" + MAGIC_LE, MAGIC_LE + b"tail", b""]
    offsets, blob = [], b""
    for p in payloads:
        offsets.append(len(blob))
        blob += encode_record(p)
    (tmp_path / "t.rec").write_bytes(blob)
    (tmp_path / "t.idx").write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets)))
    with RecordIOReader(tmp_path / "t.rec") as reader:
        assert [reader.read(k) for k in range(len(payloads))] == payloads
        with pytest.raises(KeyError):
            reader.read(99)


def test_header_struct_by_hand():
    packed = pack_header(3.0, b"IMG", id=7, id2=9)
    assert len(packed) == 24 + 3
    assert packed[:24] == struct.pack("<I", 0) + struct.pack("<f", 3.0) + struct.pack("<Q", 7) + struct.pack("<Q", 9)
    header, payload = unpack_header(packed)
    assert (header.flag, header.label, header.id, header.id2, payload) == (0, 3.0, 7, 9, b"IMG")
    packed = pack_header([10, 20], b"")
    assert struct.unpack("<I", packed[:4])[0] == 2
    header, payload = unpack_header(packed)
    np.testing.assert_array_equal(header.label, [10.0, 20.0])
    assert payload == b""


def _faces(num_ids=3, per_id=4, size=12, seed=0):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(num_ids):
        for _ in range(per_id):
            images.append(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            labels.append(c)
    return images, np.array(labels)


def test_write_then_read_insightface_layout(tmp_path):
    images, labels = _faces()
    # Shuffle input order: the writer sorts by label as insightface's sets are.
    perm = np.random.default_rng(1).permutation(len(labels))
    images = [images[i] for i in perm]
    labels = labels[perm]
    write_recordio(tmp_path, images, labels)
    assert read_property(tmp_path / "property") == (3, 12, 12)
    reader = RecordIOReader(tmp_path / "train.rec")
    header0, _ = reader.read_header(0)
    n = len(labels)
    np.testing.assert_array_equal(header0.label, [n + 1, n + 1 + 3])
    assert reader.image_keys() == list(range(1, n + 1))
    # Identity records hold each class's key range, and images in it carry that label.
    for c in range(3):
        header, _ = reader.read_header(n + 1 + c)
        start, end = (int(v) for v in header.label)
        assert [reader.read_image(k)[0] for k in range(start, end)] == [c] * 4
    # The idx offsets point at records: the byte at each offset is the magic number.
    raw = (tmp_path / "train.rec").read_bytes()
    for line in (tmp_path / "train.idx").read_text().splitlines():
        offset = int(line.split("\t")[1])
        assert raw[offset : offset + 4] == MAGIC_LE
    # Pixels survive (PNG is lossless) and the dataset gives them with the right labels.
    dataset, info = recordio_dataset(tmp_path, image_size=12, batch_size=64, shuffle=False, preprocess=False)
    assert info["num_images"] == n and info["num_classes"] == 3
    got_images, got_labels = next(iter(dataset))
    got_images, got_labels = got_images.numpy(), got_labels.numpy()
    np.testing.assert_array_equal(got_labels, np.sort(labels))
    expected = [images[i] for i in np.argsort(labels, kind="stable")]
    np.testing.assert_array_equal(got_images, np.asarray(expected, np.float32))


def test_dataset_resizes_shuffles_and_preprocesses(tmp_path):
    images, labels = _faces(num_ids=2, per_id=5, size=20)
    write_recordio(tmp_path, images, labels, image_format="jpg")
    dataset, _ = recordio_dataset(tmp_path / "train.rec", image_size=16, batch_size=4, seed=3)
    batches = list(dataset.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 16, 16, 3)] * 2 + [(2, 16, 16, 3)]
    all_labels = np.concatenate([b[1] for b in batches])
    assert sorted(all_labels.tolist()) == [0] * 5 + [1] * 5
    assert min(b[0].min() for b in batches) >= -1.0 and max(b[0].max() for b in batches) <= 1.0


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.rec"):
        recordio_dataset(tmp_path)
    (tmp_path / "train.rec").write_bytes(b"\0" * 16)
    (tmp_path / "train.idx").write_text("0\t0\n")
    with pytest.raises(ValueError, match="bad magic"):
        RecordIOReader(tmp_path / "train.rec").read(0)
    (tmp_path / "train.idx").write_text("0 0\n")
    with pytest.raises(ValueError, match="key<TAB>offset"):
        RecordIOReader(tmp_path / "train.rec")
    with pytest.raises(ValueError, match="labels"):
        write_recordio(tmp_path / "w", [np.zeros((4, 4, 3), np.uint8)], [0, 1])
    (tmp_path / "property").write_text("abc")
    with pytest.raises(ValueError, match="num_classes,height,width"):
        read_property(tmp_path / "property")
