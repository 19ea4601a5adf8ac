"""The ``keras-fr`` command: one tool, one sub-command per job.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` to the function that runs it. User errors (bad arguments, missing
files, unknown names) end with a one-line reason and a non-zero exit code, never a traceback.
"""

import argparse
import importlib
import os
import sys

from keras_fr import __version__
from keras_fr import _memory
from keras_fr import _onednn
from keras_fr import _quiet
from keras_fr import _threads
from keras_fr.cli._common import CLIError

# Order shown in --help.
SUBCOMMANDS = ("info", "verify", "enroll", "identify", "calibrate", "embed", "convert", "export", "eval", "train", "demo")

EPILOG = """examples:
  keras-fr info
  keras-fr embed faces/ --model msconv_resnet50 --weights ms1mv3 --output emb.npz
  keras-fr verify a.jpg b.jpg
  keras-fr enroll people/ --output gallery.npz
  keras-fr identify who.jpg --gallery gallery.npz
  keras-fr calibrate pairs.csv --far 1e-3
  keras-fr convert model.pt --output msconv50.weights.h5 --verify
  keras-fr export --model msconv_resnet50 --format tflite --output m.tflite
  keras-fr eval --model iresnet50 --pairs ../shared/data/lfw112 --output report.json
  keras-fr train configs/celeba299_small.py
  keras-fr demo
"""


def build_parser():
    """Build the argument parser of the `keras-fr` command.

    Each available sub-command module registers its own sub-parser; a
    sub-command whose module does not exist is left out.

    Returns:
        An `argparse.ArgumentParser` with one sub-parser per sub-command.
    """
    parser = argparse.ArgumentParser(
        prog="keras-fr",
        description="keras_fr: face recognition models for Keras 3.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    parser.add_argument("--version", action="version", version=f"keras_fr {__version__}")
    parser.add_argument(
        "--verbose", action="store_true",
        help="show TensorFlow's start-up and converter logs and library warnings (hidden by default; "
        "accepted anywhere on the command line)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"keras_fr.cli.{name}").register(subparsers)
    return parser


#: Sub-commands that keep TensorFlow's own tensor pool (the others ask for the system allocator): training
#: and the batch evaluation, whose same-sized batches the pool reuses. MSConvResNet50's and IResNet100's
#: inference copies at batch 32 ran 1-5% faster with the pool and peaked lower
#: (benchmarks/process_settings.py, docs/benchmarks.md).
POOL_COMMANDS = ("train", "eval")


def configure_process(command):
    """The process settings of ``keras-fr COMMAND``, made before TensorFlow runs its first operation:
    the system allocator for every sub-command but :data:`POOL_COMMANDS` (freed tensors go back to the
    system, see ``keras_fr._memory``) and, for the sub-commands that only embed, oneDNN's kept kernels
    (``keras_fr._onednn``); for ``eval``, which embeds whole batches, one thread per operation and the
    batches cut into parallel parts (``keras_fr._threads``). Values the user set are kept.
    ``benchmarks/compare_reference.py`` times the batch path under the same settings."""
    if command not in POOL_COMMANDS:
        _memory.prefer_system_allocator()
    _onednn.assume_frozen_weights(command)
    _threads.parallel_batches(command)


def main(argv=None):
    """Run the `keras-fr` command.

    User errors (`CLIError`, `ValueError`, `FileNotFoundError`, `KeyError`
    raised by a sub-command) are printed to stderr as a one-line message
    instead of a traceback.

    Args:
        argv: The command-line arguments, without the program name. Defaults
            to `None`, which reads `sys.argv[1:]`.

    Returns:
        The exit code as an int: `0` on success (or the int the sub-command
        returned), `2` on a user error or when no sub-command is given (the
        help text is printed then).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv  # accepted anywhere on the line, before or after the sub-command
    argv = [arg for arg in argv if arg != "--verbose"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if verbose:
        args.verbose = True  # also for a sub-command with its own --verbose (demo: tracebacks)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_process(args.command)
    if not verbose:

        _quiet.quiet_runtime()
    try:
        result = args.func(args)
    except CLIError as exc:
        print(f"keras-fr {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"keras-fr {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, permissions, I/O errors: the file and the reason, one line
        print(f"keras-fr {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM while an output file is being written
        print(f"keras-fr {args.command}: interrupted; no partial output was left", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)


def _one_line(exc):
    """The first line of an exception's message (a user error is printed on one line)."""
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    lines = [line for line in str(message).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def _os_error(exc):
    import errno

    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device (nothing was written)"
    else:
        reason = exc.strerror or _one_line(exc)
    return f"{reason}: {exc.filename!r}" if exc.filename else reason


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
