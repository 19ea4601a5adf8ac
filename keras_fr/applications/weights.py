"""The pretrained-weights registry: ``weights="TAG"`` for keras_fr applications, offline first.

Presets are data: one small JSON manifest per (model, tag) in the package ``keras_fr.presets`` (the
repository's ``weights/`` folder), giving the weights file name, its sha256 and URL (empty until a
file is published), the source checkpoint and the exact ``keras-fr convert`` command that produced
it, the license terms, the input specification and metrics labelled by origin.

The project ships the files it may redistribute (today dlib's converted recognizer, CC0) beside
their manifests, with their sha256. The other presets (checkpoints whose licenses keep them out of
the repository, and keras_fr's own weights until they are published) have an empty ``url`` and, until
a file exists, an empty ``sha256``: such a preset becomes usable when its file is produced locally with
``keras-fr convert`` (from the public PyTorch checkpoint, where one exists) or served by a mirror.

``get_weights_file(model_name, tag)`` resolves a preset in this order:

0. The file shipped inside the package, beside its manifest (``weights/`` in the repository), for the
   presets whose weights the project publishes itself. Always checked against the manifest's sha256
   (a shipped file without a published hash is refused).
1. ``$KERAS_FR_WEIGHTS_DIR/<file>``: a file the user supplies. It is the user's own, so it is trusted
   as is when the manifest has no sha256; when one is published, a mismatch is an error (the file is
   left untouched).
2. ``$KERAS_HOME/models/<file>`` (the Keras cache, ``~/.keras/models`` by default). It is checked
   against the manifest's sha256, or else against the sha256 recorded beside it when it was
   downloaded (``<file>.sha256``); a mismatch means a corrupted cache: the file is deleted and
   downloaded again. A cached file with no hash to check (placed there by hand) is trusted like 1.
3. A download from ``$KERAS_FR_WEIGHTS_URL/<file>``, else from the manifest's ``url``, through
   ``keras.utils.get_file`` with sha256 verification. The expected hash is the manifest's; when the
   manifest has none (no file published), the mirror must serve ``<file>.sha256`` beside the file,
   or nothing is downloaded. A file whose hash does not match is removed and an error is raised.

If none applies, the error names the preset, says whether a public file exists, and gives the exact
``keras-fr convert`` command that produces the file.
"""

import importlib.resources
import json
import os
import re
import urllib.error
import urllib.request

from keras_fr._atomic import file_sha256, write_text

#: Environment variables read at call time.
WEIGHTS_DIR_ENV = "KERAS_FR_WEIGHTS_DIR"
WEIGHTS_URL_ENV = "KERAS_FR_WEIGHTS_URL"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _manifests():
    """All manifests, keyed by (model, tag)."""
    found = {}
    for entry in importlib.resources.files("keras_fr.presets").iterdir():
        if not entry.name.endswith(".json"):
            continue
        manifest = json.loads(entry.read_text(encoding="utf-8"))
        found[(manifest["model"], manifest["tag"])] = manifest
    return found


def get_manifest(model_name, tag):
    """The manifest of one preset.

    Args:
        model_name: registry name, e.g. ``"iresnet100"``.
        tag: preset tag, e.g. ``"ms1mv3_arcface"``.

    Returns:
        The manifest as a dict.

    Raises:
        ValueError: unknown model or tag; the message lists the known ones.

    Example:

    >>> get_manifest("msconv_resnet50", "ms1mv3")["file"]
    'msconv_resnet50_ms1mv3.weights.h5'
    """
    manifests = _manifests()
    if (model_name, tag) in manifests:
        return dict(manifests[(model_name, tag)])
    tags = sorted(t for m, t in manifests if m == model_name)
    if tags:
        raise ValueError(
            f"unknown weights preset {tag!r} for {model_name}; known tags: {', '.join(tags)} "
            "(or pass the path of a .weights.h5 / .keras file)."
        )
    models = sorted({m for m, _ in manifests})
    raise ValueError(
        f"no weights presets for model {model_name!r} (tag {tag!r}); models with presets: "
        f"{', '.join(models)}. Pass the path of a .weights.h5 / .keras file instead."
    )


def _keras_cache_dir():
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _read_sidecar(path):
    try:
        with open(path, encoding="ascii") as f:
            value = f.read().split()
    except (OSError, UnicodeDecodeError):
        return None
    return value[0].lower() if value and _HEX64.match(value[0]) else None


def _fetch_remote_hash(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read(4096).decode("ascii", "replace").split()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return text[0].lower() if text and _HEX64.match(text[0]) else None


def _convert_command(manifest):
    return manifest.get("conversion", {}).get("command") or (
        f"keras-fr convert CHECKPOINT --arch {manifest['model']} --output {manifest['file']} --verify"
    )


def _unavailable_message(manifest, tried):
    published = bool(manifest.get("url"))
    source = manifest.get("source", {})
    lines = [
        f"weights preset {manifest['model']} {manifest['tag']!r} ({manifest['file']}) is not "
        f"available: {'; '.join(tried)}.",
        (
            f"A public file exists at {manifest['url']}."
            if published
            else "keras_fr publishes no weights file for this preset."
        ),
    ]
    if source.get("public"):
        lines.append(f"Source checkpoint: {source.get('checkpoint')} ({source.get('where')}).")
        lines.append(
            f"Produce the file with: {_convert_command(manifest)} and put it in "
            f"${WEIGHTS_DIR_ENV} (or serve it and its .sha256 from ${WEIGHTS_URL_ENV})."
        )
    else:
        lines.append(f"No public source checkpoint exists: {source.get('checkpoint')}.")
        lines.append(
            f"With a checkpoint of your own: {_convert_command(manifest)}, then put the file in "
            f"${WEIGHTS_DIR_ENV}."
        )
    return " ".join(lines)


def _download(manifest, base_url, cache_dir, expected):
    """Download ``<base_url>/<file>`` into the cache, verified; returns the path."""
    import keras

    file = manifest["file"]
    origin = f"{base_url.rstrip('/')}/{file}" if base_url else manifest["url"]
    if expected is None:
        expected = _fetch_remote_hash(f"{origin}.sha256")
        if expected is None:
            raise ValueError(
                f"weights preset {manifest['model']} {manifest['tag']!r}: {origin} cannot be "
                "verified: the manifest publishes no sha256 and the server has no "
                f"{file}.sha256 beside it; nothing was downloaded."
            )
    os.makedirs(cache_dir, exist_ok=True)
    part_name = f"{file}.part"
    part = os.path.join(cache_dir, part_name)
    try:
        keras.utils.get_file(
            fname=part_name,
            origin=origin,
            file_hash=expected,
            hash_algorithm="sha256",
            cache_dir=os.path.dirname(cache_dir),
            cache_subdir=os.path.basename(cache_dir),
            force_download=True,
        )
    except ValueError as exc:
        raise ValueError(
            f"weights preset {manifest['model']} {manifest['tag']!r}: the file downloaded from "
            f"{origin} does not match sha256 {expected}; it was removed. ({exc})"
        ) from None
    except Exception as exc:  # get_file wraps HTTP/URL errors in a bare Exception
        raise ValueError(
            f"weights preset {manifest['model']} {manifest['tag']!r}: download from {origin} "
            f"failed: {exc}"
        ) from None
    finally:
        if os.path.exists(part) and (not os.path.getsize(part) or file_sha256(part) != expected):
            os.remove(part)
    target = os.path.join(cache_dir, file)
    os.replace(part, target)
    write_text(f"{target}.sha256", f"{expected}  {file}\n", encoding="ascii")
    return target


def get_weights_file(model_name, tag):
    """Resolve a weights preset to a local ``.weights.h5`` file (see the module docstring).

    Args:
        model_name: registry name, e.g. ``"msconv_resnet50"``.
        tag: preset tag, e.g. ``"ms1mv3"``.

    Returns:
        The path of a verified local file.

    Raises:
        ValueError: unknown tag (lists the known ones), a hash mismatch, a failed download, or no
            source available (the message says how to produce the file).

    Example:

    >>> os.environ["KERAS_FR_WEIGHTS_DIR"] = "/data/weights"
    >>> get_weights_file("iresnet100", "ms1mv3_arcface")
    '/data/weights/iresnet100_ms1mv3_arcface.weights.h5'
    """
    manifest = get_manifest(model_name, tag)
    file = manifest["file"]
    published_hash = (manifest.get("sha256") or "").lower() or None
    tried = []

    shipped = _shipped_file(file)
    if shipped is not None:
        if published_hash is None or file_sha256(shipped) != published_hash:
            raise ValueError(
                f"the weights file {shipped} shipped with keras_fr does not match the sha256 in the "
                f"manifest of preset {model_name} {tag!r} ({published_hash or 'none published'}); "
                "the installation is damaged: reinstall keras_fr."
            )
        return shipped

    user_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if user_dir:
        candidate = os.path.join(user_dir, file)
        if os.path.isfile(candidate):
            if published_hash and file_sha256(candidate) != published_hash:
                raise ValueError(
                    f"{candidate} does not match the published sha256 of preset {model_name} "
                    f"{tag!r} ({published_hash}); the file was left untouched."
                )
            return candidate
        tried.append(f"not in ${WEIGHTS_DIR_ENV} ({user_dir})")
    else:
        tried.append(f"${WEIGHTS_DIR_ENV} is not set")

    cache_dir = _keras_cache_dir()
    cached = os.path.join(cache_dir, file)
    sidecar_hash = _read_sidecar(f"{cached}.sha256")
    expected = published_hash or sidecar_hash
    if os.path.isfile(cached):
        if expected is None or file_sha256(cached) == expected:
            return cached
        os.remove(cached)  # corrupted or outdated cache: fetch it again below
        tried.append(f"the cached {cached} was corrupted and was removed")
    else:
        tried.append(f"not in the Keras cache ({cache_dir})")

    base_url = os.environ.get(WEIGHTS_URL_ENV)
    if base_url or manifest.get("url"):
        return _download(manifest, base_url, cache_dir, published_hash or (
            sidecar_hash if not base_url else None))
    tried.append(f"no download source (${WEIGHTS_URL_ENV} is not set and the manifest has no url)")
    raise ValueError(_unavailable_message(manifest, tried))


def _shipped_file(file):
    """The path of a weights file shipped in the package beside the manifests, or None."""
    entry = importlib.resources.files("keras_fr.presets") / file
    try:
        path = os.fspath(entry)
    except TypeError:  # a zipped install: not supported for shipped weights
        return None
    return path if os.path.isfile(path) else None


def default_preset(model_name):
    """The tag of the weights a model uses when the caller names none, or ``None``.

    That is the best preset whose file is on this machine: shipped with the package, in
    ``$KERAS_FR_WEIGHTS_DIR`` or in the Keras cache (nothing is downloaded). Among several, the one whose
    manifest sets ``"default": true`` wins, then the first by tag. ``None`` means the model has no
    real weights here: callers must then ask for random weights explicitly.

    Args:
        model_name: registry name, e.g. ``"dlib_resnet"``.

    Returns:
        A preset tag, or ``None``.

    Example:

    >>> default_preset("dlib_resnet")
    'dlib_v1'
    """
    rows = [r for r in list_weights() if r["model"] == model_name and r["available"]]
    if not rows:
        return None
    manifests = _manifests()
    rows.sort(key=lambda r: (not manifests[(model_name, r["tag"])].get("default", False), r["tag"]))
    return rows[0]["tag"]


def choose_weights(model_name, weights=None, random_weights=False, *, options=("`weights`", "random_weights=True", "weights=TAG|FILE")):
    """Decide which weights something that embeds uses: never random unless asked (one rule for the
    Python API and the ``keras-fr`` commands).

    Order: ``weights`` (a preset tag or a file, as given) > ``random_weights`` > the model's best
    preset whose file is on this machine (:func:`default_preset`).

    Args:
        model_name: registry name.
        weights: a preset tag, a file path or ``None``.
        random_weights: ``True`` to use random weights on purpose.
        options: how the caller spells the choices in messages: (the weights argument, the random
            choice, how to give weights), for Python or the CLI (``("--weights", "--random-weights",
            "--weights FILE|TAG")``).

    Returns:
        ``(weights_arg, label)``: what to pass as a builder's ``weights`` (``None`` for random) and
        what to report (the tag or file, or ``"random"``).

    Raises:
        ValueError: both choices given; a value that looks like a file (a path separator, or ending
            in ``.h5``/``.keras``) but is not one; no real weights on this machine and no choice.

    Example:

    >>> choose_weights("iresnet18", random_weights=True)
    (None, 'random')
    """
    weights_option, random_option, weights_usage = options
    if weights is not None and random_weights:
        raise ValueError(f"pass either {weights_option} or {random_option}, not both.")
    if weights is not None:
        weights = os.fspath(weights)
        looks_like_file = os.sep in weights or weights.endswith((".h5", ".keras")) or os.path.exists(weights)
        if looks_like_file and not os.path.isfile(weights):
            raise ValueError(f"{weights_option} file not found: {weights!r}.")
        return weights, weights
    if random_weights:
        return None, "random"
    tag = default_preset(model_name)
    if tag is None:
        raise ValueError(
            f"model {model_name} has no real weights on this machine; pass {weights_usage} (a preset tag or a "
            f".weights.h5 file) or {random_option} to use a random model on purpose."
        )
    return tag, tag


def list_weights():
    """All weights presets, with where they stand on this machine.

    Returns:
        A list of dicts (sorted by model, tag) with keys ``model``, ``tag``, ``file``,
        ``available`` (a local file exists: shipped with the package, in ``$KERAS_FR_WEIGHTS_DIR`` or
        the Keras cache; it is hash-checked when loaded, not here; nothing is downloaded),
        ``shipped`` (the file comes with the package), ``published`` (a public URL
        exists) and ``license``.

    Example:

    >>> for row in keras_fr.applications.list_weights():
    ...     print(row["model"], row["tag"], row["available"])
    """
    rows = []
    cache_dir = _keras_cache_dir()
    user_dir = os.environ.get(WEIGHTS_DIR_ENV)
    for (model, tag), manifest in sorted(_manifests().items()):
        file = manifest["file"]
        local = [os.path.join(cache_dir, file)]
        if user_dir:
            local.insert(0, os.path.join(user_dir, file))
        shipped = _shipped_file(file) is not None
        rows.append(
            {
                "model": model,
                "tag": tag,
                "file": file,
                "available": shipped or any(os.path.isfile(p) for p in local),
                "shipped": shipped,
                "published": bool(manifest.get("url")),
                "license": manifest.get("license", {}).get("summary", ""),
            }
        )
    return rows
