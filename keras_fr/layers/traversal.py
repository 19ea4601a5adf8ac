"""Walking the layers of a model through public attributes only (no private Keras state).

``child_layers(layer)``: a model's ``layers``; for any other layer, the layers held by its public
attributes (directly, or in a list, tuple or dict). ``walk_layers(model)``: every layer inside a model,
nested models and composite layers included, each once, parents before children. The exporters
(``keras_fr.export``) and the checkpoint key mapping (``keras_fr.conversion.mapping``) both use them;
a composite layer must therefore keep its sublayers in public attributes (every keras_fr layer does).
"""

import keras


def child_layers(layer):
    """The layers directly inside ``layer``, through public attributes only, in attribute order."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    children = []
    for name, value in vars(layer).items():
        if name.startswith("_"):
            continue
        if isinstance(value, dict):
            values = value.values()
        elif isinstance(value, (list, tuple)):
            values = value
        else:
            values = (value,)
        children.extend(v for v in values if isinstance(v, keras.layers.Layer) and v is not layer)
    return children


def walk_layers(model):
    """Every layer inside ``model`` (not ``model`` itself), each once, parents before children."""
    seen = set()
    out = []

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        out.append(layer)
        for child in child_layers(layer):
            visit(child)

    for layer in child_layers(model):
        visit(layer)
    return out
