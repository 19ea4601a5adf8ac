"""Training: margin losses, training models for ``model.fit``, recipes, callbacks and distillation.

One subpackage for everything that trains a network:

- ``keras_fr.training.losses``: ArcFace, CosFace and the combined (m1, m2, m3) margin loss;
- ``keras_fr.training.models``: ``FaceTrainingModel`` (backbone + margin head), ``PartialFCTrainingModel``
  and the robust-training callbacks (``resume_callback``, ``StopOnNaN``, ``training_callbacks``);
- ``keras_fr.training.sharded_partial_fc``: ``ShardedPartialFCTrainingModel``, PartialFC with the class
  centres sharded over ``MirroredStrategy`` replicas (TensorFlow; imported on its own, not re-exported);
- ``keras_fr.training.recipes``: the papers' optimizer/schedule/augmentation settings;
- ``keras_fr.training.callbacks``: ``VerificationCallback`` (pair accuracy during ``fit``);
- ``keras_fr.training.distillation``: ``DistillationModel`` (a student taught by a teacher's embeddings).

The names of ``keras_fr.training.models`` are also importable from ``keras_fr.training`` itself, as before
the subpackage existed; ``keras_fr.losses``, ``keras_fr.recipes``, ``keras_fr.callbacks`` and
``keras_fr.distillation`` remain as other names of the modules here (the same module objects).
"""

from keras_fr.training.models import (  # noqa: F401
    FaceTrainingModel,
    NonFiniteLossError,
    PartialFCTrainingModel,
    StopOnNaN,
    resume_callback,
    training_callbacks,
)
from keras_fr.training.distillation import DistillationModel  # noqa: F401

__all__ = [
    "DistillationModel",
    "FaceTrainingModel",
    "NonFiniteLossError",
    "PartialFCTrainingModel",
    "StopOnNaN",
    "resume_callback",
    "training_callbacks",
]
