"""agmc_onnx.data.preprocess: resize / pad / crop, channels, scaling, model input specs, sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from agmc_onnx.data import Preprocess, input_spec, load_dataset, load_sidecar
from agmc_onnx.errors import InputError
from tests.data.writers import images, tiny_model, write_idx


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


def test_letterbox_keeps_aspect_and_pads_grey() -> None:
    """YOLO's letterbox: a 10x20 image into 16x16 becomes 8x16 centred, grey 114 (8-bit) above and below."""
    raw = np.full((1, 10, 20, 3), 200, np.uint8)
    x = Preprocess(size=(16, 16), resize="letterbox").apply(raw)
    assert x.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(x[0, :, :4], 114 / 255, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 12:], 114 / 255, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 4:12], 200 / 255, atol=1e-5)
    xf = Preprocess(size=(16, 16), resize="letterbox").apply(raw.astype(np.float32) / 255)  # float images: 114/255
    np.testing.assert_allclose(xf, x, atol=1e-5)


def test_channel_order_bgr(tmp_path: Path) -> None:
    """--channel-order bgr reverses RGB after conversion; mean/std apply in the model's order; recorded in JSON."""
    raw = np.zeros((1, 2, 2, 3), np.uint8)
    raw[..., 0] = 255  # red
    x = Preprocess(channel_order="bgr", mean=(0.0, 0.0, 0.5)).apply(raw)
    np.testing.assert_allclose(x[0, :, 0, 0], [0.0, 0.0, 0.5])  # blue, green, red - 0.5
    assert Preprocess(channel_order="bgr").to_json()["channel_order"] == "bgr"
    assert "channel_order" not in Preprocess().to_json()
    with pytest.raises(InputError, match="channel order"):
        Preprocess(channel_order="rbg")
    model = tiny_model(tmp_path / "m.onnx", ["N", 3, 4, 4])
    (tmp_path / "m.preprocess.json").write_text(json.dumps({"channel_order": "BGR"}))
    assert Preprocess.for_model(model).channel_order == "bgr"


def test_ultralytics_metadata_is_the_default(tmp_path: Path) -> None:
    """An Ultralytics export (imgsz + stride in metadata_props) is read letterboxed, /255, RGB, and says so;
    flags and sidecars still win."""
    model = onnx.load(str(tiny_model(tmp_path / "y.onnx", [1, 3, 32, 32])))
    for k, v in {"author": "Ultralytics", "stride": "32", "imgsz": "[32, 32]", "task": "detect"}.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, tmp_path / "y.onnx")
    pre = Preprocess.for_model(tmp_path / "y.onnx")
    assert (pre.size, pre.resize, pre.scale, pre.channel_order) == ((32, 32), "letterbox", 1 / 255, "rgb")
    assert "Ultralytics" in (pre.source or "") and "Ultralytics" in pre.describe()
    assert Preprocess.for_model(tmp_path / "y.onnx", resize="resize").resize == "resize"
    assert Preprocess.for_model(tiny_model(tmp_path / "p.onnx", [1, 3, 32, 32])).resize == "resize"
