"""LGAFResNet: structure and counts, fusion modes against the plain IResNet and numpy, outputs, bad
arguments, serialization (with the fusion state), precision, XLA and the PyTorch backend.

Most tests use the generic builder with the smallest backbone, blocks (1, 1, 1, 1), at 112x112: the
LGAF parts are identical for every depth and this keeps the file fast.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

from keras_fr.applications import iresnet
from keras_fr.applications import lgaf_resnet
from keras_fr.applications.lgaf_resnet import LGAFResNet, LGAFResNet50, LGAFResNet100
from keras_fr.layers.lgaf import FeatureQualityFusion, MultiHeadLocal

TINY = (1, 1, 1, 1)
#: A narrower top where the width does not matter (smaller files, faster tests).
NARROW = dict(num_heads=2, embedding_size=64)
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def torch_param_count(model):
    """Weights that are PyTorch parameters: all but BN moving stats and the fusion buffers."""
    return sum(
        int(np.prod(w.shape)) for w in model.weights
        if "moving_" not in w.path and not w.path.startswith("fusion/")
    )


def local_branch_count(num_heads=4, embedding_size=512, channels=512, branch=128, n_scales=3):
    """Hand count of the MHMS parameters from the LGAF layout (docs/reference.md section 3)."""
    per_scale = (1 + 9 + 9) * channels * branch + 2 * branch * n_scales + branch * n_scales
    lanet = (branch * (branch // 16) + branch // 16 + branch // 16 + 1) * n_scales
    cat = branch * n_scales
    se = cat * (cat // 16) + cat // 16 + (cat // 16) * cat + cat
    out = embedding_size // num_heads
    proj = cat * 49 * out + out + 2 * out
    assert n_scales == 3  # per_scale's kernel term assumes the default 1x1, 3x3, 3x3 scales
    return num_heads * (per_scale + lanet + se + proj)


def images(n, seed=0, size=112):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def randomize(model, seed=0):
    """Random weights with realistic scales (kernels ~ 1/sqrt(fan-in)), fusion state moved."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        shape, path = tuple(w.shape), w.path
        if path.startswith("fusion/"):
            values.append(np.asarray(w.numpy()) * rng.uniform(0.2, 0.8, shape))
        elif path.startswith("features/") and path.endswith("gamma"):
            values.append(np.ones(shape))  # frozen at 1
        elif path.endswith(("moving_variance", "gamma")):
            values.append(rng.uniform(0.5, 1.5, shape))
        elif path.endswith("kernel"):
            values.append(rng.normal(0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape))
        elif path.endswith("alpha"):
            values.append(rng.uniform(0.0, 0.5, shape))
        else:
            values.append(rng.normal(0, 0.1, shape))
    model.set_weights([v.astype("float32") for v in values])


def predict(model, x):
    outputs = model.predict(x, verbose=0)
    for out in outputs if isinstance(outputs, list) else [outputs]:
        assert np.all(np.isfinite(out))
    return outputs


def copy_by_layer_name(source, target):
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


@pytest.mark.parametrize("builder, depth", [(LGAFResNet50, 50), (LGAFResNet100, 100)])
def test_parameter_counts(builder, depth):
    model = builder()
    backbone = {50: 43_590_848, 100: 65_156_160}[depth]
    assert torch_param_count(model) == backbone + local_branch_count()
    assert model.output_shape == (None, 512)
    assert model.name == f"lgaf_resnet{depth}"
    fusion = model.get_layer("fusion")
    assert [w.path for w in fusion.weights] == ["fusion/norm_mean", "fusion/norm_std"]
    assert not fusion.trainable_weights


def test_layout_shares_iresnet_names():
    model = LGAFResNet(TINY, num_heads=2)
    plain = iresnet.IResNet(TINY)
    lgaf_names = {layer.name for layer in model.layers if layer.weights}
    plain_names = {layer.name for layer in plain.layers if layer.weights}
    assert lgaf_names == plain_names | {"local_branch", "fusion"}
    local = model.get_layer("local_branch")
    assert isinstance(local, MultiHeadLocal)
    assert [h.name for h in local.heads] == ["heads_0", "heads_1"]
    assert model.get_layer("local_branch").heads[1].output_dim == 256
    assert isinstance(model.get_layer("fusion"), FeatureQualityFusion)


def test_global_mode_is_the_plain_iresnet():
    model = LGAFResNet(TINY, fusion="global", **NARROW)
    randomize(model, 1)
    plain = iresnet.IResNet(TINY, embedding_size=64)
    copy_by_layer_name(model, plain)
    x = images(2, seed=2)
    np.testing.assert_array_equal(predict(model, x), predict(plain, x))


def test_quality_add_local_modes_against_the_branches():
    branches = LGAFResNet(TINY, return_branches=True, **NARROW)
    randomize(branches, 3)
    x = images(3, seed=4)
    fused, local, global_, g_local, g_global = predict(branches, x)
    assert branches.output_names == list(lgaf_resnet.BRANCH_OUTPUT_NAMES)
    # The quality fusion from the stored statistics, in numpy (Eq. 4-10).
    fusion = branches.get_layer("fusion")
    mean, std = fusion.norm_mean.numpy(), fusion.norm_std.numpy()
    assert not np.allclose(mean, 20.0)  # randomized: the stored state is what is used
    z = np.stack([np.linalg.norm(local, axis=1), np.linalg.norm(global_, axis=1)], axis=1)
    z_hat = np.clip(0.333 * (z - mean) / (std + 1e-3), -1, 1) + 1
    gamma = z_hat / (z_hat.sum(axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(g_local, gamma[:, :1], rtol=1e-5)
    np.testing.assert_allclose(g_global, gamma[:, 1:], rtol=1e-5)
    np.testing.assert_allclose(fused, gamma[:, :1] * local + gamma[:, 1:] * global_,
                               rtol=1e-5, atol=1e-5)
    for mode, expected in (("add", local + global_), ("local", local), ("global", global_)):
        keras.backend.clear_session()
        other = LGAFResNet(TINY, fusion=mode, **NARROW)
        other.set_weights(branches.get_weights())
        np.testing.assert_allclose(predict(other, x), expected, rtol=1e-5, atol=1e-5)


def test_inference_is_per_sample_and_batch_of_one_works():
    model = LGAFResNet(TINY, **NARROW)
    randomize(model, 5)
    x = images(4, seed=6)
    full = predict(model, x)
    one = predict(model, x[2:3])
    np.testing.assert_allclose(one, full[2:3], rtol=1e-5, atol=1e-5)


# Mixed precision on a CPU is bfloat16: a mixed_float16 training step of this tiny network took 40 s
# here (float16 convolution gradients have no fast CPU kernels; bfloat16: 1.4 s after tracing).
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_training_step_moves_fusion_state_and_inference_does_not(policy):
    keras.config.set_dtype_policy(policy)
    model = LGAFResNet(TINY, **NARROW)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x, y = images(2, seed=7), np.zeros((2, 64), "float32")
    predict(model, x)
    fusion = model.get_layer("fusion")
    np.testing.assert_array_equal(fusion.norm_mean.numpy(), [20.0, 20.0])
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    after = fusion.norm_mean.numpy().copy()
    assert not np.allclose(after, 20.0)
    predict(model, x)
    np.testing.assert_array_equal(fusion.norm_mean.numpy(), after)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(include_top=False, input_shape=(32, 32, 3)), (None, 2, 2, 512)),
        (dict(include_top=False, input_shape=(64, 48, 3), pooling="avg"), (None, 512)),
        (dict(include_top=False, input_shape=(64, 64, 3), pooling="max"), (None, 512)),
        (dict(embedding_size=256, num_heads=8), (None, 256)),
    ],
)
def test_shapes(kwargs, shape):
    model = LGAFResNet(TINY, **kwargs)
    assert model.output_shape == shape
    if "include_top" in kwargs:
        assert "local_branch" not in {layer.name for layer in model.layers}


def test_input_tensor():
    inputs = keras.Input((112, 112, 3), name="faces")
    model = LGAFResNet(TINY, input_tensor=inputs)
    assert model.inputs[0] is inputs and model.output_shape == (None, 512)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_heads=3), "num_heads"),
        (dict(num_heads=0), "num_heads"),
        (dict(num_heads=2.0), "num_heads"),
        (dict(fusion="mean"), "fusion"),
        (dict(return_branches="yes"), "return_branches"),
        (dict(include_top=False, return_branches=True), "include_top"),
        (dict(input_shape=(96, 96, 3)), "112x112"),
        (dict(include_top=False, input_shape=(16, 16, 3)), "at least 32"),
        (dict(pooling="avg"), "pooling"),
        (dict(dropout=-0.1), "dropout"),
        (dict(embedding_size=-4), "embedding_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LGAFResNet(TINY, **kwargs)


def test_public_variant_validates_before_building():
    with pytest.raises(ValueError, match="num_heads"):
        LGAFResNet100(num_heads=5)
    with pytest.raises(ValueError, match="fusion"):
        LGAFResNet100(fusion="concat")


def test_serialization_round_trips_include_fusion_state(tmp_path):
    model = LGAFResNet(TINY, return_branches=True, **NARROW)
    randomize(model, 8)
    state = [w.numpy().copy() for w in model.get_layer("fusion").weights]
    x = images(2, seed=9)
    expected = predict(model, x)

    path = tmp_path / "lgaf.keras"
    model.save(path)
    keras.backend.clear_session()
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(predict(loaded, x), expected):
        np.testing.assert_array_equal(a, b)
    for w, s in zip(loaded.get_layer("fusion").weights, state):
        np.testing.assert_array_equal(w.numpy(), s)
    assert loaded.get_layer("fusion").return_gammas

    weights_path = tmp_path / "lgaf.weights.h5"
    model.save_weights(weights_path)
    keras.backend.clear_session()
    fresh = LGAFResNet(TINY, return_branches=True, **NARROW)
    fresh.load_weights(weights_path)
    for w, s in zip(fresh.get_layer("fusion").weights, state):
        np.testing.assert_array_equal(w.numpy(), s)
    for a, b in zip(predict(fresh, x), expected):
        np.testing.assert_array_equal(a, b)

    # The same file fills a headless model's backbone (by layer name).
    keras.backend.clear_session()
    headless = LGAFResNet(TINY, include_top=False, input_shape=(64, 64, 3),
                          weights=str(weights_path), **NARROW)
    np.testing.assert_array_equal(headless.get_layer("conv1").get_weights()[0],
                                  model.get_layer("conv1").get_weights()[0])


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_float32(policy):
    keras.config.set_dtype_policy(policy)
    model = LGAFResNet(TINY, return_branches=True, **NARROW)
    assert model.get_layer("local_branch").compute_dtype == policy.split("_")[1]
    assert all(t.dtype == "float32" for t in model.outputs)
    outputs = model.predict(images(2, seed=10), verbose=0)
    for out in outputs:
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
    np.testing.assert_allclose(outputs[3] + outputs[4], 1.0, atol=1e-5)


def test_jit_compile_matches_eager():
    model = LGAFResNet(TINY, **NARROW)
    randomize(model, 11)
    x = images(2, seed=12)
    expected = predict(model, x)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(predict(model, x), expected, rtol=1e-4, atol=1e-4)


_TORCH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "torch", keras.backend.backend()
    from keras_fr.applications.lgaf_resnet import LGAFResNet
    weights, x_path, out_path = sys.argv[1:4]
    model = LGAFResNet((1, 1, 1, 1), num_heads=2, embedding_size=64, return_branches=True)
    model.load_weights(weights)
    outputs = model.predict(np.load(x_path), verbose=0)
    # The fusion statistics' EMA update in training, on this backend.
    from keras_fr.layers.lgaf import FeatureQualityFusion
    fusion = FeatureQualityFusion()
    rng = np.random.default_rng(5)
    for _ in range(2):
        fusion([rng.normal(size=(4, 16)).astype("float32"),
                3 * rng.normal(size=(4, 16)).astype("float32")], training=True)
    state = [np.asarray(keras.ops.convert_to_numpy(w)) for w in fusion.weights]
    np.savez(out_path, *[np.asarray(o) for o in outputs], *state)
    """
)


@pytest.mark.torch
def test_pytorch_backend_forward_matches_tensorflow(tmp_path):
    pytest.importorskip("torch")
    model = LGAFResNet(TINY, return_branches=True, **NARROW)
    randomize(model, 13)
    x = images(2, seed=14)
    expected = predict(model, x)
    model.save_weights(tmp_path / "w.weights.h5")
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run_torch.py"
    script.write_text(_TORCH_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=str(REPO_ROOT), CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "w.weights.h5"), str(tmp_path / "x.npy"),
         str(tmp_path / "out.npz")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for index, want in enumerate(expected):
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got[f"arr_{index}"], want, atol=1e-4 * scale, rtol=0)
    rng = np.random.default_rng(5)
    mean, std = np.full(2, 20.0), np.full(2, 100.0)
    for _ in range(2):
        local, global_ = rng.normal(size=(4, 16)), 3 * rng.normal(size=(4, 16))
        z = np.stack([np.linalg.norm(local, axis=1), np.linalg.norm(global_, axis=1)], axis=1)
        mean = 0.01 * z.mean(axis=0) + 0.99 * mean
        std = 0.01 * z.std(axis=0) + 0.99 * std
    np.testing.assert_allclose(got[f"arr_{len(expected)}"], mean, rtol=1e-5)
    np.testing.assert_allclose(got[f"arr_{len(expected) + 1}"], std, rtol=1e-5)
