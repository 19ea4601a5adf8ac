"""The same training run in keras_fr and in PyTorch: do the loss curves agree? (issue 17).

Issue 17's training goal asks for ``model.fit`` to be as fast as the PyTorch reference *with the same
loss curve over 50 steps on the same data*. This script runs that check:

- the PyTorch reference network (``keras_fr.torch_reference.build_reference``) gets random weights
  (``randomize_``, seed 0); its state dict is converted into the keras_fr model (strict), so both
  start from the same weights; the ArcFace class centres are one seeded random matrix, given to both;
- the data are real faces: ``--steps`` batches of ``--batch`` aligned 112x112 crops of the celeba299
  *train* identities (``../shared/data/celeba299``; never an evaluation set), in one fixed,
  seeded order, the label being the identity's index;
- keras_fr: ``FaceTrainingModel`` + ``ArcFaceLoss`` (s=64, m=0.5, insightface's straight-through
  margin gradient), ``SGDWithL2`` (momentum 0.9, coupled weight decay 5e-4), ``model.fit`` over the
  batches in order, under the ``mixed_bfloat16`` policy (``--precision float32`` for the float32 pair);
- PyTorch: the same step as the reference repository trains it on a CPU at its best: the backbone
  under ``torch.autocast("cpu", bfloat16)`` with channels-last tensors, the ArcFace head in float32
  (as keras_fr's ``MarginHead`` stays float32 under mixed precision), ``torch.optim.SGD`` (momentum
  0.9, ``weight_decay`` 5e-4, which is the same update as ``SGDWithL2`` at a constant learning rate).

Each side runs in its own child process (the two thread pools never share the cores). The loss of
every step is compared: the curves agree when every step's loss is within ``--tolerance`` (relative,
default 2% for bfloat16, about 5 units in the last place of bfloat16's 8-bit significand: a rounding
difference, not a different computation) of the reference's, and ``--float32-tolerance`` (0.5%) for
the float32 pair.

Keras logs the running mean of the epoch's loss after each batch; the per-step loss is recovered
from consecutive means (``k * mean_k - (k - 1) * mean_{k-1}``).

Usage:
    python benchmarks/loss_curve.py                       # 50 steps, batch 32, bfloat16, MSConvResNet50
    python benchmarks/loss_curve.py --precision float32   # the float32 pair
    python benchmarks/loss_curve.py --model iresnet18 --steps 3 --batch 4   # check that it runs
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import write_json  # noqa: E402

import numpy as np  # noqa: E402

IMAGE_SIZE = 112
DEFAULT_DATA = os.path.join(_bench.ROOT, os.pardir, "shared", "data", "celeba299")
RESULTS = os.path.join(_bench.RESULTS, "loss_curve.json")
SCALE, MARGIN, LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 64.0, 0.5, 0.02, 0.9, 5e-4


# --------------------------------------------------------------------------------------------------
# Data: real faces of the celeba299 train identities, in one fixed order
# --------------------------------------------------------------------------------------------------


def load_batches(data_dir, steps, batch, seed=0):
    """``(images (steps*batch, 112, 112, 3) float32 in [-1, 1], labels int32, num_classes)``.

    The celeba299 train split's images, shuffled once with ``seed``; the label is the identity's index
    among the sorted train identities (all of them are classes, so the head has one centre each).
    """
    from PIL import Image

    from keras_fr.data.folder import split_identities

    identities = split_identities(os.path.join(data_dir, "split.csv"), "train")
    items = []
    for label, name in enumerate(identities):
        folder = os.path.join(data_dir, "images", name)
        items += [(os.path.join(folder, f), label) for f in sorted(os.listdir(folder))]
    need = steps * batch
    if len(items) < need:
        raise ValueError(f"--steps x --batch = {need} images, but {data_dir} has {len(items)} train images.")
    order = np.random.default_rng(seed).permutation(len(items))[:need]
    images = np.empty((need, IMAGE_SIZE, IMAGE_SIZE, 3), "float32")
    labels = np.empty(need, "int32")
    for i, j in enumerate(order):
        path, labels[i] = items[j]
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)), "float32")
        images[i] = pixels / 127.5 - 1.0
    return images, labels, len(identities)


# --------------------------------------------------------------------------------------------------
# One side per child process
# --------------------------------------------------------------------------------------------------


def torch_arcface_loss(emb, weight, labels, scale=SCALE, margin=MARGIN):
    """insightface's ArcFace (combined margin, m1=1, m3=0): the margin is added under ``no_grad``, so the
    gradient with respect to the cosines is ``s * (softmax - onehot)``, as keras_fr's default."""
    import torch
    import torch.nn.functional as F

    cos = F.linear(F.normalize(emb.float()), F.normalize(weight)).clamp(-1.0, 1.0)
    target = cos.gather(1, labels[:, None])
    with torch.no_grad():
        theta = torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7))
        shift = torch.cos(theta + margin) - target
    logits = cos + torch.zeros_like(cos).scatter(1, labels[:, None], shift)
    return F.cross_entropy(logits * scale, labels.long())


def run_torch(job):
    import torch

    from keras_fr.torch_reference import build_reference, randomize_

    torch.set_num_threads(job["threads"])
    data = np.load(job["data"])
    net = randomize_(build_reference(job["model"]), input_size=IMAGE_SIZE, seed=0).train()
    head = torch.nn.Parameter(torch.from_numpy(np.load(job["head"]).T.copy()))  # (classes, dim)
    bf16 = job["precision"] == "bfloat16"
    if bf16:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(list(net.parameters()) + [head], lr=job["lr"], momentum=MOMENTUM,
                          weight_decay=WEIGHT_DECAY)
    images, labels = data["images"], torch.from_numpy(data["labels"])
    losses, stamps = [], [time.perf_counter()]
    for step in range(job["steps"]):
        rows = slice(step * job["batch"], (step + 1) * job["batch"])
        x = torch.from_numpy(images[rows].transpose(0, 3, 1, 2).copy())
        if bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = net(x)
        with torch.autocast("cpu", enabled=False):
            loss = torch_arcface_loss(emb, head, labels[rows])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        stamps.append(time.perf_counter())
    return {"losses": losses, "step_seconds": np.diff(stamps).tolist()}


def per_step_losses(running_means):
    """Each step's own loss from the running means Keras logs after each batch of an epoch."""
    means = np.asarray(running_means, "float64")
    totals = np.arange(1, means.size + 1) * means
    return np.diff(totals, prepend=0.0)


def run_keras(job):
    import keras
    import tensorflow as tf

    from keras_fr.applications import get_model
    from keras_fr.training import FaceTrainingModel
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.recipes import SGDWithL2

    if job["precision"] == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    data = np.load(job["data"])
    images, labels = data["images"], data["labels"]
    head = np.load(job["head"])  # (dim, classes), MarginHead's layout
    model = FaceTrainingModel(get_model(job["model"], weights=job["weights"]), head.shape[1])
    model(images[:1])  # builds the head
    model.margin_head.kernel.assign(head)
    model.compile(optimizer=SGDWithL2(job["lr"], momentum=MOMENTUM, l2=WEIGHT_DECAY),
                  loss=ArcFaceLoss(scale=SCALE, margin=MARGIN))
    means, stamps = [], [time.perf_counter()]

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            means.append(float(logs["loss"]))
            stamps.append(time.perf_counter())

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(job["batch"])
    model.fit(dataset, epochs=1, shuffle=False, callbacks=[Record()], verbose=0)
    return {"losses": per_step_losses(means).tolist(), "step_seconds": np.diff(stamps).tolist()}


def run_child(job, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:]) or "no output"
        raise RuntimeError(f"the {job['framework']} side failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------------


def compare_curves(keras_losses, torch_losses, tolerance):
    """Per-step relative differences and whether every step is within ``tolerance`` of PyTorch's."""
    ours, ref = np.asarray(keras_losses, "float64"), np.asarray(torch_losses, "float64")
    if ours.shape != ref.shape or ours.size == 0:
        raise ValueError(f"curves of different lengths: {ours.size} and {ref.size} steps.")
    rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-12)
    return {"max_rel_diff": float(rel.max()), "mean_rel_diff": float(rel.mean()),
            "worst_step": int(rel.argmax()) + 1, "tolerance": tolerance,
            "agree": bool(np.all(np.isfinite(ours)) and np.all(np.isfinite(ref)) and rel.max() <= tolerance)}


def run(model="msconv_resnet50", steps=50, batch=32, precision="bfloat16", data_dir=DEFAULT_DATA, lr=LEARNING_RATE,
        tolerance=None, threads=None, timeout=7200, workdir=None):
    """Run both sides and compare; the result dict (also what ``compare_reference.py`` records)."""
    import torch

    from keras_fr.conversion import build_keras_model, infer_architecture, load_state_dict
    from keras_fr.torch_reference import build_reference, randomize_

    if tolerance is None:
        tolerance = 0.02 if precision == "bfloat16" else 0.005
    threads = threads or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        images, labels, classes = load_batches(data_dir, steps, batch)
        data = os.path.join(tmp, "data.npz")
        np.savez(data, images=images, labels=labels)
        del images
        net = randomize_(build_reference(model), input_size=IMAGE_SIZE, seed=0)
        state = {k: v.numpy() for k, v in net.state_dict().items()}
        with torch.no_grad():
            dim = int(net.eval()(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)).shape[-1])
        keras_model = build_keras_model(infer_architecture(state))
        load_state_dict(keras_model, state)
        weights = os.path.join(tmp, "start.weights.h5")
        keras_model.save_weights(weights)
        del keras_model, net, state
        head = os.path.join(tmp, "head.npy")
        np.save(head, (np.random.default_rng(1).standard_normal((dim, classes)) * 0.01).astype("float32"))
        job = {"model": model, "steps": steps, "batch": batch, "precision": precision, "lr": lr,
               "threads": threads, "data": data, "head": head, "weights": weights}
        ours = run_child(dict(job, framework="keras"), timeout)
        ref = run_child(dict(job, framework="torch"), timeout)
    result = {"model": model, "steps": steps, "batch": batch, "precision": precision, "lr": lr,
              "num_classes": classes, "keras_losses": ours["losses"], "torch_losses": ref["losses"],
              "keras_step_seconds": ours["step_seconds"], "torch_step_seconds": ref["step_seconds"]}
    result.update(compare_curves(ours["losses"], ref["losses"], tolerance))
    return result


def print_result(result):
    ours, ref = result["keras_losses"], result["torch_losses"]
    print(f"{result['model']}, {result['steps']} steps of batch {result['batch']}, {result['precision']}, "
          f"lr {result['lr']}, {result['num_classes']} classes (celeba299 train identities)")
    print(f"{'step':>5} {'keras_fr loss':>14} {'PyTorch loss':>13} {'rel diff':>9}")
    for i in range(len(ours)):
        if i < 5 or (i + 1) % 5 == 0:
            print(f"{i + 1:>5} {ours[i]:>14.4f} {ref[i]:>13.4f} {abs(ours[i] - ref[i]) / abs(ref[i]):>9.4f}")
    print(f"max relative difference {result['max_rel_diff']:.4f} (step {result['worst_step']}), mean "
          f"{result['mean_rel_diff']:.4f}; tolerance {result['tolerance']}: "
          f"{'the curves agree' if result['agree'] else 'the curves DIFFER'}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="msconv_resnet50")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE, help="SGD learning rate (constant)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest relative difference of a step's loss (default 0.02 bfloat16, 0.005 float32)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="the celeba299 folder")
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        out = run_torch(job) if job["framework"] == "torch" else run_keras(job)
        print(json.dumps(out))
        return 0
    if not os.path.isdir(os.path.join(args.data, "images")):
        print(f"celeba299 not found at {args.data!r} (--data): nothing to compare.", file=sys.stderr)
        return 2
    print(_bench.cpu_line(), flush=True)
    start = time.perf_counter()
    result = run(args.model, args.steps, args.batch, args.precision, args.data, args.lr, args.tolerance)
    result["seconds"] = time.perf_counter() - start
    print_result(result)
    write_json(args.output, dict(_bench.result_header("loss_curve"), **result))
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
