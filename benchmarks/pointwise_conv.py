"""MSConvResNet50's 1x1 convolutions in a training step: convolution against matrix product.

Times ``keras_fr.layers.Conv2D`` forward and backward (output, input gradient and kernel gradient in
one traced function, as ``model.fit`` runs it) at batch 32 and 112x112 inputs, with its training step
as a matrix product (``matmul_training = True``, the library's default in bfloat16) and as Keras'
convolution (``False``), in bfloat16 (the ``mixed_bfloat16`` policy) and float32 (where the library
keeps the convolution: ``matmul_training_dtypes``; the matrix product is timed by setting it here). The shapes are the distinct 1x1 layers of
MSConvResNet50 (per stage: the units' reduce, MSConv's ``fc_d``, expand, shortcut). Each row: the median of ``--iters``
steps after 2 warm-up steps, GFLOP/s of the three products, and the largest difference between the
two formulations' outputs and gradients, relative to the largest value.

Usage:
    python benchmarks/pointwise_conv.py
    python benchmarks/pointwise_conv.py --iters 20 --dtypes bfloat16
"""

import argparse
import os
import sys
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, write_json  # noqa: E402

#: (batch, input size, input channels, output channels, stride): MSConvResNet50's 1x1 layers.
CASES = tuple((32, *case) for case in (
    # stage 1 (28x28): reduce (first unit, then the rest), MSConv's fc_d, expand, shortcut
    (28, 64, 128, 1), (28, 256, 128, 1), (28, 128, 128, 1), (28, 128, 256, 1), (28, 64, 256, 1),
    # stage 2 (28x28 in, 14x14 out)
    (28, 256, 256, 1), (14, 512, 256, 1), (14, 256, 256, 1), (14, 256, 512, 1), (28, 256, 512, 2),
    # stage 3 (14x14 in, 7x7 out)
    (14, 512, 512, 1), (7, 1024, 512, 1), (7, 512, 512, 1), (7, 512, 1024, 1), (14, 512, 1024, 2),
    # stage 4 (7x7 in, 4x4 out)
    (7, 1024, 1024, 1), (4, 2048, 1024, 1), (4, 1024, 1024, 1), (4, 1024, 2048, 1), (7, 1024, 2048, 2),
))
RESULTS = os.path.join(HERE, "results", "pointwise_conv.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=10, help="timed steps per case (default 10)")
    parser.add_argument("--dtypes", nargs="+", choices=("bfloat16", "float32"), default=["bfloat16", "float32"])
    parser.add_argument("--output", default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    _bench.check_counts(parser, args, positive=("iters",))
    import numpy as np
    import tensorflow as tf

    from keras_fr.layers.convolution import Conv2D

    print(_bench.cpu_line())
    rows = []
    rng = np.random.default_rng(0)
    for dtype in args.dtypes:
        policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
        for n, size, c_in, c_out, stride in CASES:
            x = tf.constant(rng.standard_normal((n, size, size, c_in)).astype(np.float32))
            out_size = -(-size // stride)
            upstream = tf.constant(rng.standard_normal((n, out_size, out_size, c_out)).astype(np.float32))
            layer = Conv2D(c_out, 1, strides=stride, use_bias=False, dtype=policy)
            layer.build((None, None, None, c_in))

            @tf.function
            def step(x, upstream, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x, training=True)
                    loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
                dx, dk = tape.gradient(loss, [x, layer.kernel.value])
                return y, dx, dk

            times, outputs = {}, {}
            for form, matmul in (("conv", False), ("matmul", True)):
                Conv2D.matmul_training = matmul
                Conv2D.matmul_training_dtypes = (dtype,)  # the library applies it to bfloat16 only
                step = tf.function(step.python_function)  # traced anew: the switch is read when tracing
                for _ in range(2):
                    result = step(x, upstream)
                outputs[form] = [np.asarray(tf.cast(t, tf.float64)) for t in result]
                samples = []
                for _ in range(args.iters):
                    start = time.perf_counter()
                    step(x, upstream)[2].numpy()
                    samples.append(time.perf_counter() - start)
                times[form] = float(np.median(samples))
            Conv2D.matmul_training, Conv2D.matmul_training_dtypes = True, ("bfloat16",)
            difference = max(float(np.abs(a - b).max() / np.abs(b).max())
                             for a, b in zip(outputs["matmul"], outputs["conv"]))
            flops = 3 * 2 * n * out_size * out_size * c_in * c_out
            row = {"dtype": dtype, "batch": n, "size": size, "c_in": c_in, "c_out": c_out, "stride": stride,
                   "conv_ms": times["conv"] * 1e3, "matmul_ms": times["matmul"] * 1e3,
                   "speedup": times["conv"] / times["matmul"], "conv_gflops": flops / times["conv"] / 1e9,
                   "matmul_gflops": flops / times["matmul"] / 1e9, "max_rel_difference": difference}
            rows.append(row)
            print(f"{dtype:9s} b{n} {size:3d}x{size:<3d} {c_in:5d}->{c_out:<5d} /{stride}  conv {row['conv_ms']:7.2f} ms "
                  f"({row['conv_gflops']:6.1f} GFLOP/s)  matmul {row['matmul_ms']:7.2f} ms "
                  f"({row['matmul_gflops']:6.1f})  x{row['speedup']:.2f}  max rel. difference {difference:.1e}",
                  flush=True)
    for dtype in args.dtypes:
        mine = [r for r in rows if r["dtype"] == dtype]
        total = sum(r["conv_ms"] for r in mine) / sum(r["matmul_ms"] for r in mine)
        print(f"{dtype}: all cases, conv time / matmul time = {total:.2f}")
    write_json(args.output, {**_bench.result_header("pointwise_conv", argv), "rows": rows})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
