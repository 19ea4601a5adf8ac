"""Thresholds at a FAR, checked against a brute-force search over every candidate threshold."""

import numpy as np
import pytest

from keras_fr.evaluation.calibration import all_pairs_scores, calibrate, threshold_for_far


def _brute_force(impostor, far):
    """The smallest candidate threshold (each score, or just above it) whose FAR is <= far."""
    candidates = np.unique(np.concatenate([impostor, np.nextafter(impostor, np.inf)]))
    ok = [t for t in candidates if np.mean(impostor >= t) <= far]
    return min(ok)


@pytest.mark.parametrize("far", [0.5, 0.1, 0.013, 1e-3])
def test_threshold_matches_brute_force(far):
    rng = np.random.default_rng(0)
    impostor = np.round(rng.normal(0.1, 0.2, 3000), 3)  # rounding makes ties
    t = threshold_for_far(impostor, far)
    assert t == pytest.approx(_brute_force(impostor, far), abs=0)
    assert np.mean(impostor >= t) <= far


def test_too_few_impostors_refused():
    with pytest.raises(ValueError, match="300 impostor pairs cannot support FAR 0.001"):
        threshold_for_far(np.zeros(300), 1e-3)
    with pytest.raises(ValueError, match="far"):
        threshold_for_far(np.zeros(300), 0.0)
    with pytest.raises(ValueError, match="no impostor"):
        threshold_for_far(np.zeros(0), 0.1)


def test_calibrate_reports_tar_and_counts():
    rng = np.random.default_rng(1)
    genuine = rng.normal(0.7, 0.1, 500)
    impostor = rng.normal(0.0, 0.1, 20000)
    scores = np.concatenate([genuine, impostor])
    issame = np.concatenate([np.ones(500, bool), np.zeros(20000, bool)])
    cal = calibrate(scores, issame, fars=(1e-2, 1e-3))
    assert cal.genuine_pairs == 500 and cal.impostor_pairs == 20000
    for far in (1e-2, 1e-3):
        t = cal.thresholds[far]
        assert cal.tar[far] == pytest.approx(np.mean(genuine >= t))
        assert cal.far_measured[far] <= far
    assert cal.thresholds[1e-3] > cal.thresholds[1e-2]
    d = cal.as_dict()
    assert d["score"] == "cosine" and set(d["thresholds"]) == {"1e-02", "1e-03"}
    with pytest.raises(ValueError, match="no genuine"):
        calibrate(impostor, np.zeros(impostor.size, bool), fars=(1e-2,))
    with pytest.raises(ValueError, match="one entry per pair"):
        calibrate(scores, issame[:-1])


def test_all_pairs_scores_against_loops():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(7, 4))
    labels = np.array([0, 0, 1, 2, 2, 2, 3])
    scores, issame = all_pairs_scores(emb, labels)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    expected = [(unit[i] @ unit[j], labels[i] == labels[j]) for i in range(7) for j in range(i + 1, 7)]
    assert len(scores) == 21
    np.testing.assert_allclose(scores, [e[0] for e in expected], atol=1e-6)
    assert issame.tolist() == [bool(e[1]) for e in expected]
