"""keras_fr against the PyTorch reference, side by side in one run (issues 4 and 17).

For each model (MSConvResNet50, IResNet100, LGAFResNet100 by default), the PyTorch reference network
(``keras_fr.torch_reference.build_reference``) gets random weights (``randomize_``, seed 0), its
state dict is converted into the keras_fr model (``keras_fr.conversion.load_state_dict``, strict) and
the two outputs are checked to agree. Then, with the same weights:

- **batch 1**: PyTorch eager (eval, ``no_grad``, in a child process) against (a) the path ``FaceRecognizer`` and
  ``keras-fr verify/embed/identify`` take by default (``keras_fr.recognition.runtime``, ``"auto"``:
  the fastest of the verified, cached TFLite and ONNX Runtime files, or Keras when Keras was timed
  faster, built here into ``--cache-dir``; the timing it chose by is printed), and (b) plain Keras (the better
  of the eager call and a ``tf.function(jit_compile=True)`` call);
- **batch 32** (no goal, for the record): PyTorch eager against Keras in a Python process with
  TensorFlow's defaults (the best of eager, ``tf.function`` and XLA, each on the model and on its
  inference copy, ``keras_fr.applications.inference_model``, which the library's batch paths run;
  ``--no-inference-copy`` leaves the copy out);
- **batch 32, keras-fr eval** (the batch-32 goals): the library's batch path as ``keras-fr eval`` runs
  it, against the same PyTorch measurement: the inference copy through ``predict_in_parts`` (what
  ``extract_embeddings`` runs) in a process set up as that command sets its own
  (``keras_fr.cli.configure_process``: oneDNN keeps the reordered kernels of its first call,
  ``keras_fr._onednn``; one thread per operation and the batch in one part per core,
  ``keras_fr._threads``);
- **batch 32, bfloat16** (no goal, for the record; ``--skip-bf16`` leaves it out): Keras under the
  ``mixed_bfloat16`` policy (float32 weights, bfloat16 arithmetic) against PyTorch with bfloat16 autocast
  and channels-last tensors, with the min cosine of the bfloat16 outputs to float32 Keras;
- **training, batch 32**: one SGD step (momentum 0.9, weight decay 5e-4) of the backbone with an
  ArcFace head (s=64, m=0.5, ``--num-classes`` identities) on one synthetic batch: Keras
  ``model.fit`` under the ``mixed_bfloat16`` policy (``FaceTrainingModel`` + ``ArcFaceLoss``, as in
  ``benchmarks/training.py``) against PyTorch with ``torch.autocast("cpu", bfloat16)`` and
  channels-last tensors (the reference's best CPU setting). The first ``--warmup`` steps (tracing)
  are not timed. For MSConvResNet50 the goal also asks for the same loss curve: ``--curve-steps`` (50)
  steps of both on the same real faces from the same weights (``benchmarks/loss_curve.py``, which
  needs ``../shared/data/celeba299``); the row is "met" only when it is as fast *and* the curves agree.

PyTorch at batch 1, the batch-32 inference and the training rows each run in a fresh child process
(so TensorFlow's and torch's thread pools never share the cores), whose peak resident memory
(``VmHWM``, else ``resource.getrusage(...).ru_maxrss``: imports, model, activations, everything) is
reported.

Every row also gives the achieved GFLOP/s: the FLOPs per image (one multiply-add = 2 FLOPs) counted
once per model on the PyTorch reference with ``torch.utils.flop_counter`` (forward for inference,
forward + backward for training) times images/s. The CPU's peak is measured in the same run by a
matrix-multiplication microbenchmark (float32: the better of NumPy and torch; bfloat16: torch, which
uses the AMX/AVX512-BF16 units where the CPU has them), so each row can be read against the hardware.

Ratios are keras_fr / PyTorch (higher is better for keras_fr). The goals of issue 17 are checked per
row (batch 1: 1.5x for MSConvResNet50 and IResNet100; batch 32: 1.5x for MSConvResNet50, 1.2x for
IResNet100 and LGAFResNet100; training: 1.0x for MSConvResNet50). Timing is only meaningful on a
quiet machine; ``--quick`` proves that the script runs (IResNet18, batch 4, one timed iteration).

Usage:
    python benchmarks/compare_reference.py            # full run (needs a quiet machine)
    python benchmarks/compare_reference.py --quick    # check it runs: small model, small batches
    python benchmarks/compare_reference.py --models msconv_resnet50 --skip-training
"""

import argparse
import contextlib
import copy
import json
import os
import pathlib
import sys
import tempfile
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import write_json  # noqa: E402

import numpy as np  # noqa: E402

MODELS = ("msconv_resnet50", "iresnet100", "lgaf_resnet100")
QUICK_MODELS = ("iresnet18",)
CHOICES = ("msconv_resnet26", "msconv_resnet50", "msconv_resnet101", "iresnet18", "iresnet34", "iresnet50",
           "iresnet100", "lgaf_resnet50", "lgaf_resnet100")
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "compare_reference.json"
IMAGE_SIZE = 112

#: Issue 17's goals: (row kind, model) -> the smallest ratio keras_fr / PyTorch that meets it.
GOALS = {
    ("b1_runtime", "msconv_resnet50"): 1.5,
    ("b1_runtime", "iresnet100"): 1.5,
    # Batch 32: the library's batch path as `keras-fr eval` runs it (the "keras-fr eval" rows).
    ("batch_keras_cli", "msconv_resnet50"): 1.5,
    ("batch_keras_cli", "iresnet100"): 1.2,
    ("batch_keras_cli", "lgaf_resnet100"): 1.2,
    ("train", "msconv_resnet50"): 1.0,
}
#: In --quick runs the small models stand in for their family's goal (to show the column works).
QUICK_STAND_IN = {"msconv_resnet26": "msconv_resnet50", "iresnet18": "iresnet100",
                  "lgaf_resnet50": "lgaf_resnet100"}


def _best_time(fn, x, iters, warmup):
    for _ in range(warmup):
        fn(x)
    best = float("inf")
    for _ in range(iters):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


_maxrss_mb = _bench.peak_rss_mb


def _threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 0.5, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)), -1, 1).astype("float32")


# --------------------------------------------------------------------------------------------------
# The hardware's peak: matrix multiplication
# --------------------------------------------------------------------------------------------------


def matmul_peak(n=2048, seconds=1.0):
    """Best GFLOP/s of square matmuls: float32 (NumPy and torch) and bfloat16 (torch)."""
    import torch

    def rate(fn, flops):
        fn()  # warm-up (thread pools, packing buffers)
        best, spent = float("inf"), 0.0
        while spent < seconds:
            start = time.perf_counter()
            fn()
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
        return flops / best / 1e9

    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ha, hb = ta.to(torch.bfloat16), tb.to(torch.bfloat16)
    out = {
        "n": n,
        "float32_numpy_gflops": rate(lambda: a @ b, flops),
        "float32_torch_gflops": rate(lambda: torch.mm(ta, tb), flops),
        "bfloat16_torch_gflops": rate(lambda: torch.mm(ha, hb), flops),
    }
    out["float32_gflops"] = max(out["float32_numpy_gflops"], out["float32_torch_gflops"])
    out["bfloat16_gflops"] = out["bfloat16_torch_gflops"]
    return out


# --------------------------------------------------------------------------------------------------
# FLOPs, counted once per model on the reference network
# --------------------------------------------------------------------------------------------------


def count_flops(net, num_classes):
    """(forward FLOPs per image, training-step FLOPs per image) of ``net`` at 112x112."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.from_numpy(_inputs(2).transpose(0, 3, 1, 2).copy())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    forward = counter.get_total_flops() / 2
    head = _ArcFaceHead(_embedding_size(net), num_classes)
    net.train()  # changes BatchNorm statistics: the caller passes a copy
    counter = FlopCounterMode(display=False)
    with counter:
        loss = head(net(x), torch.zeros(2, dtype=torch.long))
        loss.backward()
    net.eval()
    net.zero_grad(set_to_none=True)
    return forward, counter.get_total_flops() / 2


def _embedding_size(net):
    import torch

    with torch.no_grad():
        return int(net(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)).shape[-1])


class _ArcFaceHead:
    """ArcFace (s=64, m=0.5) over a normalized weight matrix, as a callable that returns the loss."""

    def __init__(self, dim, classes, s=64.0, m=0.5, seed=0):
        import torch

        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(classes, dim, generator=gen) * 0.01)
        self.s, self.m = s, m

    def parameters(self):
        return [self.weight]

    def __call__(self, emb, labels):
        import math

        import torch
        import torch.nn.functional as F

        cos = F.linear(F.normalize(emb.float()), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, labels[:, None])
        theta = torch.acos(target)
        margin = torch.where(theta + self.m < math.pi, torch.cos(theta + self.m), target)
        logits = cos.scatter(1, labels[:, None], margin) * self.s
        return F.cross_entropy(logits, labels)


# --------------------------------------------------------------------------------------------------
# Child processes: one measurement each, with its peak memory
# --------------------------------------------------------------------------------------------------


def _child(job):
    """Run one job (a dict) in this fresh process; return its result dict."""
    threads = job["threads"]
    if job["framework"] == "torch":
        import torch

        torch.set_num_threads(threads)
        from keras_fr.torch_reference import build_reference, randomize_

        net = randomize_(build_reference(job["model"]), input_size=IMAGE_SIZE, seed=0)
        x = torch.from_numpy(_inputs(job["batch"]).transpose(0, 3, 1, 2).copy())
        if job["kind"] == "infer":
            bf16 = job.get("bfloat16", False)
            if bf16:  # PyTorch's best CPU setting for bfloat16: autocast and channels-last tensors
                net = net.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)

            def call(inp):
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return net(inp)

            seconds = _best_time(call, x, job["iters"], job["warmup"])
            return {"img_s": job["batch"] / seconds, "maxrss_mb": _maxrss_mb(),
                    "mode": "eager, bf16 autocast, channels-last" if bf16 else "eager"}
        net.train()
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        head = _ArcFaceHead(_embedding_size(net.eval()), job["num_classes"])
        net.train()
        labels = torch.from_numpy(np.random.default_rng(0).integers(0, job["num_classes"], job["batch"]))
        opt = torch.optim.SGD(list(net.parameters()) + head.parameters(), lr=0.02, momentum=0.9,
                              weight_decay=5e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = head(net(x), labels)
            loss.backward()
            opt.step()
            return float(loss)

        for _ in range(job["warmup"]):
            step()
        start = time.perf_counter()
        for _ in range(job["steps"]):
            loss = step()
        seconds = (time.perf_counter() - start) / job["steps"]
        return {"img_s": job["batch"] / seconds, "mode": "bf16 autocast, channels-last",
                "final_loss": loss, "maxrss_mb": _maxrss_mb()}

    import keras

    from keras_fr.applications import get_model

    if job.get("cli_process"):
        # An inference job in the process `keras-fr eval` sets up before TensorFlow runs
        # (keras_fr.cli.configure_process: oneDNN's kept kernels, TensorFlow's own allocator, one thread
        # per operation), timing the library's batch path as that command runs it (extract_embeddings):
        # the copy through predict_in_parts, one part per core.
        from keras_fr._threads import batch_parts
        from keras_fr.applications.inference import inference_copy, predict_in_parts
        from keras_fr.cli import configure_process

        configure_process("eval")

        copy = inference_copy(get_model(job["model"], weights=job["weights"]))
        x = _inputs(job["batch"])
        seconds = _best_time(lambda v: np.asarray(predict_in_parts(copy, v)), x, job["iters"], job["warmup"])
        return {"img_s": job["batch"] / seconds, "maxrss_mb": _maxrss_mb(),
                "mode": f"predict_in_parts ({batch_parts()} parts), inference copy, keras-fr eval process",
                "check_output_copy": np.asarray(predict_in_parts(copy, _inputs(4, seed=1)), "float32").tolist()}
    if job["kind"] == "infer":
        if job.get("bfloat16"):
            keras.config.set_dtype_policy("mixed_bfloat16")  # float32 weights, bfloat16 arithmetic
        model = get_model(job["model"], weights=job["weights"])
        x = _inputs(job["batch"])
        times = {"eager": _best_time(lambda v: np.asarray(model(v, training=False)), x, job["iters"], job["warmup"])}
        variants = {"": model}
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            from keras_fr.applications import inference_model

            # The model itself, and its inference copy (batch norms folded, PReLUs as a maximum) that
            # the library's batch paths run (extract_embeddings, the recognizer's Keras runtime).
            if job.get("inference_copy", True):
                variants[", inference copy"] = inference_model(model)
            for suffix, net in variants.items():
                for mode, jit in (("graph", False), ("jit", True)):
                    if jit and not job.get("jit", True):
                        continue
                    fn = tf.function(lambda v, net=net: net(v, training=False), jit_compile=jit)
                    times[mode + suffix] = _best_time(lambda v, fn=fn: np.asarray(fn(v)), x, job["iters"],
                                                      job["warmup"])
        mode, seconds = min(times.items(), key=lambda item: item[1])
        out = {"img_s": job["batch"] / seconds, "mode": mode, "maxrss_mb": _maxrss_mb(),
               "img_s_by_mode": {m: job["batch"] / t for m, t in times.items()}}
        check = _inputs(4, seed=1)
        if job.get("bfloat16"):
            out["mode"] += ", mixed_bfloat16"
            out["check_output"] = np.asarray(model(check, training=False), "float32").tolist()
        if len(variants) > 1:  # what the inference copy gives on the check inputs
            copy = variants[", inference copy"]
            out["check_output_copy"] = np.asarray(copy(check, training=False), "float32").tolist()
        return out

    import tensorflow as tf

    from keras_fr.training import FaceTrainingModel
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.recipes import SGDWithL2

    keras.config.set_dtype_policy("mixed_bfloat16")
    model = FaceTrainingModel(get_model(job["model"]), job["num_classes"])
    model.compile(optimizer=SGDWithL2(0.02, momentum=0.9, l2=5e-4), loss=ArcFaceLoss())
    rng = np.random.default_rng(0)
    x = _inputs(job["batch"])
    y = rng.integers(0, job["num_classes"], job["batch"]).astype(np.int32)
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append((time.perf_counter(), float((logs or {}).get("loss", float("nan")))))

    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), epochs=1,
              steps_per_epoch=job["warmup"] + job["steps"], callbacks=[Stamp()], verbose=0)
    timed = stamps[job["warmup"] - 1:]
    seconds = (timed[-1][0] - timed[0][0]) / job["steps"]
    return {"img_s": job["batch"] / seconds, "mode": "model.fit, mixed_bfloat16", "final_loss": timed[-1][1],
            "maxrss_mb": _maxrss_mb()}


def run_child(job, timeout):
    """Run ``job`` in a fresh Python process; its result dict, or ``{"failed": reason}``."""
    return _bench.run_child(__file__, job, timeout)


# --------------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------------


def bench_model(name, args, workdir, peak):
    import torch

    from keras_fr.conversion import build_keras_model, compare_outputs, infer_architecture, load_state_dict
    from keras_fr.recognition.runtime import file_sha256, prepare_runtime
    from keras_fr.torch_reference import build_reference, randomize_

    net = randomize_(build_reference(name), input_size=IMAGE_SIZE, seed=0)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    model = build_keras_model(infer_architecture(state))
    load_state_dict(model, state)
    weights = os.path.join(workdir, f"{name}.weights.h5")
    model.save_weights(weights)
    flops_fwd, flops_train = count_flops(copy.deepcopy(net), args.num_classes)  # a copy: training mode

    x1 = _inputs(1)

    def torch_call(inp):
        with torch.no_grad():
            return net(inp)

    xcheck = _inputs(4, seed=1)
    keras_check = np.asarray(model(xcheck, training=False))
    max_diff, cos = compare_outputs(torch_call(torch.from_numpy(xcheck.transpose(0, 3, 1, 2).copy())).numpy(),
                                    keras_check)
    iters1 = args.iters or 5
    # PyTorch at batch 1 runs alone in a child too: in this process TensorFlow's and torch's thread
    # pools would share the cores.
    torch_1 = run_child({"framework": "torch", "kind": "infer", "model": name, "batch": 1,
                         "threads": args.threads, "iters": iters1, "warmup": args.warmup}, args.child_timeout)
    if "failed" in torch_1:
        raise RuntimeError(f"{name}: PyTorch at batch 1 failed: {torch_1['failed']}")
    t_torch1 = 1 / torch_1["img_s"]

    start = time.perf_counter()
    runtime = prepare_runtime(model, name, file_sha256(weights), "auto", cache_dir=args.cache_dir,
                              input_size=IMAGE_SIZE)
    runtime_setup = time.perf_counter() - start
    # What "auto" chose from: the batch-1 timing of every file and of Keras, kept in the files' records.
    record_path = os.path.splitext(runtime.path)[0] + ".json" if runtime.path else None
    with open(record_path, encoding="utf-8") if record_path else contextlib.nullcontext() as f:
        choice_timing = json.load(f).get("batch1_seconds") if f else None
    t_runtime1 = _best_time(runtime, x1, iters1, args.warmup)
    keras_times = {"eager": _best_time(lambda v: np.asarray(model(v, training=False)), x1, iters1, args.warmup)}
    if not args.no_jit:
        import tensorflow as tf

        compiled = tf.function(lambda v: model(v, training=False), jit_compile=True)
        keras_times["jit"] = _best_time(lambda v: np.asarray(compiled(v)), x1, iters1, args.warmup)
    mode1, t_keras1 = min(keras_times.items(), key=lambda item: item[1])

    common = {"model": name, "flops_per_image": flops_fwd, "forward_flops": flops_fwd,
              "max_abs_diff": float(max_diff), "min_cosine": float(np.min(cos))}
    rows = [
        dict(common, kind="b1_runtime", row="batch 1, default runtime", batch=1, keras_img_s=1 / t_runtime1,
             keras_mode=f"runtime {runtime.name}" + (" (cached)" if runtime.cached else ""),
             torch_img_s=1 / t_torch1, torch_mode="eager", torch_maxrss_mb=torch_1["maxrss_mb"],
             runtime_setup_s=runtime_setup,
             runtime_min_cosine=runtime.min_cosine, runtime_choice_timing=choice_timing),
        dict(common, kind="b1_keras", row="batch 1, keras", batch=1, keras_img_s=1 / t_keras1, keras_mode=mode1,
             torch_img_s=1 / t_torch1, torch_mode="eager"),
    ]
    del runtime

    batch = args.batch
    job = {"model": name, "batch": batch, "threads": args.threads, "iters": args.iters or 3,
           "warmup": args.warmup, "weights": weights, "jit": not args.no_jit, "kind": "infer",
           "inference_copy": not args.no_inference_copy}
    keras_b = run_child(dict(job, framework="keras"), args.child_timeout)
    torch_b = run_child(dict(job, framework="torch"), args.child_timeout)
    row = _pair_row(common, "batch_keras", f"batch {batch}, keras", batch, keras_b, torch_b)
    _check_cosine(row, "copy_min_cosine_to_model", keras_check, keras_b, "check_output_copy")
    rows.append(row)
    # The same batch as `keras-fr eval` runs it (kept oneDNN kernels, one thread per operation, the
    # batch in parallel parts): the batch-32 goals. The row above is a default Python process.
    keras_c = run_child(dict(job, framework="keras", cli_process=True), args.child_timeout)
    row = _pair_row(common, "batch_keras_cli", f"batch {batch}, keras-fr eval", batch, keras_c, torch_b)
    _check_cosine(row, "copy_min_cosine_to_model", keras_check, keras_c, "check_output_copy")
    rows.append(row)
    if not args.skip_bf16:
        # bfloat16 inference on both sides (AMX / AVX512-BF16 where the CPU has them): no goal, for the
        # record; the outputs' cosine to float32 Keras on the check inputs says what it costs.
        keras_h = run_child(dict(job, framework="keras", bfloat16=True), args.child_timeout)
        torch_h = run_child(dict(job, framework="torch", bfloat16=True), args.child_timeout)
        row = _pair_row(common, "batch_keras_bf16", f"batch {batch}, keras bf16", batch, keras_h, torch_h)
        _check_cosine(row, "bf16_min_cosine_to_float32", keras_check, keras_h, "check_output")
        _check_cosine(row, "bf16_copy_min_cosine_to_float32", keras_check, keras_h, "check_output_copy")
        rows.append(row)
    if not args.skip_training:
        job = dict(job, kind="train", steps=args.steps, warmup=max(1, args.warmup),
                   num_classes=args.num_classes)
        keras_t = run_child(dict(job, framework="keras"), args.child_timeout)
        torch_t = run_child(dict(job, framework="torch"), args.child_timeout)
        row = _pair_row(dict(common, flops_per_image=flops_train), "train", f"training b{batch}, bf16", batch,
                        keras_t, torch_t)
        if ("train", name) in GOALS and args.curve_steps and not args.quick:
            row["loss_curve"] = loss_curve_check(name, args, batch, workdir)
        rows.append(row)
    for row in rows:
        _finish_row(row, peak, args.quick)
    return rows


def loss_curve_check(name, args, batch, workdir):
    """The training goal's second half: the same loss curve as PyTorch over ``--curve-steps`` steps of
    real faces (``benchmarks/loss_curve.py``); a summary dict, ``{"skipped": why}`` when it cannot run."""
    import loss_curve

    if not os.path.isdir(os.path.join(args.curve_data, "images")):
        return {"skipped": f"celeba299 not found at {args.curve_data!r} (--curve-data)"}
    result = loss_curve.run(name, args.curve_steps, batch, "bfloat16", args.curve_data,
                            timeout=args.child_timeout * 4, workdir=workdir)
    keep = ("steps", "precision", "lr", "num_classes", "max_rel_diff", "mean_rel_diff", "worst_step",
            "tolerance", "agree", "keras_losses", "torch_losses")
    return {key: result[key] for key in keep}


def _check_cosine(row, key, reference, result, output):
    """``row[key]``: the min cosine of ``result[output]`` (a child's outputs on the check inputs) to
    ``reference``, when the child returned them."""
    if output in result:
        from keras_fr.conversion import compare_outputs

        _, cos = compare_outputs(reference, np.asarray(result[output]))
        row[key] = float(np.min(cos))


def _pair_row(common, kind, label, batch, keras_r, torch_r):
    row = dict(common, kind=kind, row=label, batch=batch)
    for prefix, result in (("keras", keras_r), ("torch", torch_r)):
        if "failed" in result:
            row[f"{prefix}_failed"] = result["failed"]
            continue
        row[f"{prefix}_img_s"] = result["img_s"]
        row[f"{prefix}_mode"] = result["mode"]
        row[f"{prefix}_maxrss_mb"] = result["maxrss_mb"]
        if "final_loss" in result:
            row[f"{prefix}_final_loss"] = result["final_loss"]
        if "img_s_by_mode" in result:
            row[f"{prefix}_img_s_by_mode"] = result["img_s_by_mode"]
    return row


def _finish_row(row, peak, quick):
    k, t = row.get("keras_img_s"), row.get("torch_img_s")
    row["ratio"] = k / t if k and t else None
    for prefix in ("keras", "torch"):
        if row.get(f"{prefix}_img_s"):
            row[f"{prefix}_gflops"] = row[f"{prefix}_img_s"] * row["flops_per_image"] / 1e9
    bf16 = row["kind"] in ("train", "batch_keras_bf16")
    row["peak_gflops"] = peak["bfloat16_gflops" if bf16 else "float32_gflops"]
    model = QUICK_STAND_IN.get(row["model"], row["model"]) if quick else row["model"]
    goal = GOALS.get((row["kind"], model))
    row["goal"] = goal
    if goal is None:
        row["goal_status"] = "-"
    elif row["ratio"] is None:
        row["goal_status"] = "not measured"
    else:
        row["goal_status"] = "met" if row["ratio"] >= goal else "not met"
    if goal is not None and row["kind"] == "train" and not quick:
        # Speed alone does not meet the training goal: the loss curve must match PyTorch's too.
        curve = row.get("loss_curve") or {"skipped": "not run (--curve-steps 0)"}
        if not curve.get("agree"):
            row["goal_status"] = "not met"


def _fmt(value, spec):
    """``value`` formatted with ``spec`` (e.g. "12.2f"), or "-" right-aligned to the same width."""
    if isinstance(value, (int, float)) and value == value:
        return format(value, spec)
    return "-".rjust(int(spec.split(".")[0]))


def print_table(rows, peak, quick):
    print()
    print(_bench.cpu_line())
    print(f"CPU peak (matmul {peak['n']}x{peak['n']}): float32 {peak['float32_gflops']:.1f} GFLOP/s "
          f"(NumPy {peak['float32_numpy_gflops']:.1f}, torch {peak['float32_torch_gflops']:.1f}); "
          f"bfloat16 {peak['bfloat16_gflops']:.1f} GFLOP/s (torch)")
    if quick:
        print("--quick: small models and batches, one iteration: proves the script runs; the goals shown "
              "are their families', not results.")
    header = (f"{'model':<16}{'row':<26}{'keras img/s':>12}{'torch img/s':>12}{'ratio':>7}{'goal':>6}"
              f"{'status':>14}{'keras GF/s':>11}{'torch GF/s':>11}{'peak GF/s':>10}{'keras MB':>9}"
              f"{'torch MB':>9}  keras path")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<16}{r['row']:<26}{_fmt(r.get('keras_img_s'), '12.2f')}"
              f"{_fmt(r.get('torch_img_s'), '12.2f')}{_fmt(r.get('ratio'), '7.2f')}"
              f"{_fmt(r.get('goal'), '6.1f')}{r['goal_status']:>14}{_fmt(r.get('keras_gflops'), '11.1f')}"
              f"{_fmt(r.get('torch_gflops'), '11.1f')}{_fmt(r.get('peak_gflops'), '10.1f')}"
              f"{_fmt(r.get('keras_maxrss_mb'), '9.0f')}{_fmt(r.get('torch_maxrss_mb'), '9.0f')}"
              f"  {r.get('keras_mode', r.get('keras_failed', '-'))}")
        for prefix in ("keras", "torch"):
            if f"{prefix}_failed" in r:
                print(f"    {prefix} failed: {r[prefix + '_failed']}")
    for r in rows:
        if "keras_img_s_by_mode" in r:
            modes = ", ".join(f"{mode} {value:.2f}" for mode, value in r["keras_img_s_by_mode"].items())
            print(f"{r['model']} {r['row']}: keras img/s by mode: {modes}")
    for r in rows:
        if r.get("runtime_choice_timing"):
            times = ", ".join(f"{kind} {'failed' if sec is None else f'{sec * 1000:.1f} ms'}"
                              for kind, sec in r["runtime_choice_timing"].items() if kind != "batch")
            print(f"{r['model']}: the default runtime chose {r['keras_mode'].split()[1]} from its batch-1 "
                  f"timing when the files were built: {times}")
    for r in rows:
        if "copy_min_cosine_to_model" in r:
            print(f"{r['model']}: the inference copy's outputs against the model's (float32): min cosine "
                  f"{r['copy_min_cosine_to_model']:.8f} (4 check inputs)")
        if "bf16_min_cosine_to_float32" in r:
            print(f"{r['model']}: bfloat16 Keras outputs against float32 Keras: min cosine "
                  f"{r['bf16_min_cosine_to_float32']:.6f} (4 check inputs)")
        if "bf16_copy_min_cosine_to_float32" in r:
            print(f"{r['model']}: bfloat16 inference copy's outputs against float32 Keras: min cosine "
                  f"{r['bf16_copy_min_cosine_to_float32']:.6f} (4 check inputs)")
        curve = r.get("loss_curve")
        if curve and "skipped" in curve:
            print(f"{r['model']}: loss curve against PyTorch not measured: {curve['skipped']}")
        elif curve:
            print(f"{r['model']}: loss curve against PyTorch over {curve['steps']} steps ({curve['precision']}, "
                  f"celeba299 train faces, {curve['num_classes']} classes): max relative difference "
                  f"{curve['max_rel_diff']:.4f} at step {curve['worst_step']} (tolerance {curve['tolerance']}): "
                  f"{'same curve' if curve['agree'] else 'the curves DIFFER'}; loss {curve['torch_losses'][0]:.2f} "
                  f"-> {curve['torch_losses'][-1]:.2f} (PyTorch), {curve['keras_losses'][0]:.2f} -> "
                  f"{curve['keras_losses'][-1]:.2f} (keras_fr)")
    print()
    for r in {r["model"]: r for r in rows}.values():
        print(f"{r['model']}: keras vs PyTorch outputs max |diff| {r['max_abs_diff']:.2e}, min cosine "
              f"{r['min_cosine']:.6f}; GFLOPs per image {r['forward_flops'] / 1e9:.2f} (forward)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="check that it runs: IResNet18, batch 4, one timed iteration and step")
    parser.add_argument("--models", nargs="+", default=None, choices=CHOICES,
                        help=f"models (default: {' '.join(MODELS)}; --quick: {' '.join(QUICK_MODELS)})")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed iterations, best of (default 5 at batch 1, 3 at batch 32)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls/steps first (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 3)")
    parser.add_argument("--num-classes", type=int, default=1000, help="identities in the ArcFace head")
    parser.add_argument("--skip-training", action="store_true", help="leave out the training rows")
    parser.add_argument("--skip-bf16", action="store_true", help="leave out the bfloat16 inference rows")
    parser.add_argument("--curve-steps", type=int, default=50,
                        help="steps of the loss-curve comparison for the training goal (0: skip it)")
    parser.add_argument("--curve-data", default=os.path.join(_bench.ROOT, os.pardir, "shared", "data", "celeba299"),
                        help="the celeba299 folder whose train identities the loss-curve check trains on")
    parser.add_argument("--cache-dir", default=None,
                        help="runtime-file cache (default: a temporary folder, so each run builds "
                        "and checks its files afresh)")
    parser.add_argument("--child-timeout", type=int, default=1800, help="seconds per child measurement")
    parser.add_argument("--output", default=str(RESULTS), help="JSON results file")
    parser.add_argument("--no-jit", action="store_true",
                        help="time Keras eagerly only (skips the XLA compilation of each batch size)")
    parser.add_argument("--no-inference-copy", action="store_true",
                        help="batch rows: time the model only, not its inference copy (inference_model)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = args.models or list(QUICK_MODELS if args.quick else MODELS)
    args.batch = 4 if args.quick else 32
    args.iters = args.iters or (1 if args.quick else None)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.steps = args.steps or (1 if args.quick else 3)
    args.threads = _threads()
    if args.curve_steps < 0:
        parser.error(f"--curve-steps must be >= 0; got {args.curve_steps}")
    _bench.check_counts(parser, args, positive=("iters", "steps", "num_classes", "child_timeout"),
                        non_negative=("warmup",))
    return args


def main(argv=None):
    args = parse_args(argv)
    if _bench.answer_child(args, _child):
        return 0
    import keras
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    peak = matmul_peak(1024 if args.quick else 2048, 0.3 if args.quick else 2.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare_reference-") as workdir:
        if args.cache_dir is None:
            args.cache_dir = os.path.join(workdir, "runtime-cache")
        for name in args.models:
            rows += bench_model(name, args, workdir, peak)
            print(f"{name}: done ({time.perf_counter() - started:.0f} s so far)", flush=True)
    print_table(rows, peak, args.quick)
    result = {
        **_bench.result_header("compare_reference", argv),
        "quick": args.quick,
        "threads": args.threads,
        "torch": torch.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "settings": {k: getattr(args, k) for k in ("batch", "iters", "warmup", "steps", "num_classes",
                                                   "no_jit", "no_inference_copy", "skip_training", "skip_bf16",
                                                   "curve_steps")},
        "peak": peak,
        "goals": [{"kind": k, "model": m, "min_ratio": v} for (k, m), v in GOALS.items()],
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    write_json(args.output, result)
    print(f"wrote {args.output} ({result['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
