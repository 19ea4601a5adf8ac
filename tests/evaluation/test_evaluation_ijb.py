"""IJB 1:1 template verification and closed-set identification on small, hand-computable meta files."""

import math

import keras
import numpy as np
import pytest
from PIL import Image

from keras_fr.evaluation import (
    evaluate_identification,
    evaluate_ijb,
    identify,
    ijb_verification,
    read_image_list,
    read_template_media,
    read_template_pairs,
    template_features,
)

# a, b: template 1, same media 10 (video frames); c: template 1, media 11; d: template 2;
# e, f: template 3, two single-image medias, e with norm 2.
FEATS = np.array(
    [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2], [1, 0, 0]], dtype=np.float32
)
META = "a.png 1 10\nb.png 1 10\nc.png 1 11\nd.png 2 20\ne.png 3 30\nf.png 3 31\n"
PAIRS = "1 2 1\n1 3 0\n2 3 0\n1 1 1\n"


def _write_meta(tmp_path):
    (tmp_path / "tid_mid.txt").write_text(META)
    (tmp_path / "pairs.txt").write_text(PAIRS)
    return tmp_path / "tid_mid.txt", tmp_path / "pairs.txt"


def test_read_meta_files(tmp_path):
    meta, pairs = _write_meta(tmp_path)
    names, templates, medias = read_template_media(meta)
    assert names == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]
    assert templates.tolist() == [1, 1, 1, 2, 3, 3] and medias.tolist() == [10, 10, 11, 20, 30, 31]
    t1, t2, labels = read_template_pairs(pairs)
    assert t1.tolist() == [1, 1, 2, 1] and t2.tolist() == [2, 3, 3, 1] and labels.tolist() == [1, 0, 0, 1]
    (tmp_path / "bad.txt").write_text("a.png 1 10\nb.png x 10\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: template id 'x'"):
        read_template_media(tmp_path / "bad.txt")
    (tmp_path / "short.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match=r"short\.txt:1: expected 3"):
        read_template_pairs(tmp_path / "short.txt")
    (tmp_path / "label.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"label\.txt:1: label must be 0 or 1"):
        read_template_pairs(tmp_path / "label.txt")
    with pytest.raises(FileNotFoundError):
        read_template_pairs(tmp_path / "absent.txt")


def test_media_then_template_pooling_by_hand():
    feats, ids = template_features(FEATS, [1, 1, 1, 2, 3, 3], [10, 10, 11, 20, 30, 31])
    assert ids.tolist() == [1, 2, 3]
    # template 1: media 10 -> mean(a, b) = (.5, .5, 0); media 11 -> c = (1, 0, 0); sum (1.5, .5, 0)
    np.testing.assert_allclose(feats[0], np.array([1.5, 0.5, 0]) / math.sqrt(2.5), atol=1e-12)
    # (averaging all three images instead would give (2, 1, 0) / sqrt(5): the media step matters)
    np.testing.assert_allclose(feats[1], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(feats[2], np.array([1, 0, 2]) / math.sqrt(5), atol=1e-12)


def test_ijb_scores_and_tar_by_hand(tmp_path):
    meta, pairs = _write_meta(tmp_path)
    _, templates, medias = read_template_media(meta)
    t1, t2, labels = read_template_pairs(pairs)
    r = ijb_verification(FEATS, templates, medias, t1, t2, labels)
    expected = [0.5 / math.sqrt(2.5), 1.5 / (math.sqrt(2.5) * math.sqrt(5)), 0.0, 1.0]
    np.testing.assert_allclose(r.scores, expected, atol=1e-9)
    # positives 1.0, 0.316; negatives 0.424, 0: ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1)
    np.testing.assert_allclose(r.fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(r.tpr, [0, 0.5, 0.5, 1, 1])
    assert r.tar_at_far[1e-4] == 0.5 and r.tar_at_far[1e-5] == 0.5
    assert r.auc == 0.75
    assert r.n_templates == 3 and r.n_pairs == 4


def test_ijb_options_change_the_image_weights():
    t1, t2, labels = np.array([1, 1]), np.array([3, 2]), np.array([0, 1])
    templates, medias = [1, 1, 1, 2, 3, 3], [10, 10, 11, 20, 30, 31]
    # faceness 0.5 on e halves its norm: template 3 = (1, 0, 1) / sqrt(2)
    scores = np.ones(6)
    scores[4] = 0.5
    r = ijb_verification(FEATS, templates, medias, t1, t2, labels, faceness_scores=scores)
    assert r.scores[0] == pytest.approx(1.5 / (math.sqrt(2.5) * math.sqrt(2)), abs=1e-9)
    # normalize_images: e becomes (0, 0, 1) as well
    r = ijb_verification(FEATS, templates, medias, t1, t2, labels, normalize_images=True)
    assert r.scores[0] == pytest.approx(1.5 / (math.sqrt(2.5) * math.sqrt(2)), abs=1e-9)
    with pytest.raises(ValueError, match="template 9"):
        ijb_verification(FEATS, templates, medias, np.array([1]), np.array([9]), np.array([1]))
    with pytest.raises(ValueError, match="faceness_scores"):
        ijb_verification(FEATS, templates, medias, t1, t2, labels, faceness_scores=np.ones(3))


def _linear_model(size=8, dim=3, seed=0):
    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Dense(dim, use_bias=False)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    w = np.random.default_rng(seed).normal(size=(size * size * 3, dim)).astype("float32")
    model.layers[-1].set_weights([w])
    return model, w


def test_evaluate_ijb_end_to_end(tmp_path):
    meta, pairs = _write_meta(tmp_path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    (tmp_path / "crops").mkdir()
    for name, img in zip("abcdef", images):
        Image.fromarray(img).save(tmp_path / "crops" / f"{name}.png")
    model, w = _linear_model()
    r = evaluate_ijb(model, tmp_path / "crops", meta, pairs, batch_size=4, verbose=0)
    x = images.astype(np.float64) / 127.5 - 1
    raw = x.reshape(6, -1) @ w + x[:, :, ::-1].reshape(6, -1) @ w  # flip-summed, norm kept
    ref = ijb_verification(raw, [1, 1, 1, 2, 3, 3], [10, 10, 11, 20, 30, 31], [1, 1, 2, 1], [2, 3, 3, 1], [1, 0, 0, 1])
    np.testing.assert_allclose(r.scores, ref.scores, atol=1e-5)
    (tmp_path / "crops" / "f.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"f\.png"):
        evaluate_ijb(model, tmp_path / "crops", meta, pairs, verbose=0)


# ---------------------------------------------------------------- identification

GALLERY = np.array([[1, 0], [0, 1], [-1, 0], [0.6, 0.8]])
GALLERY_LABELS = ["A", "B", "C", "B"]


def test_identification_ranks_by_hand():
    probes = np.array([[0.9, 0.1], [1, 0], [0.8, 0.6], [0.6, 0.8]])
    labels = ["A", "C", "B", "A"]
    # similarities: p0 -> A best (rank 1); p1 -> C is last of 4 (rank 4);
    # p2 -> (0.6, 0.8) of B best (rank 1); p3 -> B (1.0), B (0.8) above A (0.6): rank 3
    r = identify(probes, labels, GALLERY, GALLERY_LABELS, ranks=(1, 3, 5))
    assert r.ranks.tolist() == [1, 4, 1, 3]
    assert r.rank_accuracy == {1: 0.5, 3: 0.75, 5: 1.0}
    assert r.cmc.tolist() == [0.5, 0.5, 0.75, 1.0]


def test_identification_ties_keep_gallery_order():
    gallery = np.array([[1, 0], [0, 1], [1, 0]])
    r = identify(np.array([[1, 0], [1, 0]]), ["D", "A"], gallery, ["A", "B", "D"])
    assert r.ranks.tolist() == [2, 1]


def test_identification_errors():
    with pytest.raises(ValueError, match="identity 'Z'"):
        identify(np.array([[1, 0]]), ["Z"], GALLERY, GALLERY_LABELS)
    with pytest.raises(ValueError, match="one label per embedding"):
        identify(np.array([[1, 0]]), ["A", "B"], GALLERY, GALLERY_LABELS)
    with pytest.raises(ValueError, match="ranks"):
        identify(np.array([[1, 0]]), ["A"], GALLERY, GALLERY_LABELS, ranks=(0,))


def test_image_lists_and_evaluate_identification(tmp_path):
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    for person, face in zip(("ann", "bob", "cy"), faces):
        (tmp_path / person).mkdir()
        Image.fromarray(face).save(tmp_path / person / "g.png")
        Image.fromarray(face[:, ::-1]).save(tmp_path / person / "p.png")  # the probe: the mirror image
    (tmp_path / "gallery.txt").write_text("ann/g.png\nbob/g.png\ncy/g.png\n")
    (tmp_path / "probe.csv").write_text("path,label\nann/p.png,ann\nbob/p.png,bob\ncy/p.png,cy\n")
    paths, labels = read_image_list(tmp_path / "gallery.txt")
    assert labels == ["ann", "bob", "cy"] and paths[0].endswith("g.png")
    model, _ = _linear_model()
    # with flip TTA an image and its mirror have the same embedding: every probe is found at rank 1
    r = evaluate_identification(model, tmp_path / "gallery.txt", tmp_path / "probe.csv", verbose=0)
    assert r.rank_accuracy[1] == 1.0 and r.n_probes == 3
    (tmp_path / "bad.txt").write_text("ann/g.png ann extra\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1"):
        read_image_list(tmp_path / "bad.txt")
    (tmp_path / "miss.txt").write_text("ann/zz.png ann\n")
    with pytest.raises(FileNotFoundError, match=r"miss\.txt:1: image file not found"):
        read_image_list(tmp_path / "miss.txt")


def test_faceness_scores_file(tmp_path):
    from keras_fr.evaluation import read_faceness_scores

    lines = [f"{n}.png " + " ".join(["1.0"] * 10) + f" {s}" for n, s in zip("bac", (0.5, 0.9, 0.25))]
    (tmp_path / "5pts.txt").write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(read_faceness_scores(tmp_path / "5pts.txt", ["a.png", "b.png", "c.png"]), [0.9, 0.5, 0.25])
    with pytest.raises(ValueError, match=r"no score for image 'z\.png'"):
        read_faceness_scores(tmp_path / "5pts.txt", ["z.png"])
