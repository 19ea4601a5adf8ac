"""keras_fr.export on small models with the risky operators (grouped conv, strided dilated branch, PReLU,
BN, Dense, flatten, LGAF fusion): parity with Keras measured here independently (the LiteRT interpreter
and ONNX Runtime are called directly, the numbers computed with numpy), quantization bars, batch sizes,
builtin-only operators, the self-check that deletes a failing file, and argument errors.

Helpers at the top are shared with the other tests/export/test_export_*.py files.
"""

import os
import pathlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("tf2onnx")

from keras_fr import export  # noqa: E402
from keras_fr.export import _common  # noqa: E402
from keras_fr.export import _onnx  # noqa: E402
from keras_fr.export import _tflite  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
CELEBA_IMAGES = SHARED_DATA / "celeba299" / "images"
FLOAT32_REL, FLOAT32_COS = 1e-4, 0.99999


# ---------------------------------------------------------------------------------------------------
# Shared helpers (independent of the code under test where they judge it)
# ---------------------------------------------------------------------------------------------------


def face_pixels(n, size=112, seed=0):
    """uint8 face crops: real CelebA faces when ../shared/data is present, else synthetic faces."""
    files = sorted(CELEBA_IMAGES.glob("*/*.jpg")) if CELEBA_IMAGES.is_dir() else []
    if len(files) >= n:
        from PIL import Image

        rng = np.random.default_rng(seed)
        picks = rng.choice(len(files), size=n, replace=False)
        out = []
        for i in picks:
            with Image.open(files[i]) as im:
                out.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)))
        return np.stack(out)
    return export.synthetic_faces(n, size, seed=seed)


def faces(n, size=112, seed=0):
    """Preprocessed ([-1, 1]) face batch, the model's input."""
    return face_pixels(n, size, seed).astype(np.float32) / 127.5 - 1.0


def randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics, so BN folding is actually exercised."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for w in layer.weights:
                name = w.path.split("/")[-1]
                shape = tuple(w.shape)
                if name == "gamma":
                    values.append(rng.uniform(0.6, 1.4, shape))
                elif name == "beta":
                    values.append(rng.normal(0.0, 0.1, shape))
                elif name == "moving_mean":
                    values.append(rng.normal(0.0, 0.1, shape))
                else:
                    values.append(rng.uniform(0.5, 2.0, shape))
            layer.set_weights([v.astype("float32") for v in values])
    return model


def run_tflite_file(path, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], np.ascontiguousarray(x, np.float32))
    it.invoke()
    return np.array(it.get_tensor(it.get_output_details()[0]["index"]))


def tflite_op_names(path):
    """Operator names as the interpreter itself reports them (independent of tflite_operators)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return {d["op_name"] for d in it._get_ops_details()}


def op_input_dtypes(path, op_name):
    """The dtypes of the first input of every ``op_name`` operator in the file (as the interpreter reads it)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    dtypes = {d["index"]: d["dtype"] for d in it.get_tensor_details()}
    return [dtypes[op["inputs"][0]] for op in it._get_ops_details() if op["op_name"] == op_name]


def run_onnx_file(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]


def parity(reference, actual):
    """(max |diff| / output scale, min per-sample cosine), computed directly."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(actual, np.float64).reshape(len(actual), -1)
    assert ref.shape == out.shape
    rel = np.abs(ref - out).max() / np.abs(ref).max()
    cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    return float(rel), float(cos.min())


def keras_out(model, x):
    return np.asarray(model(x, training=False))


def assert_builtin_only(path):
    names = tflite_op_names(path)
    assert names, "no operators found"
    bad = {n for n in names if n.startswith("Flex") or "CUSTOM" in n.upper() or "VAR" in n.upper()}
    assert not bad, f"non-builtin operators in {path}: {bad}"
    return names


def assert_no_leftovers(folder, keep=()):
    left = sorted(p.name for p in pathlib.Path(folder).iterdir() if p.name not in keep)
    assert left == [], f"files left behind: {left}"


# ---------------------------------------------------------------------------------------------------
# Small models with the risky operators
# ---------------------------------------------------------------------------------------------------


def tiny_msconv_model(size=16, seed=0):
    """Conv-BN-PReLU(shared) -> max pool padded with -inf -> MSConv stride 2 (grouped 3x3 convs,
    groups=32, strided dilated branch) -> Dropout -> Flatten -> Dense -> BN: every operator kind of MSConvResNet on a small graph."""
    from keras_fr.layers.msconv import MSConv
    from keras_fr.layers.msconv import PaddedMaxPooling2D

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="input_image")
    x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False, name="stem")(inp)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2, 3], name="stem_prelu")(x)
    x = PaddedMaxPooling2D(3, strides=2, padding=1, name="maxpool")(x)  # -inf padding
    x = MSConv(strides=2, name="msconv")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, name="fc")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="features")(x)
    return randomize_bn(keras.Model(inp, x, name="tiny_msconv"), seed)


def tiny_lgaf_model(size=32, seed=0):
    """A small stem, then LGAF's top: MultiHeadLocal (multi-scale dilated convs, LANet, SE) and a
    flatten-Dense-BN global branch, fused by FeatureQualityFusion with non-default statistics."""
    from keras_fr.layers.lgaf import FeatureQualityFusion
    from keras_fr.layers.lgaf import MultiHeadLocal

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="input_image")
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="stem")(inp)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="stem_prelu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="stem2")(x)  # (N, 8, 8, 32)
    local = MultiHeadLocal(num_heads=2, embedding_size=32, branch_channels=16, name="local_branch")(x)
    g = keras.layers.Flatten(name="flatten")(x)
    g = keras.layers.Dense(32, name="fc")(g)
    g = keras.layers.BatchNormalization(epsilon=1e-5, name="features")(g)
    fusion = FeatureQualityFusion(name="fusion")
    out = fusion([local, g])
    model = randomize_bn(keras.Model(inp, out, name="tiny_lgaf"), seed)
    # Statistics near the branches' actual norms, so the quality weights differ per sample and clip.
    norms = np.asarray(fusion.feature_norms(*keras.Model(inp, [local, g])(faces(16, size, seed=5))))
    fusion.norm_mean.assign(norms.mean(0).astype("float32"))
    fusion.norm_std.assign((norms.std(0) * 0.5 + 1e-3).astype("float32"))
    return model


@pytest.fixture(scope="module")
def msconv_model():
    return tiny_msconv_model()


@pytest.fixture(scope="module")
def msconv_inputs():
    return faces(8, 16, seed=1)


# ---------------------------------------------------------------------------------------------------
# Synthetic faces, comparison, input data
# ---------------------------------------------------------------------------------------------------


def test_synthetic_faces_are_deterministic_smooth_images():
    a = export.synthetic_faces(6, 64, seed=3)
    b = export.synthetic_faces(6, 64, seed=3)
    c = export.synthetic_faces(6, 64, seed=4)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5
    x = a.astype(np.float64)
    # Face-like: neighbouring pixels are close (noise would differ by ~85 on average) while the
    # image as a whole varies widely.
    neighbour = np.abs(np.diff(x, axis=2)).mean()
    assert neighbour < 8 and x.std() > 25
    assert export.synthetic_faces(2, (40, 56)).shape == (2, 40, 56, 3)


def test_compare_matches_direct_formula():
    ref = np.array([[3.0, 4.0], [1.0, 0.0]])
    out = np.array([[3.0, 4.5], [0.0, 1.0]])
    max_abs, scale, rel, cos = _common.compare(ref, out)
    assert max_abs == pytest.approx(1.0) and scale == pytest.approx(4.0) and rel == pytest.approx(0.25)
    # cosines: (9 + 18) / (5 * sqrt(29.25)) and 0
    assert cos == pytest.approx(0.0)
    _, _, _, cos_first = _common.compare(ref[:1], out[:1])
    assert cos_first == pytest.approx(27.0 / (5.0 * np.sqrt(29.25)))


def test_load_samples_from_folder_array_and_iterable(tmp_path):
    from PIL import Image

    pixels = export.synthetic_faces(5, 24, seed=2)
    (tmp_path / "a").mkdir()
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(tmp_path / "a" / f"{i}.png")
    from_folder = _common.load_samples(tmp_path, 3, 24, 24)
    assert from_folder.shape == (3, 24, 24, 3) and from_folder.dtype == np.float32
    assert from_folder.min() >= -1.0 and from_folder.max() <= 1.0
    np.testing.assert_allclose(from_folder[0], pixels[0] / 127.5 - 1.0, atol=1e-6)
    # Resized when the folder's images are another size.
    assert _common.load_samples(tmp_path, 2, 16, 16).shape == (2, 16, 16, 3)
    from_array = _common.load_samples(pixels, 4, 24, 24)
    np.testing.assert_allclose(from_array, pixels[:4] / 127.5 - 1.0, atol=1e-6)
    from_iter = _common.load_samples((b for b in np.split(pixels, 5)), 3, 24, 24)
    assert from_iter.shape == (3, 24, 24, 3)


def test_load_samples_from_pairs_csv(celeba_dir):
    from PIL import Image

    pytest.importorskip("keras_fr.evaluation")
    x = _common.load_samples(celeba_dir / "pairs_test.csv", 6, 112, 112)
    assert x.shape == (6, 112, 112, 3) and x.min() >= -1.0 and x.max() <= 1.0
    first = (celeba_dir / "pairs_test.csv").read_text().splitlines()[1].split(",")[0]
    with Image.open(celeba_dir / "images" / first) as im:
        expected = np.asarray(im.convert("RGB"), np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(x[0], expected, atol=1e-6)  # the first image of the file comes first


def test_load_samples_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        _common.load_samples(tmp_path / "missing", 2, 16, 16)
    with pytest.raises(ValueError, match="no images"):
        _common.load_samples(tmp_path, 2, 16, 16)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        _common.load_samples(np.full((2, 16, 16, 3), 200.0, np.float32), 2, 16, 16)
    with pytest.raises(ValueError, match="16x16"):
        _common.load_samples(np.zeros((2, 8, 8, 3), np.uint8), 2, 16, 16)
    with pytest.raises(ValueError, match="image folder"):
        _common.load_samples(3.5, 2, 16, 16)


# ---------------------------------------------------------------------------------------------------
# TFLite
# ---------------------------------------------------------------------------------------------------


def test_tflite_float32_grouped_conv_is_builtin_and_matches_keras(tmp_path, msconv_model, msconv_inputs):
    path = tmp_path / "m.tflite"
    report = export.to_tflite(msconv_model, path)
    assert path.is_file() and report.size_bytes == path.stat().st_size
    names = assert_builtin_only(path)
    assert "CONV_2D" in names and "CONCATENATION" not in names  # grouped conv: one CONV_2D
    assert set(report.ops) == names
    assert report.grouped_conv == "native" and report.input_shape == (None, 16, 16, 3)
    rel, cos = parity(keras_out(msconv_model, msconv_inputs), run_tflite_file(path, msconv_inputs))
    assert rel <= FLOAT32_REL and cos >= FLOAT32_COS
    assert report.verified and report.max_rel_diff <= FLOAT32_REL and report.min_cosine >= FLOAT32_COS
    # Dynamic batch: 1, 7 and 32 all run; no NaN/Inf; batch 1 equals the batched result.
    for n in (1, 7, 32):
        x = faces(n, 16, seed=10 + n)
        out = run_tflite_file(path, x)
        assert out.shape == (n, 32) and np.all(np.isfinite(out))
        rel, cos = parity(keras_out(msconv_model, x), out)
        assert rel <= FLOAT32_REL and cos >= FLOAT32_COS
    assert_no_leftovers(tmp_path, keep={"m.tflite"})


def test_tflite_split_formulation(tmp_path, msconv_model, msconv_inputs):
    path = tmp_path / "split.tflite"
    report = export.to_tflite(msconv_model, path, grouped_conv="split")
    names = assert_builtin_only(path)
    assert report.grouped_conv == "split" and "CONCATENATION" in names
    rel, cos = parity(keras_out(msconv_model, msconv_inputs), run_tflite_file(path, msconv_inputs))
    assert rel <= FLOAT32_REL and cos >= FLOAT32_COS


def test_tflite_falls_back_to_split_when_native_conversion_fails(tmp_path, msconv_model, monkeypatch):
    real_convert = _tflite._convert

    def convert(serving, tmp, quantize, representative, *islands):
        grouped_native = any(
            getattr(layer, "grouped_conv", None) == "native"
            for layer in serving._flatten_layers(include_self=False, recursive=True)
        )
        if grouped_native:
            raise RuntimeError("pretend grouped convolution is not a builtin")
        return real_convert(serving, tmp, quantize, representative, *islands)

    monkeypatch.setattr(_tflite, "_convert", convert)
    report = export.to_tflite(msconv_model, tmp_path / "auto.tflite")
    assert report.grouped_conv == "split" and "CONCATENATION" in report.ops
    with pytest.raises(RuntimeError, match="pretend"):
        export.to_tflite(msconv_model, tmp_path / "native.tflite", grouped_conv="native")
    assert_no_leftovers(tmp_path, keep={"auto.tflite"})


@pytest.mark.parametrize("quantize,bar", [("float16", 0.999), ("dynamic", 0.98)])
def test_tflite_weight_quantization(tmp_path, msconv_model, msconv_inputs, quantize, bar):
    path = tmp_path / f"{quantize}.tflite"
    f32 = export.to_tflite(msconv_model, tmp_path / "f32.tflite", verify=False)
    report = export.to_tflite(msconv_model, path, quantize=quantize)
    assert_builtin_only(path)
    assert report.size_bytes < 0.6 * f32.size_bytes  # weights really are smaller
    for n in (1, 7):
        x = msconv_inputs[:n]
        _, cos = parity(keras_out(msconv_model, x), run_tflite_file(path, x))
        assert cos >= bar


def test_tflite_int8_from_image_folder(tmp_path, msconv_model):
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    calib = tmp_path / "calib" / "person"
    calib.mkdir(parents=True)
    for i, img in enumerate(face_pixels(40, 16, seed=20)):
        Image.fromarray(img).save(calib / f"{i:03d}.png")
    path = tmp_path / "int8.tflite"
    report = export.to_tflite(
        msconv_model, path, quantize="int8", representative_data=tmp_path / "calib",
        num_calibration_samples=32,
    )
    names = assert_builtin_only(path)
    assert {"QUANTIZE", "DEQUANTIZE"} <= names and "int8" in report.details
    # The -inf-padded max pool is computed with edge padding in int8 (same maxima, finite range).
    assert "MIRROR_PAD" in names
    it = Interpreter(model_path=str(path))
    assert it.get_input_details()[0]["dtype"] == np.float32
    assert it.get_output_details()[0]["dtype"] == np.float32
    conv_types = {d["dtype"] for d in it.get_tensor_details() if "conv" in d["name"].lower()}
    assert np.int8 in conv_types  # activations / weights of the convolutions are int8
    x = faces(7, 16, seed=21)
    out = run_tflite_file(path, x)
    assert np.all(np.isfinite(out))
    _, cos = parity(keras_out(msconv_model, x), out)
    assert cos >= 0.98
    assert_no_leftovers(tmp_path, keep={"calib", "int8.tflite"})


def test_tflite_rejects_non_builtin_operators(tmp_path):
    inp = keras.Input((8, 8, 3), name="input_image")
    out = keras.layers.Lambda(lambda t: keras.ops.erfinv(0.5 * keras.ops.tanh(t)))(inp)
    model = keras.Model(inp, keras.layers.Flatten()(out))
    with pytest.raises(RuntimeError, match="builtin"):
        export.to_tflite(model, tmp_path / "erfinv.tflite")
    assert_no_leftovers(tmp_path)


def test_forbidden_operator_detection():
    assert _tflite.forbidden_operators(["CONV_2D", "CUSTOM:FlexErfinv", "VAR_HANDLE", "ADD"]) == [
        "CUSTOM:FlexErfinv", "VAR_HANDLE"
    ]
    assert _tflite.forbidden_operators(["CONV_2D", "PRELU"]) == []


def test_failing_tflite_verification_leaves_no_file(tmp_path, msconv_model, monkeypatch):
    real_run = _tflite.run_tflite
    monkeypatch.setattr(_tflite, "run_tflite", lambda p, x, **k: real_run(p, x, **k) * 1.01 + 0.05)
    path = tmp_path / "bad.tflite"
    with pytest.raises(export.ExportVerificationError, match="cosine|diff") as info:
        export.to_tflite(msconv_model, path)
    assert info.value.report.max_rel_diff > FLOAT32_REL
    assert not path.exists()
    assert_no_leftovers(tmp_path)
    # An existing file at the destination is left untouched by a failed export.
    path.write_bytes(b"previous")
    with pytest.raises(export.ExportVerificationError):
        export.to_tflite(msconv_model, path)
    assert path.read_bytes() == b"previous"
    assert_no_leftovers(tmp_path, keep={"bad.tflite"})


# ---------------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------------


def test_onnx_float32_grouped_conv_nhwc_and_nchw(tmp_path, msconv_model, msconv_inputs):
    import onnx

    path = tmp_path / "m.onnx"
    report = export.to_onnx(msconv_model, path)
    graph = onnx.load(str(path)).graph
    groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert 32 in groups  # grouped conv exported as one ONNX Conv with group=32
    assert len(graph.output) == 1 and len(graph.input) == 1
    assert {t.data_type for t in graph.initializer if t.data_type in (1, 10, 11, 16)} == {1}  # float32
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [16, 16, 3]
    ref = keras_out(msconv_model, msconv_inputs)
    rel, cos = parity(ref, run_onnx_file(path, msconv_inputs))
    assert rel <= FLOAT32_REL and cos >= FLOAT32_COS and report.min_cosine >= FLOAT32_COS
    for n in (1, 7, 32):
        x = faces(n, 16, seed=30 + n)
        out = run_onnx_file(path, x)
        assert out.shape == (n, 32) and np.all(np.isfinite(out))

    cf = tmp_path / "cf.onnx"
    export.to_onnx(msconv_model, cf, channels_first=True)
    dims = onnx.load(str(cf)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 16, 16]
    rel, cos = parity(ref, run_onnx_file(cf, np.transpose(msconv_inputs, (0, 3, 1, 2))))
    assert rel <= FLOAT32_REL and cos >= FLOAT32_COS
    assert_no_leftovers(tmp_path, keep={"m.onnx", "cf.onnx"})


def test_onnx_split_formulation(tmp_path, msconv_model, msconv_inputs):
    path = tmp_path / "split.onnx"
    report = export.to_onnx(msconv_model, path, grouped_conv="split", opset=13)
    assert report.grouped_conv == "split"
    rel, cos = parity(keras_out(msconv_model, msconv_inputs), run_onnx_file(path, msconv_inputs))
    assert rel <= FLOAT32_REL and cos >= FLOAT32_COS


def test_failing_onnx_verification_leaves_no_file(tmp_path, msconv_model, monkeypatch):
    monkeypatch.setattr(_onnx, "run_onnx", lambda p, x, **k: np.zeros((len(x), 32), np.float32))
    path = tmp_path / "bad.onnx"
    with pytest.raises(export.ExportVerificationError, match="not kept"):
        export.to_onnx(msconv_model, path)
    assert not path.exists()
    assert_no_leftovers(tmp_path)


# ---------------------------------------------------------------------------------------------------
# LGAF's fusion, frozen in inference mode
# ---------------------------------------------------------------------------------------------------


def test_lgaf_top_exports_with_frozen_fusion(tmp_path):
    model = tiny_lgaf_model()
    fusion = model.get_layer("fusion")
    stats = (fusion.norm_mean.numpy().copy(), fusion.norm_std.numpy().copy())
    x = faces(8, 32, seed=40)
    ref = keras_out(model, x)
    tfl = tmp_path / "lgaf.tflite"
    export.to_tflite(model, tfl, verification_data=x)
    names = assert_builtin_only(tfl)  # no VAR_HANDLE / ASSIGN_VARIABLE: the statistics are constants
    assert not any("ASSIGN" in n or "READ_VARIABLE" in n for n in names)
    onx = tmp_path / "lgaf.onnx"
    export.to_onnx(model, onx, verification_data=x)
    for out in (run_tflite_file(tfl, x), run_onnx_file(onx, x)):
        rel, cos = parity(ref, out)
        assert rel <= FLOAT32_REL and cos >= FLOAT32_COS
    # int8: everything quantized except the fusion, which stays float32 (int8 norms are too coarse
    # for the quality weights; this model's int8 cosine was 0.97 with a quantized fusion).
    from ai_edge_litert.interpreter import Interpreter

    q8 = tmp_path / "lgaf8.tflite"
    report = export.to_tflite(model, q8, quantize="int8", num_calibration_samples=32,
                              representative_data=face_pixels(40, 32, seed=41))
    assert "fusion" in report.details
    details = Interpreter(model_path=str(q8)).get_tensor_details()
    assert {d["dtype"] for d in details if "/fusion" in d["name"]} == {np.float32}
    assert np.int8 in {d["dtype"] for d in details if "local_branch" in d["name"]}
    _, cos = parity(ref, run_tflite_file(q8, x))
    assert cos >= 0.98
    # Exporting did not move the statistics, and the gammas really differ between samples.
    np.testing.assert_array_equal(fusion.norm_mean.numpy(), stats[0])
    np.testing.assert_array_equal(fusion.norm_std.numpy(), stats[1])
    sub = keras.Model(
        model.inputs[0], [model.get_layer("local_branch").output, model.get_layer("features").output]
    )
    norms = np.asarray(fusion.feature_norms(*sub(x)))
    z = np.clip(0.333 * (norms - stats[0]) / (stats[1] + 1e-3), -1, 1) + 1
    gamma_local = z[:, 0] / z.sum(1)
    assert gamma_local.std() > 0.01


# ---------------------------------------------------------------------------------------------------
# Argument errors
# ---------------------------------------------------------------------------------------------------


def test_bad_arguments(tmp_path, msconv_model):
    with pytest.raises(ValueError, match="keras.Model"):
        export.to_tflite("model", tmp_path / "a.tflite")
    with pytest.raises(ValueError, match=r"\.tflite"):
        export.to_tflite(msconv_model, tmp_path / "a.onnx")
    with pytest.raises(ValueError, match=r"\.onnx"):
        export.to_onnx(msconv_model, tmp_path / "a.tflite")
    with pytest.raises(FileNotFoundError, match="folder"):
        export.to_tflite(msconv_model, tmp_path / "missing" / "a.tflite")
    with pytest.raises(ValueError, match="quantize"):
        export.to_tflite(msconv_model, tmp_path / "a.tflite", quantize="int4")
    with pytest.raises(ValueError, match="representative_data"):
        export.to_tflite(msconv_model, tmp_path / "a.tflite", quantize="int8")
    with pytest.raises(ValueError, match="opset"):
        export.to_onnx(msconv_model, tmp_path / "a.onnx", opset=7)
    with pytest.raises(ValueError, match="channels_first"):
        export.to_onnx(msconv_model, tmp_path / "a.onnx", channels_first="yes")
    with pytest.raises(ValueError, match="grouped_conv"):
        export.to_onnx(msconv_model, tmp_path / "a.onnx", grouped_conv="fast")
    inp = keras.Input((16, 16, 3))
    two = keras.Model(inp, [keras.layers.Flatten()(inp), keras.layers.Flatten()(inp)])
    with pytest.raises(ValueError, match="one output"):
        export.to_onnx(two, tmp_path / "a.onnx")
    plain = keras.Model(inp, keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inp)))
    with pytest.raises(ValueError, match="grouped_conv='split'"):
        export.to_tflite(plain, tmp_path / "a.tflite", grouped_conv="split")
    assert_no_leftovers(tmp_path)
