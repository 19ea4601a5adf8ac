"""One folder per identity -> a ``tf.data`` pipeline of (images, labels) for ``FaceTrainingModel.fit``.

The layout insightface documents for custom training data::

    root/
        identity_a/ 0001.jpg 0002.jpg ...
        identity_b/ ...

Labels are the indices of the sorted identity names. TensorFlow-specific (``tf.data``).
"""

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

#: File name endings read as images (case-insensitive); TensorFlow decodes all of them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
ON_ERROR = ("skip", "raise")


@dataclasses.dataclass
class FolderInfo:
    """What ``image_folder_dataset`` found.

    Attributes:
        class_names: identity folder names; label ``i`` is ``class_names[i]``.
        class_counts: images used per identity (same order).
        num_images: images in the dataset (one pass).
        paths: the image paths used, in label order before shuffling.
        labels: their integer labels (numpy int32).
        skipped: ``[(path, reason)]`` of unreadable images left out (``on_error="skip"``).
        ignored: paths of files that are not images (by extension) or lie outside identity folders.
    """

    class_names: list
    class_counts: list
    num_images: int
    paths: list
    labels: np.ndarray
    skipped: list
    ignored: list

    @property
    def num_classes(self):
        return len(self.class_names)

    def summary(self):
        """One line: identities, images, skipped and ignored counts."""
        return (
            f"{self.num_classes} identities, {self.num_images} images"
            f" ({len(self.skipped)} unreadable skipped, {len(self.ignored)} non-image files ignored)"
        )


def _check_image(path):
    """None if PIL decodes the file completely, else the reason."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return "empty image"
    except Exception as error:  # noqa: BLE001 - any decoder failure means unreadable
        return f"{type(error).__name__}: {error}"
    return None


def scan_image_folder(root, classes=None, verify=True, on_error="skip", num_workers=None):
    """List the images of a one-folder-per-identity tree, with the checks ``image_folder_dataset`` does.

    Args:
        root: the folder that holds one sub-folder per identity.
        classes: optional list of identity folder names to use (a subset, e.g. the ``train`` split of
            a ``split.csv``); default: every sub-folder. Label order follows the sorted names.
        verify: decode every image once with Pillow to find unreadable ones (default True). With
            False, files are trusted and only the ``tf.data`` decoder sees them.
        on_error: ``"skip"`` (leave unreadable images out and list them in ``info.skipped``) or
            ``"raise"`` (``ValueError`` naming them).
        num_workers: threads for the verification (default: CPU count).

    Returns:
        A ``FolderInfo``.

    Raises:
        FileNotFoundError: if ``root`` or a requested class folder does not exist.
        ValueError: if there are no identity folders, an identity has no (readable) image, or an
            image is unreadable with ``on_error="raise"``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"`on_error` must be one of {ON_ERROR}; got {on_error!r}.")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder root {root!r} does not exist or is not a folder.")
    entries = sorted(os.listdir(root))
    ignored = [os.path.join(root, e) for e in entries if not os.path.isdir(os.path.join(root, e))]
    folders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if classes is not None:
        classes = [str(c) for c in classes]
        missing = sorted(set(classes) - set(folders))
        if missing:
            raise FileNotFoundError(
                f"`classes` names {len(missing)} identity folders missing under {root!r}: "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        if len(set(classes)) != len(classes):
            raise ValueError("`classes` contains duplicate identity names.")
        folders = sorted(classes)
    if not folders:
        raise ValueError(
            f"no identity folders under {root!r}: expected one sub-folder of images per identity."
        )
    per_class, empty = [], []
    for name in folders:
        folder = os.path.join(root, name)
        images = []
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if os.path.isfile(path) and entry.lower().endswith(IMAGE_EXTENSIONS):
                images.append(path)
            else:
                ignored.append(path)
        if not images:
            empty.append(name)
        per_class.append(images)
    if empty:
        raise ValueError(
            f"{len(empty)} identity folders under {root!r} contain no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}): {empty[:5]}{' ...' if len(empty) > 5 else ''}. "
            "Remove them or leave them out with `classes=`."
        )
    skipped = []
    if verify:
        all_paths = [p for images in per_class for p in images]
        with ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
            reasons = dict(zip(all_paths, pool.map(_check_image, all_paths)))
        skipped = [(p, r) for p, r in reasons.items() if r is not None]
        if skipped and on_error == "raise":
            listing = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
            raise ValueError(
                f"{len(skipped)} unreadable images under {root!r}: {listing}"
                f"{' ...' if len(skipped) > 5 else ''}. Pass on_error='skip' to leave them out."
            )
        bad = {p for p, _ in skipped}
        per_class = [[p for p in images if p not in bad] for images in per_class]
        now_empty = [name for name, images in zip(folders, per_class) if not images]
        if now_empty:
            raise ValueError(
                f"{len(now_empty)} identity folders under {root!r} have no readable image: "
                f"{now_empty[:5]}. Remove them or leave them out with `classes=`."
            )
    paths = [p for images in per_class for p in images]
    labels = np.concatenate(
        [np.full(len(images), i, np.int32) for i, images in enumerate(per_class)]
    )
    return FolderInfo(
        class_names=list(folders),
        class_counts=[len(images) for images in per_class],
        num_images=len(paths),
        paths=paths,
        labels=labels,
        skipped=skipped,
        ignored=ignored,
    )


def _image_size(image_size):
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (int(image_size), int(image_size))
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, (int, np.integer)) and s > 0 for s in image_size)
    ):
        raise ValueError(
            f"`image_size` must be a positive int or (height, width); got {image_size!r}."
        )
    return int(image_size[0]), int(image_size[1])


def decode_and_resize(image_bytes, image_size, preprocess=True):
    """Decode JPEG/PNG/BMP/GIF bytes to RGB and resize to ``image_size`` (a tf.data map function).

    Args:
        image_bytes: scalar string tensor.
        image_size: (height, width).
        preprocess: scale to [-1, 1] (``x / 127.5 - 1``, the backbones' input); else float32 [0, 255].

    Returns:
        float32 tensor (height, width, 3).
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    height, width = image_size
    image = tf.cast(image, tf.float32)
    same = tf.logical_and(tf.shape(image)[0] == height, tf.shape(image)[1] == width)
    image = tf.cond(
        same,
        lambda: image,
        lambda: tf.image.resize(image, (height, width), method="bilinear", antialias=True),
    )
    image = tf.ensure_shape(image, (height, width, 3))
    if preprocess:
        image = image / 127.5 - 1.0
    return image


def image_folder_dataset(
    root,
    image_size=112,
    batch_size=64,
    shuffle=True,
    seed=None,
    on_error="skip",
    classes=None,
    verify=True,
    preprocess=True,
    augmentation=None,
    drop_remainder=False,
    repeat=False,
    shuffle_buffer=None,
    num_parallel_calls=None,
):
    """A ``tf.data`` pipeline of ``(images, labels)`` from one folder per identity.

    Files are listed and checked up front (``scan_image_folder``); the dataset then reads, decodes and
    resizes in parallel, shuffles (paths, before decoding, so the buffer is cheap), batches, applies the
    optional augmentation per batch and prefetches.

    Args:
        root: folder with one sub-folder of images per identity.
        image_size: int or (height, width); images of another size are resized (bilinear, antialias).
        batch_size: positive int.
        shuffle: shuffle every epoch (default True).
        seed: shuffle (and augmentation) seed; None = random.
        on_error: ``"skip"`` (default: unreadable images left out, counted in ``info.skipped``; with
            ``verify=False`` a file the decoder rejects is dropped silently) or ``"raise"``.
        classes: optional subset of identity folder names (e.g. a split's ``train`` identities).
        verify: decode every image once with Pillow up front (default True; set False for very large
            sets whose files you trust).
        preprocess: images in [-1, 1] (default, the backbones' input); False = float32 [0, 255].
        augmentation: optional Keras layer applied to each batch with ``training=True`` (e.g.
            ``keras_fr.data.lgaf_augmentation()``); alternatively give it to ``FaceTrainingModel``.
        drop_remainder: drop the last incomplete batch.
        repeat: repeat forever (then pass ``steps_per_epoch`` to ``fit``).
        shuffle_buffer: shuffle buffer size (default: all images).
        num_parallel_calls: decode parallelism (default ``tf.data.AUTOTUNE``).

    Returns:
        ``(dataset, info)``: the ``tf.data.Dataset`` of (float32 ``(batch, H, W, 3)``, int32
        ``(batch,)``) and a ``FolderInfo`` (``class_names``, ``class_counts``, ``skipped``, ``ignored``).

    Raises:
        FileNotFoundError: ``root`` (or a requested class folder) is missing.
        ValueError: bad arguments, no identity folders, an identity without readable images, or an
            unreadable image with ``on_error="raise"``.

    Example:

    >>> dataset, info = image_folder_dataset("faces/", image_size=112, batch_size=128, seed=0)
    >>> model = FaceTrainingModel(backbone, num_classes=info.num_classes)
    >>> model.fit(dataset, epochs=20)
    """
    size = _image_size(image_size)
    _check_batch_size(batch_size)
    info = scan_image_folder(root, classes=classes, verify=verify, on_error=on_error)

    def load(path, label):
        return decode_and_resize(tf.io.read_file(path), size, preprocess), label

    dataset = _batched_pipeline(
        tf.data.Dataset.from_tensor_slices((info.paths, info.labels)), info.num_images, load,
        batch_size, shuffle, seed, shuffle_buffer, repeat, num_parallel_calls, drop_remainder,
        augmentation, skip_errors=on_error == "skip",
    )
    return dataset, info


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")


def _batched_pipeline(items, num_items, load, batch_size, shuffle, seed, shuffle_buffer, repeat,
                      num_parallel_calls, drop_remainder, augmentation, skip_errors=False):
    """What the folder and RecordIO pipelines share, from their items to prefetched batches.

    Shuffles the ``num_items`` items (before decoding, so the buffer is cheap; default buffer: all
    of them), repeats, maps ``load`` (item -> (image, label)) in parallel, drops the items ``load``
    fails on if ``skip_errors``, batches, applies ``augmentation`` per batch with
    ``training=True`` and prefetches. The other arguments are ``image_folder_dataset``'s.
    """
    autotune = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    dataset = items
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer or num_items, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # Order matters when not shuffling or when seeded (reproducible runs); otherwise let tf.data
    # hand out whichever image decodes first.
    ordered = (not shuffle) or seed is not None
    dataset = dataset.map(load, num_parallel_calls=autotune, deterministic=ordered)
    if skip_errors:
        dataset = dataset.ignore_errors()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augmentation is not None:
        dataset = dataset.map(
            lambda x, y: (augmentation(x, training=True), y), num_parallel_calls=autotune
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def split_identities(split_csv, split="train"):
    """Identity names of one split from a ``identity,split[,...]`` CSV (e.g. celeba299's ``split.csv``).

    Pass the result as ``classes=`` to ``image_folder_dataset`` to train on one split of a folder
    tree in place, without copying images.

    Args:
        split_csv: path of the CSV with a header that has ``identity`` and ``split`` columns.
        split: the split to keep (``"train"``).

    Returns:
        Sorted list of identity names.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the columns are missing or no identity has that split.
    """
    import csv

    split_csv = os.fspath(split_csv)
    if not os.path.isfile(split_csv):
        raise FileNotFoundError(f"split file {split_csv!r} not found.")
    with open(split_csv, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"identity", "split"} <= set(reader.fieldnames):
            raise ValueError(
                f"{split_csv!r} must have a header with 'identity' and 'split' columns; "
                f"got {reader.fieldnames}."
            )
        names = sorted({row["identity"] for row in reader if row["split"] == split})
    if not names:
        raise ValueError(f"no identity has split {split!r} in {split_csv!r}.")
    return names
