"""PartialFC with the class centres sharded over two MirroredStrategy replicas (logical CPUs) trains
like the single-replica PartialFC (issue 16).

One child process (the logical devices must be set up before TensorFlow starts) runs:

- rate 1.0: 4 steps of global batches of 8 on 41 classes (shards of 21 and 20 rows, so one padded
  row) give the backbone, the centres and their momentum of ``PartialFCTrainingModel`` on one device,
  and ``predict`` under the strategy gives its full logits;
- rate 0.3: two steps from a non-zero momentum: each replica's sample holds the positives of its
  shard, rows outside the samples (centres and momentum) are bitwise unchanged, and the sampled rows
  follow the NumPy float64 rule with the gradient of the full head's loss restricted to the sampled
  classes;
- a weights file of the sharded model (the whole matrix) loads into a fresh sharded model;
- ``keras-fr train``'s engine with ``partial_fc=0.5`` and ``strategy="mirrored"``: a run stopped
  after 3 of 6 steps and resumed gives the uninterrupted run's weights; its checkpoint is refused,
  naming ``partial_fc_sharded``, when the same config is continued on one device.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_fr.layers.margin import MarginHead
    from keras_fr.training import PartialFCTrainingModel
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.recipes import SGDWithL2
    from keras_fr.training.sharded_partial_fc import ShardedPartialFCTrainingModel, sample_shard

    root = sys.argv[1]
    out = {}

    def tiny():
        x = inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
        x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dense(16, name="embedding")(x)
        return keras.Model(inputs, x, name="tiny")

    def compiled(model):
        model.compile(SGDWithL2(0.1, momentum=0.9, l2=5e-4), loss=ArcFaceLoss(scale=16.0, margin=0.2))
        model.optimizer.build(model.trainable_variables)
        return model

    def diff(a, b):
        return float(max(np.max(np.abs(np.asarray(x) - np.asarray(y))) for x, y in zip(a, b)))

    rng = np.random.default_rng(0)
    C, B, STEPS = 41, 8, 4
    x = rng.normal(size=(B * STEPS, 32, 32, 3)).astype("float32")
    y = rng.integers(0, C, B * STEPS).astype("int32")
    keras.utils.set_random_seed(1)
    w0 = tiny().get_weights()
    init = keras.initializers.RandomNormal(stddev=0.01, seed=5)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())

    # 1. Rate 1.0 against the single-replica PartialFC on the same global batches.
    backbone = tiny()
    backbone.set_weights(w0)
    ref = compiled(PartialFCTrainingModel(backbone, C, sample_rate=1.0, head_initializer=init))
    k0 = ref.partial_fc.kernel.numpy().copy()
    ref.fit(x, y, batch_size=B, shuffle=False, verbose=0)
    with strategy.scope():
        backbone = tiny()
        backbone.set_weights(w0)
        model = compiled(ShardedPartialFCTrainingModel(backbone, C, sample_rate=1.0, head_initializer=init))
    head = model.partial_fc
    components = head._centres.values
    out["component_rows"] = [int(c.shape[0]) for c in components]
    out["component_devices"] = [c.device for c in components]
    out["initial_centres"] = diff([head.full_kernel()], [k0])
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(B), verbose=0)
    out["rate1"] = {
        "backbone": diff(model.backbone.get_weights(), ref.backbone.get_weights()),
        "centres": diff([head.full_kernel()], [ref.partial_fc.kernel.numpy()]),
        "momentum": diff([head.full_momentum()], [ref.partial_fc.momentum_buffer.numpy()]),
        "moved_backbone": diff(ref.backbone.get_weights(), w0),
        "moved_centres": diff([ref.partial_fc.kernel.numpy()], [k0]),
        "iterations": int(model.optimizer.iterations.numpy()),
    }
    with strategy.scope():  # the full logits, each replica scoring its batch slice against every shard
        logits = model.predict(x[:8], batch_size=8, verbose=0)
    out["predict"] = [list(logits.shape), diff([logits], [ref.predict(x[:8], verbose=0)])]

    # 2. Rate 0.3: positives kept, only the sampled rows move, and they move by the rule.
    rate, seed, lr, mu, wd = 0.3, 7, 0.1, 0.9, 5e-4
    with strategy.scope():
        backbone = tiny()
        backbone.set_weights(w0)
        model = compiled(ShardedPartialFCTrainingModel(backbone, C, sample_rate=rate, seed=seed,
                                                       head_initializer=init))
    head = model.partial_fc
    head.set_full_momentum(rng.normal(scale=0.01, size=(C, 16)).astype("float32"))
    checks = []
    for step in range(2):
        xb, yb = x[step * B:(step + 1) * B], y[step * B:(step + 1) * B]
        w_before, v_before = head.full_kernel(), head.full_momentum()
        # The expected sample of each shard, and the full head's loss restricted to their union.
        sampled = [start + sample_shard(yb, start, stop, rate, seed, r, step)[0].numpy()
                   for r, (start, stop) in enumerate(head.shards)]
        union = np.concatenate(sampled)
        emb = model.backbone(xb, training=True)
        centres = tf.Variable(w_before)
        with tf.GradientTape() as tape:
            full = MarginHead(C)
            full.build((None, 16))
            full.kernel.assign(tf.transpose(centres))
            logits = tf.gather(full(emb), union, axis=1)
            loss = ArcFaceLoss(scale=16.0, margin=0.2)(np.searchsorted(union, yb), logits)
        grad = tape.gradient(loss, full.kernel).numpy().T[union].astype(np.float64)
        model.fit(tf.data.Dataset.from_tensors((xb, yb)), verbose=0)
        w_after, v_after = head.full_kernel(), head.full_momentum()
        others = np.setdiff1d(np.arange(C), union)
        g = grad + wd * w_before[union].astype(np.float64)
        v_ref = mu * v_before[union].astype(np.float64) + g
        w_ref = w_before[union].astype(np.float64) - lr * v_ref
        checks.append({
            "sizes": [len(s) for s in sampled],
            "expected_sizes": [max(int(rate * (stop - start)), len({c for c in yb if start <= c < stop}))
                               for start, stop in head.shards],
            "positives_kept": bool(set(yb.tolist()) <= set(union.tolist())),
            "unsampled_bitwise": bool(np.array_equal(w_after[others].view(np.uint32), w_before[others].view(np.uint32))
                                      and np.array_equal(v_after[others].view(np.uint32), v_before[others].view(np.uint32))),
            "num_unsampled": int(others.size),
            "centres_rule": float(np.max(np.abs(w_after[union] - w_ref))),
            "momentum_rule": float(np.max(np.abs(v_after[union] - v_ref))),
            "sampled_moved": float(np.min(np.max(np.abs(w_after[union] - w_before[union]), axis=1))),
            "largest_move": float(np.max(np.abs(w_after[union] - w_before[union]))),
        })
    out["sampled"] = checks

    # 3. Weights files: the whole matrix, loaded back into a fresh sharded model.
    path = os.path.join(root, "sharded.weights.h5")
    model.save_weights(path)
    with strategy.scope():
        again = compiled(ShardedPartialFCTrainingModel(tiny(), C, sample_rate=rate, seed=seed))
    again.load_weights(path)
    out["reload"] = {
        "sharded_centres": diff([again.partial_fc.full_kernel()], [head.full_kernel()]),
        "sharded_momentum": diff([again.partial_fc.full_momentum()], [head.full_momentum()]),
        "sharded_backbone": diff(again.backbone.get_weights(), model.backbone.get_weights()),
        "iterations": int(again.optimizer.iterations.numpy()),
    }
    print("RESULT " + json.dumps(out))

    # 4. The engine: mirrored + partial_fc 0.5, a run stopped after 3 of 6 steps and resumed.
    from keras_fr.training.config import load_config
    from keras_fr.training.engine import train
    for output, stops in (("full", [None]), ("resumed", [3, None])):
        for stop in stops:
            result = train(load_config(os.path.join(root, "config.py"),
                                       overrides={"output": os.path.join(root, output)}),
                           stop_after_steps=stop, verbose=0, log=None)
            assert result.num_replicas == 2, result
    assert result.finished, result
    # The sharded run's checkpoint is not continued on one device (another sampling): refused, named.
    from keras_fr.training.config import ConfigError
    try:
        train(load_config(os.path.join(root, "config.py"),
                          overrides={"output": os.path.join(root, "resumed"), "strategy": "none"}),
              verbose=0, log=None)
        print("REFUSED none")
    except ConfigError as exc:
        print("REFUSED " + str(exc))
    """
)

CONFIG = """
def tiny():
    import keras
    x = inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, name="embedding")(x)
    return keras.Model(inputs, x, name="tiny")

config = dict(model=tiny, data={{"type": "recordio", "path": {data!r}}}, recipe="lgaf",
              recipe_args={{"scale_lr": False}}, batch_size=8, epochs=2,
              loss={{"type": "arcface", "scale": 16.0, "margin": 0.2}}, partial_fc=0.5,
              strategy="mirrored", augmentation=False, tensorboard=False, output="runs/x", seed=3)
"""


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join([str(os.getcwd()), env.get("PYTHONPATH", "")])
    return env


def test_sharded_partial_fc_trains_like_one_replica(tmp_path):
    import keras

    from keras_fr.data.recordio import write_recordio

    rng = np.random.default_rng(0)
    labels = np.arange(24) % 12
    images = [rng.integers(0, 256, (32, 32, 3)).astype(np.uint8) for _ in labels]
    write_recordio(tmp_path / "data", images, labels)
    (tmp_path / "config.py").write_text(CONFIG.format(data=str(tmp_path / "data")))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])

    # Each replica holds its own rows, on its own device: 21 and 20 rows (one padded), not 41.
    assert r["component_rows"] == [21, 21], r
    assert r["component_devices"][0] != r["component_devices"][1], r
    assert r["initial_centres"] == 0.0

    one = r["rate1"]
    assert one["iterations"] == 4
    assert one["moved_backbone"] > 1e-2 and one["moved_centres"] > 1e-2, one  # the comparison can fail
    assert one["backbone"] <= 2e-5 and one["centres"] <= 2e-5 and one["momentum"] <= 1e-4, one

    assert r["predict"][0] == [8, 41] and r["predict"][1] <= 1e-5, r["predict"]

    for step in r["sampled"]:
        assert step["sizes"] == step["expected_sizes"], step
        assert step["positives_kept"] and step["unsampled_bitwise"] and step["num_unsampled"] > 20, step
        # float32 against float64, gradients summed in another order over the shards
        assert step["centres_rule"] <= 1e-5 and step["momentum_rule"] <= 1e-4, step
        assert step["sampled_moved"] > 1e-7 and step["largest_move"] > 100 * 1e-5, step

    reload = r["reload"]
    assert reload["sharded_centres"] == 0.0 and reload["sharded_momentum"] == 0.0, reload
    assert reload["sharded_backbone"] == 0.0 and reload["iterations"] == 2, reload

    full = keras.saving.load_model(tmp_path / "full" / "backbone.keras", compile=False).get_weights()
    resumed = keras.saving.load_model(tmp_path / "resumed" / "backbone.keras", compile=False).get_weights()
    for a, b in zip(resumed, full):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    refused = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REFUSED "))
    assert "partial_fc_sharded" in refused and "different run" in refused, refused
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["fingerprint"]["partial_fc_sharded"] is True and state["step"] == 6
