"""ONNX export through tf2onnx, with a dynamic batch, one output, float32 weights and a self-check."""

import contextlib
import io
import logging
import os

import numpy as np

from keras_fr._atomic import atomic_path
from keras_fr._memory import collect_while_growing
from keras_fr.export import _common
from keras_fr.export import _prepare
from keras_fr.layers.export_hooks import ExportTarget

#: tf2onnx 1.17 knows opsets up to 18; below 13 some operators used here (e.g. Split) differ.
MIN_OPSET, MAX_OPSET = 13, 18


def run_onnx(path, x, num_threads=None):
    """Run an ONNX file on a float32 batch with ONNX Runtime (CPU) and return its first output.

    Args:
        path: the `.onnx` file.
        x: float32 array in the file's input layout.
        num_threads: intra-op threads (`None`: the runtime's default).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0], np.float32)


def _convert(serving, tmp, opset):
    """tf2onnx conversion; returns tf2onnx's error log lines, raises RuntimeError if it fails."""
    import tensorflow as tf

    signature = tf.TensorSpec(tuple(serving.inputs[0].shape), tf.float32, name="input_image")
    tf2onnx_logger = logging.getLogger("tf2onnx")
    records = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Keep(level=logging.ERROR)
    old_level, old_propagate = tf2onnx_logger.level, tf2onnx_logger.propagate
    tf2onnx_logger.addHandler(handler)
    tf2onnx_logger.setLevel(logging.ERROR)
    tf2onnx_logger.propagate = False
    try:
        # tf2onnx's optimizer leaves a deep copy of the graph, weights included, in reference cycles
        # at every pass: collected as memory grows (LGAFResNet50: 13.4 GB peak without, 5.1 GB with).
        with _common.stdout_to_stderr(), contextlib.redirect_stdout(io.StringIO()), collect_while_growing():
            serving.export(
                tmp, format="onnx", opset_version=opset, verbose=False, input_signature=[signature]
            )
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
        raise RuntimeError(f"tf2onnx conversion failed: {str(exc).strip()[:300]}") from exc
    finally:
        tf2onnx_logger.removeHandler(handler)
        tf2onnx_logger.setLevel(old_level)
        tf2onnx_logger.propagate = old_propagate
    return records


def _postprocess(tmp, output_name):
    """Check and tidy the ONNX graph in place; return the sorted op types.

    Names the batch dimension "batch" and the output ``output_name``; checks that every node is a
    standard ONNX operator, that there is one output and that every float weight is float32.
    """
    import onnx

    model = onnx.load(tmp)
    graph = model.graph
    unknown = sorted(
        {n.op_type for n in graph.node if not onnx.defs.has(n.op_type, n.domain or "")}
    )
    if unknown:
        raise RuntimeError(f"the ONNX graph contains operators ONNX does not define: {unknown}")
    if len(graph.output) != 1 or len(graph.input) != 1:
        raise RuntimeError(
            f"the ONNX graph has {len(graph.input)} inputs and {len(graph.output)} outputs; expected 1 and 1"
        )
    float_types = {onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    wrong = sorted({onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer
                    if t.data_type in float_types})
    if wrong:
        raise RuntimeError(f"the ONNX graph has non-float32 floating-point initializers: {wrong}")
    old = graph.output[0].name
    if old != output_name:
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = output_name
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = output_name
        graph.output[0].name = output_name
    for value in (graph.input[0], graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    onnx.checker.check_model(model)
    onnx.save(model, tmp)
    return tuple(sorted({n.op_type for n in graph.node}))


def _io_shapes(path):
    import onnx

    graph = onnx.load(path, load_external_data=False).graph

    def shape(value):
        dims = value.type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)

    return shape(graph.input[0]), shape(graph.output[0])


def to_onnx(
    model,
    path,
    opset=17,
    channels_first=False,
    verify=True,
    verification_data=None,
    num_verification_samples=8,
    grouped_conv="auto",
):
    """Export a Keras face model to an ONNX file (tf2onnx), verified with ONNX Runtime.

    The file has one input `input_image` with a dynamic batch dimension `batch`, one float32
    output (`embedding`), standard ONNX operators only and float32 weights. The model is traced with
    `training=False` (BatchNorm moving statistics; LGAF's quality fusion frozen). Input layout:
    NHWC `(batch, H, W, 3)` by default; with `channels_first=True` NCHW `(batch, 3, H, W)`, the layout
    insightface's ONNX tooling expects (its recognition loader wants a square input of at least
    112; the file takes RGB in [-1, 1], i.e. `(pixel - 127.5) / 127.5`).

    Grouped convolutions (MSConv) become one ONNX `Conv` with `group=G`. If that fails
    (`grouped_conv="auto"`), the model is rebuilt in the split formulation of the layers that offer
    one (MSConv's `grouped_conv="split"`) and converted again.

    Unless `verify=False`, the file is written to a temporary name in the destination folder, run
    with ONNX Runtime on a batch of face-like inputs (and on a single input), and kept only if max
    |diff| <= 1e-4 of the output scale and per-sample cosine >= 0.99999; otherwise it is deleted and
    `ExportVerificationError` is raised with the numbers.

    Args:
        model: a single-input, single-output float32 `keras.Model` on channels-last images.
        path: destination file ending in `.onnx`; its folder must exist.
        opset: ONNX opset, 13 to 18.
        channels_first: give the file an NCHW input.
        verify: run and compare the file before keeping it.
        verification_data: inputs for the check (an image folder, a pairs file, an array of images:
            uint8 pixels or float32 in [-1, 1], channels last); default synthetic face-like images.
        num_verification_samples: batch size of the check.
        grouped_conv: `"auto"`, `"native"` (never rebuild) or `"split"` (always rebuild).

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: bad arguments.
        FileNotFoundError: the destination folder or a data path does not exist.
        RuntimeError: tf2onnx could not produce a valid single-output float32 graph.
        ExportVerificationError: the file does not reproduce the model (nothing is left at `path`).

    Example:

    ```python
    model = keras_fr.applications.MSConvResNet50(weights="ms1mv3")
    keras_fr.export.to_onnx(model, "msconv50.onnx", channels_first=True)
    ```
    """
    fn = "to_onnx"
    _common.check_model(model, fn)
    path = _common.check_path(path, ".onnx", fn)
    if (isinstance(opset, bool) or not isinstance(opset, (int, np.integer))
            or not MIN_OPSET <= opset <= MAX_OPSET):
        raise ValueError(f"{fn}: `opset` must be an integer from {MIN_OPSET} to {MAX_OPSET}; got {opset!r}.")
    if not isinstance(channels_first, (bool, np.bool_)):
        raise ValueError(f"{fn}: `channels_first` must be True or False; got {channels_first!r}.")
    _common.check_choice(grouped_conv, "grouped_conv", _common.GROUPED_CONV_MODES, fn)
    count = num_verification_samples
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"{fn}: `num_verification_samples` must be a positive integer; got "
                         f"{num_verification_samples!r}.")
    has_grouped, can_split = _prepare.grouped_conv_info(model)
    candidates = _prepare.formulations(grouped_conv, has_grouped, can_split, fn)
    x_check = None
    if verify:
        x_check = _common.verification_inputs(model, verification_data, num_verification_samples)
    output_name = "embedding" if len(model.outputs[0].shape) == 2 else "output"

    def prepare(formulation):
        # Layers that need another formulation for an ONNX file say so (export hooks), e.g.
        # grouped convolutions that trace to one `Conv` with `group=G`, or the split ones.
        target = ExportTarget("onnx", grouped_conv=formulation)
        source = _prepare.export_source(model, target)
        return _prepare.serving_model(source, channels_first=bool(channels_first))

    with atomic_path(path) as tmp:  # removed on any error, SIGINT or SIGTERM; renamed when verified

        def convert(serving):
            complaints = _convert(serving, tmp, int(opset))
            return complaints, _postprocess(tmp, output_name)

        formulation, _, (complaints, ops) = _prepare.first_formulation(
            candidates, prepare, convert, f"{fn}: could not export a valid ONNX graph"
        )
        report = _common.file_report(
            path, tmp, "onnx", _io_shapes(tmp), ops,
            grouped_conv=formulation if (has_grouped or can_split) else None,
            details=f"opset {int(opset)}, {'NCHW' if channels_first else 'NHWC'} input, float32"
            + (f"; tf2onnx warnings: {complaints[:3]}" if complaints else ""),
        )
        if verify:
            feed = np.transpose(x_check, (0, 3, 1, 2)) if channels_first else x_check
            reference = _common.keras_reference(model, x_check)
            try:
                actual = run_onnx(tmp, feed)
                single = run_onnx(tmp, feed[:1])
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise _common.ExportVerificationError(
                    f"{fn}: ONNX Runtime could not run the exported file: {str(exc).strip()[:300]}. "
                    "The file was not kept.",
                    report,
                ) from exc
            gap = float(np.max(np.abs(single - actual[:1])))
            problems = _common.record_comparison(report, reference, actual, None, gap, 1e-4)
            if problems:
                raise _common.ExportVerificationError(
                    f"{fn}: the exported file does not reproduce the Keras model on {len(x_check)} "
                    f"inputs: {problems}. The file was not kept.",
                    report,
                )
    return report
