"""Tests for the ``keras-fr`` command: help with examples, one-line errors, info, embed, verify, demo.

Most commands run in-process through ``keras_fr.cli.main`` (fast); the error-path tests run the real
entry point in a subprocess, to see exactly what a user sees on stderr.
"""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_fr import cli
from keras_fr.cli import demo as demo_cli

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")


def _run_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "keras_fr.cli", *args],
        capture_output=True, text=True, env=ENV, timeout=timeout,
    )


def _assert_one_line_error(proc, command, fragment):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"keras-fr {command}: error")]
    assert len(errors) == 1, proc.stderr
    assert fragment in errors[0], errors[0]


# ------------------------------------------------------------------------------------------------
# Help
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", cli.SUBCOMMANDS)
def test_every_subcommand_help_lists_examples(command, capsys):
    try:
        importlib.import_module(f"keras_fr.cli.{command}")
    except ModuleNotFoundError as exc:
        if exc.name == f"keras_fr.cli.{command}":
            pytest.skip(f"keras_fr/cli/{command}.py not written yet")
        raise
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"keras-fr {command}" in out.split("examples:", 1)[1]


def test_top_level_help_lists_all_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("info", "embed", "verify", "demo"):
        assert command in out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------------


def test_info_json_parses_and_lists_models_and_presets():
    proc = _run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["backend"] == "tensorflow"
    assert info["versions"]["keras"].startswith("3.")
    names = [row["name"] for row in info["models"]]
    assert sorted(names) == sorted(cli._common.MODELS)
    for row in info["models"]:
        expected = [150, 150, 3] if row["name"] == "dlib_resnet" else [112, 112, 3]
        assert row["input_size"] == expected, row
    for row in info["weights"]:
        assert {"model", "tag", "available", "license"} <= set(row)
        assert row["model"] in names


def test_info_text(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "msconv_resnet50" in out and "lgaf_resnet100" in out
    assert "weights presets" in out


@pytest.mark.parametrize("name", ["msconv_resnet26", "iresnet18"])
def test_info_parameter_table_matches_built_models(name):
    from keras_fr.applications import count_parameters
    from keras_fr.applications.registry import get_record
    from keras_fr.cli._common import build_model

    assert get_record(name).parameters == count_parameters(build_model(name))


@pytest.mark.large
def test_info_parameter_table_matches_all_built_models():
    import keras

    from keras_fr.applications import count_parameters
    from keras_fr.applications.registry import records
    from keras_fr.cli._common import build_model

    for record in records():
        assert record.parameters == count_parameters(build_model(record.name)), record.name
        keras.backend.clear_session()


def test_info_model_details(capsys):
    assert cli.main(["info", "--model", "msconv_resnet26", "--json"]) == 0
    details = json.loads(capsys.readouterr().out)["model"]
    assert details["output_shape"] == [None, 512]
    assert details["output_shape_without_top"] == [None, 4, 4, 2048]


# ------------------------------------------------------------------------------------------------
# embed and verify, end to end with a small network and a weights file
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    import keras

    from keras_fr.cli._common import build_model

    keras.utils.set_random_seed(7)
    model = build_model("iresnet18")
    path = tmp_path_factory.mktemp("weights") / "iresnet18.weights.h5"
    model.save_weights(path)
    keras.backend.clear_session()
    return path


def _reference_embeddings(weights_file, faces):
    """The embeddings computed directly: numpy preprocessing, model call, numpy normalization."""
    from keras_fr.applications import IResNet18

    model = IResNet18()
    model.load_weights(weights_file)
    x = faces.astype(np.float32) / 127.5 - 1.0
    out = np.asarray(model(x, training=False))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def faces(tmp_path):
    """Three aligned 112x112 crops in a folder, one photo with landmarks, and the landmarks file."""
    images, _ = demo_cli.synthetic_faces(3, 1, image_size=112, seed=11)
    folder = tmp_path / "crops"
    folder.mkdir()
    paths = []
    for i, image in enumerate(images):
        path = folder / f"face_{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    # A 200x160 photo containing face 0 scaled by 1.5 and shifted: its landmarks are the template
    # mapped the same way.
    from keras_fr.preprocessing import ARCFACE_TEMPLATE

    photo = Image.fromarray(images[0]).resize((168, 168), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (200, 190), (0, 0, 0))
    canvas.paste(photo, (20, 10))
    photo_path = tmp_path / "photo.png"
    canvas.save(photo_path)
    landmarks = (ARCFACE_TEMPLATE + 0.5) * 1.5 - 0.5 + [20, 10]
    marks = tmp_path / "marks.json"
    marks.write_text(json.dumps({"photo.png": landmarks.tolist()}))
    return {"images": images, "folder": folder, "paths": paths, "photo": photo_path, "marks": marks}


def test_embed_npz_matches_direct_computation(faces, weights_file, tmp_path, capsys):
    out = tmp_path / "emb.npz"
    code = cli.main(["embed", str(faces["folder"]), "--model", "iresnet18", "--weights",
                     str(weights_file), "--output", str(out), "--json", "--batch-size", "1"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    # Three batches of one, but stderr is not a terminal: no progress lines in logs.
    assert captured.err == ""
    assert summary["images"] == 3
    assert summary["weights"] == str(weights_file)  # JSON says which weights were used
    data = np.load(out)
    assert list(data["paths"]) == faces["paths"]
    assert data["embeddings"].dtype == np.float32 and data["embeddings"].shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, atol=1e-5)
    expected = _reference_embeddings(weights_file, faces["images"])
    np.testing.assert_allclose(data["embeddings"], expected, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file


def test_embed_npy_writes_sibling_list_and_aligns_photos(faces, weights_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "emb.npy"
    code = cli.main(["embed", str(faces["paths"][1]), "photo.png", "--landmarks", str(faces["marks"]),
                     "--model", "iresnet18", "--weights", str(weights_file), "--output", str(out)])
    assert code == 0
    embeddings = np.load(out)
    listed = (tmp_path / "emb.txt").read_text().splitlines()
    assert listed == [faces["paths"][1], "photo.png"]
    assert embeddings.shape == (2, 512)
    # The aligned photo is face 0 again (after a resize and re-alignment): it embeds close to the
    # crop itself, far closer than to another face.
    reference = _reference_embeddings(weights_file, faces["images"])
    assert embeddings[1] @ reference[0] > 0.98
    assert embeddings[1] @ reference[0] > embeddings[1] @ reference[1]


def test_verify_aligned_crops_with_a_weights_file(faces, weights_file, capsys):
    a, b = faces["paths"][0], faces["paths"][1]
    # A bare weights file carries no calibrated threshold: refused in one line, no decision guessed.
    code = cli.main(["verify", a, a, "--model", "iresnet18", "--weights", str(weights_file), "--aligned"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "carry no calibrated threshold" in err[0]

    code = cli.main(["verify", a, a, "--model", "iresnet18", "--weights", str(weights_file), "--aligned",
                     "--threshold", "0.3", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["score"] == pytest.approx(1.0, abs=1e-5) and result["same"] is True
    assert result["calibrated_on"] == "user threshold" and result["threshold"] == 0.3

    code = cli.main(["verify", a, b, "--model", "IResNet18", "--weights", str(weights_file), "--aligned",
                     "--threshold", "0.999", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    expected = _reference_embeddings(weights_file, faces["images"][:2])
    assert result["score"] == pytest.approx(float(expected[0] @ expected[1]), abs=1e-5)
    assert result["same"] is (result["score"] >= 0.999)
    assert result["weights"] == str(weights_file)


def test_verify_photo_with_landmarks_file(faces, weights_file, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["verify", "photo.png", faces["paths"][0], "--landmarks", str(faces["marks"]),
                     "--model", "iresnet18", "--weights", str(weights_file), "--threshold", "0.5"])
    assert code == 2  # the crop has no landmarks in the file
    assert "no landmarks for" in capsys.readouterr().err
    marks = json.loads(faces["marks"].read_text())
    from keras_fr.preprocessing import ARCFACE_TEMPLATE

    marks[faces["paths"][0]] = ARCFACE_TEMPLATE.tolist()
    faces["marks"].write_text(json.dumps(marks))
    code = cli.main(["verify", "photo.png", faces["paths"][0], "--landmarks", str(faces["marks"]),
                     "--model", "iresnet18", "--weights", str(weights_file), "--threshold", "0.5"])
    assert code == 0
    # The photo holds face 0, aligned again from its five points: the same face.
    assert capsys.readouterr().out.startswith("same person: score 0.9")


# ------------------------------------------------------------------------------------------------
# User errors: non-zero exit, one line, no traceback (the real entry point)
# ------------------------------------------------------------------------------------------------


def test_embed_missing_file_is_one_line_error(tmp_path):
    proc = _run_cli("embed", str(tmp_path / "nope.jpg"), "--model", "iresnet18",
                    "--output", str(tmp_path / "e.npz"))
    _assert_one_line_error(proc, "embed", "nope.jpg")
    assert not (tmp_path / "e.npz").exists()


def test_embed_bad_output_suffix(tmp_path, capsys):
    code = cli.main(["embed", str(tmp_path), "--model", "iresnet18", "--output", str(tmp_path / "e.csv")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ".npz or .npy" in err[0]


def test_verify_photo_without_a_face(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.jpg")
    proc = _run_cli("verify", str(tmp_path / "big.jpg"), str(tmp_path / "big.jpg"))
    _assert_one_line_error(proc, "verify", "no face found in")


def test_verify_unreadable_image(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (112, 112)).save(tmp_path / "crop.jpg")
    proc = _run_cli("verify", str(tmp_path / "broken.jpg"), str(tmp_path / "crop.jpg"),
                    "--model", "iresnet18", "--random-weights", "--aligned")
    _assert_one_line_error(proc, "verify", "broken.jpg")


def test_verify_bad_threshold(tmp_path, capsys):
    Image.new("RGB", (112, 112)).save(tmp_path / "crop.jpg")
    crop = str(tmp_path / "crop.jpg")
    code = cli.main(["verify", crop, crop, "--model", "iresnet18", "--threshold", "3"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threshold" in err[0]


def test_unknown_model_is_one_line_error(tmp_path, capsys):
    Image.new("RGB", (112, 112)).save(tmp_path / "crop.png")
    code = cli.main(["embed", str(tmp_path / "crop.png"), "--model", "resnet9000", "--random-weights",
                     "--output", str(tmp_path / "e.npz")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model" in err[0] and "resnet9000" in err[0] and "iresnet50" in err[0]


def test_bad_landmarks_file_is_one_line_error(faces, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("photo.png 1 2 3\n")
    code = cli.main(["embed", str(faces["photo"]), "--landmarks", str(bad), "--model", "iresnet18",
                     "--random-weights", "--output", str(tmp_path / "e.npz")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.txt" in err[0] and "line 1" in err[0]


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------


def test_synthetic_faces_identities_differ():
    images, labels = demo_cli.synthetic_faces(3, 2, image_size=64, seed=0)
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    same = np.abs(images[0].astype(int) - images[1]).mean()
    different = np.abs(images[0].astype(int) - images[2]).mean()
    assert same < different
    again, _ = demo_cli.synthetic_faces(3, 2, image_size=64, seed=0)
    np.testing.assert_array_equal(images, again)


def test_lfw_subset_takes_first_pairs_of_each_fold(tmp_path):
    lfw = tmp_path / "lfw"
    (lfw / "images").mkdir(parents=True)
    lines = ["2\t3"]
    for fold in range(2):
        lines += [f"same{fold}_{i}\t1\t2" for i in range(3)]
        lines += [f"a{fold}_{i}\t1\tb\t1" for i in range(3)]
    (lfw / "pairs.txt").write_text("\n".join(lines) + "\n")
    out = demo_cli._lfw_subset(lfw, str(tmp_path / "subset"), 2)
    written = (tmp_path / "subset" / "pairs.txt").read_text().splitlines()
    assert written[0].split() == ["2", "2"]
    assert written[1:] == [
        "same0_0\t1\t2", "same0_1\t1\t2", "a0_0\t1\tb\t1", "a0_1\t1\tb\t1",
        "same1_0\t1\t2", "same1_1\t1\t2", "a1_0\t1\tb\t1", "a1_1\t1\tb\t1",
    ]
    assert os.path.realpath(os.path.join(out, "images")) == os.path.realpath(lfw / "images")


def test_demo_quick_first_stages_and_fine_tune(capsys, tmp_path):
    code = cli.main(["demo", "--quick", "--skip", "export", "--skip", "evaluate", "--json",
                     "--data-dir", str(tmp_path)])  # no real data: generated faces, said plainly
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["failed"] is False
    by_stage = {row["stage"]: row for row in report["rows"]}
    assert "RANDOM weights" in by_stage["build"]["result"]
    assert "GENERATED" in by_stage["embed"]["result"]
    assert "outputs identical" in by_stage["save/reload"]["result"]
    import re

    losses = re.search(r"loss ([0-9.]+) -> ([0-9.]+)", by_stage["fine-tune"]["result"])
    assert losses, by_stage["fine-tune"]
    assert float(losses.group(2)) < float(losses.group(1))  # a few epochs on separable ids learn
    assert by_stage["export"]["result"].startswith("skipped")


def test_demo_uses_a_preset_only_when_its_file_is_available(monkeypatch):
    rows = [
        {"model": "msconv_resnet50", "tag": "ms1mv3", "available": False},
        {"model": "lgaf_resnet100", "tag": "ms1mv2", "available": False},
        {"model": "lgaf_resnet100", "tag": "webface4m", "available": True},
    ]
    monkeypatch.setattr(demo_cli, "list_weights", lambda: rows)
    tag, reason = demo_cli._preset_tag("msconv_resnet50")
    assert tag is None and "ms1mv3" in reason and "no file" in reason
    assert demo_cli._preset_tag("lgaf_resnet100") == ("webface4m", None)
    assert demo_cli._preset_tag("iresnet18")[0] is None


def test_verify_with_a_preset_that_has_no_file_is_one_line_error(faces, capsys):
    a = faces["paths"][0]
    code = cli.main(["verify", a, a, "--model", "msconv_resnet26", "--weights", "no_such_tag"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-fr verify: error:") and "no_such_tag" in err[0]


def test_demo_export_and_evaluate_stages_call_the_libraries(monkeypatch, tmp_path, capsys):
    """The demo's glue for export and evaluation, with the library calls replaced by recorders."""
    import types

    calls = {}

    def fake_export(kind):
        def export(model, path, **kwargs):
            calls[kind] = (model.input_shape, path)
            return types.SimpleNamespace(size_bytes=3 * 2**20, max_abs_diff=1e-7, min_cosine=0.9999991)
        return export

    def fake_evaluate_pairs(model, source, **kwargs):
        calls["evaluate"] = (model.input_shape, open(os.path.join(source, "pairs.txt")).read())
        return types.SimpleNamespace(accuracy=0.75, accuracy_std=0.05)

    fake_export_module = types.SimpleNamespace(to_tflite=fake_export("tflite"), to_onnx=fake_export("onnx"))
    fake_evaluation = types.SimpleNamespace(evaluate_pairs=fake_evaluate_pairs)
    monkeypatch.setattr(demo_cli, "export", fake_export_module)
    monkeypatch.setattr(demo_cli, "evaluation", fake_evaluation)
    lfw = tmp_path / "lfw112"
    (lfw / "images").mkdir(parents=True)
    lines = ["10\t300"] + [f"p{f}_{i}\t1\t2" if i < 300 else f"p{f}_{i}\t1\tq\t1"
                           for f in range(10) for i in range(600)]
    (lfw / "pairs.txt").write_text("\n".join(lines) + "\n")

    code = cli.main(["demo", "--quick", "--skip", "embed", "--skip", "save/reload", "--skip", "fine-tune",
                     "--data-dir", str(tmp_path), "--pairs-per-fold", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    rows = {(r["stage"], r["subject"]): r["result"] for r in report["rows"]}
    assert rows[("export", "MSConvResNet26 TFLite")] == (
        "verified: 3 MB, max |diff| 1.00e-07, min cosine 0.999999")
    assert calls["tflite"][1].endswith("MSConvResNet26.tflite") and calls["onnx"][1].endswith(".onnx")
    assert calls["tflite"][0] == (None, 64, 64, 3)
    # LFW crops are 112x112: the quick network is wrapped to take them.
    shape, pairs_txt = calls["evaluate"]
    assert shape == (None, 112, 112, 3)
    pair_lines = pairs_txt.splitlines()
    assert pair_lines[0].split() == ["10", "2"] and len(pair_lines) == 1 + 10 * 4
    assert pair_lines[1:5] == ["p0_0\t1\t2", "p0_1\t1\t2", "p0_300\t1\tq\t1", "p0_301\t1\tq\t1"]
    assert "accuracy 0.7500 +- 0.0500" in rows[("evaluate", "MSConvResNet26 on LFW subset")]


@pytest.mark.parametrize("command, expected", [(["info"], "1"), (["train", "no-such-config.py"], None),
                                               (["eval", "--model", "no-such-model"], None),
                                               (["verify", "no-such-a.jpg", "no-such-b.jpg"], "1")])
def test_system_allocator_for_every_command_but_train_and_eval(command, expected, monkeypatch):
    # keras_fr._memory.prefer_system_allocator: inference and conversion give freed memory back;
    # training and the batch evaluation keep TensorFlow's pool (faster, and a lower peak there).
    monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)
    cli.main(command)
    assert os.environ.get("TF_ONEDNN_USE_SYSTEM_ALLOCATOR") == expected
