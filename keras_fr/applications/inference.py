"""Inference copies of a model: batch norms folded into the layers before them, PReLUs as a maximum.

Two rewrites, both exact up to float rounding in inference, both measured on this project's CPU
(docs/benchmarks.md, "The inference copy"):

- **Batch norms folded.** In inference a batch normalization is an affine map per channel,
  ``y = (x - mean) * s + beta`` with ``s = gamma / sqrt(variance + epsilon)``. When it directly
  follows a convolution or a dense layer whose output nothing else reads, the map moves into that
  layer's weights: the kernel's output channels are multiplied by ``s`` and the bias becomes
  ``(bias - mean) * s + beta``. IResNet100 has a batch normalization after each of its 103
  convolutions and after its embedding.
- **PReLU as a maximum.** Keras computes ``prelu(x) = relu(x) - alpha * relu(-x)``, five passes over
  the tensor in a TensorFlow graph. When every ``alpha <= 1`` the same values are
  ``maximum(x, alpha * x)`` (bit for bit: for ``x < 0``, ``alpha * x >= x``; for ``x > 0``,
  ``alpha * x <= x``), two passes; when every ``alpha >= 1``, ``minimum(x, alpha * x)``. The copy is a
  snapshot, so the condition is checked on the weights it copies; a PReLU with alphas on both sides of
  1 stays as it is. A PReLU with one slope that reads a folded batch norm's output becomes a
  :class:`~keras_fr.layers.export_hooks.LeakyPReLU` instead: on TensorFlow one leaky ReLU with a
  constant slope, which oneDNN fuses into the convolution before it (see ``_leaky_prelus`` for why
  only there).
- **Layers that bring their own variant.** A layer with an ``inference_variant()`` hook is replaced
  by what it returns and fills in (:meth:`keras_fr.layers.MSConv.inference_variant`: its inner batch
  norms folded into its grouped and 1x1 convolutions, its PReLUs leaky ReLUs).

:func:`inference_model` is what the library's own batch paths run
(:func:`keras_fr.evaluation.extract_embeddings`, the recognizer's Keras runtime); TFLite and ONNX
files need neither rewrite (their converters fold the same batch norms, and both formats have a
PReLU operator).
"""

import weakref

import numpy as np

import keras
from keras import ops

from keras_fr.applications.common import check_positive_int
from keras_fr.layers.activations import MaximumPReLU, is_plain_prelu
from keras_fr.layers.convolution import Conv2D
from keras_fr.layers.export_hooks import LeakyPReLU
from keras_fr.layers.normalization import fold_batch_norm

__all__ = ["inference_model", "predict_in_parts"]


def _prelu_form(layer):
    """``"max"`` / ``"min"`` when Keras' own PReLU ``layer`` can be a :class:`MaximumPReLU`, else ``None``."""
    if not is_plain_prelu(layer) or getattr(layer, "alpha", None) is None:
        return None
    alpha = np.asarray(layer.alpha, np.float64)
    if not np.all(np.isfinite(alpha)):
        return None
    if np.all(alpha <= 1):
        return "max"
    if np.all(alpha >= 1):
        return "min"
    return None


def _own_variant(layer):
    """The layer's own inference variant (its ``inference_variant()`` hook, e.g. MSConv's), or None."""
    hook = getattr(layer, "inference_variant", None)
    return hook() if callable(hook) else None


def _foldable_producer(layer):
    """True when a batch normalization after ``layer`` can move into ``layer``'s weights: Keras'
    own convolution or dense layer (not a subclass, whose ``call`` may differ, but keras_fr's
    ``Conv2D``, whose inference is Keras'), channels last, no activation, not quantized, no LoRA."""
    exact = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.DepthwiseConv2D,
             keras.layers.Dense, Conv2D)
    if type(layer) not in exact:
        return False
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    if getattr(layer, "activation", None) not in (None, keras.activations.linear):
        return False
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return False
    return getattr(layer, "kernel", None) is not None


def _foldable_norm(layer, rank):
    """True for a (keras_fr or Keras) batch normalization over the last axis of a rank-``rank`` input
    whose inference is Keras' formula."""
    from keras_fr.layers.normalization import BatchNormalization

    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    if type(layer).call not in (keras.layers.BatchNormalization.call, BatchNormalization.call):
        return False
    axis = layer.axis if layer.axis >= 0 else rank + layer.axis
    return axis == rank - 1 and getattr(layer, "moving_mean", None) is not None


def _plain_call(node):
    """No call arguments but the inputs (``mask=None`` and ``training=None/False`` are allowed)."""
    return all(value is None or (key == "training" and value is False)
               for key, value in node.arguments.kwargs.items())


def _graph(model):
    """``(nodes, calls, readers)`` of ``model``'s own graph: its layer nodes with one input tensor, as
    ``(node, layer, tensor)``; how many times each layer is called (``id(layer)``); how many nodes or
    model outputs read each tensor (``id(tensor)``)."""
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth
             if node.operation is not None and not node.is_input]
    calls, readers = {}, {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    single = [(node, node.operation, node.input_tensors[0]) for node in nodes if len(node.input_tensors) == 1]
    return single, calls, readers


def _pairs(graph):
    """``{id(producer): norm}`` for each (producer, batch normalization) pair of a model's own graph
    (``_graph(model)``) that can be folded: each layer called once in the model, and the producer's
    output read by the normalization only (not by another layer, nor a model output)."""
    nodes, calls, readers = graph
    pairs = {}
    for node, norm, tensor in nodes:
        producer = tensor._keras_history.operation
        if (
            _foldable_norm(norm, len(tensor.shape))
            and _foldable_producer(producer)
            and calls.get(id(norm)) == 1
            and calls.get(id(producer)) == 1
            and readers.get(id(tensor)) == 1
            and _plain_call(node)
        ):
            pairs[id(producer)] = norm
    return pairs


def _leaky_prelus(graph, folded_norms):
    """ids of the single-slope PReLUs of a model's own graph (``_graph(model)``) that read a folded batch norm's output
    (and are called once): they become :class:`~keras_fr.layers.export_hooks.LeakyPReLU`, which on
    TensorFlow traces to one leaky ReLU with a constant slope that oneDNN fuses into the convolution
    before it (``Conv2D + BiasAdd + LeakyRelu``, one pass).

    Only there: TensorFlow 2.21 with oneDNN fuses ``Conv2D + BiasAdd + Add + LeakyRelu`` too (a
    PReLU after a residual sum) and that fused kernel ignores the slope, computing 0.2 for every
    one (found with MSConvResNet26, checked on TensorFlow ops alone); such PReLUs stay
    :class:`MaximumPReLU`, whose slope is a variable and is not fused.
    """
    nodes, calls, _ = graph
    leaky = set()
    for node, layer, tensor in nodes:
        if calls.get(id(layer)) != 1 or not _plain_call(node):
            continue
        if _prelu_form(layer) is None or int(np.prod(layer.alpha.shape)) != 1:
            continue
        if id(tensor._keras_history.operation) in folded_norms:
            leaky.add(id(layer))
    return leaky


def folded_weights(layer, norm):
    """The (kernel, bias) of ``layer`` with ``norm`` (a batch normalization reading its output) folded
    in, computed in float64."""
    return fold_batch_norm(layer.kernel, getattr(layer, "bias", None), norm,
                           depthwise=isinstance(layer, keras.layers.DepthwiseConv2D))


def inference_model(model):
    """A copy of ``model`` for inference: batch norms folded into the layers before them, PReLUs as a maximum.

    A batch normalization is folded when it directly follows a Keras ``Conv1D`` / ``Conv2D`` /
    ``Conv3D`` / ``DepthwiseConv2D`` / ``Dense`` (channels last, no activation) whose output nothing
    else reads; that layer gets a bias if it had none, and the normalization is left out of the copy.
    A Keras ``PReLU`` whose alphas are all at most 1 (or all at least 1) becomes a
    :class:`keras_fr.layers.MaximumPReLU` (the module's docstring says why both are exact), or a
    leaky ReLU when it has one slope and follows a folded batch norm. A layer with its own
    ``inference_variant()`` (MSConv) is replaced by that variant. Everything else is copied
    as it is (new layers, the same weights); nested Functional models are rewritten in turn, layers
    inside other custom layers (LGAF's heads) are not; ``model`` itself is not changed.

    The copy gives ``model``'s outputs in inference (``training=False``) up to float rounding
    (IResNet100's embeddings: cosine 0.99999 and more to the original's). It is a snapshot of the
    weights, for inference only: the folded layers have no moving statistics to train.

    Args:
        model: a Functional ``keras.Model`` (every keras_fr application is one).

    Returns:
        A new Functional model with the same inputs, outputs and name; ``model`` itself when there is
        nothing to rewrite.

    Raises:
        TypeError: when ``model`` is not a Functional Keras model (a subclassed model has no graph to
            rewrite).

    Example:

        model = keras_fr.applications.IResNet100(weights=None)
        fast = keras_fr.applications.inference_model(model)
        embeddings = fast.predict(preprocess_input(faces), batch_size=32)
    """
    return _rewrite(model)


def inference_copy(model):
    """:func:`inference_model` for a Functional model, ``model`` itself for anything else (a subclassed
    model, a callable): what the library's batch paths run."""
    return _rewrite(model) if _is_functional(model) else model


#: model -> {parts: traced function}; weak, so a cached function never keeps its model alive.
_PARTS_FUNCTIONS = weakref.WeakKeyDictionary()


def predict_in_parts(model, x, parts=None):
    """``model.predict_on_batch(x)``, with the batch cut into ``parts`` that run side by side.

    The parts are consecutive slices of the batch (sizes differing by at most one), each run through
    ``model`` in inference in one traced TensorFlow graph, and the outputs concatenated in order; the
    values are ``predict_on_batch``'s up to float rounding (each image is computed alone either way).
    TensorFlow runs independent operations of a graph at the same time on its inter-op threads, so in a
    process that runs one thread per operation (``keras_fr._threads``, as ``keras-fr eval`` sets it)
    each core takes one part. Anywhere else this is ``predict_on_batch``: ``parts`` of 1, a batch
    smaller than ``parts``, a backend other than TensorFlow, an input that is not one array.

    Args:
        model: a Keras model with one input.
        x: the batch, one array.
        parts: how many parts; ``None``: ``keras_fr._threads.batch_parts()`` (the inter-op threads when
            the process runs one thread per operation, else 1).

    Returns:
        What ``predict_on_batch`` returns: NumPy arrays, in the model's output structure.

    Raises:
        ValueError: when ``parts`` is not a positive integer.
    """
    if parts is not None:
        check_positive_int("parts", parts)
    if keras.backend.backend() != "tensorflow":
        return model.predict_on_batch(x)
    if parts is None:
        from keras_fr._threads import batch_parts

        parts = batch_parts()
    parts = int(parts)
    if parts == 1 or not isinstance(x, np.ndarray) or x.ndim == 0 or len(x) < parts:
        return model.predict_on_batch(x)
    import tensorflow as tf

    functions = _PARTS_FUNCTIONS.setdefault(model, {})
    if parts not in functions:
        ref = weakref.ref(model)

        @tf.function(reduce_retracing=True)
        def run(batch):
            net = ref()
            n = tf.shape(batch)[0]
            outputs = [net(batch[(i * n) // parts:((i + 1) * n) // parts], training=False) for i in range(parts)]
            return tf.nest.map_structure(lambda *pieces: tf.concat(pieces, axis=0), *outputs)

        functions[parts] = run
    return tf.nest.map_structure(lambda t: t.numpy(), functions[parts](x))


def _is_functional(model):
    """A Keras model with a graph of layers (Keras' Functional class, which is not public API)."""
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth") and hasattr(model, "outputs")


def _rewrite(model):
    """The copy, or ``model`` itself when nothing in it is rewritten; see :func:`inference_model`."""
    if not _is_functional(model):
        raise TypeError(
            "`model` must be a Functional Keras model (built from inputs and outputs, as every keras_fr "
            f"application is) to make its inference copy; got {type(model).__name__}."
        )
    graph = _graph(model)
    pairs = _pairs(graph)
    prelus = {id(layer): form for layer in model.layers if (form := _prelu_form(layer))}
    variants = {id(layer): variant for layer in model.layers if (variant := _own_variant(layer)) is not None}
    nested = {}
    for layer in model.layers:
        if _is_functional(layer):
            copy = _rewrite(layer)
            if copy is not layer:
                nested[id(layer)] = copy
    if not pairs and not prelus and not nested and not variants:
        return model
    folded_norms = {id(norm) for norm in pairs.values()}
    leaky = _leaky_prelus(graph, folded_norms)
    originals = {}  # id(clone) -> original layer

    def clone(layer):
        if id(layer) in nested:
            new = nested[id(layer)]
        elif id(layer) in variants:
            new = variants[id(layer)]
        elif id(layer) in pairs:
            new = type(layer).from_config(dict(layer.get_config(), use_bias=True))
        elif id(layer) in leaky:
            new = LeakyPReLU.from_config(layer.get_config())
        elif id(layer) in prelus:
            new = MaximumPReLU.from_config(dict(layer.get_config(), form=prelus[id(layer)]))
        else:
            new = type(layer).from_config(layer.get_config())
        originals[id(new)] = layer
        return new

    def call(layer, *args, **kwargs):
        if id(originals.get(id(layer))) in folded_norms:
            return args[0]
        return layer(*args, **kwargs)

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for new in copy.layers:
        old = originals.get(id(new))
        if old is None or id(old) in nested:
            continue
        if id(old) in variants:
            old.fill_inference_variant(new)
        elif id(old) in pairs:
            kernel, bias = folded_weights(old, pairs[id(old)])
            new.kernel.assign(ops.cast(kernel, new.kernel.dtype))
            new.bias.assign(ops.cast(bias, new.bias.dtype))
        else:
            new.set_weights(old.get_weights())
    return copy
