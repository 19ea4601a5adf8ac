"""PartialFC: a margin head that trains against a sampled subset of its class centres each step.

With millions of identities the full margin head dominates training: the centre matrix (C x D), its
gradient and its optimizer state are all C x D, and every step computes C logits per sample. PartialFC
(An et al., "Partial FC: Training 10 Million Identities on a Single Machine") keeps the full matrix but,
per step, uses only ``K ~= sample_rate * C`` of its rows: every class that occurs in the batch (the
positives) plus random other classes (the negatives). The margin softmax is computed over those K
classes, and only those K rows (and their momentum) are updated.

Two pieces:

- ``PartialFC``, the layer. It owns the centres ``kernel`` (shape ``(num_classes, embedding_dim)``, one
  row per class, so a step gathers and scatters whole rows) and the head's momentum buffer. Called on
  embeddings it returns the **full** cosine logits ``(batch, num_classes)`` (inference, evaluation,
  ``predict``): the same values as ``MarginHead``. ``sample(labels, step)``, ``cosine(embeddings,
  rows)`` and ``apply_row_update(indices, row_grads, learning_rate)`` are the pieces of a sampled step.
- ``keras_fr.training.PartialFCTrainingModel(backbone, num_classes, sample_rate=0.1, ...)``: a backbone plus
  ``PartialFC`` for ``model.fit``, compiled with a margin loss from ``keras_fr.losses``
  (``ArcFaceLoss``, ``CosFaceLoss``, ``CombinedMarginLoss``); the margin math is that loss's, applied to
  the sampled cosine logits with the labels remapped into the sampled set.

Sampling (``PartialFC.sample``), for integer labels ``y`` (``-1`` = ignored sample) at step ``t``:

1. every class gets a uniform score in [0, 1) from a stateless generator keyed by ``(seed, t)``;
   the classes present in the batch get the score 2, above every other;
2. the ``K`` highest scores are taken and the indices sorted ascending, where
   ``K = min(num_classes, max(base, P))``, ``base = max(1, int(sample_rate * num_classes))`` and ``P``
   the number of distinct labels in the batch: all positives are always kept, the rest of the ``K`` are
   negatives drawn uniformly without replacement. (insightface keeps exactly ``base`` rows and would
   drop positives when ``P > base``; here ``K`` grows instead, so the shape is dynamic in that case.)
3. each label becomes its position in the sorted index list (``-1`` stays ``-1``).

The same ``(seed, t, labels)`` give the same sample on every run and machine; ``t`` is the
optimizer's iteration count, so consecutive steps draw different negatives. With ``sample_rate=1.0``
the sample is ``range(num_classes)`` and labels are unchanged: the step is exactly the full head's.

The update (why the centres are not Keras-trainable): a dense Keras optimizer would apply momentum and
weight decay to *every* row of the C x D matrix each step, also to rows that were not sampled (whose
gradient is zero), and would allocate a C x D slot per optimizer buffer. So the centres and the head's
momentum are non-trainable variables, and ``PartialFCTrainingModel.train_step`` updates them itself:
it gathers the K sampled rows, differentiates the loss with respect to those rows (a dense ``(K, D)``
gradient), and applies SGD with momentum and coupled (PyTorch-style, like ``keras_fr.recipes.SGDWithL2``)
weight decay to those rows only::

    g = grad + weight_decay * w[idx]
    v[idx] = momentum * v[idx] + g
    w[idx] = w[idx] - lr * v[idx]

written back with row scatters (``tf.Variable.scatter_update``), so the other ``C - K`` rows and their
momentum are not read or written: bitwise unchanged. ``lr`` is the compiled optimizer's current
learning rate (schedule included) unless ``learning_rate`` is given. The backbone is updated by the
compiled optimizer as usual. The rule is PyTorch's SGD as insightface trains the head with; its first
PartialFC also carried momentum per sampled row like this, while its later version indexes a full
parameter and leaves the step to the dense optimizer (which moves unsampled rows through momentum and
weight decay, what this layer avoids).

Scope: one replica, TensorFlow backend for training (the tape, the stateless sampler and the row
scatters are TensorFlow); the layer's full-logit ``call`` is ``keras.ops`` and runs everywhere. The
centres sharded over the replicas of a ``tf.distribute.MirroredStrategy`` are
``keras_fr.training.sharded_partial_fc`` (same update rule, ``update_rows``, on each replica's rows).
"""

import math
import numbers

import keras
from keras import ops

from keras_fr.layers.margin import _centre_initializer, _check_num_classes, _embedding_dim


def _check_rate(sample_rate):
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real):
        raise ValueError(f"`sample_rate` must be a number in (0, 1]; got {sample_rate!r}.")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"`sample_rate` must be in (0, 1]; got {sample_rate!r}.")
    return float(sample_rate)


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable (for row scatters)."""
    import tensorflow as tf

    value = variable.value
    if isinstance(value, tf.Variable):
        return value
    return variable._value  # an autocast scope returned a cast tensor; the variable is underneath


def update_rows(kernel, buffer, indices, row_grads, learning_rate, momentum, weight_decay):
    """The row-wise SGD step of the module docstring on ``tf.Variable``s ``kernel`` and ``buffer``
    (``None`` without momentum): only the rows ``indices`` are read and written.

    Shared by ``PartialFC.apply_row_update`` and the sharded head
    (``keras_fr.training.sharded_partial_fc``), which calls it on each replica's own shard.
    """
    import tensorflow as tf

    lr = tf.cast(learning_rate, tf.float32)
    indices = tf.cast(indices, tf.int32)
    rows = tf.gather(kernel, indices)
    grads = tf.cast(row_grads, tf.float32)
    if weight_decay:
        grads = grads + weight_decay * rows
    if buffer is not None:
        velocity = momentum * tf.gather(buffer, indices) + grads
        buffer.scatter_update(tf.IndexedSlices(velocity, indices))
    else:
        velocity = grads
    kernel.scatter_update(tf.IndexedSlices(rows - lr * velocity, indices))


@keras.saving.register_keras_serializable(package="keras_fr")
class PartialFC(keras.layers.Layer):
    """Class centres for margin-softmax training with per-step class sampling (PartialFC).

    Called on embeddings ``(batch, D)`` it returns the full cosine logits ``(batch, num_classes)``,
    exactly like ``MarginHead`` (whose kernel is the transpose of this one's). Training with sampling
    goes through ``PartialFCTrainingModel`` (or the methods ``sample``, ``cosine`` and
    ``apply_row_update``); see the module docstring for the sampling rule and the update rule.

    Args:
        num_classes: positive int, the number of identities C.
        sample_rate: fraction of classes used per training step, in (0, 1]; 1.0 = the full head.
        seed: int, the sampling seed (the sample of step t depends only on seed, t and the labels).
        momentum: the centres' SGD momentum (default 0.9).
        weight_decay: the centres' coupled L2 weight decay (default 5e-4), applied to sampled rows only.
        learning_rate: the centres' learning rate; None (default) = the compiled optimizer's current one.
        kernel_initializer: initializer of the centres; default ``RandomNormal(stddev=0.01)``.
        epsilon: floor of the squared norms before the division (as ``MarginHead``).
        **kwargs: ``keras.layers.Layer`` arguments. The layer always computes in float32.

    Weights (both non-trainable on purpose: updated row-wise by ``apply_row_update``, not by a dense
    Keras optimizer): ``kernel`` ``(num_classes, D)`` and, if ``momentum > 0``, ``momentum_buffer``
    of the same shape.
    """

    def __init__(
        self,
        num_classes,
        sample_rate=1.0,
        seed=0,
        momentum=0.9,
        weight_decay=5e-4,
        learning_rate=None,
        kernel_initializer=None,
        epsilon=1e-12,
        **kwargs,
    ):
        num_classes = _check_num_classes(num_classes)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"`seed` must be an integer; got {seed!r}.")
        for name, value in (("momentum", momentum), ("weight_decay", weight_decay)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0; got {value!r}.")
        if learning_rate is not None and (
            isinstance(learning_rate, bool)
            or not isinstance(learning_rate, numbers.Real)
            or learning_rate < 0
        ):
            raise ValueError(f"`learning_rate` must be None or a number >= 0; got {learning_rate!r}.")
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.sample_rate = _check_rate(sample_rate)
        self.seed = int(seed)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.epsilon = float(epsilon)
        self.kernel_initializer = _centre_initializer(kernel_initializer)

    @property
    def num_sampled(self):
        """``base = max(1, int(sample_rate * num_classes))``: rows per step unless the batch has more
        distinct labels (then all of them); ``num_classes`` at ``sample_rate=1.0``."""
        if self.sample_rate >= 1.0:
            return self.num_classes
        return max(1, min(self.num_classes, int(math.floor(self.sample_rate * self.num_classes))))

    def build(self, input_shape):
        shape = (self.num_classes, _embedding_dim("PartialFC", input_shape))
        self.kernel = self.add_weight(
            name="kernel", shape=shape, initializer=self.kernel_initializer,
            trainable=False, dtype="float32",
        )
        self.momentum_buffer = None
        if self.momentum > 0:
            self.momentum_buffer = self.add_weight(
                name="momentum_buffer", shape=shape, initializer="zeros",
                trainable=False, dtype="float32",
            )

    def _normalize_rows(self, x):
        return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), self.epsilon))

    def cosine(self, embeddings, rows):
        """Cosine logits ``(batch, K)`` between embeddings ``(batch, D)`` and centre rows ``(K, D)``."""
        x = self._normalize_rows(ops.cast(embeddings, "float32"))
        w = self._normalize_rows(ops.cast(rows, "float32"))
        return ops.matmul(x, ops.transpose(w))

    def call(self, inputs):
        return self.cosine(inputs, self.kernel)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def sample(self, labels, step):
        """The sampled class indices of a step and the labels remapped into them.

        Args:
            labels: integer labels ``(batch,)`` or ``(batch, 1)`` in [-1, num_classes); -1 = ignored.
            step: int or scalar integer tensor (the optimizer's iteration count in training).

        Returns:
            ``(indices, local_labels)``: int32 ``(K,)`` sorted ascending, containing every label of the
            batch (K as in the module docstring), and int32 ``(batch,)`` with ``indices[local] == label``
            (``-1`` kept). At ``sample_rate=1.0``: ``range(num_classes)`` and the labels unchanged.
        """
        import tensorflow as tf

        labels = tf.reshape(tf.cast(labels, tf.int32), (-1,))
        if self.sample_rate >= 1.0:
            return tf.range(self.num_classes, dtype=tf.int32), labels
        step = tf.cast(step, tf.int64)
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        scores = tf.random.stateless_uniform((self.num_classes,), seed=seed, dtype=tf.float32)
        valid = labels >= 0
        positives = tf.boolean_mask(labels, valid)
        # Positives outrank every negative (scores < 1); duplicates write the same value.
        scores = tf.tensor_scatter_nd_update(
            scores, tf.expand_dims(positives, -1), tf.fill(tf.shape(positives), 2.0)
        )
        num_positive = tf.size(tf.unique(positives)[0])
        k = tf.minimum(tf.maximum(tf.constant(self.num_sampled, tf.int32), num_positive),
                       self.num_classes)
        indices = tf.sort(tf.math.top_k(scores, k=k, sorted=False).indices)
        local = tf.cast(tf.searchsorted(indices, tf.maximum(labels, 0), side="left"), tf.int32)
        local = tf.where(valid, local, -1)
        return indices, local

    def apply_row_update(self, indices, row_grads, learning_rate=None):
        """SGD with momentum and coupled weight decay on the rows ``indices`` only (module docstring).

        Args:
            indices: distinct int row indices ``(K,)`` (from ``sample``).
            row_grads: the loss gradient with respect to ``kernel[indices]``, ``(K, D)``.
            learning_rate: the step size; default ``self.learning_rate`` (must then be set).

        Rows outside ``indices`` and their momentum are neither read nor written.
        """
        lr = self.learning_rate if learning_rate is None else learning_rate
        if lr is None:
            raise ValueError("PartialFC.apply_row_update needs a learning rate.")
        buffer = None if self.momentum_buffer is None else _tf_variable(self.momentum_buffer)
        update_rows(_tf_variable(self.kernel), buffer, indices, row_grads, lr, self.momentum, self.weight_decay)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "sample_rate": self.sample_rate,
                "seed": self.seed,
                "momentum": self.momentum,
                "weight_decay": self.weight_decay,
                "learning_rate": self.learning_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "epsilon": self.epsilon,
            }
        )
        return config
