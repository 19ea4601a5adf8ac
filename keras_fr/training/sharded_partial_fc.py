"""PartialFC with the class centres sharded over the replicas of a ``tf.distribute.MirroredStrategy``.

Replica ``r`` of ``R`` owns the contiguous rows ``shard_rows(C, R, r)`` of the ``(C, D)`` centres
(about ``C/R`` each) and their momentum, as its own variables: ``ShardedPartialFC`` creates them as
sync-on-read variables (``tf.VariableSynchronization.ON_READ``, no aggregation), whose per-replica
components live on the replicas' devices and are never synchronized; a replica reads and writes only
its own component. Components have ``ceil(C/R)`` rows (the same shape on every replica); a shard
one row shorter leaves its last row unused. Per training step (``ShardedPartialFCTrainingModel.
train_step``, inside ``strategy.run``):

1. the replicas' embeddings and labels are all-gathered into the global batch (``B``);
2. each replica samples rows of its own shard (``sample_shard``): every row that is the class of a
   sample of the global batch, plus negatives drawn uniformly without replacement from ``(seed, r,
   step)``, ``max(int(rate * C_r), P_r)`` rows in all (``P_r`` = positives on the shard);
3. ``sharded_margin_loss`` computes the cosine logits of the global batch against those rows, puts the
   margin (``CombinedMarginLoss.margin_logits``) on the targets that live on this shard, and the
   softmax cross-entropy over all shards: the row maximum (an all-gather, no gradient), then
   all-reduces of the sum of exponentials and of the target logit (from the owning shard);
4. the backbone's gradient goes to the compiled optimizer (summed over replicas as usual); the
   gradient of the sampled rows stays on the replica and updates them, and their momentum, with the
   single-replica rule (``keras_fr.layers.partial_fc.update_rows``): the other rows of the shard and
   the other shards are not touched.

Every replica returns the same global loss (mean over labelled samples). Differentiated per replica
after dividing by ``R`` (what Keras does to a replica's loss under ``tf.distribute``), the gradient
with respect to the replica's own embeddings is its slice of the global gradient (the gradient of
``all_gather`` sums the replicas' contributions) and the gradient with respect to its sampled rows
is theirs in the global gradient. At sample rate 1.0 this is the full margin head's step on one
replica and on several (tested).

Checkpoints: the layer saves the whole ``(C, D)`` kernel and momentum, assembled from the shards, in
the layout of ``keras_fr.layers.PartialFC`` (and loads by slicing its own rows), so weights files
move between the sharded and the single-replica model and between replica counts.

Scope: TensorFlow, ``MirroredStrategy`` (or no strategy: one shard) on one host; not
``MultiWorkerMirroredStrategy`` (a worker cannot read the other workers' shards to save them) nor JAX.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_fr.layers.margin import _embedding_dim
from keras_fr.layers.partial_fc import update_rows
from keras_fr.training.losses import CombinedMarginLoss
from keras_fr.training.models import PartialFCTrainingModel


def shard_rows(num_classes, num_shards, shard):
    """``(start, stop)`` of shard ``shard``'s rows: contiguous, sizes differing by at most one."""
    if not 0 <= shard < num_shards or num_classes < num_shards:
        raise ValueError(
            f"need 0 <= shard < num_shards <= num_classes; got shard {shard}, num_shards {num_shards}, "
            f"num_classes {num_classes}."
        )
    base, extra = divmod(num_classes, num_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def sample_shard(labels, start, stop, sample_rate, seed, shard, step):
    """The sampled rows of one shard and the labels remapped into them.

    Args:
        labels: the global batch's integer labels ``(B,)`` in [-1, C); -1 = ignored.
        start, stop: the shard's rows (``shard_rows``).
        sample_rate: in (0, 1].
        seed, shard, step: the sampling key.

    Returns:
        ``(rows, local)``: int32 ``(K_r,)`` sorted row offsets inside the shard (every positive of the
        shard among them), and int32 ``(B,)`` positions in ``rows`` of each sample's class, -1 where
        the class is on another shard or the label is -1.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), (-1,))
    size = stop - start
    here = tf.logical_and(labels >= start, labels < stop)
    offsets = tf.where(here, labels - start, 0)
    if sample_rate >= 1.0:
        return tf.range(size, dtype=tf.int32), tf.where(here, offsets, -1)
    key = tf.stack([tf.constant(seed, tf.int64) * 65_537 + shard, tf.cast(step, tf.int64)])
    scores = tf.random.stateless_uniform((size,), seed=key, dtype=tf.float32)
    positives = tf.boolean_mask(offsets, here)
    scores = tf.tensor_scatter_nd_update(scores, positives[:, None], tf.fill(tf.shape(positives), 2.0))
    count = tf.size(tf.unique(positives)[0])
    k = tf.minimum(tf.maximum(tf.constant(int(sample_rate * size), tf.int32), count), size)
    rows = tf.sort(tf.math.top_k(scores, k=k, sorted=False).indices)
    local = tf.cast(tf.searchsorted(rows, offsets, side="left"), tf.int32)
    return rows, tf.where(here, local, -1)


def sharded_margin_loss(loss, embeddings, labels, rows, local, epsilon=1e-12):
    """The global margin softmax loss from this replica's sampled centre rows (replica context).

    Args:
        loss: a ``keras_fr.training.losses.CombinedMarginLoss`` (ArcFace, CosFace): its margin is used.
        embeddings: the global batch's embeddings ``(B, D)`` (all-gathered).
        labels: the global labels ``(B,)``; -1 = ignored.
        rows: this replica's sampled centres ``(K_r, D)``.
        local: ``(B,)`` positions of each sample's class in ``rows``, -1 when not on this shard.

    Returns:
        The scalar mean loss over labelled samples, the same on every replica.
    """
    ctx = tf.distribute.get_replica_context()
    labels = tf.reshape(tf.cast(labels, tf.int32), (-1,))
    emb = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1, epsilon=epsilon)
    centres = tf.math.l2_normalize(tf.cast(rows, tf.float32), axis=1, epsilon=epsilon)
    logits = loss.margin_logits(local, tf.matmul(emb, centres, transpose_b=True))
    here = tf.cast(local >= 0, tf.float32)
    # The row maximum over all shards only stabilizes the exponentials: no gradient through it.
    # (tf.distribute has no MAX all-reduce: gather the replicas' row maxima and take theirs.)
    local_max = tf.stop_gradient(tf.reduce_max(logits, axis=1))
    row_max = tf.stop_gradient(tf.reduce_max(ctx.all_gather(local_max[None], axis=0), axis=0))
    sum_exp = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                             tf.reduce_sum(tf.exp(logits - row_max[:, None]), axis=1))
    target = tf.gather(logits, tf.maximum(local, 0), batch_dims=1) * here
    target = ctx.all_reduce(tf.distribute.ReduceOp.SUM, target)
    valid = tf.cast(labels >= 0, tf.float32)
    per_sample = (tf.math.log(sum_exp) + row_max - target) * valid
    return tf.math.divide_no_nan(tf.reduce_sum(per_sample), tf.reduce_sum(valid))


def _replica():
    """``(replica id, number of replicas)`` in a replica context; ``(None, R)`` in a cross-replica one."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return None, tf.distribute.get_strategy().num_replicas_in_sync
    if ctx.num_replicas_in_sync == 1:
        return 0, 1
    replica = tf.get_static_value(ctx.replica_id_in_sync_group)
    if replica is None:
        raise RuntimeError("ShardedPartialFC needs a static replica id (tf.distribute.MirroredStrategy).")
    return int(replica), ctx.num_replicas_in_sync


def _components(variable):
    """The per-replica ``tf.Variable``s of a sync-on-read variable (itself without a strategy)."""
    values = getattr(variable, "values", None)
    return tuple(values) if values is not None else (variable,)


@keras.saving.register_keras_serializable(package="keras_fr")
class ShardedPartialFC(keras.layers.Layer):
    """PartialFC class centres sharded over the replicas of the current ``tf.distribute`` strategy.

    Built inside the strategy's scope (``MirroredStrategy``; without a strategy it is one shard).
    Replica ``r`` holds rows ``shard_rows(num_classes, R, r)`` and their momentum (module docstring).

    Args:
        num_classes, sample_rate, seed, momentum, weight_decay, learning_rate, kernel_initializer,
        epsilon: as ``keras_fr.layers.PartialFC``. The initial centres are the initializer's
            ``(num_classes, D)`` matrix split into the shards (so a run starts from the same centres
            on any number of replicas; the full matrix exists once, on the host, while building).

    Called on embeddings it returns the full cosine logits ``(batch, num_classes)``: in a
    cross-replica context against the concatenated shards, in a replica context by all-gathering the
    replicas' logits. ``full_kernel()`` / ``set_full_kernel(array)`` (and the same for the momentum)
    read and write the whole matrix.
    """

    def __init__(self, num_classes, sample_rate=1.0, seed=0, momentum=0.9, weight_decay=5e-4,
                 learning_rate=None, kernel_initializer=None, epsilon=1e-12, **kwargs):
        from keras_fr.layers.partial_fc import PartialFC

        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        # The single-replica layer checks the arguments (and is not kept: it would be tracked as a
        # sublayer); its checked values and config are.
        spec = PartialFC(num_classes, sample_rate=sample_rate, seed=seed, momentum=momentum,
                         weight_decay=weight_decay, learning_rate=learning_rate,
                         kernel_initializer=kernel_initializer, epsilon=epsilon)
        for name in ("num_classes", "sample_rate", "seed", "momentum", "weight_decay", "learning_rate",
                     "kernel_initializer", "epsilon"):
            setattr(self, name, getattr(spec, name))
        self._head_config = {k: v for k, v in spec.get_config().items() if k in (
            "num_classes", "sample_rate", "seed", "momentum", "weight_decay", "learning_rate",
            "kernel_initializer", "epsilon")}
        self._centres = None
        self._momenta = None

    def build(self, input_shape):
        embedding_dim = _embedding_dim("ShardedPartialFC", input_shape)
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise ValueError("ShardedPartialFC runs under MirroredStrategy on one host, not MultiWorkerMirroredStrategy.")
        self.num_shards = strategy.num_replicas_in_sync
        if self.num_classes < self.num_shards:
            raise ValueError(
                f"`num_classes` ({self.num_classes}) must be at least the number of replicas ({self.num_shards})."
            )
        self.embedding_dim = embedding_dim
        self.shards = [shard_rows(self.num_classes, self.num_shards, r) for r in range(self.num_shards)]
        self.shard_size = max(stop - start for start, stop in self.shards)
        shape = (self.shard_size, self.embedding_dim)

        def make(name):
            with tf.init_scope():
                return tf.Variable(
                    tf.zeros(shape, tf.float32), name=f"{self.name}_{name}", trainable=False,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.NONE,
                )

        self._centres = make("kernel")
        self._momenta = make("momentum_buffer") if self.momentum > 0 else None
        initial = np.asarray(self.kernel_initializer(shape=(self.num_classes, self.embedding_dim),
                                                     dtype="float32"))
        self.set_full_kernel(initial)
        del initial
        self.built = True

    # -- whole-matrix access (cross-replica context) ------------------------------------------------

    def _get_full(self, variable):
        parts = [np.asarray(c.numpy())[: stop - start]
                 for c, (start, stop) in zip(_components(variable), self.shards)]
        return np.concatenate(parts, axis=0)

    def _set_full(self, variable, value):
        value = np.asarray(value, np.float32)
        if value.shape != (self.num_classes, self.embedding_dim):
            raise ValueError(
                f"expected an array of shape {(self.num_classes, self.embedding_dim)}; got {value.shape}."
            )
        for component, (start, stop) in zip(_components(variable), self.shards):
            component[: stop - start].assign(value[start:stop])  # rows past the shard's end stay zero

    def full_kernel(self):
        """The ``(num_classes, D)`` centres, assembled from the shards (numpy)."""
        return self._get_full(self._centres)

    def set_full_kernel(self, value):
        self._set_full(self._centres, value)

    def full_momentum(self):
        """The ``(num_classes, D)`` momentum buffer (numpy), or None without momentum."""
        return None if self._momenta is None else self._get_full(self._momenta)

    def set_full_momentum(self, value):
        if self._momenta is None:
            raise ValueError("this ShardedPartialFC has no momentum buffer (momentum=0).")
        self._set_full(self._momenta, value)

    def shard_state_bytes(self):
        """Bytes of one replica's centre and momentum variables."""
        count = 1 if self._momenta is None else 2
        return count * self.shard_size * self.embedding_dim * 4

    # -- replica context ------------------------------------------------------------------------------

    def local_variables(self, replica):
        """``(kernel, momentum or None)``: replica ``replica``'s own ``tf.Variable``s."""
        kernel = _components(self._centres)[replica]
        momentum = None if self._momenta is None else _components(self._momenta)[replica]
        return kernel, momentum

    def _cosine(self, embeddings, rows):
        x = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1, epsilon=self.epsilon)
        w = tf.math.l2_normalize(tf.cast(rows, tf.float32), axis=1, epsilon=self.epsilon)
        return tf.matmul(x, w, transpose_b=True)

    def call(self, inputs):
        replica, count = _replica()
        if replica is None or count == 1:
            kernel = tf.concat([c[: stop - start] for c, (start, stop)
                                in zip(_components(self._centres), self.shards)], axis=0)
            return self._cosine(inputs, kernel)
        # Replica context: this replica's batch against every shard. Gather the batches, score them
        # against the own shard, gather the scores by columns and keep this replica's rows.
        ctx = tf.distribute.get_replica_context()
        batch = tf.shape(inputs)[0]
        everyone = ctx.all_gather(inputs, axis=0)
        start, stop = self.shards[replica]
        kernel = self.local_variables(replica)[0]
        local = self._cosine(everyone, kernel[: stop - start])
        pieces = ctx.all_gather(tf.pad(local, [[0, 0], [0, self.shard_size - (stop - start)]]), axis=1)
        columns = np.concatenate([np.arange(r * self.shard_size, r * self.shard_size + (e - s))
                                  for r, (s, e) in enumerate(self.shards)])
        mine = tf.gather(pieces, columns, axis=1)
        return mine[replica * batch:(replica + 1) * batch]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    # -- saving: the whole matrix, in PartialFC's layout ------------------------------------------

    def save_own_variables(self, store):
        store["0"] = self.full_kernel()
        if self._momenta is not None:
            store["1"] = self.full_momentum()

    def load_own_variables(self, store):
        expected = 1 if self._momenta is None else 2
        if len(store.keys()) != expected:
            raise ValueError(
                f"layer {self.name!r}: the weights file holds {len(store.keys())} arrays for the class "
                f"centres, expected {expected} (kernel{'' if expected == 1 else ' and momentum'})."
            )
        self.set_full_kernel(store["0"])
        if self._momenta is not None:
            self.set_full_momentum(store["1"])

    def get_config(self):
        config = super().get_config()
        config.update(self._head_config)
        return config


@keras.saving.register_keras_serializable(package="keras_fr")
class ShardedPartialFCTrainingModel(PartialFCTrainingModel):
    """A backbone followed by ``ShardedPartialFC``, for ``model.fit`` under ``MirroredStrategy``.

    Create, compile and fit it inside ``strategy.scope()``; the backbone is data-parallel as usual
    (its gradient is summed over the replicas by the compiled optimizer), the centres are sharded
    (module docstring). Arguments as ``keras_fr.training.PartialFCTrainingModel``; compile with a
    ``CombinedMarginLoss`` (ArcFace, CosFace) and no metrics, fit without sample weights. The
    centres' learning rate is the optimizer's current one unless ``head_learning_rate`` is set.

    Attributes:
        backbone: the embedding model.
        partial_fc: the ``ShardedPartialFC`` layer (same attribute name as the single-replica
            model, so weights files are interchangeable).
    """

    # Built like PartialFCTrainingModel (same arguments and config), with this head layer.
    head_layer = ShardedPartialFC

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        if not isinstance(loss, CombinedMarginLoss):
            raise ValueError(
                "ShardedPartialFCTrainingModel needs a margin loss from keras_fr.losses "
                f"(ArcFaceLoss, CosFaceLoss, CombinedMarginLoss); got {loss!r}."
            )
        if metrics:
            raise ValueError("ShardedPartialFCTrainingModel reports the loss only; `metrics` must be empty.")
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "ShardedPartialFCTrainingModel does not support loss scaling (mixed_float16); "
                "use float32 or mixed_bfloat16."
            )

    def sampled_step(self, x, y, step):
        """The forward pass and gradients of one step on this replica (replica context).

        Returns ``(loss, backbone gradients, row gradients, sampled row offsets in the shard)``; the
        loss is the global one, the gradients those of ``loss / R`` (module docstring).
        """
        head = self.partial_fc
        replica, count = _replica()
        if replica is None:
            raise RuntimeError("sampled_step runs in a replica context (inside strategy.run or fit).")
        ctx = tf.distribute.get_replica_context()
        start, stop = head.shards[replica]
        kernel, _ = head.local_variables(replica)
        variables = list(self.trainable_variables)
        with tf.GradientTape() as tape:
            embeddings = self._embed(x, training=True)
            labels = tf.reshape(tf.cast(y, tf.int32), (-1,))
            if count > 1:
                embeddings = ctx.all_gather(embeddings, axis=0)
                labels = ctx.all_gather(labels, axis=0)
            indices, local = sample_shard(labels, start, stop, head.sample_rate, head.seed, replica, step)
            rows = tf.gather(kernel, indices)
            tape.watch(rows)
            if count > 1:
                loss = sharded_margin_loss(self.loss, embeddings, labels, rows, local, head.epsilon)
            else:
                loss = self.loss(local, head._cosine(embeddings, rows))
            scaled = loss / count
        grads = tape.gradient(scaled, variables + [rows])
        return loss, grads[:-1], grads[-1], indices

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError("ShardedPartialFCTrainingModel does not take sample weights.")
        head = self.partial_fc
        replica, _ = _replica()
        loss, grads, row_grads, indices = self.sampled_step(x, y, self.optimizer.iterations)
        lr = head.learning_rate if head.learning_rate is not None else self.optimizer.learning_rate
        lr = tf.identity(tf.cast(lr, tf.float32))  # read before the optimizer step advances a schedule
        variables = list(self.trainable_variables)
        if variables:
            self.optimizer.apply(grads, variables)
        else:
            self.optimizer.iterations.assign_add(1)
        kernel, momentum = head.local_variables(replica)
        update_rows(kernel, momentum, indices, row_grads, lr, head.momentum, head.weight_decay)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        return {"loss": self._loss_tracker.result()}

    def test_step(self, data):
        raise NotImplementedError(
            "ShardedPartialFCTrainingModel trains only; evaluate the backbone (keras_fr.evaluation) instead."
        )
