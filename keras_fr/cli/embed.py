"""``keras-fr embed``: face images -> L2-normalized embeddings saved with their file list.

Inputs are already aligned crops of the model's input size (112x112 for every keras_fr network), or
photos of any size together with a landmarks file (``--landmarks``, format in
``keras_fr.preprocessing``), which are aligned first with the ArcFace 5-point template.

Output formats (chosen by the ``--output`` suffix):

- ``.npz``: arrays ``embeddings`` (float32, (N, D), each row of unit L2 norm) and ``paths`` (the image
  files, in the same order, as given or found).
- ``.npy``: the embeddings array alone, and a sibling text file with the same stem and ``.txt``
  (``emb.npy`` -> ``emb.txt``) holding one image path per line, row i of the array = line i.

Both are written atomically (a temporary file in the same folder, then renamed), so an interrupted
run never leaves a half-written file.
"""

import argparse
import os
import sys
import time

import keras
import numpy as np

from keras_fr.applications.specs import input_spec
from keras_fr.cli._common import (
    RANDOM,
    CLIError,
    add_batch_size_arg,
    add_json_arg,
    add_model_args,
    add_output_arg,
    check_output,
    model_from_args,
    print_json,
)
from keras_fr import preprocessing
from keras_fr.cli._recognize import add_runtime_arg, runtime_arg
from keras_fr.recognition.runtime import prepare_runtime, weights_sha256
from keras_fr._atomic import atomic_path
from keras_fr.applications.common import check_input_range, preprocess_input

EXAMPLES = """examples:
  # a folder of aligned 112x112 crops (searched recursively) -> embeddings + file list
  keras-fr embed aligned_faces/ --model msconv_resnet50 --weights ms1mv3 --output emb.npz

  # photos of any size, aligned first with five landmarks per image
  keras-fr embed photos/*.jpg --model iresnet50 --weights model.weights.h5 \\
      --landmarks landmarks.json --output emb.npy      # also writes emb.txt (one path per line)

  # read the result
  python -c "import numpy as np; d = np.load('emb.npz'); print(d['embeddings'].shape, d['paths'][:3])"

landmarks file: JSON {"photo.jpg": [[x, y] x5]} (left eye, right eye, nose, left and right mouth
corner) or text lines "photo.jpg x1 y1 x2 y2 x3 y3 x4 y4 x5 y5"; see keras_fr.preprocessing.
"""


class Progress:
    """A minimal progress bar on stderr, redrawn in place; shown only when the stream is a terminal
    (redirected logs get no progress lines and no control characters).

    Args:
        total: number of items.
        label: text shown before the bar.
        enabled: `False` to print nothing (e.g. for small jobs).
        stream: where to write (default `sys.stderr`, so `--json` output on stdout stays clean).

    Example:

    >>> import io
    >>> bar = Progress(4, "embedding", stream=io.StringIO())
    >>> bar.update(4); bar.stream.getvalue()  # not a terminal: nothing
    ''
    """

    def __init__(self, total, label="", enabled=True, stream=None):
        self.total = max(int(total), 1)
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._last_line = -1
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, count):
        """Advance by `count` items and redraw."""
        self.done = min(self.done + count, self.total)
        if not self.enabled:
            return
        fraction = self.done / self.total
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self._tty:
            bar = "#" * int(30 * fraction) + "." * (30 - int(30 * fraction))
            self.stream.write(
                f"\r{self.label} [{bar}] {self.done}/{self.total} ({rate:.1f}/s)"
            )
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


def l2_normalize(x, epsilon=1e-12):
    """Row-wise L2 normalization of a float array (rows of zeros stay zero).

    Args:
        x: array-like of shape `(..., D)`.
        epsilon: smallest norm divided by (keeps zero rows at zero).

    Returns:
        float32 array of the same shape whose rows have unit L2 norm.

    Example:

    >>> l2_normalize([[3.0, 4.0]])
    array([[0.6, 0.8]], dtype=float32)
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, epsilon)


def embed_images(model, images, batch_size=32, progress_label=None, spec=None):
    """Embed RGB `uint8` face crops with `model` and L2-normalize the rows.

    Args:
        model: a Keras model mapping preprocessed images (RGB in [-1, 1]) to embeddings (run through
            its `predict_on_batch`), or a prepared runtime (called).
        images: array of shape `(N, H, W, 3)`, RGB in [0, 255].
        batch_size: images per forward pass.
        progress_label: show a progress bar on stderr with this label (`None`: no bar).
        spec: the model's `InputSpec`; its `preprocess` replaces `preprocess_input` (default `None`:
            the ArcFace families' `x / 127.5 - 1`).

    Returns:
        float32 array `(N, D)` of unit-norm embeddings.

    Example:

    >>> from keras_fr.applications import IResNet18
    >>> faces = np.zeros((2, 112, 112, 3), dtype=np.uint8)
    >>> embed_images(IResNet18(), faces).shape  # doctest: +SKIP
    (2, 512)
    """

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must have shape (N, H, W, 3); got {images.shape}.")
    check_input_range(images, preprocessed=False, name="`images`")
    progress = Progress(len(images), progress_label or "", enabled=progress_label is not None)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = (spec.preprocess_fn() if spec is not None else preprocess_input)(
            images[start : start + batch_size]
        )
        if isinstance(model, keras.Model):
            # The compiled predict function, not an eager call: an eager Functional call keeps every
            # layer's output until it returns (LGAFResNet100 at batch 16: 2.6 GB more, against 0.16 GB).
            out = model.predict_on_batch(batch)
        else:  # a prepared runtime (keras_fr.recognition.runtime) or any callable
            out = model(batch, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        outputs.append(np.asarray(out, dtype=np.float32))
        progress.update(len(batch))
    if not outputs:
        raise ValueError("no images to embed.")
    return l2_normalize(np.concatenate(outputs, axis=0))


def model_image_size(model):
    """The square input size a model takes (112 when its input is not fixed).

    Args:
        model: a Keras model with an image input `(N, H, W, 3)`.

    Returns:
        `H` (an int).

    Raises:
        CLIError: if the input is not square.

    Example:

    >>> import keras
    >>> model_image_size(keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Flatten()]))
    64
    """
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    height, width = shape[1], shape[2]
    if height is None or width is None:
        return 112
    if height != width:
        raise CLIError(f"the model takes {height}x{width} inputs; only square inputs are supported.")
    return int(height)


def load_faces(paths, landmarks_file=None, image_size=112, marks=None):
    """Load face crops for the CLI: aligned crops as they are, photos aligned by their landmarks.

    Args:
        paths: image files.
        landmarks_file: optional landmarks file (see `keras_fr.preprocessing.read_landmarks`).
        image_size: crop size the model takes.
        marks: the landmarks file's content if already read (`read_landmarks`).

    Returns:
        uint8 array `(N, image_size, image_size, 3)`.

    Raises:
        CLIError: naming the file, when it is not an aligned crop of the right size and has no
            landmarks.
        FileNotFoundError, ValueError: for a missing or unreadable file (named).

    Example:

    >>> faces = load_faces(["a.png", "photo.jpg"], "marks.json")  # doctest: +SKIP
    >>> faces.shape  # doctest: +SKIP
    (2, 112, 112, 3)
    """

    if marks is None and landmarks_file:
        marks = preprocessing.read_landmarks(landmarks_file)
    faces = []
    for path in paths:
        points = None
        if marks is not None:
            points = preprocessing.find_landmarks(marks, path, landmarks_file)
        if points is None:
            image = preprocessing.load_image(path)
            if image.shape[:2] != (image_size, image_size):
                where = f" and has no entry in {landmarks_file!r}" if marks is not None else ""
                raise CLIError(
                    f"{path!r} is {image.shape[1]}x{image.shape[0]}, not an aligned "
                    f"{image_size}x{image_size} face crop{where}; give its five landmarks with "
                    "--landmarks FILE."
                )
            faces.append(image)
        else:
            faces.append(preprocessing.align_face(preprocessing.load_image(path), points, image_size))
    return np.stack(faces, axis=0)


def embed_files(model, paths, landmarks_file=None, batch_size=32, image_size=112, skipped=None, spec=None):
    """Load, align (with landmarks) and embed image files a batch at a time, with a progress bar.

    Only one batch of images is in memory at a time, so a large folder needs little memory. The
    progress bar (stderr, on a terminal only) appears when there are more than two batches.

    Args:
        model: the embedding model.
        paths: image files.
        landmarks_file: optional landmarks file for photos (see `load_faces`).
        batch_size: images per forward pass.
        image_size: the model's input size.
        skipped: `None` (default: the first unreadable image is an error), or a list: unreadable
            images and crops of the wrong size are then left out and `(path, reason)` appended to it.
        spec: the model's `InputSpec` when it is not the ArcFace 112x112 convention (e.g. dlib's chip):
            the files are then read as ArcFace 112x112 crops (or aligned to them with landmarks) and
            re-cropped and normalized for the model (`InputSpec.crops_from_arcface`, its `preprocess`).

    Returns:
        float32 array `(len(paths), D)` of unit-norm embeddings (without the skipped images' rows).

    Example:

    >>> from keras_fr.applications import IResNet18
    >>> embed_files(IResNet18(), ["a.png", "b.png"]).shape  # doctest: +SKIP
    (2, 512)
    """

    marks = preprocessing.read_landmarks(landmarks_file) if landmarks_file else None
    progress = Progress(len(paths), "embedding", enabled=len(paths) > 2 * batch_size)
    outputs = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        if skipped is None:
            faces = load_faces(chunk, landmarks_file, image_size, marks=marks)
        else:
            good = []
            for path in chunk:
                try:
                    good.append(load_faces([path], landmarks_file, image_size, marks=marks)[0])
                except (CLIError, ValueError, OSError) as exc:
                    skipped.append((path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            faces = np.stack(good, axis=0) if good else None
        if faces is not None:
            if spec is not None:
                faces = spec.crops_from_arcface(faces)
            outputs.append(embed_images(model, faces, batch_size, spec=spec))
        progress.update(len(chunk))
    if not outputs:
        raise CLIError(f"none of the {len(paths)} images could be read (all skipped).")
    return np.concatenate(outputs, axis=0)


def atomic_write(path, write):
    """Write a file atomically: `write(temp_path)`, then rename it onto `path` (see `keras_fr._atomic`).

    Raises:
        CLIError: if the destination folder does not exist.

    Example:

    >>> atomic_write("emb.npy", lambda temp: np.save(temp, np.zeros(3)))  # doctest: +SKIP
    """

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"output folder does not exist: {folder!r}.")
    with atomic_path(path) as temp:
        write(temp)


def save_embeddings(path, embeddings, paths):
    """Write embeddings and file list as `.npz` or `.npy` + `.txt` (see the module docstring).

    Args:
        path: output file ending in `.npz` (arrays `embeddings` and `paths`) or `.npy` (the
            embeddings; the paths go to the sibling `.txt`, one per line).
        embeddings: float32 array `(N, D)`.
        paths: the N image paths, in row order.

    Returns:
        The list of files written.

    Raises:
        CLIError: for another suffix, or a path with a newline in a `.txt` list.

    Example:

    >>> save_embeddings("emb.npz", embeddings, ["a.jpg", "b.jpg"])  # doctest: +SKIP
    ['emb.npz']
    """
    paths = [os.fspath(p) for p in paths]
    if path.endswith(".npz"):
        atomic_write(
            path,
            lambda temp: np.savez(temp, embeddings=embeddings, paths=np.array(paths, dtype=str)),
        )
        return [path]
    if path.endswith(".npy"):
        list_path = path[: -len(".npy")] + ".txt"
        bad = [p for p in paths if "\n" in p]
        if bad:
            raise CLIError(f"cannot list {bad[0]!r} in a text file (newline in its name); use .npz.")
        atomic_write(path, lambda temp: np.save(temp, embeddings))

        def write_list(temp):
            with open(temp, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write("".join(p + "\n" for p in paths))

        atomic_write(list_path, write_list)
        return [path, list_path]
    raise CLIError(f"--output must end in .npz or .npy; got {path!r}.")


def _runtime_for(model, name, weights_label, runtime, size, spec):
    """The model wrapped in its ``--runtime`` (``keras_fr.recognition.runtime``); CLIError if it cannot run."""
    preprocess = spec.preprocess_fn() if spec is not None else preprocess_input
    weights_hash = None if runtime == "keras" or weights_label == RANDOM else weights_sha256(name, weights_label)
    try:
        return prepare_runtime(model, name, weights_hash, runtime, input_size=size, preprocess=preprocess)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except RuntimeError as exc:
        raise CLIError(f"--runtime {runtime}: {exc} (--runtime keras always works)") from None


def register(subparsers):
    parser = subparsers.add_parser(
        "embed",
        help="embed face images into L2-normalized vectors (.npz / .npy)",
        description="Embed face images: aligned 112x112 crops, or photos with a landmarks file. "
        "Writes L2-normalized float32 embeddings and the file list.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders")
    add_model_args(parser)
    parser.add_argument(
        "--landmarks", default=None, metavar="FILE",
        help="five landmarks per photo (JSON or text, see below); photos are aligned first",
    )
    parser.add_argument(
        "--skip-bad", action="store_true",
        help="leave out unreadable images (and crops of the wrong size) and count them, instead of "
        "stopping at the first one",
    )
    add_batch_size_arg(parser)
    add_runtime_arg(parser)
    add_output_arg(parser, required=True, help="output file: .npz (embeddings + paths) or .npy (+ .txt list)")
    add_json_arg(parser)
    parser.set_defaults(func=run)


def run(args):
    if not (args.output.endswith(".npz") or args.output.endswith(".npy")):
        raise CLIError(f"--output must end in .npz or .npy; got {args.output!r}.")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1; got {args.batch_size}.")
    runtime = runtime_arg(args)
    check_output(args.output)
    if args.output.endswith(".npy"):
        check_output(args.output[: -len(".npy")] + ".txt", "--output's .txt list")
    skipped = [] if args.skip_bad else None
    if skipped is None:
        paths = preprocessing.list_images(args.images)
    else:  # a file given by name that cannot be found (e.g. a broken symlink) is skipped too
        paths = []
        for item in args.images:
            try:
                paths += preprocessing.list_images([item])
            except FileNotFoundError as exc:
                skipped.append((item, str(exc)))
        if not paths:
            raise CLIError(f"none of the {len(args.images)} images could be read (all skipped).")
    model, weights_label = model_from_args(args)
    spec = input_spec(args.model)
    if spec.alignment == "arcface":
        size, spec = model_image_size(model), None
    else:  # files are ArcFace crops, re-cropped for this model (e.g. dlib's 150x150 chip)
        size = 112
    model = _runtime_for(model, args.model, weights_label, runtime, spec.size if spec else size, spec)
    embeddings = embed_files(model, paths, args.landmarks, args.batch_size, size, skipped=skipped, spec=spec)
    bad = {path for path, _ in skipped or []}
    kept = [p for p in paths if p not in bad]
    total = len(kept) + len(skipped or [])
    written = save_embeddings(args.output, embeddings, kept)
    summary = {
        "model": args.model,
        "weights": weights_label,
        "images": len(kept),
        "embedding_size": int(embeddings.shape[1]),
        "output": written,
    }
    if skipped is not None:
        summary["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
    if args.json:
        print_json(summary)
    else:
        note = " (RANDOM weights, --random-weights: the embeddings mean nothing)" if (
            weights_label == RANDOM) else f" (weights {weights_label})"
        print(
            f"embedded {len(kept)} images with {args.model}{note}: "
            f"{embeddings.shape[1]}-d, L2-normalized -> {', '.join(written)}"
        )
        if skipped:
            print(f"skipped {len(skipped)} unreadable image(s) of {total}, the first: "
                  f"{skipped[0][0]!r} ({skipped[0][1]})", file=sys.stderr)
    return 0
