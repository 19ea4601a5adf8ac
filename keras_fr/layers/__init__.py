"""The papers' building blocks as Keras layers (``keras.ops`` only: every Keras backend runs them)."""

from keras_fr._lazy import lazy_namespace

_PUBLIC = {
    # MSConv paper
    "MSConv": "keras_fr.layers.msconv",
    # LGAF paper
    "LANet": "keras_fr.layers.lgaf",
    "SqueezeExcite": "keras_fr.layers.lgaf",
    "MultiScaleLocalHead": "keras_fr.layers.lgaf",
    "MultiHeadLocal": "keras_fr.layers.lgaf",
    "FeatureQualityFusion": "keras_fr.layers.lgaf",
    # margin-based softmax
    "MarginHead": "keras_fr.layers.margin",
    "PartialFC": "keras_fr.layers.partial_fc",
    # Keras' BatchNormalization with a fused training step on TensorFlow
    "BatchNormalization": "keras_fr.layers.normalization",
    # PReLU as maximum(x, alpha * x), and a folded batch norm's bias, for inference copies
    # (keras_fr.applications.inference_model)
    "MaximumPReLU": "keras_fr.layers.activations",
    "ChannelBias": "keras_fr.layers.normalization",
    # Keras' PReLU with a faster training step (every PReLU of keras_fr's networks)
    "PReLU": "keras_fr.layers.activations",
    # Keras' Conv2D whose 1x1 convolutions train as matrix products in bfloat16 (MSConv networks)
    "Conv2D": "keras_fr.layers.convolution",
    # what a layer tells the exporters (keras_fr.export)
    "ExportHooks": "keras_fr.layers.export_hooks",
    "ExportTarget": "keras_fr.layers.export_hooks",
}

__getattr__, __dir__ = lazy_namespace(__name__, _PUBLIC)
__all__ = sorted(_PUBLIC)
