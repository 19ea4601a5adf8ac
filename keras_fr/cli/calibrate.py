"""``keras-fr calibrate PAIRS --far 1e-3``: verification thresholds on your own data.

``PAIRS`` is a pairs set (a folder with ``pairs.txt``, an LFW-format ``.txt``, an ``img1,img2,same``
``.csv`` or an insightface ``.bin``), or, with ``--all-pairs``, a folder with one sub-folder per
person: then every pair of its images is used (same-person pairs within a sub-folder, every
cross-person pair as an impostor pair), which gives enough impostor pairs for small FARs.

Thresholds are cosine similarities ("same" when ``score >= threshold``), the convention of
``keras-fr verify`` and ``identify``; each comes with the TAR it gives and the pair counts.
"""

import json

import numpy as np

from keras_fr._atomic import check_writable_output, write_text
from keras_fr.cli._common import CLIError, add_command, add_json_arg, print_json
from keras_fr.cli._recognize import add_recognizer_args, build_recognizer
from keras_fr.cli.enroll import people
from keras_fr.evaluation.calibration import PRESET_FARS, all_pairs_scores, calibrate
from keras_fr.evaluation.pairs import ImagePaths, read_pairs

EXAMPLES = """examples:
  keras-fr calibrate pairs.csv --far 1e-3
  keras-fr calibrate ../shared/data/lfw112 --aligned --far 1e-2 --far 1e-3 --json
  keras-fr calibrate people/ --all-pairs --output thresholds.json
"""


def register(subparsers):
    parser = add_command(subparsers, "calibrate", "verification thresholds at given false-accept rates, on your own pairs",
                         "Calibrate cosine thresholds at FAR targets on a pairs set or a folder of people.", EXAMPLES)
    parser.add_argument("pairs", metavar="PAIRS", help="pairs set, or a folder of people with --all-pairs")
    parser.add_argument("--far", type=float, action="append", default=None, dest="fars",
                        help="FAR target (repeatable; default 1e-2, 1e-3 and 1e-4)")
    parser.add_argument("--all-pairs", action="store_true",
                        help="PAIRS is FOLDER/<person>/<images>: use every pair of images")
    parser.add_argument("--output", "-o", default=None, help="write the thresholds as JSON")
    add_recognizer_args(parser, decisions=False)
    add_json_arg(parser)
    parser.set_defaults(func=run)


def _embed_all(recognizer, paths, aligned):
    rows = []
    for path in paths:
        rows.append(recognizer.embed(path, aligned=aligned)[0])
    return np.stack(rows)


def run(args):
    fars = tuple(args.fars) if args.fars else PRESET_FARS
    for far in fars:
        if not 0.0 < far < 1.0:
            raise CLIError(f"--far must be in (0, 1); got {far}.")
    if args.output:
        try:
            check_writable_output(args.output, "--output")
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if args.all_pairs:

        labels, paths = [], []
        for person, files in people(args.pairs):
            labels += [person] * len(files)
            paths += files
        recognizer = build_recognizer(args)
        emb = _embed_all(recognizer, paths, args.aligned)
        scores, issame = all_pairs_scores(emb, np.array(labels))
    else:

        pairset = read_pairs(args.pairs)
        if not isinstance(pairset.images, ImagePaths):
            raise CLIError(f"{args.pairs}: calibrate reads image files; a .bin set needs `keras-fr eval`.")
        recognizer = build_recognizer(args)
        used = np.unique(pairset.pairs)
        emb = np.zeros((len(pairset.images), recognizer.embedding_size), np.float32)
        emb[used] = _embed_all(recognizer, [pairset.images[int(i)] for i in used], args.aligned)
        scores = np.sum(emb[pairset.pairs[:, 0]] * emb[pairset.pairs[:, 1]], axis=1)
        issame = pairset.issame
    try:
        result = calibrate(scores, issame, fars)
    except ValueError as exc:
        raise CLIError(f"{args.pairs}: {exc}") from None
    report = {"pairs": args.pairs, "model": recognizer.model_name, "weights": recognizer.weights}
    report.update(result.as_dict())
    if recognizer.weights == "random":
        report["note"] = "random weights: these thresholds mean nothing"
    if args.output:
        write_text(args.output, json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.json:
        print_json(report)
        return 0
    print(
        f"{result.genuine_pairs} same-person and {result.impostor_pairs} different-person pairs "
        f"({recognizer.model_name}, weights {recognizer.weights}); cosine thresholds:"
    )
    for far in fars:
        print(
            f"  FAR {far:.0e}: threshold {result.thresholds[far]:.4f}  TAR {result.tar[far]:.4f}  "
            f"(measured FAR {result.far_measured[far]:.2e})"
        )
    return 0
