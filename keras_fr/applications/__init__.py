"""Face recognition networks in the style of ``keras.applications``.

Every network is also reachable by its registry name (the names used by presets, the converter and
the ``keras-fr`` command): ``keras_fr.applications.get_model("msconv_resnet50", weights=None)``.
"""

import importlib

from keras_fr._lazy import lazy_namespace

#: Registry name -> (module, builder function). One table for the whole package.
MODELS = {
    "msconv_resnet26": ("keras_fr.applications.msconv_resnet", "MSConvResNet26"),
    "msconv_resnet50": ("keras_fr.applications.msconv_resnet", "MSConvResNet50"),
    "msconv_resnet101": ("keras_fr.applications.msconv_resnet", "MSConvResNet101"),
    "iresnet18": ("keras_fr.applications.iresnet", "IResNet18"),
    "iresnet34": ("keras_fr.applications.iresnet", "IResNet34"),
    "iresnet50": ("keras_fr.applications.iresnet", "IResNet50"),
    "iresnet100": ("keras_fr.applications.iresnet", "IResNet100"),
    "iresnet200": ("keras_fr.applications.iresnet", "IResNet200"),
    "lgaf_resnet50": ("keras_fr.applications.lgaf_resnet", "LGAFResNet50"),
    "lgaf_resnet100": ("keras_fr.applications.lgaf_resnet", "LGAFResNet100"),
    "dlib_resnet": ("keras_fr.applications.dlib_resnet", "DlibResNet"),
}


def _squash(name):
    return str(name).replace("_", "").replace("-", "").lower()


def canonical_name(name):
    """The registry name of a model given by registry or builder name, in any case.

    ``"MSConvResNet50"``, ``"msconv_resnet50"`` and ``"msconvresnet50"`` all name the same network.

    Args:
        name: a registry name (``"iresnet50"``) or a builder name (``"IResNet50"``).

    Returns:
        The registry name, a key of ``MODELS``.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.

    Example:
        >>> canonical_name("MSConvResNet50")
        'msconv_resnet50'
    """
    if name in MODELS:
        return name
    wanted = _squash(name)
    for registry_name, (_, fn_name) in MODELS.items():
        if wanted in (_squash(registry_name), _squash(fn_name)):
            return registry_name
    raise ValueError(
        f"Unknown model {name!r}; known models: {', '.join(sorted(MODELS))} "
        "(registry names; the builder names, e.g. IResNet50, are accepted too)."
    )


def get_builder(name):
    """Return the builder function (e.g. ``MSConvResNet50``) for a registry name.

    Args:
        name: one of ``keras_fr.applications.MODELS`` (e.g. ``"iresnet50"``), or a builder name
            (``"IResNet50"``); see `canonical_name`.

    Returns:
        The builder function; calling it builds the network.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.

    Example:
        >>> get_builder("iresnet50").__name__
        'IResNet50'
    """
    name = canonical_name(name)
    module_name, fn_name = MODELS[name]
    return getattr(importlib.import_module(module_name), fn_name)


def get_model(name, **kwargs):
    """Build a network by registry name: ``get_model("iresnet50", weights="x.weights.h5")``.

    Args:
        name: one of ``keras_fr.applications.MODELS``.
        **kwargs: the builder's arguments (``include_top``, ``weights``, ``input_shape``, ...).

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: for an unknown name (see `get_builder`), or invalid builder arguments.

    Example:

        model = get_model("iresnet50", weights=None)  # random weights
        embeddings = model(preprocess_input(images))  # images: (N, 112, 112, 3) RGB in [0, 255]
    """
    return get_builder(name)(**kwargs)


_PUBLIC = {fn: module for module, fn in MODELS.values()}
_PUBLIC.update(
    {
        "MSConvResNet": "keras_fr.applications.msconv_resnet",
        "IResNet": "keras_fr.applications.iresnet",
        "LGAFResNet": "keras_fr.applications.lgaf_resnet",
        "list_weights": "keras_fr.applications.weights",
        "preprocess_input": "keras_fr.applications.common",
        "count_parameters": "keras_fr.applications.common",
    }
)

__getattr__, __dir__ = lazy_namespace(__name__, _PUBLIC)
__all__ = sorted(list(_PUBLIC) + ["MODELS", "canonical_name", "get_builder", "get_model"])
