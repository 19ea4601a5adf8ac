"""The papers' training recipes, scaled to your dataset and batch size.

``msconv_recipe(num_images)`` and ``lgaf_recipe(num_images)`` return a ``Recipe``: optimizer (with its
learning-rate schedule), loss, callbacks, augmentation, epochs, batch size and steps per epoch, ready
for ``FaceTrainingModel``::

    recipe = msconv_recipe(num_images=info.num_images, batch_size=64, backup_dir="run1/backup")
    model = FaceTrainingModel(backbone, info.num_classes, augmentation=recipe.augmentation)
    model.compile(optimizer=recipe.optimizer, loss=recipe.loss)
    model.fit(dataset, epochs=recipe.epochs, callbacks=recipe.callbacks)

Scaling rule: the schedule is laid out in *steps* (``steps_per_epoch = ceil(num_images / batch_size)``),
so epoch boundaries stay where the paper puts them for any dataset size; when ``batch_size`` differs
from the paper's, the learning rates (initial and final) are multiplied by ``batch_size / paper_batch``
(the linear scaling rule of Goyal et al. 2017) unless ``scale_lr=False``.

Weight decay is applied as PyTorch's ``SGD(weight_decay=...)`` does, i.e. coupled: ``wd * w`` is added
to the gradient before momentum (``SGDWithL2``); Keras' own ``weight_decay`` argument is decoupled
(``w -= lr * wd * w`` outside the momentum), which with momentum 0.9 is about ten times weaker.
"""

import dataclasses
import math
import numbers

import keras
from keras import ops

from keras_fr.data.augment import lgaf_augmentation, msconv_augmentation
from keras_fr.training.losses import ArcFaceLoss, CosFaceLoss
from keras_fr.training.models import training_callbacks


@keras.saving.register_keras_serializable(package="keras_fr")
class SGDWithL2(keras.optimizers.SGD):
    """SGD with PyTorch-style (coupled) weight decay: the gradient gets ``l2 * w`` before momentum.

    Args:
        learning_rate: float or ``LearningRateSchedule``.
        momentum: momentum (0.9 in both papers).
        nesterov: Nesterov momentum.
        l2: the weight decay coefficient (5e-4 in both papers), applied to every trainable variable, as
            insightface and the MSConv reference do (BN and PReLU parameters included).
        **kwargs: other ``keras.optimizers.SGD`` arguments (not ``weight_decay``).

    Note: Keras' SGD keeps ``m = momentum * m - lr * g``, PyTorch ``b = momentum * b + g`` and steps
    ``lr * b``: the same updates while the learning rate is constant, slightly different when it changes.

    Example:

    >>> optimizer = SGDWithL2(learning_rate=0.02, momentum=0.9, l2=5e-4)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2=0.0, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("SGDWithL2 applies `l2` itself; do not also pass `weight_decay`.")
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        if isinstance(l2, bool) or not isinstance(l2, numbers.Real) or l2 < 0:
            raise ValueError(f"`l2` must be a number >= 0; got {l2!r}.")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = gradient + ops.cast(self.l2, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["l2"] = self.l2
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class CosineDecayTo(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay per step from ``initial_learning_rate`` to ``final_learning_rate`` over ``decay_steps``.

    ``"half"`` (default): ``final + (initial - final) * (1 + cos(pi * t / T)) / 2``, PyTorch's
    ``CosineAnnealingLR(eta_min=final)``. ``"quarter"``: ``final + (initial - final) * cos(pi/2 * t / T)``,
    the literal reading of the MSConv paper ("a curve consistent with the cosine function in the interval
    [0, pi/2]"). After ``decay_steps`` the rate stays at ``final_learning_rate``.

    Args:
        initial_learning_rate, final_learning_rate: floats, initial >= final >= 0.
        decay_steps: positive int.
        shape: ``"half"`` or ``"quarter"``.
    """

    def __init__(self, initial_learning_rate, final_learning_rate, decay_steps, shape="half"):
        if shape not in ("half", "quarter"):
            raise ValueError(f"`shape` must be 'half' or 'quarter'; got {shape!r}.")
        if not (initial_learning_rate >= final_learning_rate >= 0):
            raise ValueError(
                "need initial_learning_rate >= final_learning_rate >= 0; got "
                f"{initial_learning_rate!r}, {final_learning_rate!r}."
            )
        if isinstance(decay_steps, bool) or not isinstance(decay_steps, numbers.Integral) or decay_steps < 1:
            raise ValueError(f"`decay_steps` must be a positive integer; got {decay_steps!r}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.final_learning_rate = float(final_learning_rate)
        self.decay_steps = int(decay_steps)
        self.shape = shape

    def __call__(self, step):
        t = ops.minimum(ops.cast(step, "float32") / self.decay_steps, 1.0)
        if self.shape == "half":
            factor = 0.5 * (1.0 + ops.cos(math.pi * t))
        else:
            factor = ops.cos(0.5 * math.pi * t)
        return self.final_learning_rate + (self.initial_learning_rate - self.final_learning_rate) * factor

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "final_learning_rate": self.final_learning_rate,
            "decay_steps": self.decay_steps,
            "shape": self.shape,
        }


@dataclasses.dataclass
class Recipe:
    """A training recipe: what to pass to ``FaceTrainingModel``, ``compile`` and ``fit``.

    Attributes:
        name: ``"msconv"`` or ``"lgaf"``.
        optimizer: a ``SGDWithL2`` with the schedule.
        schedule: the learning-rate schedule (per step).
        loss: the margin loss.
        callbacks: ``training_callbacks(backup_dir)`` plus your extra callbacks.
        augmentation: the augmentation layer (give it to ``FaceTrainingModel`` or the dataset).
        epochs, batch_size, steps_per_epoch: the fit plan.
        learning_rate: the (possibly scaled) initial learning rate.
        notes: how the paper's numbers were scaled, and what was assumed.
    """

    name: str
    optimizer: keras.optimizers.Optimizer
    schedule: object
    loss: keras.losses.Loss
    callbacks: list
    augmentation: keras.layers.Layer
    epochs: int
    batch_size: int
    steps_per_epoch: int
    learning_rate: float
    notes: str


def _check_plan(num_images, batch_size, epochs):
    for name, value in (("num_images", num_images), ("batch_size", batch_size), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return math.ceil(num_images / batch_size)


#: The MSConv paper (section 4.1/4.2): batch 128, SGD 0.02, momentum 0.9, wd 5e-4, cosine to 5e-6,
#: 20 epochs, flip, ArcFace s=64 m=0.5, mixed precision.
MSCONV = {"batch_size": 128, "learning_rate": 0.02, "final_learning_rate": 5e-6, "epochs": 20,
          "momentum": 0.9, "weight_decay": 5e-4, "scale": 64.0, "margin": 0.5}
#: The LGAF paper (section 4.1): ArcFace or CosFace s=64 m=0.4, SGD lr 0.1, steps at epochs 12, 20, 24.
#: Not given there and taken from AdaFace [22], whose schedule and augmentation LGAF follows: batch
#: 512, 26 epochs, x0.1 at each step, momentum 0.9, weight decay 5e-4.
LGAF = {"batch_size": 512, "learning_rate": 0.1, "milestones": (12, 20, 24), "gamma": 0.1, "epochs": 26,
        "momentum": 0.9, "weight_decay": 5e-4, "scale": 64.0, "margin": 0.4}


def msconv_recipe(num_images, batch_size=128, epochs=None, scale_lr=True, backup_dir=None,
                  extra_callbacks=(), cosine_shape="half", gradient="straight_through", seed=None):
    """The MSConv paper's recipe for ``num_images`` training images at ``batch_size``.

    SGD (momentum 0.9, coupled weight decay 5e-4), learning rate 0.02 with cosine decay per step to
    5e-6 over all epochs, batch 128, 20 epochs, random horizontal flip, ArcFace s = 64, m = 0.5. The
    paper also trains in mixed precision: ``keras.config.set_dtype_policy("mixed_float16")`` on a GPU
    (the ``MarginHead`` and loss stay float32).

    Args:
        num_images: images in the training set (one epoch).
        batch_size: your batch size; the learning rates scale by ``batch_size / 128`` if ``scale_lr``.
        epochs: default 20; the cosine spans all of them.
        scale_lr: apply the linear scaling rule (default True).
        backup_dir: folder for the per-epoch backup (resume after a crash); None = none.
        extra_callbacks: appended (e.g. ``keras_fr.callbacks.VerificationCallback``).
        cosine_shape: ``"half"`` (PyTorch ``CosineAnnealingLR``, default) or ``"quarter"``.
        gradient: ArcFace gradient mode (``"straight_through"`` as the reference, or ``"exact"``).
        seed: augmentation seed.

    Returns:
        A ``Recipe``.

    Raises:
        ValueError: non-positive sizes.

    Example:
        >>> recipe = msconv_recipe(100_000, batch_size=256)
        >>> recipe.steps_per_epoch, recipe.learning_rate, recipe.epochs
        (391, 0.04, 20)
    """
    epochs = MSCONV["epochs"] if epochs is None else epochs
    steps = _check_plan(num_images, batch_size, epochs)
    factor = batch_size / MSCONV["batch_size"] if scale_lr else 1.0
    lr, final = MSCONV["learning_rate"] * factor, MSCONV["final_learning_rate"] * factor
    schedule = CosineDecayTo(lr, final, steps * epochs, shape=cosine_shape)
    notes = (
        f"MSConv recipe: {epochs} epochs x {steps} steps (batch {batch_size}); lr {lr:g} -> {final:g} "
        f"({cosine_shape} cosine per step)"
        + (f", linearly scaled by {batch_size}/128 = {factor:g}" if scale_lr and factor != 1 else "")
        + "; SGD momentum 0.9, coupled weight decay 5e-4; ArcFace s=64 m=0.5; horizontal flip."
    )
    return Recipe(
        name="msconv",
        optimizer=SGDWithL2(schedule, momentum=MSCONV["momentum"], l2=MSCONV["weight_decay"]),
        schedule=schedule,
        loss=ArcFaceLoss(scale=MSCONV["scale"], margin=MSCONV["margin"], gradient=gradient),
        callbacks=training_callbacks(backup_dir, extra=extra_callbacks),
        augmentation=msconv_augmentation(seed=seed),
        epochs=epochs,
        batch_size=batch_size,
        steps_per_epoch=steps,
        learning_rate=lr,
        notes=notes,
    )


def lgaf_recipe(num_images, batch_size=512, epochs=None, loss="arcface", scale_lr=True, backup_dir=None,
                extra_callbacks=(), gradient="straight_through", probability=0.2, seed=None):
    """The LGAF paper's recipe for ``num_images`` training images at ``batch_size``.

    SGD learning rate 0.1 multiplied by 0.1 at epochs 12, 20 and 24 (per step: at
    ``epoch * steps_per_epoch``), ArcFace or CosFace with s = 64, m = 0.4, and the augmentations (random
    rectangle crop, photometric jitter, down-up rescaling, each with probability 0.2, plus flip).
    Batch 512, 26 epochs, momentum 0.9 and weight decay 5e-4 are not in the paper: they are AdaFace's,
    whose schedule and augmentation LGAF follows ([22]).

    Args:
        num_images: images in the training set.
        batch_size: your batch size; learning rates scale by ``batch_size / 512`` if ``scale_lr``.
        epochs: default 26.
        loss: ``"arcface"`` or ``"cosface"`` (both m = 0.4).
        scale_lr, backup_dir, extra_callbacks, gradient, seed: as for ``msconv_recipe``.
        probability: augmentation probability per operation (paper: 0.2).

    Returns:
        A ``Recipe``.

    Raises:
        ValueError: non-positive sizes or an unknown ``loss``.

    Example:
        >>> recipe = lgaf_recipe(100_000, batch_size=256, loss="cosface")
        >>> recipe.steps_per_epoch, recipe.learning_rate, recipe.epochs
        (391, 0.05, 26)
    """
    if loss not in ("arcface", "cosface"):
        raise ValueError(f"`loss` must be 'arcface' or 'cosface'; got {loss!r}.")
    epochs = LGAF["epochs"] if epochs is None else epochs
    steps = _check_plan(num_images, batch_size, epochs)
    factor = batch_size / LGAF["batch_size"] if scale_lr else 1.0
    lr = LGAF["learning_rate"] * factor
    boundaries = [m * steps for m in LGAF["milestones"] if m < epochs]
    values = [lr * LGAF["gamma"] ** i for i in range(len(boundaries) + 1)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values) if boundaries else lr
    margin_loss = (
        ArcFaceLoss(scale=LGAF["scale"], margin=LGAF["margin"], gradient=gradient)
        if loss == "arcface"
        else CosFaceLoss(scale=LGAF["scale"], margin=LGAF["margin"])
    )
    notes = (
        f"LGAF recipe: {epochs} epochs x {steps} steps (batch {batch_size}); lr {lr:g}, x0.1 at epochs "
        f"{[m for m in LGAF['milestones'] if m < epochs]}"
        + (f", linearly scaled by {batch_size}/512 = {factor:g}" if scale_lr and factor != 1 else "")
        + f"; {loss} s=64 m=0.4; crop/photometric/rescale p={probability} + flip. Batch 512, 26 epochs, "
        "momentum 0.9 and weight decay 5e-4 are AdaFace's (not stated in the LGAF paper)."
    )
    return Recipe(
        name="lgaf",
        optimizer=SGDWithL2(schedule, momentum=LGAF["momentum"], l2=LGAF["weight_decay"]),
        schedule=schedule,
        loss=margin_loss,
        callbacks=training_callbacks(backup_dir, extra=extra_callbacks),
        augmentation=lgaf_augmentation(probability, seed=seed),
        epochs=epochs,
        batch_size=batch_size,
        steps_per_epoch=steps,
        learning_rate=lr,
        notes=notes,
    )
