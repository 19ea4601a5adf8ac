"""``keras-fr export``: write a model as a verified TFLite or ONNX file."""

import os

from keras_fr import export
from keras_fr.cli._common import CLIError
from keras_fr.cli._common import RANDOM
from keras_fr.cli._common import add_json_arg
from keras_fr.cli._common import add_model_args
from keras_fr.cli._common import add_output_arg
from keras_fr.cli._common import build_model
from keras_fr.cli._common import check_output
from keras_fr.cli._common import model_from_args
from keras_fr.cli._common import print_json

FORMATS = {"tflite": ".tflite", "onnx": ".onnx"}
QUANTIZE = ("float16", "dynamic", "int8")

DESCRIPTION = """Export a face recognition model to TFLite (builtin operators only) or ONNX.

The file takes a dynamic batch of RGB face crops preprocessed to [-1, 1] and returns the embedding.
Before it is kept, the file is run on a batch of face-like images and compared with the Keras model
(float32: max |diff| <= 1e-4 of the output scale and cosine >= 0.99999 per sample; float16 cosine
>= 0.999; dynamic and int8 cosine >= 0.98); a file that fails is deleted and the command fails.
"""

EPILOG = """examples:
  keras-fr export --model iresnet50 --weights ms1mv3 --format onnx --channels-first --output r50.onnx
  keras-fr export --model msconv_resnet50 --format tflite --output m.tflite
  keras-fr export --model lgaf_resnet100 --weights w.weights.h5 --format tflite --quantize int8 \\
      --calibration ../shared/data/celeba299/images --output lgaf_int8.tflite
"""


def register(subparsers):
    import argparse

    parser = subparsers.add_parser(
        "export",
        help="export a model to TFLite or ONNX, verified against Keras",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="file format")
    add_output_arg(parser, required=True, help="output file (.tflite or .onnx, matching --format)")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default=None,
        help="TFLite only: float16 weights, dynamic-range int8 weights, or full-integer int8 "
        "(needs --calibration; input and output stay float32)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        help="int8 calibration images: an image folder or a pairs file (.csv/.txt/.bin)",
    )
    parser.add_argument(
        "--num-calibration",
        type=int,
        default=100,
        help="how many calibration images to use (default 100)",
    )
    parser.add_argument(
        "--channels-first",
        action="store_true",
        help="ONNX only: NCHW input (N, 3, 112, 112), as insightface's ONNX tooling expects",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX only: opset 13-18 (default 17)")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip running the file and comparing it with Keras (not recommended)",
    )
    add_json_arg(parser)
    parser.set_defaults(func=run)
    return parser


def check_args(args):
    """Reject inconsistent `keras-fr export` options before any model is built.

    Args:
        args: The parsed `argparse.Namespace` of the `export` sub-command
            (`format`, `output`, `quantize`, `calibration`, `opset`,
            `channels_first`, `num_calibration`).

    Raises:
        CLIError: If `--output` has the wrong suffix or its folder does not
            exist; if an option is given for a format it does not apply to
            (`--quantize`/`--calibration` with ONNX, `--opset`/
            `--channels-first` with TFLite); if `--opset` is outside 13-18;
            if `--quantize int8` lacks `--calibration` or `--calibration` is
            given without it; if the `--calibration` path does not exist; or
            if `--num-calibration` is below 1.
    """
    suffix = FORMATS[args.format]
    if not args.output.endswith(suffix):
        raise CLIError(f"--output must end with {suffix} for --format {args.format}; got {args.output!r}")
    check_output(args.output)
    if args.format == "onnx":
        if args.quantize:
            raise CLIError("--quantize applies to --format tflite only")
        if args.calibration:
            raise CLIError("--calibration applies to --format tflite --quantize int8 only")
        if args.opset is not None and not 13 <= args.opset <= 18:
            raise CLIError(f"--opset must be from 13 to 18; got {args.opset}")
    else:
        if args.channels_first:
            raise CLIError("--channels-first applies to --format onnx only (TFLite is channels last)")
        if args.opset is not None:
            raise CLIError("--opset applies to --format onnx only")
        if args.quantize == "int8" and not args.calibration:
            raise CLIError("--quantize int8 needs --calibration (an image folder or a pairs file)")
        if args.calibration and args.quantize != "int8":
            raise CLIError("--calibration is only used with --quantize int8")
    if args.calibration and not os.path.exists(args.calibration):
        raise CLIError(f"--calibration not found: {args.calibration!r}")
    if args.num_calibration < 1:
        raise CLIError(f"--num-calibration must be a positive integer; got {args.num_calibration}")


def run(args):
    check_args(args)

    model, weights_label = model_from_args(args, build=build_model)
    try:
        if args.format == "tflite":
            report = export.to_tflite(
                model,
                args.output,
                quantize=args.quantize,
                representative_data=args.calibration,
                num_calibration_samples=args.num_calibration,
                verify=not args.no_verify,
            )
        else:
            report = export.to_onnx(
                model,
                args.output,
                opset=17 if args.opset is None else args.opset,
                channels_first=args.channels_first,
                verify=not args.no_verify,
            )
    except (export.ExportVerificationError, RuntimeError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from exc
    if args.json:
        print_json(dict(report.to_dict(), model=args.model, weights=weights_label))
        return 0
    size_mb = report.size_bytes / 2**20
    line = (
        f"wrote {report.path} ({args.format}"
        + (f", {report.quantize}" if report.quantize else "")
        + f", {size_mb:.1f} MiB, input {list(report.input_shape)})"
    )
    print(line)
    if weights_label == RANDOM:
        print("weights: RANDOM (--random-weights): the file computes nothing meaningful")
    else:
        print(f"weights: {weights_label}")
    if report.verified:
        print(
            f"verified on {report.num_samples} images: max |diff| {report.max_abs_diff:.3g} "
            f"({report.max_rel_diff:.2g} of the output scale), min cosine {report.min_cosine:.6f}"
        )
    else:
        print("not verified (--no-verify)")
    print(f"operators: {', '.join(report.ops)}")
    return 0
