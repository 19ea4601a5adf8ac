"""Inference copies of a model with each batch normalization folded into the layer before it.

In inference a batch normalization is an affine map per channel, ``y = (x - mean) * s + beta`` with
``s = gamma / sqrt(variance + epsilon)``. When it directly follows a convolution or a dense layer whose
output nothing else reads, the map can be moved into that layer's weights: the kernel's output
channels are multiplied by ``s`` and the bias becomes ``(bias - mean) * s + beta``. The folded network
computes the same function (up to float rounding) with one pass over each activation tensor fewer:
IResNet100 has a batch normalization after each of its 103 convolutions and after its embedding.

This is what the library's own batch paths run (:func:`keras_fr.evaluation.extract_embeddings`,
``keras-fr embed`` and the recognizer's Keras runtime); TFLite and ONNX files need nothing from it,
their converters fold the same pairs themselves.
"""

import numpy as np

__all__ = ["fold_batch_norms"]


def _foldable_producer(layer):
    """True when a batch normalization after ``layer`` can move into ``layer``'s weights: Keras'
    own convolution or dense layer (not a subclass, whose ``call`` may differ), channels last, no
    activation, not quantized, no LoRA."""
    import keras

    exact = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.DepthwiseConv2D,
             keras.layers.Dense)
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
    import keras

    from keras_fr.layers.normalization import BatchNormalization

    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    if type(layer).call not in (keras.layers.BatchNormalization.call, BatchNormalization.call):
        return False
    axis = layer.axis if layer.axis >= 0 else rank + layer.axis
    return axis == rank - 1 and getattr(layer, "moving_mean", None) is not None


def _pairs(model):
    """``{id(producer): norm}`` for each (producer, batch normalization) pair of ``model``'s own graph
    that can be folded: each layer called once in the model, and the producer's output read by the
    normalization only (not by another layer, nor a model output)."""
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth]
    calls, readers = {}, {}
    for node in nodes:
        if node.operation is None or node.is_input:
            continue
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    pairs = {}
    for node in nodes:
        norm = node.operation
        if norm is None or node.is_input or len(node.input_tensors) != 1:
            continue
        (tensor,) = node.input_tensors
        producer = tensor._keras_history.operation
        if (
            _foldable_norm(norm, len(tensor.shape))
            and _foldable_producer(producer)
            and calls.get(id(norm)) == 1
            and calls.get(id(producer)) == 1
            and readers.get(id(tensor)) == 1
            and all(value is None for value in node.arguments.kwargs.values())  # e.g. mask=None
        ):
            pairs[id(producer)] = norm
    return pairs


def folded_weights(layer, norm):
    """The (kernel, bias) of ``layer`` with ``norm`` (a batch normalization reading its output) folded
    in, computed in float64 and returned in the kernel's dtype."""
    import keras

    kernel = np.asarray(layer.kernel, np.float64)
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)  # output channel c * multiplier + m
    channels = kernel.shape[-2] * kernel.shape[-1] if depthwise else kernel.shape[-1]
    bias = np.asarray(layer.bias, np.float64) if getattr(layer, "bias", None) is not None else np.zeros(channels)
    mean = np.asarray(norm.moving_mean, np.float64)
    variance = np.asarray(norm.moving_variance, np.float64)
    gamma = np.asarray(norm.gamma, np.float64) if norm.scale else np.ones(channels)
    beta = np.asarray(norm.beta, np.float64) if norm.center else np.zeros(channels)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    folded = kernel * (scale.reshape(kernel.shape[-2:]) if depthwise else scale)
    dtype = np.dtype(layer.kernel.dtype)
    return folded.astype(dtype), ((bias - mean) * scale + beta).astype(dtype)


def fold_batch_norms(model):
    """A copy of ``model`` for inference, each foldable batch normalization moved into the layer before it.

    A batch normalization is folded when it directly follows a Keras ``Conv1D`` / ``Conv2D`` /
    ``Conv3D`` / ``DepthwiseConv2D`` / ``Dense`` (channels last, no activation) whose output nothing
    else reads; the layer gets a bias if it had none, and the normalization is left out of the copy.
    Everything else is copied as it is (new layers, the same weights), nested models are folded in
    turn, and ``model`` itself is not changed. The copy computes the same outputs as ``model`` in
    inference (``training=False``; differences are float rounding: IResNet100's embeddings stay at a
    cosine of 0.99999 and more to the original). It is for inference only: it has no moving statistics
    to train.

    Args:
        model: a Functional ``keras.Model`` (every keras_fr application is one).

    Returns:
        A new Functional model with the same inputs, outputs and name; ``model`` when nothing in it can be
        folded.

    Raises:
        TypeError: when ``model`` is not a Functional Keras model (a subclassed model has no graph to
            rewrite).

    Example:

        model = keras_fr.applications.IResNet100(weights=None)
        fast = keras_fr.applications.fold_batch_norms(model)
        embeddings = fast.predict(preprocess_input(faces), batch_size=32)
    """
    folded, _ = _fold(model)
    return folded


def inference_copy(model):
    """:func:`fold_batch_norms` for a Functional model, ``model`` itself for anything else (a subclassed
    model, a callable): what the library's batch paths run."""
    return _fold(model)[0] if _is_functional(model) else model


def _is_functional(model):
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def _fold(model):
    """``(copy, number of normalizations folded)``; see :func:`fold_batch_norms`."""
    import keras

    if not _is_functional(model):
        raise TypeError(
            "`model` must be a Functional Keras model (built from inputs and outputs, as every keras_fr "
            f"application is) to fold its batch normalizations; got {type(model).__name__}."
        )
    pairs = _pairs(model)
    nested = {}
    for layer in model.layers:
        if _is_functional(layer):
            copy, count = _fold(layer)
            if count:
                nested[id(layer)] = (copy, count)
    if not pairs and not nested:
        return model, 0
    folded_norms = {id(norm) for norm in pairs.values()}
    originals = {}  # id(clone) -> original layer

    def clone(layer):
        if id(layer) in nested:
            new = nested[id(layer)][0]
        elif id(layer) in pairs:
            new = type(layer).from_config(dict(layer.get_config(), use_bias=True))
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
        if id(old) in pairs:
            kernel, bias = folded_weights(old, pairs[id(old)])
            new.kernel.assign(kernel)
            new.bias.assign(bias)
        else:
            new.set_weights(old.get_weights())
    return copy, len(pairs) + sum(count for _, count in nested.values())
