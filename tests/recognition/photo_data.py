"""Real photos and aligned faces for the recognizer tests (fixtures imported by the test modules)."""

import csv
import os

import numpy as np
import pytest

from tests.conftest import SHARED_DATA

PHOTOS = SHARED_DATA / "photos"
CELEBA = SHARED_DATA / "celeba299"


def _need(path, what):
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (real data is never committed; see README)")


@pytest.fixture(scope="session")
def dlib_available():
    pytest.importorskip("dlib", reason="dlib (the `dlib` extra) is not installed: detection needs it")


@pytest.fixture(scope="session")
def celeba_photos():
    """``[(photo path, identity, [other aligned crops of that identity])]`` for CelebA photos."""
    _need(PHOTOS / "index.csv", "photos")
    _need(CELEBA / "images", "celeba299")
    rows = []
    with open(PHOTOS / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] != "celeba" or row["n_faces"] != "1":
                continue
            identity = row["identity"].split("_", 1)[1]
            photo = PHOTOS / "images" / row["image"]
            folder = CELEBA / "images" / identity
            crops = sorted(
                str(folder / n) for n in os.listdir(folder) if n != os.path.basename(row["image"])
            )
            if len(crops) >= 3:
                rows.append((str(photo), identity, crops))
    return rows


def photo_from_crop(crop, seed=0):
    """An unaligned "photo" made from an aligned 112x112 face: scaled, rotated, placed off-centre
    on a larger noisy canvas, so a detector has to find and align it again."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    face = Image.fromarray(crop).resize((260, 260), Image.BICUBIC).rotate(8, resample=Image.BICUBIC)
    canvas = rng.integers(90, 140, size=(420, 520, 3), dtype=np.uint8)
    image = Image.fromarray(canvas)
    image.paste(face, (170, 90))
    return np.asarray(image)


@pytest.fixture(scope="session")
def recognizer():
    from keras_fr.recognition import FaceRecognizer

    return FaceRecognizer()
