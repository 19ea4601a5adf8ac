"""The model registry: the one place that says what each keras_fr network is.

Every network has one :class:`ModelRecord` (its registry and builder names, family, block counts,
input specification, embedding size, parameter count as PyTorch counts it, and the fingerprint of its
default weights file), and every family one :class:`Family` (where its Keras builders live, how its
PyTorch checkpoints are recognized and their keys named, and its PyTorch reference network). The
family module registers both when it is imported, next to the code that builds the network; the rest
of the package (``get_model``, the converter, the reference networks, ``keras-fr info`` and every
``--model``, the weights registry, benchmarks) reads them from here and keeps no table of its own.

Adding a family is one module that defines the network and calls :func:`register_family` and
:func:`register_model`; a family shipped with keras_fr is also named in ``BUILTIN_FAMILY_MODULES`` so
that it is registered on first use without importing every network up front (docs/architecture.md).
"""

import dataclasses
import importlib
import re
from collections.abc import Mapping
from typing import Callable

#: The modules of the families shipped with keras_fr, imported (and so registered) on first use.
BUILTIN_FAMILY_MODULES = (
    "keras_fr.applications.msconv_resnet",
    "keras_fr.applications.iresnet",
    "keras_fr.applications.lgaf_resnet",
    "keras_fr.applications.dlib_resnet",
)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class CheckpointLayout:
    """How a family's PyTorch checkpoints are recognized and read.

    Attributes:
        recognize: ``state_dict -> bool``: whether a state dict (key -> array) is of this family.
        block_key: a regular expression with ``{stage}`` whose group 1 is a block index of that stage
            (stages 1..4), e.g. ``r"^layer{stage}\\.(\\d+)\\."``; the block counts choose the model.
        embedding_key: the head's last linear weight (its first dimension is the embedding size; its
            absence means a checkpoint without a head).
        head_modules: top-level PyTorch modules of the embedding head (left unused with
            ``include_top=False``).
        description: what the keys of this family look like, for error messages.
        options: optional ``state_dict -> dict`` of further builder arguments read from the keys
            (e.g. LGAF's ``num_heads``); it raises ``ValueError`` for a malformed checkpoint.
        priority: families are tried in decreasing priority (a family whose keys contain another's,
            like LGAF over IResNet, comes first).
        filled_from: other family name -> key prefixes of this family it lacks: a checkpoint of that
            family (same blocks) may fill this family's network, the listed parts staying at their
            initialization (an ArcFace IResNet checkpoint fills LGAF's backbone and global branch).
    """

    recognize: Callable
    block_key: str
    embedding_key: str
    head_modules: tuple
    description: str
    options: Callable = None
    priority: int = 0
    filled_from: Mapping = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of networks built by one Keras builder.

    Attributes:
        name: registry family name (``"iresnet"``), the prefix of its models' registry names.
        display: how humans call it (``keras-fr info``), e.g. ``"IResNet (ArcFace)"``.
        module: the module that defines the Keras builders.
        builder: the family builder (``"IResNet"``), which takes the block counts.
        torch_modules: the PyTorch module paths of the top-level layers that own weights, ``{}`` for
            an index (the Keras layer name is the path with "." -> "_"; keras_fr.conversion.mapping
            derives every key from them).
        flatten_inputs: linear module name -> relative key of a tensor whose first dimension is the
            channel count C of the (C, H, W) map the linear layer reads after a flatten.
        checkpoint: a :class:`CheckpointLayout`, or None for a family without PyTorch checkpoints.
        reference: ``"module:function"`` building the PyTorch reference network from keyword arguments
            ``blocks`` and the family's options (``embedding_size``, ...), or None.
        reference_options: the builder options the reference network accepts besides ``blocks``.
    """

    name: str
    display: str
    module: str
    builder: str
    torch_modules: tuple = ()
    flatten_inputs: Mapping = dataclasses.field(default_factory=dict)
    checkpoint: CheckpointLayout = None
    reference: str = None
    reference_options: tuple = ()


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One network of the zoo.

    Attributes:
        name: registry name (``"msconv_resnet50"``): presets, the converter and ``--model`` use it.
        builder: the public builder function's name (``"MSConvResNet50"``) in the family's module.
        family: the registry name of its :class:`Family`.
        blocks: residual blocks per stage (the family builder's block configuration), or ``()``.
        input_spec: a ``keras_fr.applications.specs.InputSpec`` (crop size, alignment, normalization).
        embedding_size: length of the embedding at the default settings.
        parameters: trainable and non-trainable weights as PyTorch counts them
            (``keras_fr.applications.count_parameters``: BatchNorm statistics excluded).
        weights_fingerprint: (number of arrays, number of values) of the default ``.weights.h5`` file
            (``include_top=True``, default input size): names a weights file's architecture without
            building every model; None: built once when a weights file has to be named.
    """

    name: str
    builder: str
    family: str
    blocks: tuple
    input_spec: object
    embedding_size: int
    parameters: int
    weights_fingerprint: tuple = None

    @property
    def module(self):
        """The module that defines the builder (the family's)."""
        return family(self.family).module


_FAMILIES = {}
_MODELS = {}
_state = {"loaded": False, "loading": False}


def _load_builtins():
    """Import the built-in family modules once. Marked done only when every import succeeded (a
    failed import, e.g. swallowed by a ``hasattr`` during a circular import, is retried on the next
    call); a call made while they are being imported sees the families registered so far."""
    if _state["loaded"] or _state["loading"]:
        return
    _state["loading"] = True
    try:
        for module in BUILTIN_FAMILY_MODULES:
            importlib.import_module(module)
        _state["loaded"] = True
    finally:
        _state["loading"] = False


def _add(table, entry, kind, cls):
    """Check and add a record to ``table`` (the same record again is a no-op; another with its name is
    refused)."""
    if not isinstance(entry, cls):
        raise TypeError(f"register_{kind} expects a {cls.__name__}; got {type(entry).__name__}.")
    if not _NAME.match(entry.name):
        raise ValueError(f"{kind} name must be lower-case letters, digits and '_'; got {entry.name!r}.")
    known = table.get(entry.name)
    if known is not None and known != entry:
        raise ValueError(f"a {kind} named {entry.name!r} is already registered.")
    table[entry.name] = entry
    return entry


def register_family(fam):
    """Add a :class:`Family` (the same record again is a no-op; another with its name is refused)."""
    return _add(_FAMILIES, fam, "family", Family)


def register_model(record):
    """Add a :class:`ModelRecord` of a registered family (the same record again is a no-op)."""
    if isinstance(record, ModelRecord):
        if record.family not in _FAMILIES:
            raise ValueError(f"{record.name!r}: register its family {record.family!r} first.")
        for other in _MODELS.values():
            if other.name != record.name and _squash(other.builder) == _squash(record.builder):
                raise ValueError(f"builder name {record.builder!r} is already used by {other.name!r}.")
    return _add(_MODELS, record, "model", ModelRecord)


def register_depths(family_name, builder_prefix, depths, input_spec, embedding_size=512):
    """Register one :class:`ModelRecord` per depth of a family whose models are named
    ``<family><depth>`` and built by ``<builder_prefix><depth>``.

    Args:
        family_name: a registered family.
        builder_prefix: e.g. ``"IResNet"``.
        depths: ``{depth: (blocks, parameters, weights_fingerprint)}``.
        input_spec, embedding_size: shared by every depth.
    """
    for depth, (blocks, parameters, fingerprint) in depths.items():
        register_model(ModelRecord(
            name=f"{family_name}{depth}", builder=f"{builder_prefix}{depth}", family=family_name,
            blocks=tuple(blocks), input_spec=input_spec, embedding_size=embedding_size,
            parameters=parameters, weights_fingerprint=fingerprint,
        ))


def unregister_family(name):
    """Remove a family and its models (for tests and plug-ins that register temporary families)."""
    _FAMILIES.pop(name, None)
    for key in [k for k, r in _MODELS.items() if r.family == name]:
        del _MODELS[key]


def _squash(name):
    return str(name).replace("_", "").replace("-", "").lower()


def records():
    """Every :class:`ModelRecord`, in registration order (families in ``BUILTIN_FAMILY_MODULES`` order)."""
    _load_builtins()
    return tuple(_MODELS.values())


def families():
    """Every :class:`Family`, in registration order."""
    _load_builtins()
    return tuple(_FAMILIES.values())


def family(name):
    """The :class:`Family` named ``name`` (ValueError listing the known ones otherwise)."""
    _load_builtins()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}.") from None


def canonical_name(name):
    """The registry name of a model given by registry or builder name, in any case.

    ``"MSConvResNet50"``, ``"msconv_resnet50"`` and ``"msconvresnet50"`` all name the same network.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    _load_builtins()
    if name in _MODELS:
        return name
    wanted = _squash(name)
    for record in _MODELS.values():
        if wanted in (_squash(record.name), _squash(record.builder)):
            return record.name
    raise ValueError(
        f"Unknown model {name!r}; known models: {', '.join(sorted(_MODELS))} "
        "(registry names; the builder names, e.g. IResNet50, are accepted too)."
    )


def get_record(name):
    """The :class:`ModelRecord` of a registry or builder name (see :func:`canonical_name`)."""
    return _MODELS[canonical_name(name)]


def models_of(family_name):
    """The records of one family, in registration order."""
    return tuple(r for r in records() if r.family == family_name)


def record_for_blocks(family_name, blocks):
    """The record of ``family_name`` with these block counts, or None."""
    for record in models_of(family_name):
        if tuple(record.blocks) == tuple(blocks):
            return record
    return None


def blocks_for_depth(family_name, depth):
    """Block counts of the family's model named ``<family><depth>`` (``"iresnet100"``): how the
    depth-numbered PyTorch reference networks read their configuration.

    Raises:
        ValueError: naming the depths the family has.
    """
    record = _MODELS.get(f"{family_name}{depth}") if records() else None
    if record is None or record.family != family_name:
        depths = [r.name[len(family_name):] for r in models_of(family_name)]
        raise ValueError(f"`depth` must be one of {', '.join(depths)} for {family_name}; got {depth!r}.")
    return tuple(record.blocks)


def get_builder(name):
    """The builder function (e.g. ``MSConvResNet50``) of a registry or builder name."""
    record = get_record(name)
    return getattr(importlib.import_module(record.module), record.builder)


class ModelsView(Mapping):
    """Read-only, live ``registry name -> (module, builder name)`` view of the registry (``MODELS``),
    optionally of the records that pass ``keep(record)`` only; a family registered later is included."""

    def __init__(self, keep=None):
        self._keep = keep or (lambda record: True)

    def _names(self):
        return [r.name for r in records() if self._keep(r)]

    def __getitem__(self, name):
        if name not in self._names():
            raise KeyError(name)
        record = _MODELS[name]
        return record.module, record.builder

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())

    def __repr__(self):
        return f"ModelsView({', '.join(self)})"
