"""The LGAF paper's building blocks (Local and Global Feature Attention Fusion, the LGAF paper, Sec. 3).

- :class:`LANet`: spatial attention of one scale's map (Sec. 3.3, Eq. 11).
- :class:`SqueezeExcite`: channel attention over the concatenated scales (Sec. 3.3, S in Eq. 13).
- :class:`MultiScaleLocalHead`: one "MSNet" head: multi-scale convs, LANet per scale, concat, SE and a
  projection (Eq. 12-13).
- :class:`MultiHeadLocal`: the MHMS module, ``num_heads`` heads concatenated (Eq. 14).
- :class:`FeatureQualityFusion`: FQA + LGF, the feature-norm quality weighting of the local and global
  features (Sec. 3.2, Eq. 4-10).

There is no public LGAF code. Where the paper is silent, the sizes and choices are the project's
(docs/reference.md section 3); each is stated where it is used.
Sub-layers are named after their PyTorch module paths with "." -> "_" (``scales_1_0``, ``lanets_2``,
``heads_3``), so checkpoints of the project's PyTorch reference map mechanically.

Only ``keras.ops`` is used, so every Keras backend runs these layers.
"""

import keras
from keras import layers
from keras import ops

from keras_fr.layers.activations import PReLU
from keras_fr.layers.export_hooks import ExportHooks
from keras_fr.layers.normalization import BatchNormalization

#: The paper's default scales as (kernel size, dilation): 1x1, 3x3 and a dilated 3x3 (5x5 equivalent).
DEFAULT_SCALES = ((1, 1), (3, 1), (3, 2))
FUSION_MODES = ("quality", "add", "local", "global")
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9


def _check_positive_int(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive integer; got {value!r}.")


def _check_rank(owner, input_shape, rank, what):
    if len(input_shape) != rank:
        raise ValueError(
            f"{owner} expects {what} of rank {rank}; got input shape {tuple(input_shape)}."
        )
    if input_shape[-1] is None:
        raise ValueError(f"{owner} needs a known channel dimension; got {tuple(input_shape)}.")


def _normalize_scales(scales):
    try:
        normalized = tuple((int(k), int(d)) for k, d in scales)
    except (TypeError, ValueError):
        raise ValueError(
            f"`scales` must be a sequence of (kernel_size, dilation) pairs; got {scales!r}."
        ) from None
    if not normalized:
        raise ValueError("`scales` must hold at least one (kernel_size, dilation) pair.")
    for (kernel, dilation), raw in zip(normalized, scales):
        if kernel < 1 or kernel % 2 == 0 or dilation < 1 or tuple(raw) != (kernel, dilation):
            raise ValueError(
                "each entry of `scales` must be (odd kernel_size >= 1, dilation >= 1) as integers "
                f"(symmetric padding needs an odd kernel); got {tuple(raw)!r}."
            )
    return normalized


class _GatedAttention(layers.Layer):
    """What LANet and SqueezeExcite share: ``x * sigmoid(expand(relu(reduce(x'))))``.

    ``reduce`` is a 1x1 conv C -> max(1, C // reduction) with bias and ``expand`` a 1x1 conv with
    bias. With ``_per_channel`` False (LANet) x' is the map itself and ``expand`` has one filter: a
    weight per position. With ``_per_channel`` True (SqueezeExcite) x' is the global average pool of
    the map and ``expand`` has C filters: a weight per channel.
    """

    #: PyTorch module paths of the sublayers that own weights (Keras name: "." -> "_"), read by
    #: keras_fr.conversion.mapping to map checkpoint keys.
    torch_modules = ("reduce", "expand")
    _per_channel = False

    def __init__(self, reduction=16, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int(type(self).__name__, "reduction", reduction)
        self.reduction = reduction

    def build(self, input_shape):
        _check_rank(type(self).__name__, input_shape, 4, "feature maps (N, H, W, C)")
        channels = input_shape[-1]
        hidden = max(1, channels // self.reduction)
        self.reduce = layers.Conv2D(hidden, 1, use_bias=True, name="reduce", dtype=self.dtype_policy)
        self.expand = layers.Conv2D(
            channels if self._per_channel else 1, 1, use_bias=True, name="expand",
            dtype=self.dtype_policy,
        )
        spatial = (1, 1) if self._per_channel else tuple(input_shape[1:3])
        self.reduce.build((input_shape[0], *spatial, channels))
        self.expand.build((input_shape[0], *spatial, hidden))

    def _gate(self, inputs):
        if self._per_channel:
            inputs = ops.mean(inputs, axis=(1, 2), keepdims=True)
        return ops.sigmoid(self.expand(ops.relu(self.reduce(inputs))))

    def call(self, inputs):
        return inputs * self._gate(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction)
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class LANet(_GatedAttention):
    """LANet spatial attention (Wang and Guo, LS-CNN), as the LGAF paper uses it per scale.

    Eq. 11 of the LGAF paper writes ``P(w) = w * Phi(Phi(GAP(w)))``. A global average pool would
    make the attention one scalar per channel, which contradicts "spatial attention" and LANet's
    source; the project therefore applies the two 1x1 convolutions to the map itself
    (docs/reference.md section 3):

    ``a = sigmoid(expand(relu(reduce(x))))``, ``reduce``: 1x1 conv C -> max(1, C // reduction) with
    bias, ``expand``: 1x1 conv -> 1 channel with bias; output ``x * a`` (a broadcast over channels).

    Args:
        reduction: channel reduction ratio of the hidden 1x1 convolution (default 16).
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Input shape: (N, H, W, C). Output shape: the same.

    Example:

    >>> layer = LANet(reduction=16)
    >>> layer(keras.ops.ones((2, 7, 7, 128))).shape
    (2, 7, 7, 128)
    """

    def attention(self, inputs):
        """The (N, H, W, 1) spatial attention map in (0, 1)."""
        return self._gate(inputs)


@keras.saving.register_keras_serializable(package="keras_fr")
class SqueezeExcite(_GatedAttention):
    """Squeeze-and-excitation channel attention (Hu et al.), S(.) in Eq. 13 of the LGAF paper.

    ``s = sigmoid(expand(relu(reduce(GAP(x)))))``, ``reduce``: 1x1 conv C -> max(1, C // reduction)
    with bias, ``expand``: 1x1 conv back to C with bias; output ``x * s`` (per channel).

    Args:
        reduction: channel reduction ratio (default 16).
        **kwargs: standard layer arguments.

    Input shape: (N, H, W, C). Output shape: the same.

    Example:

    >>> SqueezeExcite()(keras.ops.ones((2, 7, 7, 384))).shape
    (2, 7, 7, 384)
    """

    _per_channel = True


@keras.saving.register_keras_serializable(package="keras_fr")
class MultiScaleLocalHead(layers.Layer):
    """One MHMS head (the paper's "MSNet"): L^k = F(S(concat_j P(Phi_j(C(x))))), Eq. 12-13.

    Per scale j (a (kernel, dilation) pair): ``scales_{j}_0`` conv (``branch_channels`` filters,
    stride 1, symmetric padding dilation * (kernel - 1) / 2, no bias) -> ``scales_{j}_1`` BN ->
    ``scales_{j}_2`` PReLU (per channel) -> ``lanets_{j}`` (:class:`LANet`). The scales are
    concatenated on channels, ``se`` (:class:`SqueezeExcite`) weighs them, and the projection F
    flattens (height, width, channels) -> ``proj_fc`` (Dense to ``output_dim``) -> ``proj_bn`` (BN).
    The paper does not give the widths; 128 branch channels and the BN + PReLU per scale are the
    project's choices (docs/reference.md section 3).

    Args:
        output_dim: size of this head's local feature (512 / number of heads in LGAF).
        branch_channels: filters of each scale's convolution (default 128).
        scales: (kernel_size, dilation) pairs with odd kernels (default 1x1, 3x3, 3x3 dilation 2).
        lanet_reduction: LANet's reduction ratio (default 16).
        se_reduction: SqueezeExcite's reduction ratio (default 16).
        **kwargs: standard layer arguments.

    Input shape: (N, H, W, C) with static H and W (the projection flattens the map).
    Output shape: (N, output_dim).

    Raises:
        ValueError: for a non-positive size, an even kernel, or an input without a static
            spatial size.

    Example:

    >>> head = MultiScaleLocalHead(output_dim=128)
    >>> head(keras.ops.ones((2, 7, 7, 512))).shape
    (2, 128)
    """

    #: PyTorch module paths of the sublayers that own weights (Keras name: "." -> "_"), read by
    #: keras_fr.conversion.mapping to map checkpoint keys.
    torch_modules = ("scales.{}.{}", "lanets.{}", "se", "proj_fc", "proj_bn")

    def __init__(
        self,
        output_dim,
        branch_channels=128,
        scales=DEFAULT_SCALES,
        lanet_reduction=16,
        se_reduction=16,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("MultiScaleLocalHead", "output_dim", output_dim)
        _check_positive_int("MultiScaleLocalHead", "branch_channels", branch_channels)
        self.output_dim = output_dim
        self.branch_channels = branch_channels
        self.scales = _normalize_scales(scales)
        self.lanet_reduction = lanet_reduction
        self.se_reduction = se_reduction
        policy = self.dtype_policy
        self.scale_convs, self.scale_bns, self.scale_prelus, self.lanets = [], [], [], []
        for index, (kernel, dilation) in enumerate(self.scales):
            self.scale_convs.append(layers.Conv2D(
                branch_channels, kernel, dilation_rate=dilation,
                # stride 1 and an odd kernel: "same" pads dilation * (kernel - 1) / 2 on each
                # side, exactly PyTorch's symmetric padding.
                padding="same", use_bias=False, name=f"scales_{index}_0", dtype=policy,
            ))
            self.scale_bns.append(BatchNormalization(
                epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"scales_{index}_1", dtype=policy
            ))
            self.scale_prelus.append(PReLU(
                alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2],
                name=f"scales_{index}_2", dtype=policy,
            ))
            self.lanets.append(LANet(lanet_reduction, name=f"lanets_{index}", dtype=policy))
        self.se = SqueezeExcite(se_reduction, name="se", dtype=policy)
        self.proj_fc = layers.Dense(output_dim, use_bias=True, name="proj_fc", dtype=policy)
        self.proj_bn = BatchNormalization(
            epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name="proj_bn", dtype=policy
        )

    def build(self, input_shape):
        _check_rank("MultiScaleLocalHead", input_shape, 4, "feature maps (N, H, W, C)")
        batch, height, width, _ = input_shape
        if height is None or width is None:
            raise ValueError(
                "MultiScaleLocalHead flattens its map, so it needs a static height and width; "
                f"got input shape {tuple(input_shape)}."
            )
        branch_shape = (batch, height, width, self.branch_channels)
        for conv, bn, prelu, lanet in zip(
            self.scale_convs, self.scale_bns, self.scale_prelus, self.lanets
        ):
            conv.build(input_shape)
            bn.build(branch_shape)
            prelu.build(branch_shape)
            lanet.build(branch_shape)
        concat_channels = self.branch_channels * len(self.scales)
        self.se.build((batch, height, width, concat_channels))
        self._flat_dim = height * width * concat_channels
        self.proj_fc.build((batch, self._flat_dim))
        self.proj_bn.build((batch, self.output_dim))

    def call(self, inputs, training=None):
        maps = []
        for conv, bn, prelu, lanet in zip(
            self.scale_convs, self.scale_bns, self.scale_prelus, self.lanets
        ):
            # Eq. 12: l^j = P(Phi_j(C(x))), Phi_j = conv + BN + PReLU at scale j.
            scale_map = prelu(bn(conv(inputs), training=training))
            maps.append(lanet(scale_map))
        # Eq. 13: L^k = F(S(Omega(l^1, ..., l^j))).
        x = self.se(ops.concatenate(maps, axis=-1))
        x = ops.reshape(x, (-1, self._flat_dim))  # (H, W, C) order, as keras.layers.Flatten
        return self.proj_bn(self.proj_fc(x), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            branch_channels=self.branch_channels,
            scales=[list(s) for s in self.scales],
            lanet_reduction=self.lanet_reduction,
            se_reduction=self.se_reduction,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class MultiHeadLocal(layers.Layer):
    """The MHMS module: ``num_heads`` :class:`MultiScaleLocalHead` s concatenated (Eq. 14).

    Head ``i`` is the sub-layer ``heads_{i}`` and produces ``embedding_size // num_heads`` values;
    the local feature is their concatenation, ``embedding_size`` wide. Several heads keep a usable
    local feature when some face regions are missing (Sec. 3.3); the paper's best is 4 heads.

    Args:
        num_heads: number of heads b (default 4); must divide `embedding_size`.
        embedding_size: width of the concatenated local feature (default 512).
        branch_channels, scales, lanet_reduction, se_reduction: as for `MultiScaleLocalHead`.
        **kwargs: standard layer arguments.

    Input shape: (N, H, W, C) with static H and W. Output shape: (N, embedding_size).

    Raises:
        ValueError: if `num_heads` does not divide `embedding_size`, or as `MultiScaleLocalHead`.

    Example:

    >>> mhms = MultiHeadLocal(num_heads=4, embedding_size=512)
    >>> mhms(keras.ops.ones((1, 7, 7, 512))).shape
    (1, 512)
    """

    #: PyTorch module paths of the sublayers that own weights (Keras name: "." -> "_"), read by
    #: keras_fr.conversion.mapping to map checkpoint keys.
    torch_modules = ("heads.{}",)

    def __init__(
        self,
        num_heads=4,
        embedding_size=512,
        branch_channels=128,
        scales=DEFAULT_SCALES,
        lanet_reduction=16,
        se_reduction=16,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("MultiHeadLocal", "num_heads", num_heads)
        _check_positive_int("MultiHeadLocal", "embedding_size", embedding_size)
        if embedding_size % num_heads:
            raise ValueError(
                f"MultiHeadLocal: `num_heads` must divide `embedding_size` ({embedding_size}); got "
                f"num_heads={num_heads}."
            )
        self.num_heads = num_heads
        self.embedding_size = embedding_size
        self.branch_channels = branch_channels
        self.scales = _normalize_scales(scales)
        self.lanet_reduction = lanet_reduction
        self.se_reduction = se_reduction
        self.heads = [
            MultiScaleLocalHead(
                embedding_size // num_heads,
                branch_channels=branch_channels,
                scales=self.scales,
                lanet_reduction=lanet_reduction,
                se_reduction=se_reduction,
                name=f"heads_{index}",
                dtype=self.dtype_policy,
            )
            for index in range(num_heads)
        ]

    def build(self, input_shape):
        _check_rank("MultiHeadLocal", input_shape, 4, "feature maps (N, H, W, C)")
        for head in self.heads:
            head.build(input_shape)

    def call(self, inputs, training=None):
        # Eq. 14: Psi = Omega(L^1, ..., L^b).
        return ops.concatenate([head(inputs, training=training) for head in self.heads], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            embedding_size=self.embedding_size,
            branch_channels=self.branch_channels,
            scales=[list(s) for s in self.scales],
            lanet_reduction=self.lanet_reduction,
            se_reduction=self.se_reduction,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class FeatureQualityFusion(ExportHooks, layers.Layer):
    """FQA + LGF: fuses the local and global features weighted by their feature-norm quality.

    For each sample, Z_j = ||T^j|| (Eq. 4-5) for j in (local, global). The layer keeps
    ``norm_mean`` and ``norm_std`` (shape (2,): index 0 local, 1 global), non-trainable and saved
    with the weights. In training (``training=True``) they are updated with the batch mean and the
    population standard deviation (ddof=0) of Z: ``new = momentum * batch + (1 - momentum) * old``
    (Eq. 7-8, momentum 0.01), and the updated values normalize the batch (as Eq. 6 uses the moving
    statistics, and as AdaFace does). At inference they are used unchanged, so a batch of one works
    and an exported graph sees constants; as with BatchNormalization, a layer set to
    ``trainable = False`` (a frozen model being fine-tuned) keeps them unchanged. Then (Eq. 6, 9, 10):

    ``Z^_j = clip(h * (Z_j - mean_j) / (std_j + epsilon), -1, 1) + 1``,
    ``gamma_j = Z^_j / (Z^_local + Z^_global + gamma_epsilon)`` (no gradient flows through gamma),
    ``kappa = gamma_local * local + gamma_global * global``.

    The paper swaps the letters of the two branches between Sec. 3.2 and Eq. 14; the meaning used
    here is the one above. The statistics are updated in training in every mode (they cost nothing
    and stay meaningful if the mode is switched later); they only change the output in "quality".

    Args:
        mode: ``"quality"`` (default, the paper's LGF), ``"add"`` (local + global), ``"local"``
            (local only), ``"global"`` (global only: an ArcFace IResNet). These are the paper's
            ablations.
        h: concentration of the normalized norms (0.333: the 3-sigma rule, Sec. 3.2).
        momentum: EMA weight of the current batch (alpha = 0.01 in Eq. 7-8).
        epsilon: added to the std in Eq. 6 (1e-3, AdaFace's value).
        gamma_epsilon: added to the denominator of Eq. 9 (1e-6).
        initial_mean: starting value of both norm means (20.0, as AdaFace).
        initial_std: starting value of both norm stds (100.0, as AdaFace; gammas start near 0.5).
        return_gammas: if True, the output is ``[fused, gamma_local, gamma_global]`` with the
            gammas of shape (N, 1). The gammas are the FQA weights (Eq. 9) in every mode, so a
            model trained with "add" can still be inspected; only "quality" applies them.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: a list ``[local, global]`` of two (N, D) tensors.
        training: Python bool; True updates the statistics.

    Returns:
        The fused (N, D) tensor, or ``[fused, gamma_local, gamma_global]``.

    Raises:
        ValueError: for an unknown `mode`, an `h`, `momentum` or `epsilon` out of range, or inputs
            that are not two (N, D) tensors of the same width.

    Example:

    >>> fusion = FeatureQualityFusion(mode="quality")
    >>> local = keras.ops.ones((3, 512))
    >>> fused = fusion([local, 2 * local])
    >>> fused.shape
    (3, 512)
    """

    #: Export hook: stays float32 in int8 TFLite files. The normalized norms divide by a small
    #: stored std and then by their sum: int8 norms are far too coarse for that (LGAFResNet50's
    #: cosine fell to 0.83), and a sum quantized to zero stops the int8 DIV kernel.
    keep_float32_in_int8 = True

    def __init__(
        self,
        mode="quality",
        h=0.333,
        momentum=0.01,
        epsilon=1e-3,
        gamma_epsilon=1e-6,
        initial_mean=20.0,
        initial_std=100.0,
        return_gammas=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in FUSION_MODES:
            raise ValueError(
                f"FeatureQualityFusion: `mode` must be one of {FUSION_MODES}; got {mode!r}."
            )
        for name, value, low in (("h", h, 0.0), ("epsilon", epsilon, 0.0),
                                 ("gamma_epsilon", gamma_epsilon, 0.0),
                                 ("initial_std", initial_std, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= low:
                raise ValueError(
                    f"FeatureQualityFusion: `{name}` must be a positive number; got {value!r}."
                )
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
            0 < momentum <= 1
        ):
            raise ValueError(
                f"FeatureQualityFusion: `momentum` must be in (0, 1]; got {momentum!r}."
            )
        self.mode = mode
        self.h = float(h)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.gamma_epsilon = float(gamma_epsilon)
        self.initial_mean = float(initial_mean)
        self.initial_std = float(initial_std)
        self.return_gammas = bool(return_gammas)

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) else None
        if (
            shapes is None
            or len(shapes) != 2
            or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in shapes)
        ):
            raise ValueError(
                "FeatureQualityFusion expects a list [local, global] of two (N, D) tensors; got "
                f"input shape {input_shape!r}."
            )
        if shapes[0][-1] != shapes[1][-1]:
            raise ValueError(
                "FeatureQualityFusion: the local and global features must have the same width; got "
                f"{tuple(shapes[0])} and {tuple(shapes[1])}."
            )
        # Buffers in PyTorch (fusion.norm_mean / fusion.norm_std): index 0 local, 1 global.
        self.norm_mean = self.add_weight(
            shape=(2,), name="norm_mean", trainable=False, dtype="float32", autocast=False,
            initializer=keras.initializers.Constant(self.initial_mean),
        )
        self.norm_std = self.add_weight(
            shape=(2,), name="norm_std", trainable=False, dtype="float32", autocast=False,
            initializer=keras.initializers.Constant(self.initial_std),
        )

    def feature_norms(self, local, global_):
        """Eq. 4-5: per-sample L2 norms, (N, 2) float32 (column 0 local, 1 global)."""
        def norm(x):
            x = ops.cast(x, "float32")
            return ops.sqrt(ops.sum(ops.square(x), axis=-1))

        return ops.stack([norm(local), norm(global_)], axis=-1)

    def call(self, inputs, training=None):
        local, global_ = inputs
        norms = ops.stop_gradient(self.feature_norms(local, global_))
        mean = ops.convert_to_tensor(self.norm_mean)
        std = ops.convert_to_tensor(self.norm_std)
        # Like BatchNormalization, a frozen layer (trainable=False) keeps its statistics.
        if training and self.trainable:
            # Eq. 7-8: EMA of the batch statistics; population std (ddof=0).
            batch_mean = ops.mean(norms, axis=0)
            batch_std = ops.sqrt(ops.mean(ops.square(norms - batch_mean), axis=0))
            mean = self.momentum * batch_mean + (1.0 - self.momentum) * mean
            std = self.momentum * batch_std + (1.0 - self.momentum) * std
            self.norm_mean.assign(mean)
            self.norm_std.assign(std)

        # Eq. 6: normalized norm in [0, 2].
        z_hat = ops.clip(self.h * (norms - mean) / (std + self.epsilon), -1.0, 1.0) + 1.0
        # Eq. 9: attention between the branches; no gradient (as AdaFace treats its norms).
        gammas = ops.stop_gradient(
            z_hat / (ops.sum(z_hat, axis=-1, keepdims=True) + self.gamma_epsilon)
        )
        gammas = ops.cast(gammas, self.compute_dtype)
        gamma_local, gamma_global = gammas[:, :1], gammas[:, 1:]
        if self.mode == "quality":
            # Eq. 10: kappa = gamma_local * local + gamma_global * global.
            fused = gamma_local * local + gamma_global * global_
        elif self.mode == "add":
            fused = local + global_
        elif self.mode == "local":
            fused = local
        else:  # "global": exactly the ArcFace IResNet embedding
            fused = global_
        if self.return_gammas:
            return [fused, gamma_local, gamma_global]
        return fused

    def compute_output_shape(self, input_shape):
        fused = tuple(input_shape[1])
        if self.return_gammas:
            return [fused, (fused[0], 1), (fused[0], 1)]
        return fused

    def get_config(self):
        config = super().get_config()
        config.update(
            mode=self.mode,
            h=self.h,
            momentum=self.momentum,
            epsilon=self.epsilon,
            gamma_epsilon=self.gamma_epsilon,
            initial_mean=self.initial_mean,
            initial_std=self.initial_std,
            return_gammas=self.return_gammas,
        )
        return config
