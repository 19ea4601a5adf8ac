"""Recognize a checkpoint's network (family, depth, embedding size, heads) from its keys and shapes.

File names and model names are never read: the MSConv reference's own factory builds its "ms50"
with the 101-deep block counts (docs/reference.md section 1), so only the keys can be trusted.
"""

import re
from collections import Counter
from dataclasses import dataclass

from keras_fr.applications import registry
from keras_fr.conversion.readers import CheckpointError


@dataclass
class ArchSpec:
    """A network recognized from a state dict.

    Attributes:
        family: the registry family, e.g. "msconv_resnet", "iresnet" or "lgaf_resnet".
        model_name: the registry name of the network, e.g. "iresnet100".
        blocks: blocks per stage found in the keys.
        embedding_size: output dimension (None if the checkpoint has no head).
        num_heads: LGAF local heads (None otherwise).
        has_top: whether the checkpoint holds the embedding head.
        options: further builder arguments read from the keys (e.g. ``{"num_heads": 4}``).
    """

    family: str
    model_name: str
    blocks: tuple
    embedding_size: int = None
    has_top: bool = True
    options: dict = None

    @property
    def num_heads(self):
        """LGAF's local heads when the keys say (None otherwise)."""
        return (self.options or {}).get("num_heads")

    def builder_kwargs(self):
        """Keyword arguments that make the builder match this checkpoint.

        Returns:
            A dict with `embedding_size` (when known) and the options read from the keys.
        """
        kwargs = dict(self.options or {})
        if self.embedding_size is not None:
            kwargs["embedding_size"] = self.embedding_size
        return kwargs

    def is_head_key(self, key):
        """Tell whether a state-dict key belongs to this family's embedding head.

        Args:
            key: A PyTorch state-dict key, e.g. `"fc.weight"`.

        Returns:
            `True` if the key's top-level module is one of the family's head modules (the
            family's ``CheckpointLayout.head_modules`` in the model registry), else `False`.
        """
        return key.split(".", 1)[0] in registry.family(self.family).checkpoint.head_modules


def _blocks(keys, pattern):
    counts = []
    for stage in range(1, 5):
        regex = re.compile(pattern.format(stage=stage))
        indices = {int(m.group(1)) for k in keys for m in [regex.match(k)] if m}
        if indices and indices != set(range(max(indices) + 1)):
            raise CheckpointError(
                f"stage {stage} has non-contiguous block indices {sorted(indices)} in the checkpoint."
            )
        counts.append(len(indices))
    return tuple(counts)


def describe_keys(state_dict, limit=12):
    """Describe a state dict briefly, for error messages.

    Args:
        state_dict: A mapping of PyTorch key -> array (or tensor).
        limit: The most top-level module prefixes to list, most frequent
            first. Defaults to `12`.

    Returns:
        A one-line string with the number of tensors, the top-level module
        prefixes with their key counts, and the first six keys with their
        shapes.
    """
    prefixes = Counter(k.split(".", 1)[0] for k in state_dict)
    shown = ", ".join(f"{p} ({n})" for p, n in prefixes.most_common(limit))
    sample = ", ".join(
        f"{k} {tuple(getattr(state_dict[k], 'shape', ()))}" for k in list(state_dict)[:6]
    )
    return f"{len(state_dict)} tensors; top-level modules: {shown}; first keys: {sample}"


def _checkpoint_families():
    found = [f for f in registry.families() if f.checkpoint is not None]
    return sorted(found, key=lambda f: -f.checkpoint.priority)


def infer_architecture(state_dict):
    """Recognize the keras_fr network a PyTorch state dict belongs to.

    Every family of the model registry with a ``CheckpointLayout`` is asked, in decreasing
    priority, whether the keys are its own; the block counts found in the keys then name the model.

    Args:
        state_dict: PyTorch key -> array (prefixes already stripped).

    Returns:
        An `ArchSpec`.

    Raises:
        CheckpointError (a ValueError): an unknown layout, or a known family with block counts
            keras_fr does not provide; the message lists what was found.

    Example:

    >>> spec = infer_architecture(state)
    >>> spec.model_name
    'iresnet100'
    """
    families = _checkpoint_families()
    for fam in families:
        layout = fam.checkpoint
        if not layout.recognize(state_dict):
            continue
        blocks = _blocks(list(state_dict), layout.block_key)
        record = registry.record_for_blocks(fam.name, blocks)
        if record is None:
            known = ", ".join(f"{r.name}: {r.blocks}" for r in registry.models_of(fam.name))
            raise CheckpointError(
                f"{layout.description} with blocks per stage {blocks}, which is none of the "
                f"networks keras_fr provides in that family ({known})."
            )
        try:
            options = layout.options(state_dict) if layout.options else {}
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        top = state_dict.get(layout.embedding_key)
        return ArchSpec(fam.name, record.name, blocks,
                        int(top.shape[0]) if top is not None else None, top is not None, options)
    layouts = "; ".join(f.checkpoint.description for f in families)
    raise CheckpointError(
        f"unknown checkpoint layout: none of keras_fr's networks ({layouts}). "
        f"Found {describe_keys(state_dict)}."
    )
