"""The k-fold verification protocol against hand-checkable cases and an independent brute-force version."""

import warnings

import numpy as np
import pytest

from keras_fr.evaluation import (
    ACCURACY_THRESHOLDS,
    VAL_THRESHOLDS,
    auc,
    kfold_indices,
    l2_normalize,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    verify_pairs,
)


def _pairs_with_distances(distances):
    """Unit vectors in 2-D whose squared Euclidean distance is ``d`` (2 - 2 cos(theta) = d)."""
    d = np.asarray(distances, dtype=np.float64)
    cos = 1.0 - d / 2.0
    sin = np.sqrt(1.0 - cos**2)
    e1 = np.tile([[1.0, 0.0]], (len(d), 1))
    e2 = np.stack([cos, sin], axis=1)
    return e1, e2


def _fold_layout(nfolds, per_class):
    """issame flags laid out like LFW's pairs.txt: per fold, `per_class` same then `per_class` different."""
    return np.tile(np.r_[np.ones(per_class, bool), np.zeros(per_class, bool)], nfolds)


# ---------------------------------------------------------------- the grid and the folds


def test_threshold_grids_are_insightface_grids():
    assert len(ACCURACY_THRESHOLDS) == 400
    assert ACCURACY_THRESHOLDS[0] == 0.0 and ACCURACY_THRESHOLDS[1] == 0.01
    np.testing.assert_allclose(ACCURACY_THRESHOLDS, [i / 100 for i in range(400)], atol=1e-12)
    assert len(VAL_THRESHOLDS) == 4000
    np.testing.assert_allclose(VAL_THRESHOLDS, [i / 1000 for i in range(4000)], atol=1e-12)


def test_kfold_contiguous_in_order_like_sklearn():
    folds = kfold_indices(23, 5)
    tests = [t.tolist() for _, t in folds]
    # scikit-learn's KFold: the first n % k folds get one more item, contiguous, in order.
    assert tests == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18], [19, 20, 21, 22]]
    for train, test in folds:
        assert sorted(train.tolist() + test.tolist()) == list(range(23))
        assert not set(train.tolist()) & set(test.tolist())
    (train, test), = kfold_indices(4, 1)
    assert train.tolist() == test.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="nfolds"):
        kfold_indices(3, 4)
    with pytest.raises(ValueError, match="nfolds"):
        kfold_indices(3, 0)


# ---------------------------------------------------------------- hand-checkable cases


def test_perfectly_separable_gives_accuracy_one():
    issame = _fold_layout(10, 3)
    d = np.where(issame, 0.3, 1.7)
    e1, e2 = _pairs_with_distances(d)
    r = verify_pairs(e1, e2, issame)
    assert r.accuracy == 1.0 and r.accuracy_std == 0.0
    assert r.fold_accuracies.tolist() == [1.0] * 10
    # every fold chooses the first threshold above 0.3 that separates: 0.31
    np.testing.assert_allclose(r.fold_thresholds, 0.31, atol=1e-12)
    assert r.auc == 1.0
    assert r.val == 1.0  # (FAR: see test_val_when_all_impostors_share_one_distance)
    assert r.n_pairs == 60 and r.n_same == 30 and r.fold_sizes.tolist() == [6] * 10


def test_identical_same_pairs_need_the_second_grid_value():
    # distance 0 is not < threshold 0: the first accepting threshold is the grid's second value, 0.01.
    issame = _fold_layout(10, 2)
    e = np.eye(4)
    e1 = np.tile(e[[0, 0, 0, 0]], (10, 1))
    e2 = np.tile(e[[0, 0, 1, 2]], (10, 1))
    r = verify_pairs(e1, e2, issame)
    assert np.all(r.fold_thresholds == ACCURACY_THRESHOLDS[1])
    assert r.threshold == ACCURACY_THRESHOLDS[1]
    assert r.accuracy == 1.0


def test_best_threshold_differs_per_fold():
    # two folds of 10: fold A (pairs 0-9): same at 0.955, different at 1.955; fold B: 0.455 / 1.455.
    issame = _fold_layout(2, 5)
    d = np.where(issame, 0.955, 1.955)
    d[10:] = np.where(issame[10:], 0.455, 1.455)
    e1, e2 = _pairs_with_distances(d)
    r = verify_pairs(e1, e2, issame, nfolds=2)
    # fold A is tested with the threshold learned on B: first grid value above 0.455 is 0.46, so the
    # same pairs of A (0.955) are rejected: accuracy 0.5. B is tested with A's 0.96: accuracy 1.
    np.testing.assert_allclose(r.fold_thresholds, [0.46, 0.96], atol=1e-12)
    assert r.fold_accuracies.tolist() == [0.5, 1.0]
    assert r.accuracy == 0.75
    assert r.accuracy_std == 0.25  # population std of [0.5, 1.0]


def test_random_embeddings_are_at_chance():
    rng = np.random.default_rng(1)
    e1 = rng.normal(size=(2000, 32))
    e2 = rng.normal(size=(2000, 32))
    issame = _fold_layout(10, 100)
    r = verify_pairs(e1, e2, issame)
    assert 0.44 < r.accuracy < 0.56
    assert 0.44 < r.auc < 0.56
    assert 0 <= r.val <= 1


def test_normalization_makes_scale_irrelevant():
    rng = np.random.default_rng(2)
    e1 = rng.normal(size=(200, 8))
    e2 = e1 + rng.normal(size=(200, 8))
    issame = _fold_layout(10, 10)
    e2[~issame] = rng.normal(size=(100, 8))
    a = verify_pairs(e1, e2, issame)
    b = verify_pairs(e1 * 7.0, e2 * 0.1, issame)
    assert a.accuracy == b.accuracy and np.array_equal(a.fold_thresholds, b.fold_thresholds)


# ---------------------------------------------------------------- an independent brute-force version


def _brute_force(e1, e2, issame, nfolds):
    """The protocol written from its description, with explicit loops over pairs, folds and thresholds."""
    n = len(issame)
    x1 = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    x2 = e2 / np.linalg.norm(e2, axis=1, keepdims=True)
    dist = [float(np.dot(x1[i] - x2[i], x1[i] - x2[i])) for i in range(n)]
    sizes = [n // nfolds + (1 if k < n % nfolds else 0) for k in range(nfolds)]
    bounds = np.cumsum([0] + sizes)
    thresholds = [i * 0.01 for i in range(400)]
    accs, chosen = [], []
    for k in range(nfolds):
        test = list(range(bounds[k], bounds[k + 1]))
        train = [i for i in range(n) if i not in test]
        best_t, best_correct = None, -1
        for t in thresholds:
            correct = sum((dist[i] < t) == bool(issame[i]) for i in train)
            if correct > best_correct:  # strict: the first threshold wins ties
                best_t, best_correct = t, correct
        accs.append(sum((dist[i] < best_t) == bool(issame[i]) for i in test) / len(test))
        chosen.append(best_t)
    mean = sum(accs) / nfolds
    std = (sum((a - mean) ** 2 for a in accs) / nfolds) ** 0.5
    return accs, chosen, mean, std


@pytest.mark.parametrize("n, nfolds", [(300, 10), (157, 10), (90, 3)])
def test_matches_brute_force(n, nfolds):
    rng = np.random.default_rng(n)
    e1 = rng.normal(size=(n, 16))
    issame = rng.random(n) < 0.5
    noise = np.where(issame[:, None], 0.9, 3.0)
    e2 = e1 + noise * rng.normal(size=(n, 16))
    accs, chosen, mean, std = _brute_force(e1, e2, issame, nfolds)
    r = verify_pairs(e1, e2, issame, nfolds=nfolds)
    np.testing.assert_allclose(r.fold_accuracies, accs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.fold_thresholds, chosen, rtol=0, atol=1e-9)
    assert r.accuracy == pytest.approx(mean, abs=1e-12)
    assert r.accuracy_std == pytest.approx(std, abs=1e-12)


def test_grid_roc_is_the_fold_mean_of_test_rates():
    rng = np.random.default_rng(5)
    e1 = rng.normal(size=(40, 4))
    e2 = rng.normal(size=(40, 4))
    issame = _fold_layout(4, 5)
    r = verify_pairs(e1, e2, issame, nfolds=4)
    x1, x2 = l2_normalize(e1), l2_normalize(e2)
    d = ((x1 - x2) ** 2).sum(1)
    t = ACCURACY_THRESHOLDS[150]
    tprs = [np.mean(d[k * 10 : k * 10 + 10][issame[k * 10 : k * 10 + 10]] < t) for k in range(4)]
    fprs = [np.mean(d[k * 10 : k * 10 + 10][~issame[k * 10 : k * 10 + 10]] < t) for k in range(4)]
    assert r.tpr[150] == pytest.approx(np.mean(tprs), abs=1e-12)
    assert r.fpr[150] == pytest.approx(np.mean(fprs), abs=1e-12)


# ---------------------------------------------------------------- VAL @ FAR


def test_threshold_at_far_unique_fars_is_linear_interpolation():
    far = np.array([0.0, 0.0005, 0.0008, 0.0015, 0.004])
    thr = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    # between (0.0008, 0.3) and (0.0015, 0.4): 0.3 + 0.1 * (0.0002 / 0.0007)
    assert threshold_at_far(far, thr, 1e-3) == pytest.approx(0.3 + 0.1 * 2 / 7, abs=1e-15)
    assert threshold_at_far(far, thr, 0.0015) == pytest.approx(0.4, abs=1e-15)  # on a point: its threshold
    assert threshold_at_far(far, thr, 0.01) == 0.0  # unreachable: insightface's fallback


def test_threshold_at_far_repeated_fars_does_not_fail():
    far = np.array([0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 1.0])
    thr = np.arange(7.0)
    # from the last threshold with FAR 0 (2.0) to the first with FAR 0.25 (3.0)
    assert threshold_at_far(far, thr, 0.1) == pytest.approx(2.4, abs=1e-12)
    assert threshold_at_far(far, thr, 0.25) == pytest.approx(4.0, abs=1e-12)  # the largest with that FAR
    assert threshold_at_far(far, thr, 1.0) == pytest.approx(6.0, abs=1e-12)  # the end of the curve
    assert threshold_at_far(far, thr, 0.75) == pytest.approx(5.5, abs=1e-12)
    with pytest.raises(ValueError, match="non-decreasing"):
        threshold_at_far(far[::-1], thr, 0.1)


def _scipy18_slinear(far, thresholds, x):
    """The degree-1 B-spline interp1d(kind="slinear") built up to SciPy 1.8, evaluated the textbook way:
    knots (x0, x0, x1, ..., x_last, x_last), coefficients = thresholds, the interval found as the largest
    l with t[l] <= x < t[l + 1], value = sum of the two hat functions there."""
    t = [far[0]] + list(far) + [far[-1]]
    n = len(far)
    l = 1
    while l < n and x >= t[l + 1]:
        l += 1
    if l == n:  # right end: the last interval
        l = n - 1
    left, right = t[l], t[l + 1]
    hat_down = (right - x) / (right - left)
    hat_up = (x - left) / (right - left)
    return thresholds[l - 1] * hat_down + thresholds[l] * hat_up


def test_threshold_at_far_is_the_old_scipy_spline():
    rng = np.random.default_rng(11)
    for trial in range(200):
        steps = rng.integers(0, 3, size=60) * (rng.random(60) < 0.5)  # many repeats
        far = np.concatenate([[0.0], np.cumsum(steps)]) / max(1, steps.sum())
        thr = np.arange(len(far)) * 0.01
        x = rng.choice([rng.random() * far.max(), far[rng.integers(1, len(far) - 1)]])
        if x <= 0 or x >= far.max():
            continue
        assert threshold_at_far(far, thr, x) == pytest.approx(_scipy18_slinear(far, thr, x), abs=1e-12), trial


def test_val_when_all_impostors_share_one_distance():
    # Impostor pairs are orthogonal (distance exactly 2): the training FAR is 0 up to threshold 2.0 and
    # 1 after it, repeated thousands of times -- where insightface's interp1d call fails.
    issame = _fold_layout(10, 3)
    e = np.eye(3)
    e1 = np.tile(e[[0]], (60, 1))
    e2 = np.where(issame[:, None], e[[0]], e[[1]])
    e2 = e2 + np.where(issame[:, None], 0.2 * e[[2]], 0)  # same pairs a little apart
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = verify_pairs(e1, e2, issame)
    grid = VAL_THRESHOLDS
    a = np.flatnonzero(grid <= 2.0)[-1]
    expected_t = grid[a] * (1 - 1e-3) + grid[a + 1] * 1e-3
    assert expected_t > 2.0  # so every impostor (distance 2) is accepted on the held-out fold
    assert r.val == 1.0 and r.far == 1.0 and r.val_std == 0.0


def test_val_matches_direct_computation_on_random_data():
    rng = np.random.default_rng(7)
    n = 4000
    issame = _fold_layout(10, 200)
    e1 = rng.normal(size=(n, 8))
    e2 = e1 + np.where(issame[:, None], 1.0, 4.0) * rng.normal(size=(n, 8))
    r = verify_pairs(e1, e2, issame)
    x1, x2 = l2_normalize(e1), l2_normalize(e2)
    d = ((x1 - x2) ** 2).sum(1)
    vals, fars = [], []
    for k in range(10):
        test = np.arange(k * 400, (k + 1) * 400)
        train = np.setdiff1d(np.arange(n), test)
        far_train = np.array([np.mean(d[train][~issame[train]] < t) for t in VAL_THRESHOLDS])
        # np.interp on the strictly increasing part of the curve: the two neighbours of 1e-3
        a = np.flatnonzero(far_train < 1e-3)[-1]
        b = np.flatnonzero(far_train > 1e-3)[0]
        t = np.interp(1e-3, [far_train[a], far_train[b]], [VAL_THRESHOLDS[a], VAL_THRESHOLDS[b]])
        vals.append(np.mean(d[test][issame[test]] < t))
        fars.append(np.mean(d[test][~issame[test]] < t))
    assert r.val == pytest.approx(np.mean(vals), abs=1e-12)
    assert r.far == pytest.approx(np.mean(fars), abs=1e-12)
    assert r.val_std == pytest.approx(np.std(vals), abs=1e-12)


def test_val_undefined_fold_gives_nan_and_a_warning():
    # 300 same then 300 different (the CSV layout): held-out folds hold one class only.
    issame = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    rng = np.random.default_rng(3)
    e1 = rng.normal(size=(60, 4))
    e2 = e1 + rng.normal(size=(60, 4))
    with pytest.warns(UserWarning, match="VAL@FAR is undefined"):
        r = verify_pairs(e1, e2, issame)
    assert np.isnan(r.val)
    assert 0 <= r.accuracy <= 1


# ---------------------------------------------------------------- ROC, AUC, TAR@FAR


def test_roc_curve_by_hand():
    fpr, tpr, thr = roc_curve([1, 0, 1, 0], [0.9, 0.5, 0.3, 0.1])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.9, 0.5, 0.3, 0.1]
    assert auc(fpr, tpr) == 0.75  # 3 of the 4 (positive, negative) pairs are ordered correctly


def test_roc_curve_drops_collinear_points_and_merges_ties():
    fpr, tpr, _ = roc_curve([1, 1, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert fpr.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert tpr.tolist() == [0.0, 1 / 3, 1.0, 1.0]  # the point at 0.8 lies on the vertical segment
    fpr, tpr, thr = roc_curve([1, 0, 1], [0.5, 0.5, 0.2], drop_intermediate=False)
    assert thr[1:].tolist() == [0.5, 0.2] and fpr.tolist() == [0, 1, 1] and tpr.tolist() == [0, 0.5, 1]


def test_tar_at_far_nearest_point_and_largest_tar():
    fpr = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    tpr = np.array([0.0, 0.5, 0.5, 1.0, 1.0])
    tars = tar_at_far(fpr, tpr, (1e-4, 0.4, 0.9))
    assert tars == {1e-4: 0.5, 0.4: 1.0, 0.9: 1.0}


# ---------------------------------------------------------------- input checks


def test_bad_inputs_are_named():
    e = np.zeros((4, 3))
    with pytest.raises(ValueError, match="same shape"):
        verify_pairs(e, np.zeros((4, 2)), [1, 0, 1, 0])
    with pytest.raises(ValueError, match="issame"):
        verify_pairs(e, e, [1, 0, 1])
    with pytest.raises(ValueError, match="issame"):
        verify_pairs(e, e, [1, 0, 2, 0])
    with pytest.raises(ValueError, match="NaN"):
        verify_pairs(np.full((4, 3), np.nan), e, [1, 0, 1, 0])
    with pytest.raises(ValueError, match="nfolds"):
        verify_pairs(np.eye(4), np.eye(4), [1, 0, 1, 0], nfolds=5)
