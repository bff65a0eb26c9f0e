"""What op rules and their rewrites may call: the propagation API and the surgery API, as Protocols.

agmc_onnx.groups.Propagator satisfies Propagation and agmc_onnx.surgery's context satisfies Surgery
structurally, so ops/ imports neither module: ops sits below groups and surgery, never beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import onnx

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from agmc_onnx.ops.atoms import Layout


class GraphView(Protocol):
    """The analysed graph as rules see it (only Reshape's run-time shape reader walks producers)."""

    @property
    def producer(self) -> Mapping[str, onnx.NodeProto]:
        """Tensor name -> the node that writes it."""
        ...


@runtime_checkable
class Rewrite(Protocol):
    """A rule's surgery rewrite for one node: a small frozen record that knows how to apply itself to the
    node as onnx-graphsurgeon holds it (attrs dict, inputs list of tensors, op)."""

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Rewrite `node` (attributes, constant inputs) for the plan that `s` holds."""
        ...


@runtime_checkable
class Propagation(Protocol):
    """The channel-id propagation state a rule reads and writes (agmc_onnx.groups.Propagator)."""

    @property
    def opset(self) -> int:
        """Default-domain opset of the model."""
        ...

    @property
    def model(self) -> GraphView:
        """The analysed graph."""
        ...

    def ids(self, tensor: str) -> list[int] | None:
        """Channel ids of a tensor, None when it has no tracked channel axis."""
        ...

    def axis(self, tensor: str) -> int:
        """Position of a tensor's channel axis (1 unless a rule moved it)."""
        ...

    def split(self, tensor: str) -> tuple[int, int] | None:
        """(g, C/g) when the tensor's channel axis is split in two (channel shuffle), else None."""
        ...

    def set(self, tensor: str, ids: list[int], axis: int = 1, split: tuple[int, int] | None = None) -> None:
        """Set the channel ids of an output tensor on `axis` (on `axis`, `axis`+1 when `split`)."""
        ...

    def layout(self, tensor: str) -> Layout | None:
        """The factored layout of a tensor whose channels one list on one axis cannot describe (attention
        heads spread over several axes, or merged with the batch), else None."""
        ...

    def set_layout(self, tensor: str, layout: Layout) -> None:
        """Set an output's channels as a factored layout (stored as a plain id list when one axis holds them)."""
        ...

    def statistic(self, ids: list[int], node: onnx.NodeProto) -> None:
        """Record that `node` computes a statistic over these channels (LayerNorm, a mean over channels): removing
        one changes the statistic, so the pruned network is the one with the channel removed, not masked."""
        ...

    def new(self, n: int, node: onnx.NodeProto | None, frozen: str | None = None) -> list[int]:
        """n fresh ids created by `node`."""
        ...

    def unite(self, a: list[int], b: list[int]) -> None:
        """Unite ids position-wise."""
        ...

    def const(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor, if any."""
        ...

    def shape(self, name: str) -> list[Any] | None:
        """Inferred dims of a tensor."""
        ...

    def has_consumers(self, name: str) -> bool:
        """True when some node reads `name` or it is a graph output."""
        ...

    def member(self, tensor: str, node: onnx.NodeProto, axis: int, role: str, ids: list[int]) -> None:
        """Record that initializer `tensor` holds channels `ids` along `axis`."""
        ...

    def hook(self, node: onnx.NodeProto, rewrite: Rewrite) -> None:
        """Register a surgery rewrite for this node."""
        ...

    def opaque(self, tensor: str, reason: str, axis: int = 1) -> None:
        """Give a tensor fresh frozen ids on `axis` (channels of unknown origin)."""
        ...

    def freeze(self, ids: list[int], reason: str) -> None:
        """Freeze the classes of `ids`."""
        ...


@runtime_checkable
class Surgery(Protocol):
    """What a rewrite may read and change while the pruned graph is written (agmc_onnx.surgery)."""

    @property
    def opset(self) -> int:
        """Default-domain opset of the model."""
        ...

    def keep_mask(self, tensor: str) -> np.ndarray:
        """Kept positions of an activation's channel axis."""
        ...

    def new_len(self, tensor: str) -> int:
        """Channel count of an activation after pruning."""
        ...

    def const(self, name: str) -> np.ndarray:
        """Current value of a constant (rewrites name only constants their rule checked)."""
        ...

    def set_const(self, name: str, value: np.ndarray) -> None:
        """Replace a constant's value (every reader sees the new value)."""
        ...

    def fresh_const(self, base: str, value: np.ndarray) -> gs.Constant:
        """A new constant named after `base` (made unique), for a rewrite to wire into its node."""
        ...
