"""Training configs for ``keras-fr train``: a Python file that defines ``config`` (a dict or a dataclass).

A config names everything a training run needs; :func:`load_config` reads and checks it, and every
error names the field and what was expected (``ConfigError``, a ``ValueError``)::

    # configs/my_run.py
    config = dict(
        model="iresnet50",                      # registry name (keras_fr.applications.MODELS) ...
        # model={"name": "iresnet50", "dropout": 0.4},   # ... with builder arguments
        data={"type": "recordio", "path": "/data/ms1mv3"},  # or {"type": "folder", "path": ...}
        recipe="msconv",                        # or "lgaf": optimizer, schedule, loss, augmentation
        batch_size=512,                         # the GLOBAL batch, over all replicas and workers
        output="runs/r50_ms1mv3",
    )

The file is executed as Python (only run configs you trust). YAML is not read: PyYAML is not a
dependency of keras_fr. Relative paths in ``data``, ``evaluation`` and ``output`` are relative to the
config file's folder. The fields, their defaults and their meaning are in :class:`TrainConfig` and in
``docs/training_at_scale.md``.
"""

import dataclasses
import importlib.util
import numbers
import os

#: Strategies by backend: TensorFlow ``tf.distribute`` and Keras' distribution API on JAX.
STRATEGIES = {"tensorflow": ("none", "mirrored", "multiworker"), "jax": ("none", "data_parallel")}
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
RECIPES = ("msconv", "lgaf")
LOSSES = ("arcface", "cosface", "combined")
DATA_TYPES = ("folder", "recordio")


class ConfigError(ValueError):
    """A config field is missing or wrong; the message names the field and what was expected."""


@dataclasses.dataclass
class TrainConfig:
    """A checked training config (see the module docstring and ``docs/training_at_scale.md``).

    Attributes:
        model: ``{"name": registry name, **builder arguments}``, or a callable returning a
            ``keras.Model`` (images -> embeddings; Python configs only).
        data: ``{"type": "folder"|"recordio", "path": ..., "image_size": int|None, "num_classes":
            int|None, "split_csv": path|None, "split": "train", "classes": list|None, "verify": bool}``.
        recipe: ``"msconv"`` or ``"lgaf"``; ``recipe_args``: extra recipe arguments (``cosine_shape``,
            ``probability``, ``scale_lr``, ``gradient``).
        batch_size: the global batch (all replicas of all workers); default the recipe's.
        epochs: default the recipe's (20 MSConv, 26 LGAF).
        precision: ``"float32"``, ``"mixed_float16"`` or ``"mixed_bfloat16"``.
        loss: ``None`` (the recipe's) or ``{"type": "arcface"|"cosface"|"combined", "scale", "margin"}``
            (``combined``: ``m1``, ``m2``, ``m3``).
        partial_fc: PartialFC sample rate in (0, 1]; 1.0 = the full margin head. Below 1.0: strategy
            ``"none"`` (one replica) or ``"mirrored"`` (the centres sharded over the replicas).
        evaluation: pair sets for ``VerificationCallback``: ``[{"path", "name", "every_n_epochs",
            "flip", "batch_size"}]`` (a plain path is accepted for an entry).
        output: the run's folder (checkpoint, logs, final backbone).
        strategy: ``"none"``, ``"mirrored"``, ``"multiworker"`` (TensorFlow) or ``"data_parallel"`` (JAX).
        seed: initialization, data order and augmentation seed.
        augmentation: apply the recipe's augmentation (default True).
        sync_batchnorm: under ``mirrored``/``multiworker``, batch statistics over the global batch
            (an all-reduce per BatchNormalization layer) instead of per replica (insightface's
            default). Needed for the same weights as single-device training. Ignored on JAX, where
            ``data_parallel`` already computes them over the global batch.
        checkpoint_every_steps: also checkpoint every this many steps (default: at each epoch end).
        tensorboard: write TensorBoard logs (default True).
        source: the config file (set by :func:`load_config`).
    """

    model: object
    data: dict
    recipe: str
    output: str
    batch_size: int = None
    epochs: int = None
    recipe_args: dict = dataclasses.field(default_factory=dict)
    precision: str = "float32"
    loss: dict = None
    partial_fc: float = 1.0
    evaluation: list = dataclasses.field(default_factory=list)
    strategy: str = "none"
    seed: int = 0
    augmentation: bool = True
    sync_batchnorm: bool = False
    checkpoint_every_steps: int = None
    tensorboard: bool = True
    source: str = None

    def describe(self):
        """A JSON-able dict of the config (a callable model is named by its qualified name)."""
        out = dataclasses.asdict(self)
        if callable(self.model):
            out["model"] = {"callable": getattr(self.model, "__qualname__", repr(self.model))}
        return out


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"source"}
_DATA_KEYS = {"type", "path", "image_size", "num_classes", "split_csv", "split", "classes", "verify"}
_EVAL_KEYS = {"path", "name", "every_n_epochs", "flip", "batch_size"}
_LOSS_KEYS = {"type", "scale", "margin", "m1", "m2", "m3", "gradient"}
_RECIPE_ARGS = {"msconv": {"scale_lr", "cosine_shape", "gradient"},
                "lgaf": {"scale_lr", "gradient", "probability", "loss"}}


def _positive_int(value, field, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"config field `{field}` must be a positive integer; got {value!r}.")
    return int(value)


def _choice(value, field, choices):
    if value not in choices:
        raise ConfigError(f"config field `{field}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def _bool(value, field):
    if not isinstance(value, bool):
        raise ConfigError(f"config field `{field}` must be True or False; got {value!r}.")
    return value


def _path(value, field, base):
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(f"config field `{field}` must be a path; got {value!r}.")
    value = os.path.expanduser(os.fspath(value))
    return value if os.path.isabs(value) or base is None else os.path.normpath(os.path.join(base, value))


def _unknown(keys, allowed, field):
    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ConfigError(
            f"config field `{field}` has unknown key(s) {extra}; expected some of {sorted(allowed)}."
        )


def _check_model(value, base):
    if callable(value) and not isinstance(value, (str, dict)):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(
            "config field `model` must be a registry name (e.g. 'iresnet50'), a dict "
            "{'name': ..., **builder arguments}, or a function returning a keras.Model; "
            f"got {value!r}."
        )
    from keras_fr.applications import canonical_name

    try:
        name = canonical_name(value["name"])
    except ValueError as exc:
        raise ConfigError(f"config field `model.name`: {exc}") from None
    weights = value.get("weights")
    if isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith((".h5", ".keras")):
        weights = _path(weights, "model.weights", base)  # a file, not a preset tag
        if not os.path.isfile(weights):
            raise ConfigError(f"config field `model.weights`: file {weights!r} not found.")
        value = {**value, "weights": weights}
    return {**value, "name": name}


def _check_data(value, base):
    if not isinstance(value, dict):
        raise ConfigError(
            "config field `data` must be a dict {'type': 'folder'|'recordio', 'path': ...}; "
            f"got {value!r}."
        )
    _unknown(value, _DATA_KEYS, "data")
    data = {"type": None, "path": None, "image_size": None, "num_classes": None, "split_csv": None,
            "split": "train", "classes": None, "verify": True}
    data.update(value)
    _choice(data["type"], "data.type", DATA_TYPES)
    data["path"] = _path(data["path"], "data.path", base)
    if data["type"] == "folder" and not os.path.isdir(data["path"]):
        raise ConfigError(f"config field `data.path`: folder {data['path']!r} not found.")
    if data["type"] == "recordio":
        rec = data["path"] if data["path"].endswith(".rec") else os.path.join(data["path"], "train.rec")
        if not os.path.isfile(rec):
            raise ConfigError(
                f"config field `data.path`: {rec!r} not found (give a folder with train.rec/.idx or the .rec file)."
            )
    data["image_size"] = _positive_int(data["image_size"], "data.image_size", allow_none=True)
    data["num_classes"] = _positive_int(data["num_classes"], "data.num_classes", allow_none=True)
    if data["split_csv"] is not None:
        if data["type"] != "folder":
            raise ConfigError("config field `data.split_csv` applies to image folders only (data.type 'folder').")
        data["split_csv"] = _path(data["split_csv"], "data.split_csv", base)
        if not os.path.isfile(data["split_csv"]):
            raise ConfigError(f"config field `data.split_csv`: file {data['split_csv']!r} not found.")
        if data["classes"] is not None:
            raise ConfigError("config fields `data.split_csv` and `data.classes` exclude each other.")
    if data["classes"] is not None and (
        isinstance(data["classes"], str) or not all(isinstance(c, str) for c in data["classes"])
    ):
        raise ConfigError(f"config field `data.classes` must be a list of identity folder names; got {data['classes']!r}.")
    _bool(data["verify"], "data.verify")
    return data


def _check_loss(value):
    if value is None:
        return None
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ConfigError(f"config field `loss` must be None, 'arcface', 'cosface' or a dict; got {value!r}.")
    _unknown(value, _LOSS_KEYS, "loss")
    _choice(value.get("type"), "loss.type", LOSSES)
    for key in ("scale", "margin", "m1", "m2", "m3"):
        if key in value and (isinstance(value[key], bool) or not isinstance(value[key], numbers.Real)):
            raise ConfigError(f"config field `loss.{key}` must be a number; got {value[key]!r}.")
    if value["type"] == "combined" and not {"m1", "m2", "m3"} <= set(value):
        raise ConfigError("config field `loss`: type 'combined' needs m1, m2 and m3.")
    if value["type"] != "combined" and {"m1", "m2", "m3"} & set(value):
        raise ConfigError("config field `loss`: m1/m2/m3 are for type 'combined'; use `margin`.")
    return dict(value)


def _check_evaluation(value, base):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config field `evaluation` must be a list of pair sets; got {value!r}.")
    out, names = [], set()
    for i, entry in enumerate(value):
        field = f"evaluation[{i}]"
        if isinstance(entry, (str, os.PathLike)):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"config field `{field}` must be a path or a dict with 'path'; got {entry!r}.")
        _unknown(entry, _EVAL_KEYS, field)
        path = _path(entry.get("path"), f"{field}.path", base)
        if not os.path.exists(path):
            raise ConfigError(f"config field `{field}.path`: {path!r} not found.")
        name = entry.get("name") or os.path.splitext(os.path.basename(path.rstrip("/")))[0]
        if not isinstance(name, str) or not name.isidentifier() or name in names:
            raise ConfigError(f"config field `{field}.name` must be a unique identifier-like name; got {name!r}.")
        names.add(name)
        out.append({
            "path": path, "name": name,
            "every_n_epochs": _positive_int(entry.get("every_n_epochs", 1), f"{field}.every_n_epochs"),
            "flip": _bool(entry.get("flip", False), f"{field}.flip"),
            "batch_size": _positive_int(entry.get("batch_size", 64), f"{field}.batch_size"),
        })
    return out


def check_config(raw, base=None, backend=None):
    """Check a raw config (dict or dataclass) and return a :class:`TrainConfig`.

    Args:
        raw: a dict, a ``TrainConfig`` or another dataclass instance with the same fields.
        base: folder that relative paths are relative to (default: the current folder).
        backend: the Keras backend the run will use (default: ``keras.backend.backend()``).

    Raises:
        ConfigError: naming the first wrong field.
    """
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = {f.name: getattr(raw, f.name) for f in dataclasses.fields(raw)}
    if not isinstance(raw, dict):
        raise ConfigError(f"`config` must be a dict or a dataclass instance; got {type(raw).__name__}.")
    raw = {k: v for k, v in raw.items() if k != "source"}
    _unknown(raw, _FIELDS, "config")
    for field in ("model", "data", "recipe", "output"):
        if raw.get(field) is None:
            raise ConfigError(f"config field `{field}` is required.")
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend not in STRATEGIES:
        raise ConfigError(f"`keras-fr train` runs on the TensorFlow or JAX backend; KERAS_BACKEND is {backend!r}.")
    cfg = TrainConfig(**raw)
    cfg.model = _check_model(cfg.model, base)
    cfg.data = _check_data(cfg.data, base)
    _choice(cfg.recipe, "recipe", RECIPES)
    if not isinstance(cfg.recipe_args, dict):
        raise ConfigError(f"config field `recipe_args` must be a dict; got {cfg.recipe_args!r}.")
    _unknown(cfg.recipe_args, _RECIPE_ARGS[cfg.recipe], "recipe_args")
    cfg.output = _path(cfg.output, "output", base)
    cfg.batch_size = _positive_int(cfg.batch_size, "batch_size", allow_none=True)
    cfg.epochs = _positive_int(cfg.epochs, "epochs", allow_none=True)
    _choice(cfg.precision, "precision", PRECISIONS)
    cfg.loss = _check_loss(cfg.loss)
    rate = cfg.partial_fc
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 < rate <= 1:
        raise ConfigError(f"config field `partial_fc` must be a sample rate in (0, 1]; got {rate!r}.")
    cfg.partial_fc = float(rate)
    cfg.evaluation = _check_evaluation(cfg.evaluation, base)
    strategies = STRATEGIES[backend]
    if cfg.strategy not in strategies:
        raise ConfigError(
            f"config field `strategy` must be one of {', '.join(map(repr, strategies))} on the {backend} "
            f"backend; got {cfg.strategy!r}."
        )
    if cfg.partial_fc < 1 and cfg.strategy not in ("none", "mirrored"):
        raise ConfigError(
            "config field `partial_fc`: a sample rate below 1.0 runs on one device (strategy 'none') or "
            f"sharded over the local replicas (strategy 'mirrored'); got strategy {cfg.strategy!r}. "
            "Sharding PartialFC over several workers is not done yet."
        )
    if cfg.partial_fc < 1 and backend != "tensorflow":
        raise ConfigError("config field `partial_fc`: a sample rate below 1.0 trains on TensorFlow only.")
    if cfg.partial_fc < 1 and cfg.precision == "mixed_float16":
        raise ConfigError("config field `partial_fc`: a sample rate below 1.0 does not support mixed_float16.")
    if not isinstance(cfg.seed, numbers.Integral) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"config field `seed` must be an integer >= 0; got {cfg.seed!r}.")
    for field in ("augmentation", "sync_batchnorm", "tensorboard"):
        _bool(getattr(cfg, field), field)
    cfg.checkpoint_every_steps = _positive_int(cfg.checkpoint_every_steps, "checkpoint_every_steps", allow_none=True)
    return cfg


def load_config(path, overrides=None, backend=None):
    """Read a Python config file (``config = {...}`` or a dataclass instance) and check it.

    Args:
        path: the ``.py`` file.
        overrides: optional dict of fields that replace the file's (the CLI's ``--output``,
            ``--strategy``), checked like the rest.
        backend: as for :func:`check_config`.

    Returns:
        A :class:`TrainConfig` whose ``source`` is the file's absolute path.

    Raises:
        FileNotFoundError: no such file. ConfigError: not a ``.py`` file, no ``config`` in it, an error
            while executing it, or a wrong field.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found.")
    if not path.endswith(".py"):
        raise ConfigError(
            f"config file {path!r}: expected a Python file (.py) defining `config`; YAML is not read "
            "(PyYAML is not a keras_fr dependency)."
        )
    spec = importlib.util.spec_from_file_location("_keras_fr_train_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in the user's file is reported as a config error
        raise ConfigError(f"config file {path!r} failed to run: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, "config"):
        raise ConfigError(f"config file {path!r} defines no `config` (a dict or a dataclass instance).")
    raw = module.config
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = {f.name: getattr(raw, f.name) for f in dataclasses.fields(raw)}
    if isinstance(raw, dict) and overrides:
        raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = check_config(raw, base=os.path.dirname(path), backend=backend)
    cfg.source = path
    return cfg
