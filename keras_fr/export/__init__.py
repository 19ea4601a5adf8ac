"""Deployment: export keras_fr models to TFLite (LiteRT) and ONNX, each file verified against Keras.

- `to_tflite(model, path, quantize=None | "float16" | "dynamic" | "int8", representative_data=None,
  verify=True)`: builtin TFLite operators only, dynamic batch.
- `to_onnx(model, path, opset=17, channels_first=False, verify=True)`: one output, float32 weights,
  dynamic batch, NHWC or NCHW input.

Both return an `ExportReport` and never leave a file that failed its check behind
(`ExportVerificationError`). `compare(reference, actual)` is that check's measurement (max |diff|,
output scale, relative max |diff|, smallest per-row cosine; a zero row matches only a zero row).
Needs the `export` extra (tf2onnx, onnx, onnxruntime, ai-edge-litert) and the TensorFlow backend.

The exporters know no architecture and use public Keras only. A layer that needs something particular
in a file says so itself, through the export hooks of `keras_fr.layers.export_hooks` (documented
there), which the exporter asks of every layer before tracing:

- `export_variant(target)` returns a layer to trace instead of this one for an `ExportTarget`
  (`format` "tflite"/"onnx", `quantize`, `grouped_conv` "native"/"split"), or None. The exporter
  rebuilds the Functional graph around the replacements (`keras.models.clone_model`), copies their
  weights and checks that the rebuilt model reproduces the original before tracing it. MSConv answers
  with its split or ONNX-friendly grouped convolutions, `PaddedMaxPooling2D` with edge padding in
  int8 files.
- `export_grouped_conv_modes` (class attribute) lists the grouped-convolution formulations a layer can
  be rebuilt in; `grouped_conv="split"` (and the "auto" fallback) needs a layer that lists "split".
- `keep_float32_in_int8 = True` (class attribute) keeps the layer's operators float32 in int8 TFLite
  files (LGAF's `FeatureQualityFusion`).
"""

from keras_fr.export._common import ExportReport
from keras_fr.export._common import ExportVerificationError
from keras_fr.export._common import THRESHOLDS
from keras_fr.export._common import compare
from keras_fr.export._common import synthetic_faces
from keras_fr.export._onnx import run_onnx
from keras_fr.export._onnx import to_onnx
from keras_fr.export._tflite import run_tflite
from keras_fr.export._tflite import tflite_operators
from keras_fr.export._tflite import to_tflite

__all__ = [
    "ExportReport",
    "ExportVerificationError",
    "THRESHOLDS",
    "compare",
    "run_onnx",
    "run_tflite",
    "synthetic_faces",
    "tflite_operators",
    "to_onnx",
    "to_tflite",
]
