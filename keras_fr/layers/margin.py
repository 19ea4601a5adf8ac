"""The classification head of margin-based softmax training (ArcFace, CosFace, CombinedMargin).

``MarginHead`` turns embeddings into cosine logits: the L2-normalized embedding times the L2-normalized
class centers. The margin itself is applied by the loss (``keras_fr.losses``), which needs the labels.
"""

import numbers

import keras
from keras import ops


def _check_num_classes(num_classes):
    """``num_classes`` of a class-centre head (``MarginHead``, ``PartialFC``) as an int.

    Raises:
        ValueError: if it is not a positive integer.
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise ValueError(f"`num_classes` must be a positive integer; got {num_classes!r}.")
    return int(num_classes)


def _centre_initializer(kernel_initializer):
    """The Keras initializer of the class centres; None gives N(0, 0.01), as insightface's."""
    if kernel_initializer is None:
        kernel_initializer = keras.initializers.RandomNormal(mean=0.0, stddev=0.01)
    return keras.initializers.get(kernel_initializer)


def _embedding_dim(owner, input_shape):
    """The embedding width D of a head's ``(batch, D)`` input shape.

    Raises:
        ValueError: for another rank or an unknown D (the message names ``owner``).
    """
    if len(input_shape) != 2 or input_shape[-1] is None:
        raise ValueError(
            f"{owner} expects embeddings of shape (batch, embedding_dim) with a known "
            f"embedding_dim; got input shape {tuple(input_shape)}."
        )
    return int(input_shape[-1])


@keras.saving.register_keras_serializable(package="keras_fr")
class MarginHead(keras.layers.Layer):
    """Cosine logits between L2-normalized embeddings and L2-normalized class centers.

    ``logits[i, j] = <x_i / |x_i|, w_j / |w_j|>`` in [-1, 1], the input of ``keras_fr.losses.ArcFaceLoss``,
    ``CosFaceLoss`` and ``CombinedMarginLoss`` (which apply the margin to the target class and scale by
    ``s``). The class centers are one weight ``kernel`` of shape ``(embedding_dim, num_classes)``,
    initialized from N(0, 0.01) like insightface's ``PartialFC``.

    The layer always computes in float32, also under a mixed-precision policy (its dtype policy is
    ``"float32"`` and the input is cast): normalizing and the angular margin are not accurate enough in
    float16/bfloat16, and insightface keeps this head in float32 for the same reason.

    Args:
        num_classes: positive int, the number of identities.
        kernel_initializer: initializer of the class centers; default ``RandomNormal(stddev=0.01)``.
        epsilon: floor of the squared norms before the division (default 1e-12), so an all-zero
            embedding gives zero logits instead of NaN.
        **kwargs: other ``keras.layers.Layer`` arguments (``name``...). A ``dtype`` other than float32
            is overridden to float32.

    Input shape: ``(batch, embedding_dim)``. Output shape: ``(batch, num_classes)``, float32.

    Raises:
        ValueError: if ``num_classes`` is not a positive int or the input is not of rank 2.

    Example:

    >>> head = MarginHead(10)
    >>> logits = head(np.random.rand(4, 512).astype("float32"))
    >>> tuple(logits.shape)
    (4, 10)
    """

    def __init__(self, num_classes, kernel_initializer=None, epsilon=1e-12, **kwargs):
        num_classes = _check_num_classes(num_classes)
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.epsilon = float(epsilon)
        self.kernel_initializer = _centre_initializer(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(_embedding_dim("MarginHead", input_shape), self.num_classes),
            initializer=self.kernel_initializer,
            trainable=True,
            dtype="float32",
        )

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        w = ops.cast(self.kernel, "float32")
        x = x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), self.epsilon))
        w = w * ops.rsqrt(ops.maximum(ops.sum(ops.square(w), axis=0, keepdims=True), self.epsilon))
        return ops.matmul(x, w)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "epsilon": self.epsilon,
            }
        )
        return config
