"""What every keras_fr application shares: input handling, argument checks, preprocessing and weights.

Each network module (``msconv_resnet``, ``iresnet``, ``lgaf_resnet``) has one builder that calls these
helpers, and thin public functions per variant that only choose depths (the ``keras.applications``
pattern). Keeping the checks here gives every model the same, clear error messages.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_fr.applications import get_model
from keras_fr.applications import registry
from keras_fr.applications import weights as weights_registry

#: Face crops are 112x112 RGB, aligned with the ArcFace 5-point template (docs/reference.md).
DEFAULT_SIZE = 112
#: Every network here downsamples by 32 (MSConv) or 16 (IResNet); below this the maps vanish.
MIN_SIZE = 32
POOLINGS = (None, "avg", "max")


def preprocess_input(x):
    """Scale RGB pixels from [0, 255] to [-1, 1], as the reference networks expect.

    ``(x / 255 - 0.5) / 0.5``, i.e. ``x / 127.5 - 1``. The caller's array is never modified.

    Args:
        x: a NumPy array, a Python nested list or a backend tensor of RGB pixel values in
            [0, 255] (uint8 or float), channels last, any leading shape.

    Returns:
        A float32 array (for NumPy/list input) or tensor (for tensor input) in [-1, 1].

    Raises:
        ValueError: for a non-empty NumPy/list input whose last axis is not 3 (RGB).

    Example:
        >>> preprocess_input(np.array([[[0, 127.5, 255]]]))
        array([[[-1.,  0.,  1.]]], dtype=float32)
    """
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        x = np.asarray(x)
        if x.size and x.shape[-1] != 3:
            raise ValueError(
                f"preprocess_input: expected RGB images with 3 channels last, got shape {x.shape}."
            )
        return (x.astype(np.float32) / np.float32(127.5)) - np.float32(1.0)
    x = ops.cast(x, "float32")
    return x / 127.5 - 1.0


#: Weights that are PyTorch buffers, not parameters: BatchNorm running statistics and the LGAF fusion's
#: feature-norm statistics.
_BUFFER_NAMES = ("moving_mean", "moving_variance", "norm_mean", "norm_std")


def count_parameters(model):
    """Count the weights that correspond to PyTorch parameters (the figure papers report).

    Every weight counts, trainable or not (IResNet's frozen ``features`` scale is a PyTorch parameter
    with ``requires_grad=False``), except buffers: BatchNorm moving mean/variance and the
    ``FeatureQualityFusion`` norm statistics. ``model.count_params()`` counts those buffers too.

    Args:
        model: a built ``keras.Model`` or layer.

    Returns:
        The number of parameters, as an int.

    Example:

    >>> count_parameters(keras_fr.applications.MSConvResNet50())
    31555201
    """
    return int(
        sum(
            int(np.prod(w.shape))
            for w in model.weights
            if w.path.rsplit("/", 1)[-1] not in _BUFFER_NAMES
        )
    )


def check_pooling(pooling, include_top=False):
    """Validate a `pooling` argument, the same way for every family.

    Args:
        pooling: `None`, `"avg"` or `"max"`.
        include_top: whether the model has its embedding head; `pooling` then must be `None`
            (the head decides how the map becomes a vector, so a pooling would be ignored: it is
            refused instead, in every family).

    Raises:
        ValueError: `pooling` is not one of `None`, `"avg"`, `"max"`, or is given with the head.
    """
    if pooling not in POOLINGS:
        raise ValueError(
            f"`pooling` must be one of None, 'avg' or 'max'; got {pooling!r}."
        )
    if include_top and pooling is not None:
        raise ValueError(
            f"`pooling` applies only with include_top=False; got pooling={pooling!r} with "
            "include_top=True."
        )


def check_builder_args(include_top, weights, pooling, embedding_size=None):
    """The checks every application builder makes before building anything.

    Args:
        include_top: must be a bool.
        weights: `None`, a preset tag or a path; a value that looks like a path (a separator, or
            ending in `.h5` / `.keras`) must exist, so a typo fails before a slow build.
        pooling: see :func:`check_pooling`.
        embedding_size: a positive integer, or `None` for a family with a fixed size.

    Raises:
        ValueError: naming the argument and what was expected.
    """
    if not isinstance(include_top, bool):
        raise ValueError(f"`include_top` must be True or False; got {include_top!r}.")
    check_pooling(pooling, include_top)
    if embedding_size is not None:
        check_embedding_size(embedding_size)
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "`weights` must be None, a preset tag or the path of a .weights.h5 / .keras file; "
            f"got {type(weights).__name__}."
        )
    path = os.fspath(weights)
    if not os.path.exists(path) and (os.sep in path or path.endswith((".h5", ".keras"))):
        raise ValueError(f"`weights` file not found: {path!r}.")


def check_blocks(blocks, argument="blocks"):
    """Validate the four per-stage block counts a family builder takes."""
    if not isinstance(blocks, (list, tuple)) or len(blocks) != 4:
        raise ValueError(f"`{argument}` must be four block counts; got {blocks!r}.")
    for count in blocks:
        check_positive_int(argument, count)


def global_pooling(x, pooling):
    """The optional pooling of a headless model, the same in every family.

    `"avg"` -> a `GlobalAveragePooling2D` named `avg_pool`, `"max"` -> a `GlobalMaxPooling2D`
    named `max_pool` (the `keras.applications` names), both computed in float32 like the embedding
    heads, so pooled features are float32 under a mixed precision policy too; `None` returns `x`.
    """
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool", dtype="float32")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool", dtype="float32")(x)
    return x


def finish_model(model_inputs, features, *, head, pooling, name, model_name, weights, full_model):
    """The last step of every builder: the head (or the pooling), the `keras.Model`, the weights.

    Args:
        model_inputs: the functional graph's inputs.
        features: the backbone's feature map.
        head: a callable mapping the feature map to the model's output(s), or `None` for a headless
            model (`include_top=False`), which is then pooled by :func:`global_pooling`.
        pooling: as given to the builder.
        name: the user's `name`, or `None` for `model_name`.
        model_name: the registry name (resolves preset tags).
        weights: as given to the builder.
        full_model: a zero-argument callable building the same network with its head at the
            default input size; used for a headless model, so a full-model weights file fills its
            backbone by layer name (see :func:`load_model_weights`).
    """
    outputs = global_pooling(features, pooling) if head is None else head(features)
    model = keras.Model(model_inputs, outputs, name=name or model_name)
    return load_model_weights(model, weights, model_name, build_full_model=full_model if head is None else None)


def check_embedding_size(embedding_size):
    """Validate an `embedding_size` argument.

    Args:
        embedding_size: The value to check; must be a positive integer (a Python
            `int` or NumPy integer, not a `bool`).

    Raises:
        ValueError: If `embedding_size` is not a positive integer.
    """
    if (
        isinstance(embedding_size, bool)
        or not isinstance(embedding_size, (int, np.integer))
        or embedding_size < 1
    ):
        raise ValueError(
            f"`embedding_size` must be a positive integer; got {embedding_size!r}."
        )


def check_positive_int(name, value):
    """Validate that an argument is a positive integer.

    Args:
        name: The argument's name, used in the error message.
        value: The value to check; must be a positive integer (a Python `int`
            or NumPy integer, not a `bool`).

    Raises:
        ValueError: If `value` is not a positive integer.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")


def _check_image_shape(shape, argument, min_size, fixed_size):
    """Check an (H, W, C) shape; ``argument`` names the user's argument in the message."""
    if len(shape) != 3:
        raise ValueError(
            f"`{argument}` must describe images of rank 3 (height, width, channels), "
            f"i.e. a batch of rank 4; got shape {tuple(shape)}."
        )
    height, width, channels = shape
    if channels != 3:
        raise ValueError(
            f"`{argument}` must have 3 channels (RGB, channels last); got {channels} in "
            f"shape {tuple(shape)}."
        )
    for dim in (height, width):
        if dim is None:
            if fixed_size is not None:
                raise ValueError(
                    f"`{argument}` must be {fixed_size}x{fixed_size} when include_top=True "
                    f"(the head flattens a fixed-size feature map); got {tuple(shape)}."
                )
            continue
        if fixed_size is not None and dim != fixed_size:
            raise ValueError(
                f"`{argument}` must be {fixed_size}x{fixed_size} when include_top=True "
                f"(the head flattens a fixed-size feature map); got {tuple(shape)}. "
                "Use include_top=False for other sizes."
            )
        if dim < min_size:
            raise ValueError(
                f"`{argument}` spatial size must be at least {min_size}x{min_size}; "
                f"got {tuple(shape)}."
            )


def obtain_input(input_tensor, input_shape, min_size=MIN_SIZE, fixed_size=None):
    """Validate ``input_tensor`` / ``input_shape`` and return ``(img_input, model_inputs)``.

    ``model_inputs`` is what the Functional model should take: the user's tensor's Keras source
    inputs when one was given, else a fresh ``keras.Input``.

    Args:
        input_tensor: optional Keras tensor of shape (N, H, W, 3) to build on.
        input_shape: optional (H, W, 3); defaults to 112x112x3.
        min_size: smallest accepted height and width.
        fixed_size: if set, height and width must equal it (a flattening head).
    """
    if input_shape is not None:
        input_shape = tuple(input_shape)
        _check_image_shape(input_shape, "input_shape", min_size, fixed_size)
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError(
                "`input_tensor` must be a Keras tensor (e.g. from keras.Input or another "
                f"layer's output); got {type(input_tensor).__name__}."
            )
        tensor_shape = tuple(input_tensor.shape)
        if len(tensor_shape) != 4:
            raise ValueError(
                "`input_tensor` must have rank 4 (batch, height, width, 3); got shape "
                f"{tensor_shape}."
            )
        _check_image_shape(tensor_shape[1:], "input_tensor", min_size, fixed_size)
        if input_shape is not None and tuple(tensor_shape[1:]) != input_shape:
            raise ValueError(
                f"`input_shape` {input_shape} does not match `input_tensor` shape "
                f"{tensor_shape[1:]}."
            )
        sources = keras.utils.get_source_inputs(input_tensor)
        return input_tensor, sources
    if input_shape is None:
        input_shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    img_input = keras.Input(shape=input_shape, name="input_image")
    return img_input, img_input


def _transfer_by_layer_name(source, target):
    """Copy weights from ``source`` to ``target`` for every target layer that owns weights.

    Used to load a full-model weights file into an ``include_top=False`` model: names are
    deterministic, so the backbone layers carry the same names in both. Every weight-owning layer of
    the target must exist in the source with the same shapes, or nothing is changed.
    """
    def pairs():
        for layer in target.layers:
            if not layer.weights:
                continue
            try:
                src_layer = source.get_layer(layer.name)
            except ValueError:
                raise ValueError(
                    f"Cannot load weights into layer {layer.name!r}: the weights file has no layer "
                    "of that name."
                ) from None
            yield layer, src_layer.get_weights()

    def mismatch(layer, values, shapes):
        return ValueError(
            f"Cannot load weights into layer {layer.name!r}: shapes "
            f"{[tuple(v.shape) for v in values]} in the file, {shapes} in the model."
        )

    set_weights_all_or_none(pairs(), mismatch)


def set_weights_all_or_none(pairs, mismatch):
    """Give each layer its arrays, but only once every pair has been read and its shapes checked.

    Args:
        pairs: an iterable of ``(layer, arrays)``, consumed in order (a generator may raise its own
            errors on the way; nothing is assigned then).
        mismatch: ``mismatch(layer, arrays, layer_shapes)`` -> the exception to raise when the
            arrays' shapes are not the layer's weight shapes.

    Raises:
        What ``pairs`` raises, or ``mismatch(...)`` for the first layer whose shapes differ; the
        model is unchanged then.
    """
    assignments = []
    for layer, arrays in pairs:
        shapes = [tuple(w.shape) for w in layer.weights]
        if [tuple(a.shape) for a in arrays] != shapes:
            raise mismatch(layer, arrays, shapes)
        assignments.append((layer, arrays))
    for layer, arrays in assignments:
        layer.set_weights(arrays)


def load_model_weights(model, weights, model_name, build_full_model=None):
    """Load ``weights`` into ``model``: ``None``, a preset tag, or a file path.

    Args:
        model: the freshly built model.
        weights: ``None`` (random initialization), a preset tag such as ``"ms1mv3"`` (resolved by
            ``keras_fr.applications.weights``), or the path of a ``.weights.h5`` / ``.keras`` file.
        model_name: the application's registry name (e.g. ``"msconv_resnet50"``), used to resolve
            tags.
        build_full_model: a zero-argument callable returning the same network with
            ``include_top=True`` at the default input size. Given when ``model`` is headless, so a
            full-model file can fill its backbone layers by name.

    Returns:
        ``model``, with the weights loaded (unchanged when ``weights`` is ``None``).

    Raises:
        ValueError: ``weights`` is not ``None``, a string or a path; a missing file (a value with
            a path separator or ending in ``.h5`` / ``.keras``; any other missing name is read as a
            preset tag); a file not ending in ``.weights.h5`` / ``.keras``; or a preset tag that
            cannot be resolved (see ``keras_fr.applications.weights.get_weights_file``).

    Example:

        model = IResNet50(weights=None)
        load_model_weights(model, "iresnet50.weights.h5", "iresnet50")
    """
    if weights is None:
        return model
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "`weights` must be None, a preset tag or the path of a .weights.h5 / .keras file; "
            f"got {type(weights).__name__}."
        )
    path = os.fspath(weights)
    if not os.path.exists(path):
        looks_like_path = os.sep in path or path.endswith((".h5", ".keras"))
        if looks_like_path:
            raise ValueError(f"`weights` file not found: {path!r}.")
        path = _resolve_tag(model_name, path)
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(
            f"`weights` file must end in .weights.h5 or .keras; got {path!r}."
        )
    check_weights_file(path)
    if build_full_model is None:
        if path.endswith(".keras"):
            source = _load_keras_file(path)
            _transfer_by_layer_name(source, model)
        else:
            _load_weights_h5(model, path, model_name)
        return model
    if path.endswith(".keras"):
        source = _load_keras_file(path)
    else:
        source = build_full_model()
        _load_weights_h5(source, path, model_name)
    _transfer_by_layer_name(source, model)
    return model


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"

#: Fingerprints of registry models built here because their record gives none.
_BUILT_FINGERPRINTS = {}


def check_weights_file(path):
    """Refuse, in one clear sentence, a weights file that is empty or not of its declared format.

    Reads the first bytes only: ``.weights.h5`` must be HDF5, ``.keras`` a zip archive.

    Args:
        path: a ``.weights.h5`` or ``.keras`` file.

    Raises:
        ValueError: naming the file: empty, or not an HDF5 file / zip archive.

    Example:

    >>> check_weights_file("random_bytes.weights.h5")  # doctest: +SKIP
    Traceback (most recent call last):
    ValueError: 'random_bytes.weights.h5' is not a readable Keras weights file (not an HDF5 file).
    """
    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path!r} is an empty file, not a Keras weights file.")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.endswith(".keras"):
        if head[:4] != _ZIP_MAGIC:
            raise ValueError(f"{path!r} is not a readable .keras model file (not a zip archive).")
    elif head != _HDF5_MAGIC:
        raise ValueError(f"{path!r} is not a readable Keras weights file (not an HDF5 file).")


def _read_h5_shapes(path):
    """Shapes of every array in a ``.weights.h5`` file (ValueError naming the file if unreadable)."""
    import h5py

    shapes = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, obj: shapes.append(tuple(obj.shape)) if isinstance(obj, h5py.Dataset) else None)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"{path!r} is not a readable Keras weights file (truncated or corrupted HDF5: {detail})."
        ) from None
    return shapes


def _fingerprint(shapes):
    return len(shapes), int(sum(int(np.prod(s)) for s in shapes))


def identify_weights(count, values):
    """The registry models whose default weights file has ``count`` arrays holding ``values`` numbers.

    Args:
        count: number of arrays in the file.
        values: total number of values in them.

    Returns:
        A sorted list of registry names (empty when nothing matches).
    """

    found = []
    for record in registry.records():
        fingerprint = record.weights_fingerprint
        if fingerprint is None:
            # Not recorded: built once per process when needed.
            if record.name not in _BUILT_FINGERPRINTS:
                try:
                    built = get_model(record.name, weights=None)
                except Exception:  # noqa: BLE001 - a model that cannot be built here cannot match
                    _BUILT_FINGERPRINTS[record.name] = None
                    continue
                _BUILT_FINGERPRINTS[record.name] = _fingerprint([tuple(w.shape) for w in built.weights])
                del built
            fingerprint = _BUILT_FINGERPRINTS[record.name]
        if fingerprint is not None and tuple(fingerprint) == (count, values):
            found.append(record.name)
    return sorted(found)


def _load_weights_h5(model, path, model_name):
    """``model.load_weights(path)`` with the file's arrays checked first: a file of another
    architecture is one ValueError naming what it holds, not a flood of Keras warnings."""
    import warnings

    file_shapes = _read_h5_shapes(path)
    model_shapes = [tuple(w.shape) for w in model.weights]
    if sorted(file_shapes) != sorted(model_shapes):
        count, values = _fingerprint(file_shapes)
        expected = _fingerprint(model_shapes)
        matches = identify_weights(count, values)
        holds = (
            f"the weights of {' or '.join(matches)}"
            if matches
            else "weights of no keras_fr model at its default settings"
        )
        raise ValueError(
            f"{path!r} holds {holds} ({count} arrays, {values:,} values), not of this "
            f"{model_name or model.name} ({expected[0]} arrays, {expected[1]:,} values)."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (ValueError, OSError, KeyError) as exc:
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"{path!r} could not be loaded into {model_name or model.name} ({detail})."
            ) from None
    if caught:
        warnings.warn(
            f"loading {path!r}: {len(caught)} warning(s), the first: {str(caught[0].message)[:200]}",
            stacklevel=3,
        )


def _load_keras_file(path):
    import zipfile

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        if isinstance(exc, zipfile.BadZipFile) or "zip" in str(exc).lower():
            raise ValueError(f"{path!r} is not a readable .keras model file (corrupted zip archive).") from None
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path!r} could not be loaded as a .keras model ({detail}).") from None


def _resolve_tag(model_name, tag):
    """Turn a preset tag into a local file path through the weights registry."""
    return weights_registry.get_weights_file(model_name, tag)


BASE_DOCSTRING = """Instantiates the {name} face recognition network.

Reference: {reference}

Input: RGB face crops aligned with the ArcFace 5-point template, scaled to [-1, 1] by
`keras_fr.applications.preprocess_input` (the model does not rescale, and does not check: 0-255
pixels given to `model(x)` / `model.predict(x)` give wrong embeddings silently; the high-level
paths, `evaluation.extract_embeddings` and the `keras-fr` commands, refuse them). Output with
`include_top=True`: an `embedding_size`-d face embedding (not normalized; L2-normalize it
before cosine comparison).

Args:
    include_top: whether to include the embedding head. With `False` the model returns the
        backbone feature map, or a vector if `pooling` is set.
    weights: `None` (random initialization), a preset tag (see
        `keras_fr.applications.list_weights()`), or the path of a `.weights.h5` / `.keras` file.
    input_tensor: optional Keras tensor (output of `keras.Input()`) to use as image input.
    input_shape: optional shape tuple `(height, width, 3)`; defaults to `(112, 112, 3)`.
{input_shape_note}
    pooling: with `include_top=False`: `None` (the 4D feature map), `"avg"` or `"max"` (global
        pooling to a 2D tensor).
    embedding_size: dimension of the embedding produced by the head (default 512).
    name: the model's name.
{extra_args}
Returns:
    A `keras.Model` instance.
"""


def check_input_range(x, preprocessed, name="images"):
    """Refuse images outside the range the next step expects (a cheap NumPy check of min and max).

    The raw Keras models trust their input: ``model(x)`` / ``model.predict(x)`` never check it (a
    check inside the graph would change every exported file and slow inference). keras_fr's
    high-level paths (``keras-fr`` commands, ``evaluation.extract_embeddings``, ``cli.embed``'s
    helpers) call this before the model sees a batch, so 0-255 pixels fed where [-1, 1] is
    expected (a forgotten ``preprocess_input``), or an already preprocessed batch preprocessed again,
    is an error instead of silently wrong embeddings.

    Args:
        x: a NumPy array of images (any shape).
        preprocessed: ``True`` if ``x`` should already be in [-1, 1] (the model's input), ``False``
            if it should be RGB pixels in [0, 255].
        name: how the message names ``x``.

    Raises:
        ValueError: non-numeric or non-finite values, or values outside the expected range.

    Example:

    >>> check_input_range(np.full((1, 112, 112, 3), 200, np.uint8), preprocessed=True)
    Traceback (most recent call last):
    ValueError: images hold values in [200, 200], not in [-1, 1]: pass RGB pixels through keras_fr.applications.preprocess_input first.
    """
    x = np.asarray(x)
    if x.size == 0:
        return
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
            or x.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric array; got dtype {x.dtype}.")
    low, high = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} hold NaN or infinite values.")
    if preprocessed:
        if low < -1.001 or high > 1.001:
            raise ValueError(
                f"{name} hold values in [{low:g}, {high:g}], not in [-1, 1]: pass RGB pixels through "
                "keras_fr.applications.preprocess_input first."
            )
    elif low < 0 or high > 255:
        hint = (" (they look already preprocessed to [-1, 1]; pass the original pixels)"
                if low >= -1.001 and high <= 1.001 else "")
        raise ValueError(f"{name} hold values in [{low:g}, {high:g}], not RGB pixels in [0, 255]{hint}.")
