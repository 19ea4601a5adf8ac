"""Convert a PyTorch face recognition checkpoint to Keras weights, and check the outputs agree.

    python examples/convert_checkpoint.py --checkpoint backbone.pth            # your checkpoint
    python examples/convert_checkpoint.py                                      # a demo checkpoint
    python examples/convert_checkpoint.py --arch iresnet18 --samples 2         # tiny run

With --checkpoint: the file (.pt/.pth read with torch.load(weights_only=True), .safetensors or .npz,
plain or `module.`-prefixed state dict, or a training dict) is converted; the network is recognized
from its keys. Without it, this script first makes a reference checkpoint: the project's PyTorch
definition of --arch (keras_fr.torch_reference) with random weights, saved as a state dict, so the
whole path can be tried without downloading anything (needs torch).

Then it converts the checkpoint with keras_fr.conversion.convert_checkpoint, saves
`<arch>.weights.h5`, reloads it through the keras.applications-style builder, and compares the Keras
outputs with PyTorch's on the same random faces (max |diff| and cosine per sample). The same is
`keras-fr convert CHECKPOINT --output OUT.weights.h5 --verify`.
"""

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_fr.cli._common import build_model  # noqa: E402
from keras_fr.conversion import convert_checkpoint  # noqa: E402


def make_reference_checkpoint(arch, path, seed=0):
    """Save a random-weight PyTorch reference network's state dict to ``path``; return the net."""
    import torch

    from keras_fr.torch_reference.reference import build_reference, randomize_

    net = build_reference(arch)
    with torch.no_grad():
        randomize_(net, seed=seed)
    torch.save(net.state_dict(), path)
    return net


def main(argv=None):
    workdir = tempfile.mkdtemp(prefix="keras-fr-convert-")
    try:
        return run(argv, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the demo checkpoint and a default output


def run(argv, workdir):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="PyTorch checkpoint (default: make a demo one)")
    parser.add_argument("--arch", default="msconv_resnet50",
                        help="network of the demo checkpoint; with --checkpoint, 'auto' or a name to check")
    parser.add_argument("--output", default=None, help="output .weights.h5 (default: a temporary file, removed at the end)")
    parser.add_argument("--samples", type=int, default=4, help="random faces for the comparison")
    args = parser.parse_args(argv)

    torch_net = None
    if args.checkpoint:
        checkpoint, arch = args.checkpoint, args.arch if args.arch != "msconv_resnet50" else "auto"
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            parser.error("making the demo checkpoint needs torch (pip install keras_fr[torch]); "
                         "or pass --checkpoint")
        checkpoint, arch = os.path.join(workdir, f"{args.arch}_reference.pth"), args.arch
        torch_net = make_reference_checkpoint(args.arch, checkpoint)
        print(f"made a random-weight PyTorch {args.arch} reference checkpoint: {checkpoint}")

    # 1. Convert: the family, depth and embedding size come from the checkpoint's keys.
    model, report = convert_checkpoint(checkpoint, arch=arch, return_report=True)
    from keras_fr.applications import count_parameters

    print(f"converted to {model.name}: {count_parameters(model):,} parameters (PyTorch-comparable count)")
    print(report.summary() if hasattr(report, "summary") else report)

    # 2. Save Keras weights and load them the keras.applications way.
    output = args.output or os.path.join(workdir, f"{model.name}.weights.h5")
    model.save_weights(output)
    name = model.name if arch == "auto" else arch
    reloaded = build_model(name, output)
    print(f"saved {output} ({os.path.getsize(output) / 2**20:.0f} MB); reloaded with weights={output!r}")

    # 3. Compare Keras with the PyTorch network on the same random faces.
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(args.samples, 112, 112, 3)).astype(np.float32)
    keras_out = np.asarray(reloaded(x, training=False))
    if torch_net is None:
        try:
            import torch

            from keras_fr.torch_reference.reference import build_reference

            torch_net = build_reference(name)
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            torch_net.load_state_dict(state, strict=False)
        except Exception as exc:  # the user's checkpoint may be a training dict, or torch absent
            print(f"no PyTorch comparison ({exc}); `keras-fr convert {checkpoint} --verify` does it")
            return 0
    import torch

    with torch.no_grad():
        torch_out = torch_net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    diff = float(np.max(np.abs(keras_out - torch_out)))
    cosine = np.sum(keras_out * torch_out, axis=1) / (
        np.linalg.norm(keras_out, axis=1) * np.linalg.norm(torch_out, axis=1))
    print(f"Keras vs PyTorch on {args.samples} random faces: max |diff| {diff:.2e}, "
          f"min cosine {cosine.min():.7f}")
    if not (diff <= 1e-4 * max(1.0, float(np.abs(torch_out).max())) and cosine.min() >= 0.99999):
        print("MISMATCH: the converted model does not reproduce the checkpoint")
        return 1
    print("parity OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
