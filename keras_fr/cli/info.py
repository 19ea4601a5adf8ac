"""``keras-fr info``: the models, the weights presets and where they stand, and the versions in use.

Parameter counts are read from the model registry (``keras_fr.applications.registry``: building
every network takes minutes on a small CPU); ``keras-fr info --model NAME`` builds that one network and
prints its live figures, and the test suite checks the recorded counts against built models.
"""

import argparse
import importlib.metadata
import platform

from keras_fr import __version__
from keras_fr.applications import count_parameters
from keras_fr.applications import registry
from keras_fr.applications.weights import get_manifest, list_weights
from keras_fr.cli._common import MODELS, add_json_arg, build_model, model_name, print_json

EXAMPLES = """examples:
  keras-fr info                         # models, weights presets (available here?), licenses, versions
  keras-fr info --json                  # the same as JSON
  keras-fr info --model lgaf_resnet100  # build one network: parameters, input and output shapes
"""

_PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "numpy", "h5py", "pillow", "tf2onnx", "onnx",
             "onnxruntime", "ai-edge-litert", "torch", "safetensors")


def versions():
    """Installed versions of keras_fr's dependencies (None for a package that is not installed).

    Read from the installed packages' metadata, so nothing heavy is imported.

    Returns:
        A dict `{"python": ..., "keras": ..., "tensorflow": ..., ...}`.

    Example:

    >>> versions()["keras"].startswith("3.")
    True
    """
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def model_rows():
    """One dict per model of the registry: name, builder, family, parameters, sizes.

    Returns:
        A list of dicts with keys `name`, `builder`, `family`, `parameters` (from the model registry),
        `input_size` and `embedding_size`.

    Example:

    >>> [row["name"] for row in model_rows()][:2]
    ['msconv_resnet26', 'msconv_resnet50']
    """
    rows = []
    for record in registry.records():
        size = record.input_spec.size
        rows.append({
            "name": record.name,
            "builder": f"keras_fr.applications.{record.builder}",
            "family": registry.family(record.family).display,
            "parameters": record.parameters,
            "input_size": [size, size, 3],
            "embedding_size": record.embedding_size,
        })
    return rows


def weight_rows():
    """The weights presets of ``keras_fr.applications.list_weights()``, with their convert command.

    Returns:
        `(rows, None)`, each row a dict (`model`, `tag`, `available`, `license`, ...,
        `convert_command`), or `(None, reason)` when the registry is missing or broken.

    Example:

    >>> rows, reason = weight_rows()
    >>> reason is None and all("tag" in row for row in rows)
    True
    """
    try:
        rows = [dict(row) for row in list_weights()]
    except Exception as exc:  # a broken manifest folder must not break `info`
        return None, f"weights registry failed: {exc}"
    for row in rows:
        command = (get_manifest(row["model"], row["tag"]).get("conversion") or {}).get("command")
        if command:
            row["convert_command"] = command
    return rows, None


def register(subparsers):
    parser = subparsers.add_parser(
        "info",
        help="list models, weights presets (availability, license) and versions",
        description="Models with their parameters and input size, weights presets with their "
        "availability on this machine and license, and the versions of Keras, its backend and "
        "the optional packages.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="build this model and show its live figures (registry or builder name: "
                        f"{', '.join(sorted(MODELS))}; MSConvResNet50 and the like accepted)")
    add_json_arg(parser)
    parser.set_defaults(func=run)


def _model_details(name):
    model = build_model(name)
    headless = build_model(name, include_top=False)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)

    def shape(s):
        return [None if d is None else int(d) for d in (s[0] if isinstance(s, list) else s)]

    return {
        "name": name,
        "parameters": count_parameters(model),
        "trainable_parameters": trainable,
        "all_weights_incl_statistics": int(model.count_params()),
        "layers": len(model.layers),
        "input_shape": shape(model.input_shape),
        "output_shape": shape(model.output_shape),
        "output_shape_without_top": shape(headless.output_shape),
    }


def run(args):
    import keras


    info = {
        "keras_fr": __version__,
        "backend": keras.backend.backend(),
        "versions": versions(),
        "models": model_rows(),
    }
    weights, reason = weight_rows()
    info["weights"] = weights if weights is not None else []
    if reason:
        info["weights_note"] = reason
    if args.model:
        info["model"] = _model_details(model_name(args.model))
    if args.json:
        print_json(info)
        return 0
    _print_text(info)
    return 0


def _print_text(info):
    v = info["versions"]
    tf = v.get("tensorflow") or v.get("tensorflow-cpu")
    print(f"keras_fr {info['keras_fr']}  |  Keras {v.get('keras')}, backend {info['backend']}"
          f"{f' (TensorFlow {tf})' if tf else ''}, NumPy {v.get('numpy')}, Python {v.get('python')}")
    optional = [f"{k} {v[k]}" for k in ("tf2onnx", "onnxruntime", "ai-edge-litert", "torch") if v.get(k)]
    missing = [k for k in ("tf2onnx", "onnxruntime", "ai-edge-litert", "torch") if not v.get(k)]
    print("optional: " + (", ".join(optional) or "none")
          + (f"; not installed: {', '.join(missing)}" if missing else ""))
    print()
    print("models (keras_fr.applications; input RGB 112x112 in [-1, 1], ArcFace 5-point aligned)")
    header = f"  {'name':<18} {'family':<18} {'parameters':>12}  {'input':<11} embedding"
    print(header)
    note = ("  (parameters: the PyTorch-comparable count, keras_fr.applications.count_parameters; "
            "model.count_params() also counts BatchNorm statistics)")
    for row in info["models"]:
        params = f"{row['parameters']:,}" if row["parameters"] else "?"
        size = "x".join(str(d) for d in row["input_size"])
        print(f"  {row['name']:<18} {row['family']:<18} {params:>12}  {size:<11} {row['embedding_size']}")
    print(note)
    print()
    print("weights presets (weights=TAG; the file is looked up in $KERAS_FR_WEIGHTS_DIR, then the Keras "
          "cache ~/.keras/models; `make it` = the command that produces it from the source checkpoint)")
    if info.get("weights_note"):
        print(f"  {info['weights_note']}")
    for row in info["weights"]:
        status = "available" if row.get("available") else (
            "downloadable" if row.get("published") else "no file here")
        print(f"  {row.get('model', '?'):<16} {row.get('tag', '?'):<20} {status}")
        if row.get("license"):
            print(f"  {'':<16} license: {row['license']}")
        if not row.get("available") and row.get("convert_command"):
            print(f"  {'':<16} make it: {row['convert_command']}")
    if "model" in info:
        m = info["model"]
        print()
        print(f"{m['name']}: {m['parameters']:,} parameters (PyTorch-comparable count; "
              f"{m['trainable_parameters']:,} trainable), "
              f"{m['layers']} layers; input {tuple(m['input_shape'])} -> {tuple(m['output_shape'])}, "
              f"without top {tuple(m['output_shape_without_top'])}")
