"""MSConvResNet26/50/101: the MSConv paper's ResNet-style face recognition networks (``MSNet``).

One builder, ``MSConvResNet``, builds the reference network (docs/reference.md section 1) from its block
counts; the public functions only choose them. Every layer that owns weights is named by its PyTorch
module path with "." replaced by "_" (``stage_2.0.conv2_msconv`` -> ``stage_2_0_conv2_msconv``), so a
reference checkpoint converts mechanically. Strided layers use explicit symmetric padding and
``"valid"`` (PyTorch padding), and the stem's max pool pads with -inf.
"""

import keras

from keras_fr.applications import common
from keras_fr.applications import registry
from keras_fr.applications import specs
from keras_fr.applications.common import preprocess_input  # noqa: F401  (re-exported)
from keras_fr.layers.activations import PReLU
from keras_fr.layers.convolution import Conv2D
from keras_fr.layers.msconv import (
    BN_EPSILON,
    BN_MOMENTUM,
    PRELU_INIT,
    MSConv,
    PaddedMaxPooling2D,
    check_grouped_conv,
)
from keras_fr.layers.normalization import BatchNormalization

__all__ = ["MSConvResNet", "MSConvResNet26", "MSConvResNet50", "MSConvResNet101", "preprocess_input"]

#: (in, mid, out) channels and the first block's stride, per stage (stage_1 .. stage_4).
STAGES = ((64, 128, 256, 1), (256, 256, 512, 2), (512, 512, 1024, 2), (1024, 1024, 2048, 2))
DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
#: The PyTorch module path of every top-level layer that owns weights, ``{}``
#: standing for an index; the Keras layer name is the path with "." -> "_".
#: keras_fr.conversion.mapping derives each weight's PyTorch key from these paths (both
#: directions) and refuses a layer name that starts like one of them but matches none: a new
#: module is declared here.
TORCH_MODULES = (
    "basic_conv.{}",
    "stage_{}.{}.conv1.{}",
    "stage_{}.{}.conv2_msconv",
    "stage_{}.{}.conv3.{}",
    "stage_{}.{}.shortcut.{}",
    "stage_{}.{}.prelu",
    "classifier",
)
REFERENCE = (
    "MSConv: Multiplicative and Subtractive Convolution for Face Recognition (Zhou et al.); the "
    "authors' PyTorch `MSNet`."
)


def _prelu(name):
    """PyTorch ``PReLU()``: a single slope shared by every position and channel."""
    return PReLU(
        alpha_initializer=keras.initializers.Constant(PRELU_INIT), shared_axes=[1, 2, 3], name=name
    )


def _bn(name):
    return BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _conv1x1(filters, name, strides=1):
    # keras_fr's Conv2D: Keras' layer, trained as a matrix product in bfloat16 on TensorFlow.
    return Conv2D(filters, 1, strides=strides, use_bias=False, name=name)


def _ms_unit(x, in_channels, mid_channels, out_channels, strides, prefix, grouped_conv):
    """``MSUnit``: 1x1 reduce -> MSConv -> 1x1 expand, plus the (projected) shortcut, then PReLU."""
    y = _conv1x1(mid_channels, f"{prefix}_conv1_0")(x)
    y = _bn(f"{prefix}_conv1_1")(y)
    y = _prelu(f"{prefix}_conv1_2")(y)
    y = MSConv(strides=strides, grouped_conv=grouped_conv, name=f"{prefix}_conv2_msconv")(y)
    y = _conv1x1(out_channels, f"{prefix}_conv3_0")(y)
    y = _bn(f"{prefix}_conv3_1")(y)
    if in_channels == out_channels:
        shortcut = x
    else:
        # A 1x1 kernel with no padding: "valid" at stride 2 keeps rows 0, 2, 4... as PyTorch does.
        shortcut = _conv1x1(out_channels, f"{prefix}_shortcut_0", strides=strides)(x)
        shortcut = _bn(f"{prefix}_shortcut_1")(shortcut)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return _prelu(f"{prefix}_prelu")(y)


def MSConvResNet(depths, model_name="msconv_resnet", *, include_top=True, weights=None, input_tensor=None,
                 input_shape=None, pooling=None, embedding_size=512, name=None, grouped_conv="auto"):
    """Build an MSConv ResNet from its blocks per stage (the shared builder of this family).

    Args:
        depths: four block counts, e.g. ``(3, 4, 6, 3)``.
        model_name: the registry name used to resolve weight tags and as the default model name.
        Others: as for ``MSConvResNet50`` (see its docstring).

    Returns:
        A `keras.Model`.

    Example:
        >>> MSConvResNet((1, 1, 1, 1), include_top=False, pooling="avg").output_shape
        (None, 2048)
    """
    common.check_builder_args(include_top, weights, pooling, embedding_size)
    common.check_blocks(depths, "depths")
    check_grouped_conv(grouped_conv)
    img_input, model_inputs = common.obtain_input(input_tensor, input_shape)

    # Stem (`basic_conv`): 7x7/2 conv with PyTorch's symmetric padding 3, BN, PReLU; 3x3/2 max pool.
    x = keras.layers.ZeroPadding2D(3, name="basic_conv_pad")(img_input)
    x = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, name="basic_conv_0")(x)
    x = _bn("basic_conv_1")(x)
    x = _prelu("basic_conv_2")(x)
    x = PaddedMaxPooling2D(3, strides=2, padding=1, name="maxpool")(x)

    for stage, ((c_in, c_mid, c_out, stride), blocks) in enumerate(zip(STAGES, depths), start=1):
        for block in range(blocks):
            x = _ms_unit(
                x,
                c_in if block == 0 else c_out,
                c_mid,
                c_out,
                stride if block == 0 else 1,
                f"stage_{stage}_{block}",
                grouped_conv,
            )

    def head(x):
        # Computed in float32 even under a mixed precision policy. The reference's dropout is
        # defined but not applied in forward: none here.
        x = common.global_pooling(x, "avg")
        return keras.layers.Dense(embedding_size, name="classifier", dtype="float32")(x)

    return common.finish_model(
        model_inputs, x, head=head if include_top else None, pooling=pooling, name=name,
        model_name=model_name, weights=weights,
        full_model=lambda: MSConvResNet(depths, model_name, embedding_size=embedding_size, grouped_conv=grouped_conv),
    )


def MSConvResNet26(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                   embedding_size=512, name=None, grouped_conv="auto"):
    return MSConvResNet(DEPTHS[26], "msconv_resnet26", **locals())


def MSConvResNet50(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                   embedding_size=512, name=None, grouped_conv="auto"):
    return MSConvResNet(DEPTHS[50], "msconv_resnet50", **locals())


def MSConvResNet101(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                    embedding_size=512, name=None, grouped_conv="auto"):
    return MSConvResNet(DEPTHS[101], "msconv_resnet101", **locals())


_INPUT_SHAPE_NOTE = (
    "        Any height and width >= 32 is accepted (the head pools globally); 112x112 gives a\n"
    "        (4, 4, 2048) feature map with `include_top=False`."
)
_EXTRA_ARGS = """    grouped_conv: keyword only. How the MSConv layers compute their grouped 3x3 convolutions:
        `"auto"` (default: `"split"` on the TensorFlow backend without a GPU, else `"native"`),
        `"native"` (`Conv2D(groups=32)`) or `"split"` (32 ordinary convolutions on channel slices).
        Same weights and outputs. On TensorFlow CPU `"split"` trains about 25x faster, infers about
        1.7x faster with XLA at batch 32 (about the same without XLA) and about 1.3x slower at
        batch 1 (`benchmarks/grouped_conv.py`);
        it also suits runtimes without grouped convolution (see `keras_fr.layers.msconv.clone_with_grouped_conv`).
"""
_RAISES_AND_EXAMPLE = """
Raises:
    ValueError: for an input shape or tensor that is not (N, H, W, 3) with H, W >= 32, an unknown
        `pooling` or one given with `include_top=True`, `embedding_size < 1`, an unknown `grouped_conv`, or `weights` that is neither
        None, a known preset tag nor an existing .weights.h5 / .keras file.

Example:

>>> model = MSConvResNet{depth}()
>>> x = preprocess_input(images)  # (N, 112, 112, 3) RGB in [0, 255]
>>> embeddings = model.predict(x)  # (N, 512)
"""

for _depth, _fn in ((26, MSConvResNet26), (50, MSConvResNet50), (101, MSConvResNet101)):
    _fn.__doc__ = common.BASE_DOCSTRING.format(
        name=f"MSConvResNet{_depth}",
        reference=REFERENCE,
        input_shape_note=_INPUT_SHAPE_NOTE,
        extra_args=_EXTRA_ARGS,
    ) + _RAISES_AND_EXAMPLE.format(depth=_depth)


def _is_msconv_checkpoint(state_dict):
    return "basic_conv.0.weight" in state_dict and any(
        k.startswith("stage_1.0.conv2_msconv.") for k in state_dict)


registry.register_family(registry.Family(
    name="msconv_resnet",
    display="MSConv",
    module=__name__,
    builder="MSConvResNet",
    torch_modules=TORCH_MODULES,
    checkpoint=registry.CheckpointLayout(
        recognize=_is_msconv_checkpoint,
        block_key=r"^stage_{stage}\.(\d+)\.",
        embedding_key="classifier.weight",
        head_modules=("classifier",),
        description="an MSConv network (MSNet: basic_conv.*, stage_1..4.*)",
    ),
    reference="keras_fr.torch_reference.msconv_torch:MSNet",
    reference_options=("embedding_size",),
))
# depth: (blocks, parameters as PyTorch counts them, (arrays, values) of the default .weights.h5).
registry.register_depths("msconv_resnet", "MSConvResNet", {
    26: (DEPTHS[26], 18554881, (412, 18624769)),
    50: (DEPTHS[50], 31555201, (796, 31685057)),
    101: (DEPTHS[101], 57320265, (1612, 57590473)),
}, specs.ARCFACE_112)
