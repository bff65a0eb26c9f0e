"""Shared test helpers: tiny hand-built ONNX models, ONNX Runtime runs, torch export, and the three oracles."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def sha256(path: str | Path) -> str:
    """Hex digest of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _init(name: str, array: np.ndarray) -> TensorProto:
    """An initializer from a float32 array."""
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def tiny_convnet(opset: int = OPSET, channels: int = 8, seed: int = 0) -> onnx.ModelProto:
    """input[N,3,8,8] -> Conv -> Relu -> Conv -> Relu -> GAP -> Flatten -> Gemm -> logits[N,4]."""
    rng = np.random.default_rng(seed)
    c = channels
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        _init("w1", rng.normal(size=(c, 3, 3, 3)) * 0.3),
        _init("b1", rng.normal(size=(c,)) * 0.1),
        _init("w2", rng.normal(size=(c, c, 3, 3)) * 0.2),
        _init("b2", rng.normal(size=(c,)) * 0.1),
        _init("wfc", rng.normal(size=(4, c)) * 0.3),
        _init("bfc", rng.normal(size=(4,)) * 0.1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="agmc-tests")


def single_gemm(seed: int = 0) -> onnx.ModelProto:
    """input[N,16] -> Gemm -> logits[N,4]: nothing to prune (both axes are graph inputs/outputs)."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], name="fc", transB=1)],
        "single_gemm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [_init("w", rng.normal(size=(4, 16))), _init("b", rng.normal(size=(4,)))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="agmc-tests")


def conv_to_output(seed: int = 0) -> onnx.ModelProto:
    """input -> Conv -> Relu -> output: the only conv's channels reach a graph output, so all are frozen."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4),
            helper.make_node("Relu", ["c"], ["logits"], name="relu"),
        ],
        "conv_to_output",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [_init("w", rng.normal(size=(8, 3, 3, 3))), _init("b", rng.normal(size=(8,)))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="agmc-tests")


Sizes = Mapping[str, tuple[int, ...]]  # full dims per input name (axis 0 is replaced by the batch)


def input_shape(model: onnx.ModelProto, name: str | None = None, batch: int = 2,
                sizes: Sizes | None = None) -> tuple[int, ...]:  # fmt: skip
    """Concrete shape of a graph input: `sizes[name]` past axis 0 when given, else its fixed dims; symbolic
    dims (and dim_value <= 0, Paddle's -1 batch) on axis 0 become `batch`."""
    inp = next(i for i in model.graph.input if name is None or i.name == name)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim]
    want = (sizes or {}).get(inp.name)
    out = []
    for k, d in enumerate(dims):
        if k == 0:
            out.append(batch if d is None else d)
        elif want is not None:
            out.append(int(want[k]))
        else:
            assert d is not None, f"input {inp.name!r} has a symbolic axis {k}: give its size"
            out.append(d)
    return tuple(out)


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0, sizes: Sizes | None = None) -> dict[str, np.ndarray]:
    """Random float32 feeds for every real graph input (initializers listed as inputs are skipped)."""
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    return {
        i.name: rng.standard_normal(input_shape(model, i.name, batch, sizes)).astype(np.float32)
        for i in model.graph.input
        if i.name not in inits
    }


def run(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model in ONNX Runtime on CPU with graph optimisations off (exact arithmetic order)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    src: Any = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))


def max_rel_diff(a: list[np.ndarray], b: list[np.ndarray], floor: float = 0.0) -> float:
    """Max abs difference over all outputs, divided by the reference output's scale (max |b|, at least
    `floor`: an absolute floor for saturated outputs, e.g. a Sigmoid of noise that is 1e-7 everywhere)."""
    assert len(a) == len(b), f"{len(a)} outputs vs {len(b)}"
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape, f"output shape {x.shape} vs {y.shape}"
        assert np.isfinite(x).all() and np.isfinite(y).all(), "non-finite outputs"
        scale = max(float(np.abs(y).max()) if y.size else 0.0, floor, 1e-30)
        worst = max(worst, float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) / scale)
    return worst


def export_torch(model: Any, shape: tuple[int, ...], path: Path, fold: bool = True, opset: int = OPSET) -> Path:
    """Export a torch module (eval) with the TorchScript exporter, dynamic batch, input/logits names."""
    import torch

    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    torch.onnx.export(
        model.eval(),
        (x,),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.EVAL if fold else torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=fold,
    )
    return path


# ---------------------------------------------------------------------------------------------------
# Reference MAC count and the oracles, written apart from the engine so they can disagree with it.


def runtime_shapes(model: onnx.ModelProto, names: list[str], sizes: Sizes | None = None) -> dict[str, tuple[int, ...]]:
    """Actual shapes of intermediate tensors at batch 1 (inputs at `sizes`), by running the model in ONNX Runtime."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    present = {o.name for o in m.graph.output}
    for name in dict.fromkeys(names):
        if name not in inits and name not in present:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    outs = run(m, random_feeds(model, batch=1, sizes=sizes))
    return {o.name: tuple(v.shape) for o, v in zip(m.graph.output, outs, strict=True)}


def reference_macs(model: onnx.ModelProto, sizes: Sizes | None = None) -> int:
    """MACs at batch 1 (inputs at `sizes`) from the shapes the runtime actually produces (docs/design.md
    convention; an Einsum counts the product of its output's size and its contracted indices' sizes)."""
    ops = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")]
    shapes = runtime_shapes(model, [t for n in ops for t in (n.input[0], n.input[1], n.output[0])], sizes)
    for t in model.graph.initializer:
        shapes[t.name] = tuple(t.dims)
    total = 0
    for node in ops:
        x, w, out = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
        if node.op_type == "Conv":
            total += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":
            total += int(np.prod(x[1:])) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            total += int(np.prod(out)) * (x[0] if trans_a else x[1])
        elif node.op_type == "Einsum":  # explicit two-operand equations without ellipsis (what the tests use)
            eq = next(a.s for a in node.attribute if a.name == "equation").decode().replace(" ", "")
            lhs, to = eq.split("->")
            ta, tb = lhs.split(",")
            sizes = dict(zip(ta, x, strict=True)) | dict(zip(tb, w, strict=True))
            total += int(np.prod(out)) * int(np.prod([sizes[c] for c in sizes if c not in to]))
        else:  # MatMul
            total += int(np.prod(out)) * x[-1]
    return total


def _float_elems(t: TensorProto) -> int:
    """Elements of a float tensor, 0 for other types."""
    if t.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
        return 0
    return int(np.prod(t.dims)) if len(t.dims) else 1


def reference_params(model: onnx.ModelProto) -> int:
    """Elements of every float initializer some node reads, and of float Constant nodes, Loop/If bodies
    included (docs/design.md convention)."""

    def reads(g: onnx.GraphProto) -> set[str]:
        out = {i for n in g.node for i in n.input}
        for n in g.node:  # a body reads outer-scope names too (a Loop body's conv weight)
            for a in n.attribute:
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    out |= reads(sub)
        return out

    def graph_params(g: onnx.GraphProto) -> int:
        read = reads(g)
        total = sum(_float_elems(t) for t in g.initializer if t.name in read)
        for n in g.node:
            for a in n.attribute:
                if n.op_type == "Constant" and a.type == onnx.AttributeProto.TENSOR:
                    total += _float_elems(a.t)
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    total += graph_params(sub)
        return total

    return graph_params(model.graph)


def mask_consumers(analysis: Any, plan: Any) -> onnx.ModelProto:
    """The analysed (normalised) graph with each consumer member's removed positions zeroed (oracle 2 mask), and
    every statistic over pruned channels computed over the kept ones (the pruned network at full width)."""
    proto = onnx.ModelProto()
    proto.CopyFrom(analysis.model.proto)
    inits = {t.name: t for t in proto.graph.initializer}
    arrays = {name: numpy_helper.to_array(t).copy() for name, t in inits.items()}
    touched: set[str] = set()
    for group in analysis.groups:
        kept = set(plan.kept.get(group.id, range(group.size)))
        roles = {member.role for member in group.members}
        for member in group.members:
            if member.role != ("consumer" if "consumer" in roles else "producer"):
                continue
            arr = arrays[member.tensor]
            for pos, ch in zip(member.positions, member.channels, strict=True):
                if ch not in kept:
                    index = [slice(None)] * arr.ndim
                    index[member.axis] = pos
                    arr[tuple(index)] = 0
                    touched.add(member.tensor)
    for name in touched:
        inits[name].CopyFrom(numpy_helper.from_array(arrays[name], name))
    _statistics_over_kept(analysis, plan, proto)
    return proto


def _statistics_over_kept(analysis: Any, plan: Any, proto: onnx.ModelProto) -> None:
    """Each statistic node (LayerNorm over the channels, a mean over them) whose input loses channels reads
    only the kept ones: Gather them, compute the same op, scatter a LayerNorm's output back by a 0/1 MatMul.
    Written apart from agmc_onnx.surgery.mask (which masks and rescales instead)."""
    nodes = list(proto.graph.node)
    stat = {n for g in analysis.groups if g.id in plan.kept for n in g.stats}
    del proto.graph.node[:]
    for node in nodes:
        if node.name not in stat:
            proto.graph.node.append(node)
            continue
        x = node.input[0]
        chans = analysis.tensor_channels(x)
        kept = [i for i, c in enumerate(chans) if c is None or c[1] in set(plan.kept.get(c[0], [c[1]]))]
        if len(kept) == len(chans):
            proto.graph.node.append(node)
            continue
        axis = analysis.channel_axis(x)
        pre = f"{node.name}__own"
        idx = numpy_helper.from_array(np.array(kept, dtype=np.int64), f"{pre}_idx")
        proto.graph.initializer.append(idx)
        proto.graph.node.append(helper.make_node("Gather", [x, idx.name], [f"{pre}_x"], name=f"{pre}_gather", axis=axis))
        op = onnx.NodeProto()
        op.CopyFrom(node)
        op.name = f"{pre}_op"
        op.input[0] = f"{pre}_x"
        if node.op_type != "LayerNormalization":
            proto.graph.node.append(op)
            continue
        inits = {t.name: t for t in proto.graph.initializer}
        for j in (1, 2):
            if len(node.input) > j and node.input[j]:
                arr = numpy_helper.to_array(inits[node.input[j]])
                if arr.size > 1:
                    sliced = numpy_helper.from_array(np.take(arr, kept, axis=-1), f"{pre}_p{j}")
                    proto.graph.initializer.append(sliced)
                    op.input[j] = sliced.name
        op.output[0] = f"{pre}_y"
        scatter = np.zeros((len(kept), len(chans)), dtype=np.float32)
        scatter[np.arange(len(kept)), kept] = 1.0
        proto.graph.initializer.append(numpy_helper.from_array(scatter, f"{pre}_scatter"))
        proto.graph.node.extend([op, helper.make_node("MatMul", [f"{pre}_y", f"{pre}_scatter"], [node.output[0]],
                                                      name=f"{pre}_back")])


def keep_counts(plan: Any) -> dict[int, int]:
    """Group id -> number of kept channels."""
    return {gid: len(kept) for gid, kept in plan.kept.items()}


def full_plan(analysis: Any) -> Any:
    """A plan keeping every channel of every group."""
    from agmc_onnx.plan import Plan

    return Plan(kept={g.id: list(range(g.size)) for g in analysis.groups})


def check_oracles(
    path: str | Path, plan: Any, analysis: Any = None, batch: int = 2, seed: int = 0, tol: float = 1e-4,
    sizes: list[Sizes] | None = None, floor: float = 0.0,
) -> dict[str, Any]:
    """Oracles 1-3 (and validity) for one plan on one file; returns measured facts for reports.

    `sizes`: input sizes to run the outputs oracles at (a dynamic file: two sizes; default: the analysis
    size); MACs are checked at the analysis size. `floor`: absolute floor of the outputs' scale."""
    from agmc_onnx.analysis import analyze
    from agmc_onnx.cost import count_macs
    from agmc_onnx.model import load
    from agmc_onnx.surgery import mask, prune

    original = onnx.load(str(path))
    if analysis is None:
        analysis = analyze(load(path))
    analysed = {n: tuple(d) for n, d in analysis.model.input_shapes.fixed(1).items()}
    keep_all = prune(analysis, full_plan(analysis))
    pruned = prune(analysis, plan)
    # validity of the pruned file
    onnx.checker.check_model(pruned, full_check=True)
    real = [i.name for i in original.graph.input if i.name not in {t.name for t in original.graph.initializer}]
    assert [i.name for i in pruned.graph.input] == real
    assert [i.type for i in pruned.graph.input] == [i.type for i in original.graph.input if i.name in real], (
        "the written file's inputs must keep the original's declared (symbolic) dims")
    assert [o.name for o in pruned.graph.output] == [o.name for o in original.graph.output]
    assert pruned.opset_import == original.opset_import
    assert pruned.ir_version == original.ir_version or original.ir_version < 4
    assert pruned.metadata_props == original.metadata_props and pruned.producer_name == original.producer_name
    engine_mask, own_mask = mask(analysis, plan), mask_consumers(analysis, plan)
    for at in sizes or [analysed]:
        feeds = random_feeds(original, batch=batch, seed=seed, sizes=at)
        ref = run(original, feeds)
        # the normalised graph computes what the file computes
        assert max_rel_diff(run(analysis.model.proto, feeds), ref, floor) <= 1e-5, f"normalising changed the outputs at {at}"
        # oracle 1: keep everything -> the original's outputs
        assert max_rel_diff(run(keep_all, feeds), ref, floor) <= 1e-5, f"keep-all plan changed the outputs at {at}"
        out = run(pruned, feeds)
        # oracle 2: pruned == original with the same channels masked (ours and the engine's mask)
        ours = max_rel_diff(out, run(own_mask, feeds), floor)
        assert ours <= tol, f"pruned != masked (own mask) at {at}: rel diff {ours:.3g}"
        theirs = max_rel_diff(out, run(engine_mask, feeds), floor)
        assert theirs <= tol, f"pruned != masked (engine mask) at {at}: rel diff {theirs:.3g}"
    # oracle 3: predicted MACs == counted MACs of the written file (engine counter and ours), at the analysis size
    predicted = analysis.cost.plan_macs(plan)
    counted = count_macs(pruned, analysis.model.input_shapes)
    assert predicted == counted, f"predicted {predicted} != count_macs {counted}"
    if analysis.cost.counts_exact:  # the fast count-based estimate is exact unless a group is split unevenly
        by_counts = analysis.cost.macs(keep_counts(plan))
        assert by_counts == counted, f"macs(keep counts) {by_counts} != count_macs {counted}"
    params = analysis.cost.plan_params(plan)
    assert params == reference_params(pruned), f"predicted params {params} != {reference_params(pruned)}"
    ref_count = reference_macs(pruned, analysed)
    assert counted == ref_count, f"count_macs {counted} != reference count {ref_count}"
    assert analysis.cost.total_macs == reference_macs(original, analysed), "total_macs differs from the file's count"
    return {"predicted": predicted, "total": analysis.cost.total_macs, "ratio": predicted / analysis.cost.total_macs}
