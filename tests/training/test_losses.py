"""Margin losses against numpy formulas and hand-computed values, values and gradients, both modes."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fr.training.losses import ArcFaceLoss, CombinedMarginLoss, CosFaceLoss


def _np_loss_and_grad(cos, labels, s, m1, m2, m3, gradient):
    """Independent numpy reference: mean CE over valid rows and d loss / d cos."""
    cos = np.clip(np.asarray(cos, np.float64), -1, 1)
    labels = np.asarray(labels)
    n, c = cos.shape
    valid = labels >= 0
    nvalid = max(valid.sum(), 1)
    loss = 0.0
    grad = np.zeros_like(cos)
    for i in range(n):
        if not valid[i]:
            continue
        y = labels[i]
        theta = math.acos(min(max(cos[i, y], -1 + 1e-7), 1 - 1e-7))
        logits = s * cos[i].copy()
        logits[y] = s * (math.cos(m1 * theta + m2) - m3)
        mx = logits.max()
        p = np.exp(logits - mx) / np.exp(logits - mx).sum()
        loss += -math.log(p[y])
        d = s * (p - np.eye(c)[y])
        if gradient == "exact" and not (m1 == 1 and m2 == 0):
            d[y] *= m1 * math.sin(m1 * theta + m2) / math.sin(theta)
        grad[i] = d
    return loss / nvalid, grad / nvalid


def _tf_loss_and_grad(loss_obj, cos, labels):
    x = tf.Variable(np.asarray(cos, np.float32))
    with tf.GradientTape() as tape:
        value = loss_obj(np.asarray(labels), x)
    return float(value), tape.gradient(value, x).numpy()


def test_arcface_hand_computed_value():
    # theta = pi/3, m = pi/6 -> target cos(pi/2) = 0; other class cos 0; s = 1 -> loss = log 2.
    loss = ArcFaceLoss(scale=1.0, margin=math.pi / 6)
    value = float(loss(np.array([0]), np.array([[0.5, 0.0]], np.float32)))
    assert value == pytest.approx(math.log(2.0), abs=1e-6)


def test_cosface_hand_computed_value():
    # target 0.9 - 0.4 = 0.5, other 0.1; s = 2 -> logits [1.0, 0.2].
    loss = CosFaceLoss(scale=2.0, margin=0.4)
    value = float(loss(np.array([0]), np.array([[0.9, 0.1]], np.float32)))
    expected = math.log(math.exp(1.0) + math.exp(0.2)) - 1.0
    assert value == pytest.approx(expected, abs=1e-6)


def test_no_margin_is_plain_scaled_softmax():
    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, (5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 5)
    value = float(CombinedMarginLoss(scale=3.0)(labels, cos))
    ref = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, 3.0 * cos))
    assert value == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("gradient", ["straight_through", "exact"])
@pytest.mark.parametrize(
    "margins", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.4), (1.0, 0.3, 0.2), (1.2, 0.2, 0.1)]
)
def test_values_and_gradients_match_numpy(gradient, margins):
    m1, m2, m3 = margins
    rng = np.random.default_rng(1)
    cos = rng.uniform(-0.95, 0.95, (6, 9)).astype(np.float32)
    labels = np.array([0, 3, -1, 8, 5, -1])
    s = 16.0
    loss = CombinedMarginLoss(scale=s, m1=m1, m2=m2, m3=m3, gradient=gradient)
    value, grad = _tf_loss_and_grad(loss, cos, labels)
    ref_value, ref_grad = _np_loss_and_grad(cos, labels, s, m1, m2, m3, gradient)
    assert value == pytest.approx(ref_value, rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)
    # Ignored rows get no gradient at all.
    assert np.all(grad[labels < 0] == 0)


def test_modes_differ_for_arcface_and_agree_for_cosface():
    cos = np.array([[0.3, 0.2, -0.1]], np.float32)
    labels = np.array([0])
    _, g_st = _tf_loss_and_grad(ArcFaceLoss(scale=8.0, gradient="straight_through"), cos, labels)
    _, g_ex = _tf_loss_and_grad(ArcFaceLoss(scale=8.0, gradient="exact"), cos, labels)
    # Same non-target gradients (same softmax), different target gradient.
    np.testing.assert_allclose(g_st[0, 1:], g_ex[0, 1:], rtol=1e-6)
    assert abs(g_st[0, 0] - g_ex[0, 0]) > 1e-2
    theta = math.acos(0.3)
    ratio = math.sin(theta + 0.5) / math.sin(theta)
    assert g_ex[0, 0] / g_st[0, 0] == pytest.approx(ratio, rel=1e-4)
    cos_st = CombinedMarginLoss(8.0, m3=0.4, gradient="straight_through")
    cos_ex = CombinedMarginLoss(8.0, m3=0.4, gradient="exact")
    np.testing.assert_allclose(
        _tf_loss_and_grad(cos_st, cos, labels)[1], _tf_loss_and_grad(cos_ex, cos, labels)[1]
    )


def test_exact_gradient_matches_finite_differences():
    cos = np.array([[0.4, -0.2, 0.1], [0.05, 0.6, 0.3]], np.float64)
    labels = np.array([0, 1])
    loss = ArcFaceLoss(scale=4.0, margin=0.5, gradient="exact")
    _, grad = _tf_loss_and_grad(loss, cos, labels)
    h = 1e-3
    for i, j in [(0, 0), (0, 1), (1, 1), (1, 2)]:
        plus, minus = cos.copy(), cos.copy()
        plus[i, j] += h
        minus[i, j] -= h
        fd = (
            float(loss(labels, plus.astype(np.float32))) - float(loss(labels, minus.astype(np.float32)))
        ) / (2 * h)
        assert grad[i, j] == pytest.approx(fd, rel=2e-2, abs=2e-3)


@pytest.mark.parametrize("gradient", ["straight_through", "exact"])
def test_safe_at_cos_plus_minus_one(gradient):
    cos = np.array(
        [[1.0, -1.0, 0.0], [-1.0, 1.0, 0.2], [1.0000001, 0.0, -1.0000001], [0.0, 0.0, 1.0]],
        np.float32,
    )
    labels = np.array([0, 0, 2, 2])
    for loss in (
        ArcFaceLoss(gradient=gradient),
        CombinedMarginLoss(m1=1.5, m2=0.2, m3=0.1, gradient=gradient),
        CosFaceLoss(),
    ):
        value, grad = _tf_loss_and_grad(loss, cos, labels)
        assert np.isfinite(value)
        assert np.all(np.isfinite(grad))


def test_nan_cosine_gives_nan_loss_not_a_clipped_value():
    cos = np.array([[np.nan, 0.1], [0.2, 0.3]], np.float32)
    for loss in (ArcFaceLoss(), ArcFaceLoss(gradient="exact"), CosFaceLoss()):
        assert np.isnan(float(loss(np.array([0, 1]), cos)))
        assert np.isnan(float(loss(np.array([1, 1]), cos)))


def test_label_minus_one_is_ignored():
    rng = np.random.default_rng(2)
    cos = rng.uniform(-1, 1, (4, 5)).astype(np.float32)
    loss = ArcFaceLoss(scale=10.0)
    full = float(loss(np.array([1, -1, 3, -1]), cos))
    only_valid = float(loss(np.array([1, 3]), cos[[0, 2]]))
    assert full == pytest.approx(only_valid, rel=1e-6)
    assert float(loss(np.array([-1, -1, -1, -1]), cos)) == 0.0
    # Column labels (batch, 1) work too.
    assert float(loss(np.array([[1], [-1], [3], [-1]]), cos)) == pytest.approx(full, rel=1e-6)


def test_float16_input_gives_float32_loss():
    cos = np.array([[0.7, 0.1], [0.2, 0.6]], np.float16)
    value = ArcFaceLoss()(np.array([0, 1]), tf.constant(cos))
    assert value.dtype == tf.float32
    ref, _ = _np_loss_and_grad(cos.astype(np.float32), [0, 1], 64.0, 1.0, 0.5, 0.0, "exact")
    assert float(value) == pytest.approx(ref, rel=1e-3)


def test_config_round_trip():
    for loss in (
        ArcFaceLoss(scale=32.0, margin=0.3, gradient="exact"),
        CosFaceLoss(scale=30.0, margin=0.35),
        CombinedMarginLoss(scale=64.0, m1=1.0, m2=0.3, m3=0.2),
    ):
        again = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(again) is type(loss)
        assert again.get_config() == loss.get_config()
    assert ArcFaceLoss(margin=0.3).get_config()["margin"] == 0.3


@pytest.mark.parametrize(
    "kwargs, word",
    [({"scale": 0}, "scale"), ({"m1": -1.0}, "m1"), ({"gradient": "approx"}, "gradient"),
     ({"m2": "a"}, "m2")],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        CombinedMarginLoss(**kwargs)


@pytest.mark.torch
def test_straight_through_matches_torch_in_place_no_grad_margin():
    """insightface's angular path: arccos, +m2 and cos applied in place under torch.no_grad()."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(5, 6)).astype(np.float32)
    centers = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 2, -1, 3, 1])
    s, m = 64.0, 0.5

    e = torch.tensor(emb, requires_grad=True)
    w = torch.tensor(centers, requires_grad=True)
    cos = torch.nn.functional.normalize(e, dim=1) @ torch.nn.functional.normalize(w, dim=0)
    cos = cos.clamp(-1, 1)
    lab = torch.tensor(labels)
    rows = torch.where(lab != -1)[0]
    with torch.no_grad():
        cos.arccos_()
        cos[rows, lab[rows]] += m
        cos.cos_()
    logits = cos * s
    torch_loss = torch.nn.functional.cross_entropy(logits[rows], lab[rows])
    torch_loss.backward()

    import tensorflow as tf

    from keras_fr.layers.margin import MarginHead

    head = MarginHead(4)
    head.build((None, 6))
    head.kernel.assign(centers)
    x = tf.Variable(emb)
    with tf.GradientTape() as tape:
        loss = ArcFaceLoss(scale=s, margin=m)(labels, head(x))
    grad_x, grad_w = tape.gradient(loss, [x, head.kernel.value])
    assert float(loss) == pytest.approx(float(torch_loss.detach()), rel=1e-5)
    np.testing.assert_allclose(grad_x.numpy(), e.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_w.numpy(), w.grad.numpy(), rtol=1e-4, atol=1e-6)
