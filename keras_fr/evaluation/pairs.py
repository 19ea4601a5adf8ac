"""Verification pair lists: LFW ``pairs.txt`` + image folder, CSV of pairs, insightface ``.bin``.

All readers return a :class:`PairSet`: the unique images once (so each is embedded once), the pairs as
index pairs into them, and the same/different flags, in the file's order (the order the k-fold protocol
splits).
"""

import csv
import os

import numpy as np

from keras_fr.evaluation.bin_io import read_bin
from keras_fr.evaluation.pairset import ImagePaths
from keras_fr.evaluation.pairset import PairSet


def _image_root(folder, image_dir):
    if image_dir is not None:
        image_dir = os.fspath(image_dir)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image folder not found: {image_dir}")
        return image_dir
    candidate = os.path.join(folder, "images")
    return candidate if os.path.isdir(candidate) else folder


def _check_files(paths, where):
    for path, line in zip(paths, where):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{line}: image file not found: {path}")


def read_lfw_pairs(path, image_dir=None, ext=".jpg"):
    """Read an LFW-format ``pairs.txt`` and locate its images.

    Format: an optional header ``nfolds n`` (``10 300`` for View 2), then per fold ``n`` same-person lines
    ``name i j`` followed by ``n`` different-person lines ``name1 i name2 j`` (tabs or spaces). Image ``k``
    of ``name`` is ``IMAGE_DIR/name/name_%04d.jpg``.

    Args:
        path: the ``pairs.txt`` file, or a folder holding it.
        image_dir: the image root; default ``<folder>/images`` if it exists, else the file's folder.
        ext: image file extension.

    Returns:
        A :class:`PairSet` of :class:`ImagePaths`.

    Raises:
        FileNotFoundError: if the file, the image folder or any image is missing (named, with the line).
        ValueError: on a malformed line or counts that do not match the header.

    Example:
        >>> ps = read_lfw_pairs("../shared/data/lfw112")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "pairs.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pairs file not found: {path}")
    root = _image_root(os.path.dirname(os.path.abspath(path)), image_dir)
    with open(path, encoding="utf-8") as f:
        lines = [(n + 1, line.split()) for n, line in enumerate(f) if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty pairs file.")
    nfolds = per_fold = None
    first = lines[0][1]
    if len(first) == 2 and all(tok.isdigit() for tok in first):
        nfolds, per_fold = int(first[0]), int(first[1])
        lines = lines[1:]
        if nfolds < 1 or per_fold < 1:
            raise ValueError(f"{path}:1: header must be two positive integers 'nfolds pairs_per_class'.")
        if len(lines) != 2 * nfolds * per_fold:
            raise ValueError(
                f"{path}: header '{nfolds} {per_fold}' announces {2 * nfolds * per_fold} pairs but the file "
                f"has {len(lines)}."
            )
    index = {}
    paths = []
    pairs = []
    issame = []
    where = []

    def image(name, num, lineno):
        try:
            k = int(num)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: image number {num!r} is not an integer.") from None
        file = os.path.join(root, name, f"{name}_{k:04d}{ext}")
        if file not in index:
            index[file] = len(paths)
            paths.append(file)
            where.append(f"{path}:{lineno}")
        return index[file]

    for i, (lineno, tokens) in enumerate(lines):
        if len(tokens) == 3:
            pairs.append((image(tokens[0], tokens[1], lineno), image(tokens[0], tokens[2], lineno)))
            issame.append(True)
        elif len(tokens) == 4:
            pairs.append((image(tokens[0], tokens[1], lineno), image(tokens[2], tokens[3], lineno)))
            issame.append(False)
        else:
            raise ValueError(
                f"{path}:{lineno}: expected 'name i j' (same) or 'name1 i name2 j' (different); "
                f"got {len(tokens)} fields."
            )
        if per_fold is not None:
            expect_same = (i % (2 * per_fold)) < per_fold
            if issame[-1] != expect_same:
                raise ValueError(
                    f"{path}:{lineno}: expected a {'same' if expect_same else 'different'}-person line here "
                    f"(each fold is {per_fold} same then {per_fold} different pairs)."
                )
    _check_files(paths, where)
    return PairSet(ImagePaths(paths), np.array(pairs), np.array(issame), path, nfolds)


_TRUE = {"1", "true", "same", "yes"}
_FALSE = {"0", "false", "different", "diff", "no"}


def read_pairs_csv(path, image_dir=None):
    """Read a CSV of pairs with header ``img1,img2,same`` (paths relative to the image folder).

    Args:
        path: the CSV file.
        image_dir: the folder the paths are relative to; default ``<folder>/images`` if it exists,
            else the CSV's folder. Absolute paths are used as they are.

    Returns:
        A :class:`PairSet` of :class:`ImagePaths`, in file order.

    Raises:
        FileNotFoundError: if the file or any image is missing (named, with the line).
        ValueError: on a missing column or a flag that is not 0/1/true/false.

    Example:
        >>> ps = read_pairs_csv("../shared/data/celeba299/pairs_test.csv")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pairs file not found: {path}")
    root = _image_root(os.path.dirname(os.path.abspath(path)), image_dir)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in ("img1", "img2", "same") if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected header img1,img2,same.")
        index, paths, pairs, issame, where = {}, [], [], [], []
        for lineno, row in enumerate(reader, start=2):
            ids = []
            for key in ("img1", "img2"):
                rel = (row[key] or "").strip()
                if not rel:
                    raise ValueError(f"{path}:{lineno}: empty {key}.")
                file = rel if os.path.isabs(rel) else os.path.join(root, rel)
                if file not in index:
                    index[file] = len(paths)
                    paths.append(file)
                    where.append(f"{path}:{lineno}")
                ids.append(index[file])
            flag = (row["same"] or "").strip().lower()
            if flag in _TRUE:
                issame.append(True)
            elif flag in _FALSE:
                issame.append(False)
            else:
                raise ValueError(f"{path}:{lineno}: 'same' must be 0/1 or true/false; got {row['same']!r}.")
            pairs.append(ids)
    if not pairs:
        raise ValueError(f"{path}: no pairs.")
    _check_files(paths, where)
    return PairSet(ImagePaths(paths), np.array(pairs), np.array(issame), path, None)


def read_pairs(path, image_dir=None):
    """Read a verification set, choosing the reader by what ``path`` is.

    - a folder holding ``pairs.txt`` (LFW layout, images under ``images/``) or a ``.txt`` file:
      :func:`read_lfw_pairs`;
    - a ``.csv`` file: :func:`read_pairs_csv`;
    - a ``.bin`` file (insightface): :func:`keras_fr.evaluation.read_bin`;
    - a :class:`PairSet`: returned as it is.

    Args:
        path: see above.
        image_dir: image root for ``.txt``/``.csv`` (see the readers).

    Returns:
        A :class:`PairSet`.

    Raises:
        FileNotFoundError: if ``path`` (or an image it names) does not exist.
        ValueError: if the kind of file is not recognized or the file is malformed.

    Example:
        >>> pairs = read_pairs("../shared/data/lfw112")  # doctest: +SKIP
        >>> len(pairs)  # doctest: +SKIP
        6000
    """
    if isinstance(path, PairSet):
        return path
    try:
        path = os.fspath(path)
    except TypeError:
        raise ValueError(
            f"`pairs_source` must be a path (folder with pairs.txt, .txt, .csv or .bin) or a PairSet; "
            f"got {type(path).__name__}."
        ) from None
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "pairs.txt")):
            return read_lfw_pairs(path, image_dir)
        raise FileNotFoundError(f"{path}: folder has no pairs.txt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"pairs file not found: {path}")
    lower = path.lower()
    if lower.endswith(".bin"):
        return read_bin(path)
    if lower.endswith(".csv"):
        return read_pairs_csv(path, image_dir)
    if lower.endswith(".txt"):
        return read_lfw_pairs(path, image_dir)
    raise ValueError(
        f"{path}: unknown pairs format; expected a folder with pairs.txt, a .txt (LFW format), "
        "a .csv (img1,img2,same) or an insightface .bin."
    )
