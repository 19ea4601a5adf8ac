"""Knowledge distillation with plain ``model.fit``: teach any zoo backbone to embed like a teacher.

``DistillationModel(student, ...)`` puts a learned linear projection (student dimension -> teacher
dimension) after the student network and trains both so that the projected embedding matches the
teacher's embedding of the same face. The projection is a training device only: afterwards
``model.student`` (also ``model.backbone``) is the bare network, to be saved, exported or converted
on its own.

Teacher targets come either

- precomputed, as the ``y`` of the dataset (``(images, teacher_embeddings)``; with a margin head
  ``(images, (teacher_embeddings, labels))`` or ``(images, {"teacher": ..., "label": ...})``), or
- on the fly, from a ``teacher`` ``keras.Model`` given to the constructor, run on
  ``teacher_preprocessing(images)`` in inference mode and without gradient (then ``y`` is omitted,
  or holds the integer labels when a margin head is used).

Loss terms (all computed in float32):

- ``loss="cosine"``: ``1 - cos(projection, teacher)`` per sample (the direction only; suits
  descriptors compared by angle or whose norm carries no identity); ``loss="l2"``: the squared
  Euclidean distance between the projection and the raw teacher embedding.
- ``relational_weight`` > 0 adds the mean squared difference between the batch cosine-similarity
  matrix of the student's embeddings (not projected: those are what the product uses) and that of
  the teacher's, over the off-diagonal entries (:func:`relational_loss`).
- ``num_classes`` adds a ``keras_fr.layers.MarginHead`` on the student embedding and
  ``margin_weight`` times a margin loss (default ``keras_fr.losses.ArcFaceLoss()``; any
  ``CombinedMarginLoss`` such as ``CosFaceLoss`` works). Label -1 marks an image without an identity
  label (e.g. a one-image-per-person set): it gets no margin loss but is still distilled.

``flip=True`` mirrors a random half of the training images horizontally before the student sees
them while keeping the teacher target of the unflipped image: a face descriptor is nearly invariant
to mirroring, so the target error is small, and the student learns that invariance too.

Example:

>>> student = keras_fr.applications.IResNet18(input_shape=(112, 112, 3), weights=None)
>>> model = DistillationModel(student, teacher_dim=128, relational_weight=0.5, flip=True)
>>> model.compile(keras.optimizers.AdamW(1e-3))
>>> model.fit(images, teacher_embeddings, batch_size=64, epochs=10)
>>> model.student.save("student.keras")
"""

import numbers

import keras
from keras import ops

from keras_fr import _onednn
from keras_fr.layers.margin import MarginHead
from keras_fr.training.losses import ArcFaceLoss

__all__ = ["DistillationModel", "distillation_loss", "relational_loss", "DISTILLATION_LOSSES"]

DISTILLATION_LOSSES = ("cosine", "l2")


def _l2_normalize(x, epsilon=1e-12):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))


def distillation_loss(projected, teacher, kind="cosine"):
    """Per-sample distillation loss ``(batch,)``, float32.

    Args:
        projected: ``(batch, D)`` student embeddings already projected to the teacher's dimension.
        teacher: ``(batch, D)`` teacher embeddings (any norm).
        kind: ``"cosine"`` (``1 - cos``) or ``"l2"`` (squared Euclidean distance).
    """
    if kind not in DISTILLATION_LOSSES:
        raise ValueError(f"`loss` must be one of {DISTILLATION_LOSSES}; got {kind!r}.")
    p = ops.cast(projected, "float32")
    t = ops.cast(teacher, "float32")
    if kind == "cosine":
        return 1.0 - ops.sum(_l2_normalize(p) * _l2_normalize(t), axis=-1)
    return ops.sum(ops.square(p - t), axis=-1)


def relational_loss(student, teacher):
    """Mean squared difference of the batch cosine-similarity matrices, off the diagonal.

    ``S = n(student) n(student)^T`` and ``T = n(teacher) n(teacher)^T`` with ``n`` the row-wise L2
    normalisation; the two embeddings may have different dimensions. The result is
    ``sum_{i != j} (S_ij - T_ij)^2 / (B (B - 1))``: zero exactly when the student ranks and spaces the
    batch like the teacher (up to a rotation), and 0 for a batch of one.
    """
    s = _l2_normalize(ops.cast(student, "float32"))
    t = _l2_normalize(ops.cast(teacher, "float32"))
    diff = ops.matmul(s, ops.transpose(s)) - ops.matmul(t, ops.transpose(t))
    n = ops.cast(ops.shape(s)[0], "float32")
    off_diagonal = 1.0 - ops.eye(ops.shape(s)[0], dtype="float32")
    return ops.divide_no_nan(ops.sum(ops.square(diff) * off_diagonal), n * (n - 1.0))


def _check_weight(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"`{name}` must be a real number >= 0; got {value!r}.")
    return float(value)


def _first(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _known_input_shape(model):
    """The model's (batch, H, W, C) input shape if it is a built single-input model with a static size,
    else None (also used by the training models in keras_fr.training.models)."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if not isinstance(shape, tuple) or any(d is None for d in shape[1:]):
        return None
    return shape


@keras.saving.register_keras_serializable(package="keras_fr")
class DistillationModel(keras.Model):
    """A student backbone, a linear projection to the teacher's dimension and the distillation loss.

    Compile it with an optimizer only (the loss is built in) and ``fit`` it; see the module docstring
    for the dataset layouts.

    Args:
        student: ``keras.Model`` mapping images to embeddings ``(batch, D)`` (the first output of a
            multi-output model is used).
        teacher_dim: the teacher's embedding dimension. Required with precomputed targets; with a
            ``teacher`` it is read from the teacher's output (and must agree if given).
        teacher: optional ``keras.Model`` computing the targets on the fly; frozen
            (``trainable = False``) and called with ``training=False``.
        teacher_preprocessing: optional callable mapping the dataset's images to the teacher's input
            (resizing, another pixel scaling). Default: the images as given.
        loss: ``"cosine"`` (default) or ``"l2"``.
        relational_weight: weight >= 0 of :func:`relational_loss` (0 = off).
        num_classes: optional positive int: adds a ``MarginHead`` and a margin loss on the labels.
        margin_loss: the margin loss (default ``ArcFaceLoss()``); only with ``num_classes``.
        margin_weight: weight >= 0 of the margin loss (default 1.0).
        flip: mirror a random half of the training images for the student (targets unchanged).
        seed: seed of the flip draws.
        **kwargs: ``keras.Model`` arguments (``name``).

    Attributes:
        student / backbone: the bare student network (trained in place).
        projection: the ``Dense(teacher_dim)`` layer (dropped after training).
        margin_head: the ``MarginHead`` or None.

    ``call`` returns a dict: ``"embedding"`` (student), ``"projection"`` and, with a margin head,
    ``"logits"`` (cosine logits). The fit logs hold ``loss`` and its terms ``distill_loss``,
    ``relational_loss`` and ``margin_loss``.

    Raises:
        ValueError: for any invalid argument, naming it.
    """

    def __init__(
        self,
        student,
        teacher_dim=None,
        teacher=None,
        teacher_preprocessing=None,
        loss="cosine",
        relational_weight=0.0,
        num_classes=None,
        margin_loss=None,
        margin_weight=1.0,
        flip=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(student, keras.layers.Layer):
            raise ValueError(
                f"`student` must be a keras.Model (images -> embeddings); got {type(student).__name__}."
            )
        if teacher is not None and not isinstance(teacher, keras.layers.Layer):
            raise ValueError(f"`teacher` must be a keras.Model or None; got {type(teacher).__name__}.")
        if teacher_preprocessing is not None and not callable(teacher_preprocessing):
            raise ValueError(
                "`teacher_preprocessing` must be a callable or None; "
                f"got {type(teacher_preprocessing).__name__}."
            )
        if teacher_preprocessing is not None and teacher is None:
            raise ValueError("`teacher_preprocessing` needs a `teacher` (targets computed on the fly).")
        if loss not in DISTILLATION_LOSSES:
            raise ValueError(f"`loss` must be one of {DISTILLATION_LOSSES}; got {loss!r}.")
        if teacher_dim is not None and (
            isinstance(teacher_dim, bool) or not isinstance(teacher_dim, numbers.Integral) or teacher_dim < 1
        ):
            raise ValueError(f"`teacher_dim` must be a positive integer or None; got {teacher_dim!r}.")
        if teacher is not None:
            out_dim = self._teacher_output_dim(teacher)
            if out_dim is not None and teacher_dim is not None and out_dim != teacher_dim:
                raise ValueError(
                    f"`teacher_dim` ({teacher_dim}) differs from the teacher's output dimension ({out_dim})."
                )
            teacher_dim = teacher_dim or out_dim
        if teacher_dim is None:
            raise ValueError(
                "`teacher_dim` is required with precomputed targets (no `teacher`) or when the "
                "teacher's output dimension cannot be inferred."
            )
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1
        ):
            raise ValueError(f"`num_classes` must be a positive integer or None; got {num_classes!r}.")
        if margin_loss is not None:
            if num_classes is None:
                raise ValueError("`margin_loss` needs `num_classes` (the margin head's classes).")
            if not callable(margin_loss):
                raise ValueError(f"`margin_loss` must be a Keras loss; got {type(margin_loss).__name__}.")
        if not isinstance(flip, bool):
            raise ValueError(f"`flip` must be True or False; got {flip!r}.")

        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        self.teacher_preprocessing = teacher_preprocessing
        self.teacher_dim = int(teacher_dim)
        self.loss_kind = loss
        self.relational_weight = _check_weight("relational_weight", relational_weight)
        self.margin_weight = _check_weight("margin_weight", margin_weight)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.flip = flip
        self.seed = seed
        self.projection = keras.layers.Dense(self.teacher_dim, name="projection")
        self.margin_head = None if num_classes is None else MarginHead(num_classes, name="margin_head")
        self.margin_loss = None if num_classes is None else (margin_loss or ArcFaceLoss())
        self._flip_seed = keras.random.SeedGenerator(seed)
        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("distill_loss", "relational_loss", "margin_loss")
        }
        input_shape = _known_input_shape(student)
        if input_shape is not None:
            self.build(input_shape)

    @staticmethod
    def _teacher_output_dim(teacher):
        try:
            shape = teacher.output_shape
            shape = shape[0] if isinstance(shape, list) else shape
            return int(shape[-1]) if shape[-1] is not None else None
        except (AttributeError, ValueError, TypeError):
            return None

    @property
    def backbone(self):
        """The bare student network (alias of ``student``)."""
        return self.student

    def build(self, input_shape):
        spec = self.student.compute_output_spec(keras.KerasTensor(tuple(input_shape), dtype=self.compute_dtype))
        emb_shape = tuple(_first(spec).shape)
        if not self.projection.built:
            self.projection.build(emb_shape)
        if self.margin_head is not None and not self.margin_head.built:
            self.margin_head.build(emb_shape)
        self.built = True

    def fit(self, *args, **kwargs):
        # Not in compile: Keras does not restore the compile state of a loaded model that overrides it.
        _onednn.check_training_allowed(type(self).__name__)
        return super().fit(*args, **kwargs)

    def _maybe_flip(self, x):
        mask = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=self._flip_seed) < 0.5
        return ops.where(mask, ops.flip(x, axis=2), x)

    def call(self, inputs, training=None):
        x = inputs
        if self.flip and training:
            x = self._maybe_flip(x)
        embedding = _first(self.student(x, training=training))
        outputs = {"embedding": embedding, "projection": self.projection(embedding)}
        if self.margin_head is not None:
            outputs["logits"] = self.margin_head(embedding)
        return outputs

    def teacher_targets(self, images):
        """The teacher's embeddings of ``images`` (on-the-fly mode), without gradient."""
        if self.teacher is None:
            raise ValueError("this DistillationModel has no `teacher`: targets must come with the data.")
        x = images if self.teacher_preprocessing is None else self.teacher_preprocessing(images)
        return ops.stop_gradient(ops.cast(_first(self.teacher(x, training=False)), "float32"))

    def _split_targets(self, x, y):
        """(teacher embeddings, labels or None) from the dataset's ``y`` (see the module docstring)."""
        targets = labels = None
        if isinstance(y, dict):
            targets, labels = y.get("teacher"), y.get("label")
        elif self.teacher is None and isinstance(y, (list, tuple)):
            targets, labels = (y[0], y[1]) if len(y) > 1 else (y[0], None)
        elif self.teacher is None:
            targets = y
        else:
            labels = y
        if targets is None:
            if self.teacher is None:
                raise ValueError(
                    "no teacher targets: pass them as the dataset's y (or y['teacher']) or give a `teacher`."
                )
            targets = self.teacher_targets(x)
        if self.margin_head is not None and labels is None:
            raise ValueError("a margin head (`num_classes`) needs integer labels in the dataset's y.")
        return targets, labels

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        targets, labels = self._split_targets(x, y)
        per_sample = distillation_loss(y_pred["projection"], targets, self.loss_kind)
        if sample_weight is not None:
            w = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            distill = ops.divide_no_nan(ops.sum(per_sample * w), ops.sum(w))
        else:
            distill = ops.mean(per_sample)
        total = distill
        relational = ops.zeros((), "float32")
        if self.relational_weight:
            relational = relational_loss(y_pred["embedding"], targets)
            total = total + self.relational_weight * relational
        margin = ops.zeros((), "float32")
        if self.margin_head is not None:
            margin = ops.cast(self.margin_loss(labels, y_pred["logits"]), "float32")
            total = total + self.margin_weight * margin
        if self.losses:
            total = total + ops.cast(ops.sum(self.losses), "float32")
        self._trackers["distill_loss"].update_state(distill)
        self._trackers["relational_loss"].update_state(relational)
        self._trackers["margin_loss"].update_state(margin)
        return total

    def embed(self, images, batch_size=64, verbose=0):
        """Raw (not normalized) student embeddings as numpy: ``student.predict``."""
        return self.student.predict(images, batch_size=batch_size, verbose=verbose)

    def get_config(self):
        config = super().get_config()
        ser = keras.saving.serialize_keras_object
        config.update(
            {
                "student": ser(self.student),
                "teacher_dim": self.teacher_dim,
                "teacher": None if self.teacher is None else ser(self.teacher),
                "teacher_preprocessing": (
                    ser(self.teacher_preprocessing)
                    if isinstance(self.teacher_preprocessing, keras.layers.Layer)
                    else None
                ),
                "loss": self.loss_kind,
                "relational_weight": self.relational_weight,
                "num_classes": self.num_classes,
                "margin_loss": None if self.margin_loss is None else ser(self.margin_loss),
                "margin_weight": self.margin_weight,
                "flip": self.flip,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("student", "teacher", "teacher_preprocessing", "margin_loss"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects=custom_objects)
        return cls(**config)
