"""Would Winograd convolution make IResNet100's ONNX file faster at batch 1? (issue 17; answer: no, here)

IResNet100 at batch 1 is nearly all stride-1 3x3 convolutions (95% of its 24.2 GFLOP). Winograd's
F(2x2, 3x3) computes each 2x2 output tile from a 4x4 input tile with 16 products per channel pair
instead of 36, so 2.25x fewer multiply-adds, at the price of input and output transforms. ONNX
Runtime has no Winograd kernel on x86; this script writes one with standard ONNX operators, as an
exporter rewrite would (``Pad``, ``SpaceToDepth`` and four ``Slice`` + ``Concat`` gather the
overlapping 4x4 tiles; a ``MatMul`` with the 16x16 matrix ``B^T (x) B^T`` transforms them; one
batched ``MatMul`` multiplies the 16 transformed planes by the transformed kernels ``G g G^T``;
a ``MatMul`` with ``A^T (x) A^T`` and a ``DepthToSpace`` make the output), checks it against ONNX
Runtime's own ``Conv`` (float32: relative difference about 1e-6) and times, for IResNet100's three
stage shapes at batch 1 (``--reps`` chained layers, so call overhead is shared):

- ``direct``: ONNX Runtime's ``Conv``;
- ``winograd``: the rewritten subgraph;
- ``products only``: the batched ``MatMul`` alone, the least any such rewrite has to pay.

Usage:
    python benchmarks/onnx_winograd.py
"""

import argparse
import os
import sys
import time

import numpy as np

import _bench  # noqa: E402  (quiet logs, project root on sys.path)
from _bench import HERE, write_json  # noqa: E402

# F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
SHAPES = ((64, 56), (128, 28), (256, 14))  # (channels, height = width) of IResNet100's stages 1-3


def _session(model, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _model(nodes, inits, channels, height, output):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, height, height])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def direct(kernel, height, reps):
    from onnx import helper, numpy_helper

    channels = kernel.shape[1]
    inits = [numpy_helper.from_array(kernel.astype(np.float32), "w")]
    nodes, current = [], "x"
    for r in range(reps):
        nodes.append(helper.make_node("Conv", [current, "w"], [f"y{r}"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
        current = f"y{r}"
    return _model(nodes, inits, channels, height, current)


def _tile_transforms():
    """``BB`` (16 x 16): transformed plane (i, j) from the 4x4 tile's pixels in the order the
    SpaceToDepth + Slice gather leaves them, k = (oy*2 + ox)*4 + by*2 + bx for pixel (2oy + by, 2ox + bx);
    ``AA`` (4 x 16): output pixel (a, b) of the 2x2 tile from the 16 planes."""
    bb = np.zeros((16, 16))
    for oy in range(2):
        for ox in range(2):
            for by in range(2):
                for bx in range(2):
                    k, p, q = (oy * 2 + ox) * 4 + by * 2 + bx, 2 * oy + by, 2 * ox + bx
                    bb[:, k] = np.outer(BT[:, p], BT[:, q]).reshape(16)
    aa = np.stack([np.outer(AT[a], AT[b]).reshape(16) for a in range(2) for b in range(2)])
    return bb, aa


def winograd(kernel, height, reps, products_only=False):
    from onnx import helper, numpy_helper

    out_ch, channels = kernel.shape[:2]
    tiles = height // 2
    bb, aa = _tile_transforms()
    u = np.einsum("ip,jq,kcpq->ijkc", G, G, kernel.astype(np.float64)).reshape(16, out_ch, channels)
    arrays = {"BB": bb, "AA": aa, "U": u, "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1]),
              "s1": np.array([16, channels * tiles * tiles]), "s2": np.array([16, channels, tiles * tiles]),
              "s3": np.array([16, out_ch * tiles * tiles]), "s4": np.array([1, 4 * out_ch, tiles, tiles]),
              "axes": np.array([2, 3])}
    for oy in range(2):
        for ox in range(2):
            arrays[f"st{oy}{ox}"] = np.array([oy, ox])
            arrays[f"en{oy}{ox}"] = np.array([oy + tiles, ox + tiles])
    inits = [numpy_helper.from_array(v.astype(np.float32 if v.dtype.kind == "f" else np.int64), k)
             for k, v in arrays.items()]
    nodes, current = [], "x"
    if products_only:  # the 16 batched products alone, on an input already in their layout
        for r in range(reps):
            nodes.append(helper.make_node("MatMul", ["U", current], [f"m{r}"]))
            current = f"m{r}"
        from onnx import TensorProto

        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              [16, channels, tiles * tiles])],
                                  [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for r in range(reps):
        p = f"r{r}_"
        nodes += [helper.make_node("Pad", [current, "pads"], [p + "pad"]),
                  helper.make_node("SpaceToDepth", [p + "pad"], [p + "s2d"], blocksize=2)]
        parts = []
        for oy in range(2):
            for ox in range(2):
                nodes.append(helper.make_node("Slice", [p + "s2d", f"st{oy}{ox}", f"en{oy}{ox}", "axes"],
                                              [p + f"sl{oy}{ox}"]))
                parts.append(p + f"sl{oy}{ox}")
        nodes += [helper.make_node("Concat", parts, [p + "tiles"], axis=1),
                  helper.make_node("Reshape", [p + "tiles", "s1"], [p + "d"]),
                  helper.make_node("MatMul", ["BB", p + "d"], [p + "v"]),
                  helper.make_node("Reshape", [p + "v", "s2"], [p + "v2"]),
                  helper.make_node("MatMul", ["U", p + "v2"], [p + "m"]),
                  helper.make_node("Reshape", [p + "m", "s3"], [p + "m2"]),
                  helper.make_node("MatMul", ["AA", p + "m2"], [p + "o"]),
                  helper.make_node("Reshape", [p + "o", "s4"], [p + "o2"]),
                  helper.make_node("DepthToSpace", [p + "o2"], [p + "y"], blocksize=2, mode="DCR")]
        current = p + "y"
    return _model(nodes, inits, channels, height, current)


def _ms_per_layer(session, x, reps, calls):
    name = session.get_inputs()[0].name
    for _ in range(5):
        session.run(None, {name: x})
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, {name: x})
        best = min(best, time.perf_counter() - start)
    return best / reps * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10, help="chained layers per model (default 10)")
    parser.add_argument("--calls", type=int, default=100, help="timed calls, best of (default 100)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="ONNX Runtime threads")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "onnx_winograd.json"))
    args = parser.parse_args(argv)
    print(_bench.cpu_line())
    rng = np.random.default_rng(0)
    rows = []
    for channels, height in SHAPES:
        kernel = rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)
        x = rng.standard_normal((1, channels, height, height)).astype(np.float32)
        want = _session(direct(kernel, height, 1), args.threads).run(None, {"x": x})[0]
        got = _session(winograd(kernel, height, 1), args.threads).run(None, {"x": x})[0]
        rel = float(np.abs(got - want).max() / np.abs(want).max())
        if rel > 1e-4:
            raise AssertionError(f"the Winograd subgraph is wrong: relative difference {rel:.2e}")
        products_in = rng.standard_normal((16, channels, (height // 2) ** 2)).astype(np.float32) / channels
        times = {
            "direct": _ms_per_layer(_session(direct(kernel, height, args.reps), args.threads), x, args.reps,
                                    args.calls),
            "winograd": _ms_per_layer(_session(winograd(kernel, height, args.reps), args.threads), x,
                                      args.reps, args.calls),
            "products only": _ms_per_layer(_session(winograd(kernel, height, args.reps, products_only=True),
                                                    args.threads), products_in, args.reps, args.calls),
        }
        flops = 2 * height * height * 9 * channels * channels
        row = {"channels": channels, "height": height, "max_rel_diff": rel, "ms": times,
               "direct_gflops": flops / times["direct"] / 1e6}
        rows.append(row)
        print(f"{channels:4d} channels {height:3d}x{height:<3d} direct {times['direct']:.3f} ms "
              f"({row['direct_gflops']:.0f} GFLOP/s), winograd {times['winograd']:.3f} ms, products only "
              f"{times['products only']:.3f} ms; rel. diff {rel:.1e}", flush=True)
    write_json(args.output, {**_bench.result_header("onnx_winograd", argv), "rows": rows})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
