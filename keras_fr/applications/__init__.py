"""Face recognition networks in the style of ``keras.applications``.

Every network is also reachable by its registry name (the names used by presets, the converter and
the ``keras-fr`` command): ``keras_fr.applications.get_model("msconv_resnet50", weights=None)``.
"""

from collections.abc import Mapping

from keras_fr._lazy import lazy_namespace
from keras_fr.applications import registry
from keras_fr.applications.registry import canonical_name, get_builder  # noqa: F401  (public)

#: Registry name -> (module, builder function name): a read-only view of the model registry
#: (``keras_fr.applications.registry``), where each family module records its networks.
MODELS = registry.ModelsView()


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


#: Public names defined in this package's modules, besides every registered builder.
_EXTRAS = {
    "list_weights": "keras_fr.applications.weights",
    "preprocess_input": "keras_fr.applications.common",
    "count_parameters": "keras_fr.applications.common",
    "inference_model": "keras_fr.applications.inference",
    "predict_in_parts": "keras_fr.applications.inference",
}


class _PublicNames(Mapping):
    """Public name -> defining module: the registry's model and family builders plus ``_EXTRAS``,
    read when a name is first used (so registering the built-in families waits until then)."""

    def _names(self):
        names = {r.builder: r.module for r in registry.records()}
        names.update({f.builder: f.module for f in registry.families()})
        names.update(_EXTRAS)
        return names

    def __getitem__(self, name):
        return self._names()[name]

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())


_lazy_getattr, __dir__ = lazy_namespace(__name__, _PublicNames())


def __getattr__(name):
    if name == "__all__":
        return sorted(list(_PublicNames()) + ["MODELS", "canonical_name", "get_builder", "get_model"])
    return _lazy_getattr(name)
