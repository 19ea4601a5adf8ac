"""Checkpoint -> keras_fr model (and back), and the numerical check against the PyTorch reference."""

import os

import numpy as np

from keras_fr._atomic import atomic_path
from keras_fr.applications import registry
from keras_fr.conversion.infer import ArchSpec, infer_architecture
from keras_fr.conversion.mapping import export_state_dict, load_state_dict
from keras_fr.conversion.readers import CheckpointError, read_checkpoint, write_safetensors

#: Registry names of the networks a PyTorch checkpoint converts into (``arch`` values besides "auto").
ARCHS = registry.ModelsView(lambda record: registry.family(record.family).checkpoint is not None)


def build_keras_model(spec, include_top=True, input_shape=None, **kwargs):
    """Build the keras_fr application for an `ArchSpec` (random weights).

    Args:
        spec: The `ArchSpec` recognized from a checkpoint; its family and
            depth choose the builder (e.g. `IResNet50`).
        include_top: Whether to build the embedding head. With `False`, the
            spec's `embedding_size` and `num_heads` are not passed.
        input_shape: Optional `(height, width, 3)` input shape, passed to the
            builder.
        **kwargs: Further builder arguments; they override those taken from
            the spec.

    Returns:
        A `keras.Model` with randomly initialized weights.
    """
    builder = registry.get_builder(spec.model_name)
    options = spec.builder_kwargs()
    if not include_top:
        options.pop("embedding_size", None)
        options.pop("num_heads", None)
    options.update(kwargs)
    return builder(include_top=include_top, input_shape=input_shape, **options)


def _report_notes(info):
    notes = []
    if info.wrapper:
        notes.append(f"weights taken from the training checkpoint's {info.wrapper!r} entry")
    if info.stripped_prefixes:
        notes.append(f"stripped key prefixes: {', '.join(info.stripped_prefixes)}")
    if info.other_entries:
        notes.append(f"other training-checkpoint entries ignored: {', '.join(info.other_entries)}")
    return notes


def convert_checkpoint(path, arch="auto", include_top=True, *, input_shape=None, fusion=None,
                       return_report=False):
    """Convert a PyTorch checkpoint (MSConv, IResNet or LGAF) into a keras_fr model.

    The network is recognized from the checkpoint's keys and shapes (never from its file name):
    family, depth, embedding size and LGAF heads. Every tensor is accounted for; see
    `keras_fr.conversion.load_state_dict`.

    Args:
        path: a ``.pt``/``.pth``, ``.safetensors`` or ``.npz`` file: a state dict, possibly with a
            ``module.``/``_orig_mod.`` prefix, or a training checkpoint dict (``state_dict_backbone``
            with ``state_dict_softmax_fc``, ``state_dict``, ``model``).
        arch: ``"auto"`` or a registry name (``"iresnet100"``, ...) which must agree with what the
            keys say. One exception: ``"lgaf_resnet50"``/``"lgaf_resnet100"`` with an IResNet
            checkpoint of the same depth fills the LGAF backbone and global branch (the local
            branch and fusion statistics stay at their initialization; the report lists them).
        include_top: build the embedding head; with False the head's tensors are left (reported).
        input_shape: optional (H, W, 3) for the Keras model (IResNet/LGAF heads need 112x112).
        fusion: LGAF fusion mode for the built model ("quality" by default).
        return_report: also return the `ConversionReport`.

    Returns:
        The ``keras.Model`` with the checkpoint's weights (and the report if asked).

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: unreadable or unsafe file, unknown layout, an ``arch`` the keys contradict, or a
            state dict that does not fit (`ConversionError`, with a readable report).

    Example:

    >>> model = convert_checkpoint("ms1mv3_arcface_r100_fp16/backbone.pth")
    >>> model.name
    'iresnet100'
    """
    if arch != "auto" and arch not in ARCHS:
        raise ValueError(f"`arch` must be 'auto' or one of {', '.join(ARCHS)}; got {arch!r}.")
    state, info = read_checkpoint(path)
    spec = infer_architecture(state)
    allow_missing = {}
    if arch != "auto" and arch != spec.model_name:
        wanted = registry.get_record(arch)
        lacks = registry.family(wanted.family).checkpoint.filled_from.get(spec.family)
        source_family = registry.family(spec.family)
        if lacks is not None and tuple(wanted.blocks) == tuple(spec.blocks):
            # e.g. an ArcFace IResNet checkpoint fills an LGAF model's backbone and global branch
            # (same keys); the parts it lacks stay at their initialization.
            spec = ArchSpec(wanted.family, wanted.name, spec.blocks, spec.embedding_size, spec.has_top, {})
            allow_missing[
                f"{registry.family(wanted.family).display} {', '.join(p.rstrip('.') for p in lacks)}: "
                f"not in the {source_family.display} checkpoint, left at initialization"
            ] = lambda key, lacks=lacks: key.startswith(lacks)
    if arch != "auto" and arch != spec.model_name:
        raise ValueError(
            f"{os.fspath(path)}: `arch` is {arch!r} but the checkpoint's keys describe a "
            f"{spec.model_name} (blocks per stage {spec.blocks}); use arch='auto' or the matching "
            "name."
        )
    if include_top and not spec.has_top:
        raise ValueError(
            f"{os.fspath(path)}: the checkpoint has no embedding head; convert it with "
            "include_top=False."
        )
    extra = {}
    if fusion is not None:
        if spec.family != "lgaf_resnet":
            raise ValueError("`fusion` applies only to LGAF checkpoints.")
        extra["fusion"] = fusion
    model = build_keras_model(spec, include_top, input_shape, **extra)
    allow = {}
    if not include_top:
        allow["embedding head not built (include_top=False)"] = spec.is_head_key
    notes = _report_notes(info)
    report = load_state_dict(model, state, allow_unused=allow, notes=notes,
                             allow_missing=allow_missing)
    if info.softmax:
        report.ignored["margin-softmax class centers (training only)"] = sorted(info.softmax)
    if return_report:
        return model, report
    return model


def save_state_dict(state_dict, path, metadata=None):
    """Write a state dict of NumPy arrays as ``.pt``/``.pth`` (needs torch), ``.safetensors`` or
    ``.npz``, atomically (a temporary file in the same folder, then ``os.replace``).

    Args:
        state_dict: key -> numpy array (e.g. from `export_state_dict`).
        path: destination; the extension picks the format.
        metadata: optional dict of strings (safetensors only).

    Raises:
        ValueError: unsupported extension.

    Example:

    >>> save_state_dict(export_state_dict(model), "backbone.safetensors")
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        write_safetensors(path, state_dict, metadata)
        return path
    if ext not in (".pt", ".pth", ".npz"):
        raise ValueError(
            f"state dict output must end in .pt, .pth, .safetensors or .npz; got {path!r}."
        )

    with atomic_path(path, suffix=ext) as tmp:
        if ext == ".npz":
            np.savez(tmp, **{k: np.asarray(v) for k, v in state_dict.items()})
        else:
            try:
                import torch
            except ImportError:
                raise ValueError(
                    "writing a .pt/.pth state dict needs torch; write .safetensors or .npz instead."
                ) from None
            torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, tmp)
    return path


def reference_outputs(model_name, state_dict, images, fusion="quality", num_heads=None):
    """Run the project's PyTorch reference network (``keras_fr.torch_reference``) on ``images``.

    Args:
        model_name: registry name, e.g. "iresnet100".
        state_dict: PyTorch key -> numpy array; loaded with ``strict=True``.
        images: (N, H, W, 3) float32 channels-last images in [-1, 1].
        fusion: LGAF fusion mode.
        num_heads: LGAF heads (inferred from the state dict if None).

    Returns:
        The reference output as a numpy array (N, D).

    Raises:
        ImportError: torch is not installed.
    """
    import torch

    from keras_fr.torch_reference import build_reference

    kwargs = {"fusion": fusion}
    try:
        kwargs.update(infer_architecture(state_dict).builder_kwargs())
    except CheckpointError:
        pass  # not a layout of its own (e.g. a partial state dict): the reference's defaults
    if num_heads is not None:
        kwargs["num_heads"] = num_heads
    net = build_reference(model_name, **kwargs)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, strict=True)
    net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))))
    return out.numpy()


def compare_outputs(expected, actual):
    """Max absolute difference and per-sample cosine similarity of two (N, D) arrays.

    Args:
        expected: The reference outputs, an array whose first axis is the
            sample axis (other axes are flattened).
        actual: The outputs to compare, of the same shape as `expected`.

    Returns:
        ``(max_abs_diff, cosines)`` with ``cosines`` a float64 array of length N.

    Raises:
        ValueError: If the two arrays do not have the same shape (after
            flattening all but the first axis).
    """
    expected = np.asarray(expected, np.float64).reshape(len(expected), -1)
    actual = np.asarray(actual, np.float64).reshape(len(actual), -1)
    if expected.shape != actual.shape:
        raise ValueError(f"output shapes differ: {expected.shape} vs {actual.shape}.")
    cos = np.sum(expected * actual, axis=1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1) + 1e-12
    )
    return float(np.max(np.abs(expected - actual))), cos


def verify_against_reference(model, state_dict, model_name, images, fusion="quality"):
    """Run the PyTorch reference and the Keras model on the same images and compare.

    Args:
        model: The converted `keras.Model`.
        state_dict: PyTorch key -> numpy array, loaded into the reference
            network with ``strict=True`` (see `reference_outputs`).
        model_name: registry name of the reference network, e.g. "iresnet100".
        images: (N, H, W, 3) float32 channels-last images in [-1, 1].
        fusion: LGAF fusion mode of the reference network.

    Returns:
        ``(max_abs_diff, cosines)`` as in `compare_outputs`.

    Raises:
        ImportError: torch is not installed.
    """
    expected = reference_outputs(model_name, state_dict, images, fusion=fusion)
    actual = np.asarray(model(images, training=False))
    return compare_outputs(expected, actual)


__all__ = [
    "ARCHS",
    "CheckpointError",
    "build_keras_model",
    "compare_outputs",
    "convert_checkpoint",
    "export_state_dict",
    "reference_outputs",
    "save_state_dict",
    "verify_against_reference",
]
