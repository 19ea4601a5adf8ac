"""The Python API: wrong shapes, dtypes and value ranges are clear ValueErrors before the model runs.

Where the range is checked: the raw Keras models trust their input (a check in the graph would change
every exported file and slow inference); ``evaluation.extract_embeddings`` and the CLI helpers check
the min/max of each batch (``applications.common.check_input_range``) before calling the model."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny():
    """A small IResNet18 (32x32 input, pooled): built once for the module."""
    from keras_fr.applications import IResNet18

    return IResNet18(weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg")


def _extract(model, images, **kwargs):
    from keras_fr.evaluation import extract_embeddings

    return extract_embeddings(model, images, batch_size=4, flip=False, verbose=0, **kwargs)


def test_good_input_passes(tiny):
    assert _extract(tiny, np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 512)


@pytest.mark.parametrize("images,message", [
    (np.full((2, 32, 32, 3), 200.0, np.float32), "preprocess_input"),  # 0-255 fed as model input
    (np.full((2, 32, 32, 3), 200, np.uint8), "preprocess_input"),
])
def test_unpreprocessed_pixels_are_refused(tiny, images, message):
    with pytest.raises(ValueError, match=message):
        _extract(tiny, images, preprocess=False)


@pytest.mark.parametrize("images,message", [
    (np.full((2, 32, 32, 3), -0.5, np.float32), "already preprocessed"),  # preprocessed twice
    (np.full((2, 32, 32, 3), 300.0, np.float32), r"not RGB pixels in \[0, 255\]"),
    (np.full((2, 32, 32, 3), np.nan, np.float32), "NaN"),
    (np.zeros((2, 32, 32), np.uint8), r"\(N, H, W, 3\)"),  # no channel axis
    (np.zeros((2, 32, 32, 4), np.uint8), r"\(N, H, W, 3\)"),  # RGBA
    (np.zeros((0, 32, 32, 3), np.uint8), "empty"),
    (np.array([[["a"] * 3] * 32] * 32)[None], "numeric"),
])
def test_bad_arrays_are_refused(tiny, images, message):
    with pytest.raises(ValueError, match=message):
        _extract(tiny, images)


def test_bad_batch_size(tiny):
    from keras_fr.evaluation import extract_embeddings

    with pytest.raises(ValueError, match="batch_size"):
        extract_embeddings(tiny, np.zeros((2, 32, 32, 3), np.uint8), batch_size=0, verbose=0)


def test_cli_helper_refuses_preprocessed_input(tiny):
    from keras_fr.cli.embed import embed_images

    with pytest.raises(ValueError, match="already preprocessed"):
        embed_images(tiny, np.full((1, 32, 32, 3), 0.5, np.float32) - 1.0)


def test_cli_helper_matches_an_eager_call_normalized_in_numpy(tiny):
    # embed_images runs a Keras model through predict_on_batch (memory: see keras_fr/cli/embed.py),
    # in batches; the result must be the eager forward pass, L2-normalized row by row.
    from keras_fr.applications import preprocess_input
    from keras_fr.cli.embed import embed_images

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype(np.uint8)
    expected = np.asarray(tiny(preprocess_input(images), training=False), np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embed_images(tiny, images, batch_size=2), expected, atol=1e-5)


def test_missing_image_file_in_a_list(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        _extract(tiny, [str(tmp_path / "gone.png")])


def test_preprocess_input_wrong_channels():
    from keras_fr.applications import preprocess_input

    with pytest.raises(ValueError, match="3 channels"):
        preprocess_input(np.zeros((1, 8, 8, 4)))


@pytest.mark.parametrize("name", ["IResNet18", "iresnet18", "IRESNET18", "i_resnet_18"])
def test_model_names_in_both_forms(name):
    from keras_fr.applications import canonical_name, get_builder

    assert canonical_name(name) == "iresnet18" and get_builder(name).__name__ == "IResNet18"


def test_unknown_model_name_lists_the_known_ones():
    from keras_fr.applications import get_model

    with pytest.raises(ValueError, match="known models: .*iresnet50"):
        get_model("resnet9000")


@pytest.mark.parametrize("weights,message", [
    (3, "must be None, a preset tag or the path"),
    ("missing/model.weights.h5", "not found"),
    ("missing.h5", "not found"),
])
def test_bad_weights_arguments(weights, message):
    from keras_fr.applications import IResNet18

    with pytest.raises(ValueError, match=message):
        IResNet18(weights=weights, include_top=False, input_shape=(32, 32, 3))


def test_wrong_input_shape_for_builder():
    from keras_fr.applications import IResNet18

    with pytest.raises(ValueError, match="at least"):
        IResNet18(weights=None, include_top=False, input_shape=(8, 8, 3))
