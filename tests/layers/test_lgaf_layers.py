"""LGAF layers against independent numpy computations of the paper's equations (the LGAF paper,
Sec. 3.2-3.3; docs/reference.md section 3), plus serialization, state handling and bad arguments."""

import numpy as np
import pytest

import keras

from keras_fr.layers.lgaf import (
    FeatureQualityFusion,
    LANet,
    MultiHeadLocal,
    MultiScaleLocalHead,
    SqueezeExcite,
)

EPS_BN = 1e-5


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def randomize(layer, seed):
    """Random weights everywhere; BN variances positive."""
    rng = np.random.default_rng(seed)
    values = []
    for w in layer.weights:
        shape = tuple(w.shape)
        if w.path.endswith("moving_variance"):
            values.append(rng.uniform(0.5, 1.5, shape))
        elif w.path.endswith("gamma"):
            values.append(rng.uniform(0.5, 1.5, shape))
        else:
            values.append(rng.normal(0, 0.3, shape))
    layer.set_weights([v.astype("float32") for v in values])


def weights_by_path(layer):
    return {w.path.split("/", 1)[1]: np.asarray(w.numpy(), "float64") for w in layer.weights}


def np_conv1x1(x, kernel, bias):
    return x @ kernel[0, 0] + bias


def np_lanet(x, w, prefix=""):
    hidden = np.maximum(np_conv1x1(x, w[prefix + "reduce/kernel"], w[prefix + "reduce/bias"]), 0)
    attention = sigmoid(np_conv1x1(hidden, w[prefix + "expand/kernel"], w[prefix + "expand/bias"]))
    return x * attention


def np_se(x, w, prefix=""):
    squeezed = x.mean(axis=(1, 2), keepdims=True)
    hidden = np.maximum(np_conv1x1(squeezed, w[prefix + "reduce/kernel"], w[prefix + "reduce/bias"]), 0)
    scale = sigmoid(np_conv1x1(hidden, w[prefix + "expand/kernel"], w[prefix + "expand/bias"]))
    return x * scale


def np_conv_dilated(x, kernel, dilation):
    """Stride-1 convolution with symmetric zero padding dilation * (k - 1) / 2 (PyTorch's)."""
    k = kernel.shape[0]
    pad = dilation * (k - 1) // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, wd, _ = x.shape
    out = np.zeros((n, h, wd, kernel.shape[-1]))
    for a in range(k):
        for b in range(k):
            out += xp[:, a * dilation: a * dilation + h, b * dilation: b * dilation + wd] @ kernel[a, b]
    return out


def np_bn(x, w, prefix):
    return ((x - w[prefix + "moving_mean"]) / np.sqrt(w[prefix + "moving_variance"] + EPS_BN)
            * w[prefix + "gamma"] + w[prefix + "beta"])


def np_head(x, w, scales, prefix=""):
    maps = []
    for k, (_, dilation) in enumerate(scales):
        y = np_conv_dilated(x, w[f"{prefix}scales_{k}_0/kernel"], dilation)
        y = np_bn(y, w, f"{prefix}scales_{k}_1/")
        alpha = w[f"{prefix}scales_{k}_2/alpha"].reshape(-1)
        y = np.where(y > 0, y, alpha * y)
        maps.append(np_lanet(y, w, f"{prefix}lanets_{k}/"))
    y = np_se(np.concatenate(maps, axis=-1), w, f"{prefix}se/")
    y = y.reshape(y.shape[0], -1) @ w[f"{prefix}proj_fc/kernel"] + w[f"{prefix}proj_fc/bias"]
    return np_bn(y, w, f"{prefix}proj_bn/")


def rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# --- LANet / SqueezeExcite -----------------------------------------------------------------------


def test_lanet_matches_numpy_and_is_spatial():
    layer = LANet(reduction=4, name="lanet")
    x = rand((2, 5, 6, 32))
    layer.build(x.shape)
    randomize(layer, 1)
    w = weights_by_path(layer)
    assert w["reduce/kernel"].shape == (1, 1, 32, 8) and w["expand/kernel"].shape == (1, 1, 8, 1)
    np.testing.assert_allclose(np.asarray(layer(x)), np_lanet(x, w), rtol=1e-5, atol=1e-5)
    attention = np.asarray(layer.attention(x))
    assert attention.shape == (2, 5, 6, 1)
    assert attention.std() > 1e-3  # differs across positions: spatial, not a GAP scalar


def test_squeeze_excite_matches_numpy():
    layer = SqueezeExcite(reduction=16, name="se")
    x = rand((2, 4, 4, 48), seed=3)
    layer.build(x.shape)
    randomize(layer, 2)
    w = weights_by_path(layer)
    assert w["reduce/kernel"].shape == (1, 1, 48, 3) and w["expand/kernel"].shape == (1, 1, 3, 48)
    np.testing.assert_allclose(np.asarray(layer(x)), np_se(x, w), rtol=1e-5, atol=1e-5)


# --- MultiScaleLocalHead / MultiHeadLocal ----------------------------------------------------------


SMALL = dict(branch_channels=8, lanet_reduction=4, se_reduction=4)


def test_head_matches_numpy_in_inference():
    head = MultiScaleLocalHead(6, name="head", **SMALL)
    x = rand((2, 5, 5, 12), seed=4)
    head.build(x.shape)
    randomize(head, 5)
    w = weights_by_path(head)
    expected = np_head(x, w, ((1, 1), (3, 1), (3, 2)))
    np.testing.assert_allclose(np.asarray(head(x, training=False)), expected, rtol=1e-4, atol=1e-4)


def test_head_sub_layer_layout():
    head = MultiScaleLocalHead(128, name="heads_0")
    head.build((None, 7, 7, 512))
    shapes = {k: v.shape for k, v in weights_by_path(head).items()}
    assert shapes["scales_0_0/kernel"] == (1, 1, 512, 128)
    assert shapes["scales_1_0/kernel"] == (3, 3, 512, 128)
    assert shapes["scales_2_0/kernel"] == (3, 3, 512, 128)
    assert head.scale_convs[2].dilation_rate == (2, 2)
    assert shapes["scales_1_2/alpha"] == (1, 1, 128)  # PReLU(128), per channel
    assert shapes["lanets_0/reduce/kernel"] == (1, 1, 128, 8)
    assert shapes["lanets_0/expand/kernel"] == (1, 1, 8, 1)
    assert shapes["se/reduce/kernel"] == (1, 1, 384, 24)
    assert shapes["se/expand/kernel"] == (1, 1, 24, 384)
    assert shapes["proj_fc/kernel"] == (384 * 49, 128)
    assert shapes["proj_bn/gamma"] == (128,)
    assert "scales_0_0/bias" not in shapes and "lanets_2/expand/bias" in shapes
    for bn in head.scale_bns + [head.proj_bn]:
        assert bn.epsilon == 1e-5 and bn.momentum == 0.9
    # Every layer owning weights is named per the PyTorch path.
    assert sorted({k.rsplit("/", 1)[0] for k in shapes}) == sorted(
        [f"scales_{k}_{i}" for k in range(3) for i in range(3)]
        + [f"lanets_{k}/{s}" for k in range(3) for s in ("reduce", "expand")]
        + ["se/reduce", "se/expand", "proj_fc", "proj_bn"]
    )


def test_head_training_uses_batch_statistics():
    head = MultiScaleLocalHead(6, name="head", **SMALL)
    x = rand((4, 5, 5, 12), seed=6)
    head.build(x.shape)
    randomize(head, 7)
    before = head.proj_bn.moving_mean.numpy().copy()
    train_out = np.asarray(head(x, training=True))
    assert not np.allclose(train_out, np.asarray(head(x, training=False)))
    assert not np.allclose(head.proj_bn.moving_mean.numpy(), before)


def test_multi_head_is_concat_of_heads():
    mhms = MultiHeadLocal(num_heads=3, embedding_size=12, name="local_branch", **SMALL)
    x = rand((2, 5, 5, 10), seed=8)
    mhms.build(x.shape)
    randomize(mhms, 9)
    w = weights_by_path(mhms)
    assert [h.name for h in mhms.heads] == ["heads_0", "heads_1", "heads_2"]
    expected = np.concatenate(
        [np_head(x, w, ((1, 1), (3, 1), (3, 2)), prefix=f"heads_{i}/") for i in range(3)], axis=-1
    )
    np.testing.assert_allclose(np.asarray(mhms(x)), expected, rtol=1e-4, atol=1e-4)


def test_custom_scales():
    head = MultiScaleLocalHead(4, scales=[(3, 3), (5, 1)], name="head", **SMALL)
    x = rand((1, 7, 7, 6), seed=10)
    head.build(x.shape)
    randomize(head, 11)
    expected = np_head(x, weights_by_path(head), ((3, 3), (5, 1)))
    np.testing.assert_allclose(np.asarray(head(x)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: MultiHeadLocal(num_heads=3, embedding_size=512), "divide"),
        (lambda: MultiHeadLocal(num_heads=0), "num_heads"),
        (lambda: MultiScaleLocalHead(0), "output_dim"),
        (lambda: MultiScaleLocalHead(8, scales=[(2, 1)]), "odd"),
        (lambda: MultiScaleLocalHead(8, scales=[(3, 0)]), "dilation"),
        (lambda: MultiScaleLocalHead(8, scales=[]), "at least one"),
        (lambda: MultiScaleLocalHead(8, scales="3x3"), "scales"),
        (lambda: LANet(reduction=0), "reduction"),
        (lambda: SqueezeExcite(reduction=1.5), "reduction"),
        (lambda: FeatureQualityFusion(mode="mean"), "mode"),
        (lambda: FeatureQualityFusion(momentum=0.0), "momentum"),
        (lambda: FeatureQualityFusion(h=-1), "`h`"),
    ],
)
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_head_needs_static_spatial_size():
    with pytest.raises(ValueError, match="static height and width"):
        MultiScaleLocalHead(8)(keras.Input((None, None, 16)))


@pytest.mark.parametrize(
    "layer",
    [
        LANet(reduction=8, name="a"),
        SqueezeExcite(reduction=4, name="b"),
        MultiScaleLocalHead(16, branch_channels=8, scales=[(1, 1), (3, 2)], lanet_reduction=2,
                            se_reduction=4, name="c"),
        MultiHeadLocal(num_heads=2, embedding_size=8, branch_channels=4, name="d"),
        FeatureQualityFusion(mode="add", h=0.5, momentum=0.1, epsilon=1e-2, gamma_epsilon=1e-5,
                             initial_mean=3.0, initial_std=7.0, return_gammas=True, name="e"),
    ],
)
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"keras_fr>{type(layer).__name__}"
    again = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert again.get_config() == config


# --- FeatureQualityFusion --------------------------------------------------------------------------


def np_quality(local, global_, mean, std, h=0.333, eps=1e-3, geps=1e-6):
    z = np.stack([np.linalg.norm(local, axis=1), np.linalg.norm(global_, axis=1)], axis=1)
    z_hat = np.clip(h * (z - mean) / (std + eps), -1, 1) + 1
    gamma = z_hat / (z_hat.sum(axis=1, keepdims=True) + geps)
    return gamma[:, :1] * local + gamma[:, 1:] * global_, gamma


def test_fusion_initial_state_and_inference_formula():
    fusion = FeatureQualityFusion(return_gammas=True, name="fusion")
    local, global_ = rand((5, 16), 1) * 3, rand((5, 16), 2) * 12
    fused, g_local, g_global = fusion([local, global_])
    np.testing.assert_array_equal(fusion.norm_mean.numpy(), [20.0, 20.0])
    np.testing.assert_array_equal(fusion.norm_std.numpy(), [100.0, 100.0])
    expected, gamma = np_quality(local, global_, np.array([20.0, 20.0]), np.array([100.0, 100.0]))
    np.testing.assert_allclose(np.asarray(fused), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g_local), gamma[:, :1], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_global), gamma[:, 1:], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_local) + np.asarray(g_global), 1.0, atol=1e-5)
    # Inference leaves the state alone.
    np.testing.assert_array_equal(fusion.norm_mean.numpy(), [20.0, 20.0])
    assert fusion.non_trainable_weights and not fusion.trainable_weights


def test_fusion_clips_normalized_norms():
    fusion = FeatureQualityFusion(initial_mean=1.0, initial_std=0.1, return_gammas=True)
    local = np.zeros((2, 4), "float32")
    local[0, 0] = 100.0  # far above mean: clipped to +1 -> Z^ = 2
    global_ = np.zeros((2, 4), "float32")
    global_[:, 0] = 1.0  # exactly the mean -> Z^ = 1; sample 1 local norm 0 -> clipped -1 -> Z^ = 0
    _, g_local, g_global = fusion([local, global_])
    np.testing.assert_allclose(np.asarray(g_local).ravel(), [2 / (3 + 1e-6), 0.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(g_global).ravel(), [1 / (3 + 1e-6), 1 / (1 + 1e-6)],
                               atol=1e-6)


def test_fusion_ema_over_two_training_steps():
    fusion = FeatureQualityFusion(name="fusion")
    mean, std = np.array([20.0, 20.0]), np.array([100.0, 100.0])
    for step in range(2):
        local, global_ = rand((6, 32), 10 + step) * (1 + step), rand((6, 32), 20 + step) * 4
        fused = np.asarray(fusion([local, global_], training=True))
        z = np.stack([np.linalg.norm(local, axis=1), np.linalg.norm(global_, axis=1)], axis=1)
        mean = 0.01 * z.mean(axis=0) + 0.99 * mean
        std = 0.01 * z.std(axis=0, ddof=0) + 0.99 * std
        np.testing.assert_allclose(fusion.norm_mean.numpy(), mean, rtol=1e-6)
        np.testing.assert_allclose(fusion.norm_std.numpy(), std, rtol=1e-6)
        # Training normalizes with the freshly updated statistics (Eq. 6-8).
        np.testing.assert_allclose(fused, np_quality(local, global_, mean, std)[0], rtol=1e-5,
                                   atol=1e-5)
    # Inference afterwards uses the stored values unchanged, and a batch of one works.
    one_l, one_g = rand((1, 32), 30), rand((1, 32), 31)
    out = np.asarray(fusion([one_l, one_g], training=False))
    np.testing.assert_allclose(out, np_quality(one_l, one_g, mean, std)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fusion.norm_mean.numpy(), mean, rtol=1e-6)


def test_fusion_training_and_inference_differ():
    fusion = FeatureQualityFusion(initial_mean=5.0, initial_std=1.0)
    local, global_ = rand((4, 8), 40) * 3, rand((4, 8), 41)
    infer = np.asarray(fusion([local, global_], training=False))
    train = np.asarray(fusion([local, global_], training=True))
    assert not np.allclose(infer, train)


def test_frozen_fusion_keeps_its_statistics():
    fusion = FeatureQualityFusion()
    fusion.trainable = False
    local, global_ = rand((4, 8), 42) * 3, rand((4, 8), 43)
    frozen = np.asarray(fusion([local, global_], training=True))
    np.testing.assert_array_equal(fusion.norm_mean.numpy(), [20.0, 20.0])
    np.testing.assert_array_equal(fusion.norm_std.numpy(), [100.0, 100.0])
    expected = np_quality(local, global_, np.array([20.0, 20.0]), np.array([100.0, 100.0]))[0]
    np.testing.assert_allclose(frozen, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["add", "local", "global"])
def test_fusion_modes(mode):
    fusion = FeatureQualityFusion(mode=mode, initial_mean=2.0, initial_std=1.0, return_gammas=True)
    local, global_ = rand((3, 8), 50), rand((3, 8), 51) * 0.3
    fused, g_local, g_global = (np.asarray(t) for t in fusion([local, global_]))
    expected = {"add": local + global_, "local": local, "global": global_}[mode]
    np.testing.assert_array_equal(fused, expected)
    # The FQA weights are reported in every mode (only "quality" applies them).
    _, gamma = np_quality(local, global_, np.array([2.0, 2.0]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(g_local, gamma[:, :1], rtol=1e-5)
    np.testing.assert_allclose(g_global, gamma[:, 1:], rtol=1e-5)
    assert np.abs(gamma[:, 0] - 0.5).max() > 0.05


def test_no_gradient_through_gammas():
    tf = pytest.importorskip("tensorflow")
    fusion = FeatureQualityFusion(initial_mean=2.0, initial_std=1.0, return_gammas=True)
    local = tf.constant(rand((2, 4), 60))
    global_ = tf.constant(rand((2, 4), 61))
    with tf.GradientTape() as tape:
        tape.watch(local)
        fused, g_local, _ = fusion([local, global_])
        loss = tf.reduce_sum(fused)
    grad = tape.gradient(loss, local).numpy()
    # With gamma constant, d(sum(gamma_l * local))/d local = gamma_l for every component.
    np.testing.assert_allclose(grad, np.repeat(g_local.numpy(), 4, axis=1), rtol=1e-6)


def test_fusion_rejects_bad_inputs():
    with pytest.raises(ValueError, match="two"):
        FeatureQualityFusion()(keras.Input((8,)))
    with pytest.raises(ValueError, match="same width"):
        FeatureQualityFusion()([keras.Input((8,)), keras.Input((6,))])


def _fusion_model():
    inputs = keras.Input((6,))
    local = keras.layers.Dense(8, name="local")(inputs)
    global_ = keras.layers.Dense(8, name="global")(inputs)
    fused = FeatureQualityFusion(name="fusion")([local, global_])
    return keras.Model(inputs, fused)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fusion_state_updates_in_fit_only(jit_compile):
    model = _fusion_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=jit_compile)
    x, y = rand((8, 6), 70), rand((8, 8), 71)
    wl, bl = model.get_layer("local").get_weights()
    wg, bg = model.get_layer("global").get_weights()
    z = np.stack([np.linalg.norm(x @ wl + bl, axis=1), np.linalg.norm(x @ wg + bg, axis=1)], axis=1)
    model.predict(x, verbose=0)
    fusion = model.get_layer("fusion")
    np.testing.assert_array_equal(fusion.norm_mean.numpy(), [20.0, 20.0])
    # Two steps of 4 samples each (lr 0: the features do not change between steps).
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    mean, std = np.array([20.0, 20.0]), np.array([100.0, 100.0])
    for batch in (z[:4], z[4:]):
        mean = 0.01 * batch.mean(axis=0) + 0.99 * mean
        std = 0.01 * batch.std(axis=0) + 0.99 * std
    np.testing.assert_allclose(fusion.norm_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(fusion.norm_std.numpy(), std, rtol=1e-5)
    model.predict(x, verbose=0)
    np.testing.assert_allclose(fusion.norm_mean.numpy(), mean, rtol=1e-5)
