"""What a network expects as input: crop size, face alignment and pixel normalization.

A model's input specification is part of what the model *is*: an embedding is only meaningful when
the face was cropped the way the network was trained. High-level code (``keras_fr.FaceRecognizer``,
the ``keras-fr`` commands) reads it from here and never asks the caller to choose an alignment.

Alignments:

- ``"arcface"``: the ArcFace 5-point similarity template at 112x112 (``keras_fr.preprocessing.align_face``),
  used by insightface's IResNets and by the papers' networks (MSConv, LGAF);
- ``"dlib_chip"``: dlib's face chip (``keras_fr.preprocessing.dlib_face_chip``: 150x150, padding 0.25),
  from the 68-point shape when a detector gives one, else from the five ArcFace points.
"""

import dataclasses
import importlib

import numpy as np

from keras_fr.applications import registry
from keras_fr.preprocessing import align_face, arcface_template, dlib_face_chip


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The input a network expects.

    Attributes:
        size: crop side in pixels (square crops).
        alignment: ``"arcface"`` or ``"dlib_chip"`` (see the module docstring).
        preprocess: ``"module:function"`` mapping RGB uint8/float [0, 255] to the network's input.
        embedding_size: length of the embedding the pretrained presets produce.
        description: one line for humans (``keras-fr info``).
    """

    size: int
    alignment: str
    preprocess: str
    embedding_size: int
    description: str

    def preprocess_fn(self):
        """The preprocessing function itself."""
        module, name = self.preprocess.split(":")
        return getattr(importlib.import_module(module), name)

    def crops_from_arcface(self, crops):
        """ArcFace-aligned square crops (the layout of LFW/CFP/insightface sets) in this model's geometry.

        Args:
            crops: uint8 (N, S, S, 3) crops aligned to the ArcFace template at any size S.

        Returns:
            uint8 (N, size, size, 3): the same crops when they already fit, else re-cropped: the five
            template points of the crop are the landmarks for this model's alignment (so a dlib model
            gets a dlib chip, with black where the ArcFace crop holds no pixels).

        Raises:
            ValueError: crops that are not (N, S, S, 3).
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
            raise ValueError(f"aligned crops must have shape (N, S, S, 3); got {crops.shape}.")
        side = crops.shape[1]
        if self.alignment == "arcface" and side == self.size:
            return crops
        points = arcface_template(side)
        if self.alignment == "dlib_chip":
            return np.stack([dlib_face_chip(c, points, size=self.size) for c in crops])
        return np.stack([align_face(c, points, image_size=self.size) for c in crops])


ARCFACE_112 = InputSpec(
    size=112,
    alignment="arcface",
    preprocess="keras_fr.applications.common:preprocess_input",
    embedding_size=512,
    description="112x112 RGB, ArcFace 5-point alignment, x / 127.5 - 1",
)
DLIB_CHIP_150 = InputSpec(
    size=150,
    alignment="dlib_chip",
    preprocess="keras_fr.applications.dlib_resnet:preprocess_input",
    embedding_size=128,
    description="150x150 RGB dlib face chip (padding 0.25), (x - dlib's RGB mean) / 256",
)

def input_spec(model_name):
    """The :class:`InputSpec` of a registry model (recorded with the model: ``keras_fr.applications.registry``).

    Args:
        model_name: a registry or builder name.

    Raises:
        ValueError: for an unknown model.

    Example:
        >>> input_spec("dlib_resnet").size
        150
    """
    return registry.get_record(model_name).input_spec
