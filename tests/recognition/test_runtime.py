"""FaceRecognizer's runtimes (keras_fr.recognition.runtime): TFLite and ONNX Runtime files that
reproduce Keras, built once and cached per model and weights-file hash, never trusted when tampered
with, never cached for weights without a file.

A tiny network (a strided convolution, BatchNorm with non-trivial statistics, a grouped convolution
like MSConv's, pooling and a dense embedding) keeps every export to seconds; the exporters' parity on
the real families is tested in tests/export/.
"""

import json
import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from keras_fr.export import synthetic_faces  # noqa: E402
from keras_fr.recognition import FaceRecognizer  # noqa: E402
from keras_fr.recognition import runtime as rt  # noqa: E402

#: The tiny model stands in for this registry model (its input spec: ArcFace 112x112).
NAME = "iresnet18"


def tiny_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((112, 112, 3))
    x = keras.layers.Conv2D(16, 5, strides=4, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.Conv2D(16, 3, padding="same", groups=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(24)(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    bn = model.layers[2]
    bn.set_weights([rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.2, 16), rng.normal(0, 0.3, 16),
                    rng.uniform(0.5, 2.0, 16)])
    return model


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """Two tiny models with different weights, each saved to a file: (model, path) pairs."""
    folder = tmp_path_factory.mktemp("weights")
    out = []
    for seed in (1, 2):
        model = tiny_model(seed)
        path = folder / f"tiny{seed}.weights.h5"
        model.save_weights(path)
        out.append((model, str(path)))
    return out


@pytest.fixture
def exports(monkeypatch):
    """Counts the exports (``runtime._export`` calls) by runtime kind."""
    calls = []
    real = rt._export

    def counting(model, kind, path):
        calls.append(kind)
        return real(model, kind, path)

    monkeypatch.setattr(rt, "_export", counting)
    return calls


@pytest.fixture
def tflite_only(monkeypatch):
    """``"auto"`` chooses between Keras and a TFLite file only (the tests of one cache entry's life)."""
    monkeypatch.setattr(rt, "AUTO_KINDS", ("tflite",))


@pytest.fixture
def opened(monkeypatch):
    """Records which runtime files are opened (runner constructions, by kind)."""
    calls = []
    for kind, cls in list(rt._RUNNERS.items()):
        def make(*args, _kind=kind, _cls=cls, **kwargs):
            calls.append(_kind)
            return _cls(*args, **kwargs)

        monkeypatch.setitem(rt._RUNNERS, kind, make)
    return calls


def recognizer(model, weights, cache, runtime="auto", **kwargs):
    return FaceRecognizer(model, model_name=NAME, weights=weights, runtime=runtime, cache_dir=cache, **kwargs)


def min_cosine(a, b):
    return float(np.min(np.sum(a * b, axis=1)))  # rows are unit vectors


def crops(count=5, seed=3):
    return synthetic_faces(count, 112, seed=seed)


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_runtime_embeddings_equal_keras(kind, weights_files, tmp_path, exports):
    if kind == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("tf2onnx")
    model, weights = weights_files[0]
    fr = recognizer(model, weights, tmp_path, runtime=kind)
    assert fr.runtime.name == kind and exports == [kind]
    assert fr.runtime.path and os.path.dirname(fr.runtime.path) == str(tmp_path)
    assert fr.runtime.path.endswith("." + kind) and fr.runtime.min_cosine >= rt.MIN_COSINE
    reference = recognizer(model, weights, tmp_path, runtime="keras")
    assert reference.runtime.name == "keras"
    faces = crops()
    got, want = fr.embed_crops(faces), reference.embed_crops(faces)
    assert got.shape == want.shape == (5, 24)
    assert min_cosine(got, want) >= 0.9999
    assert min_cosine(fr.embed_crops(faces[:1]), want[:1]) >= 0.9999  # batch 1, the verify path
    # The file runs the computation (not Keras behind the scenes): its outputs are not bit-identical.
    assert not np.array_equal(got, want)
    record = json.loads(open(fr.runtime.path[: -len(kind) - 1] + ".json").read())
    assert record["key"]["weights_sha256"] == rt.file_sha256(weights)
    assert record["artifact_sha256"] == rt.file_sha256(fr.runtime.path)


def test_cache_is_reused_and_keyed_by_weights_hash(weights_files, tmp_path, exports, tflite_only):
    (model_a, weights_a), (model_b, weights_b) = weights_files
    first = recognizer(model_a, weights_a, tmp_path)
    assert first.runtime.name == "tflite" and not first.runtime.cached and exports == ["tflite"]
    again = recognizer(model_a, weights_a, tmp_path)
    assert again.runtime.cached and again.runtime.path == first.runtime.path
    assert exports == ["tflite"]  # no second export
    faces = crops()
    np.testing.assert_allclose(again.embed_crops(faces), first.embed_crops(faces), atol=1e-6)
    other = recognizer(model_b, weights_b, tmp_path)
    assert exports == ["tflite", "tflite"] and other.runtime.path != first.runtime.path
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(p) for r in (first, other) for p in (r.runtime.path, r.runtime.path[:-7] + ".json")
    )
    # With a batch limit for "auto", larger batches go to Keras and the rest to the file.
    assert first.runtime.max_batch == rt.AUTO_MAX_BATCH
    first.runtime.max_batch = 2
    x = first._preprocess(faces.astype(np.float32))
    keras_runner, to_keras = first.runtime._keras, []
    first.runtime._keras = lambda batch: to_keras.append(len(batch)) or keras_runner(batch)
    want = np.asarray(model_a(x[:3], training=False))
    np.testing.assert_allclose(first.runtime(x[:3]), want, atol=1e-5 * np.abs(want).max())
    assert to_keras == [3]
    first.runtime(x[:2])
    assert to_keras == [3]  # the file's


def test_tampered_or_foreign_cache_files_are_rebuilt(weights_files, tmp_path, exports, tflite_only):
    (model_a, weights_a), (model_b, weights_b) = weights_files
    built = recognizer(model_a, weights_a, tmp_path).runtime.path
    record_path = built[: -len(".tflite")] + ".json"
    faces = crops()
    want = recognizer(model_a, weights_a, tmp_path, runtime="keras").embed_crops(faces)

    # 1. A file changed after it was recorded, even harmlessly (a byte appended: it would still load
    #    and compute the same), or corrupted in place: its sha256 no longer matches the record.
    with open(built, "ab") as f:
        f.write(b"\0")
    fr = recognizer(model_a, weights_a, tmp_path)
    assert exports == ["tflite", "tflite"] and not fr.runtime.cached
    data = bytearray(open(built, "rb").read())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    open(built, "wb").write(bytes(data))
    fr = recognizer(model_a, weights_a, tmp_path)
    assert exports == ["tflite"] * 3 and not fr.runtime.cached
    assert min_cosine(fr.embed_crops(faces), want) >= 0.9999

    # 2. Another model's file put in its place, with the record's hash updated to match: the file
    #    does not reproduce this model on the probe images, so it is rebuilt.
    foreign = recognizer(model_b, weights_b, tmp_path).runtime.path
    assert len(exports) == 4
    record = json.loads(open(record_path).read())
    record["artifact_sha256"] = rt.file_sha256(foreign)
    open(record_path, "w").write(json.dumps(record))
    open(built, "wb").write(open(foreign, "rb").read())
    fr = recognizer(model_a, weights_a, tmp_path)
    assert len(exports) == 5 and not fr.runtime.cached
    assert min_cosine(fr.embed_crops(faces), want) >= 0.9999

    # 3. A record that is not JSON, or names another key: rebuilt, never trusted.
    open(record_path, "w").write("not json")
    assert not recognizer(model_a, weights_a, tmp_path).runtime.cached and len(exports) == 6
    record = json.loads(open(record_path).read())
    record["key"]["keras_fr"] = "0.0.0"
    open(record_path, "w").write(json.dumps(record))
    assert not recognizer(model_a, weights_a, tmp_path).runtime.cached and len(exports) == 7
    assert recognizer(model_a, weights_a, tmp_path).runtime.cached and len(exports) == 7


def test_random_weights_are_never_cached(tmp_path, exports):
    model = tiny_model(5)
    cache = tmp_path / "cache"
    auto = FaceRecognizer(model, model_name=NAME, random_weights=True, cache_dir=cache)
    assert auto.runtime.name == "keras" and "random" in auto.runtime.note and exports == []
    explicit = FaceRecognizer(model, model_name=NAME, random_weights=True, runtime="tflite", cache_dir=cache)
    assert explicit.runtime.name == "tflite" and explicit.runtime.path is None and exports == ["tflite"]
    assert not cache.exists() or os.listdir(cache) == []
    faces = crops(3)
    assert min_cosine(explicit.embed_crops(faces), auto.embed_crops(faces)) >= 0.9999
    # A registry model with random weights: no hash either.
    assert rt.weights_sha256(NAME, "random") is None and rt.weights_sha256(NAME, None) is None


def test_bad_runtime_arguments(weights_files, tmp_path):
    model, weights = weights_files[0]
    with pytest.raises(ValueError, match="`runtime` must be one of auto, keras, tflite, onnx; got 'tensorrt'"):
        recognizer(model, weights, tmp_path, runtime="tensorrt")
    with pytest.raises(ValueError, match="`runtime` must be one of"):
        recognizer(model, weights, tmp_path, runtime=None)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(ValueError, match="`cache_dir` .* is a file, not a folder"):
        recognizer(model, weights, not_a_folder)
    with pytest.raises(ValueError, match="`cache_dir` must be a folder path"):
        recognizer(model, weights, 3)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(rt.CACHE_ENV, str(tmp_path))
    assert rt.default_cache_dir() == os.path.join(str(tmp_path), "runtime")
    monkeypatch.delenv(rt.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert rt.default_cache_dir() == os.path.join(str(tmp_path / "xdg"), "keras_fr", "runtime")


def test_cli_runtime_option_is_checked(capsys, tmp_path):
    from keras_fr import cli

    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"")
    b.write_bytes(b"")
    out = str(tmp_path / "e.npz")
    for command in (["verify", str(a), str(b)], ["embed", str(a), "--model", NAME, "--output", out]):
        code = cli.main([*command, "--runtime", "tensorrt"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert "--runtime must be one of auto, keras, tflite, onnx; got 'tensorrt'" in err[0]


def test_check_counts_a_zero_embedding_only_against_a_zero_embedding():
    # LGAF's quality fusion can gate a face's embedding to exactly 0 (seen with the reference's random
    # weights on face-like images): a file that returns 0 there too reproduces the model.
    ref = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    assert rt._min_cosine(ref, ref * 1.0000001) == pytest.approx(1.0)
    assert rt._min_cosine(ref, np.array([[1.0, 2.0, 0.5], [0.0, 0.1, 0.0]], np.float32)) == 0.0
    assert rt._min_cosine(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, -1.0]])) == -1.0
    assert np.isnan(rt._min_cosine(ref, ref[:, :2]))
    assert np.isnan(rt._min_cosine(ref, np.array([[1.0, np.inf, 0.5], [0.0, 0.0, 0.0]])))


def test_keras_runner_uses_the_compiled_predict_function(weights_files):
    model, _ = weights_files[0]
    runner = rt._KerasRunner(model)
    x = np.asarray(crops(3), np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(runner(x), np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-5)
    # the traced function of the inference copy (batch norms folded) was built and used
    assert runner._inference is not model and runner._inference.predict_function is not None


@pytest.fixture
def timings(monkeypatch):
    """Fakes the batch-1 timing: ``timings["keras"]`` seconds for Keras, ``timings["tflite"]`` /
    ``timings["onnx"]`` for those files (default ``timings["file"]``); counts the calls and keeps the
    Keras runners timed."""
    state = {"keras": 0.010, "file": 0.020, "calls": 0, "keras_runners": []}

    def fake(run, x, calls=rt.TIMING_CALLS):
        state["calls"] += 1
        if isinstance(run, rt._KerasRunner):
            state["keras_runners"].append(run)
            return state["keras"]
        kind = "onnx" if isinstance(run, rt._OnnxRunner) else "tflite"
        return state.get(kind, state["file"])

    monkeypatch.setattr(rt, "_batch1_seconds", fake)
    return state


def _record(fr):
    return json.loads(open(fr.runtime.path[: -len(".tflite")] + ".json").read())


def test_auto_runs_keras_when_keras_was_timed_faster(weights_files, tmp_path, exports, tflite_only, timings):
    model, weights = weights_files[0]
    fr = recognizer(model, weights, tmp_path)
    # The file was built, checked and timed (file and Keras once each), and Keras won by more than the margin.
    assert exports == ["tflite"] and timings["calls"] == 2
    assert fr.runtime.name == "keras" and fr.runtime.path.endswith(".tflite")
    assert "Keras ran batch 1 in 10.0 ms, the tflite file in 20.0 ms" in fr.runtime.note
    assert _record(fr)["batch1_seconds"] == {"batch": 1, "tflite": 0.020, "keras": 0.010}
    x = fr._preprocess(crops().astype(np.float32))
    want = np.asarray(model.predict_on_batch(x[:1]))
    np.testing.assert_allclose(fr.runtime(x[:1]), want, atol=1e-5 * np.abs(want).max())
    # Reused from the cache: the recorded timing decides, nothing is timed or exported again.
    again = recognizer(model, weights, tmp_path)
    assert again.runtime.cached and again.runtime.name == "keras"
    assert exports == ["tflite"] and timings["calls"] == 2
    # An explicit runtime is never swapped for Keras.
    explicit = recognizer(model, weights, tmp_path, runtime="tflite")
    assert explicit.runtime.name == "tflite" and timings["calls"] == 2


def test_auto_keeps_the_file_on_a_near_tie(weights_files, tmp_path, exports, tflite_only, timings):
    model, weights = weights_files[0]
    timings["keras"] = 0.019  # 95% of the file's time: within the margin
    fr = recognizer(model, weights, tmp_path)
    assert fr.runtime.name == "tflite" and fr.runtime.note == ""
    assert rt.AUTO_MARGIN * 0.020 < 0.019


def test_auto_times_an_entry_built_for_an_explicit_runtime_once(weights_files, tmp_path, exports, tflite_only, timings):
    model, weights = weights_files[1]
    explicit = recognizer(model, weights, tmp_path, runtime="tflite")
    assert explicit.runtime.name == "tflite" and timings["calls"] == 0
    assert "batch1_seconds" not in _record(explicit)
    auto = recognizer(model, weights, tmp_path)
    assert auto.runtime.cached and auto.runtime.name == "keras" and timings["calls"] == 2
    assert _record(auto)["batch1_seconds"]["keras"] == 0.010 and exports == ["tflite"]
    recognizer(model, weights, tmp_path)
    assert timings["calls"] == 2  # kept in the record


def test_batch1_timing_and_the_choice_rule():
    calls = []

    def run(x):
        calls.append(len(x))
        import time

        time.sleep(0.004 if len(calls) > 1 else 0.05)  # the first (warm-up) call is slow and not timed

    seconds = rt._batch1_seconds(run, np.zeros((1, 2)), calls=3)
    assert len(calls) == 4 and 0.004 <= seconds < 0.05
    assert rt._keras_is_faster({"keras": 0.01, "tflite": 0.02}, "tflite")
    assert not rt._keras_is_faster({"keras": 0.02, "tflite": 0.01}, "tflite")
    # A record with a missing, foreign or malformed timing keeps the file.
    for timing in (None, {}, {"keras": 0.01}, {"keras": "x", "tflite": 0.02}, {"keras": 0, "tflite": 0.02},
                   {"keras": 0.01, "onnx": 0.02}):
        assert rt._keras_is_faster(timing, "tflite") == ""


def _records(folder):
    return {name.rsplit("-", 2)[1]: json.loads(open(os.path.join(folder, name)).read())
            for name in os.listdir(folder) if name.endswith(".json")}


@pytest.fixture
def both_kinds():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    assert rt.AUTO_KINDS == ("tflite", "onnx")


def _set_timing(folder, timing, kinds=("tflite", "onnx")):
    """Write ``timing`` into the records of ``kinds`` in ``folder``."""
    for name in os.listdir(folder):
        if name.endswith(".json") and name.rsplit("-", 2)[1] in kinds:
            record = json.loads(open(os.path.join(folder, name)).read())
            record["batch1_seconds"] = timing
            open(os.path.join(folder, name), "w").write(json.dumps(record))


def test_auto_builds_both_files_and_runs_the_faster(weights_files, tmp_path, exports, timings, opened, both_kinds):
    model, weights = weights_files[0]
    timings.update(keras=0.030, tflite=0.020, onnx=0.012)
    fr = recognizer(model, weights, tmp_path)
    # Both files were built and checked, then timed together with one Keras runner, which the runtime
    # then holds (its inference copy is made once); every record keeps the whole timing.
    assert exports == ["tflite", "onnx"] and timings["calls"] == 3
    assert len(timings["keras_runners"]) == 1 and fr.runtime._keras is timings["keras_runners"][0]
    assert fr.runtime.name == "onnx" and fr.runtime.path.endswith(".onnx") and not fr.runtime.cached
    timing = {"batch": 1, "tflite": 0.020, "onnx": 0.012, "keras": 0.030}
    assert {kind: r["batch1_seconds"] for kind, r in _records(tmp_path).items()} == {"tflite": timing, "onnx": timing}
    faces = crops()
    want = recognizer(model, weights, tmp_path, runtime="keras").embed_crops(faces)
    assert min_cosine(fr.embed_crops(faces), want) >= 0.9999
    assert min_cosine(fr.embed_crops(faces[:1]), want[:1]) >= 0.9999

    # Later: the records decide; nothing is exported or timed, and only the chosen file is opened.
    del opened[:]
    again = recognizer(model, weights, tmp_path)
    assert again.runtime.name == "onnx" and again.runtime.cached and again.runtime.path == fr.runtime.path
    assert exports == ["tflite", "onnx"] and timings["calls"] == 3 and opened == ["onnx"]
    assert min_cosine(again.embed_crops(faces), want) >= 0.9999
    _set_timing(tmp_path, {"batch": 1, "tflite": 0.011, "onnx": 0.012, "keras": 0.030})
    del opened[:]
    swapped = recognizer(model, weights, tmp_path)
    assert swapped.runtime.name == "tflite" and swapped.runtime.cached and opened == ["tflite"]
    assert min_cosine(swapped.embed_crops(faces), want) >= 0.9999

    # Records from different timings are not compared: both files are opened and timed again together.
    _set_timing(tmp_path, {"batch": 1, "tflite": 0.001, "onnx": 0.5, "keras": 0.030}, kinds=("tflite",))
    del opened[:]
    retimed = recognizer(model, weights, tmp_path)
    assert sorted(opened) == ["onnx", "tflite"] and timings["calls"] == 6 and exports == ["tflite", "onnx"]
    assert retimed.runtime.name == "onnx" and retimed.runtime.cached
    assert {kind: r["batch1_seconds"] for kind, r in _records(tmp_path).items()} == {"tflite": timing, "onnx": timing}


def test_auto_compares_the_fastest_file_with_keras(weights_files, tmp_path, exports, timings, both_kinds):
    model, weights = weights_files[1]
    timings.update(keras=0.010, tflite=0.030, onnx=0.020)
    fr = recognizer(model, weights, tmp_path)
    assert fr.runtime.name == "keras" and fr.runtime.path.endswith(".onnx") and fr.runtime.min_cosine >= 0.9999
    assert "Keras ran batch 1 in 10.0 ms, the onnx file in 20.0 ms" in fr.runtime.note
    assert fr.runtime._keras is timings["keras_runners"][0]


def test_auto_leaves_out_a_file_that_fails_to_build(weights_files, tmp_path, monkeypatch, timings, capsys,
                                                    both_kinds):
    model, weights = weights_files[0]
    real, tried = rt._export, []

    def failing(model, kind, path):
        tried.append(kind)
        if kind in failing.kinds:
            raise RuntimeError(f"{kind} converter broke")
        return real(model, kind, path)

    failing.kinds = {"onnx"}
    monkeypatch.setattr(rt, "_export", failing)
    monkeypatch.setattr(rt._quiet, "QUIET", False)  # stderr is not a terminal here
    timings.update(keras=0.030, tflite=0.020, onnx=0.001)
    fr = recognizer(model, weights, tmp_path / "a")
    assert tried == ["tflite", "onnx"] and fr.runtime.name == "tflite"
    assert "could not build a onnx file of iresnet18 (onnx converter broke); leaving it out" in capsys.readouterr().err
    assert _records(tmp_path / "a")["tflite"]["batch1_seconds"] == {"batch": 1, "tflite": 0.020, "onnx": None,
                                                                     "keras": 0.030}
    # The failure is recorded with the timing: later uses do not export again.
    again = recognizer(model, weights, tmp_path / "a")
    assert tried == ["tflite", "onnx"] and again.runtime.name == "tflite" and again.runtime.cached
    # Neither can be built: Keras, with both reasons; an explicit runtime raises instead.
    failing.kinds = {"tflite", "onnx"}
    fr = recognizer(model, weights, tmp_path / "b")
    assert fr.runtime.name == "keras" and fr.runtime.path is None
    assert fr.runtime.note == "tflite: tflite converter broke; onnx: onnx converter broke"
    with pytest.raises(RuntimeError, match="runtime 'onnx' for iresnet18: onnx converter broke"):
        recognizer(model, weights, tmp_path / "c", runtime="onnx")


def test_auto_rebuilds_the_chosen_file_when_it_does_not_reproduce_the_model(weights_files, tmp_path, exports,
                                                                            timings, both_kinds):
    (model_a, weights_a), (model_b, weights_b) = weights_files
    timings.update(keras=0.030, tflite=0.020, onnx=0.012)
    built = recognizer(model_a, weights_a, tmp_path).runtime.path
    foreign = recognizer(model_b, weights_b, tmp_path).runtime.path
    assert built.endswith(".onnx") and len(exports) == 4 and foreign.endswith(".onnx")
    # Another model's ONNX file in place of the chosen one, its record's hash updated to match.
    record_path = built[: -len(".onnx")] + ".json"
    record = json.loads(open(record_path).read())
    record["artifact_sha256"] = rt.file_sha256(foreign)
    open(record_path, "w").write(json.dumps(record))
    open(built, "wb").write(open(foreign, "rb").read())
    fr = recognizer(model_a, weights_a, tmp_path)
    assert exports[4:] == ["onnx"] and fr.runtime.name == "onnx" and not fr.runtime.cached
    assert timings["calls"] == 9  # built: both files timed again with Keras
    faces = crops()
    want = recognizer(model_a, weights_a, tmp_path, runtime="keras").embed_crops(faces)
    assert min_cosine(fr.embed_crops(faces), want) >= 0.9999


def test_fastest_file_of_a_timing():
    timing = {"batch": 1, "tflite": 0.02, "onnx": 0.01, "keras": 0.005}
    assert rt._fastest(timing, ["tflite", "onnx"]) == "onnx"
    assert rt._fastest(timing, ["tflite"]) == "tflite"
    assert rt._fastest({"tflite": 0.02, "onnx": 0.02}, ["tflite", "onnx"]) == "tflite"  # a tie: the first
    # Missing, failed (None), malformed or non-positive times are never the fastest.
    assert rt._fastest({"tflite": None, "onnx": "x"}, ["tflite", "onnx"]) is None
    assert rt._fastest({"tflite": 0, "onnx": -1.0, "keras": 0.001}, ["tflite", "onnx"]) is None
    assert rt._fastest({"tflite": None, "onnx": 0.5}, ["tflite", "onnx"]) == "onnx"
    assert rt._fastest(None, ["tflite"]) is None
