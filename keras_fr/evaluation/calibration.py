"""Verification thresholds calibrated at a false-accept rate, on cosine similarity.

One score convention everywhere in keras_fr's user surface: the cosine similarity of two embeddings
(higher = more alike; ``1 - d / 2`` for the squared Euclidean distance ``d`` of unit vectors). A pair is
accepted as "same person" when ``score >= threshold``.

The threshold for a target FAR ``f`` is read off the impostor (different-person) scores: with ``n``
impostor pairs, at most ``floor(f * n)`` of them may be accepted, so the threshold is the smallest
float strictly above the ``(floor(f * n) + 1)``-th highest impostor score. A FAR target needs enough
impostor pairs to mean anything: fewer than ``1 / f`` pairs is an error (the threshold would be "above
every impostor", whatever ``f`` is), and the count is reported with every threshold.
"""

import dataclasses

import numpy as np
from keras_fr.evaluation.verification import l2_normalize

#: The FAR targets every preset carries.
PRESET_FARS = (1e-2, 1e-3, 1e-4)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Thresholds on cosine similarity at given FARs, and what they were measured on.

    Attributes:
        thresholds: ``{far: threshold}``.
        tar: ``{far: true-accept rate at that threshold}`` on the genuine pairs.
        far_measured: ``{far: the FAR the threshold actually gives on the impostor pairs}``.
        genuine_pairs: number of same-person pairs.
        impostor_pairs: number of different-person pairs.
    """

    thresholds: dict
    tar: dict
    far_measured: dict
    genuine_pairs: int
    impostor_pairs: int

    def as_dict(self):
        """JSON-ready form with FARs written as ``"1e-03"`` style keys."""
        key = _far_key
        return {
            "score": "cosine",
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "thresholds": {key(f): round(float(t), 6) for f, t in self.thresholds.items()},
            "tar": {key(f): round(float(v), 6) for f, v in self.tar.items()},
            "far_measured": {key(f): float(v) for f, v in self.far_measured.items()},
        }


def _far_key(far):
    return f"{far:.0e}"


def parse_far_key(key):
    """``"1e-03"`` or ``"1e-3"`` -> 0.001."""
    return float(key)


def _check_far(far):
    far = float(far)
    if not 0.0 < far < 1.0:
        raise ValueError(f"`far` must be in (0, 1); got {far}.")
    return far


def threshold_for_far(impostor_scores, far):
    """The smallest threshold whose FAR on ``impostor_scores`` is at most ``far``.

    Args:
        impostor_scores: 1-D cosine similarities of different-person pairs.
        far: the target false-accept rate, in (0, 1).

    Returns:
        The threshold (a Python float): pairs scoring ``>=`` it are accepted.

    Raises:
        ValueError: ``far`` outside (0, 1), no impostor scores, or fewer than ``1 / far`` of them.

    Example:
        >>> threshold_for_far(np.array([0.1, 0.2, 0.3, 0.9]), 0.25) > 0.9
        True
    """
    far = _check_far(far)
    scores = np.asarray(impostor_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("no impostor (different-person) pairs to calibrate on.")
    if not np.all(np.isfinite(scores)):
        raise ValueError("impostor scores must be finite.")
    if scores.size * far < 1.0:
        raise ValueError(
            f"{scores.size} impostor pairs cannot support FAR {far:g}: at least {int(np.ceil(1 / far))} "
            "are needed (use more different-person pairs, e.g. all cross-identity pairs)."
        )
    allowed = int(np.floor(far * scores.size))
    ordered = np.sort(scores)[::-1]
    # Accept at most `allowed` impostors: the threshold sits just above the next one down.
    return float(np.nextafter(ordered[allowed], np.inf))


def calibrate(scores, issame, fars=PRESET_FARS):
    """Thresholds at each FAR in ``fars``, with the TAR they give.

    Args:
        scores: 1-D cosine similarities, one per pair.
        issame: 1-D booleans, True for same-person pairs.
        fars: FAR targets.

    Returns:
        A :class:`Calibration`.

    Raises:
        ValueError: mismatched shapes, no genuine or too few impostor pairs for a target.

    Example:
        >>> cal = calibrate(scores, issame, fars=(1e-3,))  # doctest: +SKIP
        >>> cal.thresholds[1e-3], cal.tar[1e-3]  # doctest: +SKIP
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    issame = np.asarray(issame).astype(bool).ravel()
    if scores.shape != issame.shape:
        raise ValueError(
            f"`scores` and `issame` must have one entry per pair; got {scores.shape} and {issame.shape}."
        )
    genuine = scores[issame]
    impostor = scores[~issame]
    if genuine.size == 0:
        raise ValueError("no genuine (same-person) pairs to calibrate on.")
    thresholds, tar, far_measured = {}, {}, {}
    for far in fars:
        far = _check_far(far)
        t = threshold_for_far(impostor, far)
        thresholds[far] = t
        tar[far] = float(np.mean(genuine >= t))
        far_measured[far] = float(np.mean(impostor >= t))
    return Calibration(thresholds, tar, far_measured, int(genuine.size), int(impostor.size))


def all_pairs_scores(embeddings, labels):
    """Cosine scores of every pair of distinct rows, split into genuine and impostor.

    For a set of ``N`` images this gives ``N (N - 1) / 2`` pairs: the way to get enough impostor pairs
    for FAR 1e-4 from a few hundred identities.

    Args:
        embeddings: (N, D) array; rows are L2-normalized here.
        labels: (N,) identity labels.

    Returns:
        ``(scores, issame)``, both 1-D over the upper-triangle pairs.

    Example:
        >>> scores, issame = all_pairs_scores(np.eye(3), [0, 0, 1])
        >>> scores.tolist(), issame.tolist()
        ([0.0, 0.0, 0.0], [True, False, False])
    """

    emb = l2_normalize(np.asarray(embeddings, dtype=np.float32))
    labels = np.asarray(labels)
    if labels.shape != (emb.shape[0],):
        raise ValueError(f"`labels` must have one entry per embedding ({emb.shape[0]}); got {labels.shape}.")
    rows, cols = np.triu_indices(emb.shape[0], k=1)
    sim = emb @ emb.T
    return sim[rows, cols].astype(np.float64), labels[rows] == labels[cols]
