"""Keras callbacks for face recognition training."""

import numpy as np
import keras

from keras_fr.evaluation import extract_embeddings, verify_pairs
from keras_fr.evaluation import read_pairs


class VerificationCallback(keras.callbacks.Callback):
    """Measure verification accuracy on a pair set at the end of training epochs.

    Every ``every_n_epochs`` epochs the pair set is embedded with the model being trained (its
    ``.backbone`` when it has one, as ``keras_fr.training.FaceTrainingModel`` does, or the given
    ``embedding_model``) and scored with insightface's 10-fold protocol
    (:func:`keras_fr.evaluation.verify_pairs`). The results are written into the epoch's ``logs``, so they
    land in the ``History`` returned by ``fit`` (and in any later callback: ``EarlyStopping``,
    ``ModelCheckpoint(monitor="val_accuracy")``, ``CSVLogger``)::

        {name}_accuracy, {name}_accuracy_std, {name}_threshold, {name}_val, {name}_far, {name}_auc

    Epochs that are skipped get no entry (as with ``validation_freq``). The pairs are read once; the
    images are decoded batch by batch at every evaluation.

    Args:
        pairs_source: a folder with ``pairs.txt``, a ``.txt``/``.csv``/``.bin`` file, or a
            :class:`keras_fr.evaluation.PairSet`.
        every_n_epochs: evaluate after epochs ``every_n_epochs``, ``2 * every_n_epochs``, ...
        batch_size: images per embedding batch.
        flip: flip test-time augmentation (doubles the cost; off by default during training).
        name: prefix of the logged keys.
        embedding_model: the model that maps images to embeddings; default ``model.backbone`` if the
            trained model has that attribute, else the trained model itself.
        nfolds: folds of the protocol.
        verbose: 1 prints one line per evaluation, 0 is silent.

    Raises:
        ValueError: if ``every_n_epochs`` or ``batch_size`` is not a positive integer, or ``name`` is empty.

    Example:
        >>> cb = VerificationCallback("../shared/data/celeba299/pairs_test.csv", name="celeba")  # doctest: +SKIP
        >>> history = training_model.fit(dataset, epochs=5, callbacks=[cb])  # doctest: +SKIP
        >>> history.history["celeba_accuracy"]  # doctest: +SKIP
    """

    def __init__(
        self,
        pairs_source,
        every_n_epochs=1,
        batch_size=64,
        flip=False,
        name="val",
        embedding_model=None,
        nfolds=10,
        verbose=1,
    ):
        super().__init__()

        for arg, value in (("every_n_epochs", every_n_epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty string; got {name!r}.")
        self.pairs = read_pairs(pairs_source)
        if len(self.pairs) < nfolds:
            raise ValueError(f"`pairs_source` has {len(self.pairs)} pairs, fewer than `nfolds`={nfolds}.")
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = int(batch_size)
        self.flip = bool(flip)
        self.name = name
        self.embedding_model = embedding_model
        self.nfolds = nfolds
        self.verbose = verbose
        self.last_result = None

    def _embedder(self):
        if self.embedding_model is not None:
            return self.embedding_model
        backbone = getattr(self.model, "backbone", None)
        return backbone if backbone is not None else self.model

    def evaluate(self):
        """Embed the pairs with the current weights and return the :class:`VerificationResult`."""

        emb = extract_embeddings(
            self._embedder(), self.pairs.images, batch_size=self.batch_size, flip=self.flip, verbose=0
        )
        p = self.pairs.pairs
        return verify_pairs(emb[p[:, 0]], emb[p[:, 1]], self.pairs.issame, nfolds=self.nfolds, normalize=False)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        result = self.evaluate()
        self.last_result = result
        values = {
            "accuracy": result.accuracy,
            "accuracy_std": result.accuracy_std,
            "threshold": result.threshold,
            "val": result.val,
            "far": result.far,
            "auc": result.auc,
        }
        if logs is not None:
            for key, value in values.items():
                logs[f"{self.name}_{key}"] = float(value)
        if self.verbose:
            print(
                f"\nEpoch {epoch + 1}: {self.name} verification accuracy {result.accuracy * 100:.2f}% "
                f"+- {result.accuracy_std * 100:.2f} ({len(self.pairs)} pairs)"
            )
