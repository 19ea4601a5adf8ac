"""How long a full LFW evaluation (6,000 pairs, 7,701 images, flip TTA) takes per model on this machine.

A full evaluation is: read ``pairs.txt`` and check the files, decode every image, embed it (twice with
flip TTA: the image and its mirror in one batch), then the 10-fold protocol on the 6,000 pairs. Embedding
dominates by far, and a full pass of a 50-layer network on 2 CPU cores takes many minutes, so by default
this script *measures* each stage on a sample and *extrapolates* the embedding stage to all 7,701 images:

- ``read``: ``read_pairs`` on the full ``pairs.txt`` (measured in full);
- ``embed``: decoding + preprocessing + forward passes of the first ``--sample`` images in batches of
  ``--batch-size`` after one warm-up batch (tracing excluded), scaled by 7,701 / sample;
- ``protocol``: ``verify_pairs`` on 6,000 pairs of 512-d embeddings (measured in full);
- ``total`` = read + embed + protocol (the figure for the README, marked as extrapolated).

``--full`` embeds all 7,701 images instead (nothing extrapolated; reports the accuracy too, which with
random weights is only a mechanical check). Models have random weights: timing does not depend on them.

Usage:
    python benchmarks/lfw_eval.py                        # both models, sample of 384 images, flip TTA
    python benchmarks/lfw_eval.py --quick                # smoke test: 16 images
    python benchmarks/lfw_eval.py --models iresnet50 --full
    python benchmarks/lfw_eval.py --no-flip

Writes ``benchmarks/results/lfw_eval.json``. Needs ``../shared/data/lfw112`` (never committed).
"""

import argparse
import datetime
import os
import platform
import sys
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, ROOT, write_json  # noqa: E402

from keras_fr.applications import MODELS, get_model  # noqa: E402

DEFAULT_MODELS = ["msconv_resnet50", "iresnet50"]
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "lfw112")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--data", default=DEFAULT_DATA, help="LFW folder with pairs.txt and images/")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample", type=int, default=384, help="images embedded and timed per model")
    parser.add_argument("--no-flip", action="store_true", help="without flip TTA")
    parser.add_argument("--full", action="store_true", help="embed all 7,701 images (slow) instead of a sample")
    parser.add_argument("--quick", action="store_true", help="smoke test: 16 images, batch 8")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "lfw_eval.json"))
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.quick:
        args.sample, args.batch_size = 16, 8
    if args.batch_size < 1 or args.sample < 1:
        parser.error("--batch-size and --sample must be positive")
    return args


def bench_model(name, pairs, args, read_seconds):
    import numpy as np

    from keras_fr.evaluation import evaluate_pairs, extract_embeddings, verify_pairs

    start = time.perf_counter()
    model = get_model(name)
    build_seconds = time.perf_counter() - start
    flip = not args.no_flip
    n_images = len(pairs.images)
    # warm-up: trace the predict function for the batch shape (excluded from the timing)
    extract_embeddings(model, pairs.images.paths[: args.batch_size], batch_size=args.batch_size, flip=flip, verbose=0)
    row = {"model": name, "flip": flip, "batch_size": args.batch_size, "build_seconds": build_seconds,
           "read_seconds": read_seconds, "images": n_images, "pairs": len(pairs)}
    if args.full:
        result = evaluate_pairs(model, pairs, batch_size=args.batch_size, flip=flip, verbose=0)
        row.update(mode="full", embedded_images=n_images, total_seconds=read_seconds + result.seconds,
                   embed_and_protocol_seconds=result.seconds, accuracy=result.accuracy,
                   accuracy_std=result.accuracy_std)
        row["seconds_per_image"] = result.seconds / n_images
        return row
    sample = min(args.sample, n_images)
    start = time.perf_counter()
    emb = extract_embeddings(model, pairs.images.paths[:sample], batch_size=args.batch_size, flip=flip, verbose=0)
    embed_seconds = time.perf_counter() - start
    per_image = embed_seconds / sample
    rng = np.random.default_rng(0)
    fake = rng.normal(size=(n_images, emb.shape[1])).astype("float32")
    fake /= np.linalg.norm(fake, axis=1, keepdims=True)
    start = time.perf_counter()
    verify_pairs(fake[pairs.pairs[:, 0]], fake[pairs.pairs[:, 1]], pairs.issame, normalize=False)
    protocol_seconds = time.perf_counter() - start
    embed_all = per_image * n_images
    row.update(mode="sample, extrapolated", embedded_images=sample, seconds_per_image=per_image,
               embed_seconds_extrapolated=embed_all, protocol_seconds=protocol_seconds,
               total_seconds=read_seconds + embed_all + protocol_seconds)
    return row


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(os.path.join(args.data, "pairs.txt")):
        print(f"LFW not found at {args.data} (pairs.txt + images/; never committed): nothing to time.", file=sys.stderr)
        return 2
    from keras_fr.evaluation import read_pairs

    start = time.perf_counter()
    pairs = read_pairs(args.data)
    read_seconds = time.perf_counter() - start
    rows = [bench_model(name, pairs, args, read_seconds) for name in args.models]
    header = f"{'model':<18}{'mode':<22}{'flip':<6}{'s/image':>9}{'full LFW (min)':>16}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<18}{r['mode']:<22}{str(r['flip']):<6}{r['seconds_per_image']:>9.4f}"
              f"{r['total_seconds'] / 60:>16.1f}")
    report = {
        "benchmark": "lfw_eval",
        "command": "python benchmarks/lfw_eval.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "results": rows,
    }
    write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
