"""Export of the ArcFace IResNets: builtin-only TFLite and ONNX (including insightface's NCHW
(N, 3, 112, 112) layout) that reproduce Keras, measured here with the runtimes directly; quantized
TFLite within its cosine bars."""

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


def test_iresnet18_tflite_float32_headless(tmp_path):
    from keras_fr.applications.iresnet import IResNet18

    model = randomize_bn(IResNet18(include_top=False, input_shape=(32, 32, 3), pooling="avg"), seed=1)
    path = tmp_path / "r18.tflite"
    report = export.to_tflite(model, path)
    assert_builtin_only(path)
    assert report.grouped_conv is None and report.input_shape == (None, 32, 32, 3)
    for n in (7, 1):
        x = faces(n, 32, seed=n)
        out = run_tflite_file(path, x)
        assert out.shape == (n, 512) and np.all(np.isfinite(out))
        rel, cos = parity(keras_out(model, x), out)
        assert rel <= FLOAT32_REL and cos >= FLOAT32_COS


def test_iresnet18_onnx_nchw_insightface_layout(tmp_path):
    import onnx

    from keras_fr.applications.iresnet import IResNet18

    model = randomize_bn(IResNet18(), seed=2)  # include_top: the flatten + fc + features head
    path = tmp_path / "r18.onnx"
    export.to_onnx(model, path, channels_first=True)
    graph = onnx.load(str(path)).graph
    # What insightface's ONNX model router looks at: one input (batch, 3, S, S) with S >= 112, one output.
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 112, 112]
    assert len(graph.output) == 1
    # insightface's loader treats a model whose first nodes are named Sub* and Mul* as doing its own
    # normalization; ours must not look like that, so it feeds (pixel - 127.5) / 127.5 as we expect.
    first = [n.name for n in graph.node[:8]]
    assert not (any(n.startswith("Sub") for n in first) and any(n.startswith("Mul") for n in first))
    for n in (7, 1):
        x = faces(n, 112, seed=20 + n)
        out = run_onnx_file(path, np.transpose(x, (0, 3, 1, 2)))
        assert out.shape == (n, 512)
        rel, cos = parity(keras_out(model, x), out)
        assert rel <= FLOAT32_REL and cos >= FLOAT32_COS


@pytest.mark.large
def test_iresnet18_full_size_quantized(tmp_path):
    from keras_fr.applications.iresnet import IResNet18

    model = randomize_bn(IResNet18(), seed=3)
    x = faces(8, 112, seed=30)
    ref = keras_out(model, x)
    f32 = tmp_path / "r18.tflite"
    export.to_tflite(model, f32)
    rel, cos = parity(ref, run_tflite_file(f32, x))
    assert rel <= FLOAT32_REL and cos >= FLOAT32_COS
    big = run_tflite_file(f32, faces(32, 112, seed=31))
    assert big.shape == (32, 512) and np.all(np.isfinite(big))
    sizes = {None: f32.stat().st_size}
    calibration = face_pixels(48, 112, seed=32)
    for quantize, bar in (("float16", 0.999), ("dynamic", 0.98), ("int8", 0.98)):
        path = tmp_path / f"r18_{quantize}.tflite"
        export.to_tflite(model, path, quantize=quantize, num_calibration_samples=40,
                         representative_data=calibration if quantize == "int8" else None)
        assert_builtin_only(path)
        sizes[quantize] = path.stat().st_size
        for n in (8, 1):
            _, cos = parity(ref[:n], run_tflite_file(path, x[:n]))
            assert cos >= bar, (quantize, n, cos)
        assert np.all(np.isfinite(run_tflite_file(path, faces(32, 112, seed=33))))
    # XNNPACK has no int8 PRELU: the per-channel PReLUs stay float32 in the int8 file, one per block
    # and the stem, between DEQUANTIZE and QUANTIZE; the convolutions are int8.
    assert op_input_dtypes(tmp_path / "r18_int8.tflite", "PRELU") == [np.float32] * 9
    assert set(op_input_dtypes(tmp_path / "r18_int8.tflite", "CONV_2D")) == {np.int8}
    assert sizes["float16"] < 0.6 * sizes[None] and sizes["int8"] < 0.35 * sizes[None]
