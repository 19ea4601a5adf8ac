"""IJB-B / IJB-C 1:1 template verification (TAR@FAR), as insightface's IJB evaluation computes it.

The facts of that protocol, reproduced here:

- Meta files: ``*_face_tid_mid.txt`` (one line per image: ``image_name template_id media_id``) and
  ``*_template_pair_label.txt`` (one line per pair: ``template1 template2 label``), space-separated.
- Image features: ``f(x) + f(flip(x))`` (flip test), *not* normalized by default (insightface's
  ``use_norm_score=True`` keeps the norm as a quality weight) and multiplied by the detector's faceness
  score when one is given (``use_detector_score``).
- Pooling (media, then template): inside a template, the images of one media (the frames of one video)
  are averaged into one feature; a media with one image keeps it; the media features are summed; the
  template feature is L2-normalized.
- Score of a pair: the dot product (cosine) of the two template features.
- ROC: ``sklearn.metrics.roc_curve(label, score)``; TAR at FAR 1e-6 .. 1e-1 is read from it by the
  nearest point (:func:`keras_fr.evaluation.tar_at_far`).

The images must already be aligned 112x112 crops (insightface aligns IJB's loose crops with the 5 landmarks
of ``*_name_5pts_score.txt``; ``keras_fr.preprocessing.align_face`` does the same alignment).
"""

import dataclasses
import os

import numpy as np

from keras_fr.evaluation.embeddings import extract_embeddings
from keras_fr.evaluation.pairs import ImagePaths
from keras_fr.evaluation.verification import FAR_TARGETS, auc, l2_normalize, roc_curve, tar_at_far


def _read_table(path, columns, what):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) < columns:
                raise ValueError(f"{path}:{lineno}: expected {columns} space-separated fields; got {len(tokens)}.")
            rows.append((lineno, tokens))
    if not rows:
        raise ValueError(f"{path}: empty {what} file.")
    return path, rows


def _int(path, lineno, token, field):
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {field} {token!r} is not an integer.") from None


def read_template_media(path):
    """Read ``*_face_tid_mid.txt``: ``image_name template_id media_id`` per line.

    Args:
        path: the meta file.

    Returns:
        ``(names, templates, medias)``: a list of image names and two int64 arrays.

    Raises:
        FileNotFoundError: if the file is missing. ValueError: on a malformed line (file and line named).

    Example:
        >>> names, templates, medias = read_template_media("ijbc_face_tid_mid.txt")  # doctest: +SKIP
    """
    path, rows = _read_table(path, 3, "template/media")
    names = [tokens[0] for _, tokens in rows]
    templates = np.array([_int(path, n, t[1], "template id") for n, t in rows], dtype=np.int64)
    medias = np.array([_int(path, n, t[2], "media id") for n, t in rows], dtype=np.int64)
    return names, templates, medias


def read_template_pairs(path):
    """Read ``*_template_pair_label.txt``: ``template1 template2 label`` per line.

    Args:
        path: the template pair file.

    Returns:
        ``(t1, t2, labels)`` int64 arrays (label 1 = same subject).

    Raises:
        FileNotFoundError: if the file is missing. ValueError: on a malformed line or a label not 0/1.

    Example:
        >>> t1, t2, labels = read_template_pairs("ijbc_template_pair_label.txt")  # doctest: +SKIP
    """
    path, rows = _read_table(path, 3, "template pair")
    t1 = np.array([_int(path, n, t[0], "template id") for n, t in rows], dtype=np.int64)
    t2 = np.array([_int(path, n, t[1], "template id") for n, t in rows], dtype=np.int64)
    labels = np.array([_int(path, n, t[2], "label") for n, t in rows], dtype=np.int64)
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise ValueError(f"{path}:{rows[bad[0]][0]}: label must be 0 or 1; got {labels[bad[0]]}.")
    return t1, t2, labels


def read_faceness_scores(path, names):
    """Detector (faceness) scores from ``*_name_5pts_score.txt``, in the order of ``names``.

    Each line is ``image_name x1 y1 ... x5 y5 score`` (the five landmarks, then the detector score); the
    score is the last field.

    Args:
        path: the landmarks/score file.
        names: image names in the order wanted (those of :func:`read_template_media`).

    Returns:
        float64 array, one score per name.

    Raises:
        FileNotFoundError: if the file is missing. ValueError: a malformed line, or a name with no score.

    Example:
        >>> names, templates, medias = read_template_media("ijbc_face_tid_mid.txt")  # doctest: +SKIP
        >>> scores = read_faceness_scores("ijbc_name_5pts_score.txt", names)  # doctest: +SKIP
    """
    path, rows = _read_table(path, 2, "faceness score")
    table = {}
    for lineno, tokens in rows:
        try:
            table[tokens[0]] = float(tokens[-1])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: score {tokens[-1]!r} is not a number.") from None
    missing = [name for name in names if name not in table]
    if missing:
        raise ValueError(f"{path}: no score for image {missing[0]!r} ({len(missing)} image(s) missing).")
    return np.array([table[name] for name in names], dtype=np.float64)


def template_features(features, templates, medias):
    """Pool image features into L2-normalized template features (media average, then template sum).

    Args:
        features: (N, D) image features, one per line of the template/media file.
        templates, medias: (N,) template and media ids of each image.

    Returns:
        ``(template_feats, unique_templates)``: float64 (T, D) unit-norm rows for the sorted unique
        template ids.

    Raises:
        ValueError: if the lengths differ.

    Example:
        >>> feats, ids = template_features(np.eye(2), [7, 7], [1, 2])
        >>> ids.tolist(), feats.round(3).tolist()
        ([7], [[0.707, 0.707]])
    """
    features = np.asarray(features)
    templates = np.asarray(templates)
    medias = np.asarray(medias)
    if features.ndim != 2 or not (features.shape[0] == templates.shape[0] == medias.shape[0]):
        raise ValueError(
            f"`features` (N, D), `templates` (N,) and `medias` (N,) must agree; got {features.shape}, "
            f"{templates.shape} and {medias.shape}."
        )
    unique_templates = np.unique(templates)
    pooled = np.zeros((len(unique_templates), features.shape[1]))
    for k, template in enumerate(unique_templates):
        (rows,) = np.where(templates == template)
        face_feats = features[rows]
        face_medias = medias[rows]
        media_feats = []
        for media, count in zip(*np.unique(face_medias, return_counts=True)):
            (m,) = np.where(face_medias == media)
            if count == 1:
                media_feats.append(face_feats[m])
            else:  # the frames of one video count as one feature
                media_feats.append(np.mean(face_feats[m], axis=0, keepdims=True))
        pooled[k] = np.sum(np.array(media_feats), axis=0)
    return l2_normalize(pooled), unique_templates


@dataclasses.dataclass
class IJBResult:
    """IJB 1:1 verification: ``tar_at_far`` ({far: tar}), ``auc``, the ROC and the pair ``scores``."""

    tar_at_far: dict
    auc: float
    fpr: np.ndarray
    tpr: np.ndarray
    scores: np.ndarray
    n_pairs: int
    n_templates: int

    @property
    def roc_fpr(self):
        return self.fpr

    @property
    def roc_tpr(self):
        return self.tpr

    def to_dict(self):
        """Return the headline numbers as a JSON-serializable dict.

        Returns:
            A dict with `tar_at_far` (keys are the FARs formatted as strings,
            e.g. `"0.0001"`), `auc`, `n_pairs` and `n_templates`. The ROC
            arrays and pair scores are left out.
        """
        return {
            "tar_at_far": {f"{k:g}": v for k, v in self.tar_at_far.items()},
            "auc": self.auc,
            "n_pairs": self.n_pairs,
            "n_templates": self.n_templates,
        }

    def summary(self):
        """Return a one-line, human-readable summary.

        Returns:
            A string with the number of pairs and templates, the TAR (in %)
            at each FAR, and the AUC.
        """
        parts = ", ".join(f"TAR@FAR={k:g}: {v * 100:.2f}%" for k, v in sorted(self.tar_at_far.items()))
        return f"IJB 1:1 ({self.n_pairs} pairs, {self.n_templates} templates): {parts}; AUC {self.auc:.4f}"


def ijb_verification(
    features, templates, medias, t1, t2, labels, faceness_scores=None, normalize_images=False, far_targets=FAR_TARGETS
):
    """Template-level 1:1 verification from image features (see the module docstring for the protocol).

    Args:
        features: (N, D) image features in the order of the template/media file (flip-summed, raw).
        templates, medias: (N,) ids from :func:`read_template_media`.
        t1, t2, labels: the pairs from :func:`read_template_pairs`.
        faceness_scores: optional (N,) detector scores multiplied into the features (insightface "D1").
        normalize_images: L2-normalize each image feature first (insightface "N0"; default keeps the
            norm, "N1").
        far_targets: FARs at which to read the TAR.

    Returns:
        An :class:`IJBResult`.

    Raises:
        ValueError: on mismatched lengths, or a pair naming a template that has no image.

    Example:
        >>> r = ijb_verification(feats, templates, medias, t1, t2, labels)  # doctest: +SKIP
        >>> r.tar_at_far[1e-4]  # doctest: +SKIP
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"`features` must have shape (N, D); got {features.shape}.")
    if normalize_images:
        features = l2_normalize(features)
    if faceness_scores is not None:
        scores = np.asarray(faceness_scores)
        if scores.shape != (features.shape[0],):
            raise ValueError(
                f"`faceness_scores` must have one score per image ({features.shape[0]}); got {scores.shape}."
            )
        features = features * scores[:, np.newaxis]
    t1 = np.asarray(t1, dtype=np.int64)
    t2 = np.asarray(t2, dtype=np.int64)
    labels = np.asarray(labels)
    if not (t1.shape == t2.shape == labels.shape) or t1.ndim != 1:
        raise ValueError(f"`t1`, `t2`, `labels` must be 1-D of one length; got {t1.shape}, {t2.shape}, {labels.shape}.")
    feats, unique_templates = template_features(features, templates, medias)
    for name, ids in (("t1", t1), ("t2", t2)):
        missing = ~np.isin(ids, unique_templates)
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise ValueError(f"pair {i}: template {ids[i]} ({name}) has no image in the template/media list.")
    pos1 = np.searchsorted(unique_templates, t1)
    pos2 = np.searchsorted(unique_templates, t2)
    scores = np.sum(feats[pos1] * feats[pos2], -1)
    fpr, tpr, _ = roc_curve(labels, scores)
    return IJBResult(
        tar_at_far=tar_at_far(fpr, tpr, far_targets),
        auc=auc(fpr, tpr),
        fpr=fpr,
        tpr=tpr,
        scores=scores,
        n_pairs=int(t1.size),
        n_templates=int(unique_templates.size),
    )


def evaluate_ijb(
    model,
    image_dir,
    face_tid_mid,
    template_pair_label,
    batch_size=64,
    flip=True,
    faceness_scores=None,
    normalize_images=False,
    verbose=1,
    input_spec=None,
):
    """Embed the aligned IJB crops listed in ``face_tid_mid`` and run :func:`ijb_verification`.

    Args:
        model: a Keras model producing (N, D) embeddings.
        image_dir: folder of aligned 112x112 crops named as in the meta file.
        face_tid_mid: path of ``*_face_tid_mid.txt``.
        template_pair_label: path of ``*_template_pair_label.txt``.
        batch_size, flip: as in :func:`extract_embeddings`.
        faceness_scores: optional (N,) detector scores, or the path of ``*_name_5pts_score.txt``
            (:func:`read_faceness_scores`).
        normalize_images: see :func:`ijb_verification`.
        input_spec: the model's input specification (see :func:`extract_embeddings`).
        verbose: progress bar.

    Returns:
        An :class:`IJBResult`.

    Raises:
        FileNotFoundError: a missing meta file or image (named). ValueError: malformed files.

    Example:
        >>> evaluate_ijb(model, "IJBC/loose_crop_aligned", "ijbc_face_tid_mid.txt",
        ...              "ijbc_template_pair_label.txt")  # doctest: +SKIP
    """

    names, templates, medias = read_template_media(face_tid_mid)
    t1, t2, labels = read_template_pairs(template_pair_label)
    if isinstance(faceness_scores, (str, os.PathLike)):
        faceness_scores = read_faceness_scores(faceness_scores, names)
    image_dir = os.fspath(image_dir)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"IJB image folder not found: {image_dir}")
    paths = [os.path.join(image_dir, name) for name in names]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{os.fspath(face_tid_mid)}: image file not found: {path}")
    features = extract_embeddings(
        model, ImagePaths(paths), batch_size=batch_size, flip=flip, verbose=verbose, normalize=False,
        input_spec=input_spec,
    )
    return ijb_verification(
        features, templates, medias, t1, t2, labels, faceness_scores=faceness_scores, normalize_images=normalize_images
    )
