"""The training engine behind ``keras-fr train``: one config -> data, model, strategy, fit, checkpoints.

Data order (``global_batch_indices``): epoch ``e`` is a permutation of the ``N`` samples drawn from
``(seed, e)`` alone (``tf.random.experimental.stateless_shuffle``); global step ``s`` of the epoch takes
positions ``[s*G, (s+1)*G)`` of it (``G`` = the global batch; the last ``N mod G`` samples of each
permutation are left out of that epoch). Input pipeline ``p`` of ``P`` (one per worker under
``tf.distribute``, one per process on JAX) reads only the contiguous ``G/P`` slice ``p`` of every
global batch, so the workers' shards are disjoint, their union is the global batch, and the order
depends only on the seed: not on the number of workers, which is what lets a checkpoint resume on
another number of workers.

Checkpoints (``<output>/checkpoint/``): the weights with the optimizer state
(``ckpt-<step>.weights.h5``) and ``state.json`` (the data position: global steps done), written by the
chief only, each file atomically (``keras_fr._atomic``), ``state.json`` last. A run started again
with the same config and output reloads them and rebuilds the input pipeline at that step, so the
rest of the run sees exactly the batches it would have seen (mid-epoch included). Keras'
``BackupAndRestore`` (``keras_fr.training.models.resume_callback``) restores weights and epoch but
not the position inside an epoch, writes from every worker and not atomically, and tells the epoch
only after the dataset is built, so it is not used here.

Strategies: ``none`` (one device), ``mirrored`` (``tf.distribute.MirroredStrategy``, all local
devices), ``multiworker`` (``tf.distribute.MultiWorkerMirroredStrategy``, workers from ``TF_CONFIG``),
``data_parallel`` (``keras.distribution.DataParallel`` on JAX, all devices; several processes after
``jax.distributed`` initialization, see ``docs/training_at_scale.md``).
"""

import dataclasses
import json
import math
import os
import time

import numpy as np

from keras_fr._atomic import atomic_path, write_text
from keras_fr.training.config import ConfigError, TrainConfig, load_config

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


# ----------------------------------------------------------------------------------------------------
# Data: the global order and each pipeline's shard.


def global_batch_indices(num_items, batch_size, seed, epoch):
    """Sample indices of every global batch of ``epoch``: int64 tensor ``(steps_per_epoch, batch_size)``."""
    import tensorflow as tf

    steps = num_items // batch_size
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_items, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    )
    return tf.reshape(order[: steps * batch_size], (steps, batch_size))


def shard_index_dataset(num_items, batch_size, seed, epochs, pipeline=0, num_pipelines=1, start_step=0):
    """The flat stream of sample indices input pipeline ``pipeline`` of ``num_pipelines`` reads.

    Per global step it yields that pipeline's contiguous ``batch_size // num_pipelines`` slice of the
    global batch, from global step ``start_step`` to the end of ``epochs`` epochs.

    Raises:
        ValueError: ``batch_size`` not divisible by ``num_pipelines``, or fewer items than one batch.
    """
    import tensorflow as tf

    if batch_size % num_pipelines:
        raise ValueError(
            f"the global batch size {batch_size} must be divisible by the {num_pipelines} input pipelines."
        )
    steps = num_items // batch_size
    if steps < 1:
        raise ValueError(f"batch size {batch_size} is larger than the {num_items} training images.")
    local = batch_size // num_pipelines
    first_epoch, skip = divmod(int(start_step), steps)

    def epoch_shard(epoch):
        batches = global_batch_indices(num_items, batch_size, seed, epoch)
        mine = batches[:, pipeline * local:(pipeline + 1) * local]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(mine, [-1]))

    return (
        tf.data.Dataset.range(first_epoch, epochs)
        .flat_map(epoch_shard)
        .skip(skip * local)
    )


@dataclasses.dataclass
class DataSource:
    """Training samples addressed by index: ``load(index) -> (image, label)`` as a tf.data map."""

    num_items: int
    num_classes: int
    load: object
    description: str


def open_data(data, image_size):
    """A :class:`DataSource` for the config's ``data`` (image folder or insightface RecordIO)."""
    import tensorflow as tf

    from keras_fr.data.folder import decode_and_resize

    size = (image_size, image_size)
    if data["type"] == "folder":
        from keras_fr.data.folder import scan_image_folder, split_identities

        classes = data["classes"]
        if data["split_csv"]:
            classes = split_identities(data["split_csv"], data["split"])
        info = scan_image_folder(data["path"], classes=classes, verify=data["verify"], on_error="skip")
        paths = tf.constant(info.paths)
        labels = tf.constant(info.labels, tf.int32)

        def load(index):
            image = decode_and_resize(tf.io.read_file(tf.gather(paths, index)), size)
            return image, tf.gather(labels, index)

        num_classes = data["num_classes"] or info.num_classes
        if num_classes < info.num_classes:
            raise ConfigError(
                f"config field `data.num_classes` is {num_classes} but {data['path']!r} holds "
                f"{info.num_classes} identities."
            )
        return DataSource(info.num_images, num_classes, load, f"image folder {data['path']}: {info.summary()}")

    from keras_fr.data.recordio import RecordIOReader, _resolve, read_property

    rec = _resolve(data["path"])
    reader = RecordIOReader(rec)
    keys = np.asarray(reader.image_keys(), np.int64)
    if keys.size == 0:
        raise ValueError(f"{rec!r} holds no image records.")
    prop = os.path.join(os.path.dirname(rec), "property")
    num_classes = data["num_classes"] or (read_property(prop)[0] if os.path.isfile(prop) else None)
    if num_classes is None:
        raise ConfigError(
            f"config field `data.num_classes` is needed: {rec!r} has no `property` file beside it."
        )
    keys_t = tf.constant(keys)

    def read(key):
        label, payload = reader.read_image(int(key))
        return np.int32(label), payload

    def load(index):
        label, payload = tf.numpy_function(read, [tf.gather(keys_t, index)], (tf.int32, tf.string), stateful=False)
        label.set_shape(())
        return decode_and_resize(payload, size), label

    return DataSource(int(keys.size), int(num_classes), load, f"RecordIO {rec}: {keys.size} images, {num_classes} classes")


def make_dataset(source, batch_size, seed, epochs, pipeline=0, num_pipelines=1, local_replicas=1, start_step=0):
    """Batches of ``batch_size // (num_pipelines * local_replicas)`` for pipeline ``pipeline``: per global
    step, ``local_replicas`` consecutive per-replica batches (what ``tf.distribute`` hands to the local
    replicas in order)."""
    import tensorflow as tf

    per_replica = batch_size // (num_pipelines * local_replicas)
    if per_replica * num_pipelines * local_replicas != batch_size:
        raise ValueError(
            f"the global batch size {batch_size} must be divisible by the number of replicas "
            f"({num_pipelines * local_replicas})."
        )
    indices = shard_index_dataset(source.num_items, batch_size, seed, epochs, pipeline, num_pipelines, start_step)
    dataset = indices.map(source.load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(per_replica, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------------------------------
# Strategy, model and checkpoint.


class _Placement:
    """What the engine needs to know about the strategy, on either backend."""

    def __init__(self, config):
        import keras

        self.backend = keras.backend.backend()
        self.kind = config.strategy
        self.tf_strategy = None
        self.num_pipelines, self.pipeline, self.local_replicas, self.is_chief = 1, 0, 1, True
        if self.backend == "tensorflow":
            import tensorflow as tf

            if self.kind == "mirrored":
                # Without GPUs MirroredStrategy would all-reduce with collective ops, whose launch order
                # can differ between CPU replicas (a shape-mismatch abort); reduce on one device instead.
                cross = None if tf.config.list_logical_devices("GPU") else tf.distribute.ReductionToOneDevice()
                self.tf_strategy = tf.distribute.MirroredStrategy(cross_device_ops=cross)
            elif self.kind == "multiworker":
                tf_config = os.environ.get("TF_CONFIG")
                if not tf_config:
                    raise ConfigError(
                        "config field `strategy` is 'multiworker' but TF_CONFIG is not set: name the "
                        "cluster and this worker's task in TF_CONFIG (docs/training_at_scale.md)."
                    )
                self.tf_strategy = tf.distribute.MultiWorkerMirroredStrategy()
                resolver = self.tf_strategy.cluster_resolver
                self.pipeline = resolver.task_id
                self.num_pipelines = len(resolver.cluster_spec().as_dict().get("worker", [1]))
                self.is_chief = resolver.task_type in ("chief", None) or (
                    resolver.task_type == "worker" and resolver.task_id == 0
                    and "chief" not in resolver.cluster_spec().as_dict()
                )
            else:
                self.tf_strategy = tf.distribute.get_strategy()
            self.num_replicas = self.tf_strategy.num_replicas_in_sync
            self.local_replicas = self.num_replicas // self.num_pipelines
        else:
            import jax

            self.num_replicas = 1
            if self.kind == "data_parallel":
                if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1") or 1) > 1:
                    # Several hosts: jax.distributed.initialize with the coordinator, process count and
                    # id from KERAS_DISTRIBUTION_JOB_ADDRESSES / _NUM_PROCESSES / _PROCESS_ID.
                    keras.distribution.initialize()
                self.num_pipelines = jax.process_count()
                self.pipeline = jax.process_index()
                self.is_chief = self.pipeline == 0
                self.num_replicas = jax.device_count()
                self.distribution = keras.distribution.DataParallel(
                    devices=jax.devices(), auto_shard_dataset=False
                )
                keras.distribution.set_distribution(self.distribution)

    def scope(self):
        import contextlib

        return self.tf_strategy.scope() if self.tf_strategy is not None else contextlib.nullcontext()

    def dataset(self, source, config, batch_size, epochs, start_step):
        args = dict(source=source, batch_size=batch_size, seed=config.seed, epochs=epochs, start_step=start_step)
        if self.tf_strategy is not None and self.kind != "none":
            def fn(context):
                return make_dataset(
                    **args, pipeline=context.input_pipeline_id, num_pipelines=context.num_input_pipelines,
                    local_replicas=self.num_replicas // context.num_input_pipelines,
                )
            return self.tf_strategy.distribute_datasets_from_function(fn)
        # JAX: each process feeds its own slice; Keras assembles the global batch over the devices.
        return make_dataset(**args, pipeline=self.pipeline, num_pipelines=self.num_pipelines)


def build_backbone(config, image_size=None):
    """The config's backbone (random or ``model.weights`` initialization)."""
    import keras

    if callable(config.model):
        model = config.model()
        if not isinstance(model, keras.Model):
            raise ConfigError(f"config field `model`: the function returned {type(model).__name__}, not a keras.Model.")
        return model
    from keras_fr.applications import get_model

    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    if image_size and "input_shape" not in kwargs and "input_tensor" not in kwargs:
        kwargs["input_shape"] = (image_size, image_size, 3)
    kwargs.setdefault("weights", None)
    try:
        return get_model(config.model["name"], **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field `model`: {exc}") from None


def _synchronize_batchnorm(model):
    """A copy of a functional model whose BatchNormalization layers compute global batch statistics."""
    import keras

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except ValueError as exc:
        raise ConfigError(
            f"config field `sync_batchnorm`: the backbone cannot be cloned with synchronized "
            f"BatchNormalization (only functional or sequential models can): {exc}"
        ) from None
    copy.set_weights(model.get_weights())
    return copy


def _recipe(config, num_images, batch_size):
    from keras_fr.training.recipes import lgaf_recipe, msconv_recipe

    kwargs = dict(config.recipe_args)
    build = msconv_recipe if config.recipe == "msconv" else lgaf_recipe
    return build(num_images, batch_size=batch_size, epochs=config.epochs, seed=config.seed, **kwargs)


def _loss(config, recipe):
    from keras_fr.training.losses import ArcFaceLoss, CombinedMarginLoss, CosFaceLoss

    spec = config.loss
    if spec is None:
        return recipe.loss
    args = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == "combined":
        return CombinedMarginLoss(**args)
    if spec["type"] == "cosface":
        args.pop("gradient", None)
        return CosFaceLoss(**args)
    return ArcFaceLoss(**args)


def _sharded_head(config, placement):
    """Whether the run trains PartialFC with the centres sharded over the replicas (``mirrored``)."""
    return config.partial_fc < 1 and placement.kind == "mirrored"


def _fingerprint(config, source, batch_size, epochs, steps_per_epoch, sharded=False):
    """What must match for a checkpoint to be resumed (not the strategy or the number of workers; but a
    sharded PartialFC head, which samples per shard, resumes only as a sharded one: on any number of
    mirrored replicas)."""
    extra = {"partial_fc_sharded": True} if sharded else {}
    return {**extra,
        "model": config.describe()["model"],
        "data": {k: config.data[k] for k in ("type", "path", "image_size", "split_csv", "split", "classes")},
        "num_images": source.num_items,
        "num_classes": source.num_classes,
        "recipe": config.recipe,
        "recipe_args": config.recipe_args,
        "batch_size": batch_size,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "seed": config.seed,
        "loss": config.loss,
        "partial_fc": config.partial_fc,
        "precision": config.precision,
        "augmentation": config.augmentation,
    }


def read_state(output):
    """The checkpoint state of a run folder (``None`` when there is none)."""
    path = os.path.join(output, CHECKPOINT_DIR, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"checkpoint state {path!r} is not valid JSON ({exc}).") from None


def _json(value):
    return json.dumps(value, indent=2, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def _make_checkpointer(model, directory, fingerprint, total_steps, steps_per_epoch, start_step, every, stop_after, chief):
    import keras

    class Checkpointer(keras.callbacks.Callback):
        """Counts global steps; saves at epoch ends, every ``every`` steps and before a requested stop."""

        def __init__(self):
            super().__init__()
            self.step = start_step
            self.saved_step = start_step
            self.stopped = False

        def save(self):
            if self.saved_step == self.step:
                return
            if not chief:
                # Saving may create variables (Keras' saving makes a throwaway optimizer), which under
                # MultiWorkerMirroredStrategy is a collective: every worker saves, the others to a
                # temporary folder that is removed at once.
                import shutil
                import tempfile

                scratch = tempfile.mkdtemp(prefix="keras_fr-worker-ckpt-")
                try:
                    self.model.save_weights(os.path.join(scratch, "ckpt.weights.h5"))
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                self.saved_step = self.step
                return
            os.makedirs(directory, exist_ok=True)
            name = f"ckpt-{self.step}.weights.h5"
            with atomic_path(os.path.join(directory, name)) as tmp:
                self.model.save_weights(tmp)
            state = {"step": self.step, "epoch": self.step // steps_per_epoch, "steps_per_epoch": steps_per_epoch,
                     "random_states": [np.asarray(v.numpy()).tolist() for v in _random_states(self.model)],
                     "total_steps": total_steps, "weights": name, "finished": self.step >= total_steps,
                     "fingerprint": fingerprint, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            write_text(os.path.join(directory, STATE_FILE), _json(state))
            for old in os.listdir(directory):
                if old.startswith("ckpt-") and old.endswith(".weights.h5") and old != name:
                    os.remove(os.path.join(directory, old))
            self.saved_step = self.step

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if every and self.step % every == 0:
                self.save()
            if stop_after is not None and self.step - start_step >= stop_after and self.step < total_steps:
                self.save()
                self.stopped = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.save()

    return Checkpointer()


def _random_states(model):
    """The model's random-generator states (augmentation layers' ``SeedGenerator``s): variables that
    ``save_weights`` leaves out, so that a resumed run would draw other augmentations."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _restore_random_states(model, values):
    states = _random_states(model)
    if len(values) != len(states):
        raise ValueError(
            f"the checkpoint holds {len(values)} random-generator states but the model has {len(states)}."
        )
    for variable, value in zip(states, values):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def _logs_as_vectors(train_step):
    import tensorflow as tf

    def step(data):
        return {k: tf.reshape(v, [1]) for k, v in train_step(data).items()}

    return step


class _Embedder:
    """The training model's backbone called directly (inference mode) for the evaluation callbacks.

    Not ``predict_on_batch``: inside ``fit`` the strategy's scope is active, and Keras' predict would
    distribute the evaluation batch over the replicas (under MirroredStrategy it returned twice the
    embeddings). A direct call computes on this worker's copy of the weights."""

    def __init__(self, model):
        self.model = model

    @property
    def input_shape(self):
        return self.model.backbone.input_shape

    def __call__(self, images):
        return self.model.backbone(images, training=False)


def _make_csv_log(path, current_step):
    """One row per epoch (epoch, step, every log) in ``path``, kept across restarts. Unlike Keras'
    ``CSVLogger``, whose columns are those of the first epoch, a key that appears later (an evaluation
    every few epochs) adds a column; the file is rewritten whole each time (it is small)."""
    import csv
    import io

    import keras

    class CSVLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = []
            if os.path.isfile(path):
                with open(path, newline="") as f:
                    self.rows = list(csv.DictReader(f))

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "step": current_step()}
            row.update({k: float(np.asarray(v).reshape(-1)[0]) for k, v in (logs or {}).items()})
            self.rows.append(row)
            columns = ["epoch", "step"] + sorted({k for r in self.rows for k in r} - {"epoch", "step"})
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
            write_text(path, buffer.getvalue())

    return CSVLog()


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _tensorboard_installed():
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


@dataclasses.dataclass
class TrainResult:
    """What ``train`` did: steps, where things were written, the last epoch's logs."""

    steps_done: int
    total_steps: int
    finished: bool
    backbone_path: str
    history: dict
    output: str
    num_replicas: int


def train(config, stop_after_steps=None, verbose=2, log=print):
    """Run (or resume) the training described by ``config``.

    Args:
        config: a :class:`TrainConfig` (from :func:`keras_fr.training.config.load_config`) or a path.
        stop_after_steps: train at most this many steps in this call, checkpoint and return (run again
            to continue); for time-limited job slots and tests.
        verbose: Keras ``fit`` verbosity on the chief (2: one line per epoch).
        log: where to print progress lines (``None``: silent).

    Returns:
        A :class:`TrainResult`. The chief writes ``<output>/backbone.keras`` when the run finishes
        (``backbone_path`` is None on the other workers).

    Raises:
        ConfigError / ValueError: a wrong config, data or a checkpoint from a different run.
    """
    import keras

    if not isinstance(config, TrainConfig):
        config = load_config(config)
    log = log or (lambda *a, **k: None)
    placement = _Placement(config)  # first: MultiWorkerMirroredStrategy must start before other TF work
    if config.precision != "float32":
        keras.config.set_dtype_policy(config.precision)
    keras.utils.set_random_seed(config.seed)

    with placement.scope():
        backbone = build_backbone(config, config.data["image_size"])
    shape = backbone.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ConfigError(f"config field `model`: expected a square image input (batch, H, H, 3); got {shape}.")
    image_size = int(shape[1])
    if config.data["image_size"] not in (None, image_size):
        raise ConfigError(f"config field `data.image_size` is {config.data['image_size']} but the model takes {image_size}.")

    source = open_data(config.data, image_size)
    batch_size = config.batch_size or (128 if config.recipe == "msconv" else 512)
    if batch_size % placement.num_replicas:
        raise ConfigError(
            f"config field `batch_size` ({batch_size}) must be divisible by the {placement.num_replicas} replicas."
        )
    steps_per_epoch = source.num_items // batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"config field `batch_size` ({batch_size}) exceeds the {source.num_items} training images.")
    with placement.scope():  # the optimizer and augmentation layers belong to the strategy
        recipe = _recipe(config, steps_per_epoch * batch_size, batch_size)
    epochs = recipe.epochs
    total = epochs * steps_per_epoch
    fingerprint = _fingerprint(config, source, batch_size, epochs, steps_per_epoch, _sharded_head(config, placement))

    output = config.output
    os.makedirs(output, exist_ok=True)
    ckpt_dir = os.path.join(output, CHECKPOINT_DIR)
    state = read_state(output)
    if state is not None:
        old = state.get("fingerprint", {})
        differ = sorted(k for k in set(old) | set(fingerprint) if json.loads(_json(old.get(k))) != json.loads(_json(fingerprint.get(k))))
        if differ:
            raise ConfigError(
                f"output folder {output!r} holds a checkpoint of a different run ({', '.join(differ)} differ); "
                "use another `output` folder or delete its checkpoint/ to start afresh."
            )

    with placement.scope():
        plain_backbone = backbone
        if config.sync_batchnorm and placement.backend == "tensorflow" and placement.kind != "none":
            backbone = _synchronize_batchnorm(backbone)
        augmentation = recipe.augmentation if config.augmentation else None
        from keras_fr.training.models import FaceTrainingModel, PartialFCTrainingModel, StopOnNaN

        # Seeded: the class centres must not depend on how many random draws came before (the
        # synchronized-BatchNormalization copy of the backbone draws some under a strategy).
        head_init = keras.initializers.RandomNormal(stddev=0.01, seed=config.seed)
        if _sharded_head(config, placement):
            # The class centres and their momentum sharded over the replicas (sharded_partial_fc.py).
            from keras_fr.training.sharded_partial_fc import ShardedPartialFCTrainingModel

            model = ShardedPartialFCTrainingModel(backbone, source.num_classes, sample_rate=config.partial_fc,
                                                  seed=config.seed, augmentation=augmentation,
                                                  head_initializer=head_init)
        elif config.partial_fc < 1:
            model = PartialFCTrainingModel(backbone, source.num_classes, sample_rate=config.partial_fc,
                                           seed=config.seed, augmentation=augmentation, head_initializer=head_init)
        else:
            model = FaceTrainingModel(backbone, source.num_classes, augmentation=augmentation,
                                      head_initializer=head_init)
        model.compile(optimizer=recipe.optimizer, loss=_loss(config, recipe))
        model.optimizer.build(model.trainable_variables)
        start = 0
        if state is not None:
            model.load_weights(os.path.join(ckpt_dir, state["weights"]))
            _restore_random_states(model, state.get("random_states", []))
            start = int(state["step"])

    if placement.is_chief:
        write_text(os.path.join(output, "config.json"), _json(config.describe()))
    log(f"data: {source.description}")
    log(f"plan: {epochs} epochs x {steps_per_epoch} steps of {batch_size} images ({placement.num_replicas} "
        f"replica(s), strategy {config.strategy}); {recipe.notes}"
        + (f" Loss replaced by the config's: {config.loss}." if config.loss else ""))
    if start:
        log(f"resuming at step {start} of {total} (epoch {start // steps_per_epoch + 1}) from {ckpt_dir}")

    history = {}
    if start < total:
        checkpointer = _make_checkpointer(model, ckpt_dir, fingerprint, total, steps_per_epoch, start,
                                          config.checkpoint_every_steps, stop_after_steps, placement.is_chief)
        callbacks = [StopOnNaN(), checkpointer]
        from keras_fr.training.callbacks import VerificationCallback

        # Every worker evaluates (the same computation on the same weights), so that nothing one
        # worker does alone can fall out of step with the others' collectives; the chief logs.
        embedder = _Embedder(model)
        for entry in config.evaluation:
            callbacks.append(VerificationCallback(
                entry["path"], every_n_epochs=entry["every_n_epochs"], batch_size=entry["batch_size"],
                flip=entry["flip"], name=entry["name"], verbose=0, embedding_model=embedder,
            ))
        if placement.is_chief:
            callbacks.append(_make_csv_log(os.path.join(output, "log.csv"), lambda: checkpointer.step))
            if config.tensorboard and _tensorboard_installed():
                callbacks.append(keras.callbacks.TensorBoard(os.path.join(output, "tensorboard"), update_freq="epoch"))
            elif config.tensorboard:
                log("TensorBoard logs skipped: the `tensorboard` package is not installed (log.csv is written)")
        first_epoch, offset = divmod(start, steps_per_epoch)
        # A run resumed mid-epoch first finishes that epoch (shorter), then runs whole epochs.
        phases = []
        if offset:
            phases.append((first_epoch, first_epoch + 1, steps_per_epoch - offset))
            first_epoch += 1
        if first_epoch < epochs:
            phases.append((first_epoch, epochs, steps_per_epoch))
        if placement.kind == "multiworker":
            # Keras 3.15 peeks one batch before fit and averages it over the workers to learn its
            # shapes (Trainer._maybe_symbolic_build), which fails under MultiWorkerMirroredStrategy. The
            # model is built already; without its own strategy attribute fit takes the strategy from
            # the scope entered below and skips the peek.
            model._distribute_strategy = None
            # Keras 3.15 also averages each worker's logs with strategy.reduce(MEAN, axis=0), which
            # fails on scalars: hand them over as 1-element vectors (the mean of those is a scalar).
            model.train_step = _logs_as_vectors(model.train_step)
        step = start
        for initial_epoch, end_epoch, steps in phases:
            dataset = placement.dataset(source, config, batch_size, epochs, step)
            with placement.scope():
                fit = model.fit(dataset, initial_epoch=initial_epoch, epochs=end_epoch, steps_per_epoch=steps,
                                callbacks=callbacks, verbose=verbose if placement.is_chief else 0, shuffle=False)
            history.update({k: float(np.asarray(v[-1]).reshape(-1)[0]) for k, v in fit.history.items() if v})
            step = checkpointer.step
            if checkpointer.stopped:
                break
        checkpointer.save()
        start = checkpointer.step

    finished = start >= total
    backbone_path = os.path.join(output, "backbone.keras")
    if finished and placement.is_chief:
        if plain_backbone is not model.backbone:  # saved without synchronized BatchNormalization
            plain_backbone.set_weights(model.backbone.get_weights())
        with atomic_path(backbone_path) as tmp:
            plain_backbone.save(tmp)
        write_text(os.path.join(output, "summary.json"), _json({
            "steps": total, "epochs": epochs, "batch_size": batch_size, "num_replicas": placement.num_replicas,
            "strategy": config.strategy, "last_epoch_logs": {k: _finite(v) for k, v in history.items()},
            "backbone": "backbone.keras",
        }))
        log(f"finished: {backbone_path}")
    elif not finished:
        log(f"stopped at step {start} of {total}; run the same command again to continue")
    return TrainResult(start, total, finished, backbone_path if finished and placement.is_chief else None,
                       {k: float(v) for k, v in history.items()}, output, placement.num_replicas)
