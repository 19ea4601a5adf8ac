"""``keras-fr convert`` end to end on a small IResNet-18 checkpoint."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from keras_fr.cli import main  # noqa: E402
from keras_fr.torch_reference import build_reference, randomize_  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    net = randomize_(build_reference("iresnet18"), input_size=112, seed=11)
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    return net, path


def _images():
    rng = np.random.default_rng(3)
    return np.clip(rng.normal(0, 0.5, (2, 112, 112, 3)), -1, 1).astype("float32")


def test_convert_verify_and_back(checkpoint, tmp_path, capsys):
    from keras_fr.applications import IResNet18

    net, path = checkpoint
    out = tmp_path / "r18.weights.h5"
    assert main(["convert", str(path), "--output", str(out), "--verify", "--samples", "2"]) == 0
    text = capsys.readouterr().out
    assert "iresnet18" in text and "verify: OK" in text
    assert "sample 0: max abs diff" in text and "sample 1:" in text and "cosine" in text
    assert "stripped key prefixes: module." in text
    assert sorted(os.listdir(tmp_path)) == ["r18.weights.h5"]  # no temporary file left

    images = _images()
    with torch.no_grad():
        expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    model = IResNet18(weights=str(out))
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, atol=1e-4)

    back = tmp_path / "r18_back.pth"
    assert main(["convert", str(out), "--to", "torch", "--arch", "iresnet18", "--output", str(back)]) == 0
    fresh = build_reference("iresnet18")
    fresh.load_state_dict(torch.load(back, weights_only=True), strict=True)
    with torch.no_grad():
        again = fresh(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(again, expected, atol=1e-4)


def test_user_errors_are_one_line_and_write_nothing(checkpoint, tmp_path, capsys):
    _, path = checkpoint
    out = tmp_path / "x.weights.h5"
    assert main(["convert", str(path), "--arch", "iresnet50", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "keys describe a iresnet18" in err and err.count("\n") == 1
    assert main(["convert", str(path), "--output", str(tmp_path / "x.h5")]) == 2
    assert "--output must end in .weights.h5" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pt"), "--output", str(out)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["convert", str(path), "--to", "torch", "--output", str(tmp_path / "y.pt")]) == 2
    assert os.listdir(tmp_path) == []


def test_convert_verifies_on_given_face_images(checkpoint, tmp_path, capsys):
    from PIL import Image

    from keras_fr.cli import demo as demo_cli

    _, path = checkpoint
    faces, _ = demo_cli.synthetic_faces(3, 1, image_size=112, seed=2)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, face in enumerate(faces):
        Image.fromarray(face).save(folder / f"{i}.png")
    out = tmp_path / "r18.weights.h5"
    assert main(["convert", str(path), "--output", str(out), "--verify-images", str(folder),
                 "--samples", "2"]) == 0
    text = capsys.readouterr().out
    assert f"on 2 images from {folder}" in text and "verify: OK" in text and "sample 1:" in text
    out.unlink()
    assert main(["convert", str(path), "--output", str(out), "--verify-images", str(tmp_path / "nope")]) == 2
    assert "--verify-images" in capsys.readouterr().err and not out.exists()


def test_convert_float16_storage_is_read_back_and_verified(checkpoint, tmp_path, capsys):
    from keras_fr.applications import IResNet18

    net, path = checkpoint
    full, half = tmp_path / "f32.weights.h5", tmp_path / "f16.weights.h5"
    assert main(["convert", str(path), "--output", str(full)]) == 0
    assert main(["convert", str(path), "--output", str(half), "--storage-dtype", "float16",
                 "--verify", "--samples", "2"]) == 0
    text = capsys.readouterr().out
    assert "kernels stored as float16" in text and "the float16 file read back" in text
    assert text.count("verify: OK") == 2
    assert os.path.getsize(half) < 0.6 * os.path.getsize(full)
    assert sorted(os.listdir(tmp_path)) == ["f16.weights.h5", "f32.weights.h5"]

    images = _images()
    with torch.no_grad():
        expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    actual = np.asarray(IResNet18(weights=str(half))(images, training=False))
    cos = np.sum(actual * expected, 1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.9999
