"""PartialFC against the full margin head: memory, step time, and accuracy parity (TensorFlow, CPU).

Two parts.

1. Scale. For each class count (default 100k, 300k, 1M, 2M) at embedding 512, a small backbone (one dense
   layer from 128 random features to the 512-d embedding) is trained on one repeated synthetic batch
   (``--batch-size``, default 128) with ``ArcFaceLoss(s=64, m=0.5)`` and ``SGDWithL2(0.1, momentum 0.9,
   l2 5e-4)``, twice: ``PartialFCTrainingModel(sample_rate=--sample-rate)`` and the full head
   (``FaceTrainingModel``, a ``MarginHead`` updated by the dense optimizer). Each run is its own
   subprocess, so its peak memory is its own. Reported: the bytes of the model's and the optimizer's
   variables (the head's centres plus their momentum dominate), the process's peak resident memory
   (``VmHWM``: variables, their initialization, gradients and step temporaries), and seconds per
   training step after ``--warmup`` untimed steps (tracing). A run whose estimated peak exceeds
   ``--max-gb`` (default: 50% of the memory available when the benchmark starts; the machine is
   shared) is not started and is reported as not fitting, with its estimate. ``--modes`` adds
   ``sharded``: ``ShardedPartialFCTrainingModel`` under ``MirroredStrategy`` over ``--replicas``
   logical CPU devices (default 2) of the one CPU, each replica holding ``C/R`` centre rows and their
   momentum. Its *state per replica* is one replica's share (its centre shard and momentum, plus a
   copy of the backbone and its optimizer state); the peak resident memory is the whole process's,
   all replicas together (they share the host's memory), and the step time is that of the global
   batch with the replicas sharing the CPU cores.
2. Accuracy parity. A synthetic closed-set problem (``--acc-classes`` identities, Gaussian clusters
   in 64-d, 6 training and 2 held-out samples each) is trained for ``--acc-epochs`` epochs at sample
   rate ``--sample-rate`` and at 1.0 (same seed, data and order); reported: held-out top-1 accuracy
   of the full logits (``predict``), final training loss and time.

Usage:
    python benchmarks/partial_fc.py            # 100k, 300k, 1M, 2M classes; parity at 5,000 classes
                                               # (16 epochs);
                                               # writes results/partial_fc.json
    python benchmarks/partial_fc.py --quick    # smoke test: 100k classes, 1+1 steps, parity at 1,000
    python benchmarks/partial_fc.py --classes 100000 1000000 --steps 5
    python benchmarks/partial_fc.py --classes 100000 1000000 2000000 --modes partial sharded full \
        --skip-parity --output results/partial_fc_sharded.json     # the sharded head (issue 16)
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, result_header, write_json  # noqa: E402

FEATURES = 128


def _mem_available_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _vm_hwm_gb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, nargs="+", default=None,
                   help="class counts (default 100000 300000 1000000 2000000)")
    p.add_argument("--embedding", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--sample-rate", type=float, default=0.1)
    p.add_argument("--head-momentum", type=float, default=0.9,
                   help="PartialFC's centre momentum (0 = no momentum buffer: half the state)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps, incl. tracing")
    p.add_argument("--max-gb", type=float, default=None,
                   help="skip runs estimated above this peak (default 50%% of MemAvailable)")
    p.add_argument("--acc-classes", type=int, default=None, help="parity problem size (default 5000)")
    p.add_argument("--acc-epochs", type=int, default=None, help="parity epochs (default 16)")
    p.add_argument("--modes", nargs="+", default=["partial", "full"], choices=("partial", "sharded", "full"),
                   help="heads to measure (default: partial full); sharded = over --replicas logical CPUs")
    p.add_argument("--replicas", type=int, default=2, help="logical CPU devices for --modes sharded")
    p.add_argument("--parity-heads", nargs="+", default=["partial"], choices=("partial", "sharded"),
                   help="heads for the parity problem (default: partial); sharded = over --replicas logical CPUs")
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 100k classes, 1 timed step, parity at 1,000 classes for 3 epochs")
    p.add_argument("--output", default=None,
                   help="results file (default results/partial_fc.json, --quick: partial_fc_quick.json)")
    p.add_argument("--_worker", nargs=2, metavar=("CLASSES", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--_parity_sharded", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    if args.output is None:
        args.output = os.path.join(HERE, "results", "partial_fc_quick.json" if q else "partial_fc.json")
    if args.classes is None:
        args.classes = [100_000] if q else [100_000, 300_000, 1_000_000, 2_000_000]
    if args.steps is None:
        args.steps = 1 if q else 3
    if args.acc_classes is None:
        args.acc_classes = 1000 if q else 5000
    if args.acc_epochs is None:
        args.acc_epochs = 3 if q else 16
    if args.max_gb is None:
        avail = _mem_available_gb()
        args.max_gb = 0.5 * avail if avail else 6.0
    if not 0 < args.sample_rate <= 1:
        p.error("--sample-rate must be in (0, 1]")
    if args.replicas < 1:
        p.error("--replicas must be a positive integer")
    return args


def estimate_gb(classes, dim, batch, mode, rate, momentum=0.9, replicas=1):
    """A rough peak estimate, to skip what cannot fit: calibrated on the 100k runs of this script (the
    full head peaked near 8x the centres' bytes above the ~0.8 GB baseline: centres, momentum slot,
    dense gradient, normalized copy and the optimizer's temporaries; PartialFC near its state plus
    the initializer's temporary copy of the centres)."""
    cd = classes * dim * 4 / 2**30
    if mode == "full":
        return 0.8 + 8 * cd + 6 * batch * classes * 4 / 2**30
    k = max(1, int(rate * classes))
    if mode == "sharded":
        # All shards live in this process. Building: the initializer's C x D matrix and its
        # temporaries beside the shards (measured: about 2.6 x the centres' bytes at 100k and 1M);
        # training: the shards and the sampled rows' temporaries.
        shard = math.ceil(classes / replicas) * dim * 4 / 2**30
        state = (2 if momentum else 1) * replicas * shard
        return 0.8 + state + max(2.6 * cd, 6 * k * dim * 4 / 2**30) + classes * 16 / 2**30
    # + one C x D initializer temporary while the centres are created
    return 0.8 + (3 if momentum else 2) * cd + 6 * k * dim * 4 / 2**30 + classes * 16 / 2**30


def worker(classes, mode, args):
    """One scale run in this process: JSON result on stdout."""
    import tensorflow as tf

    strategy = None
    if mode == "sharded":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.replicas)],
                                                  cross_device_ops=tf.distribute.ReductionToOneDevice())
    import contextlib

    import keras
    import numpy as np

    from keras_fr.training import PartialFCTrainingModel
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.recipes import SGDWithL2
    from keras_fr.training import FaceTrainingModel

    keras.utils.set_random_seed(0)
    def scope():
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    with scope():
        inputs = keras.Input((FEATURES,))
        backbone = keras.Model(inputs, keras.layers.Dense(args.embedding)(inputs))
        t0 = time.perf_counter()
        if mode == "full":
            model = FaceTrainingModel(backbone, classes)
        elif mode == "sharded":
            from keras_fr.training.sharded_partial_fc import ShardedPartialFCTrainingModel

            model = ShardedPartialFCTrainingModel(backbone, classes, sample_rate=args.sample_rate, seed=0,
                                                  momentum=args.head_momentum)
        else:
            model = PartialFCTrainingModel(backbone, classes, sample_rate=args.sample_rate, seed=0,
                                           momentum=args.head_momentum)
        model.compile(SGDWithL2(0.1, momentum=0.9, l2=5e-4), loss=ArcFaceLoss())
        model.optimizer.build(model.trainable_variables)
    build_s = time.perf_counter() - t0
    # The backbone and its optimizer state (mirrored: one copy per replica) ...
    dense = sum(int(np.prod(v.shape)) * 4 for v in list(model.weights) + list(model.optimizer.variables)
                if v.dtype == "float32")
    if mode == "sharded":  # ... plus one replica's centre shard and momentum (not Keras weights)
        per_replica = dense + model.partial_fc.shard_state_bytes()
        state = dense * args.replicas + model.partial_fc.shard_state_bytes() * args.replicas
    else:
        per_replica = state = dense
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, FEATURES)).astype("float32")
    y = rng.integers(0, classes, args.batch_size).astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    if strategy is not None:
        data = strategy.experimental_distribute_dataset(data)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    start = time.perf_counter()
    with scope():
        history = model.fit(data, epochs=1, steps_per_epoch=args.warmup + args.steps, verbose=0,
                            callbacks=[Timer()])
    timed = times[args.warmup - 1:]
    return {
        "classes": classes,
        "mode": mode,
        "replicas": args.replicas if mode == "sharded" else 1,
        "sample_rate": args.sample_rate if mode != "full" else 1.0,
        "head_momentum": args.head_momentum if mode != "full" else 0.9,
        "rows_per_step": _rows_per_step(model, mode, classes, args),
        "state_gb": state / 2**30,
        "state_per_replica_gb": per_replica / 2**30,
        "peak_rss_gb": _vm_hwm_gb(),
        "build_seconds": build_s,
        "warmup_seconds": times[args.warmup - 1] - start,
        "seconds_per_step": (timed[-1] - timed[0]) / (len(timed) - 1),
        "loss": float(history.history["loss"][-1]),
    }


def _rows_per_step(model, mode, classes, args):
    """Centre rows a step uses (all replicas together), without the positives' extra rows."""
    if mode == "full":
        return classes
    if mode == "partial":
        return model.partial_fc.num_sampled
    head = model.partial_fc
    if args.sample_rate >= 1.0:
        return classes
    return sum(int(args.sample_rate * (stop - start)) for start, stop in head.shards)


def run_scale(classes, mode, args):
    est = estimate_gb(classes, args.embedding, args.batch_size, mode, args.sample_rate,
                      args.head_momentum, args.replicas)
    base = {"classes": classes, "mode": mode, "estimated_peak_gb": est}
    if est > args.max_gb:
        return {**base, "skipped": f"estimated peak {est:.1f} GB > --max-gb {args.max_gb:.1f} GB"}
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", str(classes), mode,
           "--embedding", str(args.embedding), "--batch-size", str(args.batch_size),
           "--sample-rate", str(args.sample_rate), "--head-momentum", str(args.head_momentum),
           "--steps", str(args.steps), "--replicas", str(args.replicas),
           "--warmup", str(args.warmup), "--max-gb", "1e9"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {**base, "failed": f"exit {proc.returncode}: {tail[0][:200]}"}
    return {**base, **json.loads(proc.stdout.strip().splitlines()[-1])}


def run_parity(args, sharded=False):
    """The parity rows: single-replica PartialFC, or (``sharded``, in a process whose CPU is split into
    ``--replicas`` logical devices) ``ShardedPartialFCTrainingModel`` under MirroredStrategy."""
    import contextlib

    import keras
    import numpy as np

    from keras_fr.training import PartialFCTrainingModel
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.recipes import SGDWithL2

    c, in_dim, dim = args.acc_classes, 64, 128
    rng = np.random.default_rng(0)
    means = rng.normal(size=(c, in_dim)).astype("float32")
    y_train = np.repeat(np.arange(c), 6)
    y_test = np.repeat(np.arange(c), 2)
    noise = 1.0
    x_train = means[y_train] + noise * rng.normal(size=(len(y_train), in_dim)).astype("float32")
    x_test = means[y_test] + noise * rng.normal(size=(len(y_test), in_dim)).astype("float32")
    strategy = None
    if sharded:
        import tensorflow as tf

        from keras_fr.training.sharded_partial_fc import ShardedPartialFCTrainingModel

        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.replicas)],
                                                  cross_device_ops=tf.distribute.ReductionToOneDevice())

    def scope():
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    rows = []
    for rate in (args.sample_rate, 1.0):
        keras.utils.set_random_seed(0)
        with scope():
            inputs = keras.Input((in_dim,))
            hidden = keras.layers.Dense(256, activation="relu")(inputs)
            backbone = keras.Model(inputs, keras.layers.Dense(dim)(hidden))
            build = ShardedPartialFCTrainingModel if sharded else PartialFCTrainingModel
            model = build(backbone, c, sample_rate=rate, seed=0)
            model.compile(SGDWithL2(0.1, momentum=0.9, l2=5e-4), loss=ArcFaceLoss(scale=32.0, margin=0.3))
        start = time.perf_counter()
        with scope():
            history = model.fit(x_train, y_train, batch_size=256, epochs=args.acc_epochs, shuffle=True,
                                verbose=0)
        seconds = time.perf_counter() - start
        if sharded:  # the full cosine logits from the backbone and the assembled centres
            emb = np.asarray(model.backbone(x_test, training=False))
            centres = model.partial_fc.full_kernel()
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
            pred = (emb @ centres.T).argmax(-1)
        else:
            pred = model.predict(x_test, batch_size=1024, verbose=0).argmax(-1)
        row = {"classes": c, "sample_rate": rate, "epochs": args.acc_epochs,
               "head": f"sharded x{args.replicas}" if sharded else "partial",
               "test_top1": float((pred == y_test).mean()),
               "first_epoch_loss": float(history.history["loss"][0]),
               "final_loss": float(history.history["loss"][-1]), "fit_seconds": seconds}
        print(f"parity  {row['head']:<11} rate {rate:<5} top-1 {row['test_top1']:.4f}  loss {row['first_epoch_loss']:.2f}"
              f" -> {row['final_loss']:.2f}  {seconds:.1f} s", flush=True)
        rows.append(row)
    return rows


def fmt_row(r):
    mode = r["mode"] + (f" x{r['replicas']}" if r.get("replicas", 1) > 1 else "")
    head = f"{r['classes']:>9,} {mode:<10}"
    if "skipped" in r or "failed" in r:
        return f"{head} not run/failed: {r.get('skipped') or r.get('failed')}"
    per = (f" ({r['state_per_replica_gb']:.2f} GB per replica)"
           if r.get("replicas", 1) > 1 else "")
    return (f"{head} rows/step {r['rows_per_step']:>9,}  state {r['state_gb']:6.2f} GB{per}  peak RSS "
            f"{r['peak_rss_gb']:6.2f} GB  {r['seconds_per_step']:7.3f} s/step  "
            f"(build {r['build_seconds']:.1f} s,"
            f" warm-up {r['warmup_seconds']:.1f} s)")


def main(argv=None):
    args = parse_args(argv)
    if args._worker:
        print(json.dumps(worker(int(args._worker[0]), args._worker[1], args)))
        return
    if args._parity_sharded:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
        print("ROWS " + json.dumps(run_parity(args, sharded=True)))
        return
    payload = {**result_header("partial_fc", argv), "settings": {
        "embedding": args.embedding, "head_momentum": args.head_momentum,
        "batch_size": args.batch_size, "sample_rate": args.sample_rate,
        "steps": args.steps, "warmup": args.warmup, "max_gb": args.max_gb, "modes": args.modes,
        "replicas": args.replicas}, "scale": [], "parity": []}
    print(f"max-gb {args.max_gb:.1f}", flush=True)
    for classes in [] if args.skip_scale else args.classes:
        for mode in args.modes:
            r = run_scale(classes, mode, args)
            payload["scale"].append(r)
            print(fmt_row(r), flush=True)
            write_json(args.output, payload)
    if not args.skip_parity:
        if "partial" in args.parity_heads:
            payload["parity"] = run_parity(args)
            write_json(args.output, payload)
        if "sharded" in args.parity_heads:
            cmd = [sys.executable, os.path.abspath(__file__), "--_parity_sharded", "--replicas", str(args.replicas),
                   "--sample-rate", str(args.sample_rate), "--acc-classes", str(args.acc_classes),
                   "--acc-epochs", str(args.acc_epochs), "--max-gb", "1e9"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                print(f"parity, sharded: failed: {tail[0][:200]}", flush=True)
            else:
                for line in proc.stdout.splitlines():
                    if line.startswith("parity"):
                        print(line, flush=True)
                payload["parity"] += json.loads(lines[-1][5:])
            write_json(args.output, payload)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
