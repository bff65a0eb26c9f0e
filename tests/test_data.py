"""agmc_onnx.data: every format from small files written here, preprocessing, splits, batching, bad data."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from agmc_onnx.data import (
    Dataset,
    Preprocess,
    batches,
    detect_format,
    fashion_mnist_dir,
    input_spec,
    load_dataset,
    load_sidecar,
    read_idx,
    reward_split,
)
from agmc_onnx.errors import InputError

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------------------------- writers

def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX."""
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def write_idx(root: Path, x: np.ndarray, y: np.ndarray, prefix: str = "train", gz: bool = True) -> None:
    """Write an MNIST-style images/labels pair."""
    root.mkdir(parents=True, exist_ok=True)
    for kind, arr, nd in (("images", x, 3), ("labels", y, 1)):
        name = f"{prefix}-{kind}-idx{nd}-ubyte"
        data = idx_bytes(arr.astype(np.uint8))
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


def images(n: int, h: int = 8, w: int = 8, c: int | None = None) -> np.ndarray:
    """Random uint8 images."""
    shape = (n, h, w) if c is None else (n, h, w, c)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def write_cifar_pickle(root: Path, hundred: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 2-batch CIFAR-10 (or CIFAR-100) python directory, pickled as the originals (protocol 2, bytes keys)."""
    root.mkdir(parents=True)
    data = RNG.integers(0, 256, (12, 3072), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, 12)]
    if hundred:
        for split, sl in (("train", slice(0, 8)), ("test", slice(8, 12))):
            with open(root / split, "wb") as f:
                pickle.dump({b"data": data[sl], b"fine_labels": labels[sl], b"coarse_labels": [0] * 4}, f, 2)
        with open(root / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f, 2)
    else:
        for i, sl in enumerate((slice(0, 4), slice(4, 8)), 1):
            with open(root / f"data_batch_{i}", "wb") as f:
                pickle.dump({b"data": data[sl], b"labels": labels[sl]}, f, 2)
        with open(root / "test_batch", "wb") as f:
            pickle.dump({b"data": data[8:], b"labels": labels[8:]}, f, 2)
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"k{i}".encode() for i in range(10)]}, f, 2)
    return data, np.array(labels)


def png(path: Path, arr: np.ndarray) -> None:
    """Write an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def tiny_model(path: Path, shape: list[int | str]) -> Path:
    """An Identity ONNX model with the given input shape."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)
    g = helper.make_graph([helper.make_node("Identity", ["input"], ["out"])], "g", [inp], [out])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


# ----------------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [True, False])
def test_idx_train_and_test(tmp_path: Path, gz: bool) -> None:
    x, y = images(20), np.arange(20) % 4
    write_idx(tmp_path, x, y, "train", gz)
    write_idx(tmp_path, x[:6], y[:6], "t10k", gz)
    assert detect_format(tmp_path) == "idx"
    tr = load_dataset(tmp_path, "train")
    assert tr.x.shape == (20, 1, 8, 8) and tr.x.dtype == np.float32 and tr.y.dtype == np.int64
    np.testing.assert_allclose(tr.x[:, 0], x / 255, atol=1e-6)
    np.testing.assert_array_equal(tr.y, y)
    assert tr.classes == ["0", "1", "2", "3"]
    assert len(load_dataset(tmp_path, "test")) == 6


def test_idx_classes_txt_and_test_prefix(tmp_path: Path) -> None:
    write_idx(tmp_path, images(5), np.array([0, 1, 2, 0, 1]), "test")
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
    ds = load_dataset(tmp_path, "test")
    assert ds.classes == ["a", "b", "c", "d"]


def test_idx_bad_magic_and_truncated(tmp_path: Path) -> None:
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\0" * 12)
    with pytest.raises(InputError, match="bad magic") as e:
        read_idx(bad)
    assert e.value.path == str(bad)
    data = idx_bytes(images(4))
    (tmp_path / "t.gz").write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(InputError, match="bytes") as e:
        read_idx(tmp_path / "t.gz")
    assert "t.gz" in str(e.value)
    (tmp_path / "c.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot read"):
        read_idx(tmp_path / "c.gz")


def test_idx_count_mismatch_and_missing_labels(tmp_path: Path) -> None:
    write_idx(tmp_path, images(5), np.zeros(4))
    with pytest.raises(InputError, match="4 labels for 5 images") as e:
        load_dataset(tmp_path)
    assert "train-labels" in str(e.value)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="no train-labels"):
        load_dataset(tmp_path)


def test_labels_out_of_range(tmp_path: Path) -> None:
    write_idx(tmp_path, images(4), np.array([0, 1, 9, 2]))
    with pytest.raises(InputError, match="label 9 at index 2 is out of range for 5 classes") as e:
        load_dataset(tmp_path, num_classes=5)
    assert "train-images" in str(e.value)
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    with pytest.raises(InputError, match="out of range for 3"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="3 classes but the model has 10"):
        load_dataset(tmp_path, num_classes=10)


# ----------------------------------------------------------------------------------------------- CIFAR

def test_cifar10_pickle(tmp_path: Path) -> None:
    data, labels = write_cifar_pickle(tmp_path / "cifar-10-batches-py")
    root = tmp_path / "cifar-10-batches-py"
    assert detect_format(root) == "cifar-pickle"
    tr = load_dataset(root, "train")
    assert tr.x.shape == (8, 3, 32, 32) and tr.classes[:2] == ["k0", "k1"]
    np.testing.assert_allclose(tr.x.reshape(8, -1), data[:8] / 255, atol=1e-6)  # CHW order kept
    np.testing.assert_array_equal(tr.y, labels[:8])
    te = load_dataset(root, "test", Preprocess(channels=1, layout="NHWC"))
    assert te.x.shape == (4, 32, 32, 1) and te.layout == "NHWC"


def test_cifar100_pickle(tmp_path: Path) -> None:
    _, labels = write_cifar_pickle(tmp_path / "c100", hundred=True)
    ds = load_dataset(tmp_path / "c100", "test")
    assert ds.num_classes == 100 and ds.classes[5] == "c5"
    np.testing.assert_array_equal(ds.y, labels[8:])


def test_cifar_pickle_refuses_code(tmp_path: Path) -> None:
    root = tmp_path / "evil"
    root.mkdir()

    class Boom:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Boom(), b"labels": [0]}, f, 2)
    with pytest.raises(InputError, match="not allowed") as e:
        load_dataset(root)
    assert "data_batch_1" in str(e.value)


def test_cifar_pickle_missing_key(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f, 2)
    with pytest.raises(InputError, match="lacks 'data' or 'labels'"):
        load_dataset(root, "test")


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_binary(tmp_path: Path, hundred: bool) -> None:
    nlab = 2 if hundred else 1
    rec = RNG.integers(0, 256, (6, nlab + 3072), dtype=np.uint8)
    rec[:, :nlab] = RNG.integers(0, 10, (6, nlab))
    names = ("train.bin", "test.bin") if hundred else ("data_batch_1.bin", "test_batch.bin")
    for name in names:
        (tmp_path / name).write_bytes(rec.tobytes())
    (tmp_path / ("fine_label_names.txt" if hundred else "batches.meta.txt")).write_text(
        "\n".join(f"n{i}" for i in range(10)) + "\n")
    assert detect_format(tmp_path) == "cifar-binary"
    ds = load_dataset(tmp_path, "train")
    np.testing.assert_array_equal(ds.y, rec[:, nlab - 1])
    np.testing.assert_allclose(ds.x.reshape(6, -1), rec[:, nlab:] / 255, atol=1e-6)
    assert ds.classes[3] == "n3"
    (tmp_path / names[1]).write_bytes(rec.tobytes()[:-5])
    with pytest.raises(InputError, match="not a multiple") as e:
        load_dataset(tmp_path, "test")
    assert names[1] in str(e.value)


# ----------------------------------------------------------------------------------------------- ImageFolder

def test_image_folder_png_jpeg(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                png(tmp_path / split / cls / f"{i}.png", images(1, 10, 12, 3)[0])
    png(tmp_path / "train" / "dog" / "x.jpg", images(1, 10, 12, 3)[0])
    assert detect_format(tmp_path) == "imagefolder"
    tr = load_dataset(tmp_path, "train", Preprocess(size=(16, 16), channels=3))
    assert tr.classes == ["cat", "dog"] and tr.x.shape == (7, 3, 16, 16)
    np.testing.assert_array_equal(tr.y, [0, 0, 0, 1, 1, 1, 1])
    te = load_dataset(tmp_path, "test")
    assert te.x.shape == (4, 3, 10, 12)


def test_image_folder_grey_and_sizes(tmp_path: Path) -> None:
    png(tmp_path / "a" / "1.png", images(1, 8, 8)[0])
    png(tmp_path / "b" / "2.png", images(1, 9, 7)[0])
    with pytest.raises(InputError, match="differ in size") as e:
        load_dataset(tmp_path)
    assert "2.png" in str(e.value)
    ds = load_dataset(tmp_path, preprocess=Preprocess(size=(8, 8), resize="pad"))
    assert ds.x.shape == (2, 1, 8, 8)


def test_image_folder_bad_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty or unrecognised"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "split" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match="no class sub-folders") as e:
        load_dataset(tmp_path / "split")
    assert e.value.path == str(tmp_path / "split" / "train")
    (tmp_path / "tree" / "cls" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="class folder has no images") as e:
        load_dataset(tmp_path / "tree")
    assert e.value.path == str(tmp_path / "tree" / "cls")
    bad = tmp_path / "tree" / "cls" / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match="unreadable image") as e:
        load_dataset(tmp_path / "tree")
    assert e.value.path == str(bad)


# ----------------------------------------------------------------------------------------------- npz

def test_npz_formats(tmp_path: Path) -> None:
    x = images(6, 5, 5, 3)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(6) % 3, classes=np.array(["p", "q", "r"]))
    ds = load_dataset(tmp_path / "a.npz")
    assert detect_format(tmp_path / "a.npz") == "npz"
    assert ds.x.shape == (6, 3, 5, 5) and ds.classes == ["p", "q", "r"]
    np.testing.assert_allclose(ds.x, x.transpose(0, 3, 1, 2) / 255, atol=1e-6)
    # NCHW float images in [0, 1] and split keys
    xf = RNG.random((4, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x_train=xf, y_train=np.array([0, 1, 1, 0]), x_test=xf[:2], y_test=np.array([1, 0]))
    tr, te = load_dataset(tmp_path / "b.npz", "train"), load_dataset(tmp_path / "b.npz", "test")
    np.testing.assert_allclose(tr.x, xf)  # float data: scale defaults to 1
    assert len(te) == 2


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((3, 4))}, "needs arrays 'x' and 'y'"),
    ({"x": np.zeros((3, 4)), "y": np.zeros(3)}, r"x must be \[N,H,W\]"),
    ({"x": np.zeros((3, 4, 4)), "y": np.zeros(2)}, "2 labels for 3 images"),
    ({"x": np.zeros((3, 4, 4)), "y": np.array([0.0, 1.5, 1.0])}, "labels must be integers"),
    ({"x": np.zeros((3, 4, 4)), "y": np.array([0, -1, 1])}, "negative label"),
    ({"x": np.zeros((3, 4, 4)), "y": np.zeros((3, 2))}, "y must be 1-D"),
    ({"x": np.zeros((0, 4, 4)), "y": np.zeros(0, np.int64)}, "no examples"),
])
def test_npz_bad_data(tmp_path: Path, arrays: dict, match: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=match) as e:
        load_dataset(tmp_path / "bad.npz")
    assert "bad.npz" in str(e.value)


def test_missing_and_unknown_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputError, match="must be an .npz"):
        load_dataset(tmp_path / "f.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="empty or unrecognised"):
        load_dataset(tmp_path / "d")
    (tmp_path / "z.npz").write_bytes(b"PK not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_dataset(tmp_path / "z.npz")
    with pytest.raises(InputError, match="split must be"):
        load_dataset(tmp_path / "z.npz", "val")


# ----------------------------------------------------------------------------------------------- preprocessing

def test_resize_pad_crop_channels() -> None:
    raw = np.full((2, 4, 4, 1), 255, np.uint8)
    pad = Preprocess(size=(6, 8), resize="pad").apply(raw)
    assert pad.shape == (2, 1, 6, 8) and pad[0, 0, 0, 0] == 0 and pad[0, 0, 1, 2] == 1
    assert pad.sum() == 2 * 16
    crop = Preprocess(size=(2, 2), resize="pad").apply(np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1))
    np.testing.assert_allclose(crop[0, 0] * 255, [[5, 6], [9, 10]], atol=1e-4)
    up = Preprocess(size=(8, 8)).apply(raw)
    np.testing.assert_allclose(up, 1.0, atol=1e-6)
    rgb = Preprocess(channels=3).apply(images(2, 4, 4, 1))
    assert rgb.shape == (2, 3, 4, 4) and np.array_equal(rgb[:, 0], rgb[:, 2])
    grey = Preprocess(channels=1).apply(np.array([[[[255, 0, 0]]]], np.uint8))
    np.testing.assert_allclose(grey.ravel(), [0.299], atol=1e-6)
    rgba = Preprocess().apply(images(1, 2, 2, 4))
    assert rgba.shape == (1, 3, 2, 2)


def test_resize_matches_pillow() -> None:
    x = images(3, 13, 17, 3)
    got = Preprocess(size=(7, 9), layout="NHWC", scale=1.0).apply(x)
    want = np.stack([np.asarray(Image.fromarray(i).resize((9, 7), Image.BILINEAR)) for i in x])
    assert np.abs(got - want).max() <= 1.0


def test_scale_mean_std_layout() -> None:
    raw = np.full((1, 2, 2, 3), 51, np.uint8)
    out = Preprocess(mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.25), layout="NHWC").apply(raw)
    np.testing.assert_allclose(out[0, 0, 0], [(0.2 - 0.1) / 0.5, 0.0, (0.2 - 0.3) / 0.25], atol=1e-6)
    with pytest.raises(InputError, match="std must be positive"):
        Preprocess(std=(0.0,))
    with pytest.raises(InputError, match="layout"):
        Preprocess(layout="CHW")
    with pytest.raises(InputError, match="3 values for 1-channel"):
        Preprocess(mean=(0.1, 0.2, 0.3)).apply(images(1, 2, 2, 1))


def test_preprocess_for_model_shapes(tmp_path: Path) -> None:
    nchw = tiny_model(tmp_path / "a.onnx", ["N", 3, 32, 32])
    pre = Preprocess.for_model(nchw)
    assert (pre.size, pre.channels, pre.layout) == ((32, 32), 3, "NCHW")
    nhwc = tiny_model(tmp_path / "b.onnx", [1, 24, 20, 1])
    assert input_spec(onnx.load(nhwc)) == {"layout": "NHWC", "channels": 1, "size": (24, 20)}
    dyn = tiny_model(tmp_path / "c.onnx", ["N", 1, "H", "W"])
    assert Preprocess.for_model(dyn).size is None
    flat = tiny_model(tmp_path / "d.onnx", ["N", 784])
    with pytest.raises(InputError, match="rank 2") as e:
        Preprocess.for_model(flat)
    assert e.value.path == str(flat)
    with pytest.raises(InputError, match="model file not found"):
        Preprocess.for_model(tmp_path / "none.onnx")
    # the model's preprocessing applied to 28x28 grey data: RGB 32x32
    write_idx(tmp_path / "data", images(3, 28, 28), np.array([0, 1, 2]))
    ds = load_dataset(tmp_path / "data", preprocess=Preprocess.for_model(nchw, resize="pad"))
    assert ds.x.shape == (3, 3, 32, 32) and ds.x[:, :, :2].max() == 0


def test_sidecars(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx", ["N", 3, 8, 8])
    (tmp_path / "m.preprocess.yaml").write_text("scale: 1/255\nmean: [0.5, 0.5, 0.5]\nstd: 0.25\n")
    pre = Preprocess.for_model(model)  # found beside the model
    assert pre.scale == pytest.approx(1 / 255) and pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.25,)
    assert pre.source == str(tmp_path / "m.preprocess.yaml")
    side = tmp_path / "other.json"
    side.write_text(json.dumps({"height": 4, "width": 6, "layout": "nhwc", "resize": "pad"}))
    pre = Preprocess.for_model(model, side, mean=None, std=[0.5])  # flags override, None ignored
    assert (pre.size, pre.layout, pre.resize, pre.std, pre.mean) == ((4, 6), "NHWC", "pad", (0.5,), (0.0,))
    side.write_text(json.dumps({"sclae": 2}))
    with pytest.raises(InputError, match="unknown key") as e:
        load_sidecar(side)
    assert e.value.path == str(side)
    side.write_text(json.dumps({"std": [1, 0, 1]}))
    with pytest.raises(InputError, match="std must be positive") as e:
        Preprocess.for_model(model, side)
    assert e.value.path == str(side)
    side.write_text("{not json")
    with pytest.raises(InputError, match="cannot parse"):
        load_sidecar(side)
    with pytest.raises(InputError, match="sidecar not found"):
        load_sidecar(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------------------- splits and batches

def make_ds(y: np.ndarray) -> Dataset:
    """A dataset whose image i holds the value i."""
    x = np.arange(len(y), dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
    return Dataset(x=x, y=y.astype(np.int64), classes=[str(i) for i in range(int(y.max()) + 1)])


def test_reward_split_balanced_deterministic() -> None:
    ds = make_ds(np.repeat(np.arange(10), 100))
    a, b = reward_split(ds, 500, seed=3), reward_split(ds, 500, seed=3)
    np.testing.assert_array_equal(a.reward.x, b.reward.x)
    assert np.bincount(a.reward.y).tolist() == [50] * 10
    ids_r, ids_s = a.reward.x[:, 0, 0, 0].astype(int), a.rest.x[:, 0, 0, 0].astype(int)
    assert len(set(ids_r) | set(ids_s)) == 1000 and not set(ids_r) & set(ids_s)
    assert np.all(np.diff(ids_r) > 0)  # original order kept
    c = reward_split(ds, 500, seed=4)
    assert not np.array_equal(a.reward.x, c.reward.x)


def test_reward_split_uneven_classes() -> None:
    ds = make_ds(np.array([0] * 3 + [1] * 50 + [2] * 50))
    s = reward_split(ds, 33)
    assert np.bincount(s.reward.y).tolist() == [3, 15, 15]
    with pytest.raises(InputError, match="reward split of 200"):
        reward_split(ds, 200)


def test_batches_views_and_shuffle() -> None:
    ds = make_ds(np.arange(10) % 2)
    got = list(batches(ds, 4))
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert all(np.shares_memory(x, ds.x) for x, _ in got)
    assert [len(y) for _, y in batches(ds, 4, drop_last=True)] == [4, 4]
    seen = np.concatenate([x[:, 0, 0, 0] for x, _ in batches(ds, 3, shuffle=True, seed=1)])
    assert sorted(seen.tolist()) == list(range(10))
    with pytest.raises(InputError):
        next(batches(ds, 0))


def test_dataset_invariants() -> None:
    with pytest.raises(InputError, match="float32"):
        Dataset(x=np.zeros((2, 1, 2, 2)), y=np.zeros(2, np.int64), classes=["a"])
    with pytest.raises(InputError, match="int64"):
        Dataset(x=np.zeros((2, 1, 2, 2), np.float32), y=np.zeros(3, np.int64), classes=["a"])


# ----------------------------------------------------------------------------------------------- shipped data

def test_shipped_fashion_mnist_subset() -> None:
    root = fashion_mnist_dir()
    tr, te = load_dataset(root, "train", num_classes=10), load_dataset(root, "test", num_classes=10)
    assert tr.x.shape == (10000, 1, 28, 28) and te.x.shape == (2000, 1, 28, 28)
    assert np.bincount(tr.y).tolist() == [1000] * 10 and np.bincount(te.y).tolist() == [200] * 10
    assert tr.classes[0] == "T-shirt/top" and tr.classes[9] == "Ankle boot"
    assert 0.0 <= tr.x.min() and tr.x.max() <= 1.0
    size = sum(p.stat().st_size for p in root.iterdir())
    assert size < 10 * 2**20
