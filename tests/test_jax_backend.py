"""The JAX subset: keras_fr's layers, applications and losses run and train on Keras' JAX backend.

The test process runs TensorFlow; each family is built here, its weights saved, and a child process
with ``KERAS_BACKEND=jax`` rebuilds it, loads the file and must give the same outputs (an independent
backend computing the same graph). A few ``model.fit`` steps with ArcFace on JAX must lower the loss.
Skipped when jax is not installed (it is in the ``test`` extra).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

pytest.importorskip("jax")

from keras_fr.applications import IResNet, LGAFResNet, MSConvResNet  # noqa: E402

BUILDS = {
    "msconv": "MSConvResNet((1, 1, 1, 1), 'msconv_tiny', input_shape=(32, 32, 3), embedding_size=64)",
    "iresnet": "IResNet((1, 1, 1, 1), 'iresnet_tiny', embedding_size=64)",
    "lgaf": "LGAFResNet((1, 1, 1, 1), 'lgaf_tiny', embedding_size=64, num_heads=2)",
}

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from keras_fr.applications import IResNet, LGAFResNet, MSConvResNet
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training import FaceTrainingModel

    job = json.loads(sys.argv[1])
    out = {}
    for name, build in job["builds"].items():
        model = eval(build)
        model.load_weights(job["weights"][name])
        x = np.load(job["inputs"][name])
        out[name] = np.asarray(model(x, training=False)).tolist()

    # A few steps of fine-tuning with a margin loss, on JAX. 32x32: XLA's CPU gradient of a grouped
    # convolution is slow (one step of this network at 64x64 took 14 s here, 3.5 s at 32x32).
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    patterns = rng.uniform(-1, 1, (4, 4, 4, 3))
    x = np.concatenate([np.kron(p, np.ones((8, 8, 1)))[None] + rng.normal(0, 0.2, (8, 32, 32, 3))
                        for p in patterns]).astype("float32")
    y = np.repeat(np.arange(4), 8).astype("int32")
    backbone = MSConvResNet((1, 1, 1, 1), "msconv_tiny", input_shape=(32, 32, 3), embedding_size=32)
    trainer = FaceTrainingModel(backbone, num_classes=4)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=ArcFaceLoss(scale=16.0, margin=0.2))
    history = trainer.fit(x, y, batch_size=16, epochs=3, shuffle=True, verbose=0)
    out["losses"] = history.history["loss"]
    print("RESULT " + json.dumps(out))
    """
)


def test_families_give_the_same_outputs_and_train_on_jax(tmp_path):
    rng = np.random.default_rng(0)
    job = {"builds": BUILDS, "weights": {}, "inputs": {}}
    expected = {}
    for name, build in BUILDS.items():
        keras.utils.set_random_seed(1)
        model = eval(build, {"MSConvResNet": MSConvResNet, "IResNet": IResNet, "LGAFResNet": LGAFResNet})
        # Non-trivial BatchNorm statistics, so inference-mode normalization is compared too.
        for weight in model.weights:
            if weight.path.endswith(("moving_mean", "moving_variance")):
                shape = tuple(weight.shape)
                weight.assign(rng.uniform(0.5, 1.5, shape).astype("float32")
                              if weight.path.endswith("variance") else rng.normal(0, 0.1, shape).astype("float32"))
        size = model.input_shape[1]
        x = rng.uniform(-1, 1, (2, size, size, 3)).astype("float32")
        job["weights"][name] = str(tmp_path / f"{name}.weights.h5")
        job["inputs"][name] = str(tmp_path / f"{name}.npy")
        model.save_weights(job["weights"][name])
        np.save(job["inputs"][name], x)
        expected[name] = np.asarray(model(x, training=False))

    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    for name in BUILDS:
        actual = np.asarray(result[name], np.float32)
        assert actual.shape == expected[name].shape, name
        scale = float(np.abs(expected[name]).max())
        np.testing.assert_allclose(actual, expected[name], rtol=0, atol=1e-4 * max(1.0, scale), err_msg=name)
    losses = result["losses"]
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
