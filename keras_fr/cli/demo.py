"""``keras-fr demo``: the whole package in a few minutes, ending in one summary table (``make demo``).

Stages, each timed and reported as one or more rows of the final table:

0. ``recognize``: the path a user takes with real photos and real weights: ``keras_fr.FaceRecognizer``
   with the shipped dlib ResNet (``dlib_v1``) detects and aligns the face in raw CelebA photos of
   ``../shared/data/photos``, verifies two different people, verifies a photo against another photo
   of the same person (an aligned crop from ``celeba299``), enrolls a small gallery from other photos
   of each person and identifies the raw photos in it, and rejects a person who is not enrolled.
1. ``build``: MSConvResNet50 and LGAFResNet100, with a pretrained preset when its file is available
   locally (``keras-fr info`` lists them), else random weights, said plainly; parameter counts and
   output shapes with and without the top.
2. ``embed``: a batch of real aligned faces (``../shared/data/celeba299`` when present, else generated
   face-like images, said plainly) -> L2-normalized embeddings.
3. ``save/reload``: ``.keras`` round trip with ``safe_mode=True``; outputs must be identical.
4. ``export``: TFLite and ONNX files of MSConvResNet50, each verified against Keras (``keras_fr.export``).
5. ``fine-tune``: a few steps of ArcFace fine-tuning of a small backbone (IResNet-18's body at
   32x32) on generated identities (``keras_fr.training``, ``keras_fr.losses``), showing the loss going down.
6. ``evaluate``: LFW 10-fold verification on a small subset of ``../shared/data/lfw112``
   (``--pairs-per-fold`` same + different pairs per fold; the full protocol is ``keras-fr eval``).

A stage whose module is not importable (or whose data is absent) is reported as ``skipped: <reason>``;
a stage that raises is reported as ``FAILED: <reason>`` and the command exits with code 1 after
printing the table. ``--quick`` runs every stage on a smaller network (MSConvResNet26 at 64x64) with
fewer images; the test suite runs parts of it (tests/cli/test_cli.py).
"""

import argparse
import os
import pathlib
import shutil
import tempfile
import textwrap
import time
import traceback

import numpy as np

from keras_fr import evaluation, export, losses, recognition, training
from keras_fr._memory import release_memory
from keras_fr.applications import registry
from keras_fr.applications.common import count_parameters as _count_parameters
from keras_fr.applications.common import preprocess_input
from keras_fr.applications.weights import list_weights
from keras_fr.cli._common import CLIError, add_json_arg, build_model, print_json
from keras_fr.cli.embed import embed_images
from keras_fr.preprocessing import load_image

EXAMPLES = """examples:
  keras-fr demo                       # the full demo (what `make demo` runs), a few minutes on 2 cores
  keras-fr demo --quick               # every stage on a smaller network, a couple of minutes
  keras-fr demo --skip export --skip evaluate
  keras-fr demo --data-dir ../shared/data --pairs-per-fold 10 --json
"""

STAGES = ("recognize", "build", "embed", "save/reload", "export", "fine-tune", "evaluate")

#: (display name, registry name, input size) of the demo's networks.
#: The networks the demo builds (registry names) and the input size it builds them at (None: the
#: model's own, from the registry's input spec; the quick demo uses 64x64 to stay fast).
FULL_MODELS = (("msconv_resnet50", None), ("lgaf_resnet100", None))
QUICK_MODELS = (("msconv_resnet26", 64),)


class Skip(Exception):
    """A stage cannot run here (module not importable, data absent); the reason is reported.

    Example:

    >>> raise Skip("LFW not found at ../shared/data/lfw112")  # doctest: +SKIP
    """


# ------------------------------------------------------------------------------------------------
# Generated face-like images
# ------------------------------------------------------------------------------------------------


def synthetic_faces(num_identities, per_identity, image_size=112, seed=0):
    """Generate simple face-like RGB images of distinct "identities" (no real faces needed).

    Each identity has its own skin and hair color, face shape, eye spacing and mouth width, drawn
    around the ArcFace template points; each image of an identity adds small jitter in position,
    lighting and noise. Useful for smoke tests and the demo's fine-tuning stage, not for accuracy.

    Args:
        num_identities: number of identities.
        per_identity: images per identity.
        image_size: side of the square images.
        seed: random seed (same seed, same images).

    Returns:
        `(images, labels)`: uint8 `(N, image_size, image_size, 3)` and int32 `(N,)`, identity-major.

    Example:

    >>> images, labels = synthetic_faces(3, 2, image_size=64)
    >>> images.shape, labels.tolist()
    ((6, 64, 64, 3), [0, 0, 1, 1, 2, 2])
    """
    rng = np.random.default_rng(seed)
    scale = image_size / 112.0
    ys, xs = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / scale
    images, labels = [], []
    for identity in range(num_identities):
        skin = rng.uniform(90, 230, size=3) * np.array([1.0, 0.85, 0.7])
        hair = rng.uniform(10, 120, size=3)
        background = rng.uniform(0, 255, size=3)
        face_w, face_h = rng.uniform(30, 42), rng.uniform(42, 54)
        eye_dx, eye_y = rng.uniform(14, 22), rng.uniform(48, 55)
        eye_r = rng.uniform(3.0, 5.5)
        mouth_w, mouth_y = rng.uniform(9, 17), rng.uniform(88, 95)
        nose_len = rng.uniform(8, 16)
        for _ in range(per_identity):
            dx, dy = rng.normal(0, 1.5, size=2)
            light = rng.uniform(0.8, 1.2)
            cx, cy = 56 + dx, 62 + dy
            img = np.empty((image_size, image_size, 3), np.float32)
            img[:] = background
            face = ((xs - cx) / face_w) ** 2 + ((ys - cy) / face_h) ** 2 <= 1
            img[face] = skin
            hair_mask = face & (ys < cy - face_h * 0.55)
            img[hair_mask] = hair
            for side in (-1, 1):
                eye = (xs - (cx + side * eye_dx)) ** 2 + (ys - (eye_y + dy)) ** 2 <= eye_r**2
                img[eye] = (30, 30, 40)
            nose = (np.abs(xs - cx) < 2.5) & (ys > eye_y + dy + 6) & (ys < eye_y + dy + 6 + nose_len)
            img[nose] = skin * 0.75
            mouth = (np.abs(xs - cx) < mouth_w) & (np.abs(ys - (mouth_y + dy)) < 2.0)
            img[mouth] = (150, 40, 50)
            img = img * light + rng.normal(0, 6, size=img.shape)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(identity)
    return np.stack(images), np.array(labels, dtype=np.int32)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _find_data_dir(explicit):
    """The shared data folder: --data-dir, else ../shared/data from cwd or from the source tree."""
    if explicit:
        return pathlib.Path(explicit)
    candidates = [pathlib.Path.cwd().parent / "shared" / "data"]
    source_root = pathlib.Path(__file__).resolve().parents[2]
    candidates.append(source_root.parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def _preset_tag(model_name):
    """A preset tag whose file is available for ``model_name``, or (None, reason)."""

    known = []
    for entry in list_weights():
        if entry["model"] != model_name:
            continue
        known.append(entry["tag"])
        if entry["available"]:
            return entry["tag"], None
    if known:
        return None, f"preset(s) {', '.join(map(str, known))} known but no file available locally"
    return None, "no preset for this model"


def _real_faces(data_dir, count, image_size):
    """Up to ``count`` aligned CelebA crops (one per identity first), or None if absent."""
    root = data_dir / "celeba299" / "images"
    if not root.is_dir():
        return None

    identities = sorted(p for p in root.iterdir() if p.is_dir())
    chosen = []
    # Two images from each of the first identities, so same-identity similarity can be shown.
    for person in identities:
        files = sorted(person.glob("*.jpg"))[:2]
        if len(files) == 2:
            chosen.extend((f, person.name) for f in files)
        if len(chosen) >= count:
            break
    if not chosen:
        return None
    images = np.stack([_resize(load_image(f), image_size) for f, _ in chosen[:count]])
    labels = np.array([name for _, name in chosen[:count]])
    return images, labels


def _resize(image, size):
    if image.shape[:2] == (size, size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _same_diff_cosine(embeddings, labels):
    sims = embeddings @ embeddings.T
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(labels), dtype=bool)
    s = sims[same & off_diag]
    d = sims[~same]
    return (float(s.mean()) if s.size else float("nan")), (float(d.mean()) if d.size else float("nan"))


def _fmt_shape(shape):
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _report_get(report, key):
    if isinstance(report, dict):
        return report.get(key)
    return getattr(report, key, None)


class _Demo:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.data_dir = _find_data_dir(args.data_dir)
        self.rows = []  # (stage, subject, result, seconds)
        self.failed = False
        self.models = {}  # display name -> (model, registry name, size, weights note)
        self.faces = None
        self.workdir = None

    def say(self, text):
        if not self.args.json:
            print(text, flush=True)

    def row(self, stage, subject, result, seconds):
        self.rows.append((stage, subject, result, seconds))
        self.say(f"  -> {subject}: {result} ({seconds:.1f} s)")

    def run_stage(self, stage, function):
        if stage in (self.args.skip or []):
            self.row(stage, "-", "skipped: --skip", 0.0)
            return
        self.say(f"[{STAGES.index(stage)}/{len(STAGES) - 1}] {stage}")
        start = time.perf_counter()
        try:
            function()
        except Skip as exc:
            self.row(stage, "-", f"skipped: {exc}", time.perf_counter() - start)
        except Exception as exc:  # report, keep going with the next stage
            self.failed = True
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.row(stage, "-", f"FAILED: {type(exc).__name__}: {message[:160]}",
                     time.perf_counter() - start)
            if self.args.verbose:
                traceback.print_exc()
        finally:
            # What a stage built and no later stage needs (a reloaded copy, converter graphs, the
            # recognizer) goes back to the system before the next one starts.
            release_memory()

    # -- stage 0 --------------------------------------------------------------------------------
    def recognize(self):
        import csv

        # Imported here, not at the top: every sub-command module is imported to build the parser,
        # and these pull in TensorFlow and dlib (keras-fr --help stays fast).

        photos = os.path.join(self.data_dir or "", "photos")
        celeba = os.path.join(self.data_dir or "", "celeba299", "images")
        if not (self.data_dir and os.path.isfile(os.path.join(photos, "index.csv")) and os.path.isdir(celeba)):
            raise Skip("real photos not found (../shared/data/photos and celeba299)")
        people = []  # (raw photo, identity, other aligned crops of that person)
        with open(os.path.join(photos, "index.csv"), newline="") as f:
            for row in csv.DictReader(f):
                if row["source"] != "celeba" or row["n_faces"] != "1":
                    continue
                identity = row["identity"].split("_", 1)[1]
                folder = os.path.join(celeba, identity)
                others = sorted(n for n in os.listdir(folder) if n != os.path.basename(row["image"]))
                if len(others) >= 3:
                    people.append((os.path.join(photos, "images", row["image"]), identity,
                                   [os.path.join(folder, n) for n in others[:3]]))
        count = 3 if self.quick else 6
        if len(people) < count + 1:
            raise Skip("not enough photos")
        start = time.perf_counter()
        fr = recognition.FaceRecognizer()
        self.row("recognize", "FaceRecognizer()", f"{fr.model_name} with weights {fr.weights} "
                 f"({fr.spec.description}; default FAR {fr.far:.0e})", time.perf_counter() - start)
        photo_a, id_a, crops_a = people[0]
        start = time.perf_counter()
        faces = fr.detect(photo_a)
        h, w = load_image(photo_a).shape[:2]
        box = ", ".join(f"{v:.0f}" for v in faces[0].box)
        self.row("recognize", f"detect {os.path.basename(photo_a)} ({w}x{h})",
                 f"{len(faces)} face, box [{box}], score {faces[0].score:.2f}, 5 landmarks + 68-point shape",
                 time.perf_counter() - start)
        start = time.perf_counter()
        result = fr.verify(photo_a, people[1][0])
        self.row("recognize", "verify two photos of different people", str(result), time.perf_counter() - start)
        start = time.perf_counter()
        emb = fr.embed(photo_a)
        crop = fr.embed(load_image(crops_a[0]), aligned=True)
        score = float(emb[0] @ crop[0])
        threshold = fr.threshold_for()[0]
        verdict = "same person" if score >= threshold else "different people"
        self.row("recognize", f"verify a photo and another photo of person {id_a}",
                 f"{verdict}: score {score:.4f} vs threshold {threshold:.4f}", time.perf_counter() - start)
        start = time.perf_counter()
        enrolled = people[:count]
        for _, identity, crops in enrolled:
            fr.enroll(identity, [load_image(c) for c in crops], aligned=True)
        hits = sum(fr.identify(photo).name == identity for photo, identity, _ in enrolled)
        stranger = fr.identify(people[count][0])
        self.row("recognize", f"identify raw photos in a gallery of {count} people (3 other photos each)",
                 f"{hits}/{count} found; a person not enrolled -> "
                 f"{'unknown' if stranger.name is None else 'WRONGLY ' + stranger.name} "
                 f"(best {stranger.score:.4f} < {stranger.threshold:.4f})", time.perf_counter() - start)
        if hits < count - 1 or stranger.name is not None:
            raise RuntimeError(f"identification found {hits}/{count}; stranger -> {stranger.name}")

    # -- stage 1 --------------------------------------------------------------------------------
    def build(self):
        for name, size in QUICK_MODELS if self.quick else FULL_MODELS:
            record = registry.get_record(name)
            display, default_size = record.builder, record.input_spec.size
            size = size or default_size
            start = time.perf_counter()
            kwargs = {} if size == default_size else {"input_shape": (size, size, 3)}
            tag, reason = _preset_tag(name)
            weights_note = None
            model = None
            if tag is not None:
                try:
                    model = build_model(name, tag, **kwargs)
                    weights_note = f"pretrained ({tag})"
                except Exception as exc:
                    reason = f"preset {tag!r} failed to load: {str(exc).splitlines()[0][:100]}"
            if model is None:
                model = build_model(name, None, **kwargs)
                weights_note = f"RANDOM weights ({reason})"
            headless = build_model(name, None, include_top=False, **kwargs)
            self.models[display] = (model, name, size, weights_note)
            result = (
                f"{_count_parameters(model):,} parameters (PyTorch-comparable count); "
                f"{size}x{size} input -> "
                f"{_fmt_shape(model.output_shape if not isinstance(model.output_shape, list) else model.output_shape[0])}"
                f" with top, {_fmt_shape(headless.output_shape)} without; {weights_note}"
            )
            del headless
            self.row("build", display, result, time.perf_counter() - start)
        if not self.models:
            raise Skip("no model could be built")

    # -- stage 2 --------------------------------------------------------------------------------
    def embed(self):
        if not self.models:
            raise Skip("no model built")
        count = 4 if self.quick else 16
        for display, (model, name, size, _) in self.models.items():
            start = time.perf_counter()
            real = _real_faces(self.data_dir, count, size)
            if real is not None:
                images, labels = real
                source = f"{len(images)} real CelebA faces ({self.data_dir / 'celeba299'})"
            else:
                images, labels = synthetic_faces(count // 2, 2, image_size=size, seed=1)
                source = (f"{len(images)} GENERATED face-like images (no real data at "
                          f"{self.data_dir / 'celeba299'})")
            embeddings = embed_images(model, images, batch_size=16)
            norms = np.linalg.norm(embeddings, axis=1)
            same, diff = _same_diff_cosine(embeddings, labels)
            if display not in self.faces_by_model:
                self.faces_by_model[display] = images
            self.row(
                "embed", display,
                f"{source} -> {embeddings.shape}, norms {norms.min():.4f}..{norms.max():.4f}; "
                f"mean cosine same person {same:.3f}, different {diff:.3f}",
                time.perf_counter() - start,
            )

    # -- stage 3 --------------------------------------------------------------------------------
    def save_reload(self):
        import keras

        if not self.models:
            raise Skip("no model built")
        for display, (model, name, size, _) in self.models.items():
            start = time.perf_counter()
            images = self.faces_by_model.get(display)
            if images is None:
                images, _ = synthetic_faces(2, 2, image_size=size, seed=2)

            x = preprocess_input(images[:4])
            path = os.path.join(self.workdir, f"{name}.keras")
            model.save(path)
            size_mb = os.path.getsize(path) / 2**20
            reloaded = keras.saving.load_model(path, compile=False, safe_mode=True)
            before = np.asarray(model(x, training=False))
            after = np.asarray(reloaded(x, training=False))
            diff = float(np.max(np.abs(before - after)))
            if diff != 0.0:
                raise RuntimeError(f"{display}: reloaded outputs differ by {diff:.3g}")
            self.row("save/reload", display,
                     f"{size_mb:.0f} MB .keras, safe_mode reload: outputs identical (max diff 0)",
                     time.perf_counter() - start)
            del reloaded

    # -- stage 4 --------------------------------------------------------------------------------
    def export(self):
        display = next(iter(self.models), None)
        if display is None:
            raise Skip("no model built")
        model = self.models[display][0]
        for fmt, function_name, suffix in (("TFLite", "to_tflite", ".tflite"), ("ONNX", "to_onnx", ".onnx")):
            start = time.perf_counter()
            function = getattr(export, function_name)
            try:
                report = function(model, os.path.join(self.workdir, display + suffix))
            except ImportError as exc:
                self.row("export", f"{display} {fmt}", f"skipped: {exc}", time.perf_counter() - start)
                continue
            size = _report_get(report, "size_bytes") or _report_get(report, "size")
            diff = _report_get(report, "max_abs_diff")
            cosine = _report_get(report, "min_cosine")
            parts = []
            if size is not None:
                parts.append(f"{size / 2**20:.0f} MB")
            if diff is not None:
                parts.append(f"max |diff| {diff:.2e}")
            if cosine is not None:
                parts.append(f"min cosine {cosine:.6f}")
            self.row("export", f"{display} {fmt}", "verified: " + ", ".join(parts) if parts else str(report),
                     time.perf_counter() - start)

    # -- stage 5 --------------------------------------------------------------------------------
    def fine_tune(self):
        import keras


        start = time.perf_counter()
        num_ids, per_id = (4, 4) if self.quick else (8, 6)
        epochs = 3 if self.quick else 5
        size = 32
        images, labels = synthetic_faces(num_ids, per_id, image_size=size, seed=3)
        x = preprocess_input(images)
        keras.utils.set_random_seed(0)
        # A small, fast backbone: IResNet-18's body at 32x32 with global average pooling (512-d).
        backbone = build_model("iresnet18", None, include_top=False, pooling="avg",
                               input_shape=(size, size, 3))
        model = training.FaceTrainingModel(backbone, num_ids)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=losses.ArcFaceLoss(scale=16.0, margin=0.2),
        )
        history = model.fit(x, labels, batch_size=16, epochs=epochs, shuffle=True, verbose=0)
        loss = history.history["loss"]
        if not np.all(np.isfinite(loss)):
            raise RuntimeError(f"non-finite training loss {loss}")
        embedding_shape = _fmt_shape(model.backbone.output_shape)
        self.row(
            "fine-tune", f"IResNet18 body {size}x{size}, {num_ids} generated ids x {per_id}",
            f"ArcFace (s=16, m=0.2) loss {loss[0]:.2f} -> {loss[-1]:.3f} in {epochs} epochs of "
            f"model.fit; .backbone is the {embedding_shape} embedding model",
            time.perf_counter() - start,
        )

    # -- stage 6 --------------------------------------------------------------------------------
    def evaluate(self):
        start = time.perf_counter()
        lfw = self.data_dir / "lfw112"
        if not (lfw / "pairs.txt").is_file():
            raise Skip(f"LFW not found at {lfw} (never committed; see README)")
        display = next(iter(self.models), None)
        if display is None:
            raise Skip("no model built")
        model, name, size, weights_note = self.models[display]
        if size != 112:
            import keras

            # LFW crops are 112x112: resize (after preprocessing) for the small --quick network.
            inputs = keras.Input((112, 112, 3))
            model = keras.Model(inputs, model(keras.layers.Resizing(size, size)(inputs)))
        per_fold = self.args.pairs_per_fold or (3 if self.quick else 5)
        subset = _lfw_subset(lfw, os.path.join(self.workdir, "lfw_subset"), per_fold)
        # Keras's progress bar (stdout, with colour codes) only on a terminal, never in a log
        import sys

        progress = 1 if (not self.args.json and sys.stdout.isatty()) else 0
        result = evaluation.evaluate_pairs(model, subset, batch_size=32, verbose=progress)
        accuracy = _report_get(result, "accuracy")
        std = _report_get(result, "accuracy_std")
        note = "" if weights_note.startswith("pretrained") else " (random weights: chance level expected)"
        self.row(
            "evaluate", f"{display} on LFW subset",
            f"{20 * per_fold} pairs ({per_fold} same + {per_fold} different per fold, 10 folds): "
            f"accuracy {accuracy:.4f} +- {std:.4f}{note}",
            time.perf_counter() - start,
        )


def _lfw_subset(lfw, out_dir, per_fold):
    """Write an LFW-format folder with the first ``per_fold`` same and different pairs per fold."""
    os.makedirs(out_dir, exist_ok=True)
    with open(lfw / "pairs.txt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    folds, per = (int(v) for v in lines[0].split()[:2])
    body = lines[1:]
    chosen = []
    for fold in range(folds):
        block = body[fold * 2 * per : (fold + 1) * 2 * per]
        chosen.extend(block[:per_fold])
        chosen.extend(block[per : per + per_fold])
    with open(os.path.join(out_dir, "pairs.txt"), "w", encoding="utf-8") as handle:
        handle.write(f"{folds}\t{per_fold}\n" + "\n".join(chosen) + "\n")
    link = os.path.join(out_dir, "images")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(lfw / "images"), link)
    return out_dir


def _print_table(rows):
    headers = ("stage", "subject", "result", "s")
    body = [(a, b, c, f"{d:.1f}") for a, b, c, d in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    widths[2] = min(widths[2], 90)

    def fmt(cells):
        return " | ".join(str(c).ljust(w) if i != 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print()
    print("keras_fr demo summary")
    print(fmt(headers))
    print("-+-".join("-" * w for w in widths))
    for row in body:
        result = row[2]
        # Long results wrap onto continuation lines within the result column.
        chunks = textwrap.wrap(result, widths[2], break_on_hyphens=False) or [""]
        print(fmt((row[0], row[1], chunks[0], row[3])))
        for chunk in chunks[1:]:
            print(fmt(("", "", chunk, "")))


def register(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="run the whole package end to end and print one summary table (make demo)",
        description="Build MSConvResNet50 and LGAFResNet100, embed faces, save/reload, export to "
        "TFLite and ONNX with parity, fine-tune briefly and evaluate on an LFW subset; one summary "
        "table at the end. Stages whose module or data is missing are reported as skipped.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="every stage on a smaller network (MSConvResNet26 at 64x64 instead of MSConvResNet50 and LGAFResNet100) with fewer images")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding celeba299/ and lfw112/ (default: ../shared/data)")
    parser.add_argument("--pairs-per-fold", type=int, default=None,
                        help="LFW same and different pairs per fold in the evaluate stage "
                        "(default 5, i.e. 100 pairs; 3 with --quick)")
    parser.add_argument("--skip", action="append", choices=STAGES, default=[],
                        help="leave out a stage (repeatable)")
    parser.add_argument("--workdir", default=None,
                        help="keep the files the demo writes (.keras, .tflite, .onnx) in this folder "
                        "(default: a temporary folder, removed)")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failed stages")
    add_json_arg(parser)
    parser.set_defaults(func=run)


def run(args):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if args.pairs_per_fold is not None and not 1 <= args.pairs_per_fold <= 300:
        raise CLIError(f"--pairs-per-fold must be between 1 and 300; got {args.pairs_per_fold}.")
    demo = _Demo(args)
    demo.faces_by_model = {}
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        demo.workdir = args.workdir
    else:
        demo.workdir = tempfile.mkdtemp(prefix="keras-fr-demo-")
    total_start = time.perf_counter()
    import keras

    demo.say(f"keras_fr demo ({'quick' if args.quick else 'full'}), Keras {keras.__version__}, "
             f"backend {keras.backend.backend()}; data: {demo.data_dir}")
    try:
        demo.run_stage("recognize", demo.recognize)
        demo.run_stage("build", demo.build)
        demo.run_stage("embed", demo.embed)
        demo.run_stage("save/reload", demo.save_reload)
        # Export and evaluation use the first network only: the others are released.
        for display in list(demo.models)[1:]:
            del demo.models[display]
            demo.faces_by_model.pop(display, None)
        demo.run_stage("export", demo.export)
        demo.run_stage("fine-tune", demo.fine_tune)
        demo.run_stage("evaluate", demo.evaluate)
    finally:
        if not args.workdir:
            shutil.rmtree(demo.workdir, ignore_errors=True)
    total = time.perf_counter() - total_start
    demo.rows.append(("total", "-", "FAILED stages above" if demo.failed else "ok", total))
    if args.json:
        print_json({"rows": [dict(zip(("stage", "subject", "result", "seconds"), r)) for r in demo.rows],
                    "failed": demo.failed})
    else:
        _print_table(demo.rows)
    return 1 if demo.failed else 0
