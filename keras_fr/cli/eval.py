"""``keras-fr eval``: verification accuracy (insightface's 10-fold protocol), IJB TAR@FAR, identification.

Verification sets (``--pairs``, repeatable): a folder with LFW's ``pairs.txt`` and ``images/``, a CSV of
pairs (``img1,img2,same``), or an insightface ``.bin`` (lfw, cfp_fp, agedb_30, calfw, cplfw, vgg2_fp),
read without unpickling code. Results: printed, ``--output`` JSON report, ``--roc`` PNG.
"""

import argparse
import os
import sys

from keras_fr.applications.specs import input_spec
from keras_fr.cli._common import (
    RANDOM,
    CLIError,
    add_batch_size_arg,
    add_json_arg,
    add_model_args,
    add_output_arg,
    build_model,
    check_output,
    model_from_args,
    print_json,
)
from keras_fr import evaluation
from keras_fr.evaluation.identification import read_image_list
from keras_fr.evaluation.report import _jsonable

EXAMPLES = """examples:
  keras-fr eval --model iresnet50 --weights model.weights.h5 --pairs ../shared/data/lfw112
  keras-fr eval --model msconv_resnet50 --weights ms1mv3 --pairs lfw.bin --pairs cfp_fp.bin \\
      --pairs agedb_30.bin --output report.json --roc roc.png
  keras-fr eval --model iresnet50 --weights w.h5 --ijb-images IJBC/aligned \\
      --ijb-meta ijbc_face_tid_mid.txt --ijb-pairs ijbc_template_pair_label.txt
  keras-fr eval --model iresnet50 --weights w.h5 --gallery gallery.txt --probe probe.txt

protocol: flip test-time augmentation (unless --no-flip), squared Euclidean distance of L2-normalized
embeddings, thresholds 0..4 step 0.01, 10 contiguous folds, threshold chosen on the other 9 folds.
Printed thresholds are cosine similarities ("same" when cosine > t), as in `keras-fr verify`; the
squared distance d of the protocol is 2 - 2 * cosine (the JSON report keeps both).
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "eval",
        help="verification accuracy (LFW-style 10 folds), IJB TAR@FAR, identification Rank-k",
        description=__doc__.replace("``", ""),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument(
        "--pairs",
        action="append",
        default=[],
        metavar="PATH",
        help="verification set: folder with pairs.txt, .txt, .csv or .bin (repeatable)",
    )
    add_batch_size_arg(parser, default=64)
    parser.add_argument("--no-flip", action="store_true", help="no flip test-time augmentation")
    parser.add_argument("--nfolds", type=int, default=10, help="folds of the protocol (default 10)")
    add_output_arg(parser, help="JSON report file")
    parser.add_argument("--roc", default=None, metavar="PNG", help="save the ROC curves as a PNG")
    add_json_arg(parser)
    ijb = parser.add_argument_group("IJB-B/C 1:1 verification")
    ijb.add_argument("--ijb-images", metavar="DIR", help="folder of aligned 112x112 crops named as in --ijb-meta")
    ijb.add_argument("--ijb-meta", metavar="FILE", help="*_face_tid_mid.txt (image, template id, media id)")
    ijb.add_argument("--ijb-pairs", metavar="FILE", help="*_template_pair_label.txt (t1, t2, label)")
    ijb.add_argument(
        "--ijb-scores",
        metavar="FILE",
        help="*_name_5pts_score.txt: multiply each image feature by its detector score (insightface D1)",
    )
    ijb.add_argument(
        "--ijb-normalize-images",
        action="store_true",
        help="L2-normalize image features before pooling (default keeps the norm, as insightface)",
    )
    ident = parser.add_argument_group("closed-set identification")
    ident.add_argument("--gallery", metavar="LIST", help="gallery list: 'path label' lines or CSV path,label")
    ident.add_argument("--probe", metavar="LIST", help="probe list, same format")
    ident.add_argument("--image-root", metavar="DIR", help="root of relative paths in the lists")
    ident.add_argument("--ranks", default="1,3,5", help="comma-separated ranks (default 1,3,5)")
    parser.set_defaults(func=run)
    return parser


def _set_name(path, taken):
    path = os.fspath(path).rstrip("/\\")
    base = os.path.basename(path)
    name = os.path.splitext(base)[0] if os.path.isfile(path) else base
    name = name or "pairs"
    unique, k = name, 2
    while unique in taken:
        unique, k = f"{name}_{k}", k + 1
    return unique


def _check_args(args):
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be a positive integer; got {args.batch_size}.")
    if args.nfolds < 1:
        raise CLIError(f"--nfolds must be a positive integer; got {args.nfolds}.")
    ijb = [args.ijb_images, args.ijb_meta, args.ijb_pairs]
    if any(ijb) and not all(ijb):
        raise CLIError("IJB evaluation needs all of --ijb-images, --ijb-meta and --ijb-pairs.")
    if bool(args.gallery) != bool(args.probe):
        raise CLIError("identification needs both --gallery and --probe.")
    if not (args.pairs or all(ijb) or args.gallery):
        raise CLIError("nothing to evaluate: give --pairs PATH, the --ijb-* files, or --gallery and --probe.")
    try:
        ranks = tuple(int(r) for r in args.ranks.split(","))
    except ValueError:
        raise CLIError(f"--ranks must be comma-separated integers; got {args.ranks!r}.") from None
    if any(r < 1 for r in ranks):
        raise CLIError(f"--ranks must be positive; got {args.ranks!r}.")
    if args.ijb_scores and not all(ijb):
        raise CLIError("--ijb-scores needs --ijb-images, --ijb-meta and --ijb-pairs.")
    for path in [*args.pairs, *[p for p in ijb if p], args.ijb_scores, args.gallery, args.probe]:
        if path and not os.path.exists(path):
            raise CLIError(f"file not found: {path}")
    for out, option in ((args.output, "--output"), (args.roc, "--roc")):
        if out:
            check_output(out, option)  # before any embedding is computed
    return ranks


def run(args):
    ranks = _check_args(args)
    # all sets are read (and checked) before the model is built: errors come early
    sets = {}
    for path in args.pairs:
        sets[_set_name(path, sets)] = evaluation.read_pairs(path)
    lists = None
    if args.gallery:  # read (every image checked) before the model is built, like the pairs

        lists = (read_image_list(args.gallery, args.image_root), read_image_list(args.probe, args.image_root))
    quiet = args.json
    spec = input_spec(args.model)
    model, weights_label = model_from_args(args, build=build_model)
    if weights_label == RANDOM:
        print("note: --random-weights: the numbers below mean nothing", file=sys.stderr)
    flip = not args.no_flip
    # Keras's progress bar (stdout, colour codes) on a terminal only, never in a redirected log
    verbose = 1 if (not quiet and sys.stdout.isatty()) else 0
    report = {
        "model": args.model,
        "weights": weights_label,
        "flip": flip,
        "protocol": "insightface 10-fold: squared L2 distance of unit embeddings, thresholds "
        "np.arange(0, 4, 0.01), contiguous folds, best threshold on the other folds",
        "verification": {},
    }
    curves = {}
    for name, pairs in sets.items():
        if not quiet:
            print(f"{name}: {len(pairs)} pairs, {len(pairs.images)} images")
        result = evaluation.evaluate_pairs(
            model, pairs, batch_size=args.batch_size, flip=flip, nfolds=args.nfolds, verbose=verbose,
            input_spec=spec,
        )
        report["verification"][name] = dict(result.to_dict(), source=pairs.source)
        curves[name] = (result.roc_fpr, result.roc_tpr)
        if not quiet:
            print(f"{name}: {result.summary()}")
    if args.ijb_meta:
        result = evaluation.evaluate_ijb(
            model,
            args.ijb_images,
            args.ijb_meta,
            args.ijb_pairs,
            batch_size=args.batch_size,
            flip=flip,
            faceness_scores=args.ijb_scores,
            normalize_images=args.ijb_normalize_images,
            verbose=verbose,
            input_spec=spec,
        )
        report["ijb"] = result.to_dict()
        curves["ijb"] = (result.fpr, result.tpr)
        if not quiet:
            print(result.summary())
    if args.gallery:
        result = evaluation.evaluate_identification(
            model,
            tuple(lists[0]),
            tuple(lists[1]),
            image_dir=args.image_root,
            batch_size=args.batch_size,
            flip=flip,
            ranks=ranks,
            verbose=verbose,
            input_spec=spec,
        )
        report["identification"] = result.to_dict()
        if not quiet:
            print(result.summary())
    if args.output:
        evaluation.write_report(args.output, report)
        if not quiet:
            print(f"report: {args.output}")
    if args.roc:
        if curves:
            evaluation.plot_roc(curves, args.roc, title=f"{args.model} ROC")
            if not quiet:
                print(f"ROC: {args.roc}")
        else:
            print("note: --roc ignored: identification has no ROC", file=sys.stderr)
    if quiet:

        print_json(_jsonable(report))
    return 0
