"""Map PyTorch state dicts onto keras_fr models and back, with strict accounting.

The naming rule: the Keras name of a layer that owns weights is its PyTorch module path (relative to
the layer or model that holds it) with "." replaced by "_". Read backwards, "_" is ambiguous (a word
separator inside a module name such as ``fc_d``, or a "."), so the path is never guessed from the
name. Whoever makes the names declares the paths they come from, with ``{}`` for an index:

- a family module, for the top-level layers of its networks: ``TORCH_MODULES`` (e.g. MSConvResNet's
  ``"stage_{}.{}.conv2_msconv"`` makes the layer ``stage_2_0_conv2_msconv``);
- a composite layer, for its sublayers: the class attribute ``torch_modules`` (MSConv's
  ``"fc_d.{}"``, LGAF's ``"proj_fc"``).

A Keras name is read back by matching it against the declared paths of its scope (``torch_path``);
exactly one declared path must match. A name that matches none is read by the generic rule (every
"_" is a "." and each number an index) only if that reading is unambiguous: it may not hold two words
in a row (``se_block``: one module or two?) and may not start like a declared path (``stage_1_0_se``
in an MSConvResNet, whose ``stage_{}`` is one module). Otherwise the mapping fails, naming the layer,
instead of producing a wrong key. Both directions use the same reading: loading looks each Keras
weight's PyTorch key up in the state dict, exporting writes it. The weight's own PyTorch name comes
from its kind (``kernel`` -> ``weight``, ``gamma`` -> ``weight``, ``moving_mean`` -> ``running_mean``,
...).

Transforms (PyTorch -> Keras):

- convolution ``[out, in/groups, kh, kw]`` -> ``[kh, kw, in/groups, out]``;
- linear ``[out, in]`` -> ``[in, out]``, and for a linear layer that follows a flatten of a
  (C, H, W) map (IResNet's ``fc``, LGAF's ``proj_fc``) the input columns are reordered from
  PyTorch's channel-major (C, H, W) order to Keras' (H, W, C) order;
- BatchNorm ``weight/bias/running_mean/running_var`` -> ``gamma/beta/moving_mean/moving_variance``
  (``num_batches_tracked`` has no Keras counterpart and is set aside);
- PReLU ``[1]`` or ``[C]`` -> Keras' broadcast shape (``(1, 1, 1)`` or ``(1, 1, C)``);
- anything else (LGAF's fusion buffers ``norm_mean`` / ``norm_std``) is copied as is.

Accounting is strict: every source tensor is used exactly once (only ``num_batches_tracked`` and
tensors the caller declares as a head that was not built may be left, and the report lists them),
every Keras weight is assigned, and shapes match. Otherwise a `ConversionError` carries a readable
report of missing, unexpected and mis-shaped keys, and nothing is assigned.
"""

import math
import re
from dataclasses import dataclass, field

import keras
import numpy as np

from keras_fr.applications import registry
from keras_fr.layers.traversal import child_layers

#: Keras weight name -> PyTorch parameter/buffer name, per layer kind.
_TORCH_NAME = {
    "conv": {"kernel": "weight", "bias": "bias"},
    "dense": {"kernel": "weight", "bias": "bias"},
    "bn": {
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    },
    "prelu": {"alpha": "weight"},
}


def model_torch_modules():
    """Declared PyTorch paths of the top-level layers of every registered network (each family's
    ``torch_modules`` in the model registry)."""
    return tuple(dict.fromkeys(p for fam in registry.families() for p in fam.torch_modules))


def flatten_inputs():
    """Linear layers that follow a flatten of a (C, H, W) map, and where their channel count C is read:
    module name -> relative key of a tensor whose first dimension is C (the families' ``flatten_inputs``
    in the model registry). Two families declaring the same module differently is an error."""
    found = {}
    for fam in registry.families():
        for module, key in fam.flatten_inputs.items():
            if found.setdefault(module, key) != key:
                raise ValueError(f"families disagree on where the flattened input of {module!r} is read: "
                                 f"{found[module]!r} vs {key!r} ({fam.name}).")
    return found


_LIST_LIMIT = 25


class ConversionError(ValueError):
    """A state dict that does not fit the model; ``.report`` holds the details."""

    def __init__(self, report):
        super().__init__(report.format())
        self.report = report


@dataclass
class WeightSlot:
    """One Keras weight and where it comes from in PyTorch.

    Attributes:
        variable: the Keras variable.
        layer: the Keras layer that owns it.
        kind: "conv", "dense", "bn", "prelu" or "raw".
        keras_path: the layer chain joined with "/" plus the weight name (for reports).
        torch_key: the PyTorch key (dotted), read from the declared paths (see the module docstring).
    """

    variable: object
    layer: object
    kind: str
    keras_path: str
    torch_key: str

    @property
    def flat_key(self):
        """The PyTorch key with "." -> "_"."""
        return self.torch_key.replace(".", "_")


@dataclass
class ConversionReport:
    """What a conversion did with every tensor.

    Attributes:
        assigned: number of Keras weights assigned.
        source_tensors: number of tensors in the source state dict.
        ignored: reason -> list of source keys set aside (e.g. ``num_batches_tracked``).
        missing: Keras weights without a source tensor ("keras path <- expected PyTorch key").
        unexpected: source keys no Keras weight uses.
        mismatched: "PyTorch key: shape in file -> Keras weight shape" lines.
        notes: free-form lines (e.g. what a checkpoint wrapper held).
    """

    assigned: int = 0
    source_tensors: int = 0
    ignored: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self):
        """A readable multi-line summary."""
        lines = []
        if self.ok:
            lines.append(
                f"assigned {self.assigned} Keras weights from {self.source_tensors} source tensors"
            )
        else:
            lines.append(
                f"the state dict does not fit the model: {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.mismatched)} mis-shaped; "
                "nothing was assigned"
            )
        for title, items in (
            ("missing (Keras weight <- expected PyTorch key)", self.missing),
            ("unexpected (in the file, used by no Keras weight)", self.unexpected),
            ("mis-shaped (PyTorch key: file shape vs Keras shape)", self.mismatched),
        ):
            if items:
                lines.append(f"  {title}: {len(items)}")
                lines += [f"    {item}" for item in items[:_LIST_LIMIT]]
                if len(items) > _LIST_LIMIT:
                    lines.append(f"    ... and {len(items) - _LIST_LIMIT} more")
        for reason, keys in self.ignored.items():
            if keys:
                shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
                lines.append(f"  left unused ({reason}): {len(keys)} ({shown})")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self):
        return self.format()


def _layer_kind(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    if isinstance(layer, keras.layers.PReLU):
        return "prelu"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        return "conv"
    return "raw"


class NameRuleError(ValueError):
    """A Keras layer name whose PyTorch module path cannot be read back unambiguously."""


def _path_regex(template):
    """The Keras-name regex of a declared PyTorch path (``"fc_d.{}"`` -> ``fc_d_(\\d+)``)."""
    pieces = template.split("{}")
    return "(\\d+)".join(re.escape(piece.replace(".", "_")) for piece in pieces)


def torch_path(name, templates, where="the model"):
    """The PyTorch module path of the Keras layer ``name``, read with the declared ``templates``.

    Args:
        name: a Keras layer name (one level: a top-level layer, or a sublayer's own name).
        templates: the PyTorch paths declared by whoever made the names of this level (``{}``: an
            index); may be empty.
        where: what holds the layer (for errors).

    Returns:
        The dotted PyTorch module path.

    Raises:
        NameRuleError: the name matches several declared paths, or none and the generic rule cannot
            read it unambiguously (see the module docstring).
    """
    found = set()
    for template in templates:
        match = re.fullmatch(_path_regex(template), name)
        if match:
            found.add(template.format(*(str(int(g)) for g in match.groups())))
    if len(found) == 1:
        return found.pop()
    if found:
        raise NameRuleError(
            f"the Keras layer {name!r} in {where} matches several declared PyTorch paths "
            f"{sorted(found)}; the declarations must tell them apart."
        )
    for template in templates:
        # A declared module whose own name holds "_" or an index claims every name that starts
        # with it: the generic rule would split it.
        head = template.split(".")[0]
        if ("_" in head or "{}" in head) and re.match(_path_regex(head) + "(_|$)", name):
            raise NameRuleError(
                f"the Keras layer {name!r} in {where} starts like the declared PyTorch module "
                f"{head!r} but matches none of the declared paths; declare its path (a family's "
                "TORCH_MODULES or a layer's torch_modules)."
            )
    tokens = name.split("_")
    for first, second in zip(tokens, tokens[1:]):
        if not first.isdigit() and not second.isdigit():
            raise NameRuleError(
                f"the Keras layer {name!r} in {where} has no declared PyTorch path and cannot be read "
                f"by the naming rule: is {first + '_' + second!r} one module name or two? Declare its "
                "path (a family's TORCH_MODULES or a layer's torch_modules)."
            )
    if "" in tokens:
        raise NameRuleError(f"the Keras layer {name!r} in {where} has an empty part between '_'.")
    return ".".join(tokens)


def _weight_short_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def weight_slots(model):
    """Every weight of ``model`` with its owning layer chain, in a deterministic order.

    Composite layers are walked recursively; a weight is attributed to the innermost layer that
    owns it.

    Args:
        model: A Keras model (its top-level layers are walked in order).

    Returns:
        A list of `WeightSlot`, one per weight, each weight listed once.

    Raises:
        NameRuleError: a layer name whose PyTorch path cannot be read unambiguously.
    """
    slots, seen = [], set()

    def walk(layer, chain, path):
        children = child_layers(layer)
        child_ids = {id(w) for c in children for w in c.weights}
        kind = _layer_kind(layer)
        for variable in layer.weights:
            if id(variable) in child_ids or id(variable) in seen:
                continue
            seen.add(id(variable))
            name = _weight_short_name(variable)
            torch_name = _TORCH_NAME.get(kind, {}).get(name, name)
            slots.append(
                WeightSlot(
                    variable,
                    layer,
                    kind if name in _TORCH_NAME.get(kind, {}) else "raw",
                    "/".join(chain + [name]),
                    f"{path}.{torch_name}",
                )
            )
        if children:
            declared = tuple(getattr(type(layer), "torch_modules", ()) or ())
            for child in children:
                where = f"{type(layer).__name__} {'/'.join(chain)!r}"
                walk(child, chain + [child.name], path + "." + torch_path(child.name, declared, where))

    templates = model_torch_modules()
    for layer in model.layers:
        if layer.weights:
            walk(layer, [layer.name], torch_path(layer.name, templates))
    return slots


def _module_of(key):
    """``a.b.proj_fc.weight`` -> (``a.b.``, ``proj_fc``)."""
    parts = key.split(".")
    return ".".join(parts[:-2]) + ("." if len(parts) > 2 else ""), parts[-2] if len(parts) > 1 else ""


def flatten_channels(torch_key, shape_of):
    """Channels C of the (C, H, W) map a linear layer's input was flattened from, or None.

    Args:
        torch_key: e.g. ``"fc.weight"`` or ``"local_branch.heads.0.proj_fc.weight"``.
        shape_of: callable PyTorch key -> shape tuple or None.
    """
    prefix, module = _module_of(torch_key)
    inputs = flatten_inputs()
    if module not in inputs or not torch_key.endswith(".weight"):
        return None
    shape = shape_of(prefix + inputs[module])
    return int(shape[0]) if shape else None


def _flatten_permutation(channels, features):
    spatial = features // channels
    side = math.isqrt(spatial)
    if channels * spatial != features or side * side != spatial:
        return None
    return side


def torch_to_keras(value, kind, keras_shape, channels=None):
    """Transform one PyTorch tensor into the Keras weight layout.

    Convolution kernels go from `(out, in, *spatial)` to `(*spatial, in, out)`,
    dense kernels are transposed, PReLU slopes are reshaped; other weights
    (biases, batch-norm statistics, raw weights) pass unchanged.

    Args:
        value: The PyTorch tensor, as an array.
        kind: The weight's kind: `"conv"`, `"dense"`, `"bn"`, `"prelu"` or
            `"raw"` (see `WeightSlot`).
        keras_shape: The shape of the Keras weight to fill.
        channels: For a dense kernel applied to a flattened feature map, the
            number of channels of that map, so that PyTorch's
            channels-first flattening order is turned into Keras'
            channels-last order. Defaults to `None` (no reordering).

    Returns:
        A contiguous array of shape `keras_shape`, or `None` if the tensor
        cannot be brought to that shape.
    """
    value = np.asarray(value)
    keras_shape = tuple(int(d) for d in keras_shape)
    if kind == "conv" and value.ndim >= 3:
        out = np.transpose(value, tuple(range(2, value.ndim)) + (1, 0))
    elif kind == "dense" and value.ndim == 2:
        out = value.T
        if channels and value.shape[1] != channels:
            side = _flatten_permutation(channels, value.shape[1])
            if side is None:
                return None
            out = (
                value.reshape(value.shape[0], channels, side, side)
                .transpose(2, 3, 1, 0)
                .reshape(side * side * channels, value.shape[0])
            )
    elif kind == "prelu":
        out = value.reshape(keras_shape) if value.size == math.prod(keras_shape) else value
        if value.ndim != 1 or value.shape[0] != (keras_shape[-1] if keras_shape else 1):
            return None
    else:
        out = value
    if tuple(out.shape) != keras_shape:
        return None
    return np.ascontiguousarray(out)


def keras_to_torch(value, kind, channels=None):
    """The inverse of `torch_to_keras` (Keras layout -> PyTorch layout).

    Args:
        value: The Keras weight, as an array.
        kind: The weight's kind: `"conv"`, `"dense"`, `"bn"`, `"prelu"` or
            `"raw"` (see `WeightSlot`).
        channels: For a dense kernel applied to a flattened feature map, the
            number of channels of that map (see `torch_to_keras`). Defaults
            to `None` (no reordering).

    Returns:
        A contiguous array in the PyTorch layout.
    """
    value = np.asarray(value)
    if kind == "conv" and value.ndim >= 3:  # kernels; a bias passes unchanged
        nd = value.ndim
        return np.ascontiguousarray(np.transpose(value, (nd - 1, nd - 2) + tuple(range(nd - 2))))
    if kind == "dense" and value.ndim == 2:
        if channels and value.shape[0] != channels:
            side = _flatten_permutation(channels, value.shape[0])
            out = value.reshape(side, side, channels, value.shape[1]).transpose(3, 2, 0, 1)
            return np.ascontiguousarray(out.reshape(value.shape[1], -1))
        return np.ascontiguousarray(value.T)
    if kind == "prelu":
        return np.ascontiguousarray(value.reshape(-1))
    return np.ascontiguousarray(value)


def load_state_dict(model, state_dict, allow_unused=None, notes=(), allow_missing=None):
    """Assign a PyTorch state dict (NumPy arrays) to ``model``'s weights, strictly.

    Args:
        model: a keras_fr model (or any model following the naming rule).
        state_dict: PyTorch key -> array.
        allow_unused: optional dict reason -> predicate(key) for source tensors that may be left
            unused (e.g. the embedding head of a checkpoint loaded with ``include_top=False``).
        notes: lines added to the report.
        allow_missing: optional dict reason -> predicate(dotted PyTorch key) for Keras weights
            that may stay at their initialization (e.g. LGAF's local branch when an IResNet
            checkpoint fills the backbone and global branch); listed in ``report.ignored``.

    Returns:
        A `ConversionReport` (``report.ok`` is True).

    Raises:
        ConversionError: with the report, when anything is missing, unexpected or mis-shaped;
            no weight of ``model`` is changed in that case.

    Example:

    >>> report = load_state_dict(keras_model, state)
    >>> print(report)
    """
    report = ConversionReport(source_tensors=len(state_dict), notes=list(notes))

    def shape_of(key):
        value = state_dict.get(key)
        return None if value is None else tuple(np.shape(value))

    used, assignments = set(), []
    for slot in weight_slots(model):
        source = slot.torch_key if slot.torch_key in state_dict else None
        keras_shape = tuple(slot.variable.shape)
        if source is None:
            expected_key = slot.torch_key
            for reason, predicate in (allow_missing or {}).items():
                if predicate(expected_key):
                    report.ignored.setdefault(reason, []).append(slot.keras_path)
                    break
            else:
                report.missing.append(f"{slot.keras_path} <- {expected_key}")
            continue
        used.add(source)
        channels = flatten_channels(source, shape_of) if slot.kind == "dense" else None
        value = torch_to_keras(state_dict[source], slot.kind, keras_shape, channels)
        if value is None:
            report.mismatched.append(
                f"{source}: {tuple(np.shape(state_dict[source]))} in the file, Keras "
                f"{slot.keras_path} is {keras_shape} ({slot.kind})"
            )
            continue
        assignments.append((slot.variable, value))
    leftovers = [key for key in state_dict if key not in used]
    for key in leftovers:
        if key.endswith("num_batches_tracked"):
            report.ignored.setdefault("BatchNorm counters, no Keras counterpart", []).append(key)
            continue
        for reason, predicate in (allow_unused or {}).items():
            if predicate(key):
                report.ignored.setdefault(reason, []).append(key)
                break
        else:
            report.unexpected.append(f"{key} {tuple(np.shape(state_dict[key]))}")
    if not report.ok:
        raise ConversionError(report)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    report.assigned = len(assignments)
    return report


def export_state_dict(model):
    """Export ``model``'s weights as a PyTorch state dict of NumPy arrays (the reverse conversion).

    Keys and layouts are those of the project's PyTorch reference definitions (and of the public
    checkpoints), so ``torch_model.load_state_dict({k: torch.from_numpy(v) ...}, strict=True)``
    works: BatchNorm layers also get ``num_batches_tracked`` (0). A model built with
    ``include_top=False`` exports its backbone only.

    Args:
        model: a keras_fr model (or any model following the naming rule).

    Returns:
        ``dict[str, numpy.ndarray]`` (float32 weights, int64 counters).

    Raises:
        ValueError: if two Keras weights would produce the same PyTorch key.

    Example:

    >>> state = export_state_dict(keras_fr.applications.IResNet50())
    >>> state["fc.weight"].shape
    (512, 25088)
    """
    slots = weight_slots(model)
    shapes = {}
    for slot in slots:
        shape = tuple(slot.variable.shape)
        if slot.kind in ("conv", "dense"):
            shape = shape[::-1] if slot.kind == "dense" else (shape[-1],) + shape[:-1]
        shapes[slot.torch_key] = shape
    state, bn_modules = {}, set()
    for slot in slots:
        key = slot.torch_key
        if key in state:
            raise ValueError(f"two Keras weights map to the PyTorch key {key!r}.")
        channels = flatten_channels(key, shapes.get) if slot.kind == "dense" else None
        value = keras.ops.convert_to_numpy(slot.variable)
        state[key] = keras_to_torch(value, slot.kind, channels)
        if slot.kind == "bn":
            bn_modules.add((key.rsplit(".", 1)[0], slot.layer))
    for module, layer in sorted(bn_modules, key=lambda item: item[0]):
        # PyTorch's BatchNorm always has an affine weight and bias in these networks.
        channels = state[f"{module}.running_mean"].shape
        state.setdefault(f"{module}.weight", np.ones(channels, np.float32))
        state.setdefault(f"{module}.bias", np.zeros(channels, np.float32))
        state[f"{module}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return state
