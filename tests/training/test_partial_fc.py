"""PartialFC: exact at sample rate 1, the sampling rule, the row-wise update, and fit on many classes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fr.layers import MarginHead, PartialFC
from keras_fr.training import PartialFCTrainingModel
from keras_fr.training.losses import ArcFaceLoss, CosFaceLoss
from keras_fr.training import FaceTrainingModel


def _embedding_backbone(in_dim, dim, seed=0):
    inputs = keras.Input((in_dim,))
    outputs = keras.layers.Dense(
        dim, use_bias=False, kernel_initializer=keras.initializers.GlorotNormal(seed=seed)
    )(inputs)
    return keras.Model(inputs, outputs, name="tiny_backbone")


def test_rate_one_equals_full_arcface_head_loss_and_gradients():
    rng = np.random.default_rng(0)
    n, d, c = 16, 24, 37
    emb = tf.Variable(rng.normal(size=(n, d)).astype("float32"))
    centres = rng.normal(size=(c, d)).astype("float32")
    labels = rng.integers(0, c, size=n)
    labels[3] = -1  # an ignored sample, as the loss allows
    loss_fn = ArcFaceLoss(scale=64.0, margin=0.5)

    full = MarginHead(c)
    full.build((None, d))
    full.kernel.assign(centres.T)
    with tf.GradientTape() as tape:
        full_loss = loss_fn(labels, full(emb))
    g_emb_full, g_kernel_full = tape.gradient(full_loss, [emb, full.kernel])

    head = PartialFC(c, sample_rate=1.0, seed=3)
    head.build((None, d))
    head.kernel.assign(centres)
    indices, local = head.sample(labels, step=5)
    np.testing.assert_array_equal(indices.numpy(), np.arange(c))
    np.testing.assert_array_equal(local.numpy(), labels)
    with tf.GradientTape() as tape:
        rows = tf.gather(head.kernel.value, indices)
        tape.watch(rows)
        loss = loss_fn(local, head.cosine(emb, rows))
    g_emb, g_rows = tape.gradient(loss, [emb, rows])

    assert abs(float(loss) - float(full_loss)) <= 1e-5
    np.testing.assert_allclose(g_emb.numpy(), g_emb_full.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(g_rows.numpy(), g_kernel_full.numpy().T, atol=1e-5, rtol=0)
    assert float(tf.reduce_max(tf.abs(g_rows))) > 1e-3  # the comparison is not of zeros
    # The layer's call is the full head's logits.
    np.testing.assert_allclose(head(emb).numpy(), full(emb).numpy(), atol=1e-6)


def test_rate_one_train_step_equals_full_head_model():
    """One fit step at rate 1 (no momentum/decay on either side) moves backbone and centres alike."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 10)).astype("float32")
    y = rng.integers(0, 50, size=32)
    centres = rng.normal(scale=0.1, size=(50, 6)).astype("float32")

    ref = FaceTrainingModel(_embedding_backbone(10, 6), 50)
    ref.margin_head.kernel.assign(centres.T)
    ref.compile(keras.optimizers.SGD(0.5), loss=ArcFaceLoss(scale=16.0, margin=0.3))
    pfc = PartialFCTrainingModel(
        _embedding_backbone(10, 6), 50, sample_rate=1.0, momentum=0.0, weight_decay=0.0
    )
    pfc.partial_fc.kernel.assign(centres)
    pfc.compile(keras.optimizers.SGD(0.5), loss=ArcFaceLoss(scale=16.0, margin=0.3))
    loss_ref = ref.train_on_batch(x, y)
    loss_pfc = pfc.train_on_batch(x, y)
    assert abs(loss_ref - loss_pfc) <= 1e-5
    np.testing.assert_allclose(
        pfc.partial_fc.kernel.numpy(), ref.margin_head.kernel.numpy().T, atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(
        pfc.backbone.get_weights()[0], ref.backbone.get_weights()[0], atol=1e-5, rtol=0
    )
    assert not np.allclose(pfc.partial_fc.kernel.numpy(), centres)  # it did move


def test_sampling_keeps_positives_count_determinism():
    c = 1000
    head = PartialFC(c, sample_rate=0.1, seed=7)
    head.build((None, 8))
    assert head.num_sampled == 100
    rng = np.random.default_rng(2)
    labels = rng.integers(0, c, size=48)
    labels[:4] = labels[4]  # duplicates
    labels[10] = -1

    idx, local = (t.numpy() for t in head.sample(labels, step=3))
    assert len(idx) == 100 and len(np.unique(idx)) == 100
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < c
    valid = labels >= 0
    assert set(labels[valid]) <= set(idx)
    np.testing.assert_array_equal(idx[local[valid]], labels[valid])
    assert local[10] == -1

    again, _ = (t.numpy() for t in head.sample(labels, step=3))
    np.testing.assert_array_equal(idx, again)
    other_step, _ = (t.numpy() for t in head.sample(labels, step=4))
    assert not np.array_equal(idx, other_step)
    same_seed = PartialFC(c, sample_rate=0.1, seed=7)
    np.testing.assert_array_equal(same_seed.sample(labels, step=3)[0].numpy(), idx)
    other_seed = PartialFC(c, sample_rate=0.1, seed=8)
    assert not np.array_equal(other_seed.sample(labels, step=3)[0].numpy(), idx)
    # negatives are spread over the classes, not the lowest indices
    negatives = np.setdiff1d(idx, labels[valid])
    assert negatives.max() > c // 2 and negatives.min() < c // 2

    # more distinct labels than base rows: all positives kept, K grows to their number
    small = PartialFC(100, sample_rate=0.05, seed=0)
    assert small.num_sampled == 5
    many = np.arange(0, 60, 3)  # 20 distinct labels
    idx, local = (t.numpy() for t in small.sample(many, step=0))
    np.testing.assert_array_equal(idx, many)
    np.testing.assert_array_equal(idx[local], many)


def test_row_update_leaves_unsampled_rows_bitwise_and_matches_numpy():
    rng = np.random.default_rng(3)
    c, d, lr, mu, wd = 400, 8, 0.2, 0.9, 5e-4
    model = PartialFCTrainingModel(
        _embedding_backbone(12, d), c, sample_rate=0.1, seed=11, momentum=mu, weight_decay=wd
    )
    model.compile(keras.optimizers.SGD(lr, momentum=0.9), loss=CosFaceLoss(scale=32.0, margin=0.3))
    head = model.partial_fc
    # Non-zero momentum everywhere, so any drift of an unsampled row's buffer would show.
    head.momentum_buffer.assign(rng.normal(scale=0.01, size=(c, d)).astype("float32"))
    x = rng.normal(size=(16, 12)).astype("float32")
    y = rng.integers(0, c, size=16)

    for step in range(2):
        w0 = head.kernel.numpy().copy()
        v0 = head.momentum_buffer.numpy().copy()
        assert int(model.optimizer.iterations.numpy()) == step
        with tf.GradientTape() as tape:
            loss, _, _, indices, rows = model.sampled_forward(tape, x, y, step)
        grad = tape.gradient(loss, rows).numpy().astype(np.float64)
        idx = indices.numpy()
        model.train_on_batch(x, y)
        w1, v1 = head.kernel.numpy(), head.momentum_buffer.numpy()

        assert len(idx) == head.num_sampled == 40
        others = np.setdiff1d(np.arange(c), idx)
        assert np.array_equal(w1[others].view(np.uint32), w0[others].view(np.uint32))
        assert np.array_equal(v1[others].view(np.uint32), v0[others].view(np.uint32))

        g = grad + wd * w0[idx].astype(np.float64)
        v_ref = mu * v0[idx].astype(np.float64) + g
        w_ref = w0[idx].astype(np.float64) - lr * v_ref
        np.testing.assert_allclose(v1[idx], v_ref, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(w1[idx], w_ref, rtol=1e-5, atol=1e-7)
        assert np.abs(w1[idx] - w0[idx]).max() > 1e-4  # sampled rows did move


def test_config_round_trip_and_full_logits_at_inference():
    head = PartialFC(30, sample_rate=0.2, seed=4, momentum=0.5, weight_decay=1e-4, learning_rate=0.3)
    clone = PartialFC.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    model = PartialFCTrainingModel(_embedding_backbone(5, 4), 30, sample_rate=0.2, seed=9)
    restored = PartialFCTrainingModel.from_config(model.get_config())
    assert restored.partial_fc.get_config() == model.partial_fc.get_config()
    x = np.random.default_rng(5).normal(size=(3, 5)).astype("float32")
    assert model.predict(x, verbose=0).shape == (3, 30)  # inference: every class
    assert model.partial_fc.trainable_weights == []  # the centres stay out of the dense optimizer
    with pytest.raises(ValueError):
        PartialFC(30, sample_rate=0.0)
    with pytest.raises(ValueError):
        model.compile("sgd", loss="sparse_categorical_crossentropy")


def test_fit_many_classes_at_rate_0_1_loss_falls():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(6)
    c, per_class, in_dim, d = 2000, 4, 32, 32
    means = rng.normal(size=(c, in_dim)).astype("float32")
    y = np.repeat(np.arange(c), per_class)
    x = means[y] + 0.3 * rng.normal(size=(len(y), in_dim)).astype("float32")
    model = PartialFCTrainingModel(_embedding_backbone(in_dim, d), c, sample_rate=0.1, seed=1)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss=CosFaceLoss(scale=32.0, margin=0.2))
    history = model.fit(x, y, batch_size=200, epochs=4, shuffle=True, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
