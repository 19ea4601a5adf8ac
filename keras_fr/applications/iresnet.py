"""IResNet (insightface ``arcface_torch`` ``iresnet``): the ArcFace backbones, weight for weight.

The network (docs/reference.md section 2):

- stem: ``conv1`` 3x3 stride 1 (3 -> 64, no bias) -> ``bn1`` -> ``prelu`` (one slope per channel);
- ``layer1`` .. ``layer4``: stacks of ``IBasicBlock`` with 64, 128, 256, 512 planes. The first block of
  every stack has stride 2 and a ``downsample`` shortcut (1x1 conv stride 2 + BN), so a 112x112 face
  becomes a 7x7x512 map;
- ``IBasicBlock``: ``bn1`` -> ``conv1`` 3x3 s1 -> ``bn2`` -> ``prelu`` (per channel) -> ``conv2`` 3x3
  with the block's stride -> ``bn3``, plus the identity (or ``downsample``); no activation after the sum;
- head: ``bn2`` on the 7x7x512 map -> dropout -> flatten -> ``fc`` (512*7*7 -> embedding) ->
  ``features`` (BatchNorm1d whose scale is frozen at 1).

Layer names follow the project's naming rule (keras_fr/conversion/mapping.py): the Keras name of every layer that owns
weights is the PyTorch module path with "." replaced by "_" (``layer2_0_downsample_1``), so checkpoints
map mechanically. Convolutions use explicit symmetric zero padding and ``padding="valid"``, which is
exactly PyTorch's ``padding=1`` for every stride (Keras' ``"same"`` pads asymmetrically at stride 2).

The backbone and the embedding head are exposed as :func:`iresnet_backbone` and
:func:`iresnet_embedding_head`, which ``lgaf_resnet`` reuses for its backbone and global branch.
"""

import keras
from keras import layers

from keras_fr.applications import common
from keras_fr.applications import registry
from keras_fr.applications import specs
from keras_fr.layers.activations import PReLU
from keras_fr.layers.normalization import BatchNormalization

#: IBasicBlock counts per stage for each depth (insightface ``iresnet18`` .. ``iresnet200``).
IRESNET_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
#: Output channels ("planes") of ``layer1`` .. ``layer4``.
STAGE_PLANES = (64, 128, 256, 512)
#: PyTorch BatchNorm defaults: eps 1e-5, momentum 0.1 (= Keras momentum 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
#: Spatial size the head's flatten expects: 112 / 16 = 7.
TOP_INPUT_SIZE = 112
FEATURE_MAP_SIZE = 7


@keras.saving.register_keras_serializable(package="keras_fr")
class FrozenScaleBatchNormalization(BatchNormalization):
    """Batch normalization whose scale (``gamma``) exists but is frozen at 1.

    insightface's embedding BN (``features``) has a weight tensor that is set to 1 and excluded
    from training (``requires_grad = False``), while its bias is trained. This layer reproduces that:
    ``gamma`` is created (initialized to ones) so that weight counts and checkpoint layouts match
    PyTorch, and it is marked non-trainable so the optimizer never changes it. Loading a checkpoint
    whose scale is not 1 still works: the value is used as stored.

    Args:
        **kwargs: as for `keras.layers.BatchNormalization`, except `scale` (always `True`) and
            `gamma_initializer` (always ones).

    Example:

    >>> bn = FrozenScaleBatchNormalization(epsilon=1e-5, name="features")
    >>> bn.build((None, 512))
    >>> [w.name for w in bn.trainable_weights]
    ['beta']
    """

    def __init__(self, **kwargs):
        kwargs.pop("scale", None)
        kwargs.pop("gamma_initializer", None)
        super().__init__(scale=True, gamma_initializer="ones", **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        # The variable stays (PyTorch counts it as a parameter); only training is switched off.
        self.gamma.trainable = False


#: The PyTorch module path of every top-level layer that owns weights (backbone and embedding head), ``{}``
#: standing for an index; the Keras layer name is the path with "." -> "_".
#: keras_fr.conversion.mapping derives each weight's PyTorch key from these paths (both
#: directions) and refuses a layer name that starts like one of them but matches none: a new
#: module is declared here.
TORCH_MODULES = (
    "conv1",
    "bn1",
    "prelu",
    "layer{}.{}.bn1",
    "layer{}.{}.conv1",
    "layer{}.{}.bn2",
    "layer{}.{}.prelu",
    "layer{}.{}.conv2",
    "layer{}.{}.bn3",
    "layer{}.{}.downsample.{}",
    "bn2",
    "fc",
    "features",
)


def _batch_norm(x, name, dtype=None):
    return BatchNormalization(
        axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name, dtype=dtype
    )(x)


def _prelu(x, name):
    # PReLU(C) in PyTorch: one slope per channel, initial value 0.25. keras_fr's PReLU: Keras'
    # inference, a one-mask training step.
    return PReLU(
        alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name
    )(x)


def _conv3x3(x, filters, strides, name):
    # PyTorch: Conv2d(k=3, stride, padding=1, bias=False). Explicit symmetric padding + "valid".
    x = layers.ZeroPadding2D(padding=1, name=f"{name}_pad")(x)
    return layers.Conv2D(
        filters, 3, strides=strides, padding="valid", use_bias=False, name=name
    )(x)


def ibasic_block(x, planes, strides, downsample, name):
    """One insightface ``IBasicBlock`` on a channels-last tensor.

    Args:
        x: input tensor (N, H, W, C_in).
        planes: output channels.
        strides: stride of the second 3x3 convolution (1 or 2).
        downsample: whether the shortcut is a 1x1 conv (stride `strides`) + BN instead of the
            identity.
        name: the block's PyTorch path with "." -> "_", e.g. ``"layer1_0"``.

    Returns:
        The block's output tensor (N, H / strides, W / strides, planes).
    """
    if downsample:
        shortcut = layers.Conv2D(
            planes, 1, strides=strides, padding="valid", use_bias=False,
            name=f"{name}_downsample_0",
        )(x)
        shortcut = _batch_norm(shortcut, f"{name}_downsample_1")
    else:
        shortcut = x
    out = _batch_norm(x, f"{name}_bn1")
    out = _conv3x3(out, planes, 1, f"{name}_conv1")
    out = _batch_norm(out, f"{name}_bn2")
    out = _prelu(out, f"{name}_prelu")
    out = _conv3x3(out, planes, strides, f"{name}_conv2")
    out = _batch_norm(out, f"{name}_bn3")
    return layers.Add(name=f"{name}_add")([out, shortcut])


def iresnet_backbone(x, blocks):
    """The IResNet body up to and including ``bn2``: C(x) in the LGAF paper.

    Args:
        x: image tensor (N, H, W, 3), RGB in [-1, 1].
        blocks: four block counts, e.g. ``IRESNET_BLOCKS[100]``.

    Returns:
        The feature map after ``bn2``: (N, H / 16, W / 16, 512), i.e. 7x7x512 for 112x112 input.

    Example:

    >>> inputs = keras.Input((112, 112, 3))
    >>> iresnet_backbone(inputs, IRESNET_BLOCKS[18]).shape
    (None, 7, 7, 512)
    """
    if len(blocks) != len(STAGE_PLANES):
        raise ValueError(f"`blocks` must have 4 entries (one per stage); got {blocks!r}.")
    x = _conv3x3(x, STAGE_PLANES[0], 1, "conv1")
    x = _batch_norm(x, "bn1")
    x = _prelu(x, "prelu")
    for stage, (planes, count) in enumerate(zip(STAGE_PLANES, blocks), start=1):
        for index in range(count):
            first = index == 0
            # insightface: every stage's first block has stride 2, so its shortcut is always a
            # downsample (1x1 conv stride 2 + BN), even in layer1 where the width stays 64.
            x = ibasic_block(
                x,
                planes,
                strides=2 if first else 1,
                downsample=first,
                name=f"layer{stage}_{index}",
            )
    return _batch_norm(x, "bn2")


def iresnet_embedding_head(x, embedding_size=512, dropout=0.0):
    """The ArcFace embedding head on C(x): dropout -> flatten -> ``fc`` -> ``features``.

    ``fc`` and ``features`` run in float32 whatever the dtype policy (as insightface runs its
    ``fc`` in float32 under fp16), so the embedding is float32 under mixed precision.

    Args:
        x: the ``bn2`` feature map (N, 7, 7, 512).
        embedding_size: output dimension.
        dropout: dropout rate before ``fc`` (insightface applies it after flattening; the two
            orders are identical for element-wise dropout).

    Returns:
        The embedding (N, embedding_size), float32.
    """
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(embedding_size, use_bias=True, name="fc", dtype="float32")(x)
    return FrozenScaleBatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="features", dtype="float32"
    )(x)


def check_dropout(dropout):
    """Validate a `dropout` rate.

    Args:
        dropout: The value to check; must be an int or float (not a `bool`)
            in `[0, 1)`.

    Raises:
        ValueError: If `dropout` is not a number in `[0, 1)`.
    """
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be a number in [0, 1); got {dropout!r}.")


def IResNet(blocks, model_name="iresnet", *, include_top=True, weights=None, input_tensor=None,
            input_shape=None, pooling=None, embedding_size=512, name=None, dropout=0.0):
    """Builds an IResNet of any depth; the public variants only choose ``blocks``.

    Args:
        blocks: four IBasicBlock counts, e.g. ``(3, 4, 14, 3)`` for IResNet-50.
        model_name: registry name used to resolve preset weight tags (``"iresnet50"``).
        include_top, weights, input_tensor, input_shape, pooling, embedding_size, name, dropout:
            as for `IResNet50`.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: on an invalid argument (see `IResNet50`).

    Example:
        >>> model = IResNet((1, 1, 1, 1), include_top=False, pooling="avg", input_shape=(32, 32, 3))
        >>> model.output_shape
        (None, 512)
    """
    common.check_builder_args(include_top, weights, pooling, embedding_size)
    check_dropout(dropout)
    common.check_blocks(blocks)
    img_input, model_inputs = common.obtain_input(
        input_tensor, input_shape, fixed_size=TOP_INPUT_SIZE if include_top else None
    )
    return common.finish_model(
        model_inputs, iresnet_backbone(img_input, blocks), pooling=pooling, name=name,
        head=(lambda x: iresnet_embedding_head(x, embedding_size, dropout)) if include_top else None,
        model_name=model_name, weights=weights,
        full_model=lambda: IResNet(blocks, model_name, embedding_size=embedding_size, dropout=dropout),
    )


def IResNet18(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
              embedding_size=512, name=None, dropout=0.0):
    return IResNet(IRESNET_BLOCKS[18], "iresnet18", **locals())


def IResNet34(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
              embedding_size=512, name=None, dropout=0.0):
    return IResNet(IRESNET_BLOCKS[34], "iresnet34", **locals())


def IResNet50(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
              embedding_size=512, name=None, dropout=0.0):
    return IResNet(IRESNET_BLOCKS[50], "iresnet50", **locals())


def IResNet100(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
               embedding_size=512, name=None, dropout=0.0):
    return IResNet(IRESNET_BLOCKS[100], "iresnet100", **locals())


def IResNet200(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
               embedding_size=512, name=None, dropout=0.0):
    return IResNet(IRESNET_BLOCKS[200], "iresnet200", **locals())


_INPUT_SHAPE_NOTE = (
    "        With `include_top=True` it must be 112x112 (the head flattens the 7x7x512\n"
    "        map); with `include_top=False` any size of at least 32x32 works."
)
_EXTRA_ARGS = (
    "    dropout: dropout rate before the embedding `fc` layer (default 0.0, as in\n"
    "        insightface's released models).\n"
)
_RAISES_AND_EXAMPLE = """
Raises:
    ValueError: an input other than 112x112x3 with `include_top=True`, an input
        smaller than 32x32, `pooling` not in (None, 'avg', 'max') or given with
        `include_top=True`, a non-positive `embedding_size`, `dropout` outside [0, 1),
        or a missing weights file.

Example:

>>> model = keras_fr.applications.IResNet{depth}()
>>> model.output_shape
(None, 512)
"""

for _depth, _fn in ((18, IResNet18), (34, IResNet34), (50, IResNet50), (100, IResNet100), (200, IResNet200)):
    _fn.__doc__ = common.BASE_DOCSTRING.format(
        name=f"IResNet{_depth}",
        reference=(
            "Deng et al., ArcFace: Additive Angular Margin Loss for Deep Face Recognition "
            "(CVPR 2019); architecture exact to insightface `arcface_torch` `iresnet"
            f"{_depth}` (stages {IRESNET_BLOCKS[_depth]})."
        ),
        input_shape_note=_INPUT_SHAPE_NOTE,
        extra_args=_EXTRA_ARGS,
    ) + _RAISES_AND_EXAMPLE.format(depth=_depth)


def is_iresnet_checkpoint(state_dict):
    """Whether a PyTorch state dict has insightface's IResNet stem and stages (LGAF's too)."""
    conv1 = state_dict.get("conv1.weight")
    return conv1 is not None and tuple(conv1.shape) == (64, 3, 3, 3) and "layer1.0.bn1.weight" in state_dict


registry.register_family(registry.Family(
    name="iresnet",
    display="IResNet (ArcFace)",
    module=__name__,
    builder="IResNet",
    torch_modules=TORCH_MODULES,
    flatten_inputs={"fc": "bn2.weight"},
    checkpoint=registry.CheckpointLayout(
        recognize=is_iresnet_checkpoint,
        block_key=r"^layer{stage}\.(\d+)\.",
        embedding_key="fc.weight",
        head_modules=("fc", "features"),
        description="an IResNet (conv1, layer1..4, bn2, fc, features)",
    ),
    reference="keras_fr.torch_reference.iresnet_torch:IResNet",
    reference_options=("embedding_size", "dropout"),
))
# depth: (blocks, parameters as PyTorch counts them, (arrays, values) of the default .weights.h5).
registry.register_depths("iresnet", "IResNet", {
    18: (IRESNET_BLOCKS[18], 24025600, (156, 24040320)),
    34: (IRESNET_BLOCKS[34], 34139328, (276, 34165184)),
    50: (IRESNET_BLOCKS[50], 43590848, (396, 43628992)),
    100: (IRESNET_BLOCKS[100], 65156160, (771, 65225792)),
    200: (IRESNET_BLOCKS[200], 118833920, (1506, 118969984)),
}, specs.ARCFACE_112)
