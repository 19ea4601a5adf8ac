"""A pure-Python, NumPy-only reader of dlib's serialized DNN files (``.dat``), with strict accounting.

dlib writes a network by recursively serializing its C++ type: the loss layer first, then every layer
wrapper from the output towards the input, each wrapper writing its version number *before* its
sub-network and its own contents *after* it. The file therefore holds all the wrappers' version
numbers first (outermost to innermost), then the input layer, then each layer's contents from the
input to the output. The file does not name the wrappers: a tag (``tag1``) and a skip (``skip1``)
are written identically, so the reader is driven by the network's type, given as a list of layer
specs (outermost first), exactly as dlib's own ``deserialize`` is driven by the C++ type. Each layer's
contents start with a version string (``"con_6"``, ``"affine_2"``, ...) that is checked against the
spec, as are its hyper-parameters (filters, kernel, stride, padding), so a file of another network is
rejected with a message naming the file, the byte offset and the layer.

Encodings (dlib ``serialize.h``, ``float_details.h``, ``cuda/tensor.h``):

- integers: one control byte (low 4 bits: the number of bytes that follow; bit 7: negative, for
  signed types) then the magnitude, little endian. Zero is ``01 00``.
- bool: the ASCII byte ``'0'`` or ``'1'``.
- float/double: two integers, a signed 64-bit mantissa then a signed 16-bit exponent; the value is
  ``mantissa * 2**exponent`` (exponents 32000/32001/32002 mean +inf/-inf/NaN).
- string: its length (unsigned integer) then the raw bytes.
- tensor (``resizable_tensor``): version integer 2, four integers (num_samples, k, nr, nc), then
  ``n*k*nr*nc`` little-endian float32 values in that (NCHW) order.
- alias tensor (a view's shape, no data): version integer 1 and four integers.

Every tensor in the file is read and recorded (:attr:`DlibNetwork.tensors`), and reading must end
exactly at the end of the file. Nothing is executed or unpickled: the file is only parsed.

Example:

>>> net = read_dlib_dat(path)  # doctest: +SKIP
>>> [layer.kind for layer in net.layers[:4]]  # doctest: +SKIP
['con', 'affine', 'relu', 'max_pool']
"""

import dataclasses
import importlib.util
import os

import numpy as np

#: The face recognition network's file inside the PyPI package ``face_recognition_models`` (CC0).
FACE_RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: dlib's special float exponents.
_EXP_INF, _EXP_NINF, _EXP_NAN = 32000, 32001, 32002
#: Largest tensor this reader accepts (elements), against corrupt headers asking for terabytes.
_MAX_TENSOR_VALUES = 1 << 31


class DlibDatError(ValueError):
    """A file that is not (or not entirely) the dlib network it was expected to be."""


def find_face_recognition_models_file(name=FACE_RECOGNITION_MODEL_FILE):
    """Locate a model file of the ``face_recognition_models`` package without importing it.

    (Importing that package needs ``pkg_resources``; only its location is wanted here.)

    Args:
        name: the file name inside the package's ``models/`` folder.

    Returns:
        The absolute path of the file, or ``None`` when the package or the file is absent.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "models", name)
        if os.path.isfile(path):
            return path
    return None


@dataclasses.dataclass
class DlibLayer:
    """One layer of a parsed network.

    Attributes:
        kind: ``"con"``, ``"affine"``, ``"relu"``, ``"max_pool"``, ``"avg_pool"``, ``"add_prev"``,
            ``"fc"``, ``"tag"`` or ``"skip"``.
        attrs: hyper-parameters read from the file (``num_filters``, ``stride``, ``tag`` ...).
        params: named float32 arrays (``"filters"`` (out, in, kh, kw) and ``"biases"`` for ``con``;
            ``"gamma"``/``"beta"`` (C,) for ``affine``; ``"weights"`` (in, out) for ``fc``).
    """

    kind: str
    attrs: dict
    params: dict


@dataclasses.dataclass
class DlibNetwork:
    """A parsed dlib network.

    Attributes:
        path: the file read.
        input: the input layer's settings (``kind``, ``mean_rgb``, ``rows``, ``cols``).
        loss: the loss layer's settings (``kind`` and its values).
        layers: every layer from the input to the output (tags and skips included).
        tensors: ``(where, shape)`` of every tensor read, parameters and (empty) state alike.
        values_read: number of float32 values read from all tensors.
        parameter_values: number of values in the layers' parameter tensors.
    """

    path: str
    input: dict
    loss: dict
    layers: list
    tensors: list
    values_read: int
    parameter_values: int


class _Cursor:
    """Reads dlib's primitive encodings from bytes; every error names the file and the offset."""

    def __init__(self, data, path):
        self.data = data
        self.path = path
        self.pos = 0
        self.tensors = []
        self.values_read = 0

    def fail(self, message):
        raise DlibDatError(f"{self.path}: {message} (at byte {self.pos} of {len(self.data)}).")

    def take(self, count, what):
        if self.pos + count > len(self.data):
            self.fail(f"file ends inside {what}: truncated or not a dlib network file")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self, what, signed=True, max_bytes=8):
        control = self.take(1, what)[0]
        negative = bool(control & 0x80) and signed
        if not signed and control & 0x70:
            self.fail(f"bad integer control byte 0x{control:02x} for {what}")
        size = control & 0x0F if signed else control & 0x8F
        if size == 0 or size > max_bytes:
            self.fail(f"bad integer size {size} for {what} (at most {max_bytes} bytes)")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if negative else value

    def boolean(self, what):
        byte = self.take(1, what)
        if byte not in (b"0", b"1"):
            self.fail(f"expected a bool ('0' or '1') for {what}, found byte 0x{byte[0]:02x}")
        return byte == b"1"

    def real(self, what):
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            self.fail(f"{what} is in dlib's old text float format, which this reader does not read")
        mantissa = self.integer(f"{what} (mantissa)", max_bytes=8)
        exponent = self.integer(f"{what} (exponent)", max_bytes=2)
        if exponent == _EXP_INF:
            return float("inf")
        if exponent == _EXP_NINF:
            return float("-inf")
        if exponent == _EXP_NAN:
            return float("nan")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def string(self, what, max_length=256):
        length = self.integer(f"{what} (length)", signed=False)
        if length > max_length:
            self.fail(f"implausible string length {length} for {what}")
        raw = self.take(length, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            self.fail(f"{what} is not an ASCII string")

    def version(self, what, allowed):
        value = self.integer(f"{what} version", max_bytes=4)
        if value not in allowed:
            self.fail(f"unexpected {what} version {value} (expected one of {sorted(allowed)})")
        return value

    def _dims(self, what):
        dims = tuple(self.integer(f"{what} shape", max_bytes=8) for _ in range(4))
        if any(d < 0 for d in dims):
            self.fail(f"negative dimension in {what} shape {dims}")
        return dims

    def tensor(self, what):
        self.version(f"{what} tensor", {2})
        dims = self._dims(what)
        count = int(np.prod(dims, dtype=np.int64))
        if count > _MAX_TENSOR_VALUES:
            self.fail(f"implausible tensor size {dims} for {what}")
        raw = self.take(4 * count, f"the {count} float32 values of {what}")
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)
        self.tensors.append((what, dims))
        self.values_read += count
        return values

    def alias(self, what):
        self.version(f"{what} alias tensor", {1})
        return self._dims(what)


# -- Layer contents -------------------------------------------------------------------------------


def _expect(cursor, name, found, expected, where):
    if expected is not None and found != expected:
        cursor.fail(f"{where}: {name} is {found}, expected {expected}: not the expected network")


def _skip_multipliers(cursor, where):
    """Read the four training multipliers that con and fc layers store (unused for inference)."""
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        cursor.real(f"{where} {name} multiplier")


def _read_con(cursor, tag, spec, where):
    params = cursor.tensor(f"{where} params")
    num_filters = cursor.integer(f"{where} num_filters")
    nr = cursor.integer(f"{where} nr")
    nc = cursor.integer(f"{where} nc")
    stride_y = cursor.integer(f"{where} stride_y")
    stride_x = cursor.integer(f"{where} stride_x")
    padding_y = cursor.integer(f"{where} padding_y")
    padding_x = cursor.integer(f"{where} padding_x")
    filters_shape = cursor.alias(f"{where} filters")
    cursor.alias(f"{where} biases")  # read past it: the bias count follows from the filters or outputs
    _skip_multipliers(cursor, where)
    use_bias = cursor.boolean(f"{where} use_bias") if tag in ("con_5", "con_6") else True
    use_relu = cursor.boolean(f"{where} use_relu") if tag == "con_6" else False
    _expect(cursor, "num_filters", num_filters, spec.get("filters"), where)
    _expect(cursor, "kernel", (nr, nc), spec.get("kernel"), where)
    _expect(cursor, "stride", (stride_y, stride_x), spec.get("stride"), where)
    _expect(cursor, "padding", (padding_y, padding_x), spec.get("padding"), where)
    if filters_shape[0] != num_filters or filters_shape[2:] != (nr, nc):
        cursor.fail(f"{where}: filter shape {filters_shape} disagrees with {num_filters} {nr}x{nc}")
    n_filter_values = int(np.prod(filters_shape))
    n_bias = num_filters if use_bias else 0
    if params.size != n_filter_values + n_bias:
        cursor.fail(
            f"{where}: {params.size} parameter values, expected {n_filter_values} filter values"
            f" + {n_bias} biases"
        )
    flat = params.reshape(-1)
    layer_params = {"filters": flat[:n_filter_values].reshape(filters_shape)}
    if use_bias:
        layer_params["biases"] = flat[n_filter_values:]
    attrs = dict(filters=num_filters, kernel=(nr, nc), stride=(stride_y, stride_x),
                 padding=(padding_y, padding_x), use_bias=use_bias, use_relu=use_relu,
                 in_channels=filters_shape[1])
    return DlibLayer("con", attrs, layer_params)


def _read_affine(cursor, tag, spec, where):
    params = cursor.tensor(f"{where} params")
    gamma_shape = cursor.alias(f"{where} gamma")
    beta_shape = cursor.alias(f"{where} beta")
    mode = cursor.integer(f"{where} mode")
    disabled = cursor.boolean(f"{where} disabled") if tag == "affine_2" else False
    if mode != 0:
        cursor.fail(f"{where}: affine in fully connected mode ({mode}); expected convolution mode (0)")
    if gamma_shape != beta_shape or gamma_shape[0] != 1 or gamma_shape[2:] != (1, 1):
        cursor.fail(f"{where}: unexpected gamma/beta shapes {gamma_shape}, {beta_shape}")
    channels = gamma_shape[1]
    if params.size != 2 * channels:
        cursor.fail(f"{where}: {params.size} parameter values, expected 2 x {channels}")
    flat = params.reshape(-1)
    return DlibLayer("affine", {"channels": channels, "disabled": disabled},
                     {"gamma": flat[:channels], "beta": flat[channels:]})


def _read_relu(cursor, tag, spec, where):
    disabled = cursor.boolean(f"{where} disabled") if tag == "relu_2" else False
    return DlibLayer("relu", {"disabled": disabled}, {})


def _read_pool(kind):
    def reader(cursor, tag, spec, where):
        nr = cursor.integer(f"{where} nr")
        nc = cursor.integer(f"{where} nc")
        stride = (cursor.integer(f"{where} stride_y"), cursor.integer(f"{where} stride_x"))
        padding = (cursor.integer(f"{where} padding_y"), cursor.integer(f"{where} padding_x"))
        _expect(cursor, "window", (nr, nc), spec.get("window"), where)
        _expect(cursor, "stride", stride, spec.get("stride"), where)
        _expect(cursor, "padding", padding, spec.get("padding"), where)
        return DlibLayer(kind, {"window": (nr, nc), "stride": stride, "padding": padding}, {})

    return reader


def _read_add_prev(cursor, tag, spec, where):
    return DlibLayer("add_prev", {"tag": spec.get("tag")}, {})


def _read_fc(cursor, tag, spec, where):
    num_outputs = cursor.integer(f"{where} num_outputs", signed=False)
    num_inputs = cursor.integer(f"{where} num_inputs", signed=False)
    params = cursor.tensor(f"{where} params")
    weights_shape = cursor.alias(f"{where} weights")
    cursor.alias(f"{where} biases")  # read past it: the bias count follows from the filters or outputs
    bias_mode = cursor.integer(f"{where} bias mode")
    _skip_multipliers(cursor, where)
    use_bias = cursor.boolean(f"{where} use_bias") if tag == "fc_3" else True
    has_bias = bias_mode == 0 and use_bias
    _expect(cursor, "num_outputs", num_outputs, spec.get("outputs"), where)
    _expect(cursor, "bias mode", bias_mode, spec.get("bias_mode"), where)
    if weights_shape[:2] != (num_inputs, num_outputs):
        cursor.fail(f"{where}: weight shape {weights_shape} disagrees with {num_inputs}x{num_outputs}")
    n_weights = num_inputs * num_outputs
    n_bias = num_outputs if has_bias else 0
    if params.size != n_weights + n_bias:
        cursor.fail(f"{where}: {params.size} parameter values, expected {n_weights} + {n_bias}")
    flat = params.reshape(-1)
    layer_params = {"weights": flat[:n_weights].reshape(num_inputs, num_outputs)}
    if has_bias:
        layer_params["biases"] = flat[n_weights:]
    return DlibLayer("fc", {"outputs": num_outputs, "inputs": num_inputs, "use_bias": has_bias},
                     layer_params)


#: Layer kind -> (accepted version strings, reader of the contents after the string).
_LAYER_READERS = {
    "con": (("con_4", "con_5", "con_6"), _read_con),
    "affine": (("affine_", "affine_2"), _read_affine),
    "relu": (("relu_", "relu_2"), _read_relu),
    "max_pool": (("max_pool_2",), _read_pool("max_pool")),
    "avg_pool": (("avg_pool_2",), _read_pool("avg_pool")),
    "add_prev": (("add_prev_",), _read_add_prev),
    "fc": (("fc_2", "fc_3"), _read_fc),
}


def _read_layer_contents(cursor, spec, where):
    kind = spec["kind"]
    tags, reader = _LAYER_READERS[kind]
    tag = cursor.string(f"{where} version string")
    if tag not in tags:
        cursor.fail(f"{where}: found layer {tag!r}, expected a {kind} layer ({', '.join(tags)})")
    return reader(cursor, tag, spec, where)


def _read_input(cursor, spec):
    tag = cursor.string("input layer version string")
    if tag != "input_rgb_image_sized":
        cursor.fail(f"found input layer {tag!r}, expected 'input_rgb_image_sized'")
    mean = tuple(cursor.real(f"input layer mean {c}") for c in ("red", "green", "blue"))
    rows = cursor.integer("input layer rows", signed=False)
    cols = cursor.integer("input layer columns", signed=False)
    _expect(cursor, "input size", (rows, cols), spec.get("size"), "input layer")
    return {"kind": "input_rgb_image_sized", "mean_rgb": mean, "rows": rows, "cols": cols}


def _read_loss(cursor, spec):
    tag = cursor.string("loss layer version string")
    if tag == "loss_metric_2":
        return {"kind": "loss_metric", "margin": cursor.real("loss margin"),
                "distance_threshold": cursor.real("loss distance threshold")}
    if tag == "loss_metric_":
        return {"kind": "loss_metric", "margin": 0.1, "distance_threshold": 0.75}
    cursor.fail(f"found loss layer {tag!r}, expected 'loss_metric_2'")


def _read_layer_state(cursor, where, input_level, version):
    """The training state each layer wrapper stores after its contents (empty in released files)."""
    for name in ("setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        cursor.boolean(f"{where} {name}")
    cursor.tensor(f"{where} x_grad")
    cursor.tensor(f"{where} cached_output")
    if input_level:
        cursor.tensor(f"{where} grad_final")
        if version >= 3:
            cursor.integer(f"{where} sample_expansion_factor", signed=False)
    elif version >= 2:
        cursor.tensor(f"{where} params_grad")


def read_dlib_dat(path, layer_specs=None, input_spec=None):
    """Parse a dlib DNN ``.dat`` file into NumPy arrays, strictly.

    Args:
        path: the file.
        layer_specs: the network's layers from the output to the input (the C++ type read left to
            right, loss excluded), as dicts with ``kind`` (``"con"``, ``"affine"``, ``"relu"``,
            ``"max_pool"``, ``"avg_pool"``, ``"add_prev"``, ``"fc"``, ``"tag"``, ``"skip"``) and
            the values to check (``filters``, ``kernel``, ``stride``, ``padding``, ``window``,
            ``outputs``, ``bias_mode``, ``tag``). Default: dlib's face recognition ResNet v1
            (:func:`face_recognition_resnet_v1_specs`).
        input_spec: checks for the input layer (``{"size": (150, 150)}`` by default).

    Returns:
        A :class:`DlibNetwork`.

    Raises:
        FileNotFoundError: the file does not exist.
        DlibDatError: (a ``ValueError``) the file is truncated, has bytes left over, or is not the
            network described by ``layer_specs``; the message names the file and the byte offset.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dlib network file not found: {path!r}.")
    if layer_specs is None:
        layer_specs = face_recognition_resnet_v1_specs()
        input_spec = {"size": (150, 150)} if input_spec is None else input_spec
    input_spec = input_spec or {}
    with open(path, "rb") as handle:
        data = handle.read()
    cursor = _Cursor(data, path)
    cursor.version("loss layer", {1})
    loss = _read_loss(cursor, {})
    # Every wrapper's version number comes before its sub-network: read them outermost first.
    versions = []
    for depth, spec in enumerate(layer_specs):
        where = f"layer {depth} ({spec['kind']})"
        if spec["kind"] in ("tag", "skip"):
            versions.append(cursor.version(where, {1}))
        elif depth == len(layer_specs) - 1:
            versions.append(cursor.version(where, {2, 3}))
        else:
            versions.append(cursor.version(where, {1, 2}))
    if layer_specs[-1]["kind"] in ("tag", "skip"):
        cursor.fail("the innermost layer must be a computational layer on the input")
    network_input = _read_input(cursor, input_spec)
    # Then every wrapper's contents, from the input (innermost) to the output.
    layers = []
    parameter_values = 0
    for depth in range(len(layer_specs) - 1, -1, -1):
        spec = layer_specs[depth]
        where = f"layer {depth} ({spec['kind']})"
        if spec["kind"] in ("tag", "skip"):
            layers.append(DlibLayer(spec["kind"], {"tag": spec["tag"]}, {}))
            continue
        layer = _read_layer_contents(cursor, spec, where)
        parameter_values += sum(int(v.size) for v in layer.params.values())
        _read_layer_state(cursor, where, depth == len(layer_specs) - 1, versions[depth])
        layers.append(layer)
    if cursor.pos != len(data):
        cursor.fail(f"{len(data) - cursor.pos} bytes left over after the network: not the expected network")
    return DlibNetwork(path, network_input, loss, layers, cursor.tensors, cursor.values_read,
                       parameter_values)


# -- The face recognition ResNet's type -----------------------------------------------------------


def _con(filters, kernel, stride):
    # dlib's default padding: kernel // 2 at stride 1, none otherwise.
    pad = kernel // 2 if stride == 1 else 0
    return {"kind": "con", "filters": filters, "kernel": (kernel, kernel),
            "stride": (stride, stride), "padding": (pad, pad)}


def _block(filters, stride):
    # BN<con<N,3,3,1,1, relu<BN<con<N,3,3,stride,stride, SUBNET>>>>>, BN = affine; outermost first.
    return [{"kind": "affine"}, _con(filters, 3, 1), {"kind": "relu"}, {"kind": "affine"},
            _con(filters, 3, stride)]


def _ares(filters):
    # relu<add_prev1<block<N,1, tag1<SUBNET>>>>
    return ([{"kind": "relu"}, {"kind": "add_prev", "tag": 1}] + _block(filters, 1)
            + [{"kind": "tag", "tag": 1}])


def _ares_down(filters):
    # relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,2, tag1<SUBNET>>>>>>>
    return ([{"kind": "relu"}, {"kind": "add_prev", "tag": 2},
             {"kind": "avg_pool", "window": (2, 2), "stride": (2, 2), "padding": (0, 0)},
             {"kind": "skip", "tag": 1}, {"kind": "tag", "tag": 2}]
            + _block(filters, 2) + [{"kind": "tag", "tag": 1}])


def face_recognition_resnet_v1_specs():
    """The layer specs of ``dlib_face_recognition_resnet_model_v1``, outermost first.

    The network (dlib's ``dnn_face_recognition_ex.cpp``): ``fc_no_bias<128>`` <- global average
    pool <- level0 (one downsampling residual, 256) <- level1 (down + 2, 256) <- level2 (down + 2,
    128) <- level3 (down + 3, 64) <- level4 (3 residuals, 32) <- max_pool 3x3/2 <- relu <- affine
    <- con 7x7/2 (32) <- 150x150 RGB input.
    """
    specs = [{"kind": "fc", "outputs": 128, "bias_mode": 1},
             {"kind": "avg_pool", "window": (0, 0), "stride": (1, 1), "padding": (0, 0)}]
    specs += _ares_down(256)  # level0
    specs += _ares(256) + _ares(256) + _ares_down(256)  # level1
    specs += _ares(128) + _ares(128) + _ares_down(128)  # level2
    specs += _ares(64) + _ares(64) + _ares(64) + _ares_down(64)  # level3
    specs += _ares(32) + _ares(32) + _ares(32)  # level4
    specs += [{"kind": "max_pool", "window": (3, 3), "stride": (2, 2), "padding": (0, 0)},
              {"kind": "relu"}, {"kind": "affine"}, _con(32, 7, 2)]
    return specs


# -- Into a Keras model ---------------------------------------------------------------------------


def keras_weights_in_order(network):
    """The parameter arrays of ``network`` in Keras layouts, from the input to the output.

    Returns:
        A list of ``(kind, [arrays])``: ``("con", [kernel (kh, kw, in, out), bias])``,
        ``("affine", [gamma, beta])``, ``("fc", [kernel (in, out)])``. Together they hold every
        parameter value of the file once.

    Raises:
        DlibDatError: for a layer this conversion does not support (a disabled affine or relu, a
            convolution with a fused ReLU).
    """
    result = []
    for index, layer in enumerate(network.layers):
        if layer.attrs.get("disabled") or layer.attrs.get("use_relu"):
            raise DlibDatError(
                f"{network.path}: layer {index} ({layer.kind}) is disabled or fused, which the Keras "
                "port does not reproduce."
            )
        if layer.kind == "con":
            arrays = [np.transpose(layer.params["filters"], (2, 3, 1, 0))]
            if "biases" in layer.params:
                arrays.append(layer.params["biases"])
            result.append(("con", arrays))
        elif layer.kind == "affine":
            result.append(("affine", [layer.params["gamma"], layer.params["beta"]]))
        elif layer.kind == "fc":
            arrays = [layer.params["weights"]]
            if "biases" in layer.params:
                arrays.append(layer.params["biases"])
            result.append(("fc", arrays))
    return result


def fill_keras_model(model, network, kinds_of_layer):
    """Assign a parsed network's parameters to the weight-owning layers of a Keras model, in order.

    Args:
        model: the Keras model (its weight-owning layers in the same input-to-output order).
        network: a :class:`DlibNetwork`.
        kinds_of_layer: callable mapping a Keras layer to ``"con"``, ``"affine"`` or ``"fc"``.

    Returns:
        The number of values assigned; equal to ``network.parameter_values`` on success.

    Raises:
        DlibDatError: when the layer kinds, counts or shapes differ (nothing is assigned then).
    """
    source = keras_weights_in_order(network)
    targets = [layer for layer in model.layers if layer.weights]
    if len(source) != len(targets):
        raise DlibDatError(
            f"{network.path}: {len(source)} weighted layers in the file, {len(targets)} in the model."
        )
    from keras_fr.applications.common import set_weights_all_or_none  # Keras only when filling

    def pairs():
        for (kind, arrays), layer in zip(source, targets):
            if kinds_of_layer(layer) != kind:
                raise DlibDatError(f"{network.path}: a {kind} layer meets Keras layer {layer.name!r}.")
            yield layer, arrays

    def mismatch(layer, arrays, shapes):
        return DlibDatError(
            f"{network.path}: {kinds_of_layer(layer)} shapes {[a.shape for a in arrays]} do not fit "
            f"Keras layer {layer.name!r} {shapes}."
        )

    set_weights_all_or_none(pairs(), mismatch)
    return sum(int(a.size) for _, arrays in source for a in arrays)
