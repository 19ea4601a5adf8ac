"""From photos to identities: ``FaceRecognizer``, galleries and calibrated decisions."""

from keras_fr.recognition.gallery import Gallery
from keras_fr.recognition.recognizer import (
    FaceRecognizer,
    Identification,
    ManyFacesError,
    NoFaceError,
    Verification,
)

__all__ = [
    "FaceRecognizer",
    "Gallery",
    "Identification",
    "ManyFacesError",
    "NoFaceError",
    "Verification",
]
