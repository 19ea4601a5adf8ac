"""``keras-fr verify A B``: are the faces in two photos the same person?

Each photo is searched for a face (``keras_fr.detection``), aligned the way the model expects and
embedded; the cosine similarity of the two embeddings is compared with the preset's threshold
calibrated at ``--far`` (or ``--threshold``). With ``--aligned`` the images are ArcFace-aligned crops;
with ``--landmarks`` the five points come from a file instead of the detector.

The default model is keras_fr's real pretrained recognizer; a random model is used only with
``--random-weights``, and then only the score is printed, never a decision.
"""

import argparse

import numpy as np

from keras_fr.cli._common import CLIError, add_json_arg, print_json
from keras_fr.cli._recognize import add_recognizer_args, build_recognizer, check_images_exist
from keras_fr.preprocessing import find_landmarks, load_image, read_landmarks

EXAMPLES = """examples:
  keras-fr verify a.jpg b.jpg                        # photos: detect, align, embed, decide
  keras-fr verify a.jpg b.jpg --far 1e-4 --json      # a stricter calibrated threshold
  keras-fr verify crop1.jpg crop2.jpg --aligned      # ArcFace-aligned 112x112 crops
  keras-fr verify a.jpg b.jpg --model iresnet50 --weights model.weights.h5 --threshold 0.35
  keras-fr verify a.jpg b.jpg --runtime keras        # embed with Keras, not the cached TFLite file

exit code 0 with the decision printed; 2 with one line for a user error (no face found, unreadable
photo, unknown model, a model without real weights and no --random-weights, ...).
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "verify",
        help="are the faces in two photos the same person?",
        description="Detect, align and embed the face in each of two photos and compare them "
        "(cosine similarity against a calibrated threshold).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image1", metavar="A", help="first photo (or aligned crop with --aligned)")
    parser.add_argument("image2", metavar="B", help="second photo")
    add_recognizer_args(parser)
    parser.add_argument("--landmarks", default=None, metavar="FILE",
                        help="five landmarks per photo (JSON or text) instead of the detector")
    add_json_arg(parser)
    parser.set_defaults(func=run)


def _faces_from_landmarks(recognizer, paths, landmarks_file):
    table = read_landmarks(landmarks_file)
    crops = []
    for path in paths:
        points = find_landmarks(table, path, landmarks_file)
        if points is None:
            raise CLIError(f"{landmarks_file}: no landmarks for {path!r}.")
        face = type("Face", (), {"landmarks": np.asarray(points, np.float32), "shape68": None})()
        crops.append(recognizer.align(load_image(path), face))
    return np.stack(crops)


def run(args):
    paths = [args.image1, args.image2]
    check_images_exist(paths)
    if args.landmarks and args.aligned:
        raise CLIError("--landmarks and --aligned exclude each other.")
    recognizer = build_recognizer(args)
    decide = recognizer.weights != "random" or args.threshold is not None
    if decide:
        threshold, far, source = recognizer.threshold_for()
    if args.landmarks:
        emb = recognizer.embed_crops(_faces_from_landmarks(recognizer, paths, args.landmarks))
    else:
        emb = recognizer.embed(paths, aligned=args.aligned)
    score = float(np.clip(emb[0] @ emb[1], -1.0, 1.0))
    result = {
        "image1": args.image1,
        "image2": args.image2,
        "model": recognizer.model_name,
        "weights": recognizer.weights,
        "score": score,
        "score_kind": "cosine similarity",
    }
    if recognizer.weights == "random":
        result["note"] = "random weights (--random-weights): the score means nothing"
    if decide and recognizer.weights != "random":
        same = score >= threshold
        result.update(threshold=threshold, far=far, calibrated_on=source, same=bool(same))
    if args.json:
        print_json(result)
        return 0
    if "same" not in result:
        print(f"score {score:.4f} (cosine) -- random weights: no decision is made")
        return 0
    verdict = "same person" if result["same"] else "different people"
    relation = ">=" if result["same"] else "<"
    origin = f"FAR {far:.0e}, calibrated on {source}" if far else source
    print(f"{verdict}: score {score:.4f} {relation} {threshold:.4f} ({origin})")
    return 0
