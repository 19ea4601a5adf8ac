"""Keras' ``Conv2D`` whose 1x1 convolutions train as matrix products in bfloat16 on TensorFlow.

The MSConv networks build every 1x1 convolution from :class:`Conv2D` below (each unit's reduce,
expand and shortcut layers; MSConv's ``fc``, ``fcs_0``, ``fcs_1`` and ``fc_d``). The IResNets and LGAF's
heads keep Keras' ``Conv2D``: the matrix product was measured on MSConvResNet50 only.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_fr")
class Conv2D(keras.layers.Conv2D):
    """Keras' ``Conv2D``; a 1x1 convolution's training step in bfloat16 is a matrix product on TensorFlow.

    A 1x1 convolution is a matrix product over the channels: ``(N*H'*W', C_in) @ (C_in, C_out)``
    after keeping every ``strides``-th row and column (a 1x1 kernel never pads, under ``"same"`` or
    ``"valid"``). Called with ``training=True`` on TensorFlow with bfloat16 inputs (the
    ``mixed_bfloat16`` policy), this layer computes it that way: TensorFlow's matrix-product kernel
    and its gradients (oneDNN's, on AMX where the CPU has it) ran MSConvResNet50's 1x1 layers at batch
    32, forward and backward, 1.7x faster than its bfloat16 convolution kernels on a 2-core AMX Xeon
    (``benchmarks/pointwise_conv.py``), and the ``model.fit`` step about 1.15x; in float32 the layers
    gained 1.07-1.09x with one strided shape at 0.65x, so float32 keeps the convolution
    (docs/benchmarks.md, "The training step: 1x1 convolutions as matrix products").

    The sums are the convolution's; only their rounding to bfloat16 may differ. Everything else is
    Keras' ``Conv2D``: inference (``training`` false), other dtypes, other backends, kernels larger
    than 1x1, grouped or dilated convolutions and ``channels_first`` run Keras' code, so exported files,
    converted checkpoints and inference copies see Keras' graph.

    Same arguments, weights and configuration as ``keras.layers.Conv2D``. Set the class attribute
    ``matmul_training`` to False to train with Keras' convolution instead
    (``benchmarks/training.py --pointwise conv``).

    Example:

    >>> layer = Conv2D(8, 1, strides=2)
    >>> layer(keras.ops.ones((2, 7, 7, 4)), training=True).shape
    (2, 4, 4, 8)
    """

    #: Train a 1x1 convolution as a matrix product on TensorFlow (False: Keras' convolution).
    matmul_training = True
    #: The compute dtypes it applies to (float32 gains nothing: ``benchmarks/pointwise_conv.py``).
    matmul_training_dtypes = ("bfloat16",)

    def call(self, inputs, training=None):
        if training and self._trains_as_matmul(inputs):
            return self._matmul_call(inputs)
        return super().call(inputs)

    def _trains_as_matmul(self, inputs):
        return (
            self.matmul_training
            and keras.backend.backend() == "tensorflow"
            and tuple(self.kernel_size) == (1, 1)
            and self.groups == 1
            and tuple(self.dilation_rate) == (1, 1)
            and self.data_format == "channels_last"
            and keras.backend.standardize_dtype(inputs.dtype) in self.matmul_training_dtypes
        )

    def _matmul_call(self, inputs):
        import tensorflow as tf  # the TensorFlow backend is active, so TensorFlow is imported already

        rows, cols = self.strides
        x = inputs if (rows, cols) == (1, 1) else inputs[:, ::rows, ::cols, :]
        channels = x.shape[-1]
        kernel = ops.cast(self.kernel, x.dtype)
        outputs = tf.matmul(tf.reshape(x, [-1, channels]), tf.reshape(kernel, [channels, self.filters]))
        dynamic = tf.shape(x)
        outputs = tf.reshape(outputs, [x.shape[i] if x.shape[i] is not None else dynamic[i] for i in range(3)]
                             + [self.filters])
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, ops.cast(self.bias, outputs.dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
