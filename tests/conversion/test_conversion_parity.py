"""PyTorch -> Keras -> PyTorch parity of the conversion, against the project's PyTorch references.

Each case gives a PyTorch reference network random weights, random BatchNorm statistics and PReLU
slopes (``randomize_``), saves it in one of the forms users hold (plain, ``module.``-prefixed,
training dict, ``_orig_mod.``, .safetensors, .npz), converts the file with ``convert_checkpoint``
and compares both networks in eval mode on the same random images: max abs difference <= 1e-4 on
outputs of order 1, cosine >= 0.99999 per sample. The reverse export must load into a fresh
PyTorch reference with ``strict=True`` and reproduce the outputs.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from keras_fr.conversion import (  # noqa: E402
    compare_outputs,
    convert_checkpoint,
    export_state_dict,
    save_state_dict,
)
from keras_fr.torch_reference import build_reference, randomize_  # noqa: E402

ATOL = 1e-4
MIN_COS = 0.99999


def _images(size, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 0.5, (n, size, size, 3)), -1, 1).astype("float32")


def _torch_forward(net, images, features_only=False):
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        out = net.forward_features(x) if features_only else net(x)
    out = out.numpy()
    if features_only:  # NCHW -> NHWC, as Keras returns it
        out = out.transpose(0, 2, 3, 1)
    return out


def _save(state, path, form):
    """Write ``state`` (torch tensors) the way a user's checkpoint would hold it."""
    if form == "plain":
        torch.save(state, path)
    elif form == "module":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif form == "orig_mod":
        torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, path)
    elif form == "training":
        torch.save(
            {
                "epoch": 3,
                "global_step": 1234,
                "state_dict_backbone": state,
                "state_dict_softmax_fc": {"weight": torch.randn(10, 512)},
                "state_optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            },
            path,
        )
    else:  # .safetensors / .npz: written through the package's own writer
        save_state_dict({k: v.numpy() for k, v in state.items()}, path)
    return path


def _check_parity(expected, actual):
    assert np.abs(expected).max() > 0.1, "outputs vanished: the test would prove nothing"
    assert np.abs(expected).max() < 50, "outputs exploded: randomization is off"
    max_diff, cos = compare_outputs(expected, actual)
    assert max_diff <= ATOL, max_diff
    assert np.all(cos >= MIN_COS), cos


def _check_export(model, name, images, expected, features_only=False, **kwargs):
    state = export_state_dict(model)
    fresh = build_reference(name, **kwargs)
    result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    _check_parity(expected, _torch_forward(fresh, images, features_only))


CASES = [
    # name, input size, checkpoint form, include_top
    pytest.param("msconv_resnet26", 64, "plain", True, id="msconv26-plain"),
    pytest.param("msconv_resnet50", 48, "module", True, id="msconv50-module", marks=pytest.mark.large),
    pytest.param("msconv_resnet101", 64, "training", True, id="msconv101-training",
                 marks=pytest.mark.large),
    pytest.param("iresnet18", 112, "training", True, id="iresnet18-training"),
    pytest.param("iresnet18", 112, "x.safetensors", True, id="iresnet18-safetensors"),
    pytest.param("iresnet50", 112, "x.npz", True, id="iresnet50-npz", marks=pytest.mark.large),
    pytest.param("iresnet100", 112, "module", True, id="iresnet100-module", marks=pytest.mark.large),
    pytest.param("iresnet100", 48, "orig_mod", False, id="iresnet100-notop", marks=pytest.mark.large),
    pytest.param("lgaf_resnet50", 32, "x.npz", False, id="lgaf50-notop"),
]


@pytest.mark.parametrize("name,size,form,include_top", CASES)
def test_parity(tmp_path, name, size, form, include_top):
    net = randomize_(build_reference(name), input_size=size, seed=1)
    suffix = form[1:] if form.startswith("x.") else ".pt"
    path = _save(net.state_dict(), tmp_path / f"checkpoint{suffix}", form)
    model, report = convert_checkpoint(
        path, include_top=include_top, input_shape=(size, size, 3), return_report=True
    )
    assert model.name == name
    assert report.ok and not report.unexpected
    if form == "training":
        assert report.ignored["margin-softmax class centers (training only)"]
    if not include_top:
        assert report.ignored["embedding head not built (include_top=False)"]
    images = _images(size)
    expected = _torch_forward(net, images, features_only=not include_top)
    _check_parity(expected, np.asarray(model(images, training=False)))
    if include_top:
        _check_export(model, name, images, expected)


@pytest.mark.parametrize(
    "fusion",
    ["quality", "add", "local", "global"],
)
@pytest.mark.large
def test_lgaf_parity_all_fusion_modes(tmp_path_factory, lgaf_checkpoint, fusion):
    net, path = lgaf_checkpoint
    net.fusion.mode = fusion
    images = _images(112, n=3, seed=2)
    expected = _torch_forward(net, images)
    model, report = convert_checkpoint(path, fusion=fusion, return_report=True)
    assert model.name == "lgaf_resnet100" and report.ok
    _check_parity(expected, np.asarray(model(images, training=False)))
    if fusion == "quality":
        # The quality weights must differ between samples, or the fusion is not exercised.
        net.return_branches = True
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            gamma_local = net(x)[3].numpy().ravel()
        net.return_branches = False
        assert np.ptp(gamma_local) > 0.02, gamma_local
        _check_export(model, "lgaf_resnet100", images, expected, fusion=fusion)


@pytest.fixture(scope="module")
def lgaf_checkpoint(tmp_path_factory):
    net = randomize_(build_reference("lgaf_resnet100"), input_size=112, seed=3)
    path = tmp_path_factory.mktemp("lgaf") / "lgaf.pt"
    _save(net.state_dict(), path, "module")
    return net, path


def _randomize_keras(model, seed=0):
    """New random values in every Keras weight (variances kept positive)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        name = variable.name
        if "moving_variance" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "alpha" in name:
            value = rng.uniform(0.05, 0.5, shape)
        elif len(shape) >= 2:
            value = rng.normal(0, np.sqrt(1.0 / np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0, 0.1, shape)
        variable.assign(value.astype("float32"))


@pytest.mark.parametrize("name,size", [("iresnet18", 112), ("msconv_resnet26", 32)])
def test_export_after_keras_changes(tmp_path, name, size):
    """Weights changed on the Keras side (as fine-tuning would) go back to PyTorch exactly."""
    net = randomize_(build_reference(name), input_size=size, seed=4)
    path = _save(net.state_dict(), tmp_path / "ckpt.pt", "plain")
    model = convert_checkpoint(path, input_shape=(size, size, 3))
    _randomize_keras(model, seed=5)
    images = _images(size, seed=6)
    keras_out = np.asarray(model(images, training=False))
    state = export_state_dict(model)
    save_state_dict(state, tmp_path / "back.safetensors")
    fresh = build_reference(name)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    torch_out = _torch_forward(fresh.eval(), images)
    assert np.abs(torch_out - _torch_forward(net, images)).max() > 1e-2  # the weights did change
    max_diff, cos = compare_outputs(torch_out, keras_out)
    assert max_diff <= 1e-3 * max(1.0, np.abs(torch_out).max()) and np.all(cos >= MIN_COS)
    # and the exported file converts back to the same Keras outputs
    again = convert_checkpoint(tmp_path / "back.safetensors", input_shape=(size, size, 3))
    np.testing.assert_allclose(np.asarray(again(images, training=False)), keras_out, atol=1e-5)


@pytest.mark.large
def test_iresnet_checkpoint_fills_lgaf_backbone_and_global_branch(tmp_path):
    """The LGAF layout (docs/reference.md section 3): an ArcFace IResNet checkpoint fills LGAF's backbone + global branch."""
    net = randomize_(build_reference("iresnet50"), input_size=112, seed=8)
    path = _save(net.state_dict(), tmp_path / "r50.pt", "plain")
    model, report = convert_checkpoint(path, arch="lgaf_resnet50", fusion="global",
                                       return_report=True)
    assert model.name == "lgaf_resnet50" and report.ok
    (reason,) = [r for r in report.ignored if r.startswith("LGAF local_branch")]
    assert any("local_branch" in k for k in report.ignored[reason])
    images = _images(112, seed=9)
    _check_parity(_torch_forward(net, images), np.asarray(model(images, training=False)))
    with pytest.raises(ValueError, match="keys describe a iresnet50"):
        convert_checkpoint(path, arch="lgaf_resnet100")
