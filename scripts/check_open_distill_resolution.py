"""Validation pair accuracy of an open-distillation checkpoint at several input resolutions.

The held-out validation identities of ``train_open_distill.py`` only (celeba299 *train* identities;
never an evaluation set). With ``--recalibrate-bn RES`` the BatchNorm statistics are first re-estimated
at that resolution on 1,600 training images, to tell a statistics mismatch from a filter mismatch.

    python scripts/check_open_distill_resolution.py /work/cache/open_distill/ckpt/last.pt --res 64,80,96,112
"""

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch

SCRIPT = Path(__file__).resolve().parent / "train_open_distill.py"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--res", default="64,112")
    ap.add_argument("--recalibrate-bn", type=int, default=None, metavar="RES")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    spec = importlib.util.spec_from_file_location("train_open_distill", SCRIPT)
    tod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tod)
    torch.set_num_threads(args.threads)
    defaults = tod.parse_args([])
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    cfg = {**tod.CONFIG_DEFAULTS, **ckpt["config"]}
    data = tod.load_data(defaults.data_dir, Path(defaults.cache_dir), True, defaults.val_identities, cfg["seed"])
    if cfg["center_teacher"]:
        data = tod.center_targets(data)
    val = {"images": data["val_images"], "targets": data["val_targets"], "labels": data["val_labels"]}
    model, proj, _ = tod.build(cfg)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    proj.load_state_dict({k: v.float() for k, v in ckpt["proj"].items()})
    if args.recalibrate_bn:
        train = tod.ArrayData(data["sources"], data["targets"], data["train_src"])
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the batches below
        model.train()
        rng = np.random.default_rng(0)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"]):
            for _ in range(25):
                images, _ = train.batch(rng.choice(len(train), 64, replace=False))
                model(tod.to_input(images, args.recalibrate_bn).contiguous(memory_format=torch.channels_last))
    model.eval()
    print(f"step {ckpt['step']}" + (f", BatchNorm re-estimated at {args.recalibrate_bn} px" if args.recalibrate_bn else ""))
    for res in (int(r) for r in args.res.split(",")):
        cos, acc = tod.validate(model, proj, val, res, cfg["bf16"])
        print(f"{res:4d} px: teacher cosine {cos:.4f}, pair accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
