"""The weights registry against a real HTTP server on 127.0.0.1 (http.server in a thread).

KERAS_HOME and KERAS_FR_WEIGHTS_DIR point into tmp_path, so nothing touches ~/.keras.
"""

import hashlib
import http.server
import json
import os
import threading

import numpy as np
import pytest

from keras_fr.applications import weights as registry


class _Server:
    """Serves a folder; counts requests per path; can be stopped."""

    def __init__(self, root):
        self.root = str(root)
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=outer.root, **kwargs)

            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    srv = _Server(root)
    yield srv, root
    srv.stop()


@pytest.fixture
def env(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("KERAS_FR_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("KERAS_FR_WEIGHTS_URL", raising=False)
    return home / "models"


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _serve(root, name, data, sidecar=True, wrong_hash=False):
    (root / name).write_bytes(data)
    if sidecar:
        digest = _sha(b"something else") if wrong_hash else _sha(data)
        (root / f"{name}.sha256").write_text(f"{digest}  {name}\n")


PRESET = ("iresnet50", "ms1mv3_arcface")
FILE = "iresnet50_ms1mv3_arcface.weights.h5"


def test_manifests_are_complete_and_honest():
    rows = registry.list_weights()
    pairs = {(r["model"], r["tag"]) for r in rows}
    assert ("msconv_resnet50", "ms1mv3") in pairs
    assert {("lgaf_resnet100", "ms1mv2"), ("lgaf_resnet100", "webface4m")} <= pairs
    assert {("iresnet50", "ms1mv3_arcface"), ("iresnet100", "glint360k_cosface")} <= pairs
    for model, tag in pairs:
        manifest = registry.get_manifest(model, tag)
        for key in ("file", "sha256", "url", "source", "conversion", "license", "input", "metrics"):
            assert key in manifest, (model, tag, key)
        assert manifest["file"].endswith(".weights.h5")
        assert set(manifest["metrics"]) >= {"paper_reported", "measured_here"}
        shipped = registry._shipped_file(manifest["file"])
        if manifest["published"]:
            # Published by this project: the file ships beside its manifest with its hash.
            assert shipped is not None, (model, tag)
            assert len(manifest["sha256"]) == 64 and registry.file_sha256(shipped) == manifest["sha256"]
            continue
        # Not published by this project: no URL, no file, no hash pretending otherwise.
        assert shipped is None, (model, tag)
        assert manifest["url"] == "" and manifest["sha256"] == ""
        assert manifest["conversion"]["command"].startswith("keras-fr convert ")
        assert f"--output {manifest['file']}" in manifest["conversion"]["command"]
        assert f"--arch {model}" in manifest["conversion"]["command"]
        assert manifest["input"]["size"] == [112, 112] and manifest["input"]["range"] == [-1.0, 1.0]


def test_unknown_tag_lists_known_ones(env):
    with pytest.raises(ValueError, match="known tags: glint360k_cosface, ms1mv3_arcface"):
        registry.get_weights_file("iresnet50", "imagenet")
    with pytest.raises(ValueError, match="models with presets"):
        registry.get_weights_file("iresnet18", "ms1mv3_arcface")


def test_nothing_available_explains_how_to_produce_it(env):
    with pytest.raises(ValueError) as info:
        registry.get_weights_file(*PRESET)
    message = str(info.value)
    assert "iresnet50" in message and "ms1mv3_arcface" in message
    assert "publishes no weights file" in message
    assert (
        "keras-fr convert ms1mv3_arcface_r50_fp16/backbone.pth --arch iresnet50 "
        f"--output {FILE} --verify" in message
    )
    with pytest.raises(ValueError, match="No public source checkpoint"):
        registry.get_weights_file("lgaf_resnet100", "webface4m")


def test_user_weights_dir_first(env, tmp_path, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / FILE).write_bytes(b"user's own file")
    monkeypatch.setenv("KERAS_FR_WEIGHTS_DIR", str(user))
    assert registry.get_weights_file(*PRESET) == str(user / FILE)
    # With a published hash, a user file that does not match is refused and left in place.
    manifest = registry.get_manifest(*PRESET)
    manifest["sha256"] = _sha(b"the real thing")
    monkeypatch.setattr(registry, "get_manifest", lambda m, t: dict(manifest))
    with pytest.raises(ValueError, match="does not match the published sha256"):
        registry.get_weights_file(*PRESET)
    assert (user / FILE).read_bytes() == b"user's own file"


def test_download_then_offline_then_corrupted_cache_replaced(env, server, monkeypatch):
    srv, root = server
    data = os.urandom(4096)
    _serve(root, FILE, data)
    monkeypatch.setenv("KERAS_FR_WEIGHTS_URL", srv.url)

    path = registry.get_weights_file(*PRESET)
    assert path == str(env / FILE)
    assert open(path, "rb").read() == data
    assert f"/{FILE}" in srv.requests
    assert [p for p in os.listdir(env) if p.endswith(".part")] == []

    # Second call: served from the cache, no request at all.
    count = len(srv.requests)
    assert registry.get_weights_file(*PRESET) == path
    assert len(srv.requests) == count
    assert any(r["tag"] == PRESET[1] and r["available"] for r in registry.list_weights())

    # A corrupted cached file is detected (hash recorded at download) and downloaded again.
    with open(path, "r+b") as f:
        f.write(b"\x00" * 16)
    assert registry.get_weights_file(*PRESET) == path
    assert open(path, "rb").read() == data
    assert len(srv.requests) > count

    # With the server gone, the (good) cache still works: nothing touches the network.
    srv.stop()
    assert registry.get_weights_file(*PRESET) == path


def test_wrong_hash_leaves_nothing_and_raises(env, server, monkeypatch):
    srv, root = server
    _serve(root, FILE, os.urandom(2048), wrong_hash=True)
    monkeypatch.setenv("KERAS_FR_WEIGHTS_URL", srv.url)
    with pytest.raises(ValueError, match="does not match sha256"):
        registry.get_weights_file(*PRESET)
    assert not env.exists() or os.listdir(env) == []


def test_manifest_hash_is_used_for_the_download(env, server, monkeypatch):
    srv, root = server
    data = os.urandom(1024)
    _serve(root, FILE, data, sidecar=False)
    monkeypatch.setenv("KERAS_FR_WEIGHTS_URL", srv.url)
    # No hash anywhere: refuse to download something unverifiable.
    with pytest.raises(ValueError, match="cannot be verified"):
        registry.get_weights_file(*PRESET)
    assert not (env / FILE).exists()
    manifest = registry.get_manifest(*PRESET)
    monkeypatch.setattr(registry, "get_manifest", lambda m, t: dict(manifest, sha256=_sha(b"x")))
    with pytest.raises(ValueError, match="does not match sha256"):
        registry.get_weights_file(*PRESET)
    assert not env.exists() or os.listdir(env) == []
    monkeypatch.setattr(registry, "get_manifest", lambda m, t: dict(manifest, sha256=_sha(data)))
    assert open(registry.get_weights_file(*PRESET), "rb").read() == data


def test_server_error_is_clear(env, server, monkeypatch):
    srv, _ = server
    monkeypatch.setenv("KERAS_FR_WEIGHTS_URL", srv.url)
    with pytest.raises(ValueError, match="cannot be verified|download"):
        registry.get_weights_file(*PRESET)
    assert not env.exists() or os.listdir(env) == []


def test_weights_tag_loads_a_converted_file_end_to_end(env, server, monkeypatch, tmp_path):
    """A converted IResNet checkpoint served over HTTP, loaded with weights=TAG (top and no top)."""
    torch = pytest.importorskip("torch")
    from keras_fr.applications import IResNet18
    from keras_fr.conversion import convert_checkpoint
    from keras_fr.torch_reference import build_reference, randomize_

    net = randomize_(build_reference("iresnet18"), input_size=112, seed=7)
    torch.save(net.state_dict(), tmp_path / "backbone.pth")
    srv, root = server
    convert_checkpoint(tmp_path / "backbone.pth").save_weights(str(root / "iresnet18_test.weights.h5"))
    data = (root / "iresnet18_test.weights.h5").read_bytes()
    manifest = dict(
        json.loads(json.dumps(registry.get_manifest(*PRESET))),
        model="iresnet18", tag="test", file="iresnet18_test.weights.h5", sha256=_sha(data),
    )
    monkeypatch.setattr(registry, "get_manifest", lambda m, t: dict(manifest))
    monkeypatch.setenv("KERAS_FR_WEIGHTS_URL", srv.url)

    images = np.clip(np.random.default_rng(0).normal(0, 0.5, (2, 112, 112, 3)), -1, 1)
    images = images.astype("float32")
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        expected = net(x).numpy()
        expected_map = net.forward_features(x).numpy().transpose(0, 2, 3, 1)

    model = IResNet18(weights="test")
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, atol=1e-4)
    headless = IResNet18(include_top=False, weights="test", input_shape=(112, 112, 3))
    np.testing.assert_allclose(
        np.asarray(headless(images, training=False)), expected_map, atol=1e-4
    )
    assert srv.requests.count("/iresnet18_test.weights.h5") == 1


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A fake package folder holding one shipped preset file (bytes, sha256)."""
    data = b"shipped weights bytes"
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / FILE).write_bytes(data)
    manifests = registry._manifests()
    monkeypatch.setattr(
        registry, "_shipped_file", lambda f: str(folder / f) if (folder / f).is_file() else None
    )
    return folder, data, manifests


def _with_hash(monkeypatch, manifests, digest, default=False):
    changed = dict(manifests)
    manifest = dict(changed[PRESET])
    manifest.update(sha256=digest, published=True, default=default)
    changed[PRESET] = manifest
    monkeypatch.setattr(registry, "_manifests", lambda: changed)


def test_shipped_file_wins_and_is_hash_checked(env, shipped, monkeypatch, tmp_path):
    folder, data, manifests = shipped
    # A user file of the same name would come next; the shipped, verified one wins.
    user = tmp_path / "user"
    user.mkdir()
    (user / FILE).write_bytes(b"other bytes")
    monkeypatch.setenv("KERAS_FR_WEIGHTS_DIR", str(user))
    _with_hash(monkeypatch, manifests, _sha(data))
    assert registry.get_weights_file(*PRESET) == str(folder / FILE)
    _with_hash(monkeypatch, manifests, _sha(b"something else"))
    with pytest.raises(ValueError, match="shipped with keras_fr does not match the sha256"):
        registry.get_weights_file(*PRESET)
    _with_hash(monkeypatch, manifests, "")
    with pytest.raises(ValueError, match="none published"):
        registry.get_weights_file(*PRESET)


def test_default_preset_is_an_available_file_or_none(env, shipped, monkeypatch):
    folder, data, manifests = shipped
    # Nothing on this machine for iresnet100: no default, so callers must ask for random weights.
    assert registry.default_preset("iresnet100") is None
    assert registry.default_preset("no_such_model") is None
    _with_hash(monkeypatch, manifests, _sha(data))
    assert registry.default_preset("iresnet50") == "ms1mv3_arcface"
    rows = {(r["model"], r["tag"]): r for r in registry.list_weights()}
    assert rows[PRESET]["available"] and rows[PRESET]["shipped"]
    assert not rows[("iresnet50", "glint360k_cosface")]["shipped"]
    (folder / FILE).unlink()
    assert registry.default_preset("iresnet50") is None


def test_default_preset_prefers_the_manifest_default(env, monkeypatch, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("KERAS_FR_WEIGHTS_DIR", str(user))
    for tag in ("ms1mv3_arcface", "glint360k_cosface"):
        (user / f"iresnet50_{tag}.weights.h5").write_bytes(b"x")
    assert registry.default_preset("iresnet50") == "glint360k_cosface"  # first by tag
    manifests = dict(registry._manifests())
    manifest = dict(manifests[PRESET])
    manifest["default"] = True
    manifests[PRESET] = manifest
    monkeypatch.setattr(registry, "_manifests", lambda: manifests)
    assert registry.default_preset("iresnet50") == "ms1mv3_arcface"


def test_choose_weights_is_never_silently_random(env, tmp_path):
    # Nothing on this machine for iresnet100 (env points every lookup into tmp_path).
    with pytest.raises(ValueError, match=r"no real weights .* pass weights=TAG\|FILE .* or random_weights=True"):
        registry.choose_weights("iresnet100")
    with pytest.raises(ValueError, match=r"pass --weights FILE\|TAG .* or --random-weights"):
        registry.choose_weights("iresnet100", options=("--weights", "--random-weights", "--weights FILE|TAG"))
    assert registry.choose_weights("iresnet100", random_weights=True) == (None, "random")
    with pytest.raises(ValueError, match="not both"):
        registry.choose_weights("iresnet100", "ms1mv3_arcface", random_weights=True)
    missing = str(tmp_path / "nope.weights.h5")
    with pytest.raises(ValueError, match=r"--weights file not found: .*nope\.weights\.h5"):
        registry.choose_weights("iresnet100", missing, options=("--weights", "--random-weights", "--weights FILE|TAG"))
    real = tmp_path / "mine.weights.h5"
    real.write_bytes(b"x")
    assert registry.choose_weights("iresnet100", real) == (str(real), str(real))
    # A tag is passed through as given (resolved, and checked, when the model is built).
    assert registry.choose_weights("iresnet100", "ms1mv3_arcface") == ("ms1mv3_arcface", "ms1mv3_arcface")
