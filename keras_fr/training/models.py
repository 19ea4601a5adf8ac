"""Fine-tuning with plain ``model.fit``: a backbone plus a margin head, and robust-training callbacks.

``FaceTrainingModel(backbone, num_classes)`` maps images to the cosine logits of a
``keras_fr.layers.MarginHead``; compile it with a margin loss from ``keras_fr.losses`` and fit it on
``(images, integer labels)``. Afterwards ``model.backbone`` is the embedding model, to be saved,
exported or converted on its own; the head (the class centers) is only needed to go on training.

Robustness:

- ``resume_callback(directory)``: per-epoch backup of the weights *and the optimizer state* (Keras
  ``BackupAndRestore``). A process killed in epoch k+1 restarts ``fit`` with the same callback and goes
  on from the end of epoch k: the optimizer's iteration count, so the learning-rate schedule, and its
  momentum are restored; only the interrupted epoch is lost.
- ``StopOnNaN``: stops at the first batch whose loss is NaN or infinite, with a message that says where
  and what to try (``keras.callbacks.TerminateOnNaN`` only prints one short line).
- ``training_callbacks(...)`` returns both, in the order that makes resuming correct.
"""

import math
import os

import keras
import numpy as np

from keras_fr import _onednn
from keras_fr.layers.margin import MarginHead
from keras_fr.layers.partial_fc import PartialFC, _tf_variable
from keras_fr.training.distillation import (  # noqa: F401  (DistillationModel: a re-export)
    DistillationModel,
    _known_input_shape,
)
from keras_fr.training.losses import CombinedMarginLoss


class _BackboneModel(keras.Model):
    """What the training models share: a backbone (images -> embeddings, the first output if several),
    an optional augmentation applied in training only, the (de)serialization of both, and a head on
    the embeddings (``_attach_head``; the subclass names its attribute in ``_head_attribute``)."""

    #: The attribute that holds the head layer (``"margin_head"``, ``"partial_fc"``).
    _head_attribute = None

    def __init__(self, backbone, augmentation=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                "`backbone` must be a keras.Model (images -> embeddings); "
                f"got {type(backbone).__name__}."
            )
        if augmentation is not None and not callable(augmentation):
            raise ValueError(
                f"`augmentation` must be a Keras layer or None; got {type(augmentation).__name__}."
            )
        self.backbone = backbone
        self.augmentation = augmentation

    def fit(self, *args, **kwargs):
        # Not in compile: Keras does not restore the compile state of a loaded model that overrides it.
        _onednn.check_training_allowed(type(self).__name__)
        return super().fit(*args, **kwargs)

    def _attach_head(self, head):
        """Keep ``head`` (under ``_head_attribute``) and its ``num_classes``, and build the model now
        when the backbone knows its input shape: the weights (and the optimizer's) then exist before
        fit, which BackupAndRestore needs to restore them at the start of fit."""
        setattr(self, self._head_attribute, head)
        self.num_classes = head.num_classes
        input_shape = _known_input_shape(self.backbone)
        if input_shape is not None:
            self.build(input_shape)

    def build(self, input_shape):
        """Build the head on the shape of the backbone's embedding for ``input_shape`` (no data)."""
        head = getattr(self, self._head_attribute)
        if not head.built:
            embeddings = self.backbone.compute_output_spec(
                keras.KerasTensor(tuple(input_shape), dtype=self.compute_dtype)
            )
            if isinstance(embeddings, (list, tuple)):
                embeddings = embeddings[0]
            head.build(tuple(embeddings.shape))
        self.built = True

    def call(self, inputs, training=None):
        return getattr(self, self._head_attribute)(self._embed(inputs, training))

    def _embed(self, inputs, training):
        x = inputs
        if self.augmentation is not None and training:
            x = self.augmentation(x, training=True)
        embeddings = self.backbone(x, training=training)
        if isinstance(embeddings, (list, tuple)):
            embeddings = embeddings[0]
        return embeddings

    def embed(self, images, batch_size=64, verbose=0):
        """Raw (not normalized) embeddings of the backbone, as numpy: ``backbone.predict``."""
        return self.backbone.predict(images, batch_size=batch_size, verbose=verbose)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "augmentation": (
                    None
                    if self.augmentation is None
                    else keras.saving.serialize_keras_object(self.augmentation)
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects
        )
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(
                config["augmentation"], custom_objects=custom_objects
            )
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_fr")
class FaceTrainingModel(_BackboneModel):
    """A backbone followed by a ``MarginHead``: images -> cosine logits, for ``fit`` with a margin loss.

    Args:
        backbone: a ``keras.Model`` mapping images to embeddings ``(batch, D)``, e.g.
            ``keras_fr.applications.MSConvResNet50()``. A backbone with several outputs (LGAF's
            ``return_branches=True``) contributes its first output (the fused embedding).
        num_classes: positive int, the number of training identities.
        augmentation: optional layer (or ``keras.Sequential``) applied to the images in training only,
            e.g. ``keras_fr.data.augment.msconv_augmentation()``. ``None`` = no augmentation.
        head_initializer: initializer of the class centers (default ``RandomNormal(stddev=0.01)``).
        **kwargs: ``keras.Model`` arguments (``name``).

    Attributes:
        backbone: the embedding model (trained in place by ``fit``).
        margin_head: the ``MarginHead`` holding the class centers.

    Raises:
        ValueError: if ``backbone`` is not a Keras model/layer or ``num_classes`` is invalid.

    Example:

    >>> backbone = keras_fr.applications.MSConvResNet50(input_shape=(112, 112, 3))
    >>> model = FaceTrainingModel(backbone, num_classes=240)
    >>> model.compile(keras.optimizers.SGD(0.02, momentum=0.9), loss=ArcFaceLoss())
    >>> model.fit(dataset, epochs=20, callbacks=training_callbacks("backup/"))
    >>> model.backbone.save("backbone.keras")
    """

    _head_attribute = "margin_head"

    def __init__(self, backbone, num_classes, augmentation=None, head_initializer=None, **kwargs):
        super().__init__(backbone, augmentation, **kwargs)
        self._attach_head(
            MarginHead(num_classes, kernel_initializer=head_initializer, name="margin_head")
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "head_initializer": keras.initializers.serialize(
                    self.margin_head.kernel_initializer
                ),
            }
        )
        return config


class NonFiniteLossError(FloatingPointError):
    """Raised by ``StopOnNaN`` when the training loss becomes NaN or infinite."""


@keras.saving.register_keras_serializable(package="keras_fr")
class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first batch whose loss is NaN or infinite, and say so clearly.

    Args:
        raise_error: if True (default), raise ``NonFiniteLossError`` out of ``fit`` (the caller sees a
            traceback with the message); if False, print the message and set ``model.stop_training``.

    Attributes:
        message: the message, or None while the loss is finite.
        last_finite_loss: the last finite (epoch running-mean) loss seen, or None.

    Example:

    >>> model.fit(x, y, callbacks=[StopOnNaN()])
    """

    def __init__(self, raise_error=True):
        super().__init__()
        self.raise_error = raise_error
        self.message = None
        self.last_finite_loss = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        loss = float(np.asarray(logs["loss"]))
        if math.isfinite(loss):
            self.last_finite_loss = loss
            return
        lr = None
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            try:
                lr = float(np.asarray(optimizer.learning_rate))
            except (TypeError, ValueError):
                lr = None
        self.message = (
            f"Training stopped: the loss became {loss} at epoch {self._epoch + 1}, batch {batch + 1}"
            f" (last finite running loss: {self.last_finite_loss}; learning rate: {lr}). "
            "Usual causes: a learning rate too high for this batch size (scale it linearly with the "
            "batch), labels outside [0, num_classes) or images not in [-1, 1], float16 overflow "
            "(use mixed_bfloat16 or float32), or a corrupt input. Resume from the last epoch backup "
            "after fixing the cause."
        )
        self.model.stop_training = True
        if self.raise_error:
            raise NonFiniteLossError(self.message)
        print(self.message)

    def get_config(self):
        return {"raise_error": self.raise_error}


def resume_callback(directory, delete_after_success=True):
    """An epoch checkpoint of weights and optimizer state that ``fit`` resumes from after a crash.

    A ``keras.callbacks.BackupAndRestore`` saving at the end of every epoch. Run the same ``fit`` call
    (same callback directory, same ``epochs``) after the process was killed: it continues from the last
    completed epoch with the optimizer's state (iterations, so the learning-rate schedule; momentum).

    Args:
        directory: folder for the backup (created if missing). Use one folder per training run.
        delete_after_success: delete the backup when ``fit`` completes (default True, as Keras does:
            a finished run started again trains afresh). With False, a finished run started again
            restores the final state and trains no further epoch.

    Returns:
        The callback. Put it *before* callbacks that may stop the process.

    Raises:
        ValueError: if ``directory`` is empty.
    """
    if not directory:
        raise ValueError("`directory` must name a folder for the epoch backups; got an empty value.")
    os.makedirs(directory, exist_ok=True)
    return keras.callbacks.BackupAndRestore(
        os.fspath(directory), save_freq="epoch", delete_checkpoint=delete_after_success
    )


def training_callbacks(backup_dir=None, stop_on_nan=True, extra=(), keep_backup=False):
    """The robust-training callbacks: epoch backup/resume (if ``backup_dir``) and ``StopOnNaN``.

    Args:
        backup_dir: folder for ``resume_callback``; None = no backup.
        stop_on_nan: add ``StopOnNaN(raise_error=True)``.
        extra: more callbacks (e.g. ``keras_fr.callbacks.VerificationCallback``), appended.
        keep_backup: keep the backup after ``fit`` completes (default False).

    Returns:
        A list of callbacks for ``fit``.

    Example:
        >>> [type(c).__name__ for c in training_callbacks()]
        ['StopOnNaN']

    With ``backup_dir="run1/backup"`` the list starts with the backup/resume callback.
    """
    callbacks = []
    if backup_dir is not None:
        callbacks.append(resume_callback(backup_dir, delete_after_success=not keep_backup))
    if stop_on_nan:
        callbacks.append(StopOnNaN())
    callbacks.extend(extra)
    return callbacks


@keras.saving.register_keras_serializable(package="keras_fr")
class PartialFCTrainingModel(_BackboneModel):
    """A backbone followed by a ``PartialFC`` head, for ``model.fit`` with a margin loss.

    Like ``keras_fr.training.FaceTrainingModel`` (images -> full cosine logits when called, so
    ``predict`` and ``evaluate`` use every class), but ``fit``'s step samples the classes and updates the
    centres row-wise (module docstring). Compile with a ``keras_fr.losses.CombinedMarginLoss`` (or
    ``ArcFaceLoss``/``CosFaceLoss``) and any optimizer for the backbone; its learning rate (schedule)
    is also the centres' unless ``head_learning_rate`` is given. Training metrics passed to ``compile``
    see the sampled logits with the remapped labels.

    Args:
        backbone: a ``keras.Model`` images -> embeddings ``(batch, D)`` (first output if several).
        num_classes: positive int.
        sample_rate: in (0, 1] (default 0.1).
        seed: the sampling seed (default 0).
        momentum, weight_decay: the centres' SGD momentum (0.9) and coupled weight decay (5e-4).
        head_learning_rate: None (follow the optimizer) or a float.
        augmentation: optional layer applied to the inputs in training only.
        head_initializer: initializer of the centres.
        **kwargs: ``keras.Model`` arguments.

    Raises:
        ValueError: for a backbone that is not a Keras layer/model, invalid head arguments, or (at
            ``compile``) a loss that is not a ``CombinedMarginLoss`` or a loss-scaling optimizer
            (mixed float16 is not supported by the row update yet).

    Example:

    >>> model = PartialFCTrainingModel(backbone, num_classes=2_000_000, sample_rate=0.1)
    >>> model.compile(SGDWithL2(0.1, momentum=0.9, l2=5e-4), loss=ArcFaceLoss())
    >>> model.fit(dataset, epochs=20)
    """

    #: The head layer built by ``__init__`` (``ShardedPartialFCTrainingModel`` puts its own here).
    head_layer = PartialFC
    _head_attribute = "partial_fc"

    def __init__(
        self,
        backbone,
        num_classes,
        sample_rate=0.1,
        seed=0,
        momentum=0.9,
        weight_decay=5e-4,
        head_learning_rate=None,
        augmentation=None,
        head_initializer=None,
        **kwargs,
    ):
        super().__init__(backbone, augmentation, **kwargs)
        self._attach_head(self.head_layer(
            num_classes, sample_rate=sample_rate, seed=seed, momentum=momentum,
            weight_decay=weight_decay, learning_rate=head_learning_rate,
            kernel_initializer=head_initializer, name="partial_fc",
        ))

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        if not isinstance(loss, CombinedMarginLoss):
            raise ValueError(
                "PartialFCTrainingModel needs a margin loss from keras_fr.losses "
                f"(ArcFaceLoss, CosFaceLoss, CombinedMarginLoss); got {loss!r}."
            )
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "PartialFCTrainingModel does not support loss scaling (mixed_float16) yet; "
                "use float32 or mixed_bfloat16."
            )

    def sampled_forward(self, tape, x, y, step, sample_weight=None, training=True):
        """The forward pass of one sampled step, recorded on ``tape`` (a ``tf.GradientTape`` entered
        by the caller).

        Returns ``(loss, logits, local_labels, indices, rows)``: ``rows = kernel[indices]``, watched
        by ``tape`` (the centres' gradient is the loss's gradient with respect to ``rows``), and
        ``logits`` the sampled cosine logits ``(batch, K)`` that the compiled loss saw with
        ``local_labels``.
        """
        import tensorflow as tf

        embeddings = self._embed(x, training=training)
        indices, local = self.partial_fc.sample(y, step)
        rows = tf.gather(_tf_variable(self.partial_fc.kernel), indices)
        tape.watch(rows)
        logits = self.partial_fc.cosine(embeddings, rows)
        loss = self._compute_loss(
            x=x, y=local, y_pred=logits, sample_weight=sample_weight, training=training
        )
        return loss, logits, local, indices, rows

    def train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        step = self.optimizer.iterations
        variables = list(self.trainable_variables)
        with tf.GradientTape() as tape:
            loss, logits, local, indices, rows = self.sampled_forward(
                tape, x, y, step, sample_weight=sample_weight, training=True
            )
        self._loss_tracker.update_state(
            loss, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
        )
        grads = tape.gradient(loss, variables + [rows])
        row_grads = grads.pop()
        lr = self.partial_fc.learning_rate
        if lr is None:
            lr = self.optimizer.learning_rate
        lr = tf.identity(tf.cast(lr, tf.float32))  # read before the optimizer step advances a schedule
        if variables:
            self.optimizer.apply(grads, variables)
        else:
            self.optimizer.iterations.assign_add(1)
        self.partial_fc.apply_row_update(indices, row_grads, lr)
        return self.compute_metrics(x, local, logits, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        head = self.partial_fc
        config.update(
            {
                "num_classes": self.num_classes,
                "sample_rate": head.sample_rate,
                "seed": head.seed,
                "momentum": head.momentum,
                "weight_decay": head.weight_decay,
                "head_learning_rate": head.learning_rate,
                "head_initializer": keras.initializers.serialize(head.kernel_initializer),
            }
        )
        return config
