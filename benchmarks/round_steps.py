"""Conv-pair latency at each candidate middle width: the measurement behind `--round-to auto`'s per-group steps.

A 3x3 conv pair C -> k -> C (the two convs of a CIFAR ResNet block) is timed in ONNX Runtime's CPU
provider for every middle width k = 1..C, interleaved (agmc_onnx.bench.measure), at the spatial size
the shipped Fashion-MNIST ResNets use for that width (16 ch at 28x28, 32 at 14x14, 64 at 7x7).

    .venv/bin/python benchmarks/round_steps.py --batch 1 64 --threads 2 --seconds 4 [--step 4]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx import runtime
from agmc_onnx.bench import measure

SPATIAL = {16: 28, 32: 14, 64: 7}


def conv_pair(c: int, k: int, hw: int) -> onnx.ModelProto:
    """x[N,c,hw,hw] -> Conv3x3(c->k) -> Relu -> Conv3x3(k->c)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((k, c, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((c, k, 3, 3)).astype(np.float32), "w2")
    b1 = numpy_helper.from_array(np.zeros(k, np.float32), "b1")
    b2 = numpy_helper.from_array(np.zeros(c, np.float32), "b2")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    g = helper.make_graph(
        nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, hw, hw])], [w1, w2, b1, b2],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def main() -> None:
    """Print a markdown table of median ms per (channels, batch, width)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0, help="rough time budget per (channels, batch)")
    p.add_argument("--step", type=int, default=1, help="time middle widths step, 2*step, ..., channels")
    args = p.parse_args()
    rt = runtime.ort()
    print(f"load average before: {os.getloadavg()}")
    for c in args.channels:
        hw = SPATIAL.get(c, 14)
        widths = list(range(args.step, c + 1, args.step))
        for batch in args.batch:
            x = np.random.default_rng(1).standard_normal((batch, c, hw, hw)).astype(np.float32)
            runners = []
            for k in widths:
                o = rt.SessionOptions()
                o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = args.threads, 1, 3
                s = rt.InferenceSession(conv_pair(c, k, hw).SerializeToString(), o, providers=runtime.providers("cpu"))
                runners.append(lambda s=s, x=x: s.run(None, {"x": x}))
            t0 = time.perf_counter()
            measure(runners, warmup=2, repeats=3)
            one_round = (time.perf_counter() - t0) / 5
            repeats = max(5, int(args.seconds / max(one_round, 1e-6)))
            samples = measure(runners, warmup=3, repeats=repeats)
            med = [float(np.median(s)) for s in samples]
            print(f"\n## {c} channels, {hw}x{hw}, batch {batch}, {repeats} interleaved rounds, "
                  f"load {os.getloadavg()[0]:.2f}")
            print("| k | " + " | ".join(str(k) for k in widths) + " |")
            print("|---|" + "---|" * len(widths))
            print("| ms | " + " | ".join(f"{m:.3g}" for m in med) + " |")


if __name__ == "__main__":
    main()
