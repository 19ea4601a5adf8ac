"""What a verification set is made of: its images (files or encoded bytes, decoded a batch at a time)
and the :class:`PairSet` that pairs them.

The readers build on this module: :mod:`keras_fr.evaluation.pairs` (LFW ``pairs.txt``, CSV) and
:mod:`keras_fr.evaluation.bin_io` (insightface ``.bin``); ``pairs.read_pairs`` dispatches to both, so
the shared types live here, below them both.
"""

import dataclasses
import io
import os

import numpy as np


class ImagePaths:
    """A sequence of image files decoded on demand, a batch at a time (RGB uint8).

    Args:
        paths: image file paths.

    Example:
        >>> ImagePaths(["a.jpg", "b.jpg"]).load_batch([0, 1]).shape  # doctest: +SKIP
        (2, 112, 112, 3)
    """

    def __init__(self, paths):
        self.paths = [os.fspath(p) for p in paths]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return self.paths[index]

    def __repr__(self):
        return f"ImagePaths({len(self)} files)"

    def decode(self, index, image_size=None):
        """Decode one image file as an RGB uint8 array.

        Args:
            index: The position of the file in `paths`.
            image_size: An optional `(height, width)`; the image is resized to
                it (bilinear) when its size differs. Defaults to `None`, which
                keeps the file's size.

        Returns:
            A uint8 NumPy array of shape `(height, width, 3)`.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If the file cannot be decoded as an image.
        """
        from PIL import Image

        path = self.paths[index]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if image_size is not None and img.size != (image_size[1], image_size[0]):
                    img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
        except Exception as exc:
            raise ValueError(f"{path}: cannot decode the image ({type(exc).__name__}: {exc}).") from None

    def load_batch(self, indices, image_size=None):
        """Decode several image files into one batch.

        Args:
            indices: The positions of the files in `paths`.
            image_size: An optional `(height, width)` every image is resized
                to. Defaults to `None`, which keeps the files' sizes (they must
                then all be the same).

        Returns:
            A uint8 NumPy array of shape `(len(indices), height, width, 3)`.

        Raises:
            FileNotFoundError: If a file does not exist.
            ValueError: If a file cannot be decoded, or if the images differ
                in size and `image_size` is not given.
        """
        arrays = [self.decode(int(i), image_size) for i in indices]
        return stack_images(arrays, [self.paths[int(i)] for i in indices])


class EncodedImages:
    """A sequence of encoded images (JPEG/PNG bytes) decoded on demand, a batch at a time.

    Args:
        data: list of ``bytes``-like encoded images.
        source: the file they came from (named in errors).

    Example:
        >>> images = EncodedImages([open("face.jpg", "rb").read()])  # doctest: +SKIP
        >>> images.load_batch([0]).shape  # doctest: +SKIP
        (1, 112, 112, 3)
    """

    def __init__(self, data, source="<memory>"):
        self.data = list(data)
        self.source = str(source)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"EncodedImages({len(self)} images from {self.source!r})"

    def decode(self, index, image_size=None):
        """Decode entry ``index`` to an RGB uint8 (H, W, 3) array (resized to ``image_size`` if given)."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(self.data[index])) as img:
                img = img.convert("RGB")
                if image_size is not None and img.size != (image_size[1], image_size[0]):
                    img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
        except Exception as exc:  # PIL raises several types for broken data
            raise ValueError(
                f"{self.source}: image entry {index} cannot be decoded ({type(exc).__name__}: {exc})."
            ) from None

    def load_batch(self, indices, image_size=None):
        """Decode the entries ``indices`` into one (B, H, W, 3) uint8 array."""
        arrays = [self.decode(int(i), image_size) for i in indices]
        return stack_images(arrays, [f"{self.source} entry {int(i)}" for i in indices])


def stack_images(arrays, names):
    shape = arrays[0].shape
    for array, name in zip(arrays, names):
        if array.shape != shape:
            raise ValueError(
                f"{name} is {array.shape[1]}x{array.shape[0]} but {names[0]} is {shape[1]}x{shape[0]}: "
                "images of one batch must have one size (pass `image_size` to resize them)."
            )
    return np.stack(arrays)



@dataclasses.dataclass
class PairSet:
    """A verification set: unique images, pairs of indices into them, and same/different flags.

    Attributes:
        images: the unique images: an :class:`ImagePaths` (files), an
            :class:`EncodedImages` (a ``.bin``) or a uint8 (M, H, W, 3) array.
        pairs: (P, 2) int64 indices into ``images``; pair ``i`` is ``images[pairs[i, 0]]`` vs
            ``images[pairs[i, 1]]``.
        issame: (P,) bool.
        source: where the set was read from.
        nfolds: the number of folds the file declares (``pairs.txt`` header, 10 for ``.bin``), or None.

    Example:
        >>> ps = read_pairs("../shared/data/lfw112")  # doctest: +SKIP
        >>> len(ps), ps.issame.mean()  # doctest: +SKIP
        (6000, 0.5)
    """

    images: object
    pairs: np.ndarray
    issame: np.ndarray
    source: str = "<memory>"
    nfolds: int = None

    def __post_init__(self):
        self.pairs = np.asarray(self.pairs, dtype=np.int64)
        self.issame = np.asarray(self.issame, dtype=bool)
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise ValueError(f"`pairs` must have shape (P, 2); got {self.pairs.shape}.")
        if self.issame.shape != (self.pairs.shape[0],):
            raise ValueError(
                f"`issame` must have one flag per pair ({self.pairs.shape[0]}); got shape {self.issame.shape}."
            )
        if self.pairs.size and (self.pairs.min() < 0 or self.pairs.max() >= len(self.images)):
            raise ValueError(f"`pairs` index outside the {len(self.images)} images.")

    def __len__(self):
        return int(self.pairs.shape[0])

    def __repr__(self):
        return (
            f"PairSet({len(self)} pairs: {int(self.issame.sum())} same, {int((~self.issame).sum())} "
            f"different; {len(self.images)} images; source={self.source!r})"
        )

    def subset(self, pair_indices):
        """A PairSet of the given pairs (in that order), keeping only the images they use."""
        idx = np.asarray(pair_indices, dtype=np.int64)
        pairs = self.pairs[idx]
        used, inverse = np.unique(pairs.ravel(), return_inverse=True)
        images = self.images
        if isinstance(images, ImagePaths):
            images = ImagePaths([images.paths[i] for i in used])
        elif isinstance(images, np.ndarray):
            images = images[used]
        else:
            images = EncodedImages([images.data[i] for i in used], source=images.source)
        return PairSet(images, inverse.reshape(-1, 2), self.issame[idx], self.source, None)
