"""scripts/train_open_distill.py resumes exactly: k steps + checkpoint + resume m steps == k + m steps."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_open_distill.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("train_open_distill", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(**overrides):
    cfg = dict(seed=3, depth=26, teacher_dim=16, lr=1e-3, weight_decay=0.05, warmup_steps=2,
               min_lr_ratio=0.01, batch_size=4, phases="32:2,48:1", relational_weight=0.5,
               relational_space="embedding", zoom=0.1, shift=0.04, bf16=True)
    cfg.update(overrides)
    return cfg


def _data(tod):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 112, 112, 3), dtype=np.uint8)
    targets = rng.normal(size=(10, 16)).astype(np.float32)
    src = np.stack([np.zeros(10, np.int64), np.arange(10)], axis=1)
    return tod.ArrayData([images], [targets], src)


def _val(tod):
    rng = np.random.default_rng(1)
    return {"images": rng.integers(0, 256, size=(6, 112, 112, 3), dtype=np.uint8),
            "targets": rng.normal(size=(6, 16)).astype(np.float32),
            "labels": np.array(["a", "a", "b", "b", "c", "c"])}


def _flat(run):
    tensors = list(run.model.state_dict().values()) + list(run.proj.state_dict().values())
    return torch.cat([t.detach().float().reshape(-1) for t in tensors])


def test_resume_is_exact(tmp_path):
    torch.set_num_threads(1)
    tod = _load_script()
    data, val = _data(tod), _val(tod)
    quiet = lambda *a: None  # noqa: E731
    # 2 steps/epoch; phases 32px x2 epochs then 48px: k = 3 lands mid-epoch, the resumed part
    # crosses an epoch end and the resolution change.
    k, m = 3, 3
    full = tod.DistillRun(_config(), data, val, tmp_path / "full", docs_dir=tmp_path / "docs", log=quiet)
    assert full.steps_per_epoch == 2 and full.total_steps == 6
    full.run(max_steps=k + m)

    first = tod.DistillRun(_config(), data, val, tmp_path / "split", log=quiet)
    first.run(max_steps=k)
    assert (tmp_path / "split" / "last.pt").exists()
    second = tod.DistillRun(_config(), data, val, tmp_path / "split", log=quiet)
    second.load(tmp_path / "split" / "last.pt")  # torch.load(weights_only=True) inside
    assert second.step == k
    second.run(max_steps=k + m)

    assert second.step == full.step == k + m
    diff = (_flat(full) - _flat(second)).abs().max().item()
    assert diff <= 1e-6, diff
    for a, b in zip(full.optimizer.state_dict()["state"].values(),
                    second.optimizer.state_dict()["state"].values()):
        assert torch.allclose(a["exp_avg"], b["exp_avg"], atol=1e-6, rtol=0)
    rows = (tmp_path / "docs" / "learning_curve.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,resolution") and len(rows) >= 3


def test_compact_export_roundtrip(tmp_path):
    torch.set_num_threads(1)
    tod = _load_script()
    data = _data(tod)
    quiet = lambda *a: None  # noqa: E731
    run = tod.DistillRun(_config(), data, None, tmp_path / "ck", log=quiet,
                         repo_export=tmp_path / "compact.pt")
    run.run(max_steps=2)
    assert (tmp_path / "compact.pt").exists()
    again = tod.DistillRun(_config(), data, None, tmp_path / "ck2", log=quiet)
    again.load_repo(tmp_path / "compact.pt")
    assert again.step == 2
    diff = (_flat(run) - _flat(again)).abs().max().item()
    assert diff < 1e-2
    again.run(max_steps=3)
    assert again.step == 3


def test_schedule_is_a_function_of_the_step():
    tod = _load_script()
    phases = tod.parse_phases("64:30,112:4")
    assert tod.resolution_at(0, phases) == 64 and tod.resolution_at(29, phases) == 64
    assert tod.resolution_at(30, phases) == 112
    assert tod.lr_at(0, 100, 1.0, 10, 0.01) == pytest.approx(0.1)
    assert tod.lr_at(99, 100, 1.0, 10, 0.01) == pytest.approx(0.01, abs=1e-3)
    with pytest.raises(ValueError, match="--phases"):
        tod.parse_phases("64:0")
    same = np.array([0.9, 0.8]), np.array([0.1, 0.85])
    assert tod.best_balanced_accuracy(*same) == pytest.approx(0.75)


def test_centred_targets_and_the_resume_check(tmp_path):
    torch.set_num_threads(1)
    tod = _load_script()
    rng = np.random.default_rng(5)
    targets = [rng.normal(2.0, 1.0, size=(6, 4)).astype(np.float32),
               rng.normal(2.0, 1.0, size=(5, 4)).astype(np.float32)]
    src = np.array([[0, 0], [0, 2], [0, 5], [1, 1], [1, 4]])  # rows used for training
    data = {"targets": targets, "train_src": src, "val_targets": targets[1][[0, 2]]}
    out = tod.center_targets(data)
    used = np.stack([targets[s][i] for s, i in src]).astype(np.float64)
    mean = used.mean(axis=0)
    np.testing.assert_allclose(out["targets"][0], targets[0] - mean, atol=1e-6)
    np.testing.assert_allclose(out["val_targets"], targets[1][[0, 2]] - mean, atol=1e-6)
    np.testing.assert_allclose(np.stack([out["targets"][s][i] for s, i in src]).mean(axis=0), 0, atol=1e-6)
    # A checkpoint made with centred targets refuses to resume with raw ones (and the reverse).
    quiet = lambda *a: None  # noqa: E731
    run = tod.DistillRun(_config(), _data(tod), _val(tod), tmp_path / "c", log=quiet)
    run.run(max_steps=1)
    other = tod.DistillRun(_config(center_teacher=False), _data(tod), _val(tod), tmp_path / "c", log=quiet)
    with pytest.raises(SystemExit, match="center_teacher"):
        other.load(tmp_path / "c" / "last.pt")


def test_reschedule_changes_only_the_phases_and_is_recorded(tmp_path):
    torch.set_num_threads(1)
    tod = _load_script()
    quiet = lambda *a: None  # noqa: E731
    run = tod.DistillRun(_config(phases="32:3,48:1"), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    run.run(max_steps=2)
    # Without --reschedule another --phases is refused, naming the setting.
    shorter = tod.DistillRun(_config(phases="32:2,48:1"), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    with pytest.raises(SystemExit, match="phases"):
        shorter.load(tmp_path / "r" / "last.pt")
    shorter = tod.DistillRun(_config(phases="32:2,48:1"), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    shorter.allow_reschedule = True
    shorter.load(tmp_path / "r" / "last.pt")
    assert shorter.step == 2 and shorter.total_steps == 6
    assert shorter.schedule_changes == [[2, "32:3,48:1", "32:2,48:1"]]
    diff = (_flat(run) - _flat(shorter)).abs().max().item()
    assert diff == 0.0
    # Any other setting still refuses, even with --reschedule.
    other = tod.DistillRun(_config(phases="32:2,48:1", lr=5e-4), _data(tod), _val(tod), tmp_path / "r",
                           log=quiet)
    other.allow_reschedule = True
    with pytest.raises(SystemExit, match="lr"):
        other.load(tmp_path / "r" / "last.pt")
    # A schedule that ends before the checkpoint's step is refused.
    early = tod.DistillRun(_config(phases="32:1"), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    early.allow_reschedule = True
    with pytest.raises(SystemExit, match="not after the checkpoint"):
        early.load(tmp_path / "r" / "last.pt")
    # The change is kept in the next checkpoint.
    shorter.run(max_steps=3)
    saved = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert saved["schedule_changes"] == [[2, "32:3,48:1", "32:2,48:1"]] and saved["total_steps"] == 6


def test_switch_precision_changes_only_bf16_and_is_recorded(tmp_path):
    torch.set_num_threads(1)
    tod = _load_script()
    quiet = lambda *a: None  # noqa: E731
    run = tod.DistillRun(_config(bf16=True), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    run.run(max_steps=2)
    # Without --switch-precision another precision is refused, naming the setting.
    fp32 = tod.DistillRun(_config(bf16=False), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    with pytest.raises(SystemExit, match="bf16"):
        fp32.load(tmp_path / "r" / "last.pt")
    # --reschedule does not open it either.
    fp32 = tod.DistillRun(_config(bf16=False), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    fp32.allow_reschedule = True
    with pytest.raises(SystemExit, match="bf16"):
        fp32.load(tmp_path / "r" / "last.pt")
    fp32 = tod.DistillRun(_config(bf16=False), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    fp32.allow_precision_switch = True
    fp32.load(tmp_path / "r" / "last.pt")
    assert fp32.step == 2 and fp32.cfg["bf16"] is False and fp32.precision_changes == [[2, True, False]]
    assert (_flat(run) - _flat(fp32)).abs().max().item() == 0.0  # same weights, only the autocast changes
    # Another setting is still refused with --switch-precision.
    other = tod.DistillRun(_config(bf16=False, lr=5e-4), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    other.allow_precision_switch = True
    with pytest.raises(SystemExit, match="lr"):
        other.load(tmp_path / "r" / "last.pt")
    # The switch is kept in the next checkpoint, and a resume in the new precision needs no flag.
    fp32.run(max_steps=3)
    saved = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert saved["precision_changes"] == [[2, True, False]] and saved["config"]["bf16"] is False
    again = tod.DistillRun(_config(bf16=False), _data(tod), _val(tod), tmp_path / "r", log=quiet)
    again.load(tmp_path / "r" / "last.pt")
    assert again.step == 3 and again.precision_changes == [[2, True, False]]
