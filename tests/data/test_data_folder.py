"""image_folder_dataset: labels, decoding, resizing, shuffling, and its errors on bad folders."""

import numpy as np
import pytest
from PIL import Image

from keras_fr.data import image_folder_dataset, scan_image_folder, split_identities


def _write(path, color, size=(20, 20), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


def _make_tree(root, counts=(3, 2, 4)):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, n in enumerate(counts):
        for j in range(n):
            fmt = "PNG" if j % 2 else "BMP"  # lossless: exact colours survive
            _write(root / f"id_{i}" / f"{j}.{fmt.lower()}", colors[i], fmt=fmt)
    return colors


def test_labels_images_and_info(tmp_path):
    colors = _make_tree(tmp_path)
    (tmp_path / "id_0" / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("stray file")
    dataset, info = image_folder_dataset(tmp_path, image_size=16, batch_size=4, shuffle=False)
    assert info.class_names == ["id_0", "id_1", "id_2"]
    assert info.class_counts == [3, 2, 4]
    assert info.num_images == 9 and info.num_classes == 3
    assert sorted(p.rsplit("/", 1)[-1] for p in info.ignored) == ["README", "notes.txt"]
    batches = list(dataset.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 16, 16, 3), (4, 16, 16, 3), (1, 16, 16, 3)]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 2, 2, 2, 2])
    for image, label in zip(images, labels):
        expected = np.asarray(colors[label], np.float32) / 127.5 - 1.0
        np.testing.assert_allclose(image, np.broadcast_to(expected, image.shape), atol=1e-5)


def test_shuffle_is_seeded_and_complete(tmp_path):
    _make_tree(tmp_path, counts=(5, 5, 5))

    def labels(seed):
        ds, _ = image_folder_dataset(tmp_path, image_size=8, batch_size=15, seed=seed, verify=False)
        return next(ds.as_numpy_iterator())[1]

    a, b, c = labels(1), labels(1), labels(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.sort(a)) or not np.array_equal(c, np.sort(c))
    assert sorted(a.tolist()) == [0] * 5 + [1] * 5 + [2] * 5


def test_unreadable_images_skipped_and_counted_or_raised(tmp_path):
    _make_tree(tmp_path)
    (tmp_path / "id_1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = tmp_path / "id_2" / "truncated.png"
    _write(good, (9, 9, 9), size=(64, 64))
    good.write_bytes(good.read_bytes()[:60])
    dataset, info = image_folder_dataset(tmp_path, image_size=8, batch_size=32, shuffle=False)
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in info.skipped) == ["broken.jpg", "truncated.png"]
    assert info.class_counts == [3, 2, 4]
    assert sum(len(b[1]) for b in dataset.as_numpy_iterator()) == 9
    with pytest.raises(ValueError, match="broken.jpg"):
        image_folder_dataset(tmp_path, on_error="raise")
    # Without verification the decoder's failures are dropped by the pipeline in "skip" mode.
    dataset, info = image_folder_dataset(tmp_path, image_size=8, batch_size=32, verify=False)
    assert info.num_images == 11
    assert sum(len(b[1]) for b in dataset.as_numpy_iterator()) == 9


def test_errors_for_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="no identity folders"):
        image_folder_dataset(tmp_path)
    _make_tree(tmp_path)
    (tmp_path / "id_empty").mkdir()
    (tmp_path / "id_empty" / "x.txt").write_text("")
    with pytest.raises(ValueError, match="id_empty"):
        image_folder_dataset(tmp_path)
    # The subset without the empty folder works, labels follow the subset.
    _, info = image_folder_dataset(tmp_path, classes=["id_2", "id_0"], verify=False)
    assert info.class_names == ["id_0", "id_2"] and info.class_counts == [3, 4]
    with pytest.raises(FileNotFoundError, match="id_9"):
        image_folder_dataset(tmp_path, classes=["id_0", "id_9"])
    (tmp_path / "id_bad").mkdir()
    (tmp_path / "id_bad" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable image"):
        image_folder_dataset(tmp_path, classes=["id_0", "id_bad"])
    for kwargs, word in [({"image_size": 0}, "image_size"), ({"batch_size": 0}, "batch_size"),
                         ({"on_error": "ignore"}, "on_error")]:
        with pytest.raises(ValueError, match=word):
            image_folder_dataset(tmp_path, classes=["id_0"], **kwargs)


def test_augmentation_is_applied_per_batch(tmp_path):
    import keras

    _make_tree(tmp_path)
    flip_all = keras.layers.Lambda(lambda x: -x)
    dataset, _ = image_folder_dataset(
        tmp_path, image_size=8, batch_size=9, shuffle=False, augmentation=flip_all
    )
    plain, _ = image_folder_dataset(tmp_path, image_size=8, batch_size=9, shuffle=False)
    np.testing.assert_allclose(next(iter(dataset))[0].numpy(), -next(iter(plain))[0].numpy())


def test_split_identities(tmp_path):
    csv = tmp_path / "split.csv"
    csv.write_text("identity,split,images\n3,train,2\n1,test,4\n2,train,5\n")
    assert split_identities(csv) == ["2", "3"]
    assert split_identities(csv, "test") == ["1"]
    with pytest.raises(ValueError, match="valid"):
        split_identities(csv, "valid")
    (tmp_path / "bad.csv").write_text("name,set\n")
    with pytest.raises(ValueError, match="identity"):
        split_identities(tmp_path / "bad.csv")


def test_celeba_train_split(celeba_dir):
    train = split_identities(celeba_dir / "split.csv", "train")
    assert len(train) == 240
    dataset, info = image_folder_dataset(
        celeba_dir / "images", classes=train[:5], image_size=112, batch_size=8, verify=False
    )
    images, labels = next(iter(dataset))
    assert images.shape[1:] == (112, 112, 3) and info.num_classes == 5
    assert float(images.numpy().min()) >= -1.0 and float(images.numpy().max()) <= 1.0


# ---- augmentation layers (keras_fr.data.augment) ----

from keras_fr.data.augment import (  # noqa: E402
    RandomDownUpScale,
    RandomPhotometricJitter,
    RandomRectangleCrop,
    lgaf_augmentation,
    msconv_augmentation,
)


def _random_images(n, size=8, seed=0):
    return np.random.default_rng(seed).uniform(-0.9, 0.9, (n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("layer_cls", [RandomRectangleCrop, RandomPhotometricJitter, RandomDownUpScale])
def test_augmentation_probability_per_sample(layer_cls):
    x = _random_images(3000)
    out = np.asarray(layer_cls(probability=0.2, seed=1)(x, training=True))
    changed = np.any(np.abs(out - x) > 1e-4, axis=(1, 2, 3)).mean()
    # A chosen sample can stay unchanged only by chance (e.g. a crop keeping everything).
    assert 0.15 < changed < 0.23, changed
    np.testing.assert_array_equal(np.asarray(layer_cls(probability=0.2)(x[:4], training=False)), x[:4])
    assert np.all(np.asarray(layer_cls(probability=0.0)(x[:4])) == x[:4])
    # Single images work too.
    assert np.asarray(layer_cls(probability=1.0, seed=2)(x[0])).shape == x[0].shape


def test_rectangle_crop_keeps_one_rectangle_in_place():
    x = _random_images(50, size=16)
    out = np.asarray(RandomRectangleCrop(probability=1.0, scale=(0.2, 0.5), seed=3)(x))
    for a, b in zip(x, out):
        kept = np.all(b == a, axis=-1)
        black = np.all(b == -1.0, axis=-1)
        assert np.all(kept | black)
        rows, cols = np.nonzero(kept)
        # The kept pixels form a full axis-aligned rectangle of 20-50 % of the area (pixel rounding).
        assert kept[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert 0.1 < kept.mean() < 0.65


def test_photometric_brightness_only_matches_formula():
    x = _random_images(200)
    out = np.asarray(
        RandomPhotometricJitter(probability=1.0, brightness=0.5, contrast=0.0, saturation=0.0, seed=4)(x)
    )
    unit_in, unit_out = (x + 1) / 2, (out + 1) / 2
    factors = []
    for a, b in zip(unit_in, unit_out):
        unclipped = (b < 0.999) & (a > 0.05)
        factors.append(np.median(b[unclipped] / a[unclipped]))
    factors = np.asarray(factors)
    for f, a, b in zip(factors, unit_in, unit_out):
        np.testing.assert_allclose(b, np.clip(a * f, 0, 1), atol=2e-3)
    assert factors.min() < 0.8 and factors.max() > 1.2


def test_down_up_scale_blurs_and_keeps_constants():
    checker = np.indices((16, 16)).sum(0) % 2 * 2.0 - 1.0
    x = np.repeat(checker[None, :, :, None], 3, -1).astype(np.float32)
    x = np.concatenate([x, np.full_like(x, 0.3)])
    out = np.asarray(RandomDownUpScale(probability=1.0, scale=(0.5, 0.5))(x))
    assert np.abs(out[0]).max() < 0.35  # the one-pixel checkerboard is averaged away
    np.testing.assert_allclose(out[1], 0.3, atol=1e-5)
    same = np.asarray(RandomDownUpScale(probability=1.0, scale=(1.0, 1.0))(x))
    np.testing.assert_allclose(same, x, atol=1e-5)
    # Against PIL's own bilinear down-up (interior pixels; the borders are handled differently).
    img = np.random.default_rng(5).uniform(0, 255, (16, 16, 3)).astype(np.uint8)
    small = Image.fromarray(img).resize((8, 8), Image.BILINEAR).resize((16, 16), Image.BILINEAR)
    ours = np.asarray(RandomDownUpScale(probability=1.0, scale=(0.5, 0.5))(img[None].astype(np.float32)))
    np.testing.assert_allclose(ours[0, 3:-3, 3:-3], np.asarray(small, np.float32)[3:-3, 3:-3], atol=3.0)


def test_augmentation_configs_and_presets():
    import keras

    for layer in (RandomRectangleCrop(0.3, scale=(0.4, 0.9)), RandomPhotometricJitter(0.1, brightness=0.2),
                  RandomDownUpScale(0.5, scale=(0.3, 0.8))):
        again = keras.layers.deserialize(keras.layers.serialize(layer))
        assert again.get_config() == layer.get_config()
    pipeline = lgaf_augmentation(seed=0)
    assert [type(layer).__name__ for layer in pipeline.layers] == [
        "RandomFlip", "RandomRectangleCrop", "RandomPhotometricJitter", "RandomDownUpScale"]
    assert all(layer.probability == 0.2 for layer in pipeline.layers[1:])
    out = np.asarray(msconv_augmentation(seed=0)(_random_images(2), training=True))
    assert out.shape == (2, 8, 8, 3)
    for bad in ({"probability": 1.5}, {"scale": (0.9, 0.1)}):
        with pytest.raises(ValueError):
            RandomRectangleCrop(**bad)


def test_augmentation_runs_in_tf_data(tmp_path):
    _make_tree(tmp_path)
    dataset, _ = image_folder_dataset(
        tmp_path, image_size=16, batch_size=9, shuffle=False, augmentation=lgaf_augmentation(0.5, seed=1)
    )
    images, labels = next(iter(dataset))
    assert images.shape == (9, 16, 16, 3)
    assert float(images.numpy().min()) >= -1.0 - 1e-5 and float(images.numpy().max()) <= 1.0 + 1e-5
