"""Training throughput (images/s) of ``FaceTrainingModel`` + ArcFace on this machine (TensorFlow backend).

For each model and precision policy: the backbone at 112x112 with a ``MarginHead`` over
``--num-classes`` identities, compiled with the MSConv recipe's optimizer (SGD momentum 0.9, coupled
weight decay 5e-4) and ``ArcFaceLoss(s=64, m=0.5)``, is fitted on one synthetic batch repeated (so the
input pipeline is not measured). The first ``--warmup`` steps (tracing, compilation) are excluded;
throughput = batch size x timed steps / their wall time, from per-batch timestamps.

Precisions: ``float32``; ``mixed_bfloat16`` (the mixed policy that CPUs run); ``mixed_float16`` (the
MSConv paper's GPU setting; on CPU it may fail or be slow; a failure is recorded, not fatal). The
``MarginHead`` and the loss stay float32 under every policy.

The MSConv paper reports 918 images/s for MSConvResNet50 at batch 128, mixed precision, on one RTX
4090; compare only with a run on a GPU (``--batch-size 128 --precision mixed_float16 --jit``).

Budget: the default run is 6 fits (3 models x 2 policies) of 1 + 3 steps at batch 32 and 112x112; it
took 13.1 minutes on 2 cores (an MSConv network's tracing step alone takes over 2 minutes). Each row is
printed and saved as soon as it is measured, so an interrupted run keeps what it measured. MSConv
networks use ``grouped_conv="auto"`` (``"onednn"`` on TensorFlow CPU where oneDNN runs it, else
``"split"``); ``--grouped-conv native`` trains about 25x slower there (``benchmarks/grouped_conv.py``).

Two switches compare what keras_fr changed in the training step: ``--batchnorm keras`` runs Keras' own
``BatchNormalization`` code instead of keras_fr's fused training step
(``keras_fr.layers.BatchNormalization.fused_training = False``), and ``--pack-channels-training N`` sets
how wide MSConv packs its groups in training (``MSConv._split_pack_channels_training``; 0: one
convolution per group), and ``--pointwise conv`` trains 1x1 convolutions as Keras' convolution instead of
keras_fr's matrix product in bfloat16 (``keras_fr.layers.Conv2D.matmul_training = False``).

Usage:
    python benchmarks/training.py                 # MSConvResNet50, IResNet50, LGAFResNet100; batch 32;
                                                  # float32 and mixed_bfloat16; writes results/training.json
    python benchmarks/training.py --quick         # smoke test: MSConvResNet26 at 64x64, batch 4, 2 steps
    python benchmarks/training.py --models iresnet50 --precision float32 mixed_float16 --steps 10
    python benchmarks/training.py --models iresnet100 --precision mixed_bfloat16 --batchnorm keras
    python benchmarks/training.py --models msconv_resnet50 --precision mixed_bfloat16 --pack-channels-training 32
    python benchmarks/training.py --models msconv_resnet50 --precision mixed_bfloat16 --pointwise conv
"""

import argparse
import os
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, write_json  # noqa: E402

from keras_fr.applications import MODELS, get_builder  # noqa: E402

DEFAULT_MODELS = ["msconv_resnet50", "iresnet50", "lgaf_resnet100"]
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, choices=sorted(MODELS),
                   help=f"models (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 32)")
    p.add_argument("--precision", nargs="+", default=None, choices=PRECISIONS,
                   help="dtype policies (default: float32 mixed_bfloat16)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps, incl. tracing (default 1)")
    p.add_argument("--image-size", type=int, default=None, help="input size (default 112)")
    p.add_argument("--num-classes", type=int, default=1000, help="identities in the margin head")
    p.add_argument("--jit", action="store_true", help="compile with XLA (jit_compile=True)")
    p.add_argument("--grouped-conv", choices=("auto", "native", "split", "onednn"), default="auto",
                   help="MSConv's grouped-convolution formulation (default auto: onednn on TensorFlow "
                        "without a GPU where oneDNN runs it, else split; native trains far slower there, "
                        "see benchmarks/grouped_conv.py)")
    p.add_argument("--batchnorm", choices=("fused", "keras"), default="fused",
                   help="keras_fr's fused batch-norm training step (default) or Keras' own code")
    p.add_argument("--pointwise", choices=("matmul", "conv"), default="matmul",
                   help="1x1 convolutions in a bfloat16 training step: keras_fr's matrix product "
                        "(default) or Keras' convolution")
    p.add_argument("--pack-channels-training", type=int, default=None,
                   help="MSConv's group-packing width in training (default: the library's, "
                        "SPLIT_PACK_CHANNELS_TRAINING; 0: one convolution per group)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: msconv_resnet26 at 64x64, batch 4, float32, 1 warm-up + 2 timed steps")
    p.add_argument("--output", default=os.path.join(HERE, "results", "training.json"))
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "models": ["msconv_resnet26"] if quick else DEFAULT_MODELS,
        "batch_size": 4 if quick else 32,
        "precision": ["float32"] if quick else ["float32", "mixed_bfloat16"],
        "steps": 2 if quick else 3,
        "warmup": 1,
        "image_size": 64 if quick else 112,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("batch_size", "steps", "warmup", "image_size", "num_classes"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.pack_channels_training is not None and args.pack_channels_training < 0:
        p.error("--pack-channels-training must be >= 0")
    return args


class _StepTimes:
    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def __init__(cb):
                super().__init__()
                cb.times = []
                cb.losses = []

            def on_train_batch_end(cb, batch, logs=None):
                cb.losses.append(float((logs or {}).get("loss", float("nan"))))
                cb.times.append(time.perf_counter())

        self.callback = Callback()


def measure(name, precision, args):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.recipes import SGDWithL2
    from keras_fr.training import FaceTrainingModel
    from keras_fr.layers.msconv import MSConv
    from keras_fr.layers.convolution import Conv2D
    from keras_fr.layers.normalization import BatchNormalization

    BatchNormalization.fused_training = args.batchnorm == "fused"
    Conv2D.matmul_training = args.pointwise == "matmul"
    if args.pack_channels_training is not None:
        MSConv._split_pack_channels_training = args.pack_channels_training
    keras.backend.clear_session()
    keras.config.set_dtype_policy(precision)
    try:
        extra = {"grouped_conv": args.grouped_conv} if name.startswith("msconv") else {}
        backbone = get_builder(name)(input_shape=(args.image_size, args.image_size, 3), **extra)
        model = FaceTrainingModel(backbone, args.num_classes)
        model.compile(optimizer=SGDWithL2(0.02, momentum=0.9, l2=5e-4), loss=ArcFaceLoss(),
                      jit_compile=bool(args.jit))
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
        y = rng.integers(0, args.num_classes, args.batch_size).astype(np.int32)
        dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
        timer = _StepTimes().callback
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=args.warmup + args.steps, callbacks=[timer], shuffle=False,
                  verbose=0)
        total = time.perf_counter() - start
        times = timer.times
        timed = times[args.warmup:]
        seconds = timed[-1] - times[args.warmup - 1]
        return {
            "model": name,
            "precision": precision,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "jit": bool(args.jit),
            "grouped_conv": args.grouped_conv if name.startswith("msconv") else None,
            "batchnorm": args.batchnorm,
            "pointwise": args.pointwise,
            "pack_channels_training": MSConv._split_pack_channels_training if name.startswith("msconv") else None,
            "timed_steps": len(timed),
            "seconds_per_step": seconds / len(timed),
            "images_per_second": args.batch_size * len(timed) / seconds,
            "warmup_seconds": times[args.warmup - 1] - start,
            "total_seconds": total,
            "final_loss": timer.losses[-1],
        }
    except Exception as error:  # noqa: BLE001 - a policy the machine cannot run is a result too
        return {"model": name, "precision": precision, "batch_size": args.batch_size,
                "failed": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    finally:
        keras.config.set_dtype_policy("float32")


def print_row(r):
    if "failed" in r:
        line = f"{r['model']:<18}{r['precision']:<16}{r['batch_size']:>6}  failed: {r['failed']}"
    else:
        line = (f"{r['model']:<18}{r['precision']:<16}{r['batch_size']:>6}{r['images_per_second']:>10.2f}"
                f"{r['seconds_per_step']:>9.3f}{r['warmup_seconds']:>11.1f}")
    print(line, flush=True)


def print_table(results):
    header = f"{'model':<18}{'precision':<16}{'batch':>6}{'img/s':>10}{'s/step':>9}{'warm-up s':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        print_row(r)


def main(argv=None):
    args = parse_args(argv)
    results = []
    payload = {
        **_bench.result_header("training", argv),
        "settings": {k: getattr(args, k) for k in ("batch_size", "steps", "warmup", "image_size",
                                                   "num_classes", "jit", "grouped_conv", "batchnorm", "pointwise",
                                                   "pack_channels_training")},
        "results": results,
    }
    # Each row is printed and saved as soon as it is measured: a full run takes many minutes on a
    # 2-core machine, and an interrupted run must still leave every figure it measured.
    for name in args.models:
        for precision in args.precision:
            results.append(measure(name, precision, args))
            print_row(results[-1])
            write_json(args.output, payload)
    print()
    print_table(results)
    print(f"wrote {args.output}")
    return payload


if __name__ == "__main__":
    main()
