"""Export of the MSConv networks (grouped 3x3 convs with groups=32, stride-2 dilated branches):
builtin-only TFLite and ONNX files that reproduce Keras, measured here with the runtimes directly."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("tf2onnx")

from keras_fr import export  # noqa: E402
from test_export_common import FLOAT32_COS  # noqa: E402
from test_export_common import FLOAT32_REL  # noqa: E402
from test_export_common import assert_builtin_only  # noqa: E402
from test_export_common import face_pixels  # noqa: E402
from test_export_common import faces  # noqa: E402
from test_export_common import keras_out  # noqa: E402
from test_export_common import op_input_dtypes  # noqa: E402
from test_export_common import parity  # noqa: E402
from test_export_common import randomize_bn  # noqa: E402
from test_export_common import run_onnx_file  # noqa: E402
from test_export_common import run_tflite_file  # noqa: E402


@pytest.fixture(scope="module")
def msconv26_small():
    from keras_fr.applications.msconv_resnet import MSConvResNet26

    # Headless at 32x32: every MSConv block (stride-2 dilated branches included), a fraction of the
    # compute of the 112x112 model.
    return randomize_bn(MSConvResNet26(include_top=False, input_shape=(32, 32, 3), pooling="avg"), seed=1)


def test_msconv_resnet26_tflite_float32(tmp_path, msconv26_small):
    path = tmp_path / "ms26.tflite"
    report = export.to_tflite(msconv26_small, path)
    names = assert_builtin_only(path)
    assert "CONV_2D" in names and report.grouped_conv == "native"
    # The dilated branches are CONV_2D with dilation factors, not space-to-batch operators (XNNPACK
    # runs no SPACE_TO_BATCH_ND: each one split the delegated graph).
    assert not {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} & set(names)
    assert report.input_shape == (None, 32, 32, 3)
    for n in (7, 1):
        x = faces(n, 32, seed=n)
        out = run_tflite_file(path, x)
        assert out.shape == (n, 2048) and np.all(np.isfinite(out))
        rel, cos = parity(keras_out(msconv26_small, x), out)
        assert rel <= FLOAT32_REL and cos >= FLOAT32_COS


def test_msconv_resnet26_onnx_float32(tmp_path, msconv26_small):
    import onnx

    path = tmp_path / "ms26.onnx"
    export.to_onnx(msconv26_small, path)
    graph = onnx.load(str(path)).graph
    groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert groups.count(32) >= 2 * 8  # two grouped branches in each of the 8 MSConv blocks
    for n in (7, 1):
        x = faces(n, 32, seed=10 + n)
        out = run_onnx_file(path, x)
        rel, cos = parity(keras_out(msconv26_small, x), out)
        assert rel <= FLOAT32_REL and cos >= FLOAT32_COS


@pytest.mark.large
def test_msconv_resnet26_full_size(tmp_path):
    from keras_fr.applications.msconv_resnet import MSConvResNet26

    model = randomize_bn(MSConvResNet26(), seed=2)
    x = faces(8, 112, seed=3)
    ref = keras_out(model, x)
    tfl = tmp_path / "ms26.tflite"
    export.to_tflite(model, tfl)
    assert_builtin_only(tfl)
    rel, cos = parity(ref, run_tflite_file(tfl, x))
    assert rel <= FLOAT32_REL and cos >= FLOAT32_COS
    batch32 = run_tflite_file(tfl, faces(32, 112, seed=4))
    assert batch32.shape == (32, 512) and np.all(np.isfinite(batch32))
    onx = tmp_path / "ms26.onnx"
    export.to_onnx(model, onx, channels_first=True)
    rel, cos = parity(ref, run_onnx_file(onx, np.transpose(x, (0, 3, 1, 2))))
    assert rel <= FLOAT32_REL and cos >= FLOAT32_COS
    # int8, calibrated on face images (real CelebA crops when present), checked on other faces.
    q8 = tmp_path / "ms26_int8.tflite"
    export.to_tflite(model, q8, quantize="int8", representative_data=face_pixels(48, 112, seed=5),
                     num_calibration_samples=40)
    names = assert_builtin_only(q8)
    # XNNPACK runs no SPACE_TO_BATCH_ND: dilated convolutions are one CONV_2D (GraphConv2D). Nor int8
    # PRELU: every PReLU of this network has one slope and is an int8 LEAKY_RELU (LeakyPReLU).
    assert not {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "PRELU"} & set(names)
    leaky = op_input_dtypes(q8, "LEAKY_RELU")
    assert len(leaky) == len([w for w in model.weights if "alpha" in w.path]) and set(leaky) == {np.int8}
    _, cos = parity(ref, run_tflite_file(q8, x))
    assert cos >= 0.98
