"""keras_fr.training.distillation: DistillationModel with precomputed or on-the-fly teacher targets."""

import keras
import numpy as np
import pytest

from keras_fr.training.distillation import DistillationModel, distillation_loss, relational_loss
from keras_fr.evaluation import verify_pairs

SIZE, TEACHER_DIM = 12, 16


def _student(dim=24, seed=0):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    return keras.Model(inputs, x, name="student")


def _teacher(seed=7):
    """A fixed random network that looks only at channel 0 (where the identity lives)."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Lambda(lambda t: t[..., :1])(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(TEACHER_DIM, kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    return keras.Model(inputs, x, name="teacher")


def _faces(identities, per_identity, seed):
    """Identity pattern in channel 0, strong identity-free noise in channels 1 and 2."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(identities, SIZE, SIZE))
    labels = np.repeat(np.arange(identities), per_identity)
    x = np.empty((len(labels), SIZE, SIZE, 3), "float32")
    x[..., 0] = patterns[labels] + 0.4 * rng.normal(size=(len(labels), SIZE, SIZE))
    x[..., 1:] = 3.0 * rng.normal(size=(len(labels), SIZE, SIZE, 2))
    return x, labels


def _pair_accuracy(embeddings, labels):
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    rng = np.random.default_rng(0)
    pos = np.flatnonzero(same)
    neg = rng.choice(np.flatnonzero(~same), size=len(pos), replace=False)
    sel = np.stack([pos, neg], axis=1).reshape(-1)  # alternate, so every fold mixes both
    return verify_pairs(embeddings[i[sel]], embeddings[j[sel]], same[sel], nfolds=5).accuracy


def test_precomputed_and_on_the_fly_targets_give_the_same_loss():
    x, _ = _faces(4, 4, seed=1)
    teacher = _teacher()
    y = keras.ops.convert_to_numpy(teacher(x))
    student = _student()
    pre = DistillationModel(student, teacher_dim=TEACHER_DIM, relational_weight=0.3)
    live = DistillationModel(student, teacher=teacher, relational_weight=0.3)
    live.projection.set_weights(pre.projection.get_weights())
    for kind in ("cosine",):
        pre.compile(keras.optimizers.Adam(1e-3))
        live.compile(keras.optimizers.Adam(1e-3))
        a = pre.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        b = live.evaluate(x, batch_size=16, verbose=0, return_dict=True)
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
        assert a["relational_loss"] > 0
    # The same through compute_loss directly, with the l2 loss and labels for a margin head.
    pre_l2 = DistillationModel(student, teacher_dim=TEACHER_DIM, loss="l2", num_classes=4)
    live_l2 = DistillationModel(student, teacher=teacher, loss="l2", num_classes=4)
    live_l2.projection.set_weights(pre_l2.projection.get_weights())
    live_l2.margin_head.set_weights(pre_l2.margin_head.get_weights())
    labels = np.arange(16) % 4
    la = pre_l2.compute_loss(x, {"teacher": y, "label": labels}, pre_l2(x), training=False)
    lb = live_l2.compute_loss(x, labels, live_l2(x), training=False)
    assert abs(float(la) - float(lb)) < 1e-5


def test_fit_raises_the_students_pair_accuracy():
    keras.utils.set_random_seed(0)
    x_train, _ = _faces(100, 8, seed=2)
    x_test, test_labels = _faces(12, 6, seed=3)  # unseen identities
    teacher = _teacher()
    student = _student()
    before = _pair_accuracy(student.predict(x_test, verbose=0), test_labels)
    teacher_acc = _pair_accuracy(teacher.predict(x_test, verbose=0), test_labels)
    model = DistillationModel(student, teacher=teacher, relational_weight=0.5)
    model.compile(keras.optimizers.Adam(3e-3))
    history = model.fit(x_train, batch_size=32, epochs=20, verbose=0)
    after = _pair_accuracy(model.student.predict(x_test, verbose=0), test_labels)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert teacher_acc > 0.95
    assert after > before + 0.25 and after > 0.85, (before, after, teacher_acc)
    print(f"pair accuracy: untrained {before:.3f}, distilled {after:.3f}, teacher {teacher_acc:.3f}")
    assert model.backbone is student and model.embed(x_test).shape == (len(x_test), 24)


def test_flip_mirrors_some_training_images_only():
    x, _ = _faces(4, 4, seed=4)
    student = _student()
    model = DistillationModel(student, teacher_dim=TEACHER_DIM, flip=True, seed=1)
    plain = keras.ops.convert_to_numpy(student(x))
    mirrored = keras.ops.convert_to_numpy(student(x[:, :, ::-1]))
    out = keras.ops.convert_to_numpy(model(x, training=True)["embedding"])
    is_plain = np.all(np.isclose(out, plain, atol=1e-5), axis=1)
    is_mirror = np.all(np.isclose(out, mirrored, atol=1e-5), axis=1)
    assert np.all(is_plain | is_mirror) and is_plain.any() and is_mirror.any()
    inference = keras.ops.convert_to_numpy(model(x, training=False)["embedding"])
    np.testing.assert_allclose(inference, plain, atol=1e-6)


def _numpy_relational(s, t):
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    d = s @ s.T - t @ t.T
    n = len(s)
    return float(np.sum(d ** 2 * (1 - np.eye(n))) / (n * (n - 1)))


def test_relational_loss_matches_numpy():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(6, 16)).astype("float32")
    # Same similarities: a rotated, rescaled and zero-padded copy of the teacher.
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    s_same = np.concatenate([3.0 * t @ q, np.zeros((6, 8))], axis=1).astype("float32")
    assert float(relational_loss(s_same, t)) == pytest.approx(0.0, abs=1e-6)
    s_other = rng.normal(size=(6, 24)).astype("float32")
    value = float(relational_loss(s_other, t))
    assert value > 1e-3
    assert value == pytest.approx(_numpy_relational(s_other, t), rel=1e-5)
    p = rng.normal(size=(6, 16)).astype("float32")
    cos = np.sum(p * t, 1) / np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(distillation_loss(p, t)), 1 - cos, atol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(distillation_loss(p, t, "l2")), np.sum((p - t) ** 2, 1), rtol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(student="resnet", teacher_dim=16), "student"),
        (dict(teacher_dim=0), "teacher_dim"),
        (dict(), "teacher_dim"),
        (dict(teacher_dim=16, loss="kl"), "loss"),
        (dict(teacher_dim=16, relational_weight=-1.0), "relational_weight"),
        (dict(teacher_dim=16, num_classes=0), "num_classes"),
        (dict(teacher_dim=16, margin_loss=keras.losses.MeanSquaredError()), "margin_loss"),
        (dict(teacher_dim=16, margin_weight="1"), "margin_weight"),
        (dict(teacher="dlib"), "teacher"),
        (dict(teacher_dim=16, teacher_preprocessing=lambda t: t), "teacher_preprocessing"),
        (dict(teacher_dim=16, flip="yes"), "flip"),
        (dict(teacher_dim=99, teacher=_teacher()), "teacher_dim"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    kwargs = dict(kwargs)
    student = kwargs.pop("student", None) or _student()
    with pytest.raises(ValueError, match=f"`{name}`"):
        DistillationModel(student, **kwargs)
