"""Export a face recognition model to TFLite and ONNX, then run the files as a deployment would.

    python examples/export_and_run.py                                   # MSConvResNet50, both formats
    python examples/export_and_run.py --model iresnet50 --weights r50.weights.h5 --output-dir out/
    python examples/export_and_run.py --model msconv_resnet26 --image-size 64 --formats onnx   # tiny

keras_fr.export.to_tflite / to_onnx write the file and verify it against Keras before keeping it
(builtin TFLite operators only; ONNX with a dynamic batch). This script then loads each file with the
plain runtime a phone or a server uses (the LiteRT interpreter, ONNX Runtime), feeds it preprocessed
faces (RGB [0, 255] -> [-1, 1], NHWC) and compares the embeddings with Keras once more.
"""

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_fr.applications import count_parameters, preprocess_input  # noqa: E402
from keras_fr.cli._common import MODELS, build_model  # noqa: E402


def run_tflite_file(path, x):
    """Run a .tflite file on a float32 NHWC batch with the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, x.shape)  # the batch dimension is dynamic
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def run_onnx_file(path, x):
    """Run a .onnx file on a float32 NHWC batch with ONNX Runtime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="msconv_resnet50", choices=sorted(MODELS))
    parser.add_argument("--weights", default=None, help="preset tag or .weights.h5/.keras file")
    parser.add_argument("--image-size", type=int, default=112,
                        help="input size (MSConv networks accept >= 32; IResNet/LGAF need 112)")
    parser.add_argument("--formats", nargs="+", default=["tflite", "onnx"], choices=["tflite", "onnx"])
    parser.add_argument("--batch", type=int, default=3, help="faces in the comparison batch")
    parser.add_argument("--output-dir", default=None, help="keep the files here (default: temporary)")
    args = parser.parse_args(argv)

    from keras_fr import export
    from keras_fr.cli.demo import synthetic_faces

    kwargs = {} if args.image_size == 112 else {"input_shape": (args.image_size, args.image_size, 3)}
    model = build_model(args.model, args.weights, **kwargs)
    print(f"{model.name}: {count_parameters(model):,} parameters (PyTorch-comparable count), "
          f"weights: {args.weights or 'RANDOM'}")
    faces, _ = synthetic_faces(args.batch, 1, image_size=args.image_size, seed=4)
    x = np.asarray(preprocess_input(faces), dtype=np.float32)
    reference = np.asarray(model(x, training=False))

    folder = args.output_dir or tempfile.mkdtemp(prefix="keras-fr-export-")
    os.makedirs(folder, exist_ok=True)
    ok = True
    try:
        for fmt in args.formats:
            path = os.path.join(folder, f"{model.name}.{fmt}")
            # 1. Export: the file is verified against Keras before it is kept.
            exporter = export.to_tflite if fmt == "tflite" else export.to_onnx
            report = exporter(model, path)
            print(f"{fmt}: {path} ({report.size_bytes / 2**20:.1f} MB), verified on export: "
                  f"max |diff| {report.max_abs_diff:.2e}, min cosine {report.min_cosine:.6f}")
            # 2. Run it with the deployment runtime.
            out = (run_tflite_file if fmt == "tflite" else run_onnx_file)(path, x)
            diff = float(np.max(np.abs(out - reference)))
            cosine = np.sum(out * reference, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))
            print(f"  ran it: output {out.shape}, max |diff| vs Keras {diff:.2e}, min cosine {cosine.min():.6f}")
            ok &= bool(cosine.min() >= 0.99999)
    finally:
        if not args.output_dir:
            shutil.rmtree(folder, ignore_errors=True)
    print("parity OK" if ok else "MISMATCH between the exported file and Keras")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
