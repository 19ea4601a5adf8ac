"""One-call evaluation of a model on a pair set, ROC plots and JSON reports."""

import json
import os
import time

import numpy as np

from keras_fr._atomic import atomic_path, write_text
from keras_fr.evaluation.embeddings import extract_embeddings
from keras_fr.evaluation.pairs import read_pairs
from keras_fr.evaluation.verification import verify_pairs


def evaluate_pairs(
    model, pairs_source, batch_size=64, flip=True, nfolds=10, preprocess=True, verbose=1, return_embeddings=False,
    input_spec=None,
):
    """Embed a verification set with ``model`` and measure it with insightface's protocol.

    Each unique image is embedded once (:func:`extract_embeddings`, flip TTA by default), then the pairs
    are scored by :func:`verify_pairs`.

    Args:
        model: a Keras model producing (N, D) embeddings.
        pairs_source: a folder with ``pairs.txt``, a ``.txt``, ``.csv`` or ``.bin`` file, or a ``PairSet``.
        batch_size: images per batch.
        flip: flip test-time augmentation.
        nfolds: number of contiguous folds (10).
        preprocess: apply ``preprocess_input`` (RGB [0, 255] -> [-1, 1]).
        verbose: progress bar (1) or silent (0).
        return_embeddings: also return the (M, D) embeddings of the unique images.
        input_spec: the model's input specification (see :func:`extract_embeddings`).

    Returns:
        A :class:`VerificationResult` with an extra attribute ``seconds`` (embedding + scoring time);
        ``(result, embeddings)`` if ``return_embeddings``.

    Raises:
        FileNotFoundError, ValueError: from the readers, the extraction or the protocol.

    Example:
        >>> result = evaluate_pairs(keras_fr.applications.IResNet50(), "../shared/data/lfw112")  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
    """
    pairs = read_pairs(pairs_source)
    start = time.perf_counter()
    emb = extract_embeddings(
        model, pairs.images, batch_size=batch_size, flip=flip, preprocess=preprocess, verbose=verbose,
        input_spec=input_spec,
    )
    # extract_embeddings already normalized them exactly as verify_pairs would.
    result = verify_pairs(emb[pairs.pairs[:, 0]], emb[pairs.pairs[:, 1]], pairs.issame, nfolds=nfolds, normalize=False)
    result.seconds = time.perf_counter() - start
    return (result, emb) if return_embeddings else result


def _atomic_target(path):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    return path, folder


def plot_roc(curves, path, title="ROC", log_far=True):
    """Save ROC curves as a PNG (matplotlib, Agg backend).

    Args:
        curves: ``{label: (fpr, tpr)}`` (e.g. ``{"lfw": (result.roc_fpr, result.roc_tpr)}``) or one
            :class:`VerificationResult`.
        path: the PNG file (written to a temporary file in the same folder, then moved into place).
        title: plot title.
        log_far: logarithmic FAR axis (the IJB convention); points with FAR 0 are not drawn there.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: if the output folder does not exist.

    Example:
        >>> plot_roc(result, "roc.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if hasattr(curves, "roc_fpr"):
        curves = {"verification": (curves.roc_fpr, curves.roc_tpr)}
    path, _ = _atomic_target(path)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    try:
        for label, (fpr, tpr) in curves.items():
            fpr = np.asarray(fpr, dtype=np.float64)
            tpr = np.asarray(tpr, dtype=np.float64)
            if log_far:
                keep = fpr > 0
                fpr, tpr = fpr[keep], tpr[keep]
            ax.plot(fpr, tpr, label=str(label))
        if log_far:
            ax.set_xscale("log")
        ax.set_xlabel("False accept rate")
        ax.set_ylabel("True accept rate")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(title)
        ax.legend(loc="lower right")
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return value


def write_report(path, report):
    """Write a JSON report atomically (NaN becomes null; numpy values become Python values).

    Args:
        path: the ``.json`` file.
        report: a dict (values may be numpy arrays/scalars or results with ``to_dict()``), or a result.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: if the output folder does not exist.

    Example:
        >>> write_report("report.json", {"lfw": result})  # doctest: +SKIP
    """
    path, _ = _atomic_target(path)
    text = json.dumps(_jsonable(report), indent=2, sort_keys=True, allow_nan=False)
    write_text(path, text + "\n")
    return path
