"""Options and helpers shared by the ``keras-fr`` sub-commands."""

import argparse
import json
import sys

# CLI model names are the registry names of `keras_fr.applications.MODELS`.
from keras_fr._atomic import check_writable_output
from keras_fr.applications import MODELS, canonical_name, get_builder
from keras_fr.applications.weights import choose_weights


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


#: The ``--model`` of commands that embed faces when none is given (``None``: ``--model`` is required).
#: One line to change when a model with real shipped weights becomes the default (e.g. "dlib_resnet").
DEFAULT_MODEL = None

RANDOM = "random"


def model_name(value):
    """An argparse ``type`` for ``--model``: registry or builder name -> registry name.

    Example:

    >>> model_name("MSConvResNet50")
    'msconv_resnet50'
    """
    try:
        return canonical_name(value)
    except ValueError:
        raise CLIError(
            f"--model: unknown model {value!r}; choose one of {', '.join(sorted(MODELS))} "
            "(builder names such as IResNet50 are accepted too)"
        ) from None


def add_model_args(parser, required=True, default=None):
    """``--model``, and ``--weights`` / ``--random-weights`` (mutually exclusive).

    ``--model`` takes registry names (``msconv_resnet50``) or builder names (``MSConvResNet50``). With
    ``default=None`` and ``required=True`` it is required unless :data:`DEFAULT_MODEL` is set. See
    :func:`resolve_weights` for what is loaded when neither weights option is given.
    """
    default = DEFAULT_MODEL if default is None else default
    parser.add_argument(
        "--model",
        required=required and default is None,
        default=default,
        type=str,
        metavar="NAME",
        help=f"network: {', '.join(sorted(MODELS))} (builder names such as MSConvResNet50 accepted)"
        + (f"; default {default}" if default else ""),
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--weights",
        default=None,
        metavar="TAG|FILE",
        help="preset tag (see `keras-fr info`) or a .weights.h5 / .keras file; default: the model's "
        "best preset whose file is on this machine",
    )
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="use random initialization on purpose (timing, smoke tests); results mean nothing",
    )


def resolve_weights(model, weights=None, random_weights=False):
    """Decide which weights a command uses; never random unless asked.

    Order: ``weights`` (a preset tag or a file, as given) > ``random_weights`` > the model's best
    preset whose file is on this machine (``keras_fr.applications.weights.default_preset``).

    Args:
        model: registry name.
        weights: the ``--weights`` value or ``None``.
        random_weights: the ``--random-weights`` flag.

    Returns:
        ``(weights_arg, label)``: what to pass as the builder's ``weights`` (``None`` for random) and
        what to report (the tag or file, or ``"random"``).

    Raises:
        CLIError: both options given, a ``--weights`` file that does not exist, or no real weights
            on this machine and no explicit choice.

    Example:

    >>> resolve_weights("iresnet18", random_weights=True)
    (None, 'random')
    """
    try:
        return choose_weights(model, weights, random_weights, options=("--weights", "--random-weights", "--weights FILE|TAG"))
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def check_output(path, option="--output"):
    """Check up front (before any model is built) that ``path`` can be written; ``CLIError`` if not."""

    try:
        check_writable_output(path, option)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def add_command(subparsers, name, help, description, examples):
    """Add a sub-command parser in the house style (help line, description, examples epilog)."""
    return subparsers.add_parser(
        name, help=help, description=description, epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_batch_size_arg(parser, default=32):
    parser.add_argument("--batch-size", type=int, default=default, help=f"batch size (default {default})")


def add_output_arg(parser, required=False, help="output file"):
    parser.add_argument("--output", "-o", required=required, default=None, help=help)


def add_json_arg(parser):
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def build_model(name, weights=None, **kwargs):
    """Build a model by registry or builder name and load ``weights`` (a preset tag or a
    ``.weights.h5`` / ``.keras`` file; ``None`` is random initialization: resolve it first with
    :func:`resolve_weights`); an unknown name is a ``CLIError``."""
    name = model_name(name)
    return get_builder(name)(weights=weights, **kwargs)


def model_from_args(args, build=None, **kwargs):
    """Resolve ``args.model`` / ``args.weights`` / ``args.random_weights`` and build the model.

    Args:
        args: parsed options from :func:`add_model_args`.
        build: the builder to call as ``build(name, weights, **kwargs)`` (default :func:`build_model`).
        **kwargs: passed to the builder.

    Returns:
        ``(model, weights_label)``; the label is the tag, the file or ``"random"``, for the output.
    """
    args.model = model_name(args.model)
    weights, label = resolve_weights(args.model, args.weights, getattr(args, "random_weights", False))
    return (build or build_model)(args.model, weights, **kwargs), label


def print_json(obj, stream=None):
    json.dump(obj, stream or sys.stdout, indent=2, sort_keys=True, default=_jsonable)
    (stream or sys.stdout).write("\n")


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
