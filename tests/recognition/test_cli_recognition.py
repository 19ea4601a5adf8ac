"""``keras-fr verify / enroll / identify / calibrate`` on real photos, and their one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_fr import cli
from keras_fr.preprocessing import load_image
from tests.recognition.photo_data import (  # noqa: F401  (fixtures)
    CELEBA,
    PHOTOS,
    celeba_photos,
    dlib_available,
    photo_from_crop,
)

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")


def _one_line_error(capsys, command, fragment, code):
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"keras-fr {command}: error:") and fragment in err[0], err[0]


@pytest.fixture(scope="module")
def people(tmp_path_factory, celeba_photos):
    """A folder of 6 people (aligned crops, other photos than the raw one) and the raw photos."""
    root = tmp_path_factory.mktemp("people")
    chosen = celeba_photos[:6]
    for _, identity, crops in chosen:
        (root / identity).mkdir()
        for crop in crops[:3]:
            shutil.copy(crop, root / identity / os.path.basename(crop))
    return root, chosen


def test_verify_raw_photos_same_and_different(celeba_photos, dlib_available, tmp_path, capsys):
    (photo_a, _, crops_a), (photo_b, _, _) = celeba_photos[0], celeba_photos[1]
    second = tmp_path / "a_again.jpg"
    Image.fromarray(photo_from_crop(load_image(crops_a[1]), seed=3)).save(second, quality=95)
    assert cli.main(["verify", photo_a, str(second)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("same person: score") and "(FAR 1e-03, calibrated on" in out
    assert cli.main(["verify", photo_a, photo_b, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["same"] is False and result["weights"] == "dlib_v1"
    assert result["model"] == "dlib_resnet" and result["score"] < result["threshold"]


def test_enroll_then_identify(people, dlib_available, tmp_path, capsys):
    root, chosen = people
    gallery = tmp_path / "gallery.npz"
    assert cli.main(["enroll", str(root), "--output", str(gallery), "--aligned"]) == 0
    assert "enrolled 18 faces of 6 people" in capsys.readouterr().out
    for photo, identity, _ in chosen[:3]:
        assert cli.main(["identify", photo, "--gallery", str(gallery), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["identity"] == identity, result
    # The gallery was made by dlib_resnet: another model is refused in one line.
    code = cli.main(["identify", chosen[0][0], "--gallery", str(gallery), "--model", "iresnet18",
                     "--random-weights"])
    _one_line_error(capsys, "identify", "made with model 'dlib_resnet', not 'iresnet18'", code)


def test_identify_refuses_non_gallery_files(tmp_path, capsys, celeba_photos):
    photo = celeba_photos[0][0]
    np.savez(tmp_path / "other.npz", embeddings=np.zeros((2, 128)))
    code = cli.main(["identify", photo, "--gallery", str(tmp_path / "other.npz")])
    _one_line_error(capsys, "identify", "other.npz: not a keras_fr gallery", code)
    (tmp_path / "text.npz").write_text("hello")
    code = cli.main(["identify", photo, "--gallery", str(tmp_path / "text.npz")])
    _one_line_error(capsys, "identify", "text.npz: not a keras_fr gallery", code)


def test_enroll_errors_leave_nothing(people, tmp_path, capsys, dlib_available):
    root, _ = people
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    person = sorted(os.listdir(bad))[0]
    (bad / person / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "g.npz"
    code = cli.main(["enroll", str(bad), "--output", str(out), "--aligned"])
    _one_line_error(capsys, "enroll", "broken.jpg", code)
    assert sorted(os.listdir(tmp_path)) == ["bad"]  # nothing half-written
    assert cli.main(["enroll", str(bad), "--output", str(out), "--aligned", "--skip-bad"]) == 0
    assert "skipped 1" in capsys.readouterr().out
    code = cli.main(["enroll", str(bad), "--output", str(tmp_path / "missing" / "g.npz"), "--aligned"])
    _one_line_error(capsys, "enroll", "does not exist", code)
    code = cli.main(["enroll", str(tmp_path / "nobody"), "--output", str(out)])
    _one_line_error(capsys, "enroll", "is not a folder", code)


def test_calibrate_pairs_file(people, tmp_path, capsys, dlib_available):
    root, chosen = people
    files = sorted(root.rglob("*.jpg"))
    rows = ["img1,img2,same"]
    for i, a in enumerate(files):
        for b in files[i + 1 :]:
            rows.append(f"{a},{b},{int(a.parent == b.parent)}")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n")
    # 18 faces -> 153 pairs, 135 impostor pairs: FAR 1e-3 cannot be supported, 1e-2 can.
    code = cli.main(["calibrate", str(pairs), "--aligned"])
    _one_line_error(capsys, "calibrate", "cannot support FAR 0.001", code)
    out = tmp_path / "t.json"
    assert cli.main(["calibrate", str(pairs), "--aligned", "--far", "1e-2", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "FAR 1e-02: threshold" in capsys.readouterr().out
    assert report["impostor_pairs"] == 135 and report["genuine_pairs"] == 18
    assert report["score"] == "cosine" and report["tar"]["1e-02"] >= 0.8
    # The same set as a folder of people, every pair: identical counts.
    assert cli.main(["calibrate", str(root), "--all-pairs", "--aligned", "--far", "1e-2", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["thresholds"] == report["thresholds"]


def test_random_weights_never_decide(tmp_path, capsys):
    Image.new("RGB", (112, 112), (120, 100, 90)).save(tmp_path / "crop.png")
    crop = str(tmp_path / "crop.png")
    code = cli.main(["verify", crop, crop, "--model", "iresnet18", "--aligned"])
    _one_line_error(capsys, "verify", "pass --weights FILE|TAG", code)
    assert cli.main(["verify", crop, crop, "--model", "IResNet18", "--aligned", "--random-weights",
                     "--threshold", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["weights"] == "random" and "same" not in result and "random" in result["note"]


def test_verify_errors_in_a_real_process(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (300, 200)).save(tmp_path / "blank.jpg")
    proc = subprocess.run(
        [sys.executable, "-m", "keras_fr.cli", "verify", str(tmp_path / "blank.jpg"),
         str(tmp_path / "broken.jpg")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-fr verify: error:")
    assert "blank.jpg" in lines[0] or "broken.jpg" in lines[0]


def test_demo_recognize_stage_on_real_photos(celeba_photos, dlib_available, capsys):
    skips = []
    for stage in ("build", "embed", "save/reload", "export", "fine-tune", "evaluate"):
        skips += ["--skip", stage]
    code = cli.main(["demo", "--quick", "--json", "--data-dir", str(PHOTOS.parent), *skips])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["failed"] is False, report
    rows = [r for r in report["rows"] if r["stage"] == "recognize"]
    results = " | ".join(r["result"] for r in rows)
    assert "dlib_resnet with weights dlib_v1" in results
    assert "different people: score" in results and "same person: score" in results
    assert "3/3 found; a person not enrolled -> unknown" in results


def test_embed_and_eval_recrop_for_the_dlib_model(people, tmp_path, capsys):
    """`embed`/`eval`/`extract_embeddings` on ArcFace crops give a dlib model dlib's chip and
    normalization: the same embeddings as FaceRecognizer(aligned=True), not resized 112 crops."""
    from keras_fr.applications.specs import input_spec
    from keras_fr.evaluation import extract_embeddings
    from keras_fr.recognition import FaceRecognizer

    root, _ = people
    files = sorted(str(p) for p in root.rglob("*.jpg"))[:4]
    fr = FaceRecognizer(runtime="keras")  # compared with Keras-level paths to 1e-5 below
    expected = fr.embed([load_image(f) for f in files], aligned=True)
    out = tmp_path / "e.npz"
    assert cli.main(["embed", *files, "--model", "DlibResNet", "--output", str(out), "--runtime", "keras"]) == 0
    np.testing.assert_allclose(np.load(out)["embeddings"], expected, atol=1e-5)
    got = extract_embeddings(fr.model, files, flip=False, verbose=0, input_spec=input_spec("dlib_resnet"))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Without the spec the crops would be resized and scaled the ArcFace way: clearly different.
    naive = extract_embeddings(fr.model, files, flip=False, verbose=0)
    assert np.min(np.sum(naive * expected, axis=1)) < 0.999


def test_verify_several_faces_is_refused_unless_told(celeba_photos, dlib_available, capsys):
    two = str(PHOTOS / "images" / "celeba" / "006060.jpg")  # dlib's reference finds 2 faces here
    other = celeba_photos[0][0]
    code = cli.main(["verify", two, other])
    _one_line_error(capsys, "verify", "2 faces found in", code)
    assert cli.main(["verify", two, other, "--face", "largest", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["same"] is False


def test_identification_protocol_recrops_for_the_dlib_model(people):
    """evaluate_identification with the dlib model's spec embeds like FaceRecognizer(aligned=True)."""
    from keras_fr.applications.specs import input_spec
    from keras_fr.evaluation import identification
    from keras_fr.recognition import FaceRecognizer

    root, _ = people
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    labels = [os.path.basename(os.path.dirname(f)) for f in files]
    gallery = (files[0::3], labels[0::3])
    probe = ([f for i, f in enumerate(files) if i % 3], [x for i, x in enumerate(labels) if i % 3])
    fr = FaceRecognizer(runtime="keras")  # the protocol embeds with Keras: compared exactly below
    result = identification.evaluate_identification(
        fr.model, gallery, probe, flip=False, verbose=0, input_spec=input_spec("dlib_resnet")
    )
    # Against the same protocol on embeddings made by the recognizer itself.
    g = fr.embed([load_image(f) for f in gallery[0]], aligned=True)
    p = fr.embed([load_image(f) for f in probe[0]], aligned=True)
    expected = identification.identify(p, probe[1], g, gallery[1], normalize=False)
    assert result.to_dict() == expected.to_dict()
    assert expected.rank_accuracy[1] >= 0.9  # 6 people, other photos of each: the right one first
