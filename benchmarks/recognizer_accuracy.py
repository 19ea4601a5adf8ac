"""Accuracy of a pretrained model on the real evaluation sets, and its calibrated thresholds.

Everything is measured with ``keras_fr.evaluation`` on ``../shared/data`` (never committed):

- ``lfw``: LFW View 2, 6,000 pairs, the standard 10-fold protocol (``verify_pairs``);
- ``cfp_fp``: CFP frontal-profile, 7,000 pairs in the official 10 folds;
- ``celeba_pairs``: the 600 CelebA test pairs (``pairs_test.csv``), 10 folds (the file lists its 300
  same pairs before its 300 different ones; they are interleaved so each fold holds both);
- ``celeba_all``: every pair of the 1,223 images of the 59 CelebA *test* identities (about 12,000
  same-person and 735,000 different-person pairs): TAR at FAR 1e-2/1e-3/1e-4 and the thresholds
  (``keras_fr.evaluation.calibration``). These are the thresholds a preset carries.

Images are the sets' ArcFace-aligned 112x112 crops, embedded through ``keras_fr.FaceRecognizer`` with
``aligned=True`` (re-cropped to the model's own input geometry, e.g. dlib's 150x150 chip), no flip
test-time augmentation. Scores are cosine similarities.

Usage:
    python benchmarks/recognizer_accuracy.py --model dlib_resnet --weights dlib_v1
    python benchmarks/recognizer_accuracy.py --model dlib_resnet --weights dlib_v1 --write-manifest
    python benchmarks/recognizer_accuracy.py --model msconv_resnet50 --weights FILE --sets lfw,celeba_all
    python benchmarks/recognizer_accuracy.py --quick           # 200 pairs per set: a smoke test

``--tflite int8`` (or ``float32``) embeds through a TFLite file exported from the model by
``keras_fr.export.to_tflite`` (builtins only, verified at export; int8 calibrated on 100
``faces_distill`` training faces, never on an evaluation set) instead of Keras; ``--write-manifest``
then stores the figures under ``metrics.measured_here.tflite_<mode>``.

``--write-manifest`` stores the figures and the thresholds in the preset's manifest under
``weights/`` (``metrics.measured_here`` and ``calibration``), with this command.
Writes ``benchmarks/results/recognizer_accuracy_<model>_<weights>.json``.
"""

import argparse
import csv
import json
import os
import time

import _bench  # noqa: F401  (quiet logs, TensorFlow backend, project root on sys.path)
import numpy as np
from _bench import HERE, ROOT, write_json

from keras_fr.evaluation.calibration import PRESET_FARS, all_pairs_scores, calibrate  # noqa: E402
from keras_fr.evaluation.pairs import read_pairs  # noqa: E402
from keras_fr.evaluation.verification import verify_pairs  # noqa: E402
from keras_fr.recognition import FaceRecognizer  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
SETS = ("lfw", "cfp_fp", "celeba_pairs", "celeba_all")
CELEBA_ALL_NAME = "all pairs of the 59 celeba299 test identities (1,223 images)"


def _embed_paths(recognizer, paths, batch=64):
    from keras_fr.preprocessing import load_image

    out = []
    for start in range(0, len(paths), batch):
        crops = [load_image(p) for p in paths[start : start + batch]]
        out.append(recognizer.embed(crops, aligned=True))
    return np.concatenate(out)


def pairs_accuracy(recognizer, source, limit=None, interleave=False):
    pairset = read_pairs(source)
    pairs, issame = pairset.pairs, pairset.issame
    if interleave:
        # A file of all same pairs then all different ones (celeba299's pairs_test.csv): alternate
        # them so every contiguous fold of the 10-fold protocol holds both kinds.
        same, diff = np.flatnonzero(issame), np.flatnonzero(~issame)
        n = min(len(same), len(diff))
        order = np.concatenate([np.stack([same[:n], diff[:n]], axis=1).ravel(), same[n:], diff[n:]])
        pairs, issame = pairs[order], issame[order]
    if limit:
        keep = np.linspace(0, len(pairs) - 1, limit).astype(int)
        pairs, issame = pairs[keep], issame[keep]
    used = np.unique(pairs)
    emb = np.zeros((len(pairset.images), recognizer.embedding_size), np.float32)
    emb[used] = _embed_paths(recognizer, [pairset.images[int(i)] for i in used])
    result = verify_pairs(emb[pairs[:, 0]], emb[pairs[:, 1]], issame, normalize=False)
    return {
        "accuracy": 100 * result.accuracy,
        "accuracy_std": 100 * result.accuracy_std,
        "pairs": int(len(pairs)),
        "threshold_cosine": 1 - result.threshold / 2,
    }


class _TFLiteModel:
    """Stands in for the Keras model inside a FaceRecognizer: same inputs, outputs from a .tflite file."""

    def __init__(self, path):
        from keras_fr.export._tflite import run_tflite

        self.path, self._run = path, run_tflite

    def __call__(self, batch, training=False):
        return self._run(self.path, np.asarray(batch, np.float32))


def use_tflite(recognizer, mode, folder):
    """Export ``recognizer``'s model to TFLite (``mode``: float32 or int8) and embed through it."""
    from keras_fr.export import to_tflite

    path = os.path.join(folder, f"{recognizer.model_name}_{mode}.tflite")
    calib = os.path.join(DATA, "faces_distill", "images", "utkface")
    report = to_tflite(recognizer.model, path, quantize=None if mode == "float32" else mode,
                       representative_data=calib if mode == "int8" else None)
    print(f"tflite {mode}: {report.size_bytes / 1e6:.1f} MB, min cosine to Keras {report.min_cosine:.5f}",
          flush=True)
    # The recognizer embeds through its runtime (embed_crops calls self.runtime), not through .model:
    # replacing .model alone would measure the default runtime again.
    recognizer.runtime = _TFLiteModel(path)
    return {"mode": mode, "size_mb": round(report.size_bytes / 1e6, 1),
            "min_cosine_to_keras": round(float(report.min_cosine), 5)}


def celeba_all_pairs(recognizer, limit=None):
    root = os.path.join(DATA, "celeba299")
    with open(os.path.join(root, "split.csv"), newline="") as f:
        test = {row["identity"] for row in csv.DictReader(f) if row["split"] == "test"}
    paths, labels = [], []
    for identity in sorted(test):
        folder = os.path.join(root, "images", identity)
        for name in sorted(os.listdir(folder)):
            paths.append(os.path.join(folder, name))
            labels.append(identity)
    if limit:
        paths, labels = paths[:limit], labels[:limit]
    emb = _embed_paths(recognizer, paths)
    scores, issame = all_pairs_scores(emb, np.array(labels))
    fars = tuple(f for f in PRESET_FARS if (~issame).sum() * f >= 1)
    cal = calibrate(scores, issame, fars)
    out = cal.as_dict()
    out["images"] = len(paths)
    out["set"] = CELEBA_ALL_NAME
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", required=True, help="preset tag or .weights.h5 file")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--quick", action="store_true", help="200 pairs / 200 images per set")
    parser.add_argument("--write-manifest", action="store_true")
    parser.add_argument("--output", default=None)
    parser.add_argument("--tflite", choices=("float32", "int8"), default=None,
                        help="embed through a TFLite file of this kind instead of Keras")
    args = parser.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    unknown = set(sets) - set(SETS)
    if unknown:
        parser.error(f"unknown sets {sorted(unknown)}; choose from {SETS}")
    limit = 200 if args.quick else None
    # With --tflite the file below replaces the runtime: build no other one.
    recognizer = FaceRecognizer(args.model, weights=args.weights, batch_size=32,
                                runtime="keras" if args.tflite else "auto")
    tflite = None
    if args.tflite:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="recognizer_accuracy_")
        tflite = use_tflite(recognizer, args.tflite, workdir)
    sources = {
        "lfw": os.path.join(DATA, "lfw112"),
        "cfp_fp": os.path.join(DATA, "cfp_fp", "pairs.csv"),
        "celeba_pairs": os.path.join(DATA, "celeba299", "pairs_test.csv"),
    }
    results = {}
    for name in sets:
        start = time.perf_counter()
        if name == "celeba_all":
            results[name] = celeba_all_pairs(recognizer, limit)
        else:
            results[name] = pairs_accuracy(
                recognizer, sources[name], limit, interleave=name == "celeba_pairs"
            )
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(results[name]), flush=True)
    tag = os.path.basename(args.weights).replace(".weights.h5", "")
    suffix = f"_tflite_{args.tflite}" if args.tflite else ""
    output = args.output or os.path.join(HERE, "results", f"recognizer_accuracy_{args.model}_{tag}{suffix}.json")
    header = _bench.result_header("recognizer_accuracy", argv)
    write_json(output, {**header, "model": recognizer.model_name, "weights": args.weights, "tflite": tflite,
                        "results": results})
    if args.write_manifest and not args.quick:
        path = os.path.join(ROOT, "weights", f"{recognizer.model_name}_{args.weights}.json")
        update_manifest(path, results, tflite, args.tflite, header["command"])


def update_manifest(path, results, tflite=None, tflite_mode=None, command=""):
    """Store ``results`` (and the TFLite file's figures) in the preset manifest at ``path``."""
    from keras_fr._atomic import write_text

    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    measured = {
        k: {"accuracy": round(v["accuracy"], 2), "accuracy_std": round(v["accuracy_std"], 2)}
        for k, v in results.items()
        if k != "celeba_all"
    }
    if tflite:
        manifest.setdefault("metrics", {}).setdefault("measured_here", {})[f"tflite_{tflite_mode}"] = {
            **tflite, **measured, "command": command}
        write_text(path, json.dumps(manifest, indent=2) + "\n")
        print(f"wrote {path}")
        return
    measured["protocol"] = (
        "keras_fr.evaluation.verify_pairs, 10 folds, aligned 112x112 crops of ../shared/data "
        "re-cropped by FaceRecognizer(aligned=True), cosine, no flip"
    )
    if "celeba_all" in results:
        measured["celeba_test_all_pairs_tar"] = results["celeba_all"]["tar"]
        manifest["calibration"] = {
            **{k: results["celeba_all"][k] for k in ("score", "thresholds", "tar", "far_measured",
                                                     "genuine_pairs", "impostor_pairs")},
            "set": CELEBA_ALL_NAME,
        }
        manifest["calibration"]["command"] = command
    measured["command"] = command
    keep = {k: v for k, v in manifest.get("metrics", {}).get("measured_here", {}).items()
            if k.startswith("tflite_")}
    manifest.setdefault("metrics", {})["measured_here"] = {**measured, **keep}
    write_text(path, json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
