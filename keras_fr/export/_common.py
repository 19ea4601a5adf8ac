"""What the TFLite and ONNX exporters share: argument checks, the report, input data and verification.

Every export follows one recipe: convert into a temporary file in the destination folder, run that file
on a batch of face-like inputs, compare with the Keras model, and only then move it into place with
``os.replace`` (``keras_fr._atomic.atomic_path``: the temporary file is removed on any error, SIGINT or
SIGTERM, and the result gets the umask's permissions). A file that fails the comparison is deleted and
the error carries the measured numbers.
"""

import contextlib
import dataclasses
import os
import sys

import numpy as np

from keras_fr._atomic import check_writable_output
from keras_fr.evaluation.pairs import read_pairs

#: Parity bars per quantization mode: (max |diff| / output scale, min per-sample cosine).
#: ``None`` means "no bar on that number" (quantized files are judged by cosine only).
THRESHOLDS = {
    None: (1e-4, 0.99999),
    "float16": (None, 0.999),
    "dynamic": (None, 0.98),
    "int8": (None, 0.98),
}
QUANTIZE_MODES = tuple(THRESHOLDS)
GROUPED_CONV_MODES = ("auto", "native", "split")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ExportVerificationError(RuntimeError):
    """An exported file did not reproduce the Keras model; the file was removed.

    Attributes:
        report: the `ExportReport` with the measured numbers (its `path` no longer exists).
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class ExportReport:
    """What an export produced and how closely the file reproduces the Keras model.

    Attributes:
        path: the exported file.
        format: `"tflite"` or `"onnx"`.
        quantize: `None`, `"float16"`, `"dynamic"` or `"int8"` (TFLite only).
        size_bytes: file size.
        input_shape: the file's input shape, `None` for the dynamic batch dimension.
        output_shape: the file's output shape.
        ops: sorted operator names used by the file (TFLite builtin codes or ONNX op types).
        grouped_conv: how grouped convolutions were exported: `"native"` (one grouped convolution),
            `"split"` (per-group convolutions + concatenation) or `None` (the model has none).
        verified: whether the file was run and compared with Keras.
        num_samples: how many inputs the comparison used.
        max_abs_diff: largest absolute difference between file and Keras outputs.
        output_scale: largest absolute Keras output value (the scale `max_rel_diff` divides by).
        max_rel_diff: `max_abs_diff / output_scale`.
        min_cosine: smallest per-sample cosine similarity between file and Keras outputs.
        details: free-form notes (e.g. how int8 quantization was configured).
    """

    path: str
    format: str
    quantize: object = None
    size_bytes: int = 0
    input_shape: tuple = ()
    output_shape: tuple = ()
    ops: tuple = ()
    grouped_conv: object = None
    verified: bool = False
    num_samples: int = 0
    max_abs_diff: float = float("nan")
    output_scale: float = float("nan")
    max_rel_diff: float = float("nan")
    min_cosine: float = float("nan")
    details: str = ""

    def to_dict(self):
        """Return the report as a JSON-friendly dict."""
        out = dataclasses.asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["output_shape"] = list(self.output_shape)
        out["ops"] = list(self.ops)
        return out


def file_report(path, tmp, export_format, io_shapes, ops, quantize=None, grouped_conv=None,
                details=""):
    """The (not yet verified) ``ExportReport`` of the converted file ``tmp``, to be kept at ``path``.

    ``io_shapes`` is the file's ``(input_shape, output_shape)``; the size is read from ``tmp``.
    """
    input_shape, output_shape = io_shapes
    return ExportReport(
        path=path,
        format=export_format,
        quantize=quantize,
        size_bytes=os.path.getsize(tmp),
        input_shape=input_shape,
        output_shape=output_shape,
        ops=ops,
        grouped_conv=grouped_conv,
        details=details,
    )


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------


def check_model(model, fn_name):
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"{fn_name}: `model` must be a keras.Model; got {type(model).__name__}.")
    if len(model.inputs) != 1:
        raise ValueError(
            f"{fn_name}: `model` must have exactly one input (an image batch); it has "
            f"{len(model.inputs)}."
        )
    if len(model.outputs) != 1:
        raise ValueError(
            f"{fn_name}: `model` must have exactly one output (the embedding); it has "
            f"{len(model.outputs)}. For LGAF networks build them with return_branches=False."
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"{fn_name}: `model` input must be an image batch (N, H, W, 3), channels last; got "
            f"{shape}."
        )
    if model.inputs[0].dtype != "float32" or model.outputs[0].dtype != "float32":
        raise ValueError(
            f"{fn_name}: `model` must compute in float32 (input {model.inputs[0].dtype}, output "
            f"{model.outputs[0].dtype}); rebuild it under the 'float32' dtype policy."
        )


def check_path(path, suffix, fn_name):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{fn_name}: `path` must be a file path; got {type(path).__name__}.")
    path = os.path.abspath(os.fspath(path))
    if not path.endswith(suffix):
        raise ValueError(f"{fn_name}: `path` must end with {suffix!r}; got {path!r}.")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{fn_name}: the folder of `path` does not exist: {folder!r}.")
    if os.path.isdir(path):
        raise ValueError(f"{fn_name}: `path` is a folder, expected a file: {path!r}.")

    check_writable_output(path, f"{fn_name}: `path`")  # before any conversion work
    return path


def check_choice(value, name, choices, fn_name):
    if value not in choices:
        raise ValueError(
            f"{fn_name}: `{name}` must be one of {', '.join(repr(c) for c in choices)}; got {value!r}."
        )


@contextlib.contextmanager
def stdout_to_stderr():
    """Send what converters print on file descriptor 1 (C++ code included) to stderr meanwhile, so
    a caller's stdout (e.g. ``keras-fr export --json``) stays clean."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        os.dup2(sys.stderr.fileno() if hasattr(sys.stderr, "fileno") else 2, fd)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)


def remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------------
# Input data: synthetic faces, image folders, pairs sources, arrays
# --------------------------------------------------------------------------------------------------


def synthetic_faces(num_images, size=112, seed=0):
    """Generate smooth, face-like RGB images (uint8) for export checks when no real faces are at hand.

    Each image has a lit background gradient, a skin-toned oval face with shading, hair, eyes,
    eyebrows, a nose shadow and a mouth, at slightly varied positions, colors and lighting, plus mild
    sensor noise: statistics closer to aligned face crops than uniform noise, which matters for
    quantization calibration and for parity checks that exercise realistic activation ranges.

    Args:
        num_images: how many images.
        size: an int (square) or a `(height, width)` pair.
        seed: random seed; the same seed gives the same images.

    Returns:
        A uint8 array of shape `(num_images, height, width, 3)` in [0, 255].

    Example:

    ```python
    images = synthetic_faces(8)
    x = keras_fr.applications.preprocess_input(images)
    ```
    """
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
    else:
        height, width = (int(s) for s in size)
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"`num_images` must be a positive integer; got {num_images!r}.")
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(
        np.linspace(-1.0, 1.0, height, dtype=np.float32),
        np.linspace(-1.0, 1.0, width, dtype=np.float32),
        indexing="ij",
    )
    images = np.empty((num_images, height, width, 3), np.float32)

    def blob(cx, cy, rx, ry):
        d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        return 0.5 * (1.0 - np.tanh(4.0 * (d - 1.0)))  # soft-edged ellipse (a logistic in d)

    for i in range(num_images):
        bg = rng.uniform(40, 200, 3)
        grad = rng.uniform(-40, 40, 3)
        img = bg + grad * (0.5 * (xx + yy))[..., None]
        skin = np.array([rng.uniform(150, 235), rng.uniform(100, 180), rng.uniform(70, 150)])
        cx, cy = rng.normal(0, 0.04), rng.normal(0.05, 0.04)
        face = blob(cx, cy, rng.uniform(0.55, 0.7), rng.uniform(0.75, 0.9))[..., None]
        light = 1.0 + rng.uniform(-0.25, 0.25) * (xx - cx)[..., None]
        img = img * (1 - face) + skin * light * face
        hair = blob(cx, cy - 0.75, 0.75, 0.35)[..., None] * (1 - blob(cx, cy + 0.1, 0.6, 0.7))[..., None]
        img = img * (1 - hair) + rng.uniform(10, 90) * hair
        eye_dy = rng.normal(-0.12, 0.03)
        for side in (-1, 1):
            ex = cx + side * rng.uniform(0.25, 0.32)
            white = blob(ex, cy + eye_dy, 0.11, 0.05)[..., None]
            img = img * (1 - white) + 230 * white
            iris = blob(ex, cy + eye_dy, 0.05, 0.05)[..., None]
            img = img * (1 - iris) + rng.uniform(20, 90, 3) * iris
            brow = blob(ex, cy + eye_dy - 0.14, 0.14, 0.03)[..., None]
            img = img * (1 - 0.8 * brow) + rng.uniform(20, 70) * 0.8 * brow
        nose = blob(cx, cy + 0.12, 0.06, 0.16)[..., None]
        img = img * (1 - 0.25 * nose)
        mouth = blob(cx, cy + rng.uniform(0.38, 0.46), rng.uniform(0.15, 0.22), 0.05)[..., None]
        img = img * (1 - mouth) + np.array([rng.uniform(120, 190), 50, 60]) * mouth
        img += rng.normal(0, 3.0, img.shape)
        images[i] = img
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _preprocess(images):
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _image_files(folder):
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS))
    return files


def _load_images(paths, height, width):
    from PIL import Image

    out = np.empty((len(paths), height, width, 3), np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (width, height):
                im = im.resize((width, height), Image.BILINEAR)
            out[i] = np.asarray(im)
    return out


def _spread(items, count):
    """``count`` items spread evenly over ``items`` (many identities rather than the first few)."""
    if len(items) <= count:
        return list(items)
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in idx]


def _as_model_input(array, height, width, what):
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"{what} must be images of shape (N, H, W, 3); got shape {array.shape}.")
    if (height is not None and array.shape[1] != height) or (width is not None and array.shape[2] != width):
        raise ValueError(
            f"{what} images must be {height}x{width} to match the model input; got {array.shape[1:3]}."
        )
    if array.dtype == np.uint8:
        return _preprocess(array)
    array = array.astype(np.float32)
    if array.size and (np.nanmax(array) > 1.5 or np.nanmin(array) < -1.5):
        raise ValueError(
            f"{what} float images must be preprocessed to [-1, 1] (keras_fr.applications."
            "preprocess_input); pass raw pixels as uint8."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or Inf.")
    return array


def load_samples(source, count, height, width, what="representative_data"):
    """Up to ``count`` preprocessed float32 inputs (N, H, W, 3) from an image source.

    ``source`` is a folder of images (searched recursively), a pairs file (``.csv``, ``.txt``,
    ``.bin``, read with ``keras_fr.evaluation.read_pairs``), a NumPy array of images (uint8 pixels,
    or float32 already in [-1, 1]), or an iterable of such arrays (single images or batches).
    """
    if source is None:
        raise ValueError(f"`{what}` is required here.")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"`{what}`: no such file or folder: {path!r}.")
        if os.path.isdir(path):
            files = _image_files(path)
            if not files:
                raise ValueError(
                    f"`{what}`: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {path!r}."
                )
            return _preprocess(_load_images(_spread(files, count), height, width))
        return _samples_from_pairs(path, count, height, width, what)
    if isinstance(source, np.ndarray):
        return _as_model_input(source, height, width, f"`{what}`")[:count]
    if hasattr(source, "__iter__") and not isinstance(source, (bytes, dict)):
        chunks, total = [], 0
        for item in source:
            if isinstance(item, (list, tuple)) and len(item) >= 1 and not np.isscalar(item[0]):
                item = item[0]  # (images, labels) batches
            chunk = _as_model_input(item, height, width, f"`{what}` items")
            chunks.append(chunk)
            total += len(chunk)
            if total >= count:
                break
        if not chunks:
            raise ValueError(f"`{what}` yielded no images.")
        return np.concatenate(chunks)[:count]
    raise ValueError(
        f"`{what}` must be an image folder, a pairs file, an array of images or an iterable of "
        f"arrays; got {type(source).__name__}."
    )


def _samples_from_pairs(path, count, height, width, what):
    pairs = read_pairs(path)
    images = getattr(pairs, "images", None)
    if images is None or len(images) == 0:
        raise ValueError(f"`{what}`: the pairs source {path!r} gave no images.")
    idx = _spread(list(range(len(images))), count)
    if isinstance(images, np.ndarray):
        return _as_model_input(images[idx], height, width, f"`{what}`")
    batch = np.asarray(images.load_batch(idx, image_size=(height, width)))
    return _as_model_input(batch.astype(np.uint8), height, width, f"`{what}`")


# --------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------


def compare(reference, actual):
    """Return (max_abs_diff, output_scale, max_rel_diff, min_cosine) between two output batches."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(actual, np.float64).reshape(len(actual), -1)
    if ref.shape != out.shape:
        raise ExportVerificationError(
            f"the exported file returns shape {np.shape(actual)}, Keras {np.shape(reference)}."
        )
    if not np.all(np.isfinite(out)):
        return float("inf"), float(np.max(np.abs(ref))), float("inf"), float("nan")
    max_abs = float(np.max(np.abs(ref - out)))
    scale = float(np.max(np.abs(ref)))
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.sum(ref * out, axis=1) / np.maximum(denom, 1e-30)
    cos = np.where((denom == 0) & np.all(ref == out, axis=1), 1.0, cos)
    return max_abs, scale, rel, float(np.min(cos))


def check_against_bars(report, quantize):
    """Return a failure message when the report misses its quantization mode's bars, else ""."""
    rel_bar, cos_bar = THRESHOLDS[quantize]
    problems = []
    if not np.isfinite(report.max_abs_diff):
        problems.append("the file's outputs contain NaN or Inf")
    if rel_bar is not None and not report.max_rel_diff <= rel_bar:
        problems.append(
            f"max |diff| {report.max_abs_diff:.3g} is {report.max_rel_diff:.3g} of the output scale "
            f"{report.output_scale:.3g} (bar {rel_bar:g})"
        )
    if not report.min_cosine >= cos_bar:
        problems.append(f"min per-sample cosine {report.min_cosine:.7f} (bar {cos_bar:g})")
    return "; ".join(problems)


def record_comparison(report, reference, actual, quantize, batch_gap, gap_tolerance):
    """Fill ``report``'s comparison of the file's outputs ``actual`` with the Keras ``reference``,
    mark it verified, and return what is wrong ("" if nothing).

    The problems are the bars of ``quantize`` (``check_against_bars``) and, unless ``gap_tolerance``
    is None, a ``batch_gap`` (how far the file's output for the first input alone is from its row in
    the batch) above ``gap_tolerance`` times the output scale (or above 1e-6).
    """
    report.max_abs_diff, report.output_scale, report.max_rel_diff, report.min_cosine = compare(
        reference, actual
    )
    report.num_samples = len(reference)
    report.verified = True
    problems = check_against_bars(report, quantize)
    if gap_tolerance is not None and not batch_gap <= max(gap_tolerance * report.output_scale, 1e-6):
        gap_note = f"batch 1 differs from batch {len(reference)} by {batch_gap:.3g}"
        problems = "; ".join(filter(None, [problems, gap_note]))
    return problems


def keras_reference(model, x, batch_size=16):
    """The Keras model's outputs on ``x``, by eager calls in inference mode: for the one check an
    export runs, an eager call is faster than tracing a predict function (MSConvResNet26 at 32x32,
    4 images: 2.8 s against 10.3 s)."""
    return np.concatenate(
        [np.asarray(model(x[i : i + batch_size], training=False), np.float32) for i in range(0, len(x), batch_size)]
    )


def verification_inputs(model, verification_data, num_samples, seed=1234):
    """Preprocessed inputs for the self-check: the user's data, else synthetic faces."""
    _, height, width, _ = tuple(model.inputs[0].shape)
    if verification_data is not None:
        return load_samples(verification_data, num_samples, height, width, "verification_data")
    return _preprocess(synthetic_faces(num_samples, (height or 112, width or 112), seed=seed))
