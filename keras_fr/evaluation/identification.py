"""Closed-set identification (Rank-k / CMC) from a gallery and a probe set.

Each probe is compared with every gallery image by cosine similarity of L2-normalized embeddings; the
gallery is ranked by decreasing similarity (ties keep gallery order, a stable sort), and the probe's rank
is the position of the first gallery image of its own identity. Rank-k accuracy is the fraction of probes
whose rank is at most k (the CMC curve at k). Gallery images of identities that no probe has act as
distractors (TinyFace's protocol). Closed set: every probe identity must be in the gallery.
"""

import csv
import dataclasses
import os

import numpy as np

from keras_fr.evaluation.embeddings import extract_embeddings
from keras_fr.evaluation.verification import l2_normalize


@dataclasses.dataclass
class IdentificationResult:
    """``rank_accuracy`` ({k: accuracy}), ``cmc`` (accuracy at rank 1..len), per-probe ``ranks`` (1-based)."""

    rank_accuracy: dict
    cmc: np.ndarray
    ranks: np.ndarray
    n_probes: int
    n_gallery: int

    def to_dict(self):
        """Return the headline numbers as a JSON-serializable dict.

        Returns:
            A dict with `rank_accuracy` (keys are the ranks as strings),
            `n_probes` and `n_gallery`. The CMC curve and per-probe ranks are
            left out.
        """
        return {
            "rank_accuracy": {str(k): v for k, v in self.rank_accuracy.items()},
            "n_probes": self.n_probes,
            "n_gallery": self.n_gallery,
        }

    def summary(self):
        """Return a one-line, human-readable summary.

        Returns:
            A string with the number of probes and gallery images and the
            Rank-k accuracy (in %) at each reported rank.
        """
        parts = ", ".join(f"Rank-{k}: {v * 100:.2f}%" for k, v in sorted(self.rank_accuracy.items()))
        return f"identification ({self.n_probes} probes, {self.n_gallery} gallery images): {parts}"


def identify(probe_emb, probe_labels, gallery_emb, gallery_labels, ranks=(1, 3, 5), normalize=True, chunk_size=1024):
    """Closed-set identification accuracy at the given ranks.

    Args:
        probe_emb: (P, D) probe embeddings.
        probe_labels: (P,) identity labels (ints or strings).
        gallery_emb: (G, D) gallery embeddings.
        gallery_labels: (G,) identity labels.
        ranks: the k of the Rank-k accuracies to report.
        normalize: L2-normalize the embeddings first.
        chunk_size: probes scored at a time (memory: ``chunk_size * G`` floats).

    Returns:
        An :class:`IdentificationResult`.

    Raises:
        ValueError: on mismatched shapes, a bad rank, or a probe identity absent from the gallery.

    Example:
        >>> g = np.eye(3)
        >>> identify(g[[0, 1]], ["a", "b"], g, ["a", "b", "c"]).rank_accuracy[1]
        1.0
    """
    probe_emb = np.asarray(probe_emb, dtype=np.float64)
    gallery_emb = np.asarray(gallery_emb, dtype=np.float64)
    probe_labels = np.asarray(probe_labels)
    gallery_labels = np.asarray(gallery_labels)
    if probe_emb.ndim != 2 or gallery_emb.ndim != 2 or probe_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(
            f"`probe_emb` (P, D) and `gallery_emb` (G, D) must be 2-D with one D; got {probe_emb.shape} "
            f"and {gallery_emb.shape}."
        )
    if probe_labels.shape != (probe_emb.shape[0],) or gallery_labels.shape != (gallery_emb.shape[0],):
        raise ValueError("`probe_labels` / `gallery_labels` must hold one label per embedding.")
    if probe_emb.shape[0] == 0 or gallery_emb.shape[0] == 0:
        raise ValueError("the probe set and the gallery must not be empty.")
    ranks = tuple(int(k) for k in ranks)
    if any(k < 1 for k in ranks):
        raise ValueError(f"`ranks` must be positive integers; got {ranks}.")
    absent = ~np.isin(probe_labels, gallery_labels)
    if absent.any():
        i = int(np.flatnonzero(absent)[0])
        raise ValueError(
            f"probe {i} has identity {probe_labels[i].item()!r}, which is not in the gallery (closed-set "
            "identification needs every probe identity in the gallery)."
        )
    if normalize:
        probe_emb = l2_normalize(probe_emb)
        gallery_emb = l2_normalize(gallery_emb)
    n_gallery = gallery_emb.shape[0]
    gallery_index = np.arange(n_gallery)
    result_ranks = np.zeros(probe_emb.shape[0], dtype=np.int64)
    for start in range(0, probe_emb.shape[0], chunk_size):
        sims = probe_emb[start : start + chunk_size] @ gallery_emb.T
        match = probe_labels[start : start + chunk_size, None] == gallery_labels[None, :]
        best = np.where(match, sims, -np.inf).max(axis=1)
        # first gallery position holding the best matching score (a stable sort keeps gallery order)
        first = np.where(match & (sims == best[:, None]), gallery_index[None, :], n_gallery).min(axis=1)
        above = np.sum(sims > best[:, None], axis=1)
        tied_before = np.sum((sims == best[:, None]) & (gallery_index[None, :] < first[:, None]), axis=1)
        result_ranks[start : start + chunk_size] = above + tied_before + 1
    max_rank = max(max(ranks), 1)
    cmc = np.array([np.mean(result_ranks <= k) for k in range(1, min(max_rank, n_gallery) + 1)])
    return IdentificationResult(
        rank_accuracy={k: float(np.mean(result_ranks <= k)) for k in ranks},
        cmc=cmc,
        ranks=result_ranks,
        n_probes=int(probe_emb.shape[0]),
        n_gallery=int(n_gallery),
    )


def read_image_list(path, image_dir=None):
    """Read a gallery/probe list: image paths with identity labels.

    Formats: a ``.csv`` with a header holding ``path`` and ``label`` columns; or a text file with one
    ``relative/path label`` per line (a line with only a path takes its parent folder's name as label).
    Relative paths are resolved against ``image_dir`` (default: the list's folder).

    Args:
        path: the list file.
        image_dir: image root.

    Returns:
        ``(paths, labels)``: a list of file paths and a list of label strings.

    Raises:
        FileNotFoundError: if the list or an image is missing (named with the line). ValueError: malformed.

    Example:
        >>> paths, labels = read_image_list("gallery.txt")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image list not found: {path}")
    root = os.fspath(image_dir) if image_dir is not None else os.path.dirname(os.path.abspath(path))
    entries = []
    if path.lower().endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames or "label" not in reader.fieldnames:
                raise ValueError(f"{path}: expected a header with 'path' and 'label' columns.")
            for lineno, row in enumerate(reader, start=2):
                entries.append((lineno, (row["path"] or "").strip(), (row["label"] or "").strip()))
    else:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                tokens = line.split()
                if not tokens:
                    continue
                if len(tokens) == 1:
                    entries.append((lineno, tokens[0], os.path.basename(os.path.dirname(tokens[0]))))
                elif len(tokens) == 2:
                    entries.append((lineno, tokens[0], tokens[1]))
                else:
                    raise ValueError(f"{path}:{lineno}: expected 'path label'; got {len(tokens)} fields.")
    if not entries:
        raise ValueError(f"{path}: empty image list.")
    paths, labels = [], []
    for lineno, rel, label in entries:
        if not rel or not label:
            raise ValueError(f"{path}:{lineno}: empty path or label.")
        file = rel if os.path.isabs(rel) else os.path.join(root, rel)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{path}:{lineno}: image file not found: {file}")
        paths.append(file)
        labels.append(label)
    return paths, labels


def evaluate_identification(
    model, gallery, probe, image_dir=None, batch_size=64, flip=True, ranks=(1, 3, 5), verbose=1,
    input_spec=None,
):
    """Embed a gallery and a probe set with ``model`` and run :func:`identify`.

    Args:
        model: a Keras model producing (N, D) embeddings.
        gallery, probe: list files (see :func:`read_image_list`) or ``(images, labels)`` tuples where
            ``images`` is anything :func:`extract_embeddings` accepts.
        image_dir: image root for the list files.
        batch_size, flip, verbose: as in :func:`extract_embeddings`.
        ranks: Rank-k to report.
        input_spec: the model's input specification (see :func:`extract_embeddings`).

    Returns:
        An :class:`IdentificationResult`.

    Example:
        >>> evaluate_identification(model, "gallery.txt", "probe.txt")  # doctest: +SKIP
    """

    def load(spec):
        if isinstance(spec, tuple) and len(spec) == 2:
            return spec
        return read_image_list(spec, image_dir)

    from keras_fr.applications.inference import inference_copy

    g_images, g_labels = load(gallery)
    p_images, p_labels = load(probe)
    model = inference_copy(model)  # once for both sets
    kwargs = dict(batch_size=batch_size, flip=flip, verbose=verbose, input_spec=input_spec,
                  optimize=False)
    g_emb = extract_embeddings(model, g_images, **kwargs)
    p_emb = extract_embeddings(model, p_images, **kwargs)
    return identify(p_emb, p_labels, g_emb, g_labels, ranks=ranks, normalize=False)
