"""Batch normalization whose training step is one fused kernel on TensorFlow.

Every network of the zoo builds its BatchNorms from :class:`BatchNormalization` below: Keras' layer
with the same arguments, weights and configuration, which trains faster on TensorFlow.
"""

import keras
import numpy as np

#: Input dtypes the fused kernel takes (bfloat16 and float16 are accumulated in float32 by it).
_FUSED_DTYPES = ("float32", "bfloat16", "float16")


@keras.saving.register_keras_serializable(package="keras_fr")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' ``BatchNormalization`` with its training step fused on TensorFlow.

    In training, Keras computes the batch moments and the normalization as separate operations (each
    a pass over the activations; under ``mixed_bfloat16`` also a cast to float32 and back), and
    automatic differentiation adds as many again to the backward pass. On the TensorFlow backend this
    layer runs that step as TensorFlow's fused batch-norm kernel (``FusedBatchNormV3`` forward, its
    gradient kernel backward; oneDNN's where TensorFlow uses oneDNN). With nothing else changed, a
    ``model.fit`` step at batch 32 under ``mixed_bfloat16`` went from 5.76 to 9.69 images/s for
    IResNet100 and from 8.68 to 10.39 for MSConvResNet50 on a 2-core AMX Xeon
    (``benchmarks/training.py --batchnorm keras`` against the default; docs/benchmarks.md, "The
    training step: fused batch norm, wider packs").

    It is the same layer as Keras' otherwise:

    - normalized with the batch mean and the population variance (ddof 0); the moving statistics
      are updated as ``moving = momentum * moving + (1 - momentum) * batch`` from the population
      variance (the kernel reports the Bessel-corrected one, converted back here);
    - bfloat16 / float16 inputs are normalized in float32 (the kernel accumulates in float32) and the
      output has the layer's compute dtype;
    - inference (``training`` false, or a layer with ``trainable = False``, which keeps its
      statistics) runs Keras' own code, so exported files and converted checkpoints see exactly
      Keras' graph; so do other backends, masks, ``renorm``, ``synchronized=True`` (global statistics
      under a distribution strategy), float64 and inputs that are not 2-D ``(N, C)`` or 4-D
      channels-last ``(N, H, W, C)``.

    Same arguments as ``keras.layers.BatchNormalization``. Set the class attribute ``fused_training``
    to False to run Keras' own training code instead (``benchmarks/training.py --batchnorm keras``).

    Example:

    >>> bn = BatchNormalization(epsilon=1e-5, momentum=0.9)
    >>> bn(keras.ops.ones((2, 7, 7, 8)), training=True).shape
    (2, 7, 7, 8)
    """

    #: Run the training step as the fused kernel where it applies (False: always Keras' code).
    fused_training = True

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and self._fusable(inputs, mask):
            return self._fused_training_call(inputs)
        return super().call(inputs, training=training, mask=mask)

    def _fusable(self, inputs, mask):
        if not self.fused_training or keras.backend.backend() != "tensorflow" or mask is not None:
            return False
        if self.renorm or self.synchronized:
            return False
        rank = len(inputs.shape)
        if rank not in (2, 4) or self.axis not in (-1, rank - 1) or inputs.shape[-1] is None:
            return False
        return keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES

    def _fused_training_call(self, inputs):
        import tensorflow as tf  # the TensorFlow backend is active, so TensorFlow is imported already

        channels = inputs.shape[-1]
        x = tf.reshape(inputs, (-1, 1, 1, channels)) if len(inputs.shape) == 2 else inputs
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,), "float32")
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,), "float32")
        empty = tf.zeros((0,), "float32")
        y, mean, corrected_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
        )
        # The kernel multiplies the population variance by n / (n - 1) (by 1 when n == 1).
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), "float32")
        variance = corrected_variance * (tf.maximum(count - 1.0, 1.0) / count)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        if len(inputs.shape) == 2:
            y = tf.reshape(y, tf.shape(inputs))
        return tf.cast(y, self.compute_dtype)


def fold_batch_norm(kernel, bias, norm, depthwise=False):
    """``(kernel, bias)`` of a layer followed by the batch normalization ``norm``, with ``norm``'s
    inference folded in, computed in float64 (NumPy arrays).

    In inference ``norm`` is ``(y - mean) * s + beta`` per channel with ``s = gamma / sqrt(variance +
    epsilon)``: the kernel's output channels (the last axis; a depthwise kernel's last two) are
    multiplied by ``s`` and the bias becomes ``(bias - mean) * s + beta``. A grouped convolution's
    kernel ``(kh, kw, C_in / groups, C_out)`` folds the same way. ``bias`` may be None (no bias).
    """
    kernel = np.asarray(kernel, np.float64)
    channels = kernel.shape[-2] * kernel.shape[-1] if depthwise else kernel.shape[-1]
    bias = np.zeros(channels) if bias is None else np.asarray(bias, np.float64)
    mean = np.asarray(norm.moving_mean, np.float64)
    variance = np.asarray(norm.moving_variance, np.float64)
    gamma = np.asarray(norm.gamma, np.float64) if norm.scale else np.ones(channels)
    beta = np.asarray(norm.beta, np.float64) if norm.center else np.zeros(channels)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    folded = kernel * (scale.reshape(kernel.shape[-2:]) if depthwise else scale)
    return folded, (bias - mean) * scale + beta


@keras.saving.register_keras_serializable(package="keras_fr")
class ChannelBias(keras.layers.Layer):
    """Adds one learned value per channel (the last axis): what a batch normalization becomes in an
    inference copy once its scale has moved into the convolution before it, inside layers whose
    convolutions have no bias of their own (:meth:`keras_fr.layers.MSConv.inference_variant`).

    Called like a batch normalization (``training`` is accepted and ignored).
    """

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, inputs, training=None):
        return inputs + keras.ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
