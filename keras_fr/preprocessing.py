"""From a photo to the network's input: image loading and 5-point face alignment.

Every keras_fr network expects a 112x112 RGB face crop aligned with the standard ArcFace 5-point
template (eye centers, nose tip and mouth corners at fixed positions). This module turns an arbitrary
image file into RGB ``uint8`` (:func:`load_image`) and a photo plus five landmarks into that crop
(:func:`align_face`), by the least-squares similarity transform of Umeyama (1991) and a bilinear
warp. The landmarks themselves come from any face detector (RetinaFace, MTCNN, dlib, ...);
:func:`read_landmarks` reads them from a small file (format below), which is what
``keras-fr embed --landmarks`` and ``keras-fr verify --landmarks`` use.

Landmarks file formats (:func:`read_landmarks`):

- JSON: an object mapping an image path to its five points,
  ``{"photos/a.jpg": [[x, y], [x, y], [x, y], [x, y], [x, y]], ...}``, or to the ten numbers
  ``[x1, y1, ..., x5, y5]``.
- Text: one image per line, the path followed by ten numbers ``x1 y1 x2 y2 ... x5 y5``, separated by
  spaces, tabs or commas; blank lines and lines starting with ``#`` are ignored. Paths containing
  spaces are fine (the last ten fields are the numbers).

In both, the points are in pixel coordinates of the image as :func:`load_image` returns it (after
the EXIF rotation), ``x`` to the right and ``y`` down, integer coordinates at pixel centers (the
OpenCV / insightface convention), in the order left eye, right eye, nose tip, left mouth corner,
right mouth corner ("left" = the image's left side).
"""

import json
import os
import re

import numpy as np

#: The ArcFace 5-point template for 112x112 crops: (x, y) of the left eye, right eye, nose tip,
#: left mouth corner and right mouth corner (pixel centers at integer coordinates).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: The size the template above is defined for.
TEMPLATE_SIZE = 112

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _pil():
    from PIL import Image, ImageOps

    return Image, ImageOps


def load_image(path):
    """Read an image file as an RGB `uint8` array of shape `(height, width, 3)`.

    The EXIF orientation tag is applied (a portrait photo taken with a rotated phone comes out
    upright), and every pixel format Pillow reads is converted to 8-bit RGB: grayscale (`L`, `1`)
    is replicated to three channels; 16-bit and 32-bit integer grayscale (`I;16`, `I`) is scaled
    from [0, 65535] to [0, 255]; float grayscale (`F`) is read as [0, 1] when its maximum is at most
    1, else as [0, 255]; images with transparency (`RGBA`, `LA`, `P` with a transparent color) are
    composited onto a white background; `CMYK` and `YCbCr` are converted by Pillow.

    Args:
        path: path of an image file (JPEG, PNG, BMP, GIF, TIFF, WebP, ... anything Pillow reads).

    Returns:
        A `numpy.ndarray` of dtype `uint8` and shape `(height, width, 3)`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `path` is a folder or a file that cannot be decoded as an image; the message
            names the file.

    Example:

    >>> image = load_image("photo.jpg")  # doctest: +SKIP
    >>> image.shape, image.dtype  # doctest: +SKIP
    ((480, 640, 3), dtype('uint8'))
    """
    Image, ImageOps = _pil()
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"load_image: `path` must be a file path; got {type(path).__name__}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_image: image file not found: {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"load_image: {path!r} is a folder, not an image file.")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb_uint8(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        raise ValueError(f"load_image: cannot read {path!r} as an image ({reason}).") from None


def _to_rgb_uint8(image):
    """Convert a loaded Pillow image of any mode to an RGB uint8 array (see load_image)."""
    Image, _ = _pil()
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        finite_max = np.nanmax(values) if values.size else 0.0
        if finite_max <= 1.0:
            values = values * 255.0
        gray = np.clip(np.round(np.nan_to_num(values)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def arcface_template(image_size=TEMPLATE_SIZE):
    """The five ArcFace template points for a square crop of `image_size` pixels.

    For multiples of 112 the 112x112 template is scaled; for other sizes (e.g. 128) it is scaled
    by `image_size / 128` and shifted right by `8 * image_size / 128` pixels, the convention of
    insightface's `norm_crop` (the face keeps its relative size, with a margin).

    Args:
        image_size: side of the square output crop in pixels (a positive integer).

    Returns:
        A float64 array of shape `(5, 2)`: (x, y) of the left eye, right eye, nose tip, left mouth
        corner and right mouth corner.

    Raises:
        ValueError: if `image_size` is not a positive integer.

    Example:

    >>> arcface_template(112)[0]
    array([38.2946, 51.6963])
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"`image_size` must be a positive integer; got {image_size!r}.")
    if image_size % TEMPLATE_SIZE == 0:
        return ARCFACE_TEMPLATE * (image_size / TEMPLATE_SIZE)
    ratio = image_size / 128.0
    template = ARCFACE_TEMPLATE * ratio
    template[:, 0] += 8.0 * ratio
    return template


def _check_points(points, argument):
    """Return ``points`` as a float64 (K, 2) array, or raise a ValueError naming ``argument``."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{argument}` must be numbers of shape (5, 2) (x, y per landmark); could not read "
            f"{type(points).__name__} as numbers."
        ) from None
    if array.shape == (10,):
        array = array.reshape(5, 2)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 2:
        raise ValueError(
            f"`{argument}` must have shape (5, 2) (x, y of left eye, right eye, nose tip, left "
            f"and right mouth corners) or (10,); got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{argument}` must be finite numbers; got {array.tolist()}.")
    return array


def _check_rgb(image):
    """Return ``image`` as an (H, W, 3) array, or raise a ValueError."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"`image` must be an RGB array of shape (height, width, 3); got shape {image.shape}."
        )
    return image


def estimate_similarity_transform(src, dst):
    """Least-squares similarity transform mapping points `src` onto points `dst` (Umeyama, 1991).

    Finds the rotation `R`, uniform scale `s` and translation `t` minimizing
    `sum_i || dst_i - (s * R @ src_i + t) ||^2`, without reflection, in closed form from the SVD of
    the points' cross-covariance.

    Args:
        src: array-like of shape `(K, 2)`, K >= 2, the source points (x, y).
        dst: array-like of shape `(K, 2)`, the target points, in the same order.

    Returns:
        A float64 array of shape `(2, 3)`, `[s * R | t]`: a source point `p` maps to
        `M[:, :2] @ p + M[:, 2]`.

    Raises:
        ValueError: if the shapes are wrong or differ, or the source points are all identical.

    Example:

    >>> src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> estimate_similarity_transform(src, 2 * src + 3).round(6)
    array([[2., 0., 3.],
           [0., 2., 3.]])
    """
    src = _check_points(src, "src")
    dst = _check_points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(
            f"`src` and `dst` must have the same shape; got {src.shape} and {dst.shape}."
        )
    n = src.shape[0]
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = (src_c**2).sum() / n
    if src_var <= 1e-12:
        raise ValueError("`src` points are all identical; a similarity transform is undefined.")
    covariance = dst_c.T @ src_c / n
    u, d, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0  # no reflection: flip the weakest direction
    rotation = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / src_var)
    translation = dst_mean - scale * rotation @ src_mean
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = translation
    return matrix


def warp_affine(image, matrix, output_size):
    """Warp `image` by the 2x3 affine `matrix` (input pixel -> output pixel), bilinear.

    Output pixel `(u, v)` takes the input value at `inverse(matrix) @ (u, v, 1)`, interpolated
    bilinearly; points outside the image are black. Integer coordinates are pixel centers (the
    OpenCV `warpAffine` convention). Uses Pillow's `Image.transform` per channel in float32
    (exact bilinear weights; `uint8` results are rounded to nearest).

    Args:
        image: `uint8` or float array of shape `(H, W, 3)` or `(H, W)`.
        matrix: array-like `(2, 3)`, the forward map from input to output pixel coordinates.
        output_size: `(width, height)` of the output, or one integer for a square.

    Returns:
        An array of the input's dtype and of shape `(height, width, 3)` (or `(height, width)`).

    Raises:
        ValueError: if `matrix` is not an invertible 2x3 matrix, or `image` has a bad shape.

    Example:

    >>> image = np.arange(16, dtype=np.float32).reshape(4, 4)
    >>> shift_left = [[1, 0, -1], [0, 1, 0]]  # output (u, v) = input (u + 1, v)
    >>> warp_affine(image, shift_left, 4)[0]
    array([1., 2., 3., 0.], dtype=float32)
    """
    Image, _ = _pil()
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"`matrix` must be a finite 2x3 affine matrix; got shape {matrix.shape}.")
    linear = matrix[:, :2]
    if abs(np.linalg.det(linear)) < 1e-12:
        raise ValueError("`matrix` is not invertible (the landmarks are degenerate).")
    if isinstance(output_size, (int, np.integer)):
        output_size = (int(output_size), int(output_size))
    width, height = (int(s) for s in output_size)
    inverse = np.linalg.inv(linear)
    offset = -inverse @ matrix[:, 2]
    # Pillow samples output pixel (u, v) at the continuous point (u + 0.5, v + 0.5) and reads input
    # pixel centers at +0.5 too; shift so that integer coordinates are pixel centers on both sides.
    offset = offset + 0.5 - inverse @ np.array([0.5, 0.5])
    coefficients = (
        inverse[0, 0], inverse[0, 1], offset[0],
        inverse[1, 0], inverse[1, 1], offset[1],
    )
    image = np.asarray(image)
    if image.ndim == 2:
        channels = [image]
    elif image.ndim == 3:
        channels = [image[:, :, c] for c in range(image.shape[2])]
    else:
        raise ValueError(f"`image` must have shape (H, W, 3) or (H, W); got {image.shape}.")
    outputs = []
    for channel in channels:
        plane = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), mode="F")
        warped = plane.transform(
            (width, height), Image.Transform.AFFINE, coefficients,
            resample=Image.Resampling.BILINEAR, fillcolor=0.0,
        )
        outputs.append(np.asarray(warped, dtype=np.float32))
    result = outputs[0] if image.ndim == 2 else np.stack(outputs, axis=-1)
    if image.dtype == np.uint8:
        result = np.clip(np.round(result), 0, 255)
    return result.astype(image.dtype)


def align_face(image, landmarks, image_size=TEMPLATE_SIZE):
    """Crop and align a face to the ArcFace 5-point template.

    Estimates the similarity transform (rotation, uniform scale, translation) that best maps the
    five `landmarks` onto the template points (least squares,
    :func:`estimate_similarity_transform`), then warps the image with it, bilinearly. This is the
    alignment the ArcFace, MSConv and LGAF models were trained with; feeding unaligned crops costs
    a lot of accuracy.

    Args:
        image: RGB image, `uint8` array of shape `(H, W, 3)` (e.g. from :func:`load_image`); float
            arrays are warped in float and keep their dtype.
        landmarks: array-like of shape `(5, 2)` (or ten numbers): pixel (x, y) of the left eye,
            right eye, nose tip, left mouth corner and right mouth corner, integer coordinates at
            pixel centers.
        image_size: side of the square output crop (default 112, the models' input size).

    Returns:
        The aligned crop, shape `(image_size, image_size, 3)`, same dtype as `image` (`uint8` for
        `uint8` input). Areas outside the photo are black.

    Raises:
        ValueError: if `image` is not an `(H, W, 3)` array, `landmarks` is not five finite (x, y)
            points, or the points are degenerate.

    Example:

    >>> from keras_fr.preprocessing import load_image, align_face
    >>> photo = load_image("photo.jpg")  # doctest: +SKIP
    >>> points = [[191, 240], [265, 238], [228, 282], [198, 322], [260, 320]]
    >>> crop = align_face(photo, points)  # doctest: +SKIP
    >>> crop.shape  # doctest: +SKIP
    (112, 112, 3)
    """
    image = _check_rgb(image)
    points = _check_points(landmarks, "landmarks")
    if points.shape != (5, 2):
        raise ValueError(
            "`landmarks` must have shape (5, 2) (left eye, right eye, nose tip, left and right "
            f"mouth corners); got shape {points.shape}."
        )
    template = arcface_template(image_size)
    if (points.max(axis=0) - points.min(axis=0)).max() < 1e-6:
        raise ValueError("`landmarks` are all the same point; cannot align a face.")
    matrix = estimate_similarity_transform(points, template)
    return warp_affine(image, matrix, (image_size, image_size))


def read_landmarks(path):
    """Read a landmarks file: image path -> five (x, y) points.

    Two formats (see the module documentation): JSON, an object
    `{"image path": [[x, y] * 5] or [x1, y1, ..., x5, y5]}`; or text, one line per image,
    `path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5` (spaces, tabs or commas; `#` comments and blank lines
    skipped). The format is chosen by the `.json` suffix, or by content (a file starting with `{`).

    Args:
        path: the landmarks file.

    Returns:
        A dict mapping each image path (as written in the file) to a float64 array of shape
        `(5, 2)`.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if an entry is malformed; the message names the file and the entry (line number
            or key).

    Example:

    >>> marks = read_landmarks("landmarks.txt")  # doctest: +SKIP
    >>> marks["photos/a.jpg"].shape  # doctest: +SKIP
    (5, 2)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_landmarks: landmarks file not found: {path!r}.")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"read_landmarks: cannot read {path!r} as text ({exc}).") from None
    if path.lower().endswith(".json") or text.lstrip().startswith("{"):
        return _parse_landmarks_json(text, path)
    return _parse_landmarks_text(text, path)


def _as_five_points(values, path, where):
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"read_landmarks: {path!r}, {where}: expected ten numbers (five x, y points)."
        ) from None
    if array.size != 10 or array.shape not in ((10,), (5, 2)):
        raise ValueError(
            f"read_landmarks: {path!r}, {where}: expected five (x, y) points, got shape "
            f"{array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"read_landmarks: {path!r}, {where}: landmarks must be finite numbers.")
    return array.reshape(5, 2)


def _parse_landmarks_json(text, path):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"read_landmarks: {path!r} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"read_landmarks: {path!r}: expected a non-empty JSON object "
            '{"image path": [[x, y], ...five points]}.'
        )
    return {str(key): _as_five_points(value, path, f"entry {key!r}") for key, value in data.items()}


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TEXT_LINE = re.compile(rf"^(.+?)((?:[\s,]+{_NUMBER}){{10}})[\s,]*$")


def _parse_landmarks_text(text, path):
    result = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _TEXT_LINE.match(stripped)
        if match is None:
            fields = stripped.replace(",", " ").split()
            raise ValueError(
                f"read_landmarks: {path!r}, line {number}: expected an image path and ten numbers "
                f"(x1 y1 ... x5 y5); got {len(fields)} fields."
            )
        name = match.group(1).strip().rstrip(",").strip()
        fields = match.group(2).replace(",", " ").split()
        result[name] = _as_five_points(fields[-10:], path, f"line {number}")
    if not result:
        raise ValueError(f"read_landmarks: {path!r} holds no landmarks.")
    return result


def find_landmarks(landmarks, image_path, landmarks_file=None):
    """Find the five points for `image_path` in a dict from :func:`read_landmarks`.

    Keys are matched, in order: the path exactly as given; the path relative to the landmarks file's
    folder (so a file next to the images can use relative names); the same absolute path; and the
    file name alone when only one key has that name.

    Args:
        landmarks: dict from :func:`read_landmarks`.
        image_path: the image whose landmarks are wanted.
        landmarks_file: the landmarks file's path, for relative keys (optional).

    Returns:
        A `(5, 2)` array, or `None` if the image has no entry.

    Example:

    >>> marks = {"photos/a.jpg": np.zeros((5, 2))}
    >>> find_landmarks(marks, "/elsewhere/a.jpg").shape   # matched by its unique file name
    (5, 2)
    >>> find_landmarks(marks, "b.jpg") is None
    True
    """
    image_path = os.fspath(image_path)
    if image_path in landmarks:
        return landmarks[image_path]
    target = os.path.abspath(image_path)
    base = os.path.dirname(os.path.abspath(landmarks_file)) if landmarks_file else os.getcwd()
    for key, value in landmarks.items():
        if os.path.abspath(os.path.join(base, key)) == target or os.path.abspath(key) == target:
            return value
    name = os.path.basename(image_path)
    matches = [value for key, value in landmarks.items() if os.path.basename(key) == name]
    if len(matches) == 1:
        return matches[0]
    return None


def load_face(path, landmarks=None, image_size=TEMPLATE_SIZE):
    """Load a face image ready for a keras_fr model: aligned, `image_size` square, RGB `uint8`.

    With `landmarks`, the photo is aligned with :func:`align_face`. Without them, the file must
    already be an aligned crop of `image_size` x `image_size` pixels (as in LFW/CelebA aligned sets
    and insightface's `.bin` files); any other size is an error rather than a silent resize, because
    an unaligned face gives a meaningless embedding.

    Args:
        path: the image file.
        landmarks: optional five (x, y) points in the photo (see :func:`align_face`).
        image_size: side of the crop the model takes (default 112).

    Returns:
        A `uint8` array of shape `(image_size, image_size, 3)`.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is unreadable, or is not an aligned crop of the right size and no
            landmarks were given.

    Example:

    >>> face = load_face("aligned/0001.jpg")  # doctest: +SKIP
    >>> face.shape  # doctest: +SKIP
    (112, 112, 3)
    """
    image = load_image(path)
    if landmarks is not None:
        return align_face(image, landmarks, image_size=image_size)
    if image.shape[:2] != (image_size, image_size):
        raise ValueError(
            f"{os.fspath(path)!r} is {image.shape[1]}x{image.shape[0]}, not an aligned "
            f"{image_size}x{image_size} face crop; give its five landmarks (--landmarks FILE) to "
            "align it."
        )
    return image


def as_rgb_image(image, argument="image"):
    """An RGB uint8 ``(H, W, 3)`` C-contiguous array from a path or a gray/RGB/RGBA uint8 array.

    Paths go through :func:`keras_fr.preprocessing.load_image` (EXIF orientation applied). Gray
    arrays are replicated to three channels and RGBA arrays composited onto white, as ``load_image``
    does for such files, so an array and the file it came from give the same faces.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            return load_image(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"`{argument}`: image file not found: {path!r}.") from None
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"`{argument}` must be an image file path or a uint8 numpy array of shape (H, W), "
            f"(H, W, 3) or (H, W, 4); got {type(image).__name__}."
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"`{argument}` must have dtype uint8 (pixel values 0-255); got {image.dtype}. Convert "
            "it, e.g. np.clip(x * 255, 0, 255).astype(np.uint8) for floats in [0, 1]."
        )
    shape_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))
    if not shape_ok or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(
            f"`{argument}` must have shape (H, W) (grayscale), (H, W, 3) (RGB) or (H, W, 4) (RGBA) "
            f"with H, W >= 1; got shape {image.shape}."
        )
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        Image, _ = _pil()
        image = _to_rgb_uint8(Image.fromarray(np.ascontiguousarray(image)))  # (H, W, 4) uint8: RGBA
    return np.ascontiguousarray(image)


def list_images(paths):
    """Expand files and folders into a sorted list of image files.

    Folders are searched recursively for files with an image suffix
    (`.jpg .jpeg .png .bmp .gif .tif .tiff .webp .ppm .pgm`, any case); files given explicitly are
    kept whatever their suffix, in the order given.

    Args:
        paths: an iterable of file and folder paths.

    Returns:
        A list of file paths (strings).

    Raises:
        FileNotFoundError: if a path does not exist.
        ValueError: if a folder holds no images, or nothing was given.

    Example:

    >>> list_images(["faces/", "extra/me.png"])  # doctest: +SKIP
    ['faces/alice/1.jpg', 'faces/bob/1.jpg', 'extra/me.png']
    """
    files = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if name.lower().endswith(_IMAGE_SUFFIXES) and not name.startswith("."):
                        found.append(os.path.join(root, name))
            if not found:
                raise ValueError(f"folder {path!r} holds no image files ({', '.join(_IMAGE_SUFFIXES)}).")
            files.extend(found)
        elif os.path.exists(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"image file or folder not found: {path!r}.")
    if not files:
        raise ValueError("no images given.")
    return files


# ------------------------------------------------------------------------------------------------
# dlib face chips (the input of keras_fr.applications.DlibResNet)
# ------------------------------------------------------------------------------------------------

#: dlib's mean face shape for the 68-point landmarks 17..67 (eyebrows, nose, eyes, mouth), in units
#: of the face box: (x, y) with (0, 0) the top-left and (1, 1) the bottom-right of the face. dlib
#: places a shape's points on these positions to cut its face chips (``get_face_chip_details``).
DLIB_MEAN_FACE_17_67 = np.array(
    [
        [0.000213256, 0.106454], [0.0752622, 0.038915], [0.18113, 0.0187482],
        [0.29077, 0.0344891], [0.393397, 0.0773906], [0.586856, 0.0773906],
        [0.689483, 0.0344891], [0.799124, 0.0187482], [0.904991, 0.038915],
        [0.98004, 0.106454], [0.490127, 0.203352], [0.490127, 0.307009],
        [0.490127, 0.409805], [0.490127, 0.515625], [0.36688, 0.587326],
        [0.426036, 0.609345], [0.490127, 0.628106], [0.554217, 0.609345],
        [0.613373, 0.587326], [0.121737, 0.216423], [0.187122, 0.178758],
        [0.265825, 0.179852], [0.334606, 0.231733], [0.260918, 0.245099],
        [0.182743, 0.244077], [0.645647, 0.231733], [0.714428, 0.179852],
        [0.793132, 0.178758], [0.858516, 0.216423], [0.79751, 0.244077],
        [0.719335, 0.245099], [0.254149, 0.780233], [0.340985, 0.745405],
        [0.428858, 0.727388], [0.490127, 0.742578], [0.551395, 0.727388],
        [0.639268, 0.745405], [0.726104, 0.780233], [0.642159, 0.864805],
        [0.556721, 0.902192], [0.490127, 0.909281], [0.423532, 0.902192],
        [0.338094, 0.864805], [0.290379, 0.784792], [0.428096, 0.778746],
        [0.490127, 0.785343], [0.552157, 0.778746], [0.689874, 0.784792],
        [0.553364, 0.824182], [0.490127, 0.831803], [0.42689, 0.824182],
    ],
    dtype=np.float64,
)
#: The 68-point indices dlib fits its chips with: nose, eyes and upper mouth (27..54, 60..64); the
#: jaw (0..16), the eyebrows (17..26) and the lower lip (55..59, 65..67) are left out.
DLIB_CHIP_POINTS = np.array(list(range(27, 55)) + list(range(60, 65)))
#: The ArcFace 5 points (align_face's order) in terms of the 68-point shape: groups averaged.
_ARCFACE_FROM_68 = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))


def _dlib_mean_face(indices):
    return DLIB_MEAN_FACE_17_67[np.asarray(indices) - 17]


def dlib_template_5(size=150, padding=0.25):
    """Where a dlib face chip puts the ArcFace 5 points (dlib's mean face, averaged per group).

    Args:
        size: the chip's side in pixels.
        padding: dlib's padding around the face (a fraction of the face size on each side).

    Returns:
        A float64 (5, 2) array: left eye centre (mean of points 36-41), right eye centre (42-47),
        nose tip (30), mouth corners (48, 54), in chip pixels.

    Example:
        >>> dlib_template_5().round(1)[0]
        array([48.8, 49.8])
    """
    unit = np.stack([_dlib_mean_face(group).mean(axis=0) for group in _ARCFACE_FROM_68])
    return (padding + unit) / (2 * padding + 1) * size


def _dlib_pyramid_down(image):
    """One level of dlib's ``pyramid_down<2>`` on an RGB uint8 image: a separable [1 4 6 4 1]
    filter and decimation by 2 in integers, truncating (output pixel (c, r) centred on input
    (2c + 2, 2r + 2))."""
    x = image.astype(np.uint32)
    cols = (x.shape[1] - 3) // 2
    rows = (x.shape[0] - 3) // 2
    weights = (1, 4, 6, 4, 1)
    horizontal = sum(w * x[:, k:k + 2 * cols:2] for k, w in enumerate(weights))
    vertical = sum(w * horizontal[k:k + 2 * rows:2] for k, w in enumerate(weights))
    return (vertical // 256).astype(np.uint8)


def _dlib_rect_down(rect):
    # dlib's pyramid_down<2> maps a point p of the bigger image to p / 2 - (1.25, 0.75).
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _drect_area(rect):
    left, top, right, bottom = rect
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rotate(center, point, angle):
    dx, dy = point[0] - center[0], point[1] - center[1]
    c, s = np.cos(angle), np.sin(angle)
    return np.array([center[0] + c * dx - s * dy, center[1] + s * dx + c * dy])


def _rotated_corners(rect, angle):
    left, top, right, bottom = rect
    center = ((left + right) / 2, (top + bottom) / 2)
    return [_rotate(center, p, angle) for p in ((left, top), (right, top), (left, bottom), (right, bottom))]


def _sample_bilinear_truncated(image, xs, ys):
    """dlib's bilinear sampling of an RGB uint8 image: double arithmetic, truncation to uint8, and
    black where any of the four neighbours is outside the image."""
    height, width = image.shape[:2]
    left = np.floor(xs).astype(np.int64)
    top = np.floor(ys).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    lc, tc = np.clip(left, 0, width - 2), np.clip(top, 0, height - 2)
    fx = (xs - left)[..., None]
    fy = (ys - top)[..., None]
    pixels = image.astype(np.float64)
    tl, tr = pixels[tc, lc], pixels[tc, lc + 1]
    bl, br = pixels[tc + 1, lc], pixels[tc + 1, lc + 1]
    value = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out = np.clip(value, 0, 255).astype(np.uint8)  # truncation, as dlib's static_cast
    out[~inside] = 0
    return out


def dlib_face_chip(image, landmarks, size=150, padding=0.25):
    """Cut a dlib face chip: the input of `keras_fr.applications.DlibResNet` (dlib's geometry).

    Reproduces dlib's ``get_face_chip_details`` + ``extract_image_chip`` (``dlib.get_face_chip``):

    - with a (68, 2) dlib 68-point shape, the similarity transform (least squares, Umeyama) that
      maps dlib's mean face (points 27-54 and 60-64, scaled into a chip of ``size`` pixels with
      ``padding``) onto the shape; exactly the points and template dlib uses;
    - with a (5, 2) array of ArcFace 5 points (left eye centre, right eye centre, nose tip, left and
      right mouth corners: the order of :func:`align_face`), the similarity that maps
      :func:`dlib_template_5` (where dlib's own template puts those five points) onto them, so a
      detector that gives ArcFace points still produces a dlib-style chip (close to, not equal to,
      the 68-point chip).

    From the transform, as dlib does, only the rotation angle, the scale and the chip's centre are
    kept: chip pixel (0, 0) maps to the rotated top-left corner of a ``size * scale - 1`` square
    around the centre, pixel (size - 1, size - 1) to its bottom-right corner. Pixels are bilinear
    in double precision, truncated to uint8, black where a neighbour is outside the image. When the
    chip is more than 2x smaller than its footprint, dlib samples from a Gaussian pyramid
    (``pyramid_down<2>``) of the surrounding crop; that is reproduced too.

    Args:
        image: RGB uint8 array (H, W, 3).
        landmarks: (68, 2) dlib shape or (5, 2) ArcFace points, pixel (x, y), integer coordinates
            at pixel centres.
        size: the chip's side in pixels (150 for DlibResNet).
        padding: extra margin around the face, as a fraction of the face size (0.25 for DlibResNet).

    Returns:
        A uint8 array (size, size, 3).

    Raises:
        ValueError: for a bad ``image``, ``landmarks`` that are neither (68, 2) nor (5, 2) finite
            points, degenerate landmarks, a non-positive ``size`` or a negative ``padding``.

    Example:

    >>> chip = dlib_face_chip(photo, shape68)  # doctest: +SKIP
    >>> chip.shape  # doctest: +SKIP
    (150, 150, 3)
    """
    image = _check_rgb(image)
    if image.dtype != np.uint8:
        raise ValueError(f"`image` must be uint8 RGB (as dlib reads it); got dtype {image.dtype}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"`size` must be an integer of at least 2; got {size!r}.")
    if isinstance(padding, bool) or not isinstance(padding, (int, float)) or not padding >= 0:
        raise ValueError(f"`padding` must be a number >= 0; got {padding!r}.")
    points = _check_points(landmarks, "landmarks")
    if points.shape == (68, 2):
        unit = _dlib_mean_face(DLIB_CHIP_POINTS)
        template = (padding + unit) / (2 * padding + 1) * size
        points = points[DLIB_CHIP_POINTS]
    elif points.shape == (5, 2):
        template = dlib_template_5(size, padding)
    else:
        raise ValueError(
            "`landmarks` must be a dlib 68-point shape (68, 2) or the ArcFace 5 points (5, 2); "
            f"got shape {points.shape}."
        )
    if (points.max(axis=0) - points.min(axis=0)).max() < 1e-6:
        raise ValueError("`landmarks` are all the same point; cannot cut a face chip.")
    chip_to_image = estimate_similarity_transform(template, points)
    direction = chip_to_image[:, 0]  # the chip's x axis in the image
    angle = float(np.arctan2(direction[1], direction[0]))
    scale = float(np.hypot(direction[0], direction[1]))
    center = chip_to_image[:, :2] @ np.array([size / 2.0, size / 2.0]) + chip_to_image[:, 2]
    half = (size * scale - 1) / 2.0
    rect = (center[0] - half, center[1] - half, center[0] + half, center[1] + half)

    # dlib's pyramid: how many halvings until the footprint is at most the chip's area.
    depth, grow = 0, 2.0
    down = _dlib_rect_down(rect)
    while _drect_area(down) > size * size:
        down = _dlib_rect_down(down)
        depth += 1
        grow = grow * 2 + 2
    corners = np.array(_rotated_corners(rect, angle))
    height, width = image.shape[:2]
    box = (max(corners[:, 0].min() - grow, 0), max(corners[:, 1].min() - grow, 0),
           min(corners[:, 0].max() + grow, width - 1), min(corners[:, 1].max() + grow, height - 1))
    # dlib rounds the crop to whole pixels (lround: halves away from zero).
    left, top, right, bottom = (int(np.floor(abs(v) + 0.5) * np.sign(v)) for v in box)
    if right < left or bottom < top:
        return np.zeros((size, size, 3), np.uint8)
    source = image[top:bottom + 1, left:right + 1]
    rect = (rect[0] - left, rect[1] - top, rect[2] - left, rect[3] - top)
    for _ in range(depth):
        if source.shape[0] <= 8 or source.shape[1] <= 8:
            return np.zeros((size, size, 3), np.uint8)
        source = _dlib_pyramid_down(source)
        rect = _dlib_rect_down(rect)
    # The affine map from chip pixels to the (rotated) rectangle's corners.
    tl, tr, bl, _ = _rotated_corners(rect, angle)
    step_x = (tr - tl) / (size - 1)
    step_y = (bl - tl) / (size - 1)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    xs = tl[0] + u * step_x[0] + v * step_y[0]
    ys = tl[1] + u * step_x[1] + v * step_y[1]
    return _sample_bilinear_truncated(source, xs, ys)
