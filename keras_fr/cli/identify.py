"""``keras-fr identify PHOTO --gallery gallery.npz``: who is this, among the enrolled people?

The gallery says which model and weights made it; they are used again (``--model``/``--weights``
must agree when given). Open set: when the best match scores below the threshold calibrated at
``--far`` (or ``--threshold``), the answer is "unknown".
"""


from keras_fr.applications import canonical_name
from keras_fr.cli._common import CLIError, add_command, add_json_arg, print_json
from keras_fr.cli._recognize import add_recognizer_args, build_recognizer, check_images_exist
from keras_fr.recognition import Gallery

EXAMPLES = """examples:
  keras-fr identify who.jpg --gallery gallery.npz
  keras-fr identify who.jpg --gallery gallery.npz --top-k 3 --far 1e-4 --json
"""


def register(subparsers):
    parser = add_command(subparsers, "identify", "find the person in a photo among those enrolled in a gallery (open set)",
                         "1:N identification against a gallery made by `keras-fr enroll`.", EXAMPLES)
    parser.add_argument("photo", metavar="PHOTO", help="photo (or aligned crop with --aligned)")
    parser.add_argument("--gallery", required=True, help="gallery file from `keras-fr enroll`")
    parser.add_argument("--top-k", type=int, default=5, help="candidates to list (default 5)")
    add_recognizer_args(parser, model_default=None)
    add_json_arg(parser)
    parser.set_defaults(func=run)


def run(args):
    check_images_exist([args.photo])
    if args.top_k < 1:
        raise CLIError(f"--top-k must be a positive integer; got {args.top_k}.")
    gallery = Gallery.load(args.gallery)
    model = args.model or gallery.model
    try:
        if gallery.model is not None and canonical_name(model) != gallery.model:
            raise CLIError(
                f"{args.gallery}: gallery was made with model {gallery.model!r}, not {model!r}."
            )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    weights = args.weights
    if weights is None and not args.random_weights and gallery.weights not in (None, "random"):
        weights = gallery.weights
    if args.random_weights != (gallery.weights == "random"):
        raise CLIError(
            f"{args.gallery}: gallery was made with weights {gallery.weights!r}; "
            + ("identify with the same --random-weights" if gallery.weights == "random"
               else "--random-weights cannot match it")
        )
    recognizer = build_recognizer(args, model=model, weights=weights)
    recognizer.load_gallery(args.gallery)
    result_row = {"photo": args.photo, "model": recognizer.model_name, "weights": recognizer.weights}
    emb = recognizer.embed(args.photo, aligned=args.aligned)
    candidates = recognizer.gallery.search(emb, top_k=args.top_k)[0]
    result_row["candidates"] = [{"name": n, "score": s} for n, s in candidates]
    if recognizer.weights == "random":
        result_row["note"] = "random weights: no decision"
        if args.json:
            print_json(result_row)
        else:
            print("random weights: no decision; nearest: " + ", ".join(f"{n} {s:.4f}" for n, s in candidates))
        return 0
    threshold, far, source = recognizer.threshold_for()
    best_name, best_score = candidates[0]
    name = best_name if best_score >= threshold else None
    result_row.update(identity=name, score=best_score, threshold=threshold, far=far, calibrated_on=source)
    if args.json:
        print_json(result_row)
        return 0
    origin = f"FAR {far:.0e}, calibrated on {source}" if far else source
    if name is None:
        print(f"unknown: best match {best_name} scores {best_score:.4f} < {threshold:.4f} ({origin})")
    else:
        print(f"{name}: score {best_score:.4f} >= {threshold:.4f} ({origin})")
    for rank, (n, s) in enumerate(candidates, 1):
        print(f"  {rank}. {n} {s:.4f}")
    return 0
