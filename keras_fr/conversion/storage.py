"""Writing a converted model's weights, optionally with float16 storage for the kernels.

A ``.weights.h5`` file written by Keras stores every variable in its own dtype (float32 here). For
publishing, :func:`save_weights` can store the kernels (every variable with two or more dimensions:
convolution and dense weights, which are nearly all of a network's bytes) as float16 and keep the
vectors (biases, BatchNorm scales, offsets and running statistics, PReLU slopes) in float32. Keras
reads such a file into float32 variables unchanged (``load_weights`` casts on assignment), so a user
sees no difference but a file of about half the size. Rounding a kernel to float16 changes each
weight by at most 2**-11 of its magnitude; how much that moves the embeddings is measured against the
float32 model (``keras-fr convert --storage-dtype float16`` prints and checks it) rather than assumed.
"""

import h5py
import numpy as np

from keras_fr._atomic import atomic_path

STORAGE_DTYPES = ("float32", "float16")


def _rewrite_kernels(group, dtype):
    count = 0
    for name in list(group.keys()):
        item = group[name]
        if isinstance(item, h5py.Group):
            count += _rewrite_kernels(item, dtype)
        elif item.dtype == np.float32 and item.ndim >= 2:
            data = item[()]
            finite = np.abs(data[np.isfinite(data)])
            if finite.size and float(finite.max()) > float(np.finfo(dtype).max):
                raise ValueError(f"{item.name}: values up to {float(finite.max()):.3g} do not fit {dtype}")
            del group[name]
            group.create_dataset(name, data=data.astype(dtype))
            count += 1
    return count


def save_weights(model, path, storage_dtype="float32"):
    """Save ``model``'s weights to ``path`` (``.weights.h5``) atomically.

    Args:
        model: a Keras model.
        path: the output file; it must end in ``.weights.h5``.
        storage_dtype: ``"float32"`` (Keras' own file) or ``"float16"`` (kernels of two or more
            dimensions stored as float16, vectors kept float32).

    Returns:
        The number of variables stored as float16 (0 for float32).
    """
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}; got {storage_dtype!r}")
    if not str(path).endswith(".weights.h5"):
        raise ValueError(f"path must end in .weights.h5; got {str(path)!r}")
    count = 0
    with atomic_path(path) as tmp:
        model.save_weights(tmp, overwrite=True)
        if storage_dtype != "float32":
            with h5py.File(tmp, "r+") as f:
                count = _rewrite_kernels(f, np.dtype(storage_dtype))
            # h5py leaves the deleted datasets' space in the file: copy to a compact file.
            with atomic_path(tmp) as packed:
                with h5py.File(tmp, "r") as src, h5py.File(packed, "w") as dst:
                    for key, value in src.attrs.items():
                        dst.attrs[key] = value
                    for key in src:
                        src.copy(src[key], dst, name=key)
    return count
