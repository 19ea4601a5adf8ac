"""Data-parallel training gives the same weights as one device (issue 16).

A tiny backbone (conv, BatchNormalization, PReLU, pooling, dense) at 32x32 trains 10 steps (2 epochs of
5 global batches of 8) on 40 synthetic faces of 8 identities read from an insightface RecordIO set,
with the LGAF recipe's SGD (lr 0.1, momentum 0.9, coupled weight decay) and ArcFace, no augmentation.
The single-device run of ``keras_fr.training.engine`` is first checked against plain ``keras`` ``fit``
on the same global batches (images read independently from the RecordIO file); then:

- ``MirroredStrategy`` over two logical CPU devices (child process: logical devices must be set up
  before TensorFlow starts), with synchronized BatchNormalization, gives the same weights; without it
  (per-replica batch statistics) they differ, which shows the comparison can fail; a run stopped
  mid-epoch on one device and resumed on the two replicas gives them too;
- a real two-process ``MultiWorkerMirroredStrategy`` cluster on 127.0.0.1 gives the same weights;
- on JAX, ``keras.distribution.DataParallel`` over two host devices gives the same weights as one
  JAX device (child process with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``).

Every comparison also checks that training moved the weights far more than the tolerance.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_fr.training.config import load_config
from keras_fr.training.engine import global_batch_indices, shard_index_dataset, train

NUM_IMAGES, NUM_CLASSES, BATCH, EPOCHS = 40, 8, 8, 2
ATOL = 2e-4  # float32 sums in another order, over 10 SGD steps at lr 0.1

CONFIG = """
def tiny():
    import keras
    x = inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, name="embedding")(x)
    return keras.Model(inputs, x, name="tiny")

config = dict(
    model=tiny,
    data={{"type": "recordio", "path": {data!r}}},
    recipe="lgaf",
    recipe_args={{"scale_lr": False}},
    batch_size={batch},
    epochs={epochs},
    loss={{"type": "arcface", "scale": 16.0, "margin": 0.2}},
    augmentation=False,
    sync_batchnorm=True,
    tensorboard=False,
    evaluation=[{{"path": {pairs!r}, "name": "pairs"}}],
    output="runs/none",
    seed=3,
)
"""


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(os.getcwd()), env.get("PYTHONPATH", "")])
    return env


def _weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


def _assert_same(actual, expected, initial, atol=ATOL):
    moved = max(float(np.max(np.abs(e - i))) for e, i in zip(expected, initial))
    assert moved > 50 * atol, f"training hardly moved the weights ({moved}); the comparison would prove nothing"
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The RecordIO set, the config file, and the single-device run (in this process)."""
    from keras_fr.data.recordio import write_recordio

    root = tmp_path_factory.mktemp("distributed")
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 256, (NUM_CLASSES, 4, 4, 3))
    labels = np.arange(NUM_IMAGES) % NUM_CLASSES
    images = [
        np.clip(np.kron(patterns[c], np.ones((8, 8, 1))) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
        for c in labels
    ]
    write_recordio(root / "data", images, labels)
    # A small pair set, so that the evaluation callback runs under every strategy too.
    from PIL import Image

    (root / "pairs").mkdir()
    for i in range(20):
        Image.fromarray(images[i]).save(root / "pairs" / f"{i}.png")
    # 10 same (i, i + 8) and 10 different (i, i + 1) pairs, alternating: every fold holds both.
    rows = [row for i in range(10) for row in (f"{i}.png,{i + 8}.png,1", f"{i}.png,{i + 1}.png,0")]
    (root / "pairs" / "pairs.csv").write_text("img1,img2,same\n" + "\n".join(rows) + "\n")
    config = root / "config.py"
    config.write_text(CONFIG.format(data=str(root / "data"), batch=BATCH, epochs=EPOCHS,
                                    pairs=str(root / "pairs" / "pairs.csv")))
    cfg = load_config(config, backend="tensorflow")
    keras.utils.set_random_seed(cfg.seed)
    initial = cfg.model().get_weights()
    result = train(cfg, verbose=0, log=None)
    assert result.finished and result.total_steps == EPOCHS * (NUM_IMAGES // BATCH)
    return {"root": root, "config": config, "images": np.stack(images), "labels": labels,
            "initial": initial, "single": _weights(result.backbone_path), "cfg": cfg}


def test_each_pipeline_reads_a_disjoint_slice_of_every_global_batch():
    steps = 23 // 4
    for pipelines in (1, 2, 4):
        streams = [np.fromiter(shard_index_dataset(23, 4, 7, 3, p, pipelines).as_numpy_iterator(), np.int64)
                   for p in range(pipelines)]
        for epoch in range(3):
            batches = global_batch_indices(23, 4, 7, epoch).numpy()
            assert sorted(batches.ravel()) == sorted(set(batches.ravel()))  # no sample twice per epoch
            for step in range(steps):
                pieces = [s.reshape(3, steps, -1)[epoch, step] for s in streams]
                np.testing.assert_array_equal(np.concatenate(pieces), batches[step])
    a, b = global_batch_indices(23, 4, 7, 0).numpy(), global_batch_indices(23, 4, 7, 1).numpy()
    assert not np.array_equal(a, b)  # reshuffled every epoch
    np.testing.assert_array_equal(a, global_batch_indices(23, 4, 7, 0).numpy())  # deterministic
    full = np.fromiter(shard_index_dataset(23, 4, 7, 3).as_numpy_iterator(), np.int64)
    late = np.fromiter(shard_index_dataset(23, 4, 7, 3, start_step=7).as_numpy_iterator(), np.int64)
    np.testing.assert_array_equal(late, full[7 * 4:])  # a resumed run starts at its data position
    with pytest.raises(ValueError, match="divisible"):
        shard_index_dataset(23, 4, 7, 3, 0, 3)


def test_single_device_run_equals_plain_fit_on_the_global_batches(setup):
    from keras_fr.data.recordio import RecordIOReader
    from keras_fr.training import FaceTrainingModel
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.recipes import SGDWithL2

    from PIL import Image
    import io

    reader = RecordIOReader(setup["root"] / "data" / "train.rec")
    decoded = []
    for key in reader.image_keys():
        label, payload = reader.read_image(key)
        decoded.append((np.asarray(Image.open(io.BytesIO(payload)), np.float32) / 127.5 - 1.0, label))
    x_all = np.stack([d[0] for d in decoded])
    y_all = np.array([d[1] for d in decoded], np.int32)
    order = np.concatenate([global_batch_indices(NUM_IMAGES, BATCH, setup["cfg"].seed, e).numpy().ravel()
                            for e in range(EPOCHS)])
    keras.utils.set_random_seed(setup["cfg"].seed)
    head = keras.initializers.RandomNormal(stddev=0.01, seed=setup["cfg"].seed)  # as the engine's
    model = FaceTrainingModel(setup["cfg"].model(), NUM_CLASSES, head_initializer=head)
    model.compile(SGDWithL2(0.1, momentum=0.9, l2=5e-4), loss=ArcFaceLoss(scale=16.0, margin=0.2))
    model.fit(x_all[order], y_all[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    _assert_same(setup["single"], model.backbone.get_weights(), setup["initial"], atol=1e-5)


MIRRORED_CHILD = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_fr.training.config import load_config
    from keras_fr.training.engine import train
    job = json.loads(sys.argv[1])
    for overrides in job:
        stop = overrides.pop("stop_after_steps", None)
        result = train(load_config(overrides.pop("config"), overrides=overrides), stop_after_steps=stop,
                       verbose=0, log=None)
        assert result.num_replicas == (1 if overrides["strategy"] == "none" else 2), result.num_replicas
    """
)


def test_mirrored_over_two_logical_cpus_matches_single_device(setup):
    root = setup["root"]
    job = [
        {"config": str(setup["config"]), "strategy": "mirrored", "output": str(root / "mirrored")},
        {"config": str(setup["config"]), "strategy": "mirrored", "output": str(root / "mirrored_unsynced"),
         "sync_batchnorm": False},
        # A checkpoint written on one device (mid-epoch) resumes on two replicas.
        {"config": str(setup["config"]), "strategy": "none", "output": str(root / "switched"), "stop_after_steps": 7},
        {"config": str(setup["config"]), "strategy": "mirrored", "output": str(root / "switched")},
    ]
    proc = subprocess.run([sys.executable, "-c", MIRRORED_CHILD, json.dumps(job)], capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same(_weights(root / "mirrored" / "backbone.keras"), setup["single"], setup["initial"])
    assert "pairs_accuracy" in (root / "mirrored" / "log.csv").read_text().splitlines()[0]
    # Per-replica batch statistics (4 images each) are another computation: the test can tell.
    _assert_same(_weights(root / "switched" / "backbone.keras"), setup["single"], setup["initial"])
    unsynced = _weights(root / "mirrored_unsynced" / "backbone.keras")
    assert max(float(np.max(np.abs(u - s))) for u, s in zip(unsynced, setup["single"])) > 10 * ATOL


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


WORKER_CHILD = textwrap.dedent(
    """
    import sys
    from keras_fr.training.config import load_config
    from keras_fr.training.engine import train
    result = train(load_config(sys.argv[1], overrides={"strategy": "multiworker", "output": sys.argv[2]}),
                   verbose=0, log=None)
    assert result.num_replicas == 2 and result.finished, result
    """
)


def test_two_worker_cluster_matches_single_device(setup):
    root = setup["root"]
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        output = root / ("multiworker" if index == 0 else "multiworker_1")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER_CHILD, str(setup["config"]), str(output)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=_env(TF_CONFIG=json.dumps(tf_config)),
        ))
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    _assert_same(_weights(root / "multiworker" / "backbone.keras"), setup["single"], setup["initial"])
    assert "pairs_accuracy" in (root / "multiworker" / "log.csv").read_text().splitlines()[0]
    assert not (root / "multiworker_1" / "backbone.keras").exists()  # only the chief writes


JAX_CHILD = textwrap.dedent(
    """
    import json, sys
    import jax, keras
    assert keras.backend.backend() == "jax" and jax.device_count() == 2, jax.devices()
    from keras_fr.training.config import load_config
    from keras_fr.training.engine import train
    import numpy as np
    job = json.loads(sys.argv[1])
    for overrides in job:
        train(load_config(overrides.pop("config"), overrides=overrides), verbose=0, log=None)
        keras.distribution.set_distribution(None)
    cfg = load_config(sys.argv[2])
    keras.utils.set_random_seed(cfg.seed)  # the engine's initialization, on JAX's generator
    np.savez(sys.argv[3], *cfg.model().get_weights())
    """
)


def test_jax_data_parallel_over_two_devices_matches_one_device(setup):
    pytest.importorskip("jax")
    root = setup["root"]
    job = [
        {"config": str(setup["config"]), "strategy": "none", "output": str(root / "jax_none")},
        {"config": str(setup["config"]), "strategy": "data_parallel", "output": str(root / "jax_dp")},
    ]
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    env["KERAS_BACKEND"] = "jax"
    initial = root / "jax_initial.npz"
    proc = subprocess.run([sys.executable, "-c", JAX_CHILD, json.dumps(job), str(setup["config"]), str(initial)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(initial) as saved:
        jax_initial = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    one = _weights(root / "jax_none" / "backbone.keras")
    _assert_same(_weights(root / "jax_dp" / "backbone.keras"), one, jax_initial)


SHARDED_CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_fr.layers.margin import MarginHead
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.sharded_partial_fc import sample_shard, shard_rows, sharded_margin_loss

    rng = np.random.default_rng(0)
    B, D, C = 8, 6, 40
    emb = rng.normal(size=(B, D)).astype("float32")
    kernel = rng.normal(size=(C, D)).astype("float32")
    labels = np.array([3, 39, 0, -1, 27, 3, 25, 11], np.int32)
    loss_fn = ArcFaceLoss(scale=16.0, margin=0.3)

    # Reference: the full head (MarginHead holds the transposed centres) and the loss, one device.
    head = MarginHead(C)
    head.build((None, D))
    head.kernel.assign(kernel.T)
    e, k = tf.constant(emb), head.kernel
    with tf.GradientTape() as tape:
        tape.watch(e)
        ref = loss_fn(labels, head(e))
    ref_ge, ref_gk = tape.gradient(ref, [e, k])
    ref_gk = tf.transpose(ref_gk)

    out = {}
    for R in (1, 2):
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(R)],
                                                  cross_device_ops=tf.distribute.ReductionToOneDevice())
        per = B // R
        def values(ctx, R=R, per=per):
            r = ctx.replica_id_in_sync_group
            start, stop = shard_rows(C, R, r)
            return (tf.constant(emb[r * per:(r + 1) * per]), tf.constant(labels[r * per:(r + 1) * per]),
                    tf.constant(kernel[start:stop]))
        inputs = strategy.experimental_distribute_values_from_function(values)

        def step(e_local, y_local, shard, R=R, rate=1.0):
            ctx = tf.distribute.get_replica_context()
            r = tf.get_static_value(ctx.replica_id_in_sync_group)
            start, stop = shard_rows(C, R, int(r))
            with tf.GradientTape() as tape:
                tape.watch([e_local, shard])
                e_all = ctx.all_gather(e_local, axis=0)
                y_all = ctx.all_gather(y_local, axis=0)
                idx, local = sample_shard(y_all, start, stop, rate, 0, r, 3)
                loss = sharded_margin_loss(loss_fn, e_all, y_all, tf.gather(shard, idx), local)
                scaled = loss / R  # as Keras scales a replica's loss under tf.distribute
            ge, gs = tape.gradient(scaled, [e_local, shard])
            gs = tf.convert_to_tensor(gs)
            return loss, ge, gs, idx + start, local

        loss, ge, gs, _, _ = strategy.run(step, args=inputs)
        local = strategy.experimental_local_results
        out[R] = {
            "loss": max(abs(float(v) - float(ref)) for v in local(loss)),
            "grad_embeddings": float(np.max(np.abs(np.concatenate([v.numpy() for v in local(ge)]) - ref_ge.numpy()))),
            "grad_centres": float(np.max(np.abs(np.concatenate([v.numpy() for v in local(gs)]) - ref_gk.numpy()))),
            "scale": [float(ref), float(np.abs(ref_ge).max()), float(np.abs(ref_gk).max())],
        }
        # Sampled (rate 0.4): each shard keeps its positives; the loss is the full head's restricted to the
        # union of the shards' sampled classes, with the labels remapped into it.
        sloss, _, _, ids, locs = strategy.run(lambda *a: step(*a, rate=0.4), args=inputs)
        ids = [v.numpy() for v in local(ids)]
        union = np.concatenate(ids)
        positives = set(labels[labels >= 0].tolist())
        for r, rows in enumerate(ids):
            start, stop = shard_rows(C, R, r)
            mine = {c for c in positives if start <= c < stop}
            assert mine <= set(rows.tolist()), (r, mine, rows)
            assert len(rows) == max(int(0.4 * (stop - start)), len(mine)), (r, rows)
        remapped = np.where(labels >= 0, np.searchsorted(union, np.maximum(labels, 0)), -1)
        cos = tf.gather(head(e), union, axis=1)
        restricted = float(loss_fn(remapped, cos))
        out[R]["sampled_loss"] = max(abs(float(v) - restricted) for v in local(sloss))
        out[R]["sampled_classes"] = int(union.size)
    print("RESULT " + json.dumps(out))
    """
)


def test_sharded_partial_fc_equals_the_full_head_on_one_and_two_replicas():
    """Class centres sharded over 1 and 2 replicas (logical CPUs): at sample rate 1.0 the loss and the
    gradients (embeddings, centres) equal MarginHead + ArcFaceLoss on one device; at 0.4 each shard
    keeps its positives and the loss is the full head's restricted to the union of the sampled classes."""
    proc = subprocess.run([sys.executable, "-c", SHARDED_CHILD], capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    for replicas in ("1", "2"):
        r = result[replicas]
        loss_scale, emb_scale, centre_scale = r["scale"]
        assert r["loss"] <= 1e-5 * loss_scale, r
        assert r["grad_embeddings"] <= 1e-5 * emb_scale, r
        assert r["grad_centres"] <= 1e-5 * centre_scale, r
        assert r["sampled_loss"] <= 1e-5 * loss_scale, r
        assert r["sampled_classes"] == 16, r  # int(0.4 * 40), positives included, not all 40
