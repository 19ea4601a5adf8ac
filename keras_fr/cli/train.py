"""``keras-fr train CONFIG``: train a face recognition backbone from a config file, on one device,
all local devices (``mirrored``), several hosts (``multiworker``) or JAX devices (``data_parallel``).

CONFIG is a Python file that defines ``config`` (a dict or a dataclass instance): model, data
(image folder or insightface RecordIO), recipe (msconv, lgaf), global batch size, precision, margin
loss, PartialFC sample rate, evaluation pair sets, output folder and strategy (see
docs/training_at_scale.md and configs/). The output folder receives ``checkpoint/`` (resumed when the
same command runs again), ``log.csv``, ``tensorboard/``, ``config.json`` and, at the end,
``backbone.keras`` and ``summary.json``.
"""

from keras_fr.cli._common import CLIError, add_command

EXAMPLES = """examples:
  keras-fr train configs/celeba299_small.py
  keras-fr train configs/celeba299_small.py --strategy mirrored --logical-cpus 2 --output runs/mirrored
  TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \\
      keras-fr train configs/msconv_r50_ms1mv3.py --strategy multiworker
  KERAS_BACKEND=jax keras-fr train configs/celeba299_small.py --strategy data_parallel
  keras-fr train configs/lgaf_r100_ms1mv2.py --stop-after-steps 5000   # a time-limited job slot
"""


def register(subparsers):
    parser = add_command(subparsers, "train", "train a backbone from a config (one device, several, several hosts)",
                         __doc__.split("\n\n")[0].replace("``", ""), EXAMPLES)
    parser.add_argument("config", metavar="CONFIG", help="Python config file defining `config`")
    parser.add_argument("--output", "-o", default=None, metavar="DIR",
                        help="run folder (overrides the config's `output`)")
    parser.add_argument("--strategy", default=None,
                        choices=("none", "mirrored", "multiworker", "data_parallel"),
                        help="overrides the config's `strategy`")
    parser.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                        help="train at most N steps now, checkpoint and exit (run again to continue)")
    parser.add_argument("--logical-cpus", type=int, default=None, metavar="N",
                        help="split the CPU into N logical devices (TensorFlow; to try --strategy mirrored "
                        "on a machine without GPUs)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    parser.set_defaults(func=run)
    return parser


def run(args):
    import os

    from keras_fr.training.config import load_config

    if args.logical_cpus is not None and args.logical_cpus < 1:
        raise CLIError(f"--logical-cpus must be a positive integer; got {args.logical_cpus}.")
    if args.stop_after_steps is not None and args.stop_after_steps < 1:
        raise CLIError(f"--stop-after-steps must be a positive integer; got {args.stop_after_steps}.")
    overrides = {"strategy": args.strategy}
    if args.output is not None:
        overrides["output"] = os.path.abspath(args.output)
    config = load_config(args.config, overrides=overrides)
    output_parent = os.path.dirname(os.path.abspath(config.output)) or "."
    if not os.path.isdir(output_parent):
        raise CLIError(f"output {config.output!r}: folder {output_parent!r} does not exist.")
    if os.path.exists(config.output) and not os.path.isdir(config.output):
        raise CLIError(f"output {config.output!r} is a file; expected a run folder.")

    if args.logical_cpus is not None:
        _split_cpu(args.logical_cpus)
    from keras_fr.training.engine import train

    result = train(config, stop_after_steps=args.stop_after_steps, verbose=0 if args.quiet else 2,
                   log=None if args.quiet else print)
    if result.finished and result.backbone_path is None:
        print(f"trained {result.total_steps} steps; the chief (worker 0) writes the backbone")
    elif result.finished:
        print(f"trained {result.total_steps} steps; backbone: {result.backbone_path}")
    else:
        print(f"checkpointed at step {result.steps_done} of {result.total_steps}; run again to continue")
    return 0


def _split_cpu(count):
    import keras

    if keras.backend.backend() != "tensorflow":
        raise CLIError("--logical-cpus applies to the TensorFlow backend (on JAX set "
                       "XLA_FLAGS=--xla_force_host_platform_device_count=N).")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise CLIError("--logical-cpus must be set before TensorFlow starts; it could not be.") from None
