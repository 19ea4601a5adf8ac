"""``keras-fr convert``: PyTorch checkpoint -> Keras weights (or back), optionally verified.

PyTorch -> Keras (default): the network is recognized from the checkpoint's keys (``--arch`` only
checks it), every tensor is accounted for, and the result is written as ``.weights.h5``. Keras ->
PyTorch (``--to torch``): a ``.weights.h5`` / ``.keras`` file of a keras_fr model (``--arch`` names
it) becomes a state dict that the PyTorch reference loads with ``strict=True``.

``--verify`` runs the project's PyTorch reference and the Keras model on the same random images and
prints the max abs difference and the cosine per sample; the output is written only if they agree.
Outputs are written atomically (a temporary file in the same folder, then ``os.replace``).
"""

import argparse
import os

from keras_fr._atomic import atomic_path
from keras_fr.applications import canonical_name
from keras_fr.applications.common import preprocess_input
from keras_fr.cli._common import MODELS, CLIError, check_output
from keras_fr.cli._common import build_model
from keras_fr.conversion import compare_outputs, reference_outputs
from keras_fr.conversion import convert_checkpoint, read_checkpoint
from keras_fr.conversion import export_state_dict, save_state_dict
from keras_fr.conversion.storage import save_weights
from keras_fr.preprocessing import list_images, load_image

EXAMPLES = """examples:
  keras-fr convert backbone.pth --output iresnet100.weights.h5 --verify
  keras-fr convert model.pt --arch msconv_resnet50 --output msconv50.weights.h5
  keras-fr convert ckpt.safetensors --output r50_backbone.weights.h5 --no-top
  keras-fr convert tuned.weights.h5 --to torch --arch iresnet50 --output tuned.pth --verify
"""

#: --verify tolerances (outputs of order 1): max abs difference and minimum cosine per sample.
VERIFY_ATOL = 1e-3
VERIFY_MIN_COS = 0.9999


def register(subparsers):
    parser = subparsers.add_parser(
        "convert",
        help="convert a PyTorch checkpoint to Keras weights (or back), with --verify",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="input file (.pt/.pth/.safetensors/.npz, or a Keras "
                        "weights file with --to torch)")
    parser.add_argument("--output", "-o", required=True,
                        help="output file: .weights.h5 (to keras) or .pt/.pth/.safetensors/.npz "
                        "(to torch)")
    parser.add_argument("--arch", default="auto", type=_arch_name, metavar="NAME",
                        help=f"network: auto, {', '.join(sorted(MODELS))} (builder names such as "
                        "IResNet50 accepted); 'auto' reads it from the checkpoint's keys (to keras only)")
    parser.add_argument("--to", default="keras", choices=["keras", "torch"], dest="direction",
                        help="conversion direction (default keras)")
    parser.add_argument("--no-top", action="store_true",
                        help="convert the backbone only (the head's tensors are left, reported)")
    parser.add_argument("--fusion", default=None, choices=["quality", "add", "local", "global"],
                        help="LGAF fusion mode of the built model (and of --verify)")
    parser.add_argument("--verify", action="store_true",
                        help="compare with the PyTorch reference on random images (needs torch)")
    parser.add_argument("--samples", type=int, default=4, help="images for --verify (default 4)")
    parser.add_argument("--verify-images", default=None, metavar="PATH", nargs="+",
                        help="verify on these aligned face images (files or folders; the first "
                        "--samples of them) instead of random noise: trained networks can amplify "
                        "float32 rounding on noise far from any face, real faces are what matters")
    parser.add_argument("--storage-dtype", default="float32", choices=["float32", "float16"],
                        help="how the .weights.h5 stores kernels (default float32); float16 halves the "
                        "file, the model still runs in float32. With --verify the float16 file is read "
                        "back and checked against the reference too (cosine >= "
                        f"{STORED_MIN_COS})")
    parser.set_defaults(func=run)


def _arch_name(value):
    """argparse type of --arch: 'auto', or a registry or builder name -> the registry name."""
    if value == "auto":
        return value

    try:
        return canonical_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _verification_images(paths, samples, size):
    """Up to ``samples`` aligned faces from ``paths``, resized to ``size``, preprocessed to [-1, 1]."""
    import numpy as np
    from PIL import Image


    try:
        files = list_images(paths)[:samples]
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(f"--verify-images: {exc}") from None
    faces = []
    for path in files:
        image = load_image(path)
        if image.shape[:2] != (size, size):
            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        faces.append(image)
    return preprocess_input(np.stack(faces)), f"{len(files)} images from {', '.join(paths)}"


#: Least cosine to the PyTorch reference for a file with float16 kernels (the float32 path is held to
#: VERIFY_MIN_COS and VERIFY_ATOL; float16 rounding moves outputs by about 1e-3 relative).
STORED_MIN_COS = 0.9999


def _verify(model, state, model_name, fusion, samples, image_paths=None, min_cos=None):
    import numpy as np

    try:
        import torch  # noqa: F401
    except ImportError:
        raise CLIError("--verify needs torch (pip install 'keras_fr[torch]')") from None

    shape = tuple(model.input_shape[1:])
    size = 112 if shape[0] is None else shape[0]
    if image_paths:
        images, what = _verification_images(image_paths, samples, size)
        samples = len(images)
    else:
        rng = np.random.default_rng(0)
        images = np.clip(rng.normal(0, 0.5, (samples, size, size, 3)), -1, 1).astype("float32")
        what = f"{samples} random {size}x{size} images"
    expected = reference_outputs(model_name, state, images, fusion=fusion or "quality")
    actual = np.asarray(model(images, training=False))
    max_diff, cosines = compare_outputs(expected, actual)
    scale = float(np.abs(expected).max())
    print(f"verify: PyTorch reference vs Keras on {what} (output max |x| {scale:.3g})")
    for i in range(samples):
        diff = float(np.abs(expected[i] - actual[i]).max())
        print(f"  sample {i}: max abs diff {diff:.3e}  cosine {cosines[i]:.8f}")
    if min_cos is None:
        ok = max_diff <= VERIFY_ATOL * max(1.0, scale) and bool(np.all(cosines >= VERIFY_MIN_COS))
    else:
        ok = bool(np.all(cosines >= min_cos))
    print(f"verify: {'OK' if ok else 'FAILED'} (max abs diff {max_diff:.3e}, min cosine "
          f"{float(cosines.min()):.8f})")
    return ok


def _to_keras(args):
    import keras


    if not args.output.endswith(".weights.h5"):
        raise CLIError(f"--output must end in .weights.h5; got {args.output!r}")
    check_output(args.output)
    model, report = convert_checkpoint(
        args.checkpoint, arch=args.arch, include_top=not args.no_top, fusion=args.fusion,
        return_report=True,
    )
    print(f"{args.checkpoint}: {model.name}")
    print(report.format())
    if args.verify:
        if args.no_top:
            raise CLIError("--verify compares embeddings; convert without --no-top to verify")
        state, _ = read_checkpoint(args.checkpoint)
        if not _verify(model, state, model.name, args.fusion, args.samples, args.verify_images):
            raise CLIError(f"verification failed; {args.output} was not written")
    if args.storage_dtype == "float32":
        save_weights(model, args.output)
        print(f"wrote {args.output}")
        return
    with atomic_path(args.output) as final:
        count = save_weights(model, final, storage_dtype=args.storage_dtype)
        print(f"{count} kernels stored as {args.storage_dtype}")
        if args.verify:
            stored = keras.models.clone_model(model)
            stored.load_weights(final)
            print(f"verify: the {args.storage_dtype} file read back")
            if not _verify(stored, state, model.name, args.fusion, args.samples, args.verify_images,
                           min_cos=STORED_MIN_COS):
                raise CLIError(f"verification of the {args.storage_dtype} file failed; {args.output} "
                               "was not written")
    print(f"wrote {args.output}")


def _to_torch(args):
    import keras


    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"Keras weights file not found: {args.checkpoint!r}")
    if not args.output.endswith((".pt", ".pth", ".safetensors", ".npz")):
        raise CLIError(f"--output must end in .pt, .pth, .safetensors or .npz; got {args.output!r}")
    check_output(args.output)
    if args.checkpoint.endswith(".keras"):
        model = keras.saving.load_model(args.checkpoint, compile=False, safe_mode=True)
    elif args.checkpoint.endswith(".weights.h5"):
        if args.arch == "auto":
            raise CLIError("--to torch from a .weights.h5 file needs --arch (the file has no "
                           "architecture)")
        kwargs = {"include_top": not args.no_top}
        if args.fusion:
            kwargs["fusion"] = args.fusion
        model = build_model(args.arch, weights=args.checkpoint, **kwargs)
    else:
        raise CLIError(f"--to torch reads a .weights.h5 or .keras file; got {args.checkpoint!r}")
    state = export_state_dict(model)
    print(f"{args.checkpoint}: {model.name}, {len(state)} PyTorch tensors")
    if args.verify:
        if args.no_top:
            raise CLIError("--verify compares embeddings; export without --no-top to verify")
        name = args.arch if args.arch != "auto" else model.name
        if not _verify(model, state, name, args.fusion, args.samples, args.verify_images):
            raise CLIError(f"verification failed; {args.output} was not written")
    save_state_dict(state, args.output)
    print(f"wrote {args.output}")


def run(args):
    if args.samples < 1:
        raise CLIError(f"--samples must be at least 1; got {args.samples}")
    if args.verify_images:
        args.verify = True  # verifying on given faces is still verifying
        for path in args.verify_images:
            if not os.path.exists(path):
                raise CLIError(f"--verify-images: {path!r} not found.")
    if args.direction == "torch":
        _to_torch(args)
    else:
        _to_keras(args)
    return 0
