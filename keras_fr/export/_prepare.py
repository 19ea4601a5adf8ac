"""Getting a Keras model ready to trace for export, without knowing any architecture.

- ``walk_layers`` (from ``keras_fr.layers.traversal``): every layer of a model through public
  attributes only (``model.layers``, nested models' ``layers``, each layer's public attributes that
  hold layers).
- ``export_source``: the model to trace for an ``ExportTarget``. Every layer is asked for its export
  variant (``keras_fr.layers.export_hooks``: a layer may need another formulation for a file, e.g.
  MSConv's split grouped convolutions or an edge-padded max pool in int8 files); the Functional graph is
  rebuilt with ``keras.models.clone_model`` around the replacements (the other layers are shared, not
  copied), the replaced layers' weights are copied, and the rebuilt model must reproduce the original.
- ``grouped_conv_info`` / ``formulations``: whether the model has grouped convolutions, whether a layer
  offers the split formulation, and which formulations to try.
- ``float32_layer_names``: the layers that stay float32 in an int8 file (``keeps_float32_in_int8``:
  those that declare ``keep_float32_in_int8``, and per-channel PReLUs).
- ``serving_model``: a thin Functional wrapper that calls the model with ``training=False`` (BatchNorm
  uses its moving statistics; LGAF's ``FeatureQualityFusion`` uses its stored norm statistics and
  updates nothing), names the input ``input_image`` and optionally takes NCHW input.
"""

import keras
import numpy as np

from keras_fr.export import _common
from keras_fr.layers.export_hooks import export_variant_of
from keras_fr.layers.export_hooks import keeps_float32_in_int8
from keras_fr.layers.traversal import child_layers
from keras_fr.layers.traversal import walk_layers


def grouped_conv_info(model):
    """Return (has_grouped_conv, can_split): grouped convolutions present; a layer that can be rebuilt
    in the split formulation (its ``export_grouped_conv_modes`` lists ``"split"``)."""
    has_grouped = can_split = False
    for layer in walk_layers(model):
        if getattr(layer, "groups", 1) not in (None, 1):
            has_grouped = True
        if "split" in tuple(getattr(layer, "export_grouped_conv_modes", ()) or ()):
            can_split = True
    return has_grouped, can_split


def float32_layer_names(model):
    """Names of the layers (anywhere in ``model``) whose operators stay float32 in int8 files."""
    return sorted({layer.name for layer in walk_layers(model) if keeps_float32_in_int8(layer)})


def variant_clone(model, target):
    """``model`` rebuilt with every layer's export variant for ``target``, or None if no layer has one.

    Layers without a variant are shared with ``model``; each replacement gets a copy of the weights of
    the layer it replaces.

    Raises:
        ValueError: a layer nested inside a composite layer asks for a variant (only the Functional
            graph's layers can be swapped), a replacement's weights do not fit, or the rebuild fails.
    """
    wanted = {}
    seen = set()

    def ask(layer):
        # A layer with its own `export_variant` answers for everything inside it: not looked into.
        if id(layer) in seen:
            return
        seen.add(id(layer))
        variant = export_variant_of(layer, target)
        if variant is not None:
            wanted[id(layer)] = (layer, variant)
        elif not callable(getattr(layer, "export_variant", None)):
            for child in child_layers(layer):
                ask(child)

    for layer in child_layers(model):
        ask(layer)
    if not wanted:
        return None
    swapped = []

    def clone_function(layer):
        entry = wanted.get(id(layer))
        if entry is None:
            return layer
        swapped.append(entry)
        return entry[1]

    try:
        clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    except Exception as exc:  # noqa: BLE001 - surface why, whatever a layer raised
        raise ValueError(f"cannot rebuild the model for {target}: {exc}") from exc
    done = {id(original) for original, _ in swapped}
    # A variant that only speeds the file up may stay unswapped (it sits inside a composite layer that
    # does not answer for it): the original layer computes the same function.
    missed = [
        original.name
        for original, variant in wanted.values()
        if id(original) not in done and not getattr(variant, "export_speed_only", False)
    ]
    if missed:
        raise ValueError(
            f"the layers {missed} need another formulation for {target} but sit inside a layer that "
            "does not provide one (a composite layer must answer `export_variant` for its sublayers)."
        )
    for original, variant in swapped:
        source = original.get_weights()
        if [w.shape for w in source] != [w.shape for w in variant.get_weights()]:
            raise ValueError(
                f"the export variant of layer {original.name!r} ({type(variant).__name__}) has "
                f"different weights than the layer ({type(original).__name__}); cannot copy them."
            )
        variant.set_weights(source)
    return clone


def export_source(model, target, check_inputs=None):
    """The model to trace for ``target``: ``model`` itself when no layer asks for a variant, else the
    rebuilt model, checked to reproduce ``model`` (float32 parity, relative max difference <= 1e-5)
    on ``check_inputs`` (default: two synthetic inputs).

    Raises:
        ValueError: the model cannot be rebuilt, or the rebuilt model's outputs differ.
    """
    clone = variant_clone(model, target)
    if clone is None:
        return model
    if check_inputs is None:
        check_inputs = _common.verification_inputs(model, None, 2, seed=7)
    ref = np.asarray(model(check_inputs, training=False), np.float64)
    out = np.asarray(clone(check_inputs, training=False), np.float64)
    scale = max(float(np.max(np.abs(ref))), 1e-12)
    rel = float(np.max(np.abs(ref - out))) / scale
    if not rel <= 1e-5:
        raise ValueError(
            f"the model rebuilt for {target} does not reproduce the model (max |diff| is {rel:.3g} of "
            "the output scale)."
        )
    return clone


def serving_model(model, channels_first=False):
    """A Functional wrapper around ``model`` for tracing: inference mode, one named input.

    With ``channels_first=True`` the wrapper takes (N, 3, H, W) and transposes to the model's
    channels-last layout as its first operation.
    """
    _, height, width, channels = tuple(model.inputs[0].shape)
    if channels_first:
        inp = keras.Input(shape=(channels, height, width), name="input_image", dtype="float32")
        x = keras.layers.Permute((2, 3, 1), name="nchw_to_nhwc")(inp)
    else:
        inp = keras.Input(shape=(height, width, channels), name="input_image", dtype="float32")
        x = inp
    out = model(x, training=False)
    return keras.Model(inp, out, name=f"{model.name}_serving")


def formulations(grouped_conv, has_grouped, can_split, fn):
    """The grouped-convolution formulations to try, in order."""
    if grouped_conv == "split":
        if not can_split:
            raise ValueError(
                f"{fn}: grouped_conv='split' needs a model with a layer that can compute its grouped "
                "convolutions per group (its `export_grouped_conv_modes` lists 'split'); "
                "this model has none."
            )
        return ["split"]
    if grouped_conv == "auto" and has_grouped and can_split:
        return ["native", "split"]
    return ["native"]


def first_formulation(candidates, prepare, convert, failure):
    """Convert with the first formulation of ``candidates`` (from ``formulations``) that works.

    Args:
        candidates: the grouped-convolution formulations to try, in order.
        prepare: ``prepare(formulation)`` -> what ``convert`` takes (e.g. the serving model); its
            errors propagate.
        convert: ``convert(prepared)`` -> the conversion's result; a RuntimeError rejects the
            formulation (its message is kept) and the next one is tried.
        failure: the start of the error raised when every formulation is rejected.

    Returns:
        ``(formulation, prepared, result)`` of the first formulation that converted.

    Raises:
        RuntimeError: ``"<failure> (<formulation>: <reason> | ...)."`` when none converted.
    """
    failures = []
    for formulation in candidates:
        prepared = prepare(formulation)
        try:
            return formulation, prepared, convert(prepared)
        except RuntimeError as exc:
            failures.append(f"{formulation}: {exc}")
    raise RuntimeError(f"{failure} ({' | '.join(failures)}).")
