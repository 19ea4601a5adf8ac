"""PartialFC with the class centres sharded over replicas: the loss side (issue 16, in progress).

Replica ``r`` of ``R`` owns the contiguous rows ``shard_rows(C, R, r)`` of the ``(C, D)`` centres
(about ``C/R`` each). Per step, inside ``strategy.run`` (``tf.distribute``):

1. the replicas' embeddings and labels are all-gathered into the global batch (``B``);
2. each replica samples rows of its own shard (``sample_shard``): every row that is the class of a
   sample of the global batch, plus negatives drawn uniformly without replacement from ``(seed, r,
   step)``, ``max(int(rate * C_r), P_r)`` rows in all (``P_r`` = positives on the shard);
3. ``sharded_margin_loss`` computes the cosine logits of the global batch against those rows, puts the
   margin (``CombinedMarginLoss.margin_logits``) on the targets that live on this shard, and the
   softmax cross-entropy over all shards: the row maximum (an all-gather, no gradient), then
   all-reduces of the sum of exponentials and of the target logit (from the owning shard).

Every replica returns the same global loss (mean over labelled samples). Differentiated per replica
after dividing by ``R`` (what Keras does to a replica's loss under ``tf.distribute``), the gradient
with respect to the replica's own embeddings is its slice of the global gradient (the gradient of
``all_gather`` sums the replicas' contributions) and the gradient with respect to its sampled rows
is theirs in the global gradient: the row gradients never leave the replica. At sample rate 1.0
this is the full margin head's loss and gradient on one replica and on several (tested).

Not done yet: the per-replica centre variables inside a ``keras.Model`` (creation, the row-wise
update of ``keras_fr.layers.PartialFC.apply_row_update`` per shard, checkpointing the shards) and its
use by ``keras-fr train``; JAX.
"""

import tensorflow as tf


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
