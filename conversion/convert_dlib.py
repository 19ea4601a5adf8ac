"""Convert dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to Keras.

Reads the ``.dat`` with keras_fr's own NumPy reader (no dlib needed), fills
``keras_fr.applications.DlibResNet``, checks that every parameter value of the file was used once,
and writes the ``.weights.h5`` atomically (a temporary file in the same folder, then a rename).
With ``--manifest`` it also writes the preset manifest (sha256 of the written file included).

Usage:

    python conversion/convert_dlib.py --output weights/dlib_resnet_dlib_v1.weights.h5 \
        --manifest weights/dlib_resnet_dlib_v1.json

The ``.dat`` comes from the PyPI package ``face_recognition_models`` (CC0), found without importing
it; ``--dat PATH`` reads another copy.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

COMMAND = ("python conversion/convert_dlib.py --output weights/dlib_resnet_dlib_v1.weights.h5 "
           "--manifest weights/dlib_resnet_dlib_v1.json")


def _kind(layer):
    import keras

    from keras_fr.applications.dlib_resnet import DlibAffine

    if isinstance(layer, DlibAffine):
        return "affine"
    if isinstance(layer, keras.layers.Conv2D):
        return "con"
    if isinstance(layer, keras.layers.Dense):
        return "fc"
    return type(layer).__name__


def convert(dat_path, output):
    """Build the Keras model from ``dat_path``, save it to ``output``; return (model, network)."""
    import numpy as np

    from keras_fr.applications import dlib_resnet
    from keras_fr.conversion import dlib_dat

    network = dlib_dat.read_dlib_dat(dat_path)
    mean = np.asarray(network.input["mean_rgb"], dtype=np.float32)
    if not np.array_equal(mean, np.asarray(dlib_resnet.MEAN_RGB, dtype=np.float32)):
        raise SystemExit(
            f"{dat_path}: input mean {tuple(mean)} differs from dlib_resnet.MEAN_RGB "
            f"{dlib_resnet.MEAN_RGB}; preprocess_input would not match this file."
        )
    model = dlib_resnet.DlibResNet(weights=None)
    assigned = dlib_dat.fill_keras_model(model, network, _kind)
    if assigned != network.parameter_values or assigned != network.values_read:
        raise SystemExit(
            f"{dat_path}: assigned {assigned} values, the file holds {network.values_read} "
            f"({network.parameter_values} in parameter tensors)."
        )
    if not output.endswith(".weights.h5"):
        raise SystemExit(f"--output must end in .weights.h5; got {output!r}.")
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".weights.h5", dir=folder)
    os.close(handle)
    try:
        model.save_weights(tmp, overwrite=True)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a committed file should be readable
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return model, network


def write_manifest(path, weights_file):
    """Write the preset manifest for ``weights_file`` (schema of the other files in weights/)."""
    with open(weights_file, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    manifest = {
        "model": "dlib_resnet",
        "tag": "dlib_v1",
        "file": os.path.basename(weights_file),
        "description": "dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1), "
                       "converted weight for weight.",
        "source": {
            "public": True,
            "checkpoint": "dlib_face_recognition_resnet_model_v1.dat",
            "where": "PyPI face_recognition_models 0.3.0 (models/); trained by Davis King with dlib "
                     "(http://dlib.net, examples/dnn_face_recognition_ex.cpp)",
            "format": "dlib DNN serialization (read by keras_fr.conversion.dlib_dat, no dlib needed)",
        },
        "conversion": {
            "command": COMMAND,
            "notes": "dlib filters (out, in, kh, kw) -> Keras (kh, kw, in, out); affine gamma/beta "
                     "as stored; fc_no_bias weights (256, 128) as stored. Every one of the "
                     "file's 5,614,592 parameter values is used once.",
        },
        "license": {
            "summary": "CC0 1.0 (public domain)",
            "details": "The dlib face recognition model is released into the public domain (CC0) "
                       "by Davis King; source: face_recognition_models 0.3.0 / dlib.",
        },
        "metrics": {
            "paper_reported": {"lfw": 99.38},
            "paper_reported_note": "LFW accuracy published with the model (dlib.net, "
                                   "dnn_face_recognition_ex.cpp).",
            "measured_here": {},
        },
        "sha256": digest,
        "url": "",
        "published": True,
        "embedding_size": 128,
        "input": {
            "color": "RGB",
            "range": [round((0 - 122.782) / 256, 6), round((255 - 104.298) / 256, 6)],
            "size": [150, 150],
            "alignment": "dlib face chip, 150 px, padding 0.25",
            "preprocess": "keras_fr.applications.dlib_resnet.preprocess_input: (x - mean_rgb) / 256",
            "mean_rgb": [122.782, 117.001, 104.298],
        },
    }
    handle, tmp = tempfile.mkstemp(suffix=".json", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(handle, "w") as out:
        json.dump(manifest, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return manifest


def main(argv=None):
    from keras_fr.conversion import dlib_dat

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the .weights.h5 file to write")
    parser.add_argument("--manifest", help="also write the preset manifest (JSON) here")
    parser.add_argument("--dat", help="the dlib .dat file (default: from face_recognition_models)")
    args = parser.parse_args(argv)
    dat = args.dat or dlib_dat.find_face_recognition_models_file()
    if dat is None:
        parser.error("face_recognition_models is not installed; give --dat PATH")
    _, network = convert(dat, args.output)
    print(f"{dat}: {len(network.tensors)} tensors, {network.values_read} values -> {args.output}")
    if args.manifest:
        write_manifest(args.manifest, args.output)
        print(f"manifest -> {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
