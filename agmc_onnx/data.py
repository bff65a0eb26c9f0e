"""Labelled image-classification data: loaders, model-driven preprocessing, reward split, batching.

Formats (`load_dataset` tells them apart): an IDX directory (MNIST family, `.gz` or raw), CIFAR-10/100
python-pickle or binary batches, an ImageFolder tree (one sub-folder per class, read with Pillow) and
an `.npz` with `x` and `y` (or `x_train`/`y_train`/`x_test`/`y_test`).

Every loader yields raw images as [N,H,W,C] (uint8 or float) plus int64 labels; one `Preprocess`
turns them into the model's input: resize (antialiased bilinear) or centre pad/crop, grey<->RGB,
`x * scale`, `(x - mean) / std` per channel, NCHW or NHWC. `Preprocess.for_model` reads the size,
channels and layout from the ONNX input and takes scale/mean/std from flags or a JSON/YAML sidecar.

The search scores candidates on `reward_split(train)` (a seeded, class-balanced slice of TRAIN); the
test split is for final reports only.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agmc_onnx.errors import InputError

PathLike = str | os.PathLike[str]

#: The shipped class-balanced subset (10k train + 2k test) in a source checkout.
SHIPPED_FASHION_MNIST = Path(__file__).resolve().parents[1] / "fixtures" / "data"
#: Where Debian's `dataset-fashion-mnist` puts the full set.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLITS = ("train", "test")
LAYOUTS = ("NCHW", "NHWC")
RESIZE_MODES = ("resize", "pad")
_CHUNK = 4096  # images converted at a time (bounds the float temporaries)


# ----------------------------------------------------------------------------------------------- types

@dataclass
class Dataset:
    """Preprocessed images `x` (float32, [N,C,H,W] or [N,H,W,C] per `layout`) and int64 labels `y`."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    layout: str = "NCHW"
    source: str = ""

    def __post_init__(self) -> None:
        """Check the invariants every consumer relies on."""
        if self.x.ndim != 4 or self.x.dtype != np.float32:
            raise InputError(f"dataset images must be float32 [N,C,H,W]/[N,H,W,C], got {self.x.dtype} "
                             f"{list(self.x.shape)}", self.source or None)
        if self.y.shape != (len(self.x),) or self.y.dtype != np.int64:
            raise InputError(f"dataset labels must be int64 [{len(self.x)}], got {self.y.dtype} "
                             f"{list(self.y.shape)}", self.source or None)

    def __len__(self) -> int:
        """Number of examples."""
        return len(self.y)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def subset(self, indices: np.ndarray | Sequence[int]) -> Dataset:
        """The examples at `indices` (a copy), same classes and layout."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(self, x=self.x[idx], y=self.y[idx])


class Split(NamedTuple):
    """`reward` scores search candidates; `rest` is the remaining training data (fine-tuning)."""

    reward: Dataset
    rest: Dataset


@dataclass(frozen=True)
class Preprocess:
    """How raw images become model input; None keeps what the data has."""

    size: tuple[int, int] | None = None       # (H, W)
    channels: int | None = None               # 1 or 3
    layout: str = "NCHW"
    resize: str = "resize"                    # "resize" (bilinear, antialiased) | "pad" (centre pad/crop, 0)
    scale: float | None = None                # None: 1/255 for integer images, 1 for float images
    mean: tuple[float, ...] = (0.0,)          # after scale, per channel (or one value for all)
    std: tuple[float, ...] = (1.0,)
    source: str | None = field(default=None, compare=False)  # sidecar/model it came from, for errors

    def __post_init__(self) -> None:
        """Validate the fields, naming the sidecar or model they came from."""
        where = self.source
        if self.layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got {self.layout!r}", where)
        if self.resize not in RESIZE_MODES:
            raise InputError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}", where)
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
        """From the ONNX input shape, then a sidecar (given, or `<model>.preprocess.{json,yaml,yml}`), then flags.

        `model` is a path, an `onnx.ModelProto` or anything with a `.proto` (a ModelGraph). Flags whose
        value is None are ignored, so CLI options can be passed straight through.
        """
        proto, path = _model_proto(model)
        fields = input_spec(proto, path)
        if sidecar is None and path is not None:
            sidecar = next((c for c in _sidecar_candidates(Path(path)) if c.is_file()), None)
        if sidecar is not None:
            fields.update(load_sidecar(sidecar))
            fields["source"] = str(sidecar)
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**_coerce(fields, fields.get("source")))

    # -- application -------------------------------------------------------------------------------

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
            if out_c < chunk.shape[3]:  # the cheaper order: fewer channels through the resize
                chunk = _spatial(_convert_channels(chunk, out_c), out_h, out_w, self.resize)
            else:
                chunk = _convert_channels(_spatial(chunk, out_h, out_w, self.resize), out_c)
            chunk *= np.float32(scale)
            if mean.any():
                chunk -= mean
            if (std != 1).any():
                chunk /= std
            out[lo:lo + _CHUNK] = chunk.transpose(0, 3, 1, 2) if self.layout == "NCHW" else chunk
        return out


# ----------------------------------------------------------------------------------------------- model and sidecar

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


def _sidecar_candidates(model_path: Path) -> list[Path]:
    """`resnet.onnx` -> resnet.preprocess.json / .yaml / .yml beside it."""
    stem = model_path.with_suffix("")
    return [stem.with_name(stem.name + ".preprocess" + ext) for ext in (".json", ".yaml", ".yml")]


SIDECAR_KEYS = frozenset({"size", "height", "width", "channels", "layout", "resize", "scale", "mean", "std"})


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
    if not isinstance(data, dict):
        raise InputError("preprocessing sidecar must be a mapping", p)
    unknown = sorted(set(data) - SIDECAR_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {unknown}; allowed: {sorted(SIDECAR_KEYS)}", p)
    data = dict(data)
    if "height" in data or "width" in data:
        if not ("height" in data and "width" in data):
            raise InputError("give both height and width (or size: [H, W])", p)
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
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise InputError(f"bad preprocessing value: {exc}", where) from exc
    return out


# ----------------------------------------------------------------------------------------------- pixel ops

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


def _spatial(x: np.ndarray, out_h: int, out_w: int, mode: str) -> np.ndarray:
    """[n,H,W,C] -> [n,out_h,out_w,C] by bilinear resize or centre zero-pad / centre crop."""
    _, h, w, _ = x.shape
    if (h, w) == (out_h, out_w):
        return x
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


# ----------------------------------------------------------------------------------------------- readers

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the name ends in .gz; errors name the file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read file: {exc}", path) from exc


def read_idx(path: PathLike) -> np.ndarray:
    """One IDX file (raw or .gz) as a numpy array, its size checked against its header."""
    p = Path(path)
    data = _read_bytes(p)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise InputError("not an IDX file (bad magic number)", p)
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise InputError("truncated IDX header", p)
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise InputError(f"IDX header says {dims} ({expected} bytes) but the file has {len(data)} bytes", p)
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def _find_one(root: Path, prefixes: Sequence[str], kind: str) -> Path:
    """The single file in `root` named `<prefix>-<kind>-idx?-ubyte[.gz]` for one of the prefixes."""
    hits = sorted(p for p in root.iterdir() if p.is_file() and any(
        p.name.startswith(f"{pre}-{kind}-idx") for pre in prefixes))
    if not hits:
        raise InputError(f"no {prefixes[0]}-{kind}-idx*-ubyte[.gz] file", root)
    raw = [h for h in hits if h.suffix != ".gz"]
    return raw[0] if raw else hits[0]


def _read_classes_txt(root: Path) -> list[str] | None:
    """Class names from `classes.txt` (one per line) in `root`, if present."""
    p = root / "classes.txt"
    if not p.is_file():
        return None
    names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise InputError("classes.txt is empty", p)
    return names


def _load_idx(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None, str]:
    """IDX directory -> raw [N,H,W,C], labels, class names (classes.txt or Fashion-MNIST), source."""
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    ip, lp = _find_one(root, prefixes, "images"), _find_one(root, prefixes, "labels")
    images, labels = read_idx(ip), read_idx(lp)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3, 4):
        raise InputError(f"IDX images must be [N,H,W] or [N,H,W,C], got {list(images.shape)}", ip)
    if labels.ndim != 1:
        raise InputError(f"IDX labels must be 1-D, got {list(labels.shape)}", lp)
    if len(labels) != len(images):
        raise InputError(f"{len(labels)} labels for {len(images)} images in {ip.name}", lp)
    classes = _read_classes_txt(root)
    if classes is None and "fashion" in str(root.resolve()).lower():
        classes = list(FASHION_MNIST_CLASSES)
    return images, _labels(labels, lp), classes, str(ip)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/bytes and numpy arrays only: a CIFAR batch cannot run code when loaded."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only whitelisted globals."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR python batch as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ...
        raise InputError(f"not a readable CIFAR python batch: {exc}", path) from exc
    if not isinstance(obj, dict):
        raise InputError("a CIFAR python batch must hold a dict", path)
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _names(values: Sequence[Any]) -> list[str]:
    """Decode byte strings."""
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _cifar_images(data: Any, path: Path) -> np.ndarray:
    """[N,3072] row-major CHW bytes -> [N,32,32,3] view."""
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] != 3072:
        raise InputError(f"CIFAR data must be [N,3072], got {list(arr.shape)}", path)
    return arr.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_pickle_files(root: Path, split: str) -> tuple[list[Path], str, Path | None]:
    """Batch files, label key and meta file of a CIFAR-10 or CIFAR-100 python directory."""
    if (root / "data_batch_1").is_file() or (root / "test_batch").is_file():
        files = sorted(root.glob("data_batch_[0-9]*")) if split == "train" else [root / "test_batch"]
        return [f for f in files if f.suffix == ""], "labels", root / "batches.meta"
    return [root / split], "fine_labels", root / "meta"


def _load_cifar_pickle(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None, str]:
    """CIFAR-10/100 python version."""
    files, key, meta = _cifar_pickle_files(root, split)
    if not files or not all(f.is_file() for f in files):
        raise InputError(f"CIFAR python {split} batch missing", files[0] if files else root)
    xs, ys = [], []
    for f in files:
        d = _unpickle(f)
        if "data" not in d or key not in d:
            raise InputError(f"CIFAR batch lacks 'data' or '{key}' (has {sorted(d)})", f)
        x = _cifar_images(d["data"], f)
        y = np.asarray(d[key])
        if y.shape != (len(x),):
            raise InputError(f"{y.size} labels for {len(x)} images", f)
        xs.append(x)
        ys.append(_labels(y, f))
    classes = None
    if meta is not None and meta.is_file():
        m = _unpickle(meta)
        names = m.get("label_names") if key == "labels" else m.get("fine_label_names")
        classes = _names(names) if names is not None else None
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    return x, np.concatenate(ys), classes, str(files[0])


def _load_cifar_binary(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None, str]:
    """CIFAR-10 (1 label byte) / CIFAR-100 (coarse + fine label bytes) binary version."""
    if (root / "data_batch_1.bin").is_file() or (root / "test_batch.bin").is_file():
        files = sorted(root.glob("data_batch_*.bin")) if split == "train" else [root / "test_batch.bin"]
        label_bytes, meta = 1, root / "batches.meta.txt"
    else:
        files, label_bytes, meta = [root / f"{split}.bin"], 2, root / "fine_label_names.txt"
    xs, ys = [], []
    record = label_bytes + 3072
    for f in files:
        data = _read_bytes(f)
        if not data or len(data) % record:
            raise InputError(f"size {len(data)} is not a multiple of the {record}-byte CIFAR record", f)
        rec = np.frombuffer(data, np.uint8).reshape(-1, record)
        xs.append(_cifar_images(rec[:, label_bytes:], f))
        ys.append(_labels(rec[:, label_bytes - 1], f))
    classes = None
    if meta.is_file():
        classes = [ln.strip() for ln in meta.read_text(encoding="utf-8").splitlines() if ln.strip()] or None
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    return x, np.concatenate(ys), classes, str(files[0])


def _image_folder_root(root: Path, split: str) -> Path:
    """`root/train` (or `root/test`, `root/val`) when present, else `root` itself holds the classes."""
    for name in (("train",) if split == "train" else ("test", "val")):
        if (root / name).is_dir():
            return root / name
    return root


def _load_image_folder(root: Path, split: str, pre: Preprocess,
                       ) -> tuple[np.ndarray, np.ndarray, list[str] | None, str]:
    """ImageFolder tree: class per sub-folder; images read with Pillow and brought to one size."""
    from PIL import Image, UnidentifiedImageError

    base = _image_folder_root(root, split)
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise InputError("no class sub-folders (expected <root>/<class>/<image>)", base)
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        imgs = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not imgs:
            raise InputError(f"class folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})", d)
        files += [(p, label) for p in imgs]
    arrays: list[np.ndarray] = []
    mode = None if pre.channels is None else ("L" if pre.channels == 1 else "RGB")
    for p, _ in files:
        try:
            with Image.open(p) as im:
                im.load()
                m = mode or ("L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
                arr = np.asarray(im.convert(m), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"unreadable image: {exc}", p) from exc
        arr = arr[..., None] if arr.ndim == 2 else arr
        if pre.size is not None and arr.shape[:2] != tuple(pre.size):
            arr = _spatial(arr[None].astype(np.float32), pre.size[0], pre.size[1], pre.resize)[0]
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        arrays.append(arr)
    mode = mode or ("RGB" if any(a.shape[2] == 3 for a in arrays) else "L")
    if mode == "RGB":
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        odd = next(p for (p, _), a in zip(files, arrays, strict=True) if a.shape != arrays[0].shape)
        raise InputError(f"images differ in size ({sorted(s[:2] for s in shapes)[:3]}...) and the model "
                         "input size is unknown: give a size", odd)
    x = np.stack(arrays)
    y = np.fromiter((label for _, label in files), np.int64, len(files))
    return x, y, [d.name for d in class_dirs], str(base)


def _npz_images(x: np.ndarray, path: Path) -> np.ndarray:
    """npz images [N,H,W], [N,H,W,C] or [N,C,H,W] (C in 1/3/4) -> [N,H,W,C] view."""
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and x.shape[3] in (1, 3, 4):
        return x
    if x.ndim == 4 and x.shape[1] in (1, 3, 4):
        return x.transpose(0, 2, 3, 1)
    raise InputError(f"x must be [N,H,W], [N,H,W,C] or [N,C,H,W] with C in 1/3/4, got {list(x.shape)}", path)


def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None, str]:
    """.npz with x/y (one split) or x_train/y_train/x_test/y_test; optional `classes`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk, yk = (f"x_{split}", f"y_{split}") if f"x_{split}" in keys else ("x", "y")
            if xk not in keys or yk not in keys:
                raise InputError(f"npz needs arrays 'x' and 'y' (or 'x_{split}'/'y_{split}'); has {sorted(keys)}",
                                 path)
            x, y = z[xk], z[yk]
            classes = [str(c) for c in z["classes"].tolist()] if "classes" in keys else None
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise InputError(f"not a readable .npz: {exc}", path) from exc
    if x.dtype.kind not in "uif":
        raise InputError(f"x must be numeric, got {x.dtype}", path)
    if y.ndim != 1:
        raise InputError(f"y must be 1-D labels, got shape {list(y.shape)}", path)
    x = _npz_images(x, path)
    if len(x) != len(y):
        raise InputError(f"{len(y)} labels for {len(x)} images", path)
    return x, _labels(y, path), classes, str(path)


def _labels(y: np.ndarray, path: Path) -> np.ndarray:
    """Integer labels as int64, non-negative; errors name the file."""
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputError("labels must be integers", path)
    elif y.dtype.kind not in "ui":
        raise InputError(f"labels must be integers, got {y.dtype}", path)
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise InputError(f"negative label {int(y.min())}", path)
    return y


# ----------------------------------------------------------------------------------------------- public API

def detect_format(path: PathLike) -> str:
    """'npz', 'idx', 'cifar-pickle', 'cifar-binary' or 'imagefolder'."""
    p = Path(path)
    if not p.exists():
        raise InputError("dataset path not found", p)
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return "npz"
        raise InputError("a dataset file must be an .npz; IDX, CIFAR and ImageFolder data are directories", p)
    names = {q.name for q in p.iterdir()}
    if any("-idx" in n and "-ubyte" in n for n in names):
        return "idx"
    if names & {"data_batch_1", "test_batch"} or {"train", "meta"} <= names and (p / "meta").is_file():
        return "cifar-pickle"
    if names & {"data_batch_1.bin", "test_batch.bin", "train.bin", "test.bin"}:
        return "cifar-binary"
    if any((p / n).is_dir() for n in names):
        return "imagefolder"
    raise InputError("empty or unrecognised dataset directory (expected IDX, CIFAR batches, class "
                     "sub-folders, or give an .npz)", p)


def load_dataset(path: PathLike, split: str = "train", preprocess: Preprocess | None = None, *,
                 num_classes: int | None = None, limit: int | None = None, fmt: str | None = None) -> Dataset:
    """Load one split of a labelled image set and preprocess it for a model.

    `num_classes` (e.g. the model's number of logits) bounds the labels; `limit` keeps the first N
    examples; `fmt` overrides format detection.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    pre = preprocess or Preprocess()
    p = Path(path)
    fmt = fmt or detect_format(p)
    loaders = {"idx": _load_idx, "cifar-pickle": _load_cifar_pickle, "cifar-binary": _load_cifar_binary,
               "npz": _load_npz}
    if fmt == "imagefolder":
        raw, y, classes, source = _load_image_folder(p, split, pre)
    elif fmt in loaders:
        raw, y, classes, source = loaders[fmt](p, split)
    else:
        raise InputError(f"unknown dataset format {fmt!r}", p)
    if len(y) == 0:
        raise InputError(f"the {split} split has no examples", source)
    if limit is not None:
        raw, y = raw[:limit], y[:limit]
    n_cls = num_classes or (len(classes) if classes else int(y.max()) + 1)
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        raise InputError(f"data has {len(classes)} classes but the model has {num_classes} outputs", source)
    if int(y.max()) >= n_cls:
        bad = int(np.flatnonzero(y >= n_cls)[0])
        raise InputError(f"label {int(y[bad])} at index {bad} is out of range for {n_cls} classes", source)
    if classes is None:
        classes = [str(i) for i in range(n_cls)]
    x = pre.apply(raw, source)
    return Dataset(x=x, y=y, classes=list(classes), layout=pre.layout, source=source)


def reward_split(train: Dataset, n: int = 5000, seed: int = 0) -> Split:
    """A seeded, class-balanced held-out slice of TRAIN (`reward`) and the rest; indices keep their order."""
    if not 0 < n < len(train):
        raise InputError(f"reward split of {n} asked from {len(train)} training examples", train.source or None)
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(train.y == c)) for c in range(train.num_classes)]
    by_class = [ids for ids in by_class if len(ids)]
    quota = np.zeros(len(by_class), np.int64)
    left = n
    while left:  # fill equal shares; classes that run out pass their share on
        open_ = [i for i, ids in enumerate(by_class) if quota[i] < len(ids)]
        share, extra = divmod(left, len(open_))
        for rank, i in enumerate(rng.permutation(open_)):
            take = min(share + (1 if rank < extra else 0), len(by_class[i]) - quota[i])
            quota[i] += take
            left -= take
    picked = np.sort(np.concatenate([ids[:q] for ids, q in zip(by_class, quota, strict=True)]))
    mask = np.ones(len(train), bool)
    mask[picked] = False
    return Split(reward=train.subset(picked), rest=train.subset(np.flatnonzero(mask)))


def batches(ds: Dataset, size: int, *, shuffle: bool = False, seed: int = 0,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x, y) batches: views of `ds` in order, or copies of just each batch when shuffled."""
    if size < 1:
        raise InputError(f"batch size must be positive, got {size}")
    n = len(ds)
    order = np.random.default_rng(seed).permutation(n) if shuffle else None
    stop = n - n % size if drop_last else n
    for lo in range(0, stop, size):
        if order is None:
            yield ds.x[lo:lo + size], ds.y[lo:lo + size]
        else:
            idx = np.sort(order[lo:lo + size])
            yield ds.x[idx], ds.y[idx]


def fashion_mnist_dir(full: bool = False) -> Path:
    """The shipped subset; with `full`, the system copy of the whole set when installed."""
    if full and SYSTEM_FASHION_MNIST.is_dir():
        return SYSTEM_FASHION_MNIST
    if not SHIPPED_FASHION_MNIST.is_dir():
        raise InputError("shipped Fashion-MNIST subset not found (a source checkout has it)", SHIPPED_FASHION_MNIST)
    return SHIPPED_FASHION_MNIST
