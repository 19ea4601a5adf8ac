"""Distil dlib's 128-d face descriptor into keras_fr's MSConvResNet50 (issue 14), in PyTorch.

Trains the project's PyTorch reference network ``MSNet(depth=50)`` (``torch_reference/msconv_torch.py``,
the layout ``keras-fr convert`` maps to Keras with a parity check) so that a learned linear projection
512 -> 128 of its embedding points the same way as the L2-normalised dlib teacher descriptor.
The projection is only a training device: the product is the 512-d network, converted afterwards.

Why PyTorch and not Keras: on this project's CPU-only machines, PyTorch trains MSNet-50 at about
18-27 img/s at 112x112 with bfloat16 autocast and channels_last memory format, against about
2.5 img/s in float32; the Keras/TensorFlow path has no comparable CPU speed-up. A run of tens of
epochs is only feasible that way.

Data (read-only, never copied into the repository):
- ``faces_distill`` (UTKFace, Glint sample, Talgin; 19,728 faces with teacher descriptors). By default
  the rows whose person is also a CFP identity (non-empty ``cfp_identity`` in ``meta.csv``) are
  dropped, so that a later CFP-FP figure is not contaminated by identity overlap
  (``--include-cfp-identities`` keeps them).
- ``celeba299`` ``train`` identities only. ``--val-identities`` (24) of them, drawn with the seed,
  are held out as the validation set that chooses checkpoints. celeba299 ``test`` identities,
  lfw112 and cfp_fp are never read here.

Losses: ``1 - cos(P f(x), t)`` with ``t`` the normalised teacher descriptor, centred first on the
mean descriptor of the training rows (``center_targets``; ``--no-center-teacher`` keeps them raw), plus
``--relational-weight`` times the mean squared difference between the batch cosine-similarity
matrices of the student (the 512-d embedding by default) and of the teacher (off-diagonal entries).

Augmentation: random horizontal flip with the *same* teacher target (dlib's descriptor of a mirrored
face is close to the original's: the network was trained with flips and faces are nearly
symmetric, so the target error is small next to the distillation error), plus a small random zoom
(scale 0.9-1) and shift (about 2% of the width), all on the batch tensor with one ``grid_sample``.

Speed: progressive resizing. The network ends in global average pooling, so it accepts any input
size; most epochs run at 64x64 and a final phase at 112x112 (default ``--phases 64:18,112:2``). Images are
decoded once into uint8 ``.npy`` caches under ``--cache-dir`` and memory-mapped afterwards.

Exact resumption: everything that varies with time is a function of the global step: the epoch
and the position in it (the permutation of epoch ``e`` is drawn from ``(seed, e)``), the phase
resolution, the learning rate (linear warm-up, then cosine decay over the whole schedule) and the
augmentation (a generator seeded from ``(seed, step)``). The checkpoint ``<cache>/ckpt/last.pt``
(float32, written atomically every ``--ckpt-minutes`` and at every epoch end, and on SIGTERM/SIGINT)
holds the model, projection, AdamW state, step and RNG states; ``--resume`` continues bit for bit.
``<cache>/ckpt/best.pt`` keeps the weights with the best validation mean teacher cosine.

``--export-repo-checkpoint PATH`` refreshes, at every checkpoint, a compact copy for another machine:
weights in float16 (BatchNorm statistics in float32), AdamW's second moment as float16 square roots,
its step counts and the progress counters; the first moment is dropped (it rebuilds within ~20 steps
with beta1 = 0.9), which keeps the file near 126 MB for MSNet-50. ``--resume-from-repo PATH``
continues from it (same data order and schedule, not bit-identical). ``--export-only`` writes it
from ``last.pt`` and exits.

Learning curve: one row per checkpoint in ``docs/open_distill/learning_curve.csv`` and a redrawn
``learning_curve.png``.

Example (the issue-14 run):

    nohup nice -n 19 .venv/bin/python scripts/train_open_distill.py --resume \\
        --export-repo-checkpoint weights/_in_progress/msconv_resnet50_open_distill.resume.pt \\
        > /work/cache/open_distill/run.log 2>&1 &
"""

import argparse
import copy
import csv
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from keras_fr.torch_reference.msconv_torch import MSNet  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_CACHE = Path("/work/cache/open_distill")
DEFAULT_DOCS = REPO / "docs" / "open_distill"
REPO_CKPT = "weights/_in_progress/msconv_resnet50_open_distill.resume.pt"
CSV_FIELDS = [
    "step", "epoch", "resolution", "images_seen", "train_loss", "val_teacher_cos",
    "val_pair_acc", "wall_s",
]


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _decode_cache(paths, out_path, size=112):
    """Decode JPEGs once into a uint8 [N, size, size, 3] ``.npy`` (atomic), then memory-map it."""
    out_path = Path(out_path)
    list_path = out_path.with_suffix(".json")
    names = [str(p) for p in paths]
    if out_path.exists() and list_path.exists() and json.loads(list_path.read_text()) == names:
        return np.load(out_path, mmap_mode="r")
    from PIL import Image

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(names), size, size, 3))
    t0 = time.time()
    for i, p in enumerate(names):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr[i] = np.asarray(im)
    arr.flush()
    del arr
    os.replace(tmp, out_path)
    list_path.write_text(json.dumps(names))
    print(f"decoded {len(names)} images into {out_path} in {time.time() - t0:.0f} s", flush=True)
    return np.load(out_path, mmap_mode="r")


def load_data(data_dir, cache_dir, exclude_cfp=True, val_identities=24, seed=0):
    """Training and validation arrays. Returns a dict with ``train_images`` (uint8 memmap-backed),
    ``train_targets`` (float32 [N, 128], raw teacher), ``train_index`` (rows into the image array),
    ``val_images``, ``val_targets``, ``val_labels`` and a ``summary`` dict."""
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    fd, cb = data_dir / "faces_distill", data_dir / "celeba299"
    for d in (fd, cb):
        if not d.is_dir():
            raise SystemExit(f"data folder {d} not found; pass --data-dir")

    index = _read_csv(fd / "index.csv")
    meta = _read_csv(fd / "meta.csv")
    assert [int(r["row"]) for r in index] == list(range(len(index)))
    assert [r["row"] for r in meta] == [r["row"] for r in index]
    fd_teacher = np.load(fd / "teacher_dlib128.npy").astype(np.float32)
    assert fd_teacher.shape == (len(index), 128)
    fd_images = _decode_cache([fd / "images" / r["relative_path"] for r in index],
                              cache_dir / "faces_distill_u8.npy")
    keep_fd = np.array([not (exclude_cfp and m["cfp_identity"].strip()) for m in meta])

    split = {r["identity"]: r["split"] for r in _read_csv(cb / "split.csv")}
    train_ids = sorted(i for i, s in split.items() if s == "train")
    rng = np.random.default_rng(seed)
    val_ids = set(rng.choice(train_ids, size=val_identities, replace=False).tolist()) if val_identities else set()
    tindex = [r for r in _read_csv(cb / "teacher_index.csv") if split.get(r["identity"]) == "train"]
    cb_teacher_all = np.load(cb / "teacher_dlib128.npy").astype(np.float32)
    cb_teacher = cb_teacher_all[[int(r["row"]) for r in tindex]]
    cb_images = _decode_cache([cb / "images" / r["relative_path"] for r in tindex],
                              cache_dir / "celeba299_train_u8.npy")
    is_val = np.array([r["identity"] in val_ids for r in tindex])

    # One uint8 array would need a copy; keep two memmaps and an index (source, row).
    train_src = [(0, i) for i in np.flatnonzero(keep_fd)] + [(1, i) for i in np.flatnonzero(~is_val)]
    summary = {
        "faces_distill_rows": int(keep_fd.sum()),
        "faces_distill_dropped_cfp": int((~keep_fd).sum()),
        "celeba_train_rows": int((~is_val).sum()),
        "celeba_train_identities": len(train_ids) - len(val_ids),
        "val_identities": sorted(val_ids),
        "val_rows": int(is_val.sum()),
    }
    return {
        "sources": [fd_images, cb_images],
        "targets": [fd_teacher, cb_teacher],
        "train_src": np.array(train_src, dtype=np.int64).reshape(-1, 2),
        "val_images": np.asarray(cb_images[np.flatnonzero(is_val)]),
        "val_targets": cb_teacher[is_val],
        "val_labels": np.array([r["identity"] for r, v in zip(tindex, is_val) if v]),
        "summary": summary,
    }


def center_targets(data):
    """Subtract the mean teacher descriptor of the training rows from every target (train and val).

    dlib's descriptors share a large common component (the cosine of two different people's
    descriptors is about 0.85), so after L2 normalisation the cosine loss and the batch similarity
    matrix would be dominated by that component. Centred, different people sit near cosine 0 and the
    targets carry only what tells faces apart. The mean is a deterministic function of the data.
    """
    rows = data["train_src"]
    total = np.zeros(data["targets"][0].shape[1], np.float64)
    for s, t in enumerate(data["targets"]):
        picked = rows[rows[:, 0] == s, 1]
        total += t[picked].astype(np.float64).sum(axis=0)
    mean = (total / len(rows)).astype(np.float32)
    out = dict(data)
    out["targets"] = [t - mean for t in data["targets"]]
    out["val_targets"] = data["val_targets"] - mean
    out["teacher_mean_norm"] = float(np.linalg.norm(mean))
    return out


class ArrayData:
    """Random access to training rows spread over several uint8 arrays (memory-maps)."""

    def __init__(self, sources, targets, src):
        self.sources, self.targets, self.src = sources, targets, np.asarray(src).reshape(-1, 2)

    def __len__(self):
        return len(self.src)

    def batch(self, rows):
        pairs = self.src[rows]
        images = np.stack([self.sources[s][i] for s, i in pairs])
        targets = np.stack([self.targets[s][i] for s, i in pairs])
        return images, targets


# ----------------------------------------------------------------------------------------------
# Schedule: every quantity is a function of the global step
# ----------------------------------------------------------------------------------------------
def parse_phases(text):
    """``"64:40,112:5"`` -> ``[(64, 40), (112, 5)]`` (resolution, epochs)."""
    phases = []
    for part in text.split(","):
        res, epochs = part.split(":")
        phases.append((int(res), int(epochs)))
    if not phases or any(r < 32 or e < 1 for r, e in phases):
        raise ValueError(f"--phases: expected 'RES:EPOCHS,...' with RES >= 32, EPOCHS >= 1; got {text!r}")
    return phases


def resolution_at(epoch, phases):
    for res, epochs in phases:
        if epoch < epochs:
            return res
        epoch -= epochs
    return phases[-1][0]


def lr_at(step, total_steps, base_lr, warmup_steps, min_ratio):
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def epoch_permutation(seed, epoch, n):
    return np.random.default_rng([seed, epoch]).permutation(n)


# ----------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------
def to_input(images_u8, resolution):
    """uint8 NHWC in [0, 255] -> float32 NCHW in [-1, 1] (keras_fr.preprocess_input), resized."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


def augment(x, generator, zoom=0.1, shift=0.04):
    """Random flip, zoom-in by up to ``zoom`` and shift by up to ``shift`` (normalised units)."""
    n = x.shape[0]
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    scale = 1.0 - zoom * torch.rand(n, generator=generator)
    tx, ty = ((torch.rand(2, n, generator=generator) * 2 - 1) * shift).unbind(0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def distill_losses(embedding, projected, teacher, relational_weight, relational_space="embedding"):
    """Returns (total, cosine term, relational term), all float32 scalars."""
    t = F.normalize(teacher.float(), dim=1)
    p = F.normalize(projected.float(), dim=1)
    cos_term = (1.0 - (p * t).sum(dim=1)).mean()
    rel_term = torch.zeros((), dtype=torch.float32)
    if relational_weight:
        s = F.normalize(embedding.float(), dim=1) if relational_space == "embedding" else p
        n = s.shape[0]
        off = ~torch.eye(n, dtype=torch.bool)
        rel_term = ((s @ s.T - t @ t.T)[off] ** 2).mean()
    return cos_term + relational_weight * rel_term, cos_term, rel_term


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
def best_balanced_accuracy(same_scores, diff_scores):
    """Best-threshold accuracy with both classes weighted equally (0.5 * (TPR + TNR))."""
    scores = np.concatenate([same_scores, diff_scores])
    labels = np.concatenate([np.ones(len(same_scores)), np.zeros(len(diff_scores))])
    order = np.argsort(-scores, kind="stable")
    labels = labels[order]
    tp = np.concatenate([[0], np.cumsum(labels)])  # accept the top k as "same"
    fp = np.concatenate([[0], np.cumsum(1 - labels)])
    tpr = tp / len(same_scores)
    tnr = 1 - fp / len(diff_scores)
    return float(np.max(0.5 * (tpr + tnr)))


def pair_accuracy(embeddings, labels):
    """All same-identity and all different-identity pairs, cosine score, best threshold."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = e @ e.T
    iu = np.triu_indices(len(e), k=1)
    same = labels[iu[0]] == labels[iu[1]]
    return best_balanced_accuracy(sims[iu][same], sims[iu][~same])


@torch.no_grad()
def embed(model, proj, images_u8, resolution, batch_size=64, bf16=True):
    model.eval()
    outs, projs = [], []
    for i in range(0, len(images_u8), batch_size):
        x = to_input(images_u8[i:i + batch_size], resolution).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            f = model(x)
            p = proj(f)
        outs.append(f.float())
        projs.append(p.float())
    return torch.cat(outs).numpy(), torch.cat(projs).numpy()


def validate(model, proj, val, resolution, bf16=True):
    f, p = embed(model, proj, val["images"], resolution, bf16=bf16)
    t = val["targets"] / np.linalg.norm(val["targets"], axis=1, keepdims=True)
    cos = float(np.mean(np.sum(p / np.linalg.norm(p, axis=1, keepdims=True) * t, axis=1)))
    return cos, pair_accuracy(f, val["labels"])


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def rng_states():
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }


def set_rng_states(state):
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def atomic_save(obj, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_repo_checkpoint(ckpt, out_path):
    """Compact copy of a full checkpoint dict (see the module docstring for what is kept)."""
    def half(sd):
        return {k: (v.half() if v.is_floating_point() and "running_" not in k else v) for k, v in sd.items()}

    opt = ckpt["optimizer"]
    state = {int(k): {"step": v["step"], "exp_avg_sq_sqrt": v["exp_avg_sq"].sqrt().half()}
             for k, v in opt["state"].items()}
    compact = {k: v for k, v in ckpt.items() if k not in ("model", "proj", "optimizer")}
    compact.update(model=half(ckpt["model"]), proj=half(ckpt["proj"]),
                   optimizer_compact={"state": state, "param_groups": opt["param_groups"]},
                   format="open_distill.compact.v1")
    atomic_save(compact, out_path)


def expand_repo_checkpoint(compact, optimizer):
    """Inverse of :func:`export_repo_checkpoint` for the optimizer; first moments restart at 0."""
    sd = optimizer.state_dict()
    state = {}
    for k, v in compact["optimizer_compact"]["state"].items():
        sq = v["exp_avg_sq_sqrt"].float() ** 2
        state[int(k)] = {"step": v["step"], "exp_avg": torch.zeros_like(sq), "exp_avg_sq": sq}
    sd["state"] = state
    sd["param_groups"] = compact["optimizer_compact"]["param_groups"]
    optimizer.load_state_dict(sd)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def build(cfg):
    torch.manual_seed(cfg["seed"])
    model = MSNet(depth=cfg["depth"]).to(memory_format=torch.channels_last)
    proj = nn.Linear(512, cfg["teacher_dim"])
    decay, no_decay = [], []
    for m in (model, proj):
        for p in m.parameters():
            (decay if p.ndim > 1 else no_decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(0.9, 0.999),
    )
    return model, proj, optimizer


CONFIG_KEYS = ("seed", "depth", "teacher_dim", "lr", "weight_decay", "warmup_steps", "min_lr_ratio",
               "batch_size", "phases", "relational_weight", "relational_space", "zoom", "shift", "bf16",
               "center_teacher")
#: Settings added after checkpoints were first written: the value such a checkpoint was made with.
#: (Every checkpoint written before ``center_teacher`` was recorded comes from the centred run.)
CONFIG_DEFAULTS = {"center_teacher": True}


class DistillRun:
    """One training run. ``data``: an :class:`ArrayData`; ``val``: dict(images, targets, labels) or
    None; ``ckpt_dir``: where ``last.pt``/``best.pt`` live; ``docs_dir``: learning curve or None."""

    def __init__(self, cfg, data, val, ckpt_dir, docs_dir=None, ckpt_minutes=15.0, log_every=20,
                 repo_export=None, log=print):
        self.cfg = {k: cfg.get(k, CONFIG_DEFAULTS.get(k)) for k in CONFIG_KEYS}
        self.data, self.val = data, val
        self.ckpt_dir, self.docs_dir = Path(ckpt_dir), (Path(docs_dir) if docs_dir else None)
        self.ckpt_minutes, self.log_every, self.repo_export, self.log = ckpt_minutes, log_every, repo_export, log
        self.phases = parse_phases(self.cfg["phases"])
        self.steps_per_epoch = len(data) // self.cfg["batch_size"]
        if self.steps_per_epoch < 1:
            raise ValueError("fewer training rows than one batch")
        self.total_steps = self.steps_per_epoch * sum(e for _, e in self.phases)
        self.model, self.proj, self.optimizer = build(self.cfg)
        self.step, self.wall, self.best = 0, 0.0, -1.0
        self.stop_requested = False
        #: ``--reschedule``: resuming may change ``phases`` (only); each change is kept in the
        #: checkpoint as (step, old phases, new phases) so the run's history stays readable.
        self.allow_reschedule, self.schedule_changes = False, []
        #: ``--switch-precision``: resuming may change ``bf16`` (only), e.g. on a machine whose CPU has
        #: no bfloat16 units (AVX2 only: bfloat16 autocast trained MSNet-50 at 0.6 img/s at 112 px
        #: there, float32 at 7.9). Each change is kept as (step, old bf16, new bf16).
        self.allow_precision_switch, self.precision_changes = False, []

    # -- state --------------------------------------------------------------------------------
    def state(self):
        return {
            "format": "open_distill.v1", "config": self.cfg, "step": self.step,
            "epoch": self.step // self.steps_per_epoch, "position": self.step % self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "images_seen": self.step * self.cfg["batch_size"], "wall_s": self.wall, "best": self.best,
            "model": self.model.state_dict(), "proj": self.proj.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng_states(),
            "schedule_changes": self.schedule_changes, "precision_changes": self.precision_changes,
        }

    def _check_config(self, ckpt):
        ckpt["config"] = {**CONFIG_DEFAULTS, **ckpt["config"]}
        self.schedule_changes = list(ckpt.get("schedule_changes", []))
        old_phases = ckpt["config"]["phases"]
        if self.allow_reschedule and old_phases != self.cfg["phases"]:
            if self.step_of(ckpt) >= self.total_steps:
                raise SystemExit(f"--reschedule: the new phases {self.cfg['phases']!r} end at step "
                                 f"{self.total_steps}, not after the checkpoint's step {self.step_of(ckpt)}")
            self.schedule_changes.append([int(self.step_of(ckpt)), old_phases, self.cfg["phases"]])
            self.log(f"--reschedule: phases {old_phases} -> {self.cfg['phases']} at step {self.step_of(ckpt)} "
                     f"({self.total_steps} steps in all)")
            ckpt["config"] = {**ckpt["config"], "phases": self.cfg["phases"]}
        self.precision_changes = list(ckpt.get("precision_changes", []))
        old_bf16 = ckpt["config"]["bf16"]
        if self.allow_precision_switch and old_bf16 != self.cfg["bf16"]:
            self.precision_changes.append([int(self.step_of(ckpt)), bool(old_bf16), bool(self.cfg["bf16"])])
            self.log(f"--switch-precision: bfloat16 autocast {old_bf16} -> {self.cfg['bf16']} at step "
                     f"{self.step_of(ckpt)}")
            ckpt["config"] = {**ckpt["config"], "bf16": self.cfg["bf16"]}
        if ckpt["config"] != self.cfg or ckpt["steps_per_epoch"] != self.steps_per_epoch:
            diff = {k: (ckpt["config"].get(k), v) for k, v in self.cfg.items() if ckpt["config"].get(k) != v}
            raise SystemExit(f"checkpoint was made with another configuration or data size: {diff} "
                             f"(steps/epoch {ckpt['steps_per_epoch']} vs {self.steps_per_epoch})")

    @staticmethod
    def step_of(ckpt):
        return ckpt["step"]

    def load(self, path):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self._check_config(ckpt)
        self.model.load_state_dict(ckpt["model"])
        self.proj.load_state_dict(ckpt["proj"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_states(ckpt["rng"])
        self.step, self.wall, self.best = ckpt["step"], ckpt["wall_s"], ckpt["best"]
        self.log(f"resumed {path} at step {self.step} (epoch {ckpt['epoch']}, position {ckpt['position']})")

    def load_repo(self, path):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self._check_config(ckpt)
        self.model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
        self.proj.load_state_dict({k: v.float() for k, v in ckpt["proj"].items()})
        expand_repo_checkpoint(ckpt, self.optimizer)
        set_rng_states(ckpt["rng"])
        self.step, self.wall, self.best = ckpt["step"], ckpt["wall_s"], ckpt["best"]
        self.log(f"resumed from compact {path} at step {self.step} (not bit-identical: float16 weights, "
                 f"first moments reset)")

    def save(self, train_loss=float("nan"), quick=False):
        """Checkpoint (and validate, append a learning-curve row) unless ``quick`` (on a stop signal:
        the checkpoint only, before a possible hard kill)."""
        epoch = self.step // self.steps_per_epoch
        res = resolution_at(min(epoch, sum(e for _, e in self.phases) - 1), self.phases)
        val_cos = val_acc = float("nan")
        if self.val is not None and not quick:
            t = time.time()
            val_cos, val_acc = validate(self.model, self.proj, self.val, res, self.cfg["bf16"])
            self.log(f"validation at {res}px: teacher cosine {val_cos:.4f}, pair accuracy {val_acc:.4f} "
                     f"({time.time() - t:.0f} s)")
        is_best = self.val is not None and val_cos > self.best
        if is_best:
            self.best = val_cos
        state = self.state()
        atomic_save(state, self.ckpt_dir / "last.pt")
        if is_best:
            atomic_save({k: state[k] for k in ("format", "config", "step", "epoch", "images_seen", "best",
                                               "model", "proj")} | {"resolution": res},
                        self.ckpt_dir / "best.pt")
        if self.repo_export:
            export_repo_checkpoint(state, self.repo_export)
        self.log(f"checkpoint step {self.step} -> {self.ckpt_dir / 'last.pt'}" + (" (best)" if is_best else ""))
        if self.docs_dir is not None and not quick:
            append_curve(self.docs_dir, {
                "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3), "resolution": res,
                "images_seen": self.step * self.cfg["batch_size"], "train_loss": round(train_loss, 6),
                "val_teacher_cos": round(val_cos, 5), "val_pair_acc": round(val_acc, 5),
                "wall_s": round(self.wall, 1)})

    # -- loop ---------------------------------------------------------------------------------
    def train_step(self):
        cfg, step = self.cfg, self.step
        epoch, pos = divmod(step, self.steps_per_epoch)
        res = resolution_at(epoch, self.phases)
        perm = epoch_permutation(cfg["seed"], epoch, len(self.data))
        rows = perm[pos * cfg["batch_size"]:(pos + 1) * cfg["batch_size"]]
        images, targets = self.data.batch(rows)
        gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + step)
        x = augment(to_input(images, res), gen, cfg["zoom"], cfg["shift"]).contiguous(
            memory_format=torch.channels_last)
        lr = lr_at(step, self.total_steps, cfg["lr"], cfg["warmup_steps"], cfg["min_lr_ratio"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.proj.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"]):
            f = self.model(x)
            p = self.proj(f)
        loss, cos_term, rel_term = distill_losses(f, p, torch.from_numpy(targets), cfg["relational_weight"],
                                                  cfg["relational_space"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.item(), cos_term.item(), rel_term.item(), res, lr

    def run(self, max_steps=None):
        """Train until the schedule ends, ``max_steps`` (global) is reached or a stop signal; then
        checkpoint. Returns the global step reached."""
        end = self.total_steps if max_steps is None else min(max_steps, self.total_steps)
        last_ckpt = time.time()
        window, losses_since_ckpt = [], []
        t_log, n_log = time.time(), 0
        while self.step < end and not self.stop_requested:
            t0 = time.time()
            loss, cos_term, rel_term, res, lr = self.train_step()
            self.wall += time.time() - t0
            losses_since_ckpt.append(loss)
            window.append((loss, cos_term, rel_term))
            n_log += 1
            if self.log_every and self.step % self.log_every == 0:
                m = np.mean(window, axis=0)
                rate = n_log * self.cfg["batch_size"] / (time.time() - t_log)
                self.log(f"step {self.step}/{self.total_steps} epoch {self.step / self.steps_per_epoch:.2f} "
                         f"res {res} lr {lr:.2e} loss {m[0]:.4f} (cos {m[1]:.4f} rel {m[2]:.5f}) "
                         f"{rate:.1f} img/s")
                window, t_log, n_log = [], time.time(), 0
            epoch_end = self.step % self.steps_per_epoch == 0
            if epoch_end or time.time() - last_ckpt > 60 * self.ckpt_minutes:
                self.save(float(np.mean(losses_since_ckpt)))
                losses_since_ckpt, last_ckpt = [], time.time()
                t_log, n_log = time.time(), 0
        if self.stop_requested:
            self.save(quick=True)
        elif losses_since_ckpt:
            self.save(float(np.mean(losses_since_ckpt)))
        return self.step

    def bench(self, steps=4):
        """img/s per phase resolution on a throw-away copy (the run's state is untouched)."""
        model, proj = copy.deepcopy(self.model), copy.deepcopy(self.proj)
        opt = torch.optim.AdamW(list(model.parameters()) + list(proj.parameters()), lr=1e-4)
        images, targets = self.data.batch(np.arange(self.cfg["batch_size"]) % len(self.data))
        rates = {}
        for res in sorted({r for r, _ in self.phases}):
            x = to_input(images, res).contiguous(memory_format=torch.channels_last)
            times = []
            for _ in range(steps):
                t0 = time.time()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg["bf16"]):
                    f = model(x)
                    p = proj(f)
                loss = distill_losses(f, p, torch.from_numpy(targets), self.cfg["relational_weight"])[0]
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.time() - t0)
            rates[res] = len(x) / np.median(times[1:] if len(times) > 1 else times)
            self.log(f"bench {res}px: {rates[res]:.1f} img/s (median of {steps} steps, batch {len(x)})")
        return rates


def append_curve(docs_dir, row):
    docs_dir.mkdir(parents=True, exist_ok=True)
    path = docs_dir / "learning_curve.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)
    try:
        plot_curve(path, docs_dir / "learning_curve.png")
    except Exception as e:  # a plot must never stop training
        print(f"learning-curve plot failed: {e}", flush=True)


def plot_curve(csv_path, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_csv(csv_path)
    x = [int(r["images_seen"]) / 1e6 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("train_loss", "val_teacher_cos", "val_pair_acc"),
                              ("train loss (since last point)", "val mean cosine to teacher",
                               "val pair accuracy (balanced, best thr.)")):
        ax.plot(x, [float(r[key]) for r in rows], marker=".")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("million images seen")
        ax.grid(alpha=0.3)
    fig.suptitle("MSConvResNet50 distilled from dlib (issue 14)", fontsize=11)
    fig.tight_layout()
    tmp = Path(png_path).with_name(Path(png_path).stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    ap.add_argument("--docs-dir", default=str(DEFAULT_DOCS))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--exclude-cfp-identities", dest="exclude_cfp", action="store_true", default=True,
                   help="drop faces_distill rows of CFP identities (default)")
    g.add_argument("--include-cfp-identities", dest="exclude_cfp", action="store_false")
    ap.add_argument("--val-identities", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--phases", default="64:18,112:2", help="RES:EPOCHS,... (default %(default)s)")
    ap.add_argument("--no-center-teacher", dest="center_teacher", action="store_false",
                    help="use the raw teacher descriptors (default: subtract their training-set mean)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-steps", type=int, default=500)
    ap.add_argument("--min-lr-ratio", type=float, default=0.01)
    ap.add_argument("--relational-weight", type=float, default=0.5)
    ap.add_argument("--relational-space", choices=("embedding", "proj"), default="embedding")
    ap.add_argument("--zoom", type=float, default=0.1)
    ap.add_argument("--shift", type=float, default=0.04)
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", default=True)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (default 1: on the shared 2-core machine, 2 threads collapsed to "
                         "1-3 img/s at 64px whenever other jobs ran, against 19 img/s with 1)")
    ap.add_argument("--switch-precision", action="store_true",
                    help="when resuming, accept a --no-bf16 (or bf16) different from the checkpoint's "
                         "(recorded in it): bfloat16 autocast is for CPUs with bfloat16 units; on an "
                         "AVX2-only CPU it trained 13x slower than float32")
    ap.add_argument("--reschedule", action="store_true",
                    help="when resuming, accept a --phases different from the checkpoint's (recorded in it); "
                         "the cosine schedule then follows the new total from the current step on")
    ap.add_argument("--ckpt-minutes", type=float, default=15.0)
    ap.add_argument("--max-steps", type=int, default=None, help="stop at this global step (checkpointed)")
    ap.add_argument("--bench-steps", type=int, default=4,
                    help="img/s check per resolution when starting from step 0 (0: off)")
    ap.add_argument("--resume", action="store_true", help="continue from <cache>/ckpt/last.pt if present")
    ap.add_argument("--resume-from-repo", nargs="?", const=REPO_CKPT, default=None, metavar="PATH")
    ap.add_argument("--export-repo-checkpoint", nargs="?", const=REPO_CKPT, default=None, metavar="PATH",
                    help=f"refresh this compact copy at every checkpoint (default path {REPO_CKPT})")
    ap.add_argument("--export-only", action="store_true", help="write the compact copy from last.pt and exit")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir)
    ckpt_dir = cache / "ckpt"

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", flush=True)

    if args.export_only:
        out = args.export_repo_checkpoint or REPO_CKPT
        export_repo_checkpoint(torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True),
                               REPO / out if not os.path.isabs(out) else out)
        log(f"wrote {out}")
        return 0

    data = load_data(args.data_dir, cache, args.exclude_cfp, args.val_identities, args.seed)
    log(f"data: {json.dumps(data['summary'])}")
    if args.center_teacher:
        data = center_targets(data)
        log(f"teacher descriptors centred on their training mean (norm {data['teacher_mean_norm']:.3f})")
    train = ArrayData(data["sources"], data["targets"], data["train_src"])
    val = {"images": data["val_images"], "targets": data["val_targets"], "labels": data["val_labels"]}
    t = val["targets"]
    log(f"teacher's own validation pair accuracy: {pair_accuracy(t, val['labels']):.4f} "
        f"({len(t)} images, {len(set(val['labels']))} identities)")
    cfg = vars(args).copy()
    cfg["teacher_dim"] = 128
    export = args.export_repo_checkpoint
    if export and not os.path.isabs(export):
        export = str(REPO / export)
    run = DistillRun(cfg, train, val, ckpt_dir, args.docs_dir, args.ckpt_minutes, repo_export=export, log=log)
    run.allow_reschedule = args.reschedule
    run.allow_precision_switch = args.switch_precision
    log(f"schedule: phases {run.phases}, {run.steps_per_epoch} steps/epoch of {args.batch_size}, "
        f"{run.total_steps} steps in all; AdamW lr {args.lr} (warm-up {args.warmup_steps}, cosine to "
        f"{args.min_lr_ratio}x), wd {args.weight_decay}, relational weight {args.relational_weight}")
    if args.resume and (ckpt_dir / "last.pt").exists():
        run.load(ckpt_dir / "last.pt")
    elif args.resume_from_repo:
        path = args.resume_from_repo
        run.load_repo(REPO / path if not os.path.isabs(path) else path)
    elif args.resume:
        log("no checkpoint yet: starting from scratch")
    if args.bench_steps and run.step == 0:
        run.bench(args.bench_steps)

    def on_signal(signum, frame):
        log(f"signal {signum}: checkpointing after this step")
        run.stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    step = run.run(args.max_steps)
    log(f"stopped at step {step}/{run.total_steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
