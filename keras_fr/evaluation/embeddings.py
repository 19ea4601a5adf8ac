"""Embedding extraction: batched, with a progress bar and insightface's flip test-time augmentation."""

import os

import numpy as np

from keras_fr.applications.common import check_input_range, preprocess_input
from keras_fr.evaluation.bin_io import EncodedImages
from keras_fr.evaluation.pairs import ImagePaths
from keras_fr.evaluation.verification import l2_normalize


def _as_source(images):
    """Wrap ``images`` as an object with ``__len__`` and ``load_batch(indices, image_size)``."""

    if isinstance(images, (ImagePaths, EncodedImages)):
        return images
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("`images` is empty.")
        if all(isinstance(p, (str, os.PathLike)) for p in images):
            return ImagePaths(images)
        if all(isinstance(p, (bytes, bytearray)) for p in images):
            return EncodedImages(images)
        images = np.asarray(images)
    if hasattr(images, "load_batch") and hasattr(images, "__len__"):
        return images
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            "`images` must be an (N, H, W, 3) RGB array (uint8 in [0, 255]), a list of image paths, or a "
            f"list of encoded images; got an array of shape {array.shape}."
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"`images` must be numeric; got dtype {array.dtype}.")
    if array.shape[0] == 0:
        raise ValueError("`images` is empty.")
    return _ArraySource(array)


class _ArraySource:
    def __init__(self, array):
        self.array = array

    def __len__(self):
        return self.array.shape[0]

    def load_batch(self, indices, image_size=None):
        return self.array[indices[0] : indices[-1] + 1]


def _model_image_size(model):
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):  # several inputs: not ours to guess
        return None
    if shape is not None and len(shape) == 4 and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    return None


def _embed_batch(model, x):
    if hasattr(model, "predict_on_batch"):
        from keras_fr.applications.inference import predict_in_parts

        out = predict_in_parts(model, x)  # predict_on_batch, in parts where the process runs so
    else:
        out = model(x)
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        out = out[0]  # e.g. LGAF with return_branches=True: the fused embedding comes first
    out = np.asarray(out)
    if out.ndim != 2:
        raise ValueError(
            f"the model must output (N, D) embeddings; got shape {out.shape}. Build keras_fr models with "
            "include_top=True (or pooling='avg'/'max')."
        )
    return out.astype(np.float32, copy=False)


def extract_embeddings(
    model, images, batch_size=64, flip=True, preprocess=True, verbose=1, image_size=None, normalize=True,
    input_spec=None, optimize=True,
):
    """Embed face images with a Keras model, batch by batch, as insightface's evaluation does.

    With ``flip=True`` the embedding of an image is ``model(x) + model(horizontal_flip(x))``, and the
    sum is L2-normalized (insightface's "flip" accuracy); with ``flip=False`` it is ``model(x)``
    normalized. Both views of a batch go through the model in one call. ``preprocess_input`` (RGB
    [0, 255] -> [-1, 1]) is applied once, to the raw pixels, unless ``preprocess=False`` (for models that
    scale their own input, or images already in [-1, 1]).

    Args:
        model: any Keras model (or callable) mapping (B, H, W, 3) images to (B, D) embeddings, e.g. a
            keras_fr application with ``include_top=True``. Several outputs: the first is used.
        images: a uint8 (N, H, W, 3) RGB array, a list of image file paths (decoded with Pillow one batch
            at a time, so large sets never sit in memory whole), a list of encoded image bytes, or an
            ``ImagePaths`` / ``EncodedImages`` from the readers.
        batch_size: images per batch (each batch runs ``2 * batch_size`` images with ``flip``).
        flip: add the horizontally flipped view (test-time augmentation).
        preprocess: apply ``keras_fr.applications.preprocess_input``.
        verbose: 1 shows a ``keras.utils.Progbar``, 0 is silent.
        image_size: (H, W) that decoded files are resized to (bilinear) when they differ; default the
            model's input size when it is fixed. Arrays are passed as they are.
        normalize: L2-normalize (default). ``False`` returns the raw (flip-summed) outputs, whose norm
            insightface's IJB protocol keeps as a quality weight.
        input_spec: the model's ``keras_fr.applications.specs.InputSpec`` (``input_spec(name)``). The
            images are then taken as ArcFace-aligned crops and brought into the model's own geometry
            (``InputSpec.crops_from_arcface``, e.g. dlib's 150x150 chip) and normalization (its
            ``preprocess``) instead of being resized and scaled to [-1, 1]. ``None``: the ArcFace 112x112
            convention of the MSConv/IResNet/LGAF families.
        optimize: run the inference copy of a Functional ``model``
            (:func:`keras_fr.applications.inference_model`: batch norms folded into the convolutions,
            PReLUs as a maximum): the same embeddings up to float rounding, faster (docs/benchmarks.md,
            "The inference copy"). Made once per call, which takes a few seconds and holds a second
            copy of the weights while it runs. ``False`` runs ``model`` itself.

    Returns:
        float32 (N, D) array of unit-norm embeddings (raw if ``normalize=False``), in the order of
        ``images``.

    Raises:
        ValueError: on an empty or malformed ``images``, a bad ``batch_size`` or a model that does not
            output (N, D); FileNotFoundError / ValueError naming a file that is missing or undecodable;
            values outside [0, 255] (or, with ``preprocess=False``, outside [-1, 1]: 0-255 pixels
            that were not preprocessed), see ``keras_fr.applications.common.check_input_range``.

    Example:
        >>> model = keras_fr.applications.IResNet50()  # doctest: +SKIP
        >>> emb = extract_embeddings(model, faces_uint8, batch_size=32)  # doctest: +SKIP
        >>> emb.shape  # doctest: +SKIP
        (len(faces_uint8), 512)
    """
    import keras


    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    source = _as_source(images)
    n = len(source)
    if n == 0:
        raise ValueError("`images` is empty.")
    if optimize:
        from keras_fr.applications.inference import inference_copy

        model = inference_copy(model)
    recrop = input_spec is not None and (
        input_spec.alignment != "arcface" or image_size not in (None, (input_spec.size,) * 2)
    )
    scale = input_spec.preprocess_fn() if input_spec is not None else preprocess_input
    if recrop:
        image_size = None  # decode at the files' own size, then re-crop to the model's geometry
    elif image_size is None:
        image_size = _model_image_size(model)
    progbar = keras.utils.Progbar(n, verbose=verbose, unit_name="image") if verbose else None
    chunks = []
    for start in range(0, n, batch_size):
        indices = np.arange(start, min(start + batch_size, n))
        x = source.load_batch(indices, image_size)
        if recrop:
            x = input_spec.crops_from_arcface(x)
        b = x.shape[0]
        if flip:
            x = np.concatenate([x, x[:, :, ::-1, :]], axis=0)
        # the raw model trusts its input: check the range here (min/max of the batch, cheap)
        check_input_range(x, preprocessed=not preprocess, name=f"`images` (batch at {start})")
        x = scale(x) if preprocess else np.asarray(x, dtype=np.float32)
        out = _embed_batch(model, x)
        if out.shape[0] != x.shape[0]:
            raise ValueError(f"the model returned {out.shape[0]} embeddings for a batch of {x.shape[0]} images.")
        emb = out[:b] + out[b:] if flip else out
        if normalize:
            emb = l2_normalize(emb)
        chunks.append(emb.astype(np.float32, copy=False))
        if progbar is not None:
            progbar.update(indices[-1] + 1)
    return np.concatenate(chunks, axis=0)
