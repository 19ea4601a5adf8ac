"""``keras-fr enroll FOLDER --output gallery.npz``: build a gallery, one sub-folder per person.

Every image under ``FOLDER/<person>/`` is detected, aligned and embedded; the gallery file records
the model and weights, so ``keras-fr identify`` uses the same ones. A photo without a face (or with
several, unless ``--face`` says which) is an error naming it; ``--skip-bad`` skips such photos and
counts them instead.
"""

import os

from keras_fr._atomic import check_writable_output
from keras_fr.cli._common import CLIError, add_command, add_json_arg, print_json
from keras_fr.cli._recognize import add_recognizer_args, build_recognizer
from keras_fr.preprocessing import list_images

EXAMPLES = """examples:
  keras-fr enroll people/ --output gallery.npz          # people/alice/*.jpg, people/bob/*.jpg
  keras-fr enroll crops/ --aligned --output g.npz --skip-bad
"""


def register(subparsers):
    parser = add_command(subparsers, "enroll", "build a gallery from a folder with one sub-folder of photos per person",
                         "Enroll people for 1:N identification: FOLDER/<person>/<photos>.", EXAMPLES)
    parser.add_argument("folder", metavar="FOLDER", help="one sub-folder per person")
    parser.add_argument("--output", "-o", required=True, help="gallery file to write (.npz)")
    add_recognizer_args(parser, decisions=False)
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip (and count) photos that cannot be read or hold no usable face")
    add_json_arg(parser)
    parser.set_defaults(func=run)


def people(folder):
    """``[(person, [image paths])]`` of ``folder``, sorted; CLIError when there is nobody."""

    if not os.path.isdir(folder):
        raise CLIError(f"FOLDER {folder!r} is not a folder (expected one sub-folder per person).")
    found = []
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        if os.path.isdir(sub) and not name.startswith("."):
            try:
                found.append((name, list_images([sub])))
            except ValueError:
                continue  # an empty sub-folder: nobody to enroll there
    if not found:
        raise CLIError(f"{folder!r} holds no sub-folder with images (expected FOLDER/<person>/<photos>).")
    return found


def run(args):
    if not args.output.endswith(".npz"):
        raise CLIError(f"--output must end in .npz; got {args.output!r}.")
    try:
        check_writable_output(args.output, "--output")
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    entries = people(args.folder)
    recognizer = build_recognizer(args)
    skipped = []
    for person, paths in entries:
        embeddings = []
        for path in paths:
            try:
                embeddings.append(recognizer.embed(path, aligned=args.aligned)[0])
            except ValueError as exc:
                if not args.skip_bad:
                    raise CLIError(f"{exc} (use --skip-bad to skip such photos)") from None
                skipped.append((path, str(exc)))
        if embeddings:
            recognizer.gallery.add(person, embeddings)
    if not len(recognizer.gallery):
        raise CLIError(f"no face could be enrolled from {args.folder!r} ({len(skipped)} photos skipped).")
    recognizer.gallery.save(args.output)
    summary = {
        "output": args.output,
        "people": len(recognizer.gallery.names),
        "faces": len(recognizer.gallery),
        "skipped": len(skipped),
        "model": recognizer.model_name,
        "weights": recognizer.weights,
    }
    if args.json:
        summary["skipped_files"] = [p for p, _ in skipped]
        print_json(summary)
    else:
        print(
            f"enrolled {summary['faces']} faces of {summary['people']} people into {args.output} "
            f"({recognizer.model_name}, weights {recognizer.weights}); skipped {len(skipped)}"
        )
    return 0
