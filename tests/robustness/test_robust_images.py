"""Images and image lists: zero-byte, random bytes, huge, wrong size, symlink loops, non-UTF-8 names,
pairs and gallery files naming a missing image. One line naming the file, exit 2, nothing written;
``embed --skip-bad`` skips and counts instead."""

import json
import os
import struct
import zlib

import numpy as np
import pytest
from _robust import cli_error, leftovers
from PIL import Image


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (no pixel data): Pillow refuses it as a bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _bad_image(kind, folder):
    if kind == "zero-byte":
        path = folder / "zero.png"
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path = folder / "noise.jpg"
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif kind == "huge":
        path = folder / "huge.png"
        _png_header_only(path, 60000, 60000)
    elif kind == "wrong-size":
        path = folder / "photo.png"
        Image.new("RGB", (300, 200)).save(path)
    elif kind == "self-symlink":
        path = folder / "loop.png"
        os.symlink("loop.png", path)
    elif kind == "non-utf8-name":
        path = folder / os.fsdecode(b"bad\xff\xfe.png")
        path.write_bytes(b"not an image")
    else:
        raise AssertionError(kind)
    return path


KINDS = ["zero-byte", "random-bytes", "huge", "wrong-size", "self-symlink", "non-utf8-name"]


@pytest.mark.parametrize("kind", KINDS)
def test_embed_bad_image_is_one_line(inputs, tmp_path, capsys, kind):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = _bad_image(kind, folder)
    out = tmp_path / "out"
    out.mkdir()
    line = cli_error(capsys, ["embed", inputs["face"], bad, "--model", "iresnet18", "--random-weights",
                              "--output", out / "e.npz"])
    assert repr(os.fspath(bad))[1:-1] in line or os.path.basename(os.fspath(bad)) in line, line
    assert leftovers(out) == []


@pytest.mark.parametrize("kind", KINDS)
def test_embed_skip_bad_skips_and_counts(inputs, tmp_path, capsys, kind):
    from keras_fr import cli

    folder = tmp_path / "in"
    folder.mkdir()
    bad = _bad_image(kind, folder)
    out = tmp_path / "e.npz"
    code = cli.main(["embed", str(inputs["face"]), str(bad), "--model", "iresnet18", "--random-weights",
                     "--skip-bad", "--output", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["images"] == 1 and [s["path"] for s in summary["skipped"]] == [str(bad)]
    assert list(np.load(out)["paths"]) == [str(inputs["face"])]


def test_folder_with_symlink_loop_is_walked_once(inputs, tmp_path, capsys):
    from keras_fr import cli

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.open(inputs["face"]).save(folder / "sub" / "a.png")
    os.symlink("..", folder / "sub" / "up")  # a folder loop: in/sub/up -> in
    code = cli.main(["embed", str(folder), "--model", "iresnet18", "--random-weights",
                     "--output", str(tmp_path / "e.npz"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1


def test_non_utf8_file_name_is_embedded_and_listed(inputs, tmp_path, capsys):
    from keras_fr import cli

    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    Image.open(inputs["face"]).save(tmp_path / name)
    code = cli.main(["embed", str(tmp_path / name), "--model", "iresnet18", "--random-weights",
                     "--output", str(tmp_path / "e.npy")])
    capsys.readouterr()
    assert code == 0
    listed = (tmp_path / "e.txt").read_bytes().splitlines()
    assert listed == [os.fsencode(str(tmp_path / name))]


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cli_error(capsys, ["embed", tmp_path / "empty", "--model", "iresnet18", "--random-weights",
                       "--output", tmp_path / "e.npz"], "holds no image files")


def test_all_images_bad_with_skip_bad(tmp_path, capsys):
    bad = _bad_image("zero-byte", tmp_path)
    cli_error(capsys, ["embed", bad, "--model", "iresnet18", "--random-weights", "--skip-bad",
                       "--output", tmp_path / "e.npz"], "none of the 1 images")
    assert leftovers(tmp_path) == [str(bad)]


@pytest.mark.parametrize("argv,fragment", [
    (["--batch-size", "0"], "--batch-size"),
    (["--model", "resnet9000"], "--model"),
])
def test_bad_embed_options(inputs, tmp_path, capsys, argv, fragment):
    base = ["embed", inputs["face"], "--random-weights", "--output", tmp_path / "e.npz"]
    if "--model" not in argv:
        base += ["--model", "iresnet18"]
    cli_error(capsys, base + argv, fragment)


def test_both_model_name_forms_are_accepted(inputs, tmp_path, capsys):
    from keras_fr import cli
    from keras_fr.applications import get_model

    for i, name in enumerate(["IResNet18", "iresnet18"]):
        assert cli.main(["embed", str(inputs["face"]), "--model", name, "--random-weights",
                         "--output", str(tmp_path / f"e{i}.npz"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["model"] == "iresnet18"
    assert get_model("MSConvResNet26", weights=None, input_shape=(32, 32, 3), include_top=False).name


def test_pairs_file_with_missing_image(inputs, tmp_path, capsys):
    face = inputs["face"]
    pairs = tmp_path / "p.csv"
    pairs.write_text(f"img1,img2,same\n{face},{face},1\n{face},{tmp_path / 'gone.png'},0\n")
    cli_error(capsys, ["eval", "--model", "iresnet18", "--random-weights", "--pairs", pairs,
                       "--output", tmp_path / "r.json"], "gone.png")
    assert leftovers(tmp_path) == [str(pairs)]


def test_gallery_file_with_missing_image(inputs, tmp_path, capsys):
    gallery = tmp_path / "gallery.txt"
    gallery.write_text(f"{inputs['face']} 0\n{tmp_path / 'gone.png'} 1\n")
    cli_error(capsys, ["eval", "--model", "iresnet18", "--random-weights", "--gallery", gallery,
                       "--probe", gallery, "--output", tmp_path / "r.json"], "gone.png")
    assert leftovers(tmp_path) == [str(gallery)]
