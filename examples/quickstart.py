"""Quickstart: load a face recognition model, embed faces, compare them.

    python examples/quickstart.py                                  # MSConvResNet50 on a few faces
    python examples/quickstart.py --weights ms1mv3                 # a converted preset (keras-fr info)
    python examples/quickstart.py --images a.jpg b.jpg c.jpg       # your aligned 112x112 crops
    python examples/quickstart.py --images photo.jpg --landmarks marks.json   # photos + 5 landmarks
    python examples/quickstart.py --model msconv_resnet26 --image-size 64 --limit 4   # tiny run

Images: the ones given with --images; else aligned CelebA crops from ../shared/data/celeba299 when
that folder exists; else generated face-like images (said plainly). Without --weights the network has
random weights, so the similarities mean nothing yet: the point is the API.
"""

import argparse
import os
import pathlib
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_fr  # noqa: E402
from keras_fr.applications import count_parameters, preprocess_input  # noqa: E402
from keras_fr.preprocessing import find_landmarks, load_face, read_landmarks  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba299" / "images"


def default_images(limit):
    """Two aligned crops of each of the first CelebA identities, or generated faces written to files."""
    if SHARED.is_dir():
        paths = []
        for person in sorted(p for p in SHARED.iterdir() if p.is_dir()):
            files = sorted(person.glob("*.jpg"))[:2]
            if len(files) == 2:
                paths.extend(str(f) for f in files)
            if len(paths) >= limit:
                return paths[:limit], "real CelebA crops"
        if paths:
            return paths[:limit], "real CelebA crops"
    from PIL import Image

    from keras_fr.cli.demo import synthetic_faces

    images, _ = synthetic_faces(max(limit // 2, 1), 2, image_size=112, seed=0)
    folder = tempfile.mkdtemp(prefix="keras-fr-quickstart-")
    paths = []
    for i, image in enumerate(images[:limit]):
        paths.append(os.path.join(folder, f"face_{i // 2}_{i % 2}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths, "GENERATED face-like images (no real data found)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="msconv_resnet50", choices=sorted(keras_fr.applications.MODELS))
    parser.add_argument("--weights", default=None, help="preset tag or .weights.h5/.keras file")
    parser.add_argument("--images", nargs="+", default=None, help="face images (aligned 112x112 crops)")
    parser.add_argument("--landmarks", default=None, help="landmarks file for photos (see keras_fr.preprocessing)")
    parser.add_argument("--image-size", type=int, default=112,
                        help="network input size (MSConv networks accept >= 32; crops are resized)")
    parser.add_argument("--limit", type=int, default=6, help="at most this many images")
    parser.add_argument("--threshold", type=float, default=0.3, help="cosine threshold for 'same'")
    args = parser.parse_args(argv)

    # 1. Load a model, keras.applications style.
    builder = keras_fr.applications.get_builder(args.model)
    shape = None if args.image_size == 112 else (args.image_size, args.image_size, 3)
    model = builder(weights=args.weights, input_shape=shape)
    print(f"{model.name}: {count_parameters(model):,} parameters (PyTorch-comparable count), "
          f"weights: {args.weights or 'RANDOM'}")

    # 2. Load aligned face crops (photos are aligned with their five landmarks).
    if args.images:
        paths, source = args.images[: args.limit], "given"
    else:
        paths, source = default_images(args.limit)
    marks = read_landmarks(args.landmarks) if args.landmarks else {}
    faces = np.stack([
        load_face(p, find_landmarks(marks, p, args.landmarks) if marks else None) for p in paths
    ])
    if args.image_size != 112:
        from PIL import Image

        faces = np.stack([
            np.asarray(Image.fromarray(f).resize((args.image_size,) * 2, Image.Resampling.BILINEAR))
            for f in faces
        ])
    print(f"{len(paths)} images ({source})")
    if not args.images and "GENERATED" in source:
        import shutil

        shutil.rmtree(os.path.dirname(paths[0]), ignore_errors=True)

    # 3. Embed: preprocess to [-1, 1], run the model, L2-normalize.
    embeddings = model.predict(preprocess_input(faces), verbose=0)
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)

    # 4. Compare: cosine similarity = dot product of unit vectors.
    similarity = embeddings @ embeddings.T
    names = [pathlib.Path(p).parent.name + "/" + pathlib.Path(p).name for p in paths]
    width = max(len(n) for n in names)
    print(f"\ncosine similarity (same person if >= {args.threshold}):")
    for i, name in enumerate(names):
        print(f"  {name:<{width}}  " + " ".join(f"{s:6.3f}" for s in similarity[i]))
    first_pair = "SAME" if similarity[0, 1] >= args.threshold else "DIFFERENT"
    print(f"\n{names[0]} vs {names[1]}: {similarity[0, 1]:.3f} -> {first_pair}"
          + ("" if args.weights else " (random weights: meaningless until you load a preset)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
