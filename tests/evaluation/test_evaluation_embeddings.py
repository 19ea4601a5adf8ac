"""Embedding extraction (flip TTA, preprocessing, sources), evaluate_pairs, reports and the callback."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_fr.evaluation import (
    EncodedImages,
    evaluate_pairs,
    extract_embeddings,
    plot_roc,
    verify_pairs,
    write_bin,
    write_report,
)

SIZE = 8
DIM = 6


def _linear_model(seed=0, size=SIZE, dim=DIM):
    """Flatten + Dense without bias: its output is a matrix product we can compute in numpy."""
    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Dense(dim, use_bias=False)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    w = np.random.default_rng(seed).normal(size=(size * size * 3, dim)).astype("float32")
    model.layers[-1].set_weights([w])
    return model, w


def _numpy_embed(images, w, flip):
    x = images.astype(np.float64) / 127.5 - 1.0
    raw = x.reshape(len(x), -1) @ w
    if flip:
        raw = raw + x[:, :, ::-1, :].reshape(len(x), -1) @ w
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def _images(n, seed=0, size=SIZE):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_flip_tta_is_sum_then_normalize():
    model, w = _linear_model()
    images = _images(5)
    got = extract_embeddings(model, images, batch_size=2, flip=True, verbose=0)
    assert got.dtype == np.float32 and got.shape == (5, DIM)
    np.testing.assert_allclose(got, _numpy_embed(images, w, flip=True), atol=2e-5)
    plain = extract_embeddings(model, images, batch_size=2, flip=False, verbose=0)
    np.testing.assert_allclose(plain, _numpy_embed(images, w, flip=False), atol=2e-5)
    # asymmetric images: the flip changes the embedding; mirror-symmetric images: it does not
    assert np.abs(got - plain).max() > 0.05
    symmetric = np.concatenate([images[:, :, :4], images[:, :, :4][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(
        extract_embeddings(model, symmetric, flip=True, verbose=0),
        extract_embeddings(model, symmetric, flip=False, verbose=0),
        atol=1e-6,
    )
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_preprocess_applied_once_and_batching_irrelevant():
    model, _ = _linear_model(1)
    images = _images(7, seed=1)
    a = extract_embeddings(model, images, batch_size=3, verbose=0)
    b = extract_embeddings(model, images.astype(np.float32) / 127.5 - 1.0, batch_size=64, preprocess=False, verbose=0)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_paths_and_encoded_images_match_arrays(tmp_path):
    model, _ = _linear_model(2)
    images = _images(4, seed=2)
    paths, blobs = [], []
    for i, img in enumerate(images):
        p = tmp_path / f"{i}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
        blobs.append(p.read_bytes())
    ref = extract_embeddings(model, images, verbose=0)
    np.testing.assert_allclose(extract_embeddings(model, paths, batch_size=3, verbose=0), ref, atol=1e-6)
    np.testing.assert_allclose(extract_embeddings(model, EncodedImages(blobs), verbose=0), ref, atol=1e-6)


def test_files_are_resized_to_the_model_input(tmp_path):
    model, w = _linear_model(3)
    big = _images(2, seed=3, size=16)
    paths = []
    for i, img in enumerate(big):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    got = extract_embeddings(model, paths, verbose=0)
    resized = np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.BILINEAR)) for im in big])
    np.testing.assert_allclose(got, _numpy_embed(resized, w, flip=True), atol=2e-5)


def test_extraction_errors(tmp_path):
    model, _ = _linear_model()
    with pytest.raises(ValueError, match="batch_size"):
        extract_embeddings(model, _images(2), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        extract_embeddings(model, [], verbose=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        extract_embeddings(model, np.zeros((2, 8, 8)), verbose=0)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        extract_embeddings(model, [str(tmp_path / "nope.png")], verbose=0)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad\.png: cannot decode"):
        extract_embeddings(model, [str(tmp_path / "bad.png")], verbose=0)
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match=r"\(N, D\) embeddings"):
        extract_embeddings(conv, _images(2), verbose=0)


def test_progress_bar(capsys):
    model, _ = _linear_model()
    extract_embeddings(model, _images(3), batch_size=2, verbose=1)
    assert "3/3" in capsys.readouterr().out


def _separable_bin(tmp_path, nfolds=10):
    """Per fold one same pair (the same image twice) and one different pair (two random images)."""
    rng = np.random.default_rng(4)
    images, issame = [], []
    for _ in range(nfolds):
        face = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        images += [face, face]
        images += [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2)]
        issame += [True, False]
    return write_bin(tmp_path / "sep.bin", np.stack(images), issame, image_format="PNG"), np.stack(images)


def test_evaluate_pairs_on_a_bin(tmp_path):
    path, images = _separable_bin(tmp_path)
    model, w = _linear_model(5)
    result, emb = evaluate_pairs(model, path, batch_size=7, verbose=0, return_embeddings=True)
    assert result.accuracy == 1.0 and result.n_pairs == 20 and result.nfolds == 10
    assert result.seconds > 0
    ref = _numpy_embed(images, w, flip=True)
    np.testing.assert_allclose(emb, ref, atol=2e-5)
    direct = verify_pairs(ref[0::2], ref[1::2], [True, False] * 10)
    assert direct.accuracy == result.accuracy
    np.testing.assert_allclose(direct.fold_thresholds, result.fold_thresholds)


def test_report_and_roc_files(tmp_path):
    rng = np.random.default_rng(6)
    e1, e2 = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    result = verify_pairs(e1, e2, [True, False] * 20)
    png = plot_roc({"random": (result.roc_fpr, result.roc_tpr)}, tmp_path / "roc.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    plot_roc(result, tmp_path / "roc2.png", log_far=False)
    report = {"lfw": result, "nan": float("nan"), "array": np.arange(3)}
    write_report(tmp_path / "r.json", report)
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["lfw"]["accuracy"] == result.accuracy
    assert len(loaded["lfw"]["fold_accuracies"]) == 10
    assert loaded["nan"] is None and loaded["array"] == [0, 1, 2]
    assert sorted(os.listdir(tmp_path)) == ["r.json", "roc.png", "roc2.png"]  # no temporary files left
    with pytest.raises(FileNotFoundError, match="output folder"):
        write_report(tmp_path / "missing" / "r.json", report)


# ---------------------------------------------------------------- VerificationCallback


class WithBackbone(keras.Model):
    """Shaped like keras_fr.training.FaceTrainingModel: a classifier with the embedding net at .backbone."""

    def __init__(self, backbone, num_classes):
        super().__init__()
        self.backbone = backbone
        self.head = keras.layers.Dense(num_classes)

    def call(self, x):
        return self.head(self.backbone(x))


def test_verification_callback_logs_into_history(tmp_path):
    from keras_fr.training.callbacks import VerificationCallback

    path, images = _separable_bin(tmp_path)
    backbone, _ = _linear_model(7)
    model = WithBackbone(backbone, 3)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _images(12, seed=8).astype("float32") / 127.5 - 1
    y = np.arange(12) % 3
    cb = VerificationCallback(path, every_n_epochs=2, batch_size=16, name="sep", verbose=0)
    history = model.fit(x, y, epochs=4, batch_size=6, callbacks=[cb], verbose=0)
    assert len(history.history["sep_accuracy"]) == 2  # epochs 2 and 4 only
    assert len(history.history["loss"]) == 4
    # the logged value is the protocol on the backbone's current (trained) weights, computed here in numpy
    w = backbone.layers[-1].get_weights()[0]
    ref = _numpy_embed(images, w, flip=False)
    direct = verify_pairs(ref[0::2], ref[1::2], [True, False] * 10)
    assert history.history["sep_accuracy"][-1] == pytest.approx(direct.accuracy, abs=1e-12)
    assert history.history["sep_threshold"][-1] == pytest.approx(direct.threshold, abs=1e-12)
    for key in ("sep_accuracy_std", "sep_val", "sep_far", "sep_auc"):
        assert len(history.history[key]) == 2


def test_verification_callback_explicit_embedding_model(tmp_path):
    from keras_fr.training.callbacks import VerificationCallback

    path, _ = _separable_bin(tmp_path)
    emb_model, _ = _linear_model(9)
    inputs = keras.Input((SIZE, SIZE, 3))
    trained = keras.Model(inputs, keras.layers.Dense(3)(emb_model(inputs)))
    trained.compile(optimizer="sgd", loss="mse")
    cb = VerificationCallback(path, embedding_model=emb_model, verbose=0)
    history = trained.fit(_images(4).astype("float32"), np.zeros((4, 3)), epochs=1, callbacks=[cb], verbose=0)
    assert history.history["val_accuracy"] == [cb.last_result.accuracy]
    with pytest.raises(ValueError, match="every_n_epochs"):
        VerificationCallback(path, every_n_epochs=0)
    with pytest.raises(FileNotFoundError):
        VerificationCallback(tmp_path / "absent.bin")
