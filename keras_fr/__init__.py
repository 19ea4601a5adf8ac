"""keras_fr: a Keras 3 model zoo for face recognition.

Read top-down: ``layers`` (the papers' building blocks) -> ``applications`` (the networks and their
weights) -> ``training``, ``data``, ``evaluation``, ``export``, ``conversion`` (what one does with a
network) -> ``cli`` (the ``keras-fr`` command).
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "layers",
    "applications",
    "losses",
    "data",
    "evaluation",
    "callbacks",
    "export",
    "conversion",
    "preprocessing",
    "recipes",
    "training",
    "recognition",
    "detection",
)

#: Top-level shortcuts: ``keras_fr.FaceRecognizer()``.
_SHORTCUTS = {"FaceRecognizer": "keras_fr.recognition", "Gallery": "keras_fr.recognition"}


# Modules that register Keras-serializable classes (package "keras_fr"). They are imported here so that
# `import keras_fr` is enough for `keras.saving.load_model("x.keras")` to find MSConv, the LGAF layers,
# the training model, the losses and the schedules; the public namespaces below stay lazy.
_SERIALIZABLES = (
    "keras_fr.layers.msconv",
    "keras_fr.layers.lgaf",
    "keras_fr.layers.margin",
    "keras_fr.applications.iresnet",
    "keras_fr.layers.activations",
    "keras_fr.training.losses",
    "keras_fr.training.recipes",
    "keras_fr.training.models",
    "keras_fr.data.augment",
)
from keras_fr import _quiet  # noqa: E402 - the `keras-fr` command hides TensorFlow's start-up banner

with _quiet.startup():
    for _module in _SERIALIZABLES:
        importlib.import_module(_module)
del _module


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(_SHORTCUTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(_SUBMODULES) + list(_SHORTCUTS) + ["__version__"])
