"""1:1 verification: insightface's 10-fold protocol, ROC, AUC and TAR@FAR.

The protocol (insightface ``eval/verification.py``), reproduced here without scikit-learn or SciPy:

1. Embeddings are L2-normalized (the formula of ``sklearn.preprocessing.normalize``) and the distance of
   a pair is the squared Euclidean distance ``sum((e1 - e2) ** 2)``, computed in the embeddings' dtype.
2. A pair is predicted "same" when ``distance < threshold`` (strictly), for the thresholds
   ``np.arange(0, 4, 0.01)`` (400 values).
3. The pairs are split into ``nfolds`` contiguous folds in order (``KFold(n_splits, shuffle=False)``:
   the first ``n % nfolds`` folds hold one pair more). For each fold, the threshold with the best accuracy
   on the other folds is chosen (``np.argmax``: the first, i.e. smallest, threshold on ties) and the
   accuracy of that threshold on the held-out fold is recorded. ``accuracy`` and ``accuracy_std`` are
   ``np.mean`` and ``np.std`` (population std, ``ddof=0``) of the held-out accuracies.
4. VAL@FAR=1e-3 uses the finer grid ``np.arange(0, 4, 0.001)``: on the training folds, the threshold
   whose false-accept rate is 1e-3 is found by linear interpolation of the (FAR, threshold) curve, and
   the VAL (true-accept rate) and FAR of that threshold on the held-out fold are recorded. insightface
   calls ``scipy.interpolate.interp1d(far, thresholds, kind="slinear")``, which current SciPy refuses
   when FAR values repeat (they always do: FAR is 0 for every small threshold); insightface's users
   pin SciPy <= 1.8. :func:`threshold_at_far` evaluates the spline SciPy 1.8 built, without SciPy.

Counting uses sorted distances and ``np.searchsorted(side="left")`` (the number of distances strictly
below each threshold), which gives exactly the integer counts of the per-threshold loop of the reference.
"""

import dataclasses
import warnings

import numpy as np

#: insightface's accuracy threshold grid (squared Euclidean distance of unit vectors lies in [0, 4]).
ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
#: insightface's VAL@FAR threshold grid.
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
#: the FAR targets reported by :func:`tar_at_far` (insightface's IJB table plus 1e-1).
FAR_TARGETS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def l2_normalize(embeddings):
    """Divide each row by its L2 norm, exactly as ``sklearn.preprocessing.normalize`` does.

    The norm is ``sqrt(einsum("ij,ij->i", x, x))`` in the input's floating dtype; rows whose norm is
    below ``10 * eps`` of that dtype are left unscaled (divided by 1), as scikit-learn does.

    Args:
        embeddings: array-like of shape (N, D), floating (integers are converted to float64).

    Returns:
        A new array of the same floating dtype and shape with unit-norm rows.

    Raises:
        ValueError: if ``embeddings`` is not 2-D.

    Example:
        >>> l2_normalize(np.array([[3.0, 4.0]]))
        array([[0.6, 0.8]])
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"`embeddings` must have shape (N, D); got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0
    return x / norms[:, np.newaxis]


def kfold_indices(n, nfolds):
    """Train/test index arrays of ``KFold(n_splits=nfolds, shuffle=False)``: contiguous folds in order.

    The first ``n % nfolds`` folds hold ``n // nfolds + 1`` items, the others ``n // nfolds``.
    ``nfolds=1`` returns the whole set as both train and test (insightface's ``LFold`` does the same).

    Args:
        n: number of items.
        nfolds: number of folds, 1 <= nfolds <= n.

    Returns:
        A list of ``(train_indices, test_indices)`` int64 array pairs, one per fold.

    Raises:
        ValueError: if ``nfolds`` is not an integer in [1, n].

    Example:
        >>> [t.tolist() for _, t in kfold_indices(5, 2)]
        [[0, 1, 2], [3, 4]]
    """
    if isinstance(nfolds, bool) or not isinstance(nfolds, (int, np.integer)) or nfolds < 1:
        raise ValueError(f"`nfolds` must be a positive integer; got {nfolds!r}.")
    if nfolds > n:
        raise ValueError(f"`nfolds`={nfolds} is larger than the number of pairs ({n}).")
    indices = np.arange(n)
    if nfolds == 1:
        return [(indices, indices)]
    sizes = np.full(nfolds, n // nfolds, dtype=np.int64)
    sizes[: n % nfolds] += 1
    folds = []
    start = 0
    for size in sizes:
        stop = start + int(size)
        test = indices[start:stop]
        train = np.concatenate([indices[:start], indices[stop:]])
        folds.append((train, test))
        start = stop
    return folds


def pair_distances(emb1, emb2):
    """Squared Euclidean distance of each pair, ``sum((emb1 - emb2) ** 2, axis=1)`` in their dtype.

    Args:
        emb1: (P, D) embeddings of the first image of each pair.
        emb2: (P, D) embeddings of the second image of each pair.

    Returns:
        A (P,) array of squared distances.

    Example:
        >>> pair_distances(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 4.0], [1.0, 1.0]]))
        array([25.,  0.])
    """
    return np.sum(np.square(np.subtract(emb1, emb2)), 1)


def _accept_counts(dist, issame, thresholds):
    """For each threshold: (#same pairs with dist < t, #different pairs with dist < t)."""
    dist = np.asarray(dist, dtype=np.float64)  # exact: float32 values compared in float64
    same = np.sort(dist[issame])
    diff = np.sort(dist[~issame])
    tp = np.searchsorted(same, thresholds, side="left")
    fp = np.searchsorted(diff, thresholds, side="left")
    return tp, fp, same.size, diff.size


def _rates(dist, issame, thresholds):
    """(tpr, fpr, accuracy) arrays over ``thresholds``, as insightface's ``calculate_accuracy``."""
    tp, fp, n_same, n_diff = _accept_counts(dist, issame, thresholds)
    tn = n_diff - fp
    tpr = tp / n_same if n_same else np.zeros(len(thresholds))
    fpr = fp / n_diff if n_diff else np.zeros(len(thresholds))
    acc = (tp + tn) / dist.size
    return tpr, fpr, acc


def threshold_at_far(far, thresholds, far_target):
    """The threshold whose FAR is ``far_target``, by linear interpolation of ``far`` -> ``thresholds``.

    insightface calls ``scipy.interpolate.interp1d(far, thresholds, kind="slinear")(far_target)``. Up to
    SciPy 1.8 that is a degree-1 B-spline with a knot at every point (``t = [x0, x0, ..., x_last, x_last]``,
    coefficients = the thresholds, points in stable-sorted order) and no check for repeated x; newer SciPy
    refuses repeated x ("Expect x to not have duplicates"), and FAR values always repeat (FAR is 0 for every
    small threshold). This function evaluates that same spline directly, so it never raises:

    - if ``max(far) < far_target``: 0.0 (insightface's fallback: accept nothing);
    - else, with ``a`` the last index where ``far[a] <= far_target`` and ``b = a + 1``:
      ``w = 1 / (far[b] - far[a])`` and the threshold is
      ``thresholds[a] * (w * (far[b] - x)) + thresholds[b] * (w * (x - far[a]))``, the de Boor evaluation
      of the spline on the knot interval ``[far[a], far[b])``. So a target strictly between two FAR values
      interpolates between the last threshold of the lower FAR and the first threshold of the higher one,
      and a target equal to a repeated FAR gives the last (largest) threshold with that FAR.
    - if the target equals the largest FAR (``a`` is the last index), the last interval is used; if that
      interval has zero length (the largest FAR repeated), the last threshold is returned (SciPy 1.8 would
      return NaN there, which makes the held-out VAL and FAR 0; a target equal to the largest training FAR,
      usually 1.0, does not occur in practice).

    With unique FAR values this is exactly ``interp1d(far, thresholds, kind="slinear")(far_target)`` of
    every SciPy version that runs it.

    Args:
        far: 1-D array of false-accept rates, one per threshold, non-decreasing.
        thresholds: 1-D increasing array, same length.
        far_target: the FAR wanted, e.g. 1e-3.

    Returns:
        The threshold as a Python float.

    Raises:
        ValueError: if the lengths differ or ``far`` decreases somewhere.

    Example:
        >>> threshold_at_far(np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 1.0, 2.0, 3.0]), 0.25)
        1.5
    """
    far = np.asarray(far, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if far.shape != thresholds.shape or far.ndim != 1:
        raise ValueError(
            f"`far` and `thresholds` must be 1-D of the same length; got {far.shape} and {thresholds.shape}."
        )
    if np.any(np.diff(far) < 0):
        raise ValueError("`far` must be non-decreasing along the thresholds.")
    x = float(far_target)
    if far.max() < x:
        return 0.0
    a = int(np.searchsorted(far, x, side="right")) - 1
    if a < 0:  # every FAR is above the target (cannot happen: FAR is 0 at threshold 0)
        return float(thresholds[0])
    if a == len(far) - 1:  # the target is the largest FAR: the spline's last interval
        if len(far) == 1 or far[a - 1] == far[a]:
            return float(thresholds[a])
        a -= 1
    b = a + 1
    w = 1.0 / (far[b] - far[a])
    return float(thresholds[a] * (w * (far[b] - x)) + thresholds[b] * (w * (x - far[a])))


def roc_curve(labels, scores, drop_intermediate=True):
    """The ROC of ``scores`` (higher = more alike), point for point as ``sklearn.metrics.roc_curve``.

    Scores are sorted in decreasing order (stable merge sort), one point per distinct score; with
    ``drop_intermediate`` the points where both the FP and TP counts are collinear (zero second
    difference) are dropped, and a first point (0, 0) with threshold ``inf`` is prepended. insightface's
    IJB evaluation reads TAR@FAR from this curve, so the same points are kept here.

    Args:
        labels: 1-D array of 0/1 or bool (1 = same identity).
        scores: 1-D array of similarity scores, same length.
        drop_intermediate: drop the collinear points (scikit-learn's default).

    Returns:
        ``(fpr, tpr, thresholds)`` float64 arrays.

    Raises:
        ValueError: if the shapes differ, or one class is absent.

    Example:
        >>> fpr, tpr, _ = roc_curve([1, 0], [0.9, 0.1])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    """
    y = np.asarray(labels).astype(np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"`labels` and `scores` must have the same length; got {y.size} and {s.size}.")
    order = np.argsort(s, kind="mergesort")[::-1]
    s = s[order]
    y = y[order]
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[idx]
    fps = 1 + idx - tps
    thresholds = s[idx]
    if drop_intermediate and len(fps) > 2:
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    thresholds = np.r_[np.inf, thresholds]
    if fps[-1] <= 0 or tps[-1] <= 0:
        raise ValueError("the ROC needs both positive (same) and negative (different) pairs.")
    return fps / fps[-1], tps / tps[-1], thresholds


def tar_at_far(fpr, tpr, far_targets=FAR_TARGETS):
    """TAR at each FAR target, read from a ROC as insightface's IJB script does.

    The ROC is reversed (so that, among points of equal FAR, the largest TPR comes first) and for each
    target the first point with the smallest ``|fpr - target|`` is taken. When the target is below the
    ROC's resolution (e.g. 1e-6 with 3,000 negative pairs) this is the nearest point, whose FAR may be
    larger than the target; that is the published protocol.

    Args:
        fpr, tpr: a ROC from :func:`roc_curve`.
        far_targets: FARs to read.

    Returns:
        A dict ``{far_target: tar}`` of Python floats.

    Example:
        >>> tar_at_far(np.array([0.0, 0.5, 1.0]), np.array([0.5, 0.9, 1.0]), (0.4,))
        {0.4: 0.9}
    """
    fpr_r = np.flipud(np.asarray(fpr, dtype=np.float64))
    tpr_r = np.flipud(np.asarray(tpr, dtype=np.float64))
    result = {}
    for target in far_targets:
        i = int(np.argmin(np.abs(fpr_r - target)))
        result[float(target)] = float(tpr_r[i])
    return result


def auc(fpr, tpr):
    """Area under a ROC curve by the trapezoidal rule (``sklearn.metrics.auc``).

    Args:
        fpr: false positive rates, the x coordinates of the curve, in
            increasing order.
        tpr: true positive rates at those points.

    Returns:
        The area as a Python float.

    Example:
        >>> auc([0.0, 0.5, 1.0], [0.0, 1.0, 1.0])
        0.75
    """
    return float(np.trapezoid(np.asarray(tpr, dtype=np.float64), np.asarray(fpr, dtype=np.float64)))


@dataclasses.dataclass
class VerificationResult:
    """What :func:`verify_pairs` measures.

    Attributes:
        accuracy: mean held-out accuracy over the folds (insightface's "Accuracy-Flip" when the
            embeddings used flip TTA).
        accuracy_std: population std (``ddof=0``) of the held-out accuracies.
        threshold: the best threshold on the grid chosen on all pairs together (the one to deploy).
        val, val_std, far: VAL (TAR) at FAR=1e-3 with the 10-fold interpolated threshold, its std and the
            mean achieved held-out FAR. ``nan`` when a held-out fold lacks same or different pairs.
        auc: area under the ROC of all pairs (score = -distance).
        tar_at_far: ``{far: tar}`` for FAR 1e-1 .. 1e-6 from the ROC of all pairs (see :func:`tar_at_far`).
        fold_accuracies, fold_thresholds: per held-out fold.
        thresholds, tpr, fpr: insightface's ROC, the fold-mean TPR/FPR on the 400-threshold grid.
        roc_fpr, roc_tpr: the exact ROC of all pairs.
        n_pairs, n_same, n_diff, nfolds: counts.
    """

    accuracy: float
    accuracy_std: float
    threshold: float
    val: float
    val_std: float
    far: float
    auc: float
    tar_at_far: dict
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    fold_sizes: np.ndarray
    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    n_pairs: int
    n_same: int
    n_diff: int
    nfolds: int
    seconds: float = None

    def to_dict(self, curves=False):
        """A JSON-ready dict of the scalars and per-fold values (plus the ROC arrays if ``curves``)."""
        out = {
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "threshold": self.threshold,
            "threshold_cosine": 1.0 - self.threshold / 2.0,
            "val": self.val,
            "val_std": self.val_std,
            "far": self.far,
            "auc": self.auc,
            "tar_at_far": {f"{k:g}": v for k, v in self.tar_at_far.items()},
            "fold_accuracies": [float(v) for v in self.fold_accuracies],
            "fold_thresholds": [float(v) for v in self.fold_thresholds],
            "fold_sizes": [int(v) for v in self.fold_sizes],
            "n_pairs": self.n_pairs,
            "n_same": self.n_same,
            "n_diff": self.n_diff,
            "nfolds": self.nfolds,
        }
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if curves:
            out["roc"] = {"fpr": self.roc_fpr.tolist(), "tpr": self.roc_tpr.tolist()}
            out["grid_roc"] = {
                "thresholds": self.thresholds.tolist(),
                "fpr": self.fpr.tolist(),
                "tpr": self.tpr.tolist(),
            }
        return out

    def summary(self):
        """One line: accuracy +- std, the threshold as a cosine similarity, VAL@FAR, AUC.

        The threshold is printed in the one convention of every ``keras-fr`` output: cosine
        similarity of the L2-normalized embeddings ("same" when cosine > t; ``self.threshold`` is
        the protocol's squared distance d = 2 - 2 * cosine).
        """
        return (
            f"accuracy {self.accuracy * 100:.2f}% +- {self.accuracy_std * 100:.2f} "
            f"({self.nfolds} folds, {self.n_pairs} pairs, threshold cosine "
            f"{1.0 - self.threshold / 2.0:.3f}); "
            f"VAL {self.val * 100:.2f}% +- {self.val_std * 100:.2f} @ FAR {self.far:.5f}; AUC {self.auc:.4f}"
        )


def _check_inputs(emb1, emb2, issame):
    e1 = np.asarray(emb1)
    e2 = np.asarray(emb2)
    if e1.ndim != 2 or e2.ndim != 2:
        raise ValueError(
            f"`emb1` and `emb2` must have shape (num_pairs, dim); got {e1.shape} and {e2.shape}."
        )
    if e1.shape != e2.shape:
        raise ValueError(f"`emb1` {e1.shape} and `emb2` {e2.shape} must have the same shape.")
    same = np.asarray(issame)
    if same.ndim != 1 or same.shape[0] != e1.shape[0]:
        raise ValueError(
            f"`issame` must be a 1-D array with one flag per pair ({e1.shape[0]}); got shape {same.shape}."
        )
    if same.dtype != bool:
        if not np.all(np.isin(same, (0, 1))):
            raise ValueError("`issame` must hold booleans or 0/1 values.")
        same = same.astype(bool)
    if e1.shape[0] < 2:
        raise ValueError(f"need at least 2 pairs; got {e1.shape[0]}.")
    if not (np.issubdtype(e1.dtype, np.number) and np.issubdtype(e2.dtype, np.number)):
        raise ValueError("`emb1` and `emb2` must be numeric arrays.")
    if not (np.all(np.isfinite(e1)) and np.all(np.isfinite(e2))):
        raise ValueError("`emb1`/`emb2` contain NaN or infinite values.")
    return e1, e2, same


def verify_pairs(emb1, emb2, issame, nfolds=10, normalize=True, far_target=1e-3):
    """Verification accuracy of embedding pairs with insightface's k-fold protocol.

    See the module docstring for the exact protocol. ``emb1[i]`` and ``emb2[i]`` are the two faces of
    pair ``i``; insightface's ``.bin`` order (``embeddings[0::2]``, ``embeddings[1::2]``) is the same.

    Args:
        emb1: (P, D) embeddings of the first face of each pair.
        emb2: (P, D) embeddings of the second face.
        issame: (P,) bool (or 0/1): whether pair ``i`` shows the same person.
        nfolds: number of contiguous folds (10 in every published protocol).
        normalize: L2-normalize the embeddings first (as insightface does). Pass ``False`` only for
            embeddings that are already normalized, e.g. from :func:`extract_embeddings`.
        far_target: the FAR of the VAL measure (1e-3).

    Returns:
        A :class:`VerificationResult`.

    Raises:
        ValueError: on mismatched shapes, non-finite values, bad flags or an invalid ``nfolds``.

    Example:
        >>> e = np.eye(4, dtype="float32")
        >>> verify_pairs(e[[0, 0, 1, 1]], e[[0, 2, 1, 3]], [1, 0, 1, 0], nfolds=2).accuracy
        1.0
    """
    e1, e2, issame = _check_inputs(emb1, emb2, issame)
    if normalize:
        e1 = l2_normalize(e1)
        e2 = l2_normalize(e2)
    dist = pair_distances(e1, e2)
    n = dist.shape[0]
    folds = kfold_indices(n, nfolds)

    thresholds = ACCURACY_THRESHOLDS
    tprs = np.zeros((nfolds, len(thresholds)))
    fprs = np.zeros((nfolds, len(thresholds)))
    accuracy = np.zeros(nfolds)
    fold_thresholds = np.zeros(nfolds)
    for k, (train, test) in enumerate(folds):
        _, _, acc_train = _rates(dist[train], issame[train], thresholds)
        best = int(np.argmax(acc_train))
        tprs[k], fprs[k], acc_test = _rates(dist[test], issame[test], thresholds)
        accuracy[k] = acc_test[best]
        fold_thresholds[k] = thresholds[best]
    tpr = np.mean(tprs, 0)
    fpr = np.mean(fprs, 0)

    # VAL @ FAR on the finer grid.
    val_grid = VAL_THRESHOLDS
    val = np.zeros(nfolds)
    far = np.zeros(nfolds)
    undefined = False
    for k, (train, test) in enumerate(folds):
        _, fp, _, n_diff_train = _accept_counts(dist[train], issame[train], val_grid)
        if n_diff_train == 0:
            undefined = True
            val[k] = far[k] = np.nan
            continue
        far_train = fp / n_diff_train
        t = threshold_at_far(far_train, val_grid, far_target)
        test_d = dist[test].astype(np.float64)
        accept = test_d < t
        n_same = int(np.sum(issame[test]))
        n_diff = int(np.sum(~issame[test]))
        if n_same == 0 or n_diff == 0:
            undefined = True
            val[k] = far[k] = np.nan
            continue
        val[k] = np.sum(accept & issame[test]) / n_same
        far[k] = np.sum(accept & ~issame[test]) / n_diff
    if undefined:
        warnings.warn(
            "VAL@FAR is undefined (nan): a fold has no same or no different pairs. The k-fold "
            "protocol expects every contiguous fold to mix both (pairs ordered fold by fold, as in "
            "LFW's pairs.txt and insightface's .bin files).",
            stacklevel=2,
        )

    _, _, acc_all = _rates(dist, issame, thresholds)
    n_same_all = int(issame.sum())
    n_diff_all = n - n_same_all
    if n_same_all and n_diff_all:
        roc_fpr, roc_tpr, _ = roc_curve(issame, -dist.astype(np.float64))
        area = auc(roc_fpr, roc_tpr)
        tars = tar_at_far(roc_fpr, roc_tpr)
    else:
        roc_fpr = roc_tpr = np.array([np.nan])
        area = float("nan")
        tars = {float(f): float("nan") for f in FAR_TARGETS}
    return VerificationResult(
        accuracy=float(np.mean(accuracy)),
        accuracy_std=float(np.std(accuracy)),
        threshold=float(thresholds[int(np.argmax(acc_all))]),
        val=float(np.mean(val)),
        val_std=float(np.std(val)),
        far=float(np.mean(far)),
        auc=area,
        tar_at_far=tars,
        fold_accuracies=accuracy,
        fold_thresholds=fold_thresholds,
        fold_sizes=np.array([len(test) for _, test in folds]),
        thresholds=thresholds.copy(),
        tpr=tpr,
        fpr=fpr,
        roc_fpr=roc_fpr,
        roc_tpr=roc_tpr,
        n_pairs=int(n),
        n_same=n_same_all,
        n_diff=n_diff_all,
        nfolds=int(nfolds),
    )
