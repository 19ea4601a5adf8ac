"""MSConv: Multiplicative and Subtractive Convolution (the MSConv paper, Section 3).

A plug-and-play replacement for a 3x3 convolution: two grouped 3x3 branches with different dilations
extract multi-scale features U1 and U2; their element-wise product (MO, the salient features) drives a
channel attention c, and the attention weighs their difference (SO, the differential features):
``V = (U1 - U2) * c + U2``, followed by a 1x1 projection. The layer reproduces the reference PyTorch
module ``MSConv(C, stride)`` weight for weight (docs/reference.md section 1); its sub-layers are named by
their PyTorch path (``convs.1.0`` -> ``convs_1_0``) so checkpoints convert mechanically.

Also here: ``PaddedMaxPooling2D`` (PyTorch's max pool, which pads with -inf) and
``clone_with_grouped_conv`` (swap how the grouped convolutions are computed, e.g. before a TFLite export).

Both layers tell the exporters what they need through the export hooks
(``keras_fr.layers.export_hooks``): MSConv rebuilds itself in the grouped-convolution formulation the
exporter asks for (for ONNX, with grouped convolutions that trace to one ``Conv`` with ``group=G``), and
the -inf-padded max pool becomes an edge-padded one in int8 files (where the PReLUs trace to
``LEAKY_RELU``).
"""

import functools

import numpy as np

import keras
from keras import ops

from keras_fr.layers.activations import PReLU
from keras_fr.layers.convolution import Conv2D
from keras_fr.layers.export_hooks import ExportHooks
from keras_fr.layers.export_hooks import GraphConv2D
from keras_fr.layers.export_hooks import LeakyPReLU
from keras_fr.layers.export_hooks import graph_conv2d
from keras_fr.layers.normalization import BatchNormalization
from keras_fr.layers.normalization import ChannelBias
from keras_fr.layers.normalization import fold_batch_norm

#: PyTorch BatchNorm defaults (eps 1e-5, momentum 0.1 == Keras momentum 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
#: PyTorch's PReLU initial slope.
PRELU_INIT = 0.25
SQUEEZE_MODES = ("multiply", "add")
GROUPED_CONV_MODES = ("auto", "native", "split", "onednn")
KERNEL_SIZE = 3


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return value


def _normalize_strides(strides):
    """Accept ``s`` or ``(s, s)``; MSConv (like the reference) uses one stride for both axes."""
    if isinstance(strides, (list, tuple)):
        if len(strides) != 2 or strides[0] != strides[1]:
            raise ValueError(
                "`strides` must be a positive integer or a pair of equal positive integers; "
                f"got {strides!r}."
            )
        strides = strides[0]
    return _positive_int("strides", strides)


def _branch_plan(dilation, strides):
    """How one 3x3 branch (symmetric padding ``dilation``) is computed exactly on every backend.

    TensorFlow refuses a convolution with both stride > 1 and dilation > 1 (docs/reference.md section 5).
    Output row ``i`` of PyTorch's strided dilated conv reads padded rows ``s*i + d*k`` (k = 0, 1, 2):
    - ``s == 1`` or ``d == 1``: an ordinary convolution (stride s, dilation d) does it directly;
    - ``d % s == 0``: only every s-th padded row is ever read, so keep those first and run a stride-1
      convolution with dilation ``d // s`` (exact, and s*s times cheaper than the next case);
    - otherwise: the stride-1 dilated convolution, then keep every s-th output row and column.

    Returns:
        ``(pre_step, conv_strides, conv_dilation, post_step)``.
    """
    if strides == 1 or dilation == 1:
        return 1, strides, dilation, 1
    if dilation % strides == 0:
        return strides, 1, dilation // strides, 1
    return 1, 1, dilation, strides


@functools.lru_cache(maxsize=None)
def _tensorflow_sees_gpu():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


#: The split formulation packs groups up to this many input channels per convolution (see
#: ``MSConv._grouped_conv``; 32 was the fastest of 8, 16, 32, 64 for MSConvResNet50 inference at
#: batch 32 with XLA).
SPLIT_PACK_CHANNELS = 32
#: The pack width in training (``training=True``): wider packs train faster than they infer. The
#: MSConvResNet50 ``model.fit`` step at batch 32 under ``mixed_bfloat16`` (2-core AMX Xeon, fused
#: batch norm) ran 10.8 / 11.8 / 12.6 / 11.8 / 8.4 images/s at 32 / 64 / 128 / 256 / 1024 channels.
SPLIT_PACK_CHANNELS_TRAINING = 128


def split_pack_size(groups, in_per_group, pack_channels=SPLIT_PACK_CHANNELS):
    """How many neighbouring groups share one convolution in the split formulation: the largest
    divisor of ``groups`` whose input channels fit in ``pack_channels`` (at least 1)."""
    pack = max(1, min(groups, pack_channels // in_per_group)) if pack_channels else 1
    while groups % pack:
        pack -= 1
    return pack


def check_grouped_conv(grouped_conv, argument="`grouped_conv`"):
    """Return ``grouped_conv`` if it is one of :data:`GROUPED_CONV_MODES`, else raise ``ValueError``."""
    if not isinstance(grouped_conv, str) or grouped_conv not in GROUPED_CONV_MODES:
        raise ValueError(
            f"{argument} must be 'auto', 'native', 'split' or 'onednn'; got {grouped_conv!r}."
        )
    return grouped_conv


def _probe_onednn_grouped_conv(dtype, strided_dilation=False):
    """Run TensorFlow's ``Conv2D`` op and its two gradient ops on a grouped kernel in a traced
    function, and compare them with the same ops run per group; True when they run and agree. (The
    gradient ops are called directly: a gradient tape does not record under ``tf.init_scope``.)
    Stride 2; with ``strided_dilation``, dilation 2 as well."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    size = 9 if strided_dilation else 7  # a 3 x 3 output either way
    x = tf.constant(rng.uniform(-1, 1, (2, size, size, 8)), dtype)
    kernel = tf.constant(rng.uniform(-1, 1, (3, 3, 4, 8)), dtype)  # 2 groups of 4 channels
    dy = tf.constant(rng.uniform(-1, 1, (2, 3, 3, 8)), dtype)
    conv = dict(strides=[1, 2, 2, 1], padding="VALID")
    if strided_dilation:
        conv["dilations"] = [1, 2, 2, 1]

    def three(x, kernel, dy):
        return [
            tf.raw_ops.Conv2D(input=x, filter=kernel, **conv),
            tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, **conv),
            tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, **conv),
        ]

    grouped = tf.function(three)

    @tf.function
    def per_group(x, kernel, dy):
        parts = [three(x[..., 4 * g:4 * g + 4], kernel[..., 4 * g:4 * g + 4], dy[..., 4 * g:4 * g + 4])
                 for g in range(2)]
        return [tf.concat([parts[0][0], parts[1][0]], -1), tf.concat([parts[0][1], parts[1][1]], -1),
                tf.concat([parts[0][2], parts[1][2]], -1)]

    tolerance = 1e-4 if dtype == "float32" else 5e-2
    for a, b in zip(grouped(x, kernel, dy), per_group(x, kernel, dy)):
        a, b = np.asarray(tf.cast(a, tf.float32)), np.asarray(tf.cast(b, tf.float32))
        if a.shape != b.shape or not np.all(np.abs(a - b) <= tolerance * (1 + np.abs(b).max())):
            return False
    return True


@functools.lru_cache(maxsize=None)
def onednn_grouped_conv_available(dtype="float32", strided_dilation=False):
    """True when TensorFlow here runs a grouped convolution (a ``Conv2D`` whose kernel has fewer input
    channels than the input) and its gradients in ``dtype``, matching one convolution per group;
    with ``strided_dilation``, one with both a stride and a dilation above 1 (which TensorFlow's own
    kernels refuse and oneDNN runs).

    TensorFlow's CPU build has this only through oneDNN (on by default on x86; off with
    ``TF_ENABLE_ONEDNN_OPTS=0``, which leaves the forward pass and no gradient), and bfloat16 only on
    CPUs whose oneDNN kernels support it. Checked once per process and dtype on a tiny case (a traced
    forward and backward pass, well under a second); any error means no.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    try:
        with tf.init_scope():  # also when first asked while a tf.function is being traced
            return bool(_probe_onednn_grouped_conv(str(dtype), bool(strided_dilation)))
    except Exception:  # noqa: BLE001 - any failure of the probe means "not available"
        return False


def resolve_grouped_conv(grouped_conv, dtype="float32"):
    """The formulation that ``grouped_conv`` stands for on this backend and machine, for ``dtype``.

    ``"auto"``, on the TensorFlow backend without a GPU, is ``"onednn"`` where
    :func:`onednn_grouped_conv_available` (TensorFlow's own ``Conv2D`` op on the grouped kernel, which
    oneDNN computes as one grouped convolution, outside XLA), else ``"split"``; on a GPU and on the
    other backends it is ``"native"``. Measured on a 2-core AMX Xeon (docs/benchmarks.md): the
    MSConvResNet50 ``model.fit`` step under ``mixed_bfloat16`` at batch 32 took 13.9 images/s with
    ``"onednn"`` against 10.7 with ``"split"``; inference at batch 32, 52.3 images/s in a traced
    graph against 52.9 for ``"split"`` under XLA (and 42.4 without). ``"native"`` on TensorFlow's CPU
    is Keras' grouped convolution, which Keras compiles with XLA on each call: its gradient is
    pathologically slow (about 25x slower than ``"split"`` for a whole training step). Under an
    explicit XLA compilation (``jit_compile=True``) ``"onednn"`` becomes XLA's grouped convolution too,
    so XLA users should pick ``"split"``.

    Raises:
        ValueError: if ``grouped_conv`` is not ``"auto"``, ``"native"``, ``"split"`` or ``"onednn"``.
    """
    check_grouped_conv(grouped_conv)
    if grouped_conv != "auto":
        return grouped_conv
    if keras.backend.backend() == "tensorflow" and not _tensorflow_sees_gpu():
        return "onednn" if onednn_grouped_conv_available(str(dtype)) else "split"
    return "native"


@keras.saving.register_keras_serializable(package="keras_fr")
class MSConv(ExportHooks, keras.layers.Layer):
    """The MSConv block (Multiplicative and Subtractive Convolution), exact to the reference.

    With input ``x`` of C channels (``F = filters or C``) and ``d = max(F // reduction, min_dim)``:

    - ``U1 = PReLU(BN(GroupConv3x3_dil1(x)))``, ``U2 = PReLU(BN(GroupConv3x3_dil2(x)))``
      (``convs.0``, ``convs.1``; paper Eq. 1, multi-scale mixed convolution);
    - ``U3 = U1 * U2`` (MO, paper Eq. 2; ``U1 + U2`` with ``squeeze="add"``, the paper's MSConv*);
    - ``s = GAP(U3)``; ``z = PReLU(BN(Conv1x1_F->d(s)))`` (``fc``);
      ``a``, ``b`` = ``PReLU(BN(Conv1x1_d->F(z)))`` (``fcs.0``, ``fcs.1``);
    - ``c = sigmoid(a - b + 1e-6)``; ``V = (U1 - U2) * c + U2`` (SO and fusion, paper Eq. 3-5);
    - output ``PReLU(BN(Conv1x1_F->F(V)))`` (``fc_d``).

    Every convolution has no bias; every PReLU has one shared slope (PyTorch ``PReLU()``); BatchNorm
    uses PyTorch's eps 1e-5 and momentum 0.1. Each 3x3 branch pads ``dilation`` pixels on every side,
    so the output is ``ceil(H / strides) x ceil(W / strides)`` exactly as in PyTorch, for any stride and
    dilation, on every Keras backend.

    Args:
        filters: output channels; ``None`` (the reference) keeps the input's channel count.
        strides: stride of both 3x3 branches (1 or 2 in the reference network).
        groups: groups of the 3x3 convolutions (32); must divide the input channels and ``filters``.
        reduction: channel reduction ratio r of the attention (16).
        min_dim: lower bound L of the attention width (32): ``d = max(F // r, L)``.
        dilations: the two branches' dilations, ``(1, 2)`` in the reference (K3 + K5). The paper's
            Table 5 ablations: ``(1, 1)`` (K3 + K3), ``(2, 1)`` (K5 + K3), ``(2, 3)`` (K5 + K7).
        squeeze: what feeds the attention: ``"multiply"`` (MO, MSConv) or ``"add"`` (MSConv* of the
            paper's Table 6).
        grouped_conv: how the grouped 3x3 convolutions are computed, with identical weights and
            outputs: ``"native"`` (one ``Conv2D(groups=...)``), ``"split"`` (ordinary convolutions
            on channel slices, concatenated; for runtimes without grouped convolution, e.g. TFLite
            builtins; neighbouring groups are packed into one convolution with a block-diagonal
            kernel of up to ``SPLIT_PACK_CHANNELS`` input channels in inference and
            ``SPLIT_PACK_CHANNELS_TRAINING`` in training, see ``_grouped_conv``), ``"onednn"``
            (TensorFlow backend only: TensorFlow's ``Conv2D`` op on the grouped kernel, one oneDNN
            grouped convolution forward and backward; the layer then does not support XLA) or
            ``"auto"`` (the default: on the TensorFlow backend without a GPU, ``"onednn"`` where
            TensorFlow runs it, checked once per process and dtype, else ``"split"``; ``"native"``
            elsewhere; decided when the layer is called, see ``resolve_grouped_conv``). See
            ``clone_with_grouped_conv``.
        **kwargs: base layer arguments (``name``, ``dtype``, ``trainable``).

    Input shape: ``(N, H, W, C)``, channels last. Output shape: ``(N, ceil(H/s), ceil(W/s), F)``.

    Raises:
        ValueError: for an argument outside the accepted values, or (when built) input channels or
            ``filters`` not divisible by ``groups``.

    Example:

    >>> layer = MSConv(strides=2)
    >>> y = layer(keras.random.normal((2, 28, 28, 64)))
    >>> tuple(y.shape)
    (2, 14, 14, 64)
    """

    #: Export hook: both formulations can be rebuilt for a file (see ``export_variant``).
    export_grouped_conv_modes = ("native", "split")
    #: PyTorch module paths of the sublayers (Keras name: "." -> "_"), for checkpoint key mapping.
    torch_modules = ("convs.{}.{}", "fc.{}", "fcs.{}.{}", "fc_d.{}")
    #: The layer class of the grouped 3x3 convolutions.
    _grouped_conv_class = keras.layers.Conv2D
    #: In the split formulation, neighbouring groups share one convolution of up to this many input
    #: channels (block-diagonal kernel); 0 or 1: one convolution per group. The first width is used
    #: in inference, the second in training.
    _split_pack_channels = SPLIT_PACK_CHANNELS
    _split_pack_channels_training = SPLIT_PACK_CHANNELS_TRAINING
    #: The inference variant's structure (``inference_variant``): each batch norm a
    #: :class:`ChannelBias` (its scale in the convolution's kernel), each PReLU a ``LeakyPReLU``.
    _folded = False
    #: In training too, run a branch with both a stride and a dilation above 1 as one oneDNN
    #: convolution (False: only in inference; see ``_branch``).
    _direct_strided_dilation_in_training = False

    def __init__(
        self,
        filters=None,
        strides=1,
        groups=32,
        reduction=16,
        min_dim=32,
        dilations=(1, 2),
        squeeze="multiply",
        grouped_conv="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if filters is not None:
            _positive_int("filters", filters)
        self.filters = filters
        self.strides = _normalize_strides(strides)
        self.groups = _positive_int("groups", groups)
        self.reduction = _positive_int("reduction", reduction)
        self.min_dim = _positive_int("min_dim", min_dim)
        if not isinstance(dilations, (list, tuple)) or len(dilations) != 2:
            raise ValueError(
                "`dilations` must be a pair of positive integers (one per branch, e.g. (1, 2)); "
                f"got {dilations!r}."
            )
        for d in dilations:
            _positive_int("dilations", d)
        self.dilations = tuple(int(d) for d in dilations)
        if squeeze not in SQUEEZE_MODES:
            raise ValueError(
                f"`squeeze` must be 'multiply' (MSConv) or 'add' (MSConv*); got {squeeze!r}."
            )
        self.squeeze = squeeze
        check_grouped_conv(grouped_conv)
        if grouped_conv == "onednn":
            if keras.backend.backend() != "tensorflow":
                raise ValueError(
                    "`grouped_conv='onednn'` runs TensorFlow's Conv2D op and needs the TensorFlow "
                    f"backend; KERAS_BACKEND is {keras.backend.backend()!r}."
                )
            self.supports_jit = False  # XLA would replace oneDNN's kernel with its own grouped one
        self.grouped_conv = grouped_conv
        self._plans = tuple(_branch_plan(d, self.strides) for d in self.dilations)

    # -- construction ----------------------------------------------------------------------------

    def _conv_bn_prelu(self, prefix, filters, kernel_size=1, strides=1, dilation=1, groups=1):
        """Create ``{prefix}_0`` (conv), ``{prefix}_1`` (BN), ``{prefix}_2`` (single-slope PReLU)."""
        policy = self.dtype_policy
        # keras_fr's Conv2D: Keras' layer, its 1x1 convolutions trained as matrix products in bfloat16.
        conv_class = self._grouped_conv_class if groups > 1 else Conv2D
        conv = conv_class(
            filters,
            kernel_size,
            strides=strides,
            dilation_rate=dilation,
            groups=groups,
            padding="valid",
            use_bias=False,
            dtype=policy,
            name=f"{prefix}_0",
        )
        if self._folded:
            bn = ChannelBias(dtype=policy, name=f"{prefix}_1")
        else:
            bn = BatchNormalization(
                epsilon=BN_EPSILON, momentum=BN_MOMENTUM, dtype=policy, name=f"{prefix}_1"
            )
        prelu = (LeakyPReLU if self._folded else PReLU)(
            alpha_initializer=keras.initializers.Constant(PRELU_INIT),
            shared_axes=[1, 2, 3],
            dtype=policy,
            name=f"{prefix}_2",
        )
        setattr(self, f"{prefix}_0", conv)
        setattr(self, f"{prefix}_1", bn)
        setattr(self, f"{prefix}_2", prelu)
        return conv, bn, prelu

    def _split_conv(self, x, kernel, conv):
        """One group's convolution in the split formulation."""
        return ops.conv(x, kernel, strides=conv.strides, padding="valid", data_format="channels_last",
                        dilation_rate=conv.dilation_rate)

    def _block(self, prefix):
        return getattr(self, f"{prefix}_0"), getattr(self, f"{prefix}_1"), getattr(self, f"{prefix}_2")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("MSConv needs a known number of input channels (last axis).")
        filters = self.filters or channels
        for what, value in (("input channels", channels), ("`filters`", filters)):
            if value % self.groups:
                raise ValueError(
                    f"MSConv: {what} ({value}) must be divisible by `groups` ({self.groups})."
                )
        self._out_channels = filters
        hidden = max(filters // self.reduction, self.min_dim)
        batch = input_shape[0]

        for i, (_, conv_strides, conv_dilation, _) in enumerate(self._plans):
            conv, bn, prelu = self._conv_bn_prelu(
                f"convs_{i}",
                filters,
                kernel_size=KERNEL_SIZE,
                strides=conv_strides,
                dilation=conv_dilation,
                groups=self.groups,
            )
            # The kernel's shape does not depend on the spatial size: build on a nominal one.
            conv.build((batch, None, None, channels))
            bn.build((batch, None, None, filters))
            prelu.build((batch, 1, 1, filters))

        for prefix, c_in, c_out in (
            ("fc", filters, hidden),
            ("fcs_0", hidden, filters),
            ("fcs_1", hidden, filters),
            ("fc_d", filters, filters),
        ):
            conv, bn, prelu = self._conv_bn_prelu(prefix, c_out)
            conv.build((batch, None, None, c_in))
            bn.build((batch, None, None, c_out))
            prelu.build((batch, 1, 1, c_out))

    # -- forward ---------------------------------------------------------------------------------

    def _grouped_conv(self, x, conv, training=None):
        mode = resolve_grouped_conv(self.grouped_conv, keras.backend.standardize_dtype(x.dtype))
        if mode == "native":
            return conv(x)
        if mode == "onednn":
            return self._onednn_conv(x, conv)
        # "split": the same (3, 3, C_in / groups, F) kernel as ordinary convolutions. `pack`
        # neighbouring groups share one convolution whose kernel is block-diagonal: group q's inputs
        # reach only group q's outputs, the other blocks are exact zeros, so the outputs are the
        # grouped convolution's. Narrow groups (4 or 8 channels in MSConvResNet50's first stages)
        # make poor convolutions on their own: packing them to 32 input channels made MSConvResNet50
        # 1.2x faster at batch 32 (XLA) and its bfloat16 training step 1.3x faster on a 2-core AMX
        # Xeon, for pack-times the multiply-adds of those layers (docs/benchmarks.md). Training
        # packs wider (SPLIT_PACK_CHANNELS_TRAINING): the backward pass gains more from fewer,
        # larger convolutions than it loses to the zeros.
        kernel = ops.cast(conv.kernel, x.dtype)
        in_per_group = kernel.shape[2]
        out_per_group = kernel.shape[3] // self.groups
        width = self._split_pack_channels_training if training else self._split_pack_channels
        pack = split_pack_size(self.groups, in_per_group, width)
        eye = ops.eye(pack, dtype=kernel.dtype) if pack > 1 else None
        outputs = []
        for p in range(self.groups // pack):
            xg = x[..., p * pack * in_per_group : (p + 1) * pack * in_per_group]
            kg = kernel[..., p * pack * out_per_group : (p + 1) * pack * out_per_group]
            if pack > 1:
                kg = ops.reshape(kg, (*kernel.shape[:2], in_per_group, pack, out_per_group))
                kg = ops.einsum("hwiqo,qr->hwqiro", kg, eye)  # block q -> (q*in + i, q*out + o)
                kg = ops.reshape(kg, (*kernel.shape[:2], pack * in_per_group, pack * out_per_group))
            outputs.append(self._split_conv(xg, kg, conv))
        return ops.concatenate(outputs, axis=-1)

    def _onednn_conv(self, x, conv, strides=None, dilation=None):
        """The grouped convolution as TensorFlow's own ``Conv2D`` op on the (3, 3, C_in / groups, F)
        kernel: oneDNN computes it as one grouped convolution, forward and backward. ``strides`` and
        ``dilation`` (default: ``conv``'s) may both be above 1."""
        import tensorflow as tf

        dtype = keras.backend.standardize_dtype(x.dtype)
        if not onednn_grouped_conv_available(dtype):
            raise RuntimeError(
                f"MSConv {self.name!r}: grouped_conv='onednn' needs TensorFlow's oneDNN grouped "
                f"convolution in {dtype}, which this TensorFlow does not run (TF_ENABLE_ONEDNN_OPTS=0, "
                "or a CPU without oneDNN support for it); use grouped_conv='split'."
            )
        strides = conv.strides if strides is None else (strides, strides)
        dilation = conv.dilation_rate if dilation is None else (dilation, dilation)
        return tf.raw_ops.Conv2D(input=x, filter=ops.cast(conv.kernel, x.dtype),
                                 strides=[1, *strides, 1], padding="VALID", dilations=[1, *dilation, 1])

    def _branch(self, x, index, training):
        dilation = self.dilations[index]
        pre_step, _, _, post_step = self._plans[index]
        conv, bn, prelu = self._block(f"convs_{index}")
        pad = dilation * (KERNEL_SIZE - 1) // 2  # PyTorch: padding = dilation for a 3x3 kernel
        x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        if (pre_step > 1 or post_step > 1) and (self._direct_strided_dilation_in_training or not training) \
                and self._onednn_strided_dilation(x.dtype):
            # oneDNN runs the strided dilated convolution itself: no slicing of the padded input (or
            # of a stride-1 output), exact. In inference only: at batch 32 on a 2-core AMX Xeon the
            # stage-2 branch's forward pass took 10.8 ms against 43.9 sliced, but oneDNN's input
            # gradient for it is slow (the forward and input gradient 84 ms against 14 sliced in
            # bfloat16), so training keeps the slice (docs/benchmarks.md).
            y = self._onednn_conv(x, conv, strides=self.strides, dilation=dilation)
            return prelu(bn(y, training=training))
        if pre_step > 1:
            x = x[:, ::pre_step, ::pre_step, :]
        y = self._grouped_conv(x, conv, training)
        if post_step > 1:
            y = y[:, ::post_step, ::post_step, :]
        return prelu(bn(y, training=training))

    def _onednn_strided_dilation(self, dtype):
        dtype = keras.backend.standardize_dtype(dtype)
        return (resolve_grouped_conv(self.grouped_conv, dtype) == "onednn"
                and onednn_grouped_conv_available(dtype, strided_dilation=True))

    def _apply(self, prefix, x, training):
        conv, bn, prelu = self._block(prefix)
        return prelu(bn(conv(x), training=training))

    def call(self, inputs, training=None):
        u1 = self._branch(inputs, 0, training)
        u2 = self._branch(inputs, 1, training)
        # MO (paper Eq. 2) feeds the attention; MSConv* (Table 6) feeds it the sum instead.
        u3 = u1 * u2 if self.squeeze == "multiply" else u1 + u2
        s = ops.mean(u3, axis=(1, 2), keepdims=True)
        z = self._apply("fc", s, training)
        a = self._apply("fcs_0", z, training)
        b = self._apply("fcs_1", z, training)
        c = ops.sigmoid(a - b + 1e-6)
        # SO and fusion (paper Eq. 3-5): V = (U1 - U2) * c + U2.
        v = (u1 - u2) * c + u2
        return self._apply("fc_d", v, training)

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else (size - 1) // self.strides + 1

        filters = self.filters or input_shape[-1]
        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), filters)

    def export_variant(self, target):
        """Export hook: a copy of this layer in ``target.grouped_conv``'s formulation, built to convert well.

        The copy (same name, configuration but ``grouped_conv``, weights layout) emits each grouped
        and/or dilated convolution as one graph convolution (:class:`GraphConv2D`; in the split
        formulation the per-group convolutions likewise), so an ONNX file gets one ``Conv`` with
        ``group=G`` and a TFLite file one ``CONV_2D`` with dilation factors instead of
        space-to-batch operators that XNNPACK does not run. In int8 files its single-slope PReLUs are
        :class:`~keras_fr.layers.export_hooks.LeakyPReLU` (``LEAKY_RELU``, which XNNPACK runs in int8).
        """
        config = self.get_config()
        config["grouped_conv"] = target.grouped_conv
        variant = _MSConvForExport.from_config(config)
        variant.leaky_prelu = target.quantize == "int8"  # read when the copy is built
        variant._folded = self._folded  # an inference variant's file has its structure
        return variant

    def _prefixes(self):
        return [f"convs_{i}" for i in range(len(self._plans))] + ["fc", "fcs_0", "fcs_1", "fc_d"]

    def inference_variant(self):
        """Inference-copy hook (:func:`keras_fr.applications.inference_model`): an unbuilt layer with
        this one's configuration and name that computes the same in inference with less work, or
        None when this layer is not built.

        Every batch norm's inference moves into the convolution before it (grouped 3x3 or 1x1, none
        with a bias): its scale into the kernel's output channels, the rest into a
        :class:`ChannelBias`; every single-slope PReLU becomes a ``LeakyPReLU`` (on TensorFlow one
        leaky ReLU with the slope read when traced, which TensorFlow's oneDNN fuses into the
        convolution). Equal to this layer in inference up to float rounding; a snapshot of the
        weights (:meth:`fill_inference_variant` copies them), not for training. With the other
        changes of that run, MSConvResNet50's batch-32 inference copy went from 53.6 to 70.7 images/s
        on a 2-core AMX Xeon (docs/benchmarks.md, "The inference copy").
        """
        if not self.built:
            return None
        return _MSConvForInference.from_config(self.get_config())

    def fill_inference_variant(self, variant):
        """Give ``variant`` (from :meth:`inference_variant`, built) this layer's weights, folded."""
        for prefix in self._prefixes():
            conv, bn, prelu = self._block(prefix)
            new_conv, new_bias, new_prelu = variant._block(prefix)
            kernel, bias = fold_batch_norm(conv.kernel, None, bn)
            new_conv.kernel.assign(ops.cast(kernel, new_conv.kernel.dtype))
            new_bias.bias.assign(ops.cast(bias, new_bias.bias.dtype))
            new_prelu.set_weights(prelu.get_weights())

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "groups": self.groups,
                "reduction": self.reduction,
                "min_dim": self.min_dim,
                "dilations": list(self.dilations),
                "squeeze": self.squeeze,
                "grouped_conv": self.grouped_conv,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class _MSConvForInference(MSConv):
    """MSConv as ``MSConv.inference_variant`` gives it to inference copies: batch norms folded into
    the convolutions (:class:`ChannelBias` for what remains of them), PReLUs as ``LeakyPReLU``.
    Weights: each block's kernel, bias and slope. For inference only (it has no moving statistics)."""

    _folded = True

    def inference_variant(self):
        return None  # already one


class _MSConvForExport(MSConv):
    """MSConv as ``MSConv.export_variant`` gives it to the exporters; never saved.

    Grouped and dilated convolutions trace to single graph convolutions (:class:`GraphConv2D`,
    :func:`graph_conv2d`).
    """

    _grouped_conv_class = GraphConv2D
    #: One convolution per group in files: a packed kernel would be folded into a larger constant.
    _split_pack_channels = 0
    _split_pack_channels_training = 0
    #: Build the PReLUs as ``LeakyPReLU`` (set by ``export_variant`` for int8 files).
    leaky_prelu = False

    def _conv_bn_prelu(self, prefix, filters, **kwargs):
        conv, bn, prelu = super()._conv_bn_prelu(prefix, filters, **kwargs)
        if self.leaky_prelu:
            prelu = LeakyPReLU.from_prelu(prelu)
            setattr(self, f"{prefix}_2", prelu)
        return conv, bn, prelu

    def _split_conv(self, x, kernel, conv):
        out = graph_conv2d(x, kernel, conv.strides, "valid", conv.dilation_rate)
        return super()._split_conv(x, kernel, conv) if out is None else out


@keras.saving.register_keras_serializable(package="keras_fr")
class PaddedMaxPooling2D(ExportHooks, keras.layers.Layer):
    """Max pooling with PyTorch's symmetric padding, padded with -inf (``nn.MaxPool2d(k, s, p)``).

    Keras ``padding="same"`` pads asymmetrically at stride 2, and zero padding is wrong when
    activations can be negative (they can, after PReLU). This pads ``padding`` pixels of -inf on every
    side and pools with ``"valid"``, so a padded position never wins (docs/reference.md section 5).

    Args:
        pool_size: window size (int).
        strides: stride (int); defaults to ``pool_size``.
        padding: pixels of -inf added on each side (int, at most ``pool_size // 2`` as in PyTorch).
        **kwargs: base layer arguments.

    Example:

    >>> pool = PaddedMaxPooling2D(3, strides=2, padding=1)
    >>> tuple(pool(keras.ops.zeros((1, 56, 56, 8))).shape)
    (1, 28, 28, 8)
    """

    def __init__(self, pool_size=3, strides=None, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _positive_int("pool_size", pool_size)
        self.strides = _positive_int("strides", strides if strides is not None else pool_size)
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= pool_size // 2:
            raise ValueError(
                f"`padding` must be an integer in [0, pool_size // 2]; got {padding!r}."
            )
        self.padding = padding

    def call(self, inputs):
        p = self.padding
        x = ops.pad(
            inputs, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf")
        ) if p else inputs
        return ops.max_pool(
            x, pool_size=self.pool_size, strides=self.strides, padding="valid",
            data_format="channels_last",
        )

    def compute_output_shape(self, input_shape):
        def out(size):
            if size is None:
                return None
            return (size + 2 * self.padding - self.pool_size) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), input_shape[3])

    def export_variant(self, target):
        """Export hook: in a full-integer int8 file, the same pooling with edge padding.

        -inf padding would put -inf into a calibrated activation range; with ``padding <= pool_size //
        2`` (always true here) every window that reaches into the padding also holds the edge pixel
        the padding repeats, so edge padding gives the same maxima with finite values.
        """
        if target.quantize != "int8" or not self.padding:
            return None
        return EdgePaddedMaxPooling2D(
            pool_size=self.pool_size, strides=self.strides, padding=self.padding, name=self.name,
            dtype=self.dtype_policy,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class EdgePaddedMaxPooling2D(PaddedMaxPooling2D):
    """``PaddedMaxPooling2D`` padded by repeating the edge rows and columns instead of with -inf.

    Equal to -inf padding whenever ``padding <= pool_size // 2`` (which the arguments enforce): a
    window that reaches into the padding also contains the edge pixel the padding repeats. What
    ``PaddedMaxPooling2D`` becomes in int8 TFLite files, where every value must be finite.
    """

    def call(self, inputs):
        p = self.padding
        x = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="symmetric") if p else inputs
        return ops.max_pool(
            x, pool_size=self.pool_size, strides=self.strides, padding="valid",
            data_format="channels_last",
        )

    def export_variant(self, target):
        del target
        return None


def clone_with_grouped_conv(model, grouped_conv):
    """Return a copy of ``model`` whose MSConv layers compute grouped convolutions another way.

    The weights are identical in layout and value (they are copied), and so are the outputs; only the
    computation changes. ``"split"`` avoids grouped convolution entirely (``groups`` ordinary
    convolutions on channel slices), for exporters whose target lacks it as a builtin.

    Args:
        model: a Functional ``keras.Model`` (e.g. an ``MSConvResNet``) containing ``MSConv`` layers.
        grouped_conv: ``"auto"``, ``"native"``, ``"split"`` or ``"onednn"``.

    Returns:
        A new ``keras.Model`` with the same weights.

    Raises:
        ValueError: if ``grouped_conv`` is not one of the accepted modes.

    Example:

    >>> model = keras_fr.applications.MSConvResNet26(input_shape=(32, 32, 3))
    >>> split = clone_with_grouped_conv(model, "split")
    """
    check_grouped_conv(grouped_conv)

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, MSConv):
            config["grouped_conv"] = grouped_conv
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone
