"""FaceRecognizer end to end on real photos: detect -> align -> embed -> verify -> identify."""

import numpy as np
import pytest

from keras_fr.preprocessing import load_image
from keras_fr.recognition import FaceRecognizer, ManyFacesError, NoFaceError
from tests.recognition.photo_data import (  # noqa: F401  (fixtures)
    PHOTOS,
    celeba_photos,
    dlib_available,
    photo_from_crop,
    recognizer,
)


def test_default_model_has_real_calibrated_weights(recognizer):
    assert recognizer.model_name == "dlib_resnet" and recognizer.weights == "dlib_v1"
    assert recognizer.embedding_size == 128 and recognizer.spec.size == 150
    thresholds = {far: recognizer.threshold_for(far)[0] for far in (1e-2, 1e-3, 1e-4)}
    # A stricter FAR needs a higher cosine threshold.
    assert thresholds[1e-2] < thresholds[1e-3] < thresholds[1e-4] < 1.0
    assert "celeba299 test" in recognizer.threshold_for()[2]
    with pytest.raises(ValueError, match="not calibrated for this preset"):
        recognizer.threshold_for(0.05)


def test_never_a_silent_random_model():
    with pytest.raises(ValueError, match="no real weights on this machine.*random_weights=True"):
        FaceRecognizer("IResNet18")
    rnd = FaceRecognizer("iresnet18", random_weights=True)
    assert rnd.weights == "random"
    with pytest.raises(ValueError, match="carry no calibrated threshold"):
        rnd.threshold_for()
    with pytest.raises(ValueError, match="either `weights` or random_weights"):
        FaceRecognizer("iresnet18", weights="x.weights.h5", random_weights=True)
    with pytest.raises(ValueError, match="unknown model|Unknown model"):
        FaceRecognizer("resnet9000")
    with pytest.raises(ValueError, match="multi_face"):
        FaceRecognizer("iresnet18", random_weights=True, multi_face="all")


def test_photo_matches_its_person_not_others(recognizer, celeba_photos, dlib_available):
    """A raw photo (detected and aligned here) is closer to other photos of its person than to anyone
    else's, and above the calibrated FAR 1e-2 threshold."""
    chosen = celeba_photos[:8]
    photos = recognizer.embed([p for p, _, _ in chosen])
    crops = [load_image(c) for _, _, cs in chosen for c in cs[:2]]
    refs = recognizer.embed(crops, aligned=True).reshape(len(chosen), 2, -1)
    scores = np.einsum("pd,qkd->pqk", photos, refs).max(axis=2)  # photo i vs person j
    same = np.diag(scores)
    different = scores[~np.eye(len(chosen), dtype=bool)]
    threshold = recognizer.threshold_for(1e-2)[0]
    assert np.all(same >= threshold), same
    assert np.mean(different < threshold) >= 0.95, different
    assert np.all(scores.argmax(axis=1) == np.arange(len(chosen)))


def test_verify_photos(recognizer, celeba_photos, dlib_available):
    (photo_a, _, crops_a), (photo_b, _, _) = celeba_photos[0], celeba_photos[1]
    other_photo_of_a = photo_from_crop(load_image(crops_a[0]))
    same = recognizer.verify(photo_a, other_photo_of_a)
    different = recognizer.verify(photo_a, photo_b)
    assert same.same and not different.same
    assert same.far == 1e-3 and same.weights == "dlib_v1"
    assert str(same).startswith("same person: score") and "FAR 1e-03, calibrated on" in str(same)
    assert str(different).startswith("different people: score")
    assert -1.0 <= different.score < same.score <= 1.0


def test_identify_open_set(celeba_photos, dlib_available):
    fr = FaceRecognizer()
    enrolled = celeba_photos[:10]
    for _, identity, crops in enrolled:
        fr.enroll(identity, [load_image(c) for c in crops[:4]], aligned=True)
    assert len(fr.gallery.names) == 10
    hits = 0
    for photo, identity, _ in enrolled:
        result = fr.identify(photo, top_k=3)
        hits += result.name == identity
        assert len(result.candidates) == 3
    assert hits >= 9
    stranger = celeba_photos[-1][0]
    result = fr.identify(stranger, far=1e-4)
    assert result.name is None and not result.known and result.score < result.threshold


def test_detection_errors(recognizer, dlib_available, tmp_path):
    no_face = PHOTOS / "images" / "celeba" / "005179.jpg"
    if not no_face.exists():
        pytest.skip("photos data not found")
    with pytest.raises(NoFaceError, match="no face found in .*005179.jpg"):
        recognizer.embed(str(no_face))
    two = str(PHOTOS / "images" / "celeba" / "006060.jpg")
    strict = FaceRecognizer(multi_face="error")
    with pytest.raises(ManyFacesError, match="2 faces found in .*006060.jpg"):
        strict.embed(two)
    assert recognizer.embed(two).shape == (1, 128)  # "largest" picks one
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        recognizer.embed(str(bad))
    with pytest.raises(ValueError, match="`photo` must have dtype uint8"):
        recognizer.embed(np.zeros((112, 112), np.float32), aligned=True)
    with pytest.raises(ValueError, match="square"):
        recognizer.embed(np.zeros((112, 96, 3), np.uint8), aligned=True)


def test_gray_and_rgba_photo_arrays(recognizer, celeba_photos, dlib_available):
    photo = load_image(celeba_photos[0][0])
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(recognizer.embed(rgba), recognizer.embed(photo), atol=1e-6)
    gray = photo.mean(axis=2).astype(np.uint8)
    # Same person in grey: still well above the FAR 1e-2 threshold against the colour photo.
    score = float(recognizer.embed(gray)[0] @ recognizer.embed(photo)[0])
    assert score >= recognizer.threshold_for(1e-2)[0]
