"""Model-driven preprocessing: raw images [N,H,W,C] -> the model's float32 input.

`Preprocess` resizes (antialiased bilinear), centre pads/crops or letterboxes (YOLO's: aspect ratio kept,
grey 114 padding), converts grey<->RGB, orders channels RGB or BGR, scales, normalises per channel and
lays out NCHW or NHWC; `Preprocess.for_model` reads size, channels and layout from the ONNX input,
Ultralytics' export metadata (`imgsz`, `stride`: letterbox, /255, RGB) when present, and
scale/mean/std from flags or a JSON/YAML sidecar.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agmc_onnx.data.raw import PathLike
from agmc_onnx.errors import InputError

LAYOUTS = ("NCHW", "NHWC")
RESIZE_MODES = ("resize", "pad", "letterbox")
CHANNEL_ORDERS = ("rgb", "bgr")
LETTERBOX_GREY = 114  # Ultralytics' letterbox padding, in 8-bit pixel units (114/255 for float images)
_CHUNK = 4096  # images converted at a time (bounds the float temporaries)


@dataclass(frozen=True)
class Preprocess:
    """How raw images become model input; None keeps what the data has."""

    size: tuple[int, int] | None = None       # (H, W)
    channels: int | None = None               # 1 or 3
    layout: str = "NCHW"
    resize: str = "resize"                    # "resize" (bilinear, antialiased) | "pad" (centre pad/crop, 0)
                                              # | "letterbox" (fit keeping aspect ratio, pad grey 114)
    scale: float | None = None                # None: 1/255 for integer images, 1 for float images
    mean: tuple[float, ...] = (0.0,)          # after scale, per channel (or one value for all)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "rgb"                # of 3-channel input; mean/std are given in this order
    source: str | None = field(default=None, compare=False)  # sidecar/model it came from, for errors

    def __post_init__(self) -> None:
        """Validate the fields, naming the sidecar or model they came from."""
        where = self.source
        if self.layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got {self.layout!r}", where)
        if self.resize not in RESIZE_MODES:
            raise InputError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}", where)
        if self.channel_order not in CHANNEL_ORDERS:
            raise InputError(f"channel order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}", where)
        if self.channels is not None and self.channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {self.channels}", where)
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise InputError(f"size must be two positive integers (H, W), got {self.size}", where)
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"scale must be a positive number, got {self.scale}", where)
        for key in ("mean", "std"):
            vals = getattr(self, key)
            if not vals or len(vals) not in (1, 3) or not all(np.isfinite(v) for v in vals):
                raise InputError(f"{key} must be 1 or 3 finite numbers, got {list(vals)}", where)
        if any(v <= 0 for v in self.std):
            raise InputError(f"std must be positive, got {list(self.std)}", where)
        for key in ("mean", "std"):
            if self.channels is not None and len(getattr(self, key)) not in (1, self.channels):
                raise InputError(f"{key} has {len(getattr(self, key))} values for a {self.channels}-channel "
                                 "input", where)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def for_model(cls, model: Any, sidecar: PathLike | None = None, **overrides: Any) -> Preprocess:
        """Flags > sidecar (given, or `<model>.preprocess.{json,yaml,yml}`) > the file's metadata > Ultralytics'
        export metadata > its input shape.

        `model` is a path, an `onnx.ModelProto` or anything with a `.proto` and `.path` (a ModelGraph).
        The metadata is what agmc-onnx records in every model it writes (METADATA_KEY), so a pruned or
        fine-tuned file is read with the preprocessing it was made with. Flags whose value is None are
        ignored, so CLI options can be passed straight through.
        """
        proto, path = _model_proto(model)
        fields = input_spec(proto, path)
        yolo = ultralytics_preprocess(proto)
        if yolo:
            fields.update(yolo)
            fields["source"] = ULTRALYTICS_SOURCE
        recorded = recorded_preprocess(proto, path)
        if recorded:
            fields.update(recorded)
            fields["source"] = f"{path or 'the model'} (metadata {METADATA_KEY})"
        if sidecar is None and path is not None:
            sidecar = find_sidecar(path)
        if sidecar is not None:
            fields.update(load_sidecar(sidecar))
            fields["source"] = str(sidecar)
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**_coerce(fields, fields.get("source")))

    def to_json(self) -> dict[str, Any]:
        """The fields a sidecar or a model's metadata holds (the same keys load_sidecar reads)."""
        out: dict[str, Any] = {"layout": self.layout, "resize": self.resize, "mean": list(self.mean),
                               "std": list(self.std)}  # fmt: skip
        if self.size is not None:
            out["size"] = list(self.size)
        if self.channels is not None:
            out["channels"] = self.channels
        if self.scale is not None:
            out["scale"] = self.scale
        if self.channel_order != "rgb":
            out["channel_order"] = self.channel_order
        return out

    def describe(self) -> str:
        """One line: what raw images go through, and where the recipe came from."""
        size = "their own size" if self.size is None else f"{self.size[0]}x{self.size[1]} ({self.resize})"
        scale = "pixel/255 for 8-bit images" if self.scale is None else f"x{self.scale:g}"
        norm = "" if not any(self.mean) and all(s == 1 for s in self.std) else \
            f", mean {list(self.mean)}, std {list(self.std)}"
        chans = "" if self.channels is None else f", {self.channels} channel{'s' if self.channels > 1 else ''}"
        order = f" {self.channel_order.upper()}" if self.channels in (None, 3) else ""
        return (f"images to {size}{chans}{order}, {scale}{norm}, {self.layout}"
                f" (from {self.source or 'the input shape'})")

    def apply(self, raw: np.ndarray, source: str = "") -> np.ndarray:
        """Raw images [N,H,W,C] (uint8 or float) -> float32 model input, converted chunk by chunk."""
        if raw.ndim != 4:
            raise InputError(f"images must be [N,H,W,C], got shape {list(raw.shape)}", source or None)
        n, h, w, c = raw.shape
        if c not in (1, 3, 4):
            raise InputError(f"images have {c} channels; 1 (grey), 3 (RGB) or 4 (RGBA) supported", source or None)
        out_c = self.channels or (3 if c == 4 else c)
        out_h, out_w = self.size or (h, w)
        scale = self.scale if self.scale is not None else (1.0 if raw.dtype.kind == "f" else 1.0 / 255.0)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if len(mean) not in (1, out_c) or len(std) not in (1, out_c):
            raise InputError(f"mean/std have {max(len(mean), len(std))} values for {out_c}-channel input",
                             self.source or source or None)
        shape = (n, out_c, out_h, out_w) if self.layout == "NCHW" else (n, out_h, out_w, out_c)
        out = np.empty(shape, np.float32)
        for lo in range(0, n, _CHUNK):
            chunk = raw[lo:lo + _CHUNK].astype(np.float32)
            fill = pad_fill(raw.dtype, self.resize)
            if out_c < chunk.shape[3]:  # the cheaper order: fewer channels through the resize
                chunk = resize_or_pad(_convert_channels(chunk, out_c), out_h, out_w, self.resize, fill)
            else:
                chunk = _convert_channels(resize_or_pad(chunk, out_h, out_w, self.resize, fill), out_c)
            if self.channel_order == "bgr" and out_c == 3:
                chunk = np.ascontiguousarray(chunk[..., ::-1])
            chunk *= np.float32(scale)
            if mean.any():
                chunk -= mean
            if (std != 1).any():
                chunk /= std
            out[lo:lo + _CHUNK] = chunk.transpose(0, 3, 1, 2) if self.layout == "NCHW" else chunk
        return out


def _model_proto(model: Any) -> tuple[Any, str | None]:
    """(ModelProto, path or None) from a path, a proto or a ModelGraph-like object."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise InputError("model file not found", path)
        try:
            return onnx.load(str(path), load_external_data=False), str(path)
        except Exception as exc:  # onnx raises DecodeError and friends
            raise InputError(f"not a readable ONNX model ({type(exc).__name__})", path) from exc
    if isinstance(model, onnx.ModelProto):
        return model, None
    proto = getattr(model, "proto", None)
    if isinstance(proto, onnx.ModelProto):
        return proto, getattr(model, "path", None)
    raise InputError(f"cannot read a model input shape from {type(model).__name__}")


def input_spec(proto: Any, path: str | None = None) -> dict[str, Any]:
    """size / channels / layout of the model's image input (the first graph input that is not a weight)."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if not inputs:
        raise InputError("model has no graph input", path)
    tt = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
    if len(dims) != 4:
        raise InputError(f"model input {inputs[0].name!r} has rank {len(dims)}; an image model takes "
                         "a 4-D input [N,C,H,W] or [N,H,W,C]", path)
    chan = (1, 3, 4)
    if dims[3] in chan and dims[1] not in chan:
        layout, c, h, w = "NHWC", dims[3], dims[1], dims[2]
    else:
        layout, c, h, w = "NCHW", dims[1], dims[2], dims[3]
    spec: dict[str, Any] = {"layout": layout}
    if c is not None:
        spec["channels"] = c
    if h is not None and w is not None:
        spec["size"] = (h, w)
    return spec


METADATA_KEY = "agmc_onnx.preprocess"  # metadata_props entry of written models: to_json() as JSON
ULTRALYTICS_SOURCE = "Ultralytics export metadata (imgsz, stride): letterbox, pixel/255, RGB"


def ultralytics_preprocess(proto: Any) -> dict[str, Any]:
    """What an Ultralytics export implies (its metadata_props hold `imgsz` and `stride`): letterbox to imgsz,
    pixel/255, RGB, no mean/std, as its predictor feeds the model. Empty for any other model."""
    meta = {p.key: p.value for p in proto.metadata_props}
    if "imgsz" not in meta or "stride" not in meta:
        return {}
    try:
        size = ast.literal_eval(meta["imgsz"])
        size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    except (ValueError, SyntaxError, TypeError, IndexError):
        return {}
    return {"size": size, "resize": "letterbox", "scale": 1.0 / 255.0, "channel_order": "rgb",
            "mean": (0.0,), "std": (1.0,)}


def recorded_preprocess(proto: Any, path: str | None = None) -> dict[str, Any]:
    """The preprocessing a model file records in its metadata (empty when it records none)."""
    text = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"metadata {METADATA_KEY} is not JSON ({exc})", path) from exc
    return _check_keys(data, path)


def find_sidecar(model_path: PathLike) -> Path | None:
    """The preprocessing sidecar beside a model file, if there is one."""
    return next((c for c in _sidecar_candidates(Path(model_path)) if c.is_file()), None)


def sidecar_path(model_path: PathLike) -> Path:
    """Where a model's JSON sidecar goes: MODEL.preprocess.json beside it."""
    return _sidecar_candidates(Path(model_path))[0]


def _sidecar_candidates(model_path: Path) -> list[Path]:
    """`resnet.onnx` -> resnet.preprocess.json / .yaml / .yml beside it."""
    stem = model_path.with_suffix("")
    return [stem.with_name(stem.name + ".preprocess" + ext) for ext in (".json", ".yaml", ".yml")]


SIDECAR_KEYS = frozenset({"size", "height", "width", "channels", "layout", "resize", "scale", "mean", "std",
                          "channel_order"})


def load_sidecar(path: PathLike) -> dict[str, Any]:
    """Read a JSON or YAML preprocessing sidecar: keys from SIDECAR_KEYS, anything else is an error."""
    p = Path(path)
    if not p.is_file():
        raise InputError("preprocessing sidecar not found", p)
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise InputError(f"cannot parse preprocessing sidecar: {exc}", p) from exc
    return _check_keys(data, str(p))


def _check_keys(data: Any, where: str | None) -> dict[str, Any]:
    """A sidecar's or metadata's mapping, keys checked against SIDECAR_KEYS, height/width folded into size."""
    if not isinstance(data, dict):
        raise InputError("preprocessing must be a mapping", where)
    unknown = sorted(set(data) - SIDECAR_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {unknown}; allowed: {sorted(SIDECAR_KEYS)}", where)
    data = dict(data)
    if "height" in data or "width" in data:
        if not ("height" in data and "width" in data):
            raise InputError("give both height and width (or size: [H, W])", where)
        data["size"] = (data.pop("height"), data.pop("width"))
    return data


def _coerce(fields: Mapping[str, Any], where: str | None) -> dict[str, Any]:
    """Types from JSON/YAML/flags (lists, strings, ints) into Preprocess field types."""
    out = dict(fields)
    try:
        if out.get("size") is not None:
            size = out["size"]
            size = (size, size) if isinstance(size, (int, float)) else tuple(size)
            out["size"] = tuple(int(v) for v in size)
        if out.get("channels") is not None:
            out["channels"] = int(out["channels"])
        if out.get("scale") is not None:
            s = out["scale"]
            out["scale"] = 1.0 / float(s.split("/", 1)[1]) if isinstance(s, str) and s.startswith("1/") else float(s)
        for key in ("mean", "std"):
            if out.get(key) is not None:
                v = out[key]
                out[key] = (float(v),) if isinstance(v, (int, float, str)) else tuple(float(x) for x in v)
        if isinstance(out.get("layout"), str):
            out["layout"] = out["layout"].upper()
        if isinstance(out.get("channel_order"), str):
            out["channel_order"] = out["channel_order"].lower()
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise InputError(f"bad preprocessing value: {exc}", where) from exc
    return out


def _convert_channels(x: np.ndarray, out_c: int) -> np.ndarray:
    """[n,H,W,C] float -> [n,H,W,out_c]: drop alpha, grey->RGB by repetition, RGB->grey by ITU-R 601 luma."""
    if x.shape[3] == 4:
        x = x[..., :3]
    c = x.shape[3]
    if c == out_c:
        return x
    if c == 1:
        return np.repeat(x, out_c, axis=3)
    return (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] bilinear weights with half-pixel centres, antialiased when shrinking (as Pillow)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    taps = np.arange(n_in) + 0.5
    w = np.clip(1.0 - np.abs(taps[None, :] - centres[:, None]) / support, 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def pad_fill(dtype: np.dtype, mode: str) -> float:
    """The padding value in raw pixel units: letterbox grey 114 (114/255 for float images), else 0."""
    if mode != "letterbox":
        return 0.0
    return float(LETTERBOX_GREY) if np.dtype(dtype).kind in "ui" else LETTERBOX_GREY / 255.0


def resize_or_pad(x: np.ndarray, out_h: int, out_w: int, mode: str, fill: float = 0.0) -> np.ndarray:
    """[n,H,W,C] -> [n,out_h,out_w,C] by bilinear resize, centre zero-pad / centre crop, or letterbox (resize
    keeping the aspect ratio to fit, then centre-pad with `fill`, as Ultralytics' LetterBox)."""
    _, h, w, _ = x.shape
    if (h, w) == (out_h, out_w):
        return x
    if mode == "letterbox":
        r = min(out_h / h, out_w / w)
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        inner = resize_or_pad(x, nh, nw, "resize")
        top, left = round((out_h - nh) / 2 - 0.1), round((out_w - nw) / 2 - 0.1)
        out = np.full((x.shape[0], out_h, out_w, x.shape[3]), fill, np.float32)
        out[:, top:top + nh, left:left + nw] = inner
        return out
    if mode == "resize":
        ry, rx = _resize_matrix(h, out_h), _resize_matrix(w, out_w)
        n, _, _, c = x.shape
        t = (rx @ x.transpose(0, 3, 2, 1).reshape(-1, w, h)).reshape(n, c, out_w, h)   # along W
        return (ry @ t.transpose(0, 1, 3, 2)).transpose(0, 2, 3, 1)                     # along H
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), np.float32)
    sy, sx = max(0, (h - out_h) // 2), max(0, (w - out_w) // 2)        # crop offsets in the source
    dy, dx = max(0, (out_h - h) // 2), max(0, (out_w - w) // 2)        # pad offsets in the output
    ch, cw = min(h, out_h), min(w, out_w)
    out[:, dy:dy + ch, dx:dx + cw] = x[:, sy:sy + ch, sx:sx + cw]
    return out
