"""Finding and loading dlib and its model files (once per process).

dlib comes from the ``dlib-bin`` wheel and the model files from the PyPI package
``face-recognition-models``; both are the optional ``dlib`` extra. The model package is located with
``importlib.util.find_spec`` and never imported: its ``__init__`` imports ``pkg_resources``, which
recent setuptools no longer ships. Nothing is downloaded.
"""

import functools
import importlib.util
import os
import threading

INSTALL_HINT = 'pip install "keras_fr[dlib]"'

#: File names inside ``face_recognition_models/models/``.
HOG_NAME = "hog"  # built into dlib: no file
CNN_FILE = "mmod_human_face_detector.dat"
SHAPE68_FILE = "shape_predictor_68_face_landmarks.dat"

_LOCK = threading.Lock()


def import_dlib():
    """The ``dlib`` module, or an ImportError whose message says which extra to install."""
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(
            f"keras_fr.detection needs dlib, which is not installed ({exc}); install it with "
            f"{INSTALL_HINT}."
        ) from None
    return dlib


def models_dir():
    """The ``models/`` folder of the installed ``face_recognition_models`` package."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "keras_fr.detection needs the dlib model files of the package face-recognition-models, "
            f"which is not installed; install it with {INSTALL_HINT}."
        )
    for location in spec.submodule_search_locations:
        folder = os.path.join(location, "models")
        if os.path.isdir(folder):
            return folder
    raise RuntimeError(
        "the package face-recognition-models has no models/ folder (a broken install?); reinstall "
        f"it with {INSTALL_HINT}."
    )


def model_path(name):
    """Full path of one model file, or a RuntimeError naming the missing file."""
    path = os.path.join(models_dir(), name)
    if not os.path.isfile(path):
        raise RuntimeError(
            f"dlib model file {path!r} is missing (a broken face-recognition-models install?); "
            f"reinstall it with {INSTALL_HINT}."
        )
    return path


@functools.lru_cache(maxsize=None)
def _cached(name):
    dlib = import_dlib()
    if name == HOG_NAME:
        return dlib.get_frontal_face_detector()
    if name == CNN_FILE:
        return dlib.cnn_face_detection_model_v1(model_path(name))
    if name == SHAPE68_FILE:
        return dlib.shape_predictor(model_path(name))
    raise KeyError(name)


def load(name):
    """The dlib object for ``name`` (HOG_NAME, CNN_FILE or SHAPE68_FILE), loaded once per process."""
    with _LOCK:
        return _cached(name)
