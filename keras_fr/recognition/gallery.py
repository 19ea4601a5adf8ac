"""A gallery of enrolled identities and 1:N search over it (exact, NumPy or faiss).

A gallery holds L2-normalized embeddings, one row per enrolled face, each with the name of its
person, and says which model and weights made them: embeddings of different models do not compare,
so loading a gallery for another model or embedding size is an error.

Search ranks identities by their best-matching enrolled face (the maximum cosine similarity over
that person's rows). Both engines are exact and return the same top-k:

- ``"numpy"``: one matrix product of the queries with every row;
- ``"faiss"``: ``faiss.IndexFlatIP`` (exact inner product, optional ``faiss-cpu`` package), which
  scales better on large galleries; see ``benchmarks/gallery.py`` for the measured crossover.
  To rank identities exactly from row hits, faiss is asked for ``top_k * m`` rows, ``m`` the largest
  number of rows any one person has: the first ``top_k`` distinct names in that list are the answer.

``engine="auto"`` picks faiss when it is installed and the gallery has at least
:data:`FAISS_MIN_ROWS` rows.

Files are ``.npz`` archives written atomically and read with ``allow_pickle=False``.
"""

import json
import os

import numpy as np
from keras_fr._atomic import atomic_path

#: Gallery size from which ``engine="auto"`` uses faiss (when installed). Measured by
#: ``benchmarks/gallery.py`` on this project's 2-core machine (docs/recognition.md): NumPy's BLAS
#: product was as fast or faster up to 100k rows; at 1M rows of 128-d embeddings (dlib's size) faiss's
#: exact index answered a single query faster (40-48 ms against 53-60 ms).
FAISS_MIN_ROWS = 1_000_000
#: Format marker stored in every gallery file.
FORMAT = "keras_fr.gallery/1"


def _normalize(x):
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("embeddings must be finite and non-zero.")
    return x / norms


class Gallery:
    """Enrolled faces of named people, for open-set identification.

    Args:
        embedding_size: length of every embedding.
        model: the registry name of the model that made the embeddings.
        weights: the weights they were made with (preset tag or file name).

    Example:
        >>> g = Gallery(3, model="toy")
        >>> g.add("alice", [[1.0, 0.0, 0.0]]); g.add("bob", [[0.0, 1.0, 0.0]])
        >>> g.search([[0.9, 0.1, 0.0]], top_k=1)[0][0][0]
        'alice'
    """

    def __init__(self, embedding_size, model=None, weights=None):
        if not isinstance(embedding_size, (int, np.integer)) or embedding_size < 1:
            raise ValueError(f"`embedding_size` must be a positive integer; got {embedding_size!r}.")
        self.embedding_size = int(embedding_size)
        self.model = model
        self.weights = weights
        self._embeddings = np.zeros((0, self.embedding_size), np.float32)
        self._labels = np.zeros((0,), np.int64)
        self._names = []
        self._index = None

    # -- content -----------------------------------------------------------------------------------
    @property
    def names(self):
        """The enrolled people, in order of enrollment."""
        return list(self._names)

    @property
    def embeddings(self):
        """(N, D) float32 unit rows (a copy)."""
        return self._embeddings.copy()

    @property
    def labels(self):
        """(N,) the name of each row."""
        return [self._names[i] for i in self._labels]

    def __len__(self):
        return int(self._embeddings.shape[0])

    def __repr__(self):
        return (
            f"Gallery({len(self._names)} people, {len(self)} faces, {self.embedding_size}-d, "
            f"model={self.model!r}, weights={self.weights!r})"
        )

    def add(self, name, embeddings):
        """Enroll ``embeddings`` (one or more rows) under ``name``; adds to an existing person."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"`name` must be a non-empty string; got {name!r}.")
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None]
        if emb.ndim != 2 or emb.shape[1] != self.embedding_size or emb.shape[0] == 0:
            raise ValueError(
                f"`embeddings` for {name!r} must have shape (N, {self.embedding_size}); got {emb.shape}."
            )
        emb = _normalize(emb)
        if name not in self._names:
            self._names.append(name)
        label = self._names.index(name)
        # Rows stay grouped by person (labels non-decreasing), so search needs no regrouping copy.
        at = int(np.searchsorted(self._labels, label, side="right"))
        self._embeddings = np.insert(self._embeddings, at, emb, axis=0)
        self._labels = np.insert(self._labels, at, np.full(emb.shape[0], label, np.int64))
        self._index = None

    # -- search ------------------------------------------------------------------------------------
    def _engine(self, engine):
        if engine not in ("auto", "numpy", "faiss"):
            raise ValueError(f"`engine` must be 'auto', 'numpy' or 'faiss'; got {engine!r}.")
        if engine == "auto":
            if len(self) < FAISS_MIN_ROWS:
                return "numpy"
            try:
                import faiss  # noqa: F401  (optional extra; measured crossover, see module docstring)
            except ImportError:
                return "numpy"
            return "faiss"
        if engine == "faiss":
            try:
                import faiss  # noqa: F401
            except ImportError:
                raise ValueError(
                    "engine='faiss' needs the faiss-cpu package: pip install 'keras_fr[faiss]'."
                ) from None
        return engine

    def search(self, queries, top_k=5, engine="auto"):
        """The ``top_k`` most similar people for each query embedding.

        Args:
            queries: (Q, D) or (D,) embeddings (normalized here).
            top_k: how many people to return per query (fewer if fewer are enrolled).
            engine: ``"auto"``, ``"numpy"`` or ``"faiss"`` (see the module docstring).

        Returns:
            A list (one per query) of lists of ``(name, cosine score)``, best first.

        Raises:
            ValueError: an empty gallery, a wrong embedding size, ``top_k < 1``.
        """
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive integer; got {top_k!r}.")
        if not len(self):
            raise ValueError("the gallery is empty: enroll someone first.")
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.embedding_size:
            raise ValueError(
                f"query embeddings must have shape (Q, {self.embedding_size}); got {q.shape}."
            )
        q = _normalize(q)
        k = min(int(top_k), len(self._names))
        if self._engine(engine) == "faiss":
            return self._search_faiss(q, k)
        return self._search_numpy(q, k)

    def _search_numpy(self, q, k):
        # Rows are grouped by person: the best row of each person is one reduceat over the groups.
        starts = np.searchsorted(self._labels, np.arange(len(self._names)))
        sim = q @ self._embeddings.T  # (Q, N)
        best = np.maximum.reduceat(sim, starts, axis=1) if len(starts) < len(self) else sim
        # Top k without sorting every person: partition, then order the k.
        part = np.argpartition(-best, k - 1, axis=1)[:, :k] if k < best.shape[1] else np.tile(
            np.arange(best.shape[1]), (best.shape[0], 1))
        order = np.take_along_axis(
            part, np.argsort(-np.take_along_axis(best, part, axis=1), axis=1, kind="stable"), axis=1
        )
        return [
            [(self._names[j], float(best[i, j])) for j in order[i]] for i in range(q.shape[0])
        ]

    def _search_faiss(self, q, k):
        import faiss

        if self._index is None:
            index = faiss.IndexFlatIP(self.embedding_size)
            index.add(np.ascontiguousarray(self._embeddings))
            self._index = index
        per_person = int(np.bincount(self._labels).max())
        rows = min(len(self), k * per_person)
        scores, ids = self._index.search(np.ascontiguousarray(q), rows)
        results = []
        for i in range(q.shape[0]):
            seen, hits = set(), []
            for score, row in zip(scores[i], ids[i]):
                label = int(self._labels[row])
                if label in seen:
                    continue
                seen.add(label)
                hits.append((self._names[label], float(score)))
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    # -- files -------------------------------------------------------------------------------------
    def save(self, path):
        """Write the gallery to ``path`` (``.npz``), atomically."""

        path = os.fspath(path)
        if not path.endswith(".npz"):
            raise ValueError(f"gallery file must end in .npz; got {path!r}.")
        meta = {
            "format": FORMAT,
            "model": self.model,
            "weights": self.weights,
            "embedding_size": self.embedding_size,
        }
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    meta=np.array(json.dumps(meta)),
                    names=np.array(self._names, dtype=np.str_).reshape(-1),
                    labels=self._labels,
                    embeddings=self._embeddings,
                )

    @classmethod
    def load(cls, path, model=None, embedding_size=None):
        """Read a gallery written by :meth:`save`.

        Args:
            path: the ``.npz`` file.
            model: when given, the registry name the gallery must have been made with.
            embedding_size: when given, the embedding size it must have.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a keras_fr gallery, damaged, or made by another model / embedding size
                (the message names the file and both models).
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"gallery file not found: {path!r}.")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception as exc:  # zipfile/npy errors: not an archive numpy can read without pickle
            raise ValueError(f"{path}: not a keras_fr gallery file ({type(exc).__name__}: {exc}).") from None
        if not {"meta", "names", "labels", "embeddings"} <= set(arrays):
            raise ValueError(f"{path}: not a keras_fr gallery file (it holds {sorted(arrays)}).")
        try:
            meta = json.loads(str(arrays["meta"]))
        except ValueError:
            meta = {}
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a keras_fr gallery file (format {meta.get('format') if isinstance(meta, dict) else None!r}).")
        size = meta.get("embedding_size")
        emb = arrays["embeddings"]
        labels = arrays["labels"]
        names = [str(n) for n in arrays["names"].reshape(-1)]
        if (
            emb.ndim != 2
            or emb.shape[1] != size
            or labels.shape != (emb.shape[0],)
            or (labels.size and (labels.min() < 0 or labels.max() >= len(names)))
            or (names and np.bincount(labels, minlength=len(names)).min() < 1)
            or np.any(np.diff(labels) < 0)
        ):
            raise ValueError(f"{path}: damaged gallery file (inconsistent arrays).")
        if model is not None and meta.get("model") != model:
            raise ValueError(
                f"{path}: gallery was made with model {meta.get('model')!r}, not {model!r}; enroll again "
                "with this model (embeddings of different models do not compare)."
            )
        if embedding_size is not None and size != embedding_size:
            raise ValueError(
                f"{path}: gallery holds {size}-d embeddings; this model makes {embedding_size}-d ones."
            )
        gallery = cls(size, model=meta.get("model"), weights=meta.get("weights"))
        emb = emb.astype(np.float32)
        if emb.shape[0] and not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3):
            raise ValueError(f"{path}: damaged gallery file (embeddings are not unit vectors).")
        gallery._embeddings = emb
        gallery._labels = labels.astype(np.int64)
        gallery._names = names
        return gallery
