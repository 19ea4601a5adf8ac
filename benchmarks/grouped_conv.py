"""MSConv's grouped convolution on the TensorFlow backend: ``native`` against ``split``.

The two formulations share weights and outputs (tests/layers/test_msconv_layer.py); this measures what they
cost, which decides what ``grouped_conv="auto"`` picks:

- one MSConv layer (256 channels, 32 groups, 14x14, batch 32): forward, and forward + backward
  (the gradient of the layer's weights and input), each in a ``tf.function``;
- MSConvResNet50 at 112x112, batch 32: inference in a ``tf.function`` (graph) and with XLA, and one
  training step (forward, ArcFace loss, backward, SGD update; ``FaceTrainingModel.train_on_batch``).

Keras' TensorFlow backend has no CPU kernel for a grouped convolution and runs each one as an
XLA-compiled function; the split form is 32 ordinary convolutions on channel slices. Times are
medians of timed calls after warm-up calls (tracing and compilation excluded). oneDNN stays on. Rows
are printed and saved as they are measured. Run on a quiet machine.

Usage:
    python benchmarks/grouped_conv.py              # the layer and MSConvResNet50 (16 minutes on 2
                                                   # cores, 10 of them in the native training steps);
                                                   # writes results/grouped_conv.json
    python benchmarks/grouped_conv.py --quick      # smoke test: small layer, MSConvResNet26 at 64x64
    python benchmarks/grouped_conv.py --skip-network
    python benchmarks/grouped_conv.py --batch-size 1 --calls 10 --skip-training   # batch-1 inference
"""

import argparse
import os
import statistics
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path: before Keras)
from _bench import HERE, write_json  # noqa: E402

MODES = ("native", "split")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 32)")
    p.add_argument("--calls", type=int, default=None, help="timed calls per measurement (default 3)")
    p.add_argument("--skip-network", action="store_true", help="only the single-layer measurements")
    p.add_argument("--skip-training", action="store_true", help="no network training step (inference only)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 1 timed call")
    p.add_argument("--output", default=os.path.join(HERE, "results", "grouped_conv.json"))
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 2 if args.quick else 32
    if args.calls is None:
        args.calls = 1 if args.quick else 3
    if args.batch_size < 1 or args.calls < 1:
        p.error("--batch-size and --calls must be >= 1")
    return args


def median_seconds(fn, calls, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layer_rows(args):
    import numpy as np
    import tensorflow as tf

    from keras_fr.layers.msconv import MSConv

    channels, size = (64, 8) if args.quick else (256, 14)
    x = tf.constant(np.random.default_rng(0).normal(size=(args.batch_size, size, size, channels)),
                    tf.float32)
    weights = None
    for mode in MODES:
        layer = MSConv(grouped_conv=mode, name="msconv")
        layer.build(x.shape)
        if weights is None:
            weights = layer.get_weights()
        layer.set_weights(weights)

        forward = tf.function(lambda t, layer=layer: layer(t, training=True))

        @tf.function
        def forward_backward(t, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(t)
                loss = tf.reduce_sum(tf.square(layer(t, training=True)))
            return tape.gradient(loss, [t] + layer.trainable_weights)

        for what, fn in (("forward", forward), ("forward+backward", forward_backward)):
            seconds = median_seconds(lambda fn=fn: [np.asarray(v) for v in tf.nest.flatten(fn(x))],
                                     args.calls)
            yield {"case": f"MSConv layer {size}x{size}x{channels}", "what": what, "grouped_conv": mode,
                   "batch_size": args.batch_size, "seconds": seconds}


def network_rows(args):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_fr.applications import MSConvResNet26, MSConvResNet50
    from keras_fr.training.losses import ArcFaceLoss
    from keras_fr.training.recipes import SGDWithL2
    from keras_fr.training import FaceTrainingModel

    builder, size = (MSConvResNet26, 64) if args.quick else (MSConvResNet50, 112)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (args.batch_size, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 100, args.batch_size).astype(np.int32)
    weights = None
    for mode in MODES:
        keras.backend.clear_session()
        model = builder(input_shape=(size, size, 3), include_top=False, pooling="avg", grouped_conv=mode)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        case = f"{model.name} {size}x{size}"
        for what, jit in (("inference graph", False), ("inference XLA", True)):
            fn = tf.function(lambda t, model=model: model(t, training=False), jit_compile=jit)
            seconds = median_seconds(lambda fn=fn: np.asarray(fn(x)), args.calls)
            yield {"case": case, "what": what, "grouped_conv": mode, "batch_size": args.batch_size,
                   "seconds": seconds, "images_per_second": args.batch_size / seconds}
        if args.skip_training:
            continue
        trainer = FaceTrainingModel(model, 100)
        trainer.compile(optimizer=SGDWithL2(0.02, momentum=0.9, l2=5e-4), loss=ArcFaceLoss())
        seconds = median_seconds(lambda: trainer.train_on_batch(x, y), args.calls)
        yield {"case": case, "what": "training step", "grouped_conv": mode, "batch_size": args.batch_size,
               "seconds": seconds, "images_per_second": args.batch_size / seconds}


def main(argv=None):
    args = parse_args(argv)
    results = []
    payload = {
        **_bench.result_header("grouped_conv", argv),
        "results": results,
    }
    print(f"{'case':<32}{'what':<20}{'grouped_conv':<14}{'batch':>6}{'seconds':>10}{'img/s':>9}")
    rows = layer_rows(args)
    if not args.skip_network:
        rows = (row for source in (rows, network_rows(args)) for row in source)
    for row in rows:
        results.append(row)
        rate = f"{row['images_per_second']:>9.1f}" if "images_per_second" in row else ""
        print(f"{row['case']:<32}{row['what']:<20}{row['grouped_conv']:<14}{row['batch_size']:>6}"
              f"{row['seconds']:>10.4f}{rate}", flush=True)
        write_json(args.output, payload)
    print(f"wrote {args.output}")
    return payload


if __name__ == "__main__":
    main()
