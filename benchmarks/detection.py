"""Face detection and landmarks (``keras_fr.detection``) on the project's 250 in-the-wild photos.

For ``detector="hog"``, ``"cnn"`` and ``"auto"`` (default ``upsample=1`` and ``max_side``), on every
photo of ``../shared/data/photos`` against its dlib reference faces (``faces.csv``):

- recall: a reference face is found when a detected face is matched to it. Matching is by
  landmarks, one to one, greedily from the closest pair: the mean distance of the five ArcFace points,
  divided by the reference inter-ocular distance (between the two eye centres), must be at most 0.5.
  (Boxes are a poor key: the CNN detector's boxes follow another convention than the HOG ones.) The
  box rule, IoU >= 0.5 with the reference box, is reported beside it.
- false positives: detected faces matched to no reference face;
- landmark error over matched faces: mean and median of that normalized 5-point error;
- time per photo, single process: median and mean milliseconds of ``detect_faces`` on the decoded
  photo (JPEG decoding, timed apart, is excluded), after one warm-up call that loads the models.

Then, HOG only: the same figures for several ``max_side`` values (the downscale threshold), and the
time of one photo upscaled to 4,000 px with and without the downscale, which is how the default
``max_side`` was chosen (docs/detection.md).

Writes ``benchmarks/results/detection.json``.

Usage:
    nice -n 10 python benchmarks/detection.py            # all 250 photos (~20 min on 2 cores: the CNN)
    python benchmarks/detection.py --quick               # check it runs: 10 photos
"""

import argparse
import csv
import pathlib
import statistics
import sys
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path)
from _bench import write_json  # noqa: E402

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "detection.json"
MATCH_MAX_ERROR = 0.5  # normalized mean 5-point error for a detection to count as a reference face
SWEEP_MAX_SIDES = (256, 384, 512, 768, 1024, None)
LARGE_SIDE = 4000


def read_reference(folder):
    """(list of image names, {image: [(box (4,), points (5, 2)), ...]}) from index.csv/faces.csv."""
    with open(folder / "index.csv", newline="") as f:
        images = [row["image"] for row in csv.DictReader(f)]
    faces = {name: [] for name in images}
    with open(folder / "faces.csv", newline="") as f:
        for row in csv.DictReader(f):
            box = np.array([float(row[k]) for k in ("left", "top", "right", "bottom")])
            points = np.array([float(row[f"{a}{i}"]) for i in range(1, 6) for a in "xy"]).reshape(5, 2)
            faces[row["image"]].append((box, points))
    return images, faces


def iou(a, b):
    """IoU of two dlib boxes (inclusive right/bottom)."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    inter = w * h
    return inter / (area(a) + area(b) - inter)


def normalized_error(points, reference):
    iod = np.linalg.norm(reference[1] - reference[0])
    return float(np.linalg.norm(points - reference, axis=1).mean() / iod)


def match(detected, reference):
    """Greedy one-to-one matching by normalized landmark error: [(ref index, det index, error)]."""
    pairs = sorted(
        (normalized_error(d.landmarks, r[1]), i, j)
        for i, r in enumerate(reference) for j, d in enumerate(detected)
    )
    used_r, used_d, matches = set(), set(), []
    for err, i, j in pairs:
        if err <= MATCH_MAX_ERROR and i not in used_r and j not in used_d:
            used_r.add(i)
            used_d.add(j)
            matches.append((i, j, err))
    return matches


def evaluate(images, reference, decoded, detector, max_side):
    from keras_fr.detection import detect_faces

    detect_faces(decoded[images[0]], detector=detector, max_side=max_side)  # warm-up: load the models
    n_ref = found = found_iou = false_pos = 0
    errors, times, per_photo = [], [], []
    for name in images:
        start = time.perf_counter()
        faces = detect_faces(decoded[name], detector=detector, max_side=max_side)
        times.append((time.perf_counter() - start) * 1000.0)
        refs = reference[name]
        matches = match(faces, refs)
        n_ref += len(refs)
        found += len(matches)
        false_pos += len(faces) - len(matches)
        errors += [err for _, _, err in matches]
        found_iou += sum(any(iou(f.box, r[0]) >= 0.5 for f in faces) for r in refs)
        per_photo.append({"image": name, "n_ref": len(refs), "n_detected": len(faces),
                          "matched": len(matches), "ms": round(times[-1], 2),
                          "errors": [round(e, 4) for _, _, e in matches],
                          "detectors": sorted({f.detector for f in faces})})
    return {
        "detector": detector,
        "max_side": max_side,
        "photos": len(images),
        "reference_faces": n_ref,
        "found": found,
        "recall": found / n_ref if n_ref else float("nan"),
        "recall_iou50": found_iou / n_ref if n_ref else float("nan"),
        "false_positives": false_pos,
        "landmark_error_mean": float(np.mean(errors)) if errors else float("nan"),
        "landmark_error_median": float(np.median(errors)) if errors else float("nan"),
        "landmark_error_max": float(np.max(errors)) if errors else float("nan"),
        "ms_median": statistics.median(times),
        "ms_mean": statistics.fmean(times),
        "per_photo": per_photo,
    }


def large_photo(decoded, name, reference, max_sides):
    """HOG time and landmark agreement on one photo upscaled so its longer side is LARGE_SIDE."""
    from PIL import Image

    from keras_fr.detection import detect_faces

    image = decoded[name]
    factor = LARGE_SIDE / max(image.shape[:2])
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    big = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
    ref = reference[name][0][1]
    # reference points at the upscaled size (pixel centres: x' = (x + 0.5) * f - 0.5)
    ref_big = (ref + 0.5) * np.array([size[0] / image.shape[1], size[1] / image.shape[0]]) - 0.5
    rows = []
    for max_side in max_sides:
        start = time.perf_counter()
        faces = detect_faces(big, detector="hog", max_side=max_side)
        ms = (time.perf_counter() - start) * 1000.0
        errs = [normalized_error(f.landmarks, ref_big) for f in faces]
        rows.append({"max_side": max_side, "ms": ms, "n_faces": len(faces),
                     "landmark_error": min(errs) if errs else None})
        print(f"  {LARGE_SIDE}px photo, max_side={max_side}: {ms:8.0f} ms, {len(faces)} faces, "
              f"error {rows[-1]['landmark_error']}", flush=True)
    return {"image": name, "shape": list(big.shape), "rows": rows}


def summary_line(r):
    return (f"{r['detector']:<5} max_side={str(r['max_side']):<5} recall {r['found']}/{r['reference_faces']}"
            f" = {r['recall']:.3f} (IoU>=0.5: {r['recall_iou50']:.3f})  FP {r['false_positives']:>3}"
            f"  lm err mean {r['landmark_error_mean']:.4f} median {r['landmark_error_median']:.4f}"
            f"  ms median {r['ms_median']:.1f} mean {r['ms_mean']:.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 photos, a short max_side sweep")
    parser.add_argument("--photos", default=str(PHOTOS), help="the photos folder (index.csv, faces.csv)")
    parser.add_argument("--detectors", nargs="+", default=["hog", "cnn", "auto"],
                        choices=["hog", "cnn", "auto"])
    parser.add_argument("--no-sweep", action="store_true", help="skip the max_side sweep")
    parser.add_argument("--output", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args(argv)

    from keras_fr.detection import DEFAULT_MAX_SIDE
    from keras_fr.preprocessing import load_image

    folder = pathlib.Path(args.photos)
    if not (folder / "faces.csv").is_file():
        print(f"photos not found at {folder} (../shared/data/photos; never committed)", file=sys.stderr)
        return 2
    images, reference = read_reference(folder)
    if args.quick:
        images = images[::25] + ["celeba/006060.jpg", "cfp/076_profile_01.jpg"]
    decoded, load_ms = {}, []
    for name in images:
        start = time.perf_counter()
        decoded[name] = load_image(folder / "images" / name)
        load_ms.append((time.perf_counter() - start) * 1000.0)

    result = _bench.result_header("detection", sys.argv[1:] if argv is None else argv)
    import dlib

    result.update({"quick": args.quick, "dlib": dlib.__version__, "default_max_side": DEFAULT_MAX_SIDE,
                   "match_max_error": MATCH_MAX_ERROR, "photos": len(images),
                   "decode_ms_median": statistics.median(load_ms), "runs": [], "sweep": []})
    for detector in args.detectors:
        run = evaluate(images, reference, decoded, detector, DEFAULT_MAX_SIDE)
        result["runs"].append(run)
        print(summary_line(run), flush=True)
        write_json(args.output, result)
    if not args.no_sweep:
        sides = (256, 1024, None) if args.quick else SWEEP_MAX_SIDES
        for max_side in sides:
            run = evaluate(images, reference, decoded, "hog", max_side)
            run.pop("per_photo")
            result["sweep"].append(run)
            print("sweep " + summary_line(run), flush=True)
            write_json(args.output, result)
        result["large_photo"] = large_photo(decoded, "celeba/001085.jpg" if not args.quick else images[0],
                                            reference, (512, 1024, 2048, None))
    write_json(args.output, result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
