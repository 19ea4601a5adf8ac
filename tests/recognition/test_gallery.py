"""Gallery search (NumPy and faiss give the same top-k as a brute-force loop), files and errors."""

import json

import numpy as np
import pytest

from keras_fr.recognition.gallery import Gallery


def _random_gallery(people=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    g = Gallery(dim, model="toy", weights="w1")
    for p in range(people):
        g.add(f"person{p}", rng.normal(size=(int(rng.integers(1, 5)), dim)))
    return g, rng


def _brute_force(g, query, k):
    q = query / np.linalg.norm(query)
    best = {}
    for row, name in zip(g.embeddings, g.labels):
        best[name] = max(best.get(name, -np.inf), float(row @ q))
    ranked = sorted(best.items(), key=lambda item: -item[1])
    return ranked[:k]


@pytest.mark.parametrize("engine", ["numpy", "faiss"])
def test_search_matches_brute_force(engine):
    if engine == "faiss":
        pytest.importorskip("faiss", reason="faiss-cpu (the `faiss` extra) is not installed")
    g, rng = _random_gallery()
    queries = rng.normal(size=(10, 16))
    results = g.search(queries, top_k=5, engine=engine)
    for query, hits in zip(queries, results):
        expected = _brute_force(g, query, 5)
        assert [n for n, _ in hits] == [n for n, _ in expected]
        np.testing.assert_allclose([s for _, s in hits], [s for _, s in expected], atol=1e-5)


def test_top_k_larger_than_people_and_repeat_enrollment():
    g = Gallery(2)
    g.add("a", [1.0, 0.0])
    g.add("b", [[0.0, 1.0]])
    g.add("a", [[0.0, -1.0]])
    assert g.names == ["a", "b"] and len(g) == 3
    hits = g.search([0.0, -1.0], top_k=10)[0]
    assert [n for n, _ in hits] == ["a", "b"] and hits[0][1] == pytest.approx(1.0)


def test_save_load_round_trip(tmp_path):
    g, rng = _random_gallery(people=5)
    path = tmp_path / "g.npz"
    g.save(path)
    loaded = Gallery.load(path, model="toy", embedding_size=16)
    assert loaded.names == g.names and loaded.labels == g.labels
    np.testing.assert_array_equal(loaded.embeddings, g.embeddings)
    assert (loaded.model, loaded.weights) == ("toy", "w1")
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]  # no temporary file left


def test_load_refuses_other_models_and_foreign_files(tmp_path):
    g, _ = _random_gallery(people=3)
    path = tmp_path / "g.npz"
    g.save(path)
    with pytest.raises(ValueError, match="made with model 'toy', not 'other'"):
        Gallery.load(path, model="other")
    with pytest.raises(ValueError, match="16-d embeddings; this model makes 128-d"):
        Gallery.load(path, embedding_size=128)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(ValueError, match="foreign.npz: not a keras_fr gallery"):
        Gallery.load(foreign)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.npz: not a keras_fr gallery"):
        Gallery.load(text)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array(json.dumps({"format": "keras_fr.gallery/1"})),
             names=np.array([{"a": 1}], dtype=object), labels=np.zeros(1, np.int64),
             embeddings=np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match="pickled.npz: not a keras_fr gallery"):
        Gallery.load(pickled)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        Gallery.load(tmp_path / "missing.npz")


def test_bad_arguments():
    g = Gallery(4)
    with pytest.raises(ValueError, match="empty"):
        g.search(np.ones(4))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        g.add("x", np.ones(3))
    with pytest.raises(ValueError, match="`name`"):
        g.add("", np.ones(4))
    g.add("x", np.ones(4))
    with pytest.raises(ValueError, match="top_k"):
        g.search(np.ones(4), top_k=0)
    with pytest.raises(ValueError, match=r"\(Q, 4\)"):
        g.search(np.ones(5))
    with pytest.raises(ValueError, match="non-zero"):
        g.add("y", np.zeros(4))
    with pytest.raises(ValueError, match="engine"):
        g.search(np.ones(4), engine="annoy")
