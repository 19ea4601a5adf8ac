"""The project's own PyTorch reference definitions (installed as ``keras_fr.torch_reference``).

MSNet (MSConv), IResNet and LGAF in plain PyTorch, written from docs/reference.md with the public
repositories' ``state_dict`` layouts. They are verification tools for ``keras_fr.conversion`` and
its tests; importing this package imports torch, which keras_fr itself never needs at run time.
"""

from .reference import build_reference, randomize_  # noqa: F401
