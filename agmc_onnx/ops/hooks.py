"""Surgery hooks: node rewrites beyond slicing initializers (Conv `group`, Reshape/Split/Slice constants)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

if TYPE_CHECKING:
    from agmc_onnx.surgery import SurgeryContext

Hook = Callable[["SurgeryContext", onnx.NodeProto, dict[str, Any]], None]
HOOKS: dict[str, Hook] = {}


def hook(kind: str) -> Callable[[Hook], Hook]:
    """Register a surgery hook under `kind` (what rules pass to Propagator.hook)."""

    def deco(fn: Hook) -> Hook:
        HOOKS[kind] = fn
        return fn

    return deco


def _set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    """Replace (or add) attribute `name`."""
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


@hook("group_from_input")
def group_from_input(s: SurgeryContext, node: onnx.NodeProto, info: dict[str, Any]) -> None:
    """Depthwise conv: `group` becomes the number of kept input channels."""
    _set_attr(node, "group", int(s.new_len(info["tensor"]) // info["per_group"]))


@hook("shape_channel")
def shape_channel(s: SurgeryContext, node: onnx.NodeProto, info: dict[str, Any]) -> None:
    """Reshape/Expand target: the entry for the channel axis becomes the kept width of the output (divided
    by the group count for the C/g entry of a channel shuffle's split)."""
    shape = s.const(info["shape"]).copy()
    shape.reshape(-1)[info["index"]] = s.new_len(info["tensor"]) // int(info.get("divisor", 1))
    s.set_const(info["shape"], shape)


@hook("resize_sizes")
def resize_sizes(s: SurgeryContext, node: onnx.NodeProto, info: dict[str, Any]) -> None:
    """Resize `sizes`: the channel entry becomes the kept width."""
    sizes = s.const(info["sizes"]).copy()
    sizes.reshape(-1)[1] = s.new_len(info["tensor"])
    s.set_const(info["sizes"], sizes)


@hook("split_sizes")
def split_sizes(s: SurgeryContext, node: onnx.NodeProto, info: dict[str, Any]) -> None:
    """Split on channels: explicit sizes = kept channels per output (as input or attribute by opset)."""
    keep = s.keep_mask(info["tensor"])
    sizes, off = [], 0
    for n in info["sizes"]:
        sizes.append(int(keep[off : off + n].sum()))
        off += n
    arr = np.array(sizes, dtype=np.int64)
    attrs = {a.name for a in node.attribute}
    if "num_outputs" in attrs:
        for i, a in enumerate(node.attribute):
            if a.name == "num_outputs":
                del node.attribute[i]
                break
    if s.opset >= 13:
        if len(node.input) > 1 and node.input[1] and s.const(node.input[1]) is not None:
            s.set_const(node.input[1], arr)
        else:
            name = s.fresh_const(f"{node.name}_split", arr)
            if len(node.input) < 2:
                node.input.append(name)
            else:
                node.input[1] = name
    else:
        _set_attr(node, "split", sizes)


@hook("slice_channel")
def slice_channel(s: SurgeryContext, node: onnx.NodeProto, info: dict[str, Any]) -> None:
    """Slice on channels: start/end become the number of kept channels before each bound."""
    keep = s.keep_mask(info["tensor"])
    start = int(keep[: info["start"]].sum())
    end = int(keep[: info["end"]].sum())
    k = info["index"]
    if any(a.name == "starts" for a in node.attribute):
        a = {x.name: list(onnx.helper.get_attribute_value(x)) for x in node.attribute}
        st, en = a["starts"], a["ends"]
        st[k], en[k] = start, end
        _set_attr(node, "starts", st)
        _set_attr(node, "ends", en)
        return
    for idx, val in ((1, start), (2, end)):
        arr = s.const(node.input[idx]).copy()
        arr.reshape(-1)[k] = val
        s.set_const(node.input[idx], arr)


def _kept_positions(s: SurgeryContext, tensor: str, positions: list[int]) -> list[int]:
    """Positions (in the pruned tensor) of the original positions that are kept, in the same order."""
    keep = s.keep_mask(tensor)
    new_pos = np.cumsum(keep) - 1
    return [int(new_pos[i]) for i in positions if keep[i]]


@hook("gather_channel")
def gather_channel(s: SurgeryContext, node: onnx.NodeProto, info: dict[str, Any]) -> None:
    """Gather on channels: indices become the pruned positions of the kept gathered channels."""
    old = s.const(info["indices"])
    new = np.array(_kept_positions(s, info["tensor"], info["positions"]), dtype=old.dtype)
    if old.ndim == 0:
        new = new.reshape(())
    name = s.fresh_const(f"{node.name}_indices", new)
    node.input[1] = name


@hook("slice_to_gather")
def slice_to_gather(s: SurgeryContext, node: onnx.NodeProto, info: dict[str, Any]) -> None:
    """Strided Slice on channels: becomes a Gather of the kept positions (a stride has no pruned form)."""
    idx = np.array(_kept_positions(s, info["tensor"], info["positions"]), dtype=np.int64)
    name = s.fresh_const(f"{node.name}_indices", idx)
    data = node.input[0]
    del node.input[:]
    node.input.extend([data, name])
    del node.attribute[:]
    node.attribute.append(onnx.helper.make_attribute("axis", int(info["axis"])))
    node.op_type = "Gather"
