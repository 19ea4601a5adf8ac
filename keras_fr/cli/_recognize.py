"""Options and set-up shared by the commands that recognize faces in photos (verify, enroll, identify,
calibrate): the model and its weights, the detector, and how several faces in a photo are handled."""

import os

from keras_fr.cli._common import CLIError, model_name, resolve_weights
from keras_fr.recognition import FaceRecognizer
from keras_fr.recognition.runtime import RUNTIMES, check_runtime

#: The model used when ``--model`` is not given: keras_fr's real pretrained recognizer.
DEFAULT_MODEL = "dlib_resnet"


def add_runtime_arg(parser):
    """``--runtime auto|keras|tflite|onnx`` (checked by :func:`runtime_arg`, a one-line error)."""
    parser.add_argument(
        "--runtime",
        default="auto",
        metavar="|".join(RUNTIMES),
        help="where embeddings are computed: auto (default: the faster of a TFLite and an ONNX file of "
        "the model, built once, checked against Keras, timed and cached, when the weights have a file; "
        "else Keras), keras, tflite or onnx (see docs/recognition.md)",
    )


def runtime_arg(args):
    """The checked ``--runtime`` value (``CLIError`` naming the option otherwise)."""
    value = getattr(args, "runtime", "auto")
    try:
        return check_runtime(value, "--runtime")
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def add_recognizer_args(parser, decisions=True, model_default=DEFAULT_MODEL):
    parser.add_argument(
        "--model",
        default=model_default,
        help=f"network, registry or builder name (default: {DEFAULT_MODEL}, real pretrained weights)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--weights",
        default=None,
        help="preset tag or .weights.h5/.keras file (default: the model's best preset on this machine)",
    )
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="use a randomly initialized model on purpose (scores only, never a decision)",
    )
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="the images are ArcFace-aligned 112x112 crops (no detection)",
    )
    parser.add_argument(
        "--detector", choices=("auto", "hog", "cnn"), default="auto", help="face detector (default auto)"
    )
    parser.add_argument(
        "--face",
        choices=("error", "largest", "central"),
        default="error",
        help="which face to use when a photo holds several (default: refuse, naming the photo)",
    )
    add_runtime_arg(parser)
    if decisions:
        parser.add_argument(
            "--far",
            type=float,
            default=1e-3,
            help="false-accept rate of the preset's calibrated threshold (1e-2, 1e-3 or 1e-4; default 1e-3)",
        )
        parser.add_argument(
            "--threshold", type=float, default=None, help="cosine threshold (overrides --far)"
        )


def build_recognizer(args, model=None, weights=None):
    """A ``FaceRecognizer`` from the parsed options (``CLIError`` for user errors)."""

    threshold = getattr(args, "threshold", None)
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise CLIError(f"--threshold is a cosine similarity in [-1, 1]; got {threshold}.")
    runtime = runtime_arg(args)
    model = model_name(model or args.model)
    weights, _ = resolve_weights(model, weights if weights is not None else args.weights, args.random_weights)
    try:
        return FaceRecognizer(
            model,
            weights=weights,
            random_weights=weights is None,
            far=getattr(args, "far", 1e-3),
            threshold=threshold,
            detector=args.detector,
            multi_face=args.face,
            runtime=runtime,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except RuntimeError as exc:  # an explicit --runtime whose file could not be built or checked
        raise CLIError(f"--runtime {runtime}: {exc} (--runtime keras always works)") from None


def check_images_exist(paths):
    for path in paths:
        if not os.path.exists(path):
            raise CLIError(f"image file not found: {path!r}.")
        if os.path.isdir(path):
            raise CLIError(f"{path!r} is a folder, not an image file.")
