"""IResNet: parameter counts, structure and names, shapes, errors, and parity with an independent
PyTorch definition written in this file from docs/reference.md section 2 (not from the code under test)."""

import numpy as np
import pytest

import keras

from keras_fr.applications import iresnet
from keras_fr.applications.iresnet import (
    FrozenScaleBatchNormalization,
    IResNet18,
    IResNet50,
    IResNet100,
)


#: The smallest backbone (one block per stage) for tests where depth does not matter.
TINY = (1, 1, 1, 1)


def tiny(**kwargs):
    return iresnet.IResNet(TINY, **kwargs)


def pytorch_param_count(model):
    """Weights that are PyTorch parameters: everything except BN moving statistics."""
    return sum(int(np.prod(w.shape)) for w in model.weights if "moving_" not in w.path)


def expected_param_count(blocks, embedding_size=512):
    """Parameter count of insightface's iresnet, computed from its layer list by hand."""
    def bn(c):
        return 2 * c

    total = 3 * 3 * 3 * 64 + bn(64) + 64  # conv1, bn1, prelu
    inplanes = 64
    for planes, count in zip((64, 128, 256, 512), blocks):
        for i in range(count):
            total += bn(inplanes) + 9 * inplanes * planes + bn(planes) + planes
            total += 9 * planes * planes + bn(planes)
            if i == 0:
                total += inplanes * planes + bn(planes)  # downsample
            inplanes = planes
    total += bn(512) + 512 * 49 * embedding_size + embedding_size + bn(embedding_size)
    return total


@pytest.mark.parametrize(
    "builder, expected",
    [(IResNet18, 24_025_600), (IResNet50, 43_590_848), (IResNet100, 65_156_160)],
)
def test_parameter_counts_match_insightface(builder, expected):
    model = builder()
    assert pytorch_param_count(model) == expected
    assert model.output_shape == (None, 512)


def test_hand_count_formula_agrees_with_reference_figures():
    # Guards the formula used below for the depths the issue gives no figure for.
    assert expected_param_count((2, 2, 2, 2)) == 24_025_600
    assert expected_param_count((3, 13, 30, 3)) == 65_156_160
    assert iresnet.IRESNET_BLOCKS[34] == (3, 4, 6, 3)
    assert iresnet.IRESNET_BLOCKS[200] == (6, 26, 60, 6)


@pytest.mark.parametrize("depth", [34, pytest.param(200, marks=pytest.mark.large)])
def test_other_depths_count_and_embedding_size(depth):
    model = getattr(iresnet, f"IResNet{depth}")(embedding_size=128)
    assert pytorch_param_count(model) == expected_param_count(iresnet.IRESNET_BLOCKS[depth], 128)
    assert model.output_shape == (None, 128)
    assert model.name == f"iresnet{depth}"


def expected_weight_layer_names(blocks):
    names = ["conv1", "bn1", "prelu"]
    for stage, count in enumerate(blocks, start=1):
        for i in range(count):
            p = f"layer{stage}_{i}"
            names += [f"{p}_bn1", f"{p}_conv1", f"{p}_bn2", f"{p}_prelu", f"{p}_conv2", f"{p}_bn3"]
            if i == 0:
                names += [f"{p}_downsample_0", f"{p}_downsample_1"]
    return names + ["bn2", "fc", "features"]


def test_layer_names_follow_pytorch_paths():
    model = IResNet18()
    owned = sorted(layer.name for layer in model.layers if layer.weights)
    assert owned == sorted(expected_weight_layer_names((2, 2, 2, 2)))
    # Weightless layers are deterministic too: a second build has identical names.
    keras.backend.clear_session()
    again = IResNet18()
    assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]


def test_prelu_is_per_channel_with_pytorch_initial_slope():
    model = IResNet18(include_top=False, input_shape=(32, 32, 3))
    prelus = [layer for layer in model.layers if isinstance(layer, keras.layers.PReLU)]
    assert len(prelus) == 1 + 8
    for layer in prelus:
        channels = layer.input.shape[-1]
        alpha = layer.get_weights()[0]
        assert alpha.size == channels, layer.name
        np.testing.assert_array_equal(alpha, np.full_like(alpha, 0.25))


def test_every_stage_strides_two_and_downsamples():
    model = IResNet18(include_top=False, input_shape=(64, 64, 3))
    for stage, size in zip(range(1, 5), (32, 16, 8, 4)):
        assert model.get_layer(f"layer{stage}_0_add").output.shape[1:3] == (size, size)
        ds = model.get_layer(f"layer{stage}_0_downsample_0")
        assert ds.strides == (2, 2) and ds.kernel_size == (1, 1)
    assert model.output_shape == (None, 4, 4, 512)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == 1e-5 and layer.momentum == 0.9
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.padding == "valid"


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(include_top=False, input_shape=(32, 32, 3)), (None, 2, 2, 512)),
        (dict(include_top=False, input_shape=(48, 80, 3), pooling="avg"), (None, 512)),
        (dict(include_top=False, input_shape=(64, 64, 3), pooling="max"), (None, 512)),
        (dict(include_top=False, input_shape=(None, None, 3), pooling="avg"), (None, 512)),
    ],
)
def test_headless_shapes(kwargs, shape):
    model = tiny(**kwargs)
    assert model.output_shape == shape
    height, width = (h if h is not None else 64 for h in kwargs["input_shape"][:2])
    x = np.random.default_rng(0).uniform(-1, 1, (2, height, width, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape[0] == 2 and np.all(np.isfinite(y))


def test_pooling_values_match_numpy_on_feature_map():
    fmap_model = tiny(include_top=False, input_shape=(32, 32, 3))
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    fmap = fmap_model.predict(x, verbose=0)
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        keras.backend.clear_session()
        pooled = tiny(include_top=False, input_shape=(32, 32, 3), pooling=pooling)
        pooled.set_weights(fmap_model.get_weights())
        np.testing.assert_allclose(
            pooled.predict(x, verbose=0), reduce(fmap, axis=(1, 2)), rtol=1e-5, atol=1e-5
        )


def test_input_tensor_is_used():
    inputs = keras.Input((112, 112, 3), name="faces")
    model = IResNet18(input_tensor=inputs)
    assert model.inputs[0] is inputs
    assert model.output_shape == (None, 512)


@pytest.mark.parametrize("shape", [(96, 96, 3), (112, 128, 3), (None, None, 3)])
def test_top_requires_112(shape):
    with pytest.raises(ValueError, match="112x112"):
        IResNet18(input_shape=shape)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(include_top=False, input_shape=(16, 16, 3)), "at least 32"),
        (dict(include_top=False, input_shape=(64, 64, 1)), "3 channels"),
        (dict(include_top=False, pooling="mean"), "pooling"),
        (dict(pooling="avg"), "pooling"),
        (dict(embedding_size=0), "embedding_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout="0.1"), "dropout"),
        (dict(weights="/nonexistent/x.weights.h5"), "not found"),
        (dict(input_tensor=np.zeros((1, 112, 112, 3))), "input_tensor"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IResNet18(**kwargs)


def test_features_scale_exists_but_is_frozen_at_one():
    model = IResNet18()
    features = model.get_layer("features")
    assert isinstance(features, FrozenScaleBatchNormalization)
    gamma, beta = features.gamma, features.beta
    np.testing.assert_array_equal(gamma.numpy(), np.ones(512, "float32"))
    trainable = {id(v) for v in model.trainable_weights}
    assert id(gamma) not in trainable and id(beta) in trainable
    # Every other BN scale is trainable.
    assert id(model.get_layer("bn2").gamma) in trainable


def test_frozen_scale_survives_fit_and_serialization(tmp_path):
    inputs = keras.Input((6,))
    outputs = FrozenScaleBatchNormalization(epsilon=1e-5, name="features")(
        keras.layers.Dense(4, name="fc")(inputs)
    )
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(16, 6)), rng.normal(size=(16, 4)) + 3.0, epochs=2, verbose=0)
    layer = model.get_layer("features")
    np.testing.assert_array_equal(layer.gamma.numpy(), np.ones(4, "float32"))
    assert np.abs(layer.beta.numpy()).max() > 0  # the bias did train
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    reloaded = loaded.get_layer("features")
    assert not reloaded.gamma.trainable and reloaded.beta.trainable


def test_headless_model_loads_backbone_from_full_weights_file(tmp_path):
    full = tiny()
    rng = np.random.default_rng(2)
    full.set_weights([rng.normal(size=w.shape).astype("float32") for w in full.get_weights()])
    path = tmp_path / "r18.weights.h5"
    full.save_weights(path)
    keras.backend.clear_session()
    headless = tiny(include_top=False, input_shape=(64, 64, 3), weights=str(path))
    for name in ("conv1", "layer3_0_prelu", "bn2"):
        for a, b in zip(headless.get_layer(name).get_weights(), full.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_keras_round_trip_is_exact(tmp_path):
    model = tiny(include_top=False, input_shape=(32, 32, 3), pooling="avg")
    x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = tmp_path / "r18.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_embedding_is_float32(policy):
    keras.config.set_dtype_policy(policy)
    model = IResNet18()
    assert model.get_layer("conv1").compute_dtype == policy.split("_")[1]
    assert model.output.dtype == "float32"
    y = model.predict(np.zeros((1, 112, 112, 3), "float32") + 0.1, verbose=0)
    assert y.dtype == np.float32 and np.all(np.isfinite(y))


# --- parity with an independent PyTorch definition (docs/reference.md section 2) ---------------------


def _torch_iresnet(torch, blocks, embedding_size=512):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, inplanes, planes, stride, downsample):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
            self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
            self.prelu = nn.PReLU(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
            self.downsample = downsample

        def forward(self, x):
            out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            return out + (self.downsample(x) if self.downsample is not None else x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
            self.prelu = nn.PReLU(64)
            inplanes = 64
            for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
                mods = []
                for i in range(count):
                    ds = None
                    if i == 0:
                        ds = nn.Sequential(
                            nn.Conv2d(inplanes, planes, 1, 2, bias=False),
                            nn.BatchNorm2d(planes, eps=1e-5),
                        )
                    mods.append(Block(inplanes, planes, 2 if i == 0 else 1, ds))
                    inplanes = planes
                setattr(self, f"layer{stage}", nn.Sequential(*mods))
            self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
            self.dropout = nn.Dropout(0.0)
            self.fc = nn.Linear(512 * 49, embedding_size)
            self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)

        def forward(self, x):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.dropout(torch.flatten(self.bn2(x), 1))
            return self.features(self.fc(x))

    return Net()


def torch_to_keras(torch_model, keras_model):
    """Copy a PyTorch state dict into the Keras model by the naming rule (path '.' -> '_')."""
    modules = dict(torch_model.named_modules())
    for path, module in modules.items():
        if not path or not any(True for _ in module.parameters(recurse=False)):
            continue
        layer = keras_model.get_layer(path.replace(".", "_"))
        kind = type(module).__name__
        if kind == "Conv2d":
            layer.set_weights([module.weight.detach().numpy().transpose(2, 3, 1, 0)])
        elif kind.startswith("BatchNorm"):
            layer.set_weights([
                module.weight.detach().numpy(), module.bias.detach().numpy(),
                module.running_mean.numpy(), module.running_var.numpy(),
            ])
        elif kind == "PReLU":
            layer.set_weights([module.weight.detach().numpy().reshape(layer.get_weights()[0].shape)])
        elif kind == "Linear":
            w = module.weight.detach().numpy()
            out_dim, in_dim = w.shape
            # PyTorch flattens (C, H, W); Keras flattens (H, W, C).
            w = w.reshape(out_dim, 512, 7, 7).transpose(2, 3, 1, 0).reshape(in_dim, out_dim)
            layer.set_weights([w, module.bias.detach().numpy()])
        else:  # pragma: no cover
            raise AssertionError(f"unexpected module {path}: {kind}")


def randomize_torch(torch, model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "features.weight":
                continue  # frozen at 1 in insightface
            p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if p.dim() > 1 else 0.2)
                    + (1.0 if name.endswith("weight") and p.dim() == 1 else 0.0))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)


@pytest.mark.torch
def test_forward_matches_independent_pytorch_iresnet18():
    torch = pytest.importorskip("torch")
    torch_model = _torch_iresnet(torch, (2, 2, 2, 2)).eval()
    randomize_torch(torch, torch_model)
    model = IResNet18()
    torch_to_keras(torch_model, model)
    x = np.random.default_rng(4).uniform(-1, 1, (2, 112, 112, 3)).astype("float32")
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = model.predict(x, verbose=0)
    assert np.all(np.isfinite(expected))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=0)
    # Same number of parameters on both sides.
    assert pytorch_param_count(model) == sum(p.numel() for p in torch_model.parameters())
