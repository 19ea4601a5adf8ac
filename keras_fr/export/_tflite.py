"""TFLite (LiteRT) export with builtin operators only, optional quantization, and a self-check."""

import os

import numpy as np

from keras_fr import _quiet
from keras_fr._atomic import atomic_path
from keras_fr._memory import collect_while_growing
from keras_fr.export import _common
from keras_fr.export import _prepare
from keras_fr.layers.export_hooks import ExportTarget

#: Builtin operators that hold state; an inference graph must not contain them.
STATEFUL_OPS = frozenset(
    {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE", "HASHTABLE", "HASHTABLE_FIND",
     "HASHTABLE_IMPORT", "HASHTABLE_SIZE"}
)


def tflite_operators(model_content):
    """List the operator codes of a TFLite flatbuffer.

    Args:
        model_content: the file's bytes, or its path.

    Returns:
        A list of names, one per operator code: builtin operators by their schema name (e.g.
        `"CONV_2D"`), custom operators as `"CUSTOM:<code>"` (select-TF ops are `"CUSTOM:Flex..."`).
    """
    from ai_edge_litert import schema_py_generated as schema

    if isinstance(model_content, (str, os.PathLike)):
        with open(model_content, "rb") as f:
            model_content = f.read()
    model = schema.Model.GetRootAs(model_content, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes < 127 may live in the deprecated field only; the larger of the two is the real one.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM" or code.CustomCode():
            custom = code.CustomCode()
            name = "CUSTOM:" + (custom.decode() if custom else "?")
        out.append(name)
    return out


def forbidden_operators(ops):
    """The operators that a plain TFLite runtime cannot run or that hold state."""
    return sorted(op for op in ops if op.startswith("CUSTOM") or op in STATEFUL_OPS)


def _converter_kwargs(quantize, representative):
    import tensorflow as tf

    kwargs = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if quantize is None:
        return kwargs
    kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        kwargs["target_spec"]["supported_types"] = [tf.float16]
    elif quantize == "int8":
        # Full-integer: every operator int8 (weights per-channel, activations per-tensor from the
        # calibration data); the model's input and output stay float32 (QUANTIZE / DEQUANTIZE at
        # the ends) so callers feed the same preprocessed images as the float model.
        kwargs["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

        def representative_dataset():
            for i in range(len(representative)):
                yield [representative[i : i + 1]]

        kwargs["representative_dataset"] = representative_dataset
    return kwargs


def float_island_names(model):
    """Names of the layers (anywhere in ``model``) that int8 export keeps in float32: those that
    declare ``keep_float32_in_int8`` (``keras_fr.layers.export_hooks``)."""
    return _prepare.float32_layer_names(model)


def _outputs_of_layers(model_content, layer_names):
    """Output tensor names of the operators that belong to the named Keras layers."""
    import re

    from ai_edge_litert import schema_py_generated as schema

    pattern = re.compile("/(" + "|".join(re.escape(n) for n in layer_names) + r")(_\d+)?/")
    model = schema.Model.GetRootAs(model_content, 0)
    names = set()
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            for j in range(op.OutputsLength()):
                name = graph.Tensors(op.Outputs(j)).Name().decode()
                if pattern.search(name):
                    names.add(name)
    return sorted(names)


def _converter(serving, kwargs):
    """A ``tf.lite.TFLiteConverter`` for ``serving``, from one traced inference function.

    The converter is given the concrete function of ``serving(x, training=False)`` for a dynamic batch
    and a ``tf.Module`` holding the model's variables, which it freezes into constants. This is the
    public TensorFlow API; it skips the SavedModel that ``model.export(format="litert")`` writes and
    reads back, and converts MSConvResNet26 (32x32, headless) in 20 s instead of 44 s, to the same
    operators and the same outputs (measured, /tmp experiment recorded in issue 12's note).
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, *serving.inputs[0].shape[1:]], tf.float32, name="input_image")
    function = tf.function(lambda x: serving(x, training=False)).get_concrete_function(spec)
    holder = tf.Module()
    holder.model_variables = [getattr(v, "value", v) for v in serving.weights]  # the tf.Variables
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    for key, value in kwargs.items():
        if key == "target_spec":
            for spec_key, spec_value in value.items():
                setattr(converter.target_spec, spec_key, spec_value)
        else:
            setattr(converter, key, value)
    return converter


def _convert(serving, tmp_path, quantize, representative, float_islands=()):
    """Convert; return the operator list. Raises RuntimeError with the converter's reason."""
    import contextlib
    import io

    kwargs = _converter_kwargs(quantize, representative)
    if quantize == "int8" and float_islands:
        # Calibrate only, then quantize with the islands' operators denylisted (kept float32).
        kwargs["_experimental_calibrate_only"] = True
        kwargs["experimental_new_quantizer"] = True
    log = io.StringIO()
    try:
        with _common.stdout_to_stderr(), contextlib.redirect_stdout(log), collect_while_growing():
            content = _converter(serving, kwargs).convert()
        with open(tmp_path, "wb") as f:
            f.write(content)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        lines = [line.strip() for line in str(exc).strip().splitlines()]
        named = [line for line in lines if line.startswith(("TF Select ops:", "Custom ops:"))]
        reason = "; ".join(named) or next(
            (line for line in lines if "error" in line.lower()), lines[0] if lines else repr(exc)
        )[:300]
        raise RuntimeError(f"TFLite conversion with builtin operators only failed: {reason}") from exc
    if quantize == "int8" and float_islands:
        import tensorflow as tf
        from tensorflow.lite.python.convert import mlir_quantize

        with open(tmp_path, "rb") as f:
            calibrated = f.read()
        nodes = _outputs_of_layers(calibrated, float_islands)
        if not nodes:
            raise RuntimeError(
                f"int8: found no operators of the layers {list(float_islands)} to keep in float"
            )
        with _common.stdout_to_stderr():
            quantized = mlir_quantize(
                calibrated, disable_per_channel=False, input_data_type=tf.float32,
                output_data_type=tf.float32, denylisted_nodes=nodes,
            )
        with open(tmp_path, "wb") as f:
            f.write(quantized)
    return tflite_operators(tmp_path)


def run_tflite(path_or_content, x, num_threads=None):
    """Run a TFLite file on a float32 batch with the LiteRT interpreter (XNNPACK by default).

    Args:
        path_or_content: the `.tflite` path or its bytes.
        x: float32 array (N, ...) matching the file's input apart from the batch dimension.
        num_threads: interpreter threads (`None`: the runtime's default).

    Returns:
        The float32 output array.
    """
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"num_threads": num_threads} if num_threads else {}
    with _quiet.native_stderr():  # the XNNPACK "INFO: Created ... delegate" line, for the quiet CLI
        if isinstance(path_or_content, (bytes, bytearray)):
            interpreter = Interpreter(model_content=bytes(path_or_content), **kwargs)
        else:
            interpreter = Interpreter(model_path=os.fspath(path_or_content), **kwargs)
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(x.shape), strict=True)
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), np.float32)


def _io_shapes(path):
    from ai_edge_litert.interpreter import Interpreter

    with _quiet.native_stderr():
        interpreter = Interpreter(model_path=path)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def sig(d):
        return tuple(None if s < 0 else int(s) for s in d["shape_signature"])

    return sig(inp), sig(out)


def to_tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    verify=True,
    num_calibration_samples=100,
    verification_data=None,
    num_verification_samples=8,
    grouped_conv="auto",
):
    """Export a Keras face model to a TFLite (LiteRT) file with builtin operators only.

    The file takes a dynamic batch of preprocessed images `(N, H, W, 3)` (float32, [-1, 1]) and
    returns the model's output in float32, in every quantization mode. It uses builtin operators only
    (no select-TF "Flex" or custom operators, no variables): the operator codes of the flatbuffer are
    listed and the export fails if any other kind is present. BatchNorm and LGAF's quality fusion
    are exported in inference mode (the model is called with `training=False`).

    Grouped convolutions (MSConv, `groups=32`) lower to the builtin `CONV_2D`. If a converter cannot
    express them (`grouped_conv="auto"`), the model is rebuilt in the split formulation of the layers
    that offer one (MSConv's `grouped_conv="split"`: same weights, per-group convolutions +
    concatenation) and converted again; the verification then compares the file with the original
    model.

    Unless `verify=False`, the file is written to a temporary name in the destination folder, run
    with the LiteRT interpreter on a batch of inputs, compared with the Keras model and only then
    renamed to `path`. Bars: float32 max |diff| <= 1e-4 of the output scale and per-sample cosine
    >= 0.99999; float16 cosine >= 0.999; dynamic and int8 cosine >= 0.98. A file that misses them is
    deleted and `ExportVerificationError` is raised with the measured numbers.

    Args:
        model: a single-input, single-output float32 `keras.Model` on channels-last images.
        path: destination file, ending in `.tflite`; its folder must exist.
        quantize: `None` (float32), `"float16"` (float16 weights, float32 compute),
            `"dynamic"` (int8 weights, dynamic-range activations) or `"int8"` (full-integer: int8
            weights and activations calibrated on `representative_data`; float32 input and output;
            layers may ask for an int8 formulation, e.g. MSConv's -inf-padded max pool uses
            equivalent edge padding, and layers may stay float32, e.g. LGAF's
            `FeatureQualityFusion`, because int8 norms are too coarse for it; see
            `keras_fr.layers.export_hooks`).
        representative_data: calibration images for `"int8"`: an image folder, a pairs file
            (`.csv`/`.txt`/`.bin`, via `keras_fr.evaluation.read_pairs`), an array of images (uint8
            pixels, or float32 already preprocessed to [-1, 1]) or an iterable of such arrays. When
            there are more images than `num_calibration_samples`, the next
            `num_verification_samples` are held out for the verification.
        verify: run and compare the file before keeping it.
        num_calibration_samples: how many images calibrate int8 activations.
        verification_data: inputs for the check (same kinds as `representative_data`); default:
            held-out calibration images if any, else synthetic face-like images.
        num_verification_samples: batch size of the check.
        grouped_conv: `"auto"`, `"native"` (never rebuild) or `"split"` (always use the split
            formulation, e.g. for GPU delegates without grouped convolution).

    Returns:
        An `ExportReport` (path, format, quantize, size, max abs diff, min cosine, operators...).

    Raises:
        ValueError: bad arguments (non-model, wrong suffix, unknown mode, missing calibration data).
        FileNotFoundError: the destination folder or a data path does not exist.
        RuntimeError: conversion to builtin operators failed or produced forbidden operators.
        ExportVerificationError: the file does not reproduce the model (nothing is left at `path`).

    Example:

    ```python
    model = keras_fr.applications.IResNet50(weights="ms1mv3")
    report = keras_fr.export.to_tflite(model, "iresnet50.tflite")
    print(report.min_cosine, report.ops)
    ```
    """
    fn = "to_tflite"
    _common.check_model(model, fn)
    path = _common.check_path(path, ".tflite", fn)
    _common.check_choice(quantize, "quantize", _common.QUANTIZE_MODES, fn)
    _common.check_choice(grouped_conv, "grouped_conv", _common.GROUPED_CONV_MODES, fn)
    for name, value in (("num_calibration_samples", num_calibration_samples),
                        ("num_verification_samples", num_verification_samples)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{fn}: `{name}` must be a positive integer; got {value!r}.")
    _, height, width, _ = tuple(model.inputs[0].shape)
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            f"{fn}: quantize='int8' needs `representative_data` (an image folder, a pairs file, or "
            "an array / iterable of face images) to calibrate activation ranges."
        )

    representative = None
    held_out = None
    if quantize == "int8":
        if height is None or width is None:
            raise ValueError(f"{fn}: int8 calibration needs a model with a fixed input size; got "
                             f"{tuple(model.inputs[0].shape)}.")
        samples = _common.load_samples(
            representative_data, num_calibration_samples + num_verification_samples, height, width
        )
        if len(samples) > num_calibration_samples:
            representative, held_out = samples[:num_calibration_samples], samples[num_calibration_samples:]
        else:
            representative = samples
    if verify:
        if verification_data is None and held_out is not None and len(held_out) >= 2:
            x_check = held_out
        else:
            x_check = _common.verification_inputs(model, verification_data, num_verification_samples)
    has_grouped, can_split = _prepare.grouped_conv_info(model)

    candidates = _prepare.formulations(grouped_conv, has_grouped, can_split, fn)

    def prepare(formulation):
        # Layers that need another formulation for this file say so (export hooks), e.g. the
        # split grouped convolutions, or edge padding instead of -inf padding in int8 files.
        target = ExportTarget("tflite", quantize=quantize, grouped_conv=formulation)
        source = _prepare.export_source(model, target)
        serving = _prepare.serving_model(source)
        islands = float_island_names(source) if quantize == "int8" else []
        return serving, islands

    with atomic_path(path) as tmp:  # removed on any error, SIGINT or SIGTERM; renamed when verified

        def convert(prepared):
            serving, islands = prepared
            ops = _convert(serving, tmp, quantize, representative, islands)
            bad = forbidden_operators(ops)
            if bad:
                raise RuntimeError(f"non-builtin or stateful operators {bad}")
            return ops

        formulation, (_, islands), ops = _prepare.first_formulation(
            candidates, prepare, convert, f"{fn}: could not export with builtin TFLite operators only"
        )
        input_shape, output_shape = _io_shapes(tmp)
        if input_shape[0] is not None:
            raise RuntimeError(f"{fn}: the converted file has a fixed batch size ({input_shape}).")
        report = _common.file_report(
            path, tmp, "tflite", (input_shape, output_shape), tuple(sorted(set(ops))),
            quantize=quantize,
            grouped_conv=formulation if (has_grouped or can_split) else None,
            details=_details(quantize, representative)
            + (f"; kept in float32: {', '.join(islands)}" if islands else ""),
        )
        if verify:
            _verify(report, model, tmp, x_check, quantize)
    return report


def _details(quantize, representative):
    if quantize is None:
        return "float32 weights and activations"
    if quantize == "float16":
        return "float16 weights (dequantized to float32 at load), float32 compute and input/output"
    if quantize == "dynamic":
        return "int8 weights, float32 activations with dynamic-range int8 kernels, float32 input/output"
    return (
        f"full-integer int8 (weights per-channel, activations per-tensor calibrated on "
        f"{len(representative)} images), float32 input and output"
    )


def _verify(report, model, tmp, x_check, quantize):
    reference = _common.keras_reference(model, x_check)
    try:
        actual = run_tflite(tmp, x_check)
        single = run_tflite(tmp, x_check[:1])  # batch 1 through the same file: dynamic batch works
    except (RuntimeError, ValueError) as exc:
        raise _common.ExportVerificationError(
            f"to_tflite: the LiteRT interpreter (XNNPACK) could not run the exported file: "
            f"{str(exc).strip()[:300]}. The file was not kept.",
            report,
        ) from exc
    batch_gap = float(np.max(np.abs(single - actual[:1]))) if np.all(np.isfinite(single)) else float("inf")
    # Only a float32 file's batch-1 output is held to its row in the batch.
    problems = _common.record_comparison(
        report, reference, actual, quantize, batch_gap, 1e-3 if quantize is None else None
    )
    if problems:
        raise _common.ExportVerificationError(
            f"to_tflite: the exported file does not reproduce the Keras model on {len(x_check)} inputs "
            f"(quantize={quantize!r}): {problems}. The file was not kept.",
            report,
        )
