"""Latency model: NetAdapt-style per-layer lookup tables measured in ONNX Runtime, and a predictor.

For every prunable layer (Conv / Gemm with a weight initializer, plus the BatchNormalization and
activation that follow it alone, which ORT fuses into it) a single-layer model is built with
onnx.helper at each (kept input, kept output) width of a grid over the widths the rounding allows,
and timed with `bench.measure` (every width of every configuration interleaved in one run, with an
empty model whose time is subtracted: _measure_points). Identical configurations (op, shapes,
attributes) are measured once.
The predictor mirrors the cost model: per node, the table interpolated (bilinear) at the kept
widths that `Length.of_counts` gives for the plan's keep counts; summed; then mapped to whole-model
milliseconds by `scale * sum + offset`, a robust line through whole-model measurements of the
original, two uniformly pruned copies and three random plans (the "rest" of the model and
per-session overheads land in the offset; random plans make the fit see neighbouring layers of
unequal widths). Tables are cached as JSON keyed by a hash of the model, provider, threads, batch,
rounding, grid and machine.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx.errors import InputError

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis
    from agmc_onnx.budget import Budget
    from agmc_onnx.cost import Length
    from agmc_onnx.plan import Plan, RoundTo

FORMAT = 2  # 2: calibration rows name their plan (uniform cuts and random plans)
FUSED_AFTER = ("BatchNormalization", "Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh")
CALIBRATION_KEEP = (1.0, 0.5, 0.25)  # uniform keep fractions measured whole to fit scale and offset
CALIBRATION_RANDOM = 3  # and as many seeded random plans (keep ratio per group uniform in [0.25, 1]), so the fit sees
# widths that differ between neighbouring layers, as searched plans have, not only uniform cuts
Timer = Callable[[], float]
# (model, feeds) -> a zero-argument callable that runs it once
RunnerFactory = Callable[[onnx.ModelProto, dict[str, np.ndarray]], Callable[[], Any]]


def machine_id() -> str:
    """The CPU model string, architecture and core count (what a table's timings belong to)."""
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} | {platform.machine()} | {os.cpu_count()} cpus"


def default_cache_dir() -> Path:
    """$AGMC_ONNX_CACHE/latency or ~/.cache/agmc-onnx/latency."""
    root = os.environ.get("AGMC_ONNX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agmc-onnx")
    return Path(root) / "latency"


def ort_runner_factory(provider: str = "cpu", threads: int | None = None) -> RunnerFactory:
    """Runners that execute a model in an ORT session (graph optimisations on, as in deployment)."""
    from agmc_onnx.bench import _session

    def make(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        sess = _session(proto, provider, threads)
        return lambda: sess.run(None, feeds)

    return make


@dataclass
class NodeTable:
    """Measured latency (ms) of one layer on a grid of kept (input, output) widths."""

    grid_in: list[int]
    grid_out: list[int]
    ms: list[list[float]]  # [len(grid_in)][len(grid_out)]

    def at(self, cin: float, cout: float) -> float:
        """Bilinear interpolation (clamped at the grid's ends)."""
        i0, i1, wi = _bracket(self.grid_in, cin)
        o0, o1, wo = _bracket(self.grid_out, cout)
        m = self.ms
        top = m[i0][o0] * (1 - wo) + m[i0][o1] * wo
        bot = m[i1][o0] * (1 - wo) + m[i1][o1] * wo
        return top * (1 - wi) + bot * wi


def _bracket(grid: list[int], x: float) -> tuple[int, int, float]:
    """Indices around x in a sorted grid and the weight of the upper one."""
    if len(grid) == 1 or x <= grid[0]:
        return 0, 0, 0.0
    if x >= grid[-1]:
        n = len(grid) - 1
        return n, n, 0.0
    j = bisect.bisect_right(grid, x)
    lo, hi = grid[j - 1], grid[j]
    return j - 1, j, (x - lo) / (hi - lo)


@dataclass
class LayerSpec:
    """How to build a one-layer model of a node at any kept width."""

    node: str
    op: str  # Conv | Gemm
    config: str  # signature of (op, shapes, attributes, fused followers): equal configs share tables
    in_len: Length
    out_len: Length
    grid_in: list[int]
    grid_out: list[int]
    build: Callable[[int, int, int], onnx.ModelProto] = field(repr=False)  # (cin, cout, batch) -> model


def _grid(length: Length, sizes: Mapping[int, int], round_to: RoundTo, max_points: int) -> list[int]:
    """Widths of one axis to measure: from its minimum to its full length in its groups' finest step, subsampled."""
    from agmc_onnx.plan import group_step, round_count

    full = length.full()
    if not length.terms:
        return [full]
    low = int(round(length.of_counts({g: round_count(0, sizes[g], round_to) for g, _, _ in length.terms})))
    step = max(1, int(round(min(group_step(sizes[g], round_to) * c for g, c, _ in length.terms))))
    values = sorted({*range(low, full, step), full})
    if len(values) > max_points:
        idx = np.unique(np.round(np.linspace(0, len(values) - 1, max_points)).astype(int))
        values = [values[i] for i in idx]
    return [int(v) for v in values if v > 0] or [full]


def _followers(analysis: Analysis, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The BatchNormalization / activation chain right after a node (each the sole consumer)."""
    m = analysis.model
    out, chain, cur = set(m.output_names), [], node
    while len(chain) < 2:
        cons = m.consumers.get(cur.output[0], [])
        if cur.output[0] in out or len(cons) != 1 or cons[0].op_type not in FUSED_AFTER:
            break
        nxt = cons[0]
        if nxt.op_type == "BatchNormalization" and (chain or len(nxt.output) > 1 and any(nxt.output[1:])):
            break
        chain.append(nxt)
        cur = nxt
    return chain


def _attrs(node: onnx.NodeProto, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A node's attributes as python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in drop}


def layer_specs(analysis: Analysis, round_to: RoundTo, max_points: int = 6) -> tuple[list[LayerSpec], list[str]]:
    """One LayerSpec per Conv/Gemm the tables model; and the MAC nodes left to the constant (with why)."""
    m = analysis.model
    sizes = {g.id: g.size for g in analysis.groups}
    by_name = {n.name: n for n in m.nodes}
    specs: list[LayerSpec] = []
    skipped: list[str] = []
    for term in analysis.cost.terms:
        node = by_name.get(term.node)
        if node is None or node.op_type not in ("Conv", "Gemm") or len(term.lengths) != 2:
            skipped.append(term.node)
            continue
        w = m.inits[node.input[1]]
        x_shape = m.static_shape(node.input[0])
        if x_shape is None or any(not isinstance(d, (int, np.integer)) for d in x_shape[1:]):
            skipped.append(term.node)
            continue
        followers = _followers(analysis, node)
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if node.op_type == "Conv":
            out_len, in_len = term.lengths[0], term.lengths[1]
            group = int(_attrs(node).get("group", 1))
            depthwise = group > 1 and w.shape[1] == 1
            mult = w.shape[0] // group if depthwise else 1
            spatial = [int(d) for d in x_shape[2:]]
            attrs = _attrs(node, ("group",))
            build = _conv_builder(node, spatial, list(w.shape[2:]), attrs, group, depthwise, mult, has_bias,
                                  followers, m.inits)  # fmt: skip
            sig = ("Conv", spatial, list(w.shape), attrs, group, has_bias)
        else:
            a = _attrs(node)
            if a.get("transA", 0):
                skipped.append(term.node)
                continue
            trans_b = int(a.get("transB", 0))
            out_len, in_len = (term.lengths[0], term.lengths[1]) if trans_b else (term.lengths[1], term.lengths[0])
            build = _gemm_builder(a, trans_b, has_bias, followers, m.inits)
            sig = ("Gemm", list(w.shape), a, has_bias)
        fsig = [(f.op_type, sorted(_attrs(f).items())) for f in followers]
        grid_in = _grid(in_len, sizes, round_to, max_points)
        grid_out = _grid(out_len, sizes, round_to, max_points)
        config = hashlib.sha1(repr((sig, fsig, grid_in, grid_out)).encode()).hexdigest()[:16]
        specs.append(LayerSpec(node.name, node.op_type, config, in_len, out_len, grid_in, grid_out, build))
    return specs, skipped


def _rand(shape: list[int], rng: np.random.Generator, name: str) -> TensorProto:
    """A random float initializer."""
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)


def _follow_nodes(followers: list[onnx.NodeProto], x: str, width: int, inits: Mapping[str, np.ndarray],
                  rng: np.random.Generator) -> tuple[list[onnx.NodeProto], list[TensorProto], str]:  # fmt: skip
    """Copies of the fused followers at `width` channels; returns nodes, initializers, last output."""
    nodes, tensors = [], []
    for i, f in enumerate(followers):
        out = f"y{i}"
        if f.op_type == "BatchNormalization":
            names = [f"bn{i}_{k}" for k in ("s", "b", "m", "v")]
            tensors += [_rand([width], rng, names[0]), _rand([width], rng, names[1]), _rand([width], rng, names[2]),
                        numpy_helper.from_array(np.ones(width, np.float32), names[3])]  # fmt: skip
            nodes.append(helper.make_node("BatchNormalization", [x, *names], [out], **_attrs(f, ("training_mode",))))
        else:
            extra = []
            for j, name in enumerate(f.input[1:]):
                if name and name in inits:
                    cname = f"act{i}_{j}"
                    tensors.append(numpy_helper.from_array(np.asarray(inits[name]), cname))
                    extra.append(cname)
                else:
                    extra.append("")
            nodes.append(helper.make_node(f.op_type, [x, *extra], [out], **_attrs(f)))
        x = out
    return nodes, tensors, x


def _model(nodes: list[onnx.NodeProto], tensors: list[TensorProto], x_shape: list[int], out: str) -> onnx.ModelProto:
    """A one-layer model with input `x` and output `out`."""
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], tensors,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _conv_builder(node: onnx.NodeProto, spatial: list[int], kernel: list[int], attrs: dict[str, Any], group: int,
                  depthwise: bool, mult: int, has_bias: bool, followers: list[onnx.NodeProto],
                  inits: Mapping[str, np.ndarray]) -> Callable[[int, int, int], onnx.ModelProto]:  # fmt: skip
    """Builder of a Conv (+ followers) at kept (input channels per conv group, output channels)."""

    def build(cin: int, cout: int, batch: int) -> onnx.ModelProto:
        rng = np.random.default_rng(0)
        g = max(1, cout // mult) if depthwise else group
        cout = g * mult if depthwise else max(g, cout - cout % g)
        tensors = [_rand([cout, cin, *kernel], rng, "w")]
        ins = ["x", "w"]
        if has_bias:
            tensors.append(_rand([cout], rng, "b"))
            ins.append("b")
        nodes = [helper.make_node("Conv", ins, ["c"], group=g, **attrs)]
        more, more_t, out = _follow_nodes(followers, "c", cout, inits, rng)
        return _model(nodes + more, tensors + more_t, [batch, cin * g, *spatial], out)

    return build


def _gemm_builder(attrs: dict[str, Any], trans_b: int, has_bias: bool, followers: list[onnx.NodeProto],
                  inits: Mapping[str, np.ndarray]) -> Callable[[int, int, int], onnx.ModelProto]:  # fmt: skip
    """Builder of a Gemm (+ followers) at kept (input features, output features)."""

    def build(cin: int, cout: int, batch: int) -> onnx.ModelProto:
        rng = np.random.default_rng(0)
        tensors = [_rand([cout, cin] if trans_b else [cin, cout], rng, "w")]
        ins = ["x", "w"]
        if has_bias:
            tensors.append(_rand([cout], rng, "b"))
            ins.append("b")
        nodes = [helper.make_node("Gemm", ins, ["c"], **attrs)]
        more, more_t, out = _follow_nodes(followers, "c", cout, inits, rng)
        return _model(nodes + more, tensors + more_t, [batch, cin], out)

    return build


def _null_model() -> onnx.ModelProto:
    """The emptiest model ORT runs (Identity over one float): the per-run overhead to subtract."""
    return _model([helper.make_node("Identity", ["x"], ["y"])], [], [1], "y")


def _feeds(proto: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """Random inputs for a model at `batch`."""
    from agmc_onnx.bench import make_inputs

    return make_inputs(proto, batch)


@dataclass
class LatencyTable:
    """Everything measured for one (model, provider, threads, batch, machine): layer tables and the fit."""

    key: str
    settings: dict[str, Any]
    nodes: dict[str, NodeTable]
    scale: float
    offset_ms: float
    base_ms: float  # measured latency of the original model
    calibration: list[dict[str, float]]
    skipped: list[str]
    measurements: int
    build_seconds: float
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d.pop("cached")
        d["format"] = FORMAT
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LatencyTable:
        """Inverse of to_json."""
        if d.get("format") != FORMAT:
            raise ValueError(f"latency table format {d.get('format')!r}, expected {FORMAT}")
        nodes = {k: NodeTable(**v) for k, v in d["nodes"].items()}
        fields = {k: d[k] for k in ("key", "settings", "scale", "offset_ms", "base_ms", "calibration", "skipped",
                                    "measurements", "build_seconds")}  # fmt: skip
        return cls(nodes=nodes, cached=True, **fields)


class LatencyModel:
    """Predicted whole-model latency (ms) for keep counts per group, from a LatencyTable."""

    def __init__(self, analysis: Analysis, table: LatencyTable, specs: list[LayerSpec] | None = None) -> None:
        """Bind the table to the analysis' per-node width terms."""
        self.analysis = analysis
        self.table = table
        specs = specs if specs is not None else layer_specs(analysis, table.settings["round_to"],
                                                             int(table.settings["max_points"]))[0]  # fmt: skip
        self.terms = [(s.in_len, s.out_len, table.nodes[s.node]) for s in specs if s.node in table.nodes]
        self.names = [s.node for s in specs if s.node in table.nodes]
        self.base_ms = table.base_ms
        self.batch = int(table.settings["batch"])

    def raw(self, keep: Mapping[int, int]) -> float:
        """Sum of the layer tables at the kept widths (ms, before the whole-model fit)."""
        return sum(t.at(i.of_counts(keep), o.of_counts(keep)) for i, o, t in self.terms)

    def node_ms(self, keep: Mapping[int, int] | None = None) -> dict[str, float]:
        """Per-layer table latency at the kept widths (ms)."""
        keep = keep or {}
        return {n: t.at(i.of_counts(keep), o.of_counts(keep)) for n, (i, o, t) in zip(self.names, self.terms, strict=True)}

    def predict(self, keep: Mapping[int, int]) -> float:
        """Predicted latency (ms) of the model pruned to these keep counts (missing groups: whole)."""
        return self.table.scale * self.raw(keep) + self.table.offset_ms

    def predict_plan(self, plan: Plan) -> float:
        """Predicted latency (ms) of a plan."""
        return self.predict(plan.keep_counts())

    def limit_ms(self, budget: Budget) -> float | None:
        """The latency limit a budget sets (ms): the tighter of latency_ms and predicted original / speedup.

        A speed-up is a ratio of predictions (the original's predicted latency, not its measured one):
        the tables predict ratios within a few percent while absolute latency drifts with the machine's
        load, and mixing a measurement into the ratio would carry that drift into the budget.
        """
        return budget_limit_ms(budget, self.predict({}))

    def summary(self) -> dict[str, Any]:
        """Facts for a report: settings, fit, size and build time of the table."""
        t = self.table
        return {"key": t.key, **t.settings, "layers": len(t.nodes), "measurements": t.measurements,
                "build_seconds": round(t.build_seconds, 3), "cached": t.cached, "scale": t.scale,
                "offset_ms": t.offset_ms, "base_ms": t.base_ms, "calibration": t.calibration,
                "unmodelled_mac_nodes": t.skipped}  # fmt: skip


def check_latency(value: Any) -> float:
    """A latency target must be a positive number of milliseconds."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--target-latency must be a positive number of ms, got {value!r}") from exc
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"--target-latency must be a positive number of ms, got {value}")
    return v


def check_speedup(value: Any) -> float:
    """A speed-up target must be a number >= 1."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--target-speedup must be a number >= 1, got {value!r}") from exc
    if not np.isfinite(v) or v < 1:
        raise InputError(f"--target-speedup must be a number >= 1, got {value}")
    return v


def budget_limit_ms(budget: Budget, original_ms: float) -> float | None:
    """The latency a budget allows (ms), given the original's: the tighter of latency_ms and original / speedup.

    In the predictor's units with the predicted original (LatencyModel.limit_ms), in measured units
    with a measured one (latency_refine); None when the budget sets no latency.
    """
    limits = []
    if budget.latency_ms is not None:
        limits.append(check_latency(budget.latency_ms))
    if budget.speedup is not None:
        limits.append(original_ms / check_speedup(budget.speedup))
    return min(limits) if limits else None


def table_key(analysis: Analysis, settings: Mapping[str, Any]) -> str:
    """Hash of the model's bytes and every setting the timings depend on (machine included)."""
    h = hashlib.sha256()
    h.update(analysis.model.proto.SerializeToString(deterministic=True))
    h.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def _ort_version() -> str:
    """The installed onnxruntime version ('none' without it)."""
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover
        return "none"


def build_latency_model(
    analysis: Analysis,
    batch: int = 1,
    provider: str = "cpu",
    threads: int | None = None,
    round_to: RoundTo = 16,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    timer: Timer = time.perf_counter,
    runner_factory: RunnerFactory | None = None,
    machine: str | None = None,
    warmup: int = 3,
    repeats: int = 15,
    max_points: int = 6,
    progress: Callable[[str], None] | None = None,
) -> LatencyModel:
    """Measure (or load from the cache) the layer tables and the whole-model fit; return the predictor."""
    if batch < 1:
        raise InputError(f"--batch must be a positive integer, got {batch}")
    settings = {
        "provider": provider, "threads": threads, "batch": int(batch), "round_to": round_to,
        "machine": machine if machine is not None else machine_id(), "ort": _ort_version(),
        "warmup": warmup, "repeats": repeats, "max_points": max_points,
        "synthetic": runner_factory is not None or timer is not time.perf_counter,
    }  # fmt: skip
    key = table_key(analysis, settings)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.json"
    specs, skipped = layer_specs(analysis, round_to, max_points)
    if use_cache and path.exists():
        try:
            table = LatencyTable.from_json(json.loads(path.read_text()))
            if table.key == key and all(s.node in table.nodes for s in specs):
                return LatencyModel(analysis, table, specs)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            pass  # a stale or broken cache file is rebuilt below
    factory = runner_factory or ort_runner_factory(provider, threads)
    t0 = time.perf_counter()
    unique = list({s.config: s for s in specs}.values())
    points = [(spec, ci, co) for spec in unique for ci in spec.grid_in for co in spec.grid_out]
    meds = _measure_points(points, batch, factory, timer, warmup, repeats, progress)
    by_config: dict[str, NodeTable] = {}
    for spec in unique:
        ms = np.array([meds[(spec.config, ci, co)] for ci in spec.grid_in for co in spec.grid_out], dtype=np.float64)
        ms = ms.reshape(len(spec.grid_in), len(spec.grid_out))
        by_config[spec.config] = NodeTable(list(spec.grid_in), list(spec.grid_out), ms.tolist())
    count = len(points)
    nodes = {s.node: by_config[s.config] for s in specs}
    if progress:
        progress("whole-model calibration")
    scale, offset, base, calib = _calibrate(analysis, specs, nodes, batch, round_to, factory, timer, warmup, repeats)
    table = LatencyTable(key, settings, nodes, scale, offset, base, calib, skipped, count + len(calib),
                         time.perf_counter() - t0)  # fmt: skip
    if use_cache:
        from agmc_onnx.io import write_json

        folder.mkdir(parents=True, exist_ok=True)
        write_json(table.to_json(), path)
    return LatencyModel(analysis, table, specs)


CHUNK_BYTES = 512 * 2**20  # activations + weights of the one-layer sessions held open together


def _measure_points(points: list[tuple[LayerSpec, int, int]], batch: int, factory: RunnerFactory, timer: Timer,
                    warmup: int, repeats: int, progress: Callable[[str], None] | None,
                    ) -> dict[tuple[str, int, int], float]:  # fmt: skip
    """Median ms of every (layer config, kept in, kept out) one-layer model, minus the per-run overhead.

    Points are measured interleaved in as few chunks as CHUNK_BYTES allows (usually one), not one
    layer at a time: measured one layer at a time, a layer shared by 9 ResNet-56 convs came out 14%
    apart in two builds (the machine's load moved between layers), an error every plan inherits.
    Every chunk also times the same reference layer, and each chunk's medians are scaled by the
    reference's median over all chunks / its median in that chunk, so drift between chunks cancels.
    """
    from agmc_onnx.bench import measure

    null = _null_model()
    null_run = factory(null, _feeds(null, 1))
    chunks: list[list[tuple[tuple[str, int, int], onnx.ModelProto]]] = [[]]
    used = 0
    for spec, ci, co in points:
        proto = spec.build(ci, co, batch)
        size = _session_bytes(proto)
        if chunks[-1] and used + size > CHUNK_BYTES:
            chunks.append([])
            used = 0
        chunks[-1].append(((spec.config, ci, co), proto))
        used += size
    ref_proto = chunks[0][0][1]
    ref_run = factory(ref_proto, _feeds(ref_proto, batch))
    raw: list[tuple[float, dict[tuple[str, int, int], float]]] = []
    for k, chunk in enumerate(chunks):
        if progress:
            progress(f"layer tables: {len(points)} one-layer models, chunk {k + 1}/{len(chunks)}")
        runners = [null_run, ref_run] + [factory(proto, _feeds(proto, batch)) for _, proto in chunk]
        meds = [float(np.median(s)) for s in measure(runners, warmup, repeats, timer)]
        ref = max(1e-9, meds[1] - meds[0])
        raw.append((ref, {key: max(0.0, m - meds[0]) for (key, _), m in zip(chunk, meds[2:], strict=True)}))
    ref_all = float(np.median([r for r, _ in raw]))
    return {key: v * ref_all / r for r, vals in raw for key, v in vals.items()}


def _session_bytes(proto: onnx.ModelProto) -> int:
    """Rough memory of a one-layer session: weights, plus the input and (at most twice) its size as output."""
    weights = sum(4 * int(np.prod(t.dims)) for t in proto.graph.initializer)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    return weights + 3 * 4 * int(np.prod(dims))


def _calibrate(analysis: Analysis, specs: list[LayerSpec], nodes: dict[str, NodeTable], batch: int, round_to: RoundTo,
               factory: RunnerFactory, timer: Timer, warmup: int, repeats: int,
               ) -> tuple[float, float, float, list[dict[str, float]]]:  # fmt: skip
    """Fit measured = scale * table sum + offset on the original, uniform cuts and random plans, interleaved.

    Each copy runs in bench.SESSIONS sessions (its fastest counts); the line is fitted robustly
    (_robust_line). The old least-squares fit fell back to an additive offset alone when rejected:
    one slow measurement once made that offset -324 ms and every pruned plan's prediction negative.
    """
    from agmc_onnx.bench import SESSIONS, measure_sessions
    from agmc_onnx.plan import ImportanceCache, plan_from_counts, round_count
    from agmc_onnx.surgery import prune

    cache = ImportanceCache(analysis, "l1")
    groups = analysis.prunable_groups()
    rng = np.random.default_rng(0)
    plans: list[tuple[str, dict[int, int]]] = [(f"uniform {f:g}", {g.id: round_count(f * g.size, g.size, round_to)
                                                                     for g in groups}) for f in CALIBRATION_KEEP]
    for k in range(CALIBRATION_RANDOM):
        ratios = rng.uniform(0.25, 1.0, len(groups))
        plans.append((f"random {k}", {g.id: round_count(r * g.size, g.size, round_to) for g, r in zip(groups, ratios, strict=True)}))
    raws, runners, labels = [], [], []
    seen: set[tuple[int, ...]] = set()
    for label, counts in plans:
        sig = tuple(counts[g.id] for g in groups)
        if sig in seen:
            continue
        seen.add(sig)
        whole = all(counts[g.id] == g.size for g in groups)
        proto = analysis.model.proto if whole else prune(analysis, plan_from_counts(analysis, counts, cache))
        raws.append(sum(nodes[s.node].at(s.in_len.of_counts(counts), s.out_len.of_counts(counts)) for s in specs))
        feeds = _feeds(proto, batch)
        runners.append([factory(proto, feeds) for _ in range(SESSIONS)])
        labels.append(label)
    samples = measure_sessions(runners, warmup, max(repeats, 10), timer)
    measured = [float(np.median(s)) for s in samples]
    scale, offset = _robust_line(np.array(raws), np.array(measured))
    calib = [{"plan": p, "table_sum_ms": r, "measured_ms": m, "predicted_ms": scale * r + offset}
             for p, r, m in zip(labels, raws, measured, strict=True)]  # fmt: skip
    return scale, offset, measured[0], calib


def _robust_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """y ~ scale * x + offset by Theil-Sen (median of pairwise slopes, then median offset).

    One wild measurement among the six calibration plans (an ORT session stuck 3x slow) moves a
    least-squares line; it does not move the medians. A slope outside [0.25, 4], or a line that goes
    negative inside the data, means noise dominated: the tables are then scaled through the origin
    by the median measured / table ratio.
    """
    ok = x > 0
    through_origin = (float(np.median(y[ok] / x[ok])) if ok.any() else 1.0, 0.0)
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x))
              if abs(x[j] - x[i]) > 1e-9 * max(1.0, abs(x[i]))]  # fmt: skip
    if not slopes:
        return through_origin
    a = float(np.median(slopes))
    b = float(np.median(y - a * x))
    if not 0.25 <= a <= 4.0 or a * float(x.min()) + b <= 0:
        return through_origin
    return a, b


def verification(budget_section: Mapping[str, Any], latency: Mapping[str, Any] | None) -> dict[str, Any]:
    """Predicted vs measured (interleaved original/pruned bench) at the budget's batch, for the report."""
    out = dict(budget_section)
    batch = int(budget_section["batch"])
    rows = {r["model"]: r for r in (latency or {}).get("results", []) if int(r["batch"]) == batch}
    final = next((m for m in ("finetuned", "pruned") if m in rows), None)
    if final is None or "original" not in rows:
        out["measured"] = None
        return out
    measured_ms = float(rows[final]["median_ms"])
    orig_ms = float(rows["original"]["median_ms"])
    speedup = orig_ms / measured_ms
    pred = float(budget_section["predicted_ms"])
    pred_speedup = float(budget_section["predicted_original_ms"]) / pred
    out["measured"] = {
        "original_ms": orig_ms, "pruned_ms": measured_ms, "speedup": speedup,
        "error": (pred - measured_ms) / measured_ms, "speedup_error": (pred_speedup - speedup) / speedup,
    }  # fmt: skip
    met = True
    if budget_section.get("target_speedup") is not None:
        met = met and speedup >= float(budget_section["target_speedup"])
    if budget_section.get("target_latency_ms") is not None:
        met = met and measured_ms <= float(budget_section["target_latency_ms"])
    out["measured"]["met"] = met
    return out
