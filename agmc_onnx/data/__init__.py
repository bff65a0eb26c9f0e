"""Model input data, labelled or not: loaders, model-driven preprocessing, reward split, batching.

Formats (`load_dataset` tells them apart): an IDX directory (MNIST family, `.gz` or raw), CIFAR-10/100
python-pickle or binary batches, an ImageFolder tree (one sub-folder per class, read with Pillow), an
`.npz` with `x` and `y` (or `x_train`/`y_train`/`x_test`/`y_test`); and, for runs that need no labels,
a flat folder of images or video frames (flat.py) and an `.npy`/`.npz` of input tensors or raw images
(arrays.py); one reader module per format.

Readers yield raw images as [N,H,W,C] (uint8 or float), labels when the data has them, or model input
tensors that are used as they are; one `Preprocess` (preprocess.py) turns images into the model's
input. The search scores candidates on `reward_split(train)` (dataset.py: a seeded slice of TRAIN,
class-balanced when labelled); the test split is for final reports only.
"""

from agmc_onnx.data.arrays import InputInfo, fixed_batch, model_inputs
from agmc_onnx.data.dataset import Dataset, Split, batches, reward_split
from agmc_onnx.data.folder import IMAGE_EXTENSIONS
from agmc_onnx.data.idx import FASHION_MNIST_CLASSES, read_idx
from agmc_onnx.data.load import (
    SHIPPED_FASHION_MNIST,
    SPLITS,
    SYSTEM_FASHION_MNIST,
    detect_format,
    fashion_mnist_dir,
    load_dataset,
)
from agmc_onnx.data.preprocess import (
    CHANNEL_ORDERS,
    LAYOUTS,
    METADATA_KEY,
    RESIZE_MODES,
    SIDECAR_KEYS,
    ULTRALYTICS_SOURCE,
    Preprocess,
    find_sidecar,
    input_spec,
    load_sidecar,
    recorded_preprocess,
    sidecar_path,
    ultralytics_preprocess,
)
from agmc_onnx.data.raw import PathLike

__all__ = [
    "CHANNEL_ORDERS", "ULTRALYTICS_SOURCE", "InputInfo", "fixed_batch", "model_inputs", "ultralytics_preprocess", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS", "LAYOUTS", "METADATA_KEY", "RESIZE_MODES", "SHIPPED_FASHION_MNIST", "SIDECAR_KEYS",
    "SPLITS", "SYSTEM_FASHION_MNIST", "Dataset", "PathLike", "Preprocess", "Split", "batches", "detect_format",
    "fashion_mnist_dir", "find_sidecar", "input_spec", "load_dataset", "load_sidecar", "read_idx",
    "recorded_preprocess", "reward_split", "sidecar_path",
]
