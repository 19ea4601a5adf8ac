"""Margin-based softmax losses: ArcFace, CosFace and insightface's combined (m1, m2, m3) margin.

All three take **sparse integer labels** and **cosine logits** (the output of
``keras_fr.layers.MarginHead``, values in [-1, 1]); they add the margin to the target class, multiply
every logit by the scale ``s`` and return the softmax cross-entropy. Labels equal to -1 are ignored
(the sample contributes nothing, and the mean is over the other samples).

For the target class ``y`` with angle ``theta = arccos(cos_y)`` the margined logit is

    s * (cos(m1 * theta + m2) - m3)

and every other class keeps ``s * cos_j``. ArcFace is (1, m, 0), CosFace (1, 0, m), SphereFace-like
margins use m1 > 1.

Two gradient modes (``gradient=``):

- ``"straight_through"`` (default) reproduces insightface's ``arcface_torch`` ``CombinedMarginLoss``
  and the MSConv reference repository, which copies it: on the angular path (m1 = 1, m3 = 0) they apply
  ``arccos``, add ``m2`` and take ``cos`` *in place under* ``torch.no_grad()``, so the margin changes the
  target logit's value while autograd still sees the unmodified cosine. The gradient of the loss with
  respect to the cosine logits is therefore ``s * (softmax(margined logits) - onehot)``: the margin's own
  derivative is replaced by the identity. Here that is written as
  ``cos_y + stop_gradient(margined - cos_y)``.
- ``"exact"`` is the textbook derivative: the target gets the extra factor
  ``d/dcos [cos(m1 * arccos(cos) + m2)] = m1 * sin(m1 * theta + m2) / sin(theta)``.

For a pure additive cosine margin (m1 = 1, m2 = 0, CosFace) the margin's derivative *is* the identity,
so both modes are the same (insightface's CosFace path also keeps the gradient).

Numerical safety: the cosines are clipped to [-1, 1] (NaN stays NaN, so a diverged network shows a
NaN loss); ``arccos`` is evaluated on the cosine clipped to
[-1 + 1e-7, 1 - 1e-7], so neither the value nor the gradient is ever NaN or infinite at cos = +-1
(in the exact mode a cosine at or beyond the clip bound gets zero gradient through the margin, where
the true derivative would be infinite).

What is *not* here, on purpose (keep it in mind when comparing with other implementations):

- insightface's ``interclass_filtering_threshold`` (dropping negative classes with cos above a
  threshold): every class given is used. Class sampling is not done by the loss:
  ``keras_fr.layers.PartialFC`` (one replica) and ``keras_fr.training.sharded_partial_fc`` (centres
  sharded over replicas) sample the classes and give it the sampled logits.
- the "easy margin" and the ``th``/``mm`` fallback of the older ``ArcFace`` modules (replacing
  ``cos(theta + m)`` by ``cos(theta) - m * sin(m)`` when ``theta + m > pi``): the combined-margin
  reference does neither, so for theta > pi - m the ArcFace target logit is not monotonic in theta,
  exactly as in the reference.
- insightface's ``CombinedMarginLoss`` implements only two paths, (m1 = 1, m3 = 0) (angular, under
  ``no_grad``) and m3 > 0 (cosine, with gradient; m1 and m2 are then ignored), and raises otherwise;
  here any (m1, m2, m3) uses the general formula above, which equals the reference on both of its paths
  except that the reference ignores m1 and m2 whenever m3 > 0.
- label -1 means "ignore this sample" (no loss, not counted in the mean). In insightface's PartialFC a
  -1 marks a sample whose class centre lives on another GPU: it still enters the distributed softmax
  there. keras_fr's sharded PartialFC (``keras_fr.training.sharded_partial_fc``) keeps the two apart:
  it calls ``margin_logits`` with -1 for "target on another shard" and computes the cross-entropy over
  the shards itself (``sharded_margin_loss``), where a -1 label still means "ignored".
- labels must lie in [-1, num_classes); other values are not checked inside the graph.
"""

import numbers

import keras
from keras import ops

GRADIENT_MODES = ("straight_through", "exact")

# arccos is evaluated on cosines clipped to [-1 + _ARCCOS_EPS, 1 - _ARCCOS_EPS] (float32 resolves it).
_ARCCOS_EPS = 1e-7


def _check_number(name, value, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a real number; got {value!r}.")
    if positive and not value > 0:
        raise ValueError(f"`{name}` must be > 0; got {value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_fr")
class CombinedMarginLoss(keras.losses.Loss):
    """Softmax cross-entropy with the combined margin ``s * (cos(m1 * theta + m2) - m3)`` on the target.

    Args:
        scale: ``s`` > 0, multiplies every logit (64 in ArcFace, CosFace, MSConv and LGAF).
        m1: multiplicative angular margin (1.0 = none).
        m2: additive angular margin in radians (ArcFace's m; 0.0 = none).
        m3: additive cosine margin (CosFace's m; 0.0 = none).
        gradient: ``"straight_through"`` (insightface/MSConv reference behaviour: the margin changes the
            value, the gradient flows as if it were the identity) or ``"exact"`` (the textbook
            derivative). See the module docstring.
        name: the loss name.
        reduction: as for any ``keras.losses.Loss``; with ``"sum_over_batch_size"`` (default) the
            mean is over the samples whose label is not -1.
        dtype: the loss computation dtype; float32 by default, also under mixed precision.

    Call arguments:
        y_true: integer labels of shape ``(batch,)`` or ``(batch, 1)``; -1 = ignore the sample.
        y_pred: cosine logits ``(batch, num_classes)`` from ``MarginHead`` (not yet scaled).

    Returns:
        The reduced loss (a scalar by default).

    Raises:
        ValueError: for a non-positive ``scale`` or ``m1``, or an unknown ``gradient``.

    Example:

    >>> loss = CombinedMarginLoss(scale=64, m1=1.0, m2=0.5, m3=0.0)   # ArcFace
    >>> value = loss(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.7]], "float32"))
    """

    def __init__(
        self,
        scale=64.0,
        m1=1.0,
        m2=0.0,
        m3=0.0,
        gradient="straight_through",
        name="combined_margin_loss",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.scale = _check_number("scale", scale, positive=True)
        self.m1 = _check_number("m1", m1, positive=True)
        self.m2 = _check_number("m2", m2)
        self.m3 = _check_number("m3", m3)
        if gradient not in GRADIENT_MODES:
            raise ValueError(
                f"`gradient` must be one of {GRADIENT_MODES}; got {gradient!r}."
            )
        self.gradient = gradient

    def margin_logits(self, y_true, y_pred):
        """The scaled logits with the margin on each sample's target class (before the softmax).

        Args:
            y_true: integer labels ``(batch,)``; -1 rows get no margin.
            y_pred: cosine logits ``(batch, num_classes)``.

        Returns:
            float32 tensor ``(batch, num_classes)``: ``s * cos`` with the target replaced by the margined
            value (its gradient according to ``self.gradient``).
        """
        cos = ops.cast(y_pred, "float32")
        # Clip rounding excursions beyond +-1, but keep NaN visible (a clip would turn it into +-1
        # and hide a diverged network behind a finite loss).
        cos = ops.where(ops.isnan(cos), cos, ops.clip(cos, -1.0, 1.0))
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        num_classes = ops.shape(cos)[-1]
        onehot = ops.one_hot(ops.maximum(labels, 0), num_classes, dtype="float32")
        onehot = onehot * ops.expand_dims(ops.cast(labels >= 0, "float32"), -1)
        # Target cosine per row (0 for ignored rows; they are masked out of the loss anyway).
        target = ops.sum(cos * onehot, axis=-1, keepdims=True)
        if self.m1 == 1.0 and self.m2 == 0.0:
            margined = target - self.m3  # derivative 1: both gradient modes coincide
        else:
            theta = ops.arccos(ops.clip(target, -1.0 + _ARCCOS_EPS, 1.0 - _ARCCOS_EPS))
            margined = ops.cos(self.m1 * theta + self.m2) - self.m3
        if self.gradient == "straight_through":
            margined = target + ops.stop_gradient(margined - target)
        logits = cos + onehot * (margined - target)
        return logits * self.scale

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        logits = self.margin_logits(labels, y_pred)
        valid = ops.cast(labels >= 0, "float32")
        per_sample = ops.sparse_categorical_crossentropy(
            ops.maximum(labels, 0), logits, from_logits=True
        )
        per_sample = per_sample * valid
        if self.reduction in ("sum_over_batch_size", "mean"):
            # Keras divides by the batch size; rescale so the result is the mean over valid labels.
            total = ops.cast(ops.shape(labels)[0], "float32")
            per_sample = per_sample * ops.divide_no_nan(total, ops.sum(valid))
        return per_sample

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "scale": self.scale,
                "m1": self.m1,
                "m2": self.m2,
                "m3": self.m3,
                "gradient": self.gradient,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class ArcFaceLoss(CombinedMarginLoss):
    """ArcFace: additive angular margin, target logit ``s * cos(theta + margin)``.

    ``CombinedMarginLoss(scale, 1.0, margin, 0.0)``; the MSConv paper trains with s = 64, m = 0.5.

    Args:
        scale: ``s`` > 0 (default 64).
        margin: the angular margin in radians (default 0.5).
        gradient: ``"straight_through"`` (default, insightface/MSConv reference) or ``"exact"``.
        name, reduction, dtype: as for ``CombinedMarginLoss``.

    Example:

    >>> model.compile(optimizer="sgd", loss=ArcFaceLoss(scale=64, margin=0.5))
    """

    def __init__(
        self,
        scale=64.0,
        margin=0.5,
        gradient="straight_through",
        name="arcface_loss",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        self.margin = _check_number("margin", margin)
        super().__init__(
            scale=scale, m1=1.0, m2=margin, m3=0.0, gradient=gradient, name=name,
            reduction=reduction, dtype=dtype,
        )

    def get_config(self):
        config = super().get_config()
        for key in ("m1", "m2", "m3"):
            config.pop(key)
        config["margin"] = self.margin
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class CosFaceLoss(CombinedMarginLoss):
    """CosFace: additive cosine margin, target logit ``s * (cos(theta) - margin)``.

    ``CombinedMarginLoss(scale, 1.0, 0.0, margin)``; the LGAF paper uses s = 64, m = 0.4. The margin's
    derivative is 1, so the two gradient modes are identical and there is no ``gradient`` argument.

    Args:
        scale: ``s`` > 0 (default 64).
        margin: the cosine margin (default 0.4).
        name, reduction, dtype: as for ``CombinedMarginLoss``.

    Example:

    >>> model.compile(optimizer="sgd", loss=CosFaceLoss(scale=64, margin=0.4))
    """

    def __init__(
        self,
        scale=64.0,
        margin=0.4,
        name="cosface_loss",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        self.margin = _check_number("margin", margin)
        super().__init__(
            scale=scale, m1=1.0, m2=0.0, m3=margin, gradient="exact", name=name,
            reduction=reduction, dtype=dtype,
        )

    def get_config(self):
        config = super().get_config()
        for key in ("m1", "m2", "m3", "gradient"):
            config.pop(key)
        config["margin"] = self.margin
        return config
