"""Readers: insightface .bin (safe unpickling, corrupt files, round trip), LFW pairs.txt, CSV of pairs."""

import io
import os
import pickle
import pickletools

import numpy as np
import pytest
from PIL import Image

from keras_fr.evaluation import EncodedImages, PairSet, read_bin, read_pairs, write_bin


def _faces(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- .bin: round trip and format


def test_bin_round_trip_lossless(tmp_path):
    faces = _faces(6)
    path = write_bin(tmp_path / "set.bin", faces, [True, False, True], image_format="PNG")
    ps = read_bin(path)
    assert isinstance(ps, PairSet) and isinstance(ps.images, EncodedImages)
    assert len(ps) == 3 and len(ps.images) == 6
    assert ps.issame.tolist() == [True, False, True]
    assert ps.pairs.tolist() == [[0, 1], [2, 3], [4, 5]]  # insightface: embeddings[0::2] vs [1::2]
    np.testing.assert_array_equal(ps.images.load_batch([0, 1, 2, 3, 4, 5]), faces)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_bin_is_insightface_format(tmp_path):
    # Written as insightface does: pickle.dump((bins, issame_list), f, protocol=HIGHEST_PROTOCOL).
    faces = _faces(4, seed=1)
    bins = [_png(f) for f in faces]
    path = tmp_path / "insightface.bin"
    with open(path, "wb") as f:
        pickle.dump((bins, [False, True]), f, protocol=pickle.HIGHEST_PROTOCOL)
    ps = read_bin(path)
    assert ps.issame.tolist() == [False, True]
    np.testing.assert_array_equal(ps.images.load_batch([2, 3]), faces[2:])
    # and our writer produces plain containers only (no globals), readable by plain pickle
    write_bin(tmp_path / "ours.bin", bins, [False, True])
    with open(tmp_path / "ours.bin", "rb") as f:
        data = f.read()
    assert not [op for op, _, _ in pickletools.genops(data) if "GLOBAL" in op.name or op.name in ("REDUCE", "INST", "OBJ")]
    loaded_bins, loaded_issame = pickle.loads(data)
    assert loaded_bins == bins and loaded_issame == [False, True]


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_bin_protocol_and_python2_variants(tmp_path, protocol):
    # Python 2 files store images as str, read back as bytes; protocol 0 stores bools as INT 01/00;
    # protocol 5 can hold bytearray.
    faces = _faces(2, seed=protocol)
    images = [_png(faces[0]), bytearray(_png(faces[1]))]
    path = tmp_path / "v.bin"
    with open(path, "wb") as f:
        f.write(pickle.dumps((images, [1]), protocol=protocol))
    ps = read_bin(path)
    assert ps.issame.tolist() == [True]
    np.testing.assert_array_equal(ps.images.load_batch([0, 1]), faces)


def test_bin_python2_str_opcodes(tmp_path):
    # A hand-assembled protocol-2 pickle as Python 2 writes it: SHORT_BINSTRING / BINSTRING image data.
    png = _png(_faces(1, seed=3)[0])
    body = b"\x80\x02" + b"(" + b"]" + b"(" + b"T" + len(png).to_bytes(4, "little") + png
    body += b"U" + bytes([len(png[:200])]) + png[:200]  # a second, broken (truncated) image
    body += b"e" + b"]" + b"\x88" + b"a" + b"t" + b"."
    # structure: MARK, EMPTY_LIST, MARK, BINSTRING, SHORT_BINSTRING, APPENDS, EMPTY_LIST, NEWTRUE, APPEND, TUPLE
    path = tmp_path / "py2.bin"
    path.write_bytes(body)
    ps = read_bin(path, check_images=False)
    assert len(ps) == 1 and ps.issame.tolist() == [True]
    assert ps.images.load_batch([0]).shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match=r"py2\.bin: image entry 1 cannot be decoded"):
        ps.images.load_batch([1])
    with pytest.raises(ValueError, match=r"image entry 1 is not a readable image"):
        read_bin(path)


# ---------------------------------------------------------------- .bin: malicious files


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_bin_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / f"pwned-{protocol}"
    path = tmp_path / "evil.bin"
    with open(path, "wb") as f:
        pickle.dump(([_Payload(str(marker)), b"x"], [True]), f, protocol=protocol)
    # sanity: a plain pickle.load would create the marker (so the refusal below means something)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(str(probe)), protocol=protocol))
    assert probe.exists()
    with pytest.raises(ValueError, match=r"evil\.bin.*refusing to load the Python global .*open"):
        read_bin(path)
    assert not marker.exists()


def test_malicious_inst_opcode_refused(tmp_path):
    marker = tmp_path / "inst-marker"
    # protocol-0 INST: (MARK, arg, INST "os\nsystem") calls os.system(arg) on a plain load.
    data = b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."
    path = tmp_path / "inst.bin"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"refusing to load the Python global os\.system"):
        read_bin(path)
    assert not marker.exists()


def test_numpy_pickles_are_refused_with_a_reason(tmp_path):
    path = tmp_path / "np.bin"
    with open(path, "wb") as f:
        pickle.dump(([b"a", b"b"], np.array([True])), f)
    with pytest.raises(ValueError, match="refusing to load the Python global numpy"):
        read_bin(path)


# ---------------------------------------------------------------- .bin: corrupt files


def test_truncated_and_corrupt_bin(tmp_path):
    path = write_bin(tmp_path / "ok.bin", _faces(4), [True, False], image_format="PNG")
    data = open(path, "rb").read()
    (tmp_path / "trunc.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"trunc\.bin: truncated"):
        read_bin(tmp_path / "trunc.bin")
    (tmp_path / "junk.bin").write_bytes(b"this is not a pickle at all")
    with pytest.raises(ValueError, match=r"junk\.bin"):
        read_bin(tmp_path / "junk.bin")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        read_bin(tmp_path / "missing.bin")


def test_bin_structure_errors(tmp_path):
    def dump(name, obj):
        p = tmp_path / name
        p.write_bytes(pickle.dumps(obj))
        return p

    with pytest.raises(ValueError, match=r"3 images for 2 pairs"):
        read_bin(dump("count.bin", ([b"a", b"b", b"c"], [True, False])))
    with pytest.raises(ValueError, match=r"expected a pickled pair"):
        read_bin(dump("dict.bin", {"a": 1}))
    with pytest.raises(ValueError, match=r"image entry 1 is int"):
        read_bin(dump("int.bin", ([b"a", 5], [True])))
    with pytest.raises(ValueError, match=r"issame entry 0 is 'yes'"):
        read_bin(dump("flag.bin", ([b"a", b"b"], ["yes"])))
    with pytest.raises(ValueError, match=r"image entry 0 is not a readable image"):
        read_bin(dump("notimg.bin", ([b"not an image", b"b"], [True])))


def test_write_bin_checks(tmp_path):
    with pytest.raises(ValueError, match="2 images per pair"):
        write_bin(tmp_path / "x.bin", _faces(3), [True])
    with pytest.raises(ValueError, match="uint8"):
        write_bin(tmp_path / "x.bin", np.zeros((2, 4, 4, 3), np.float32), [True])
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------- LFW pairs.txt and CSV


def _lfw_tree(root, names_counts):
    faces = {}
    for k, (name, count) in enumerate(names_counts.items()):
        os.makedirs(root / "images" / name)
        for i in range(1, count + 1):
            face = np.full((8, 8, 3), 10 * k + i, np.uint8)
            Image.fromarray(face).save(root / "images" / name / f"{name}_{i:04d}.png")
            faces[(name, i)] = face
    return faces


def test_lfw_pairs_txt(tmp_path):
    _lfw_tree(tmp_path, {"Ann": 3, "Bob": 2, "Cy": 1})
    (tmp_path / "pairs.txt").write_text(
        "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nBob\t1\t2\nAnn\t3\tCy\t1\n"
    )
    from keras_fr.evaluation import read_lfw_pairs

    ps = read_lfw_pairs(tmp_path, ext=".png")  # a folder: its pairs.txt, images under images/
    assert ps.nfolds == 2
    assert ps.issame.tolist() == [True, False, True, False]
    rel = [os.path.relpath(p, tmp_path / "images") for p in ps.images.paths]
    assert rel == [
        os.path.join("Ann", "Ann_0001.png"),
        os.path.join("Ann", "Ann_0002.png"),
        os.path.join("Bob", "Bob_0001.png"),
        os.path.join("Bob", "Bob_0002.png"),
        os.path.join("Ann", "Ann_0003.png"),
        os.path.join("Cy", "Cy_0001.png"),
    ]
    # each unique image once; pair indices into them
    assert ps.pairs.tolist() == [[0, 1], [0, 2], [2, 3], [4, 5]]
    assert ps.images.load_batch([5])[0, 0, 0, 0] == 21


def test_lfw_pairs_txt_errors(tmp_path):
    _lfw_tree(tmp_path, {"Ann": 2})
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\tAnn\t2\n")
    with pytest.raises(FileNotFoundError, match=r"pairs\.txt:2: image file not found: .*Ann_0001\.jpg"):
        read_pairs(tmp_path)
    (tmp_path / "bad.txt").write_text("1\t1\nAnn\t1\nAnn\t1\tAnn\t2\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected 'name i j'"):
        read_pairs(tmp_path / "bad.txt")
    (tmp_path / "count.txt").write_text("2\t1\nAnn\t1\t2\nAnn\t1\tAnn\t2\n")
    with pytest.raises(ValueError, match=r"announces 4 pairs but the file has 2"):
        read_pairs(tmp_path / "count.txt")
    (tmp_path / "order.txt").write_text("1\t1\nAnn\t1\tAnn\t2\nAnn\t1\t2\n")
    with pytest.raises(ValueError, match=r"order\.txt:2: expected a same-person line"):
        read_pairs(tmp_path / "order.txt")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_pairs(tmp_path / "nowhere.txt")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="unknown pairs format"):
        read_pairs(tmp_path / "x.json")


def test_pairs_csv(tmp_path):
    _lfw_tree(tmp_path, {"a": 2, "b": 1})
    (tmp_path / "pairs.csv").write_text("img1,img2,same\na/a_0001.png,a/a_0002.png,1\na/a_0001.png,b/b_0001.png,0\n")
    ps = read_pairs(tmp_path / "pairs.csv")
    assert ps.issame.tolist() == [True, False] and ps.pairs.tolist() == [[0, 1], [0, 2]]
    assert ps.nfolds is None
    (tmp_path / "miss.csv").write_text("img1,img2,same\na/a_0001.png,a/a_0009.png,1\n")
    with pytest.raises(FileNotFoundError, match=r"miss\.csv:2: image file not found: .*a_0009\.png"):
        read_pairs(tmp_path / "miss.csv")
    (tmp_path / "flag.csv").write_text("img1,img2,same\na/a_0001.png,a/a_0002.png,maybe\n")
    with pytest.raises(ValueError, match=r"flag\.csv:2: 'same' must be"):
        read_pairs(tmp_path / "flag.csv")
    (tmp_path / "cols.csv").write_text("left,right,label\nx,y,1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) img1, img2, same"):
        read_pairs(tmp_path / "cols.csv")


def test_pairset_subset_keeps_used_images(tmp_path):
    faces = _faces(6)
    ps = read_bin(write_bin(tmp_path / "s.bin", faces, [True, False, True], image_format="PNG"))
    sub = ps.subset([2, 0])
    assert sub.issame.tolist() == [True, True]
    assert len(sub.images) == 4
    got = sub.images.load_batch(sub.pairs.ravel())
    np.testing.assert_array_equal(got, faces[[4, 5, 0, 1]])


def test_bytes_spelling_of_old_protocols_is_data_only(tmp_path):
    # protocol 2 spells bytes as _codecs.encode(text, "latin1"); any other use of that name is refused
    evil = b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x05\x00\x00\x00utf-8q\x02\x86q\x03Rq\x04."
    path = tmp_path / "codecs.bin"
    path.write_bytes(evil)
    with pytest.raises(ValueError, match="unexpected arguments for a pickled bytes value"):
        read_bin(path)
    path.write_bytes(pickle.dumps(([b"", b""], [True]), protocol=2))  # b"" is builtins.bytes()
    with pytest.raises(ValueError, match="image entry 0 is not a readable image"):
        read_bin(path)
