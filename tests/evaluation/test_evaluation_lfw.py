"""The protocol mechanics on the real LFW View 2 set (../shared/data/lfw112; skipped when absent).

What runs here, within the test budget of a 2-core machine:

- the reader on the full pairs.txt (6,000 pairs, 7,701 images, 10 folds of 300 + 300);
- the full pipeline (decode every image, flip TTA, 10 folds of 600) with a cheap stand-in network;
- MSConvResNet50 and IResNet50 (random weights) through the same pipeline on a fixed subset: in each of
  the 10 folds the first 3 same and first 3 different pairs (60 pairs, 10 folds of 6), with flip TTA;
- the CelebA pairs CSV (../shared/data/celeba299) through the CSV reader.

A full LFW pass of a 50-layer network (7,701 images x 2 views) takes far longer than a test may; its time
is measured by benchmarks/lfw_eval.py.
"""

import keras
import numpy as np
import pytest

from keras_fr.evaluation import ACCURACY_THRESHOLDS, evaluate_pairs, read_pairs

pytestmark = pytest.mark.large


def test_lfw_reader_layout(lfw_dir):
    pairs = read_pairs(lfw_dir)
    assert len(pairs) == 6000 and pairs.nfolds == 10
    assert len(pairs.images) == 7701  # the View 2 images the README lists
    # per fold: 300 same then 300 different pairs, folds in file order
    expected = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    np.testing.assert_array_equal(pairs.issame, expected)
    first = pairs.images.paths[pairs.pairs[0, 0]]
    assert first.endswith("Abel_Pacheco_0001.jpg")


def _cheap_model():
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.AveragePooling2D(8)(inputs)  # 14x14x3
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(64, kernel_initializer=keras.initializers.RandomNormal(seed=0))(x)
    return keras.Model(inputs, outputs)


def _check_mechanics(result, n_pairs, fold_size):
    assert result.n_pairs == n_pairs and result.nfolds == 10
    assert result.fold_sizes.tolist() == [fold_size] * 10
    assert 0.0 <= result.accuracy <= 1.0
    correct = result.fold_accuracies * fold_size
    np.testing.assert_allclose(correct, np.round(correct), atol=1e-9)  # whole numbers of pairs right
    for t in result.fold_thresholds:
        assert np.any(ACCURACY_THRESHOLDS == t)  # a grid value, not an interpolation
    assert 0.0 <= result.val <= 1.0 and 0.0 <= result.auc <= 1.0


def test_lfw_full_pipeline_all_pairs(lfw_dir):
    result, emb = evaluate_pairs(_cheap_model(), lfw_dir, batch_size=256, verbose=0, return_embeddings=True)
    _check_mechanics(result, 6000, 600)
    assert emb.shape == (7701, 64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # pixels carry identity a little even through this random projection: above chance
    assert result.accuracy > 0.5


@pytest.mark.parametrize("builder", ["MSConvResNet50", "IResNet50"])
def test_lfw_subset_with_the_zoo_networks(lfw_dir, builder):
    from keras_fr import applications
    from keras_fr.applications import preprocess_input

    pairs = read_pairs(lfw_dir)
    chosen = np.concatenate([k * 600 + np.r_[0:3, 300:303] for k in range(10)])
    subset = pairs.subset(chosen)
    model = getattr(applications, builder)()
    result, emb = evaluate_pairs(model, subset, batch_size=32, verbose=0, return_embeddings=True)
    _check_mechanics(result, 60, 6)
    assert emb.shape == (len(subset.images), 512) and np.all(np.isfinite(emb))
    # the extraction equals a direct computation: normalize(model(x) + model(flip(x)))
    x = subset.images.load_batch([0, 1])
    raw = model.predict_on_batch(preprocess_input(x)) + model.predict_on_batch(preprocess_input(x[:, :, ::-1]))
    ref = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(emb[:2], ref, atol=1e-4)


def test_celeba_pairs_csv_reader(celeba_dir):
    # the project's second real pair list (CSV, paths relative to images/): read and checked, not embedded
    pairs = read_pairs(celeba_dir / "pairs_test.csv")
    assert len(pairs) == 600 and int(pairs.issame.sum()) == 300
    assert pairs.nfolds is None
    assert all(path.startswith(str(celeba_dir / "images")) for path in pairs.images.paths)
    assert pairs.images.load_batch([0]).shape == (1, 112, 112, 3)
