"""Dataset layer (bench.data) on small fixtures made here; the real Fashion-MNIST files only where installed."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from bench import data as bd
from bench.data import idx as bd_idx
from bench.data.__main__ import main as cli_main

REPO = Path(__file__).resolve().parents[1]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_DEBIAN = all((DEBIAN_DIR / f"{n}.gz").is_file() for n in (
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


# ------------------------------------------------------------------------------------------ fixture helpers


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def make_mnist_like(folder: Path, n_train: int = 30, n_test: int = 20, gz: bool = False, seed: int = 0) -> dict:
    """Four idx files of random 28x28 images with labels cycling 0..9 (shuffled)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    """Hide /usr/share/datasets so that lookups see only the fixtures."""
    monkeypatch.setattr(bd_idx, "SYSTEM_DIRS", {"fashion-mnist": (tmp_path / "no-such-system-dir",), "mnist": ()})


# ------------------------------------------------------------------------------------------ registry


def test_registry_specs():
    assert bd.DEFAULT_DATASET == "fashion-mnist" and bd.DEFAULT_EVAL_DATASET == "fashion-mnist-embedded"
    names = {"fashion-mnist", "fashion-mnist-embedded", "mnist", "cifar10", "imagenette", "imagefolder"}
    assert names <= set(bd.DATASETS)
    spec = bd.dataset_spec("Fashion_MNIST")
    assert (spec.name, spec.num_classes, spec.input_shape) == ("fashion-mnist", 10, (1, 28, 28))
    assert spec.class_names[0] == "T-shirt/top" and len(spec.class_names) == 10
    assert bd.dataset_spec("cifar10").input_shape == (3, 32, 32)
    assert bd.dataset_spec("imagenette").input_shape == (3, 224, 224)
    assert len(bd.dataset_spec("imagenette").class_names) == 10
    assert bd.dataset_spec("fashion-mnist-embedded").splits == ("test",)


@pytest.mark.parametrize("call", [
    lambda: bd.dataset_spec("imagenet-21k"),
    lambda: bd.load_dataset("imagenet-21k", "test"),
    lambda: bd.load_tensors("imagenet-21k", "train"),
])
def test_unknown_dataset_lists_known_names(call):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet-21k'; known datasets: .*fashion-mnist.*mnist"):
        call()


def test_unknown_split():
    with pytest.raises(ValueError, match="no split 'validation'"):
        bd.load_dataset("fashion-mnist", "validation")
    with pytest.raises(ValueError, match="no split 'train'"):
        bd.load_tensors("fashion-mnist-embedded", "train")


# ------------------------------------------------------------------------------------------ idx reader


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    got = bd.read_idx(write_idx(tmp_path / "images", images, gz))
    assert got.dtype == torch.uint8 and tuple(got.shape) == (2, 3, 4)
    assert np.array_equal(got.numpy(), images)
    assert bd.read_idx(write_idx(tmp_path / "labels", labels, gz)).tolist() == [3, 1, 4, 1, 5]


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_bad_magic(tmp_path, gz):
    path = write_idx(tmp_path / "images", np.zeros((2, 2, 2), np.uint8))
    raw = bytearray(path.read_bytes())
    raw[0:4] = b"\x12\x34\x08\x03"
    path = tmp_path / ("bad.gz" if gz else "bad")
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    with pytest.raises(bd.IdxFormatError, match=r"bad idx magic number 0x12340803"):
        bd.read_idx(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: raw[:2] + b"\x0d" + raw[3:], "bad idx magic number 0x00000d03"),   # float type code
    (lambda raw: raw[:-1], "need 8 bytes of data but the file has 7"),              # truncated
    (lambda raw: raw + b"\x00", "need 8 bytes of data but the file has 9"),          # trailing bytes
    (lambda raw: raw[:6], "truncated header"),
    (lambda raw: b"\x1f\x8b" + raw, "corrupted gzip stream"),
])
def test_read_idx_rejects_malformed(tmp_path, mutate, message):
    raw = write_idx(tmp_path / "x", np.zeros((2, 2, 2), np.uint8)).read_bytes()
    (tmp_path / "y").write_bytes(mutate(raw))
    with pytest.raises(bd.IdxFormatError, match=message):
        bd.read_idx(tmp_path / "y")


# ------------------------------------------------------------------------------------------ Fashion-MNIST / MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_torchvision_raw_dir(tmp_path, no_system_dirs, gz):
    arrays = make_mnist_like(tmp_path / "FashionMNIST" / "raw", gz=gz)
    ds = bd.load_dataset("fashion-mnist", "train", data_root=tmp_path, download=False)
    assert len(ds) == 30 and ds.classes == list(bd.FASHION_MNIST_CLASSES)
    x, y = ds[0]
    assert isinstance(y, int) and y == int(arrays["train"][1][0])
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 28, 28)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(x[0], torch.from_numpy(arrays["train"][0][0]).float() / 255)

    xs, ys = bd.load_tensors("fashion-mnist", "test", data_root=tmp_path, download=False)
    assert xs.shape == (20, 1, 28, 28) and xs.dtype == torch.float32 and ys.dtype == torch.int64
    assert np.array_equal(ys.numpy(), arrays["t10k"][1])
    assert torch.equal(xs[3], bd.load_dataset("fashion-mnist", "test", tmp_path, download=False)[3][0])
    xl, yl = bd.load_tensors("fashion-mnist", "train", data_root=tmp_path, limit=7, download=False)
    assert xl.shape == (7, 1, 28, 28) and yl.shape == (7,)


def test_idx_dataset_matches_torchvision_fashion_mnist(tmp_path, no_system_dirs):
    """Our dataset and torchvision's FashionMNIST (+ ToTensor) agree item by item on the same raw files."""
    from torchvision import datasets as tvd
    from torchvision import transforms

    make_mnist_like(tmp_path / "FashionMNIST" / "raw", n_train=10, n_test=12)
    ours = bd.load_dataset("fashion-mnist", "test", data_root=tmp_path, download=False)
    theirs = tvd.FashionMNIST(str(tmp_path), train=False, download=False, transform=transforms.ToTensor())
    assert len(ours) == len(theirs) == 12
    for i in range(12):
        (a, ya), (b, yb) = ours[i], theirs[i]
        assert torch.equal(a, b) and ya == yb and type(ya) is type(yb) is int


def test_lookup_order_raw_dir_then_system_dir(tmp_path, monkeypatch):
    system = tmp_path / "system"
    make_mnist_like(system, n_test=20, gz=True, seed=1)
    monkeypatch.setattr(bd_idx, "SYSTEM_DIRS", {"fashion-mnist": (system,), "mnist": ()})
    root = tmp_path / "root"
    files = bd.find_idx_files("fashion-mnist", "test", root)
    assert files == (system / "t10k-images-idx3-ubyte.gz", system / "t10k-labels-idx1-ubyte.gz")
    assert len(bd.load_dataset("fashion-mnist", "test", root, download=False)) == 20
    make_mnist_like(root / "FashionMNIST" / "raw", n_test=5, seed=2)  # torchvision's layout wins
    raw = root / "FashionMNIST" / "raw"
    expected = (raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte")
    assert bd.find_idx_files("fashion-mnist", "test", root) == expected
    assert len(bd.load_dataset("fashion-mnist", "test", root, download=False)) == 5
    # MNIST has no system fallback: only <root>/MNIST/raw
    assert bd.find_idx_files("mnist", "test", root) is None
    make_mnist_like(root / "MNIST" / "raw", n_test=4, seed=3)
    assert bd.load_tensors("mnist", "test", root, download=False)[0].shape == (4, 1, 28, 28)


def test_mismatched_idx_files_rejected(tmp_path, no_system_dirs):
    raw = tmp_path / "FashionMNIST" / "raw"
    make_mnist_like(raw)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with pytest.raises(bd.IdxFormatError, match="has 20 images but .* has 19 labels"):
        bd.load_dataset("fashion-mnist", "test", tmp_path, download=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.full(20, 10, np.uint8))
    with pytest.raises(bd.IdxFormatError, match="label 10 out of range"):
        bd.load_dataset("fashion-mnist", "test", tmp_path, download=False)


def test_missing_without_download_says_where(tmp_path, no_system_dirs):
    with pytest.raises(bd.DatasetUnavailableError) as info:
        bd.load_dataset("fashion-mnist", "test", data_root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "t10k-images-idx3-ubyte" in message
    assert "dataset-fashion-mnist" in message and "fashion-mnist-embedded" in message


# ------------------------------------------------------------------------------------------ download failures


def _fail_url(*args, **kwargs):
    raise URLError("[Errno -3] Temporary failure in name resolution")


def _fail_os(*args, **kwargs):
    raise OSError(101, "Network is unreachable")


@pytest.mark.parametrize("name, module, fail, folder", [
    ("fashion-mnist", "torchvision.datasets.mnist", _fail_url, "FashionMNIST/raw"),
    ("mnist", "torchvision.datasets.mnist", _fail_os, "MNIST/raw"),
    ("cifar10", "torchvision.datasets.cifar", _fail_url, ""),
    ("cifar10", "torchvision.datasets.cifar", _fail_os, ""),
    ("cifar100", "torchvision.datasets.cifar", _fail_url, ""),
    ("imagenette", "torchvision.datasets.imagenette", _fail_url, ""),
])
def test_download_failure_gives_clear_message(tmp_path, monkeypatch, no_system_dirs, name, module, fail, folder):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), "download_and_extract_archive", fail)
    with pytest.raises(bd.DatasetUnavailableError) as info:
        bd.load_dataset(name, "test", data_root=tmp_path, download=True)
    message = str(info.value)
    assert f"could not download {name}" in message and "no network access" in message
    assert str(tmp_path / folder if folder else tmp_path) in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no urllib traceback chained
    assert "Traceback" not in message


# ------------------------------------------------------------------------------------------ CIFAR-10


def make_cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> dict:
    """cifar-10-batches-py as torchvision expects it: pickled dicts with 'data' uint8 [n, 3072] and 'labels'."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        entry = {"batch_label": f"{name} of 6", "labels": labels, "data": data,
                 "filenames": [f"img_{name}_{i}.png" for i in range(per_batch)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
        batches[name] = (data, labels)
    meta = {"num_cases_per_batch": per_batch, "label_names": list(bd.CIFAR10_CLASSES), "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return batches


def test_cifar10_fake_batches(tmp_path):
    """The fixtures take the path real files take: bench.data reads the pickles itself (no MD5 to switch off)."""
    batches = make_cifar10(tmp_path)
    train = bd.load_dataset("cifar10", "train", data_root=tmp_path, download=False)
    test = bd.load_dataset("cifar10", "test", data_root=tmp_path, download=False)
    assert len(train) == 20 and len(test) == 4 and list(test.classes) == list(bd.CIFAR10_CLASSES)
    x, y = test[1]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 32, 32) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    data, labels = batches["test_batch"]
    assert y == labels[1]
    assert torch.equal(x, torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 255)
    xs, ys = bd.load_tensors("cifar10", "train", data_root=tmp_path, download=False)
    assert xs.shape == (20, 3, 32, 32) and ys.dtype == torch.int64
    assert torch.equal(xs[5], train[5][0]) and int(ys[5]) == train[5][1]
    assert bd.load_tensors("cifar10", "test", tmp_path, limit=3, download=False)[0].shape == (3, 3, 32, 32)


def test_cifar10_missing_or_corrupted_says_which(tmp_path):
    with pytest.raises(bd.DatasetUnavailableError, match=r"cifar10 not found under .*cifar-10-batches-py \(missing "
                       r"test_batch, batches.meta\) and download=False; extract cifar-10-python.tar.gz"):
        bd.load_dataset("cifar10", "test", data_root=tmp_path, download=False)
    make_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-100])  # truncated
    with pytest.raises(bd.DatasetFormatError, match=r"test_batch: not a readable CIFAR pickle"):
        bd.load_dataset("cifar10", "test", data_root=tmp_path, download=False)
    assert len(bd.load_dataset("cifar10", "train", data_root=tmp_path, download=False)) == 20


# ------------------------------------------------------------------------------------------ ImageFolder / Imagenette


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def halves_image(width: int = 512, height: int = 256) -> np.ndarray:
    """Left half black, right half white (RGB)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, width // 2:] = 255
    return image


def make_imagefolder(root: Path, classes=("cat", "dog", "eel"), splits=("train", "val")) -> None:
    rng = np.random.default_rng(0)
    for split in splits:
        for c, name in enumerate(classes):
            for k in range(2):
                size = (240 + 20 * k, 300 - 30 * c)
                save_png(root / split / name / f"{k}.png", rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))


def test_imagefolder_resize_crop_to_224(tmp_path):
    make_imagefolder(tmp_path)
    save_png(tmp_path / "val" / "dog" / "halves.png", halves_image())
    train = bd.load_dataset("imagefolder", "train", data_root=tmp_path)
    test = bd.load_dataset("imagefolder", "test", data_root=tmp_path)  # "test" reads <root>/val
    assert train.classes == ["cat", "dog", "eel"] and len(train) == 6 and len(test) == 7
    for x, _ in (train[0], train[5], test[0]):
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, 224, 224)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # 512x256 -> resize (shorter side already 256) -> centre crop 224 = columns 144..367: half black, half white
    index = [i for i, (p, _) in enumerate(test.samples) if p.endswith("halves.png")][0]
    x, y = test[index]
    assert y == 1
    assert float(x[:, :, :112].max()) == 0.0 and float(x[:, :, 112:].min()) == 1.0
    spec = bd.dataset_spec("imagefolder", data_root=tmp_path)
    assert spec.num_classes == 3 and spec.class_names == ("cat", "dog", "eel") and spec.input_shape == (3, 224, 224)
    xs, ys = bd.load_tensors("imagefolder", "train", data_root=tmp_path, limit=4)
    assert xs.shape == (4, 3, 224, 224) and ys.tolist() == [0, 0, 1, 1]


def test_imagefolder_flat_tree_and_errors(tmp_path):
    for c, name in enumerate(("a", "b")):
        save_png(tmp_path / "flat" / name / "0.png", np.full((230, 260, 3), 40 * (c + 1), np.uint8))
    ds = bd.load_dataset("imagefolder", "test", data_root=tmp_path / "flat")
    assert len(ds) == 2 and ds.classes == ["a", "b"]
    x, _ = ds[1]
    assert torch.allclose(x, torch.full((3, 224, 224), 80 / 255))  # no mean/std normalisation
    with pytest.raises(ValueError, match="needs data_root"):
        bd.load_dataset("imagefolder", "train")
    make_imagefolder(tmp_path / "trainonly", splits=("train",))
    with pytest.raises(bd.DatasetUnavailableError, match="no test/val folder"):
        bd.load_dataset("imagefolder", "test", data_root=tmp_path / "trainonly")
    with pytest.raises(bd.DatasetUnavailableError, match="not a directory"):
        bd.load_dataset("imagefolder", "test", data_root=tmp_path / "nothing")


def test_imagefolder_hidden_folders_are_no_classes(tmp_path):
    """A hidden folder with images (Jupyter's .ipynb_checkpoints/) is no class: labels match the class names.

    torchvision's own ImageFolder lists it as class 0 and shifts every label by one, while the registry
    reports the visible folders only; both now use the one class list of :func:`class_folders`.
    """
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            for k in range(2):
                save_png(tmp_path / split / name / f"{k}.png", np.full((230, 250, 3), 60 * c + 20 * k, np.uint8))
        save_png(tmp_path / split / ".ipynb_checkpoints" / "0-checkpoint.png", np.full((230, 250, 3), 255, np.uint8))
        (tmp_path / split / ".empty-hidden").mkdir()  # torchvision would also reject an empty "class"
    spec = bd.dataset_spec("imagefolder", data_root=tmp_path)
    assert spec.class_names == ("cat", "dog") and spec.num_classes == 2
    for split in ("train", "test"):
        ds = bd.load_dataset("imagefolder", split, data_root=tmp_path)
        assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1} and len(ds) == 4
        for path, label in ds.samples:
            assert spec.class_names[label] == Path(path).parent.name  # the label names the image's folder
        assert [y for _, y in ds.samples] == ds.targets == [0, 0, 1, 1]
    xs, ys = bd.load_tensors("imagefolder", "test", data_root=tmp_path)
    assert ys.tolist() == [0, 0, 1, 1] and float(xs.max()) < 1.0  # the white checkpoint image was not read


def test_imagefolder_splits_must_share_classes(tmp_path):
    make_imagefolder(tmp_path, classes=("cat", "dog", "eel"), splits=("train",))
    make_imagefolder(tmp_path, classes=("cat", "eel"), splits=("val",))  # "eel" would be label 1 here, 2 in train
    with pytest.raises(ValueError, match=r"class folders of .*val \(cat, eel\) differ from those of .*train"):
        bd.load_dataset("imagefolder", "test", data_root=tmp_path)
    assert len(bd.load_dataset("imagefolder", "train", data_root=tmp_path)) == 6


def test_imagenette_ignores_hidden_folders(tmp_path):
    for wnid in bd.IMAGENETTE_WNIDS:
        save_png(tmp_path / "val" / wnid / f"{wnid}_0.png", np.zeros((160, 213, 3), np.uint8))
    save_png(tmp_path / "val" / ".ipynb_checkpoints" / "x.png", np.zeros((160, 213, 3), np.uint8))
    ds = bd.load_dataset("imagenette", "test", data_root=tmp_path, download=False)
    assert tuple(ds.classes) == bd.IMAGENETTE_WNIDS and [y for _, y in ds.samples] == list(range(10))


@pytest.mark.parametrize("layout", ["imagenette2-160", "imagenette2", ""])
def test_imagenette_tree(tmp_path, layout):
    base = tmp_path / layout if layout else tmp_path
    for c, wnid in enumerate(bd.IMAGENETTE_WNIDS):
        save_png(base / "val" / wnid / f"{wnid}_0.png", np.full((160, 213, 3), 20 * c, np.uint8))
    ds = bd.load_dataset("imagenette", "test", data_root=tmp_path, download=False)
    assert len(ds) == 10 and [y for _, y in ds.samples] == list(range(10))
    x, y = ds[3]
    assert tuple(x.shape) == (3, 224, 224) and y == 3 and torch.allclose(x, torch.full_like(x, 60 / 255))
    with pytest.raises(bd.DatasetUnavailableError, match="imagenette train split not found"):
        bd.load_dataset("imagenette", "train", data_root=tmp_path, download=False)


def test_imagenette_rejects_other_classes(tmp_path):
    make_imagefolder(tmp_path / "imagenette2-320")
    with pytest.raises(ValueError, match="not Imagenette's 10 WordNet ids.*'imagefolder'"):
        bd.load_dataset("imagenette", "train", data_root=tmp_path, download=False)


# ------------------------------------------------------------------------------------------ embedded subset


def test_embedded_subset_shapes_and_balance():
    images, labels, indices = bd.load_embedded()
    assert images.shape == (1000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (1000,) and labels.dtype == torch.int64 and indices.dtype == torch.int64
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0 and float(images.max()) > 0.9
    assert torch.bincount(labels, minlength=10).tolist() == [100] * 10
    assert int(indices.min()) >= 0 and int(indices.max()) < 10000
    assert torch.all(torch.diff(indices) > 0)  # distinct, in test-set order
    # every k-th image (run.py's --skip) still spans all classes
    for skip in (2, 10):
        assert torch.bincount(labels[::skip], minlength=10).min() > 0
    x50, y50, i50 = bd.load_embedded(limit=50)
    assert x50.shape == (50, 1, 28, 28) and y50.shape == i50.shape == (50,)
    assert torch.equal(i50, indices[:50]) and torch.equal(x50, images[:50]) and torch.equal(y50, labels[:50])


def test_embedded_by_name_is_default_eval_set():
    ds = bd.load_dataset(bd.DEFAULT_EVAL_DATASET, "test")
    x, y = ds[7]
    images, labels = bd.load_tensors("fashion-mnist-embedded", "test", limit=20)
    assert len(ds) == 1000 and tuple(x.shape) == (1, 28, 28) and isinstance(y, int) and y == int(labels[7])
    assert images.shape == (20, 1, 28, 28) and torch.equal(images[7], x)
    assert torch.equal(ds.test_indices, bd.load_embedded()[2])


def test_embedded_sha256_recorded_and_checked(tmp_path):
    record = json.loads(bd.EMBEDDED_PATH.with_suffix(".json").read_text())
    data = bd.EMBEDDED_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["sha256"] and len(data) == record["size_bytes"] < 1_000_000
    copy = tmp_path / "eval.npz"
    shutil.copy(bd.EMBEDDED_PATH, copy)
    shutil.copy(bd.EMBEDDED_PATH.with_suffix(".json"), tmp_path / "eval.json")
    assert bd.load_embedded(limit=10, path=copy)[0].shape == (10, 1, 28, 28)
    corrupted = bytearray(data)
    corrupted[len(corrupted) // 2] ^= 0xFF
    copy.write_bytes(bytes(corrupted))
    with pytest.raises(bd.EmbeddedDataError, match="is corrupted: its SHA-256 is [0-9a-f]{64} but eval.json records"):
        bd.load_embedded(path=copy)
    (tmp_path / "eval.json").unlink()
    with pytest.raises(bd.EmbeddedDataError, match="cannot read the SHA-256"):
        bd.load_embedded(path=copy)
    with pytest.raises(bd.EmbeddedDataError, match="missing"):
        bd.load_embedded(path=tmp_path / "absent.npz")


def test_build_embedded_from_fixture_is_reproducible(tmp_path):
    source = tmp_path / "src"
    arrays = make_mnist_like(source, n_test=40, gz=True)
    test_images, test_labels = arrays["t10k"]
    first = bd.build_embedded_subset(tmp_path / "a" / "sub.npz", source_dir=source, per_class=3)
    second = bd.build_embedded_subset(tmp_path / "b" / "sub.npz", source_dir=source, per_class=3)
    assert (tmp_path / "a" / "sub.npz").read_bytes() == (tmp_path / "b" / "sub.npz").read_bytes()
    assert first["sha256"] == second["sha256"] and first["count"] == 30
    images, labels, indices = bd.load_embedded(path=tmp_path / "a" / "sub.npz")
    expected = sorted(int(i) for c in range(10) for i in np.flatnonzero(test_labels == c)[:3])
    assert indices.tolist() == expected and labels.tolist() == [int(test_labels[i]) for i in expected]
    assert torch.equal(images[:, 0], torch.from_numpy(test_images[expected]).float() / 255)
    with pytest.raises(ValueError, match="class 0 has only 4 items, 5 needed"):
        bd.build_embedded_subset(tmp_path / "c.npz", source_dir=source, per_class=5)


@pytest.mark.skipif(not HAVE_DEBIAN, reason="Debian package dataset-fashion-mnist not installed")
def test_shipped_embedded_file_rebuilds_from_debian_files(tmp_path):
    record = json.loads(bd.EMBEDDED_PATH.with_suffix(".json").read_text())
    rebuilt = bd.build_embedded_subset(tmp_path / "fashion_mnist_eval.npz", source_dir=DEBIAN_DIR)
    assert rebuilt["content_sha256"] == record["content_sha256"]
    with np.load(bd.EMBEDDED_PATH) as shipped, np.load(tmp_path / "fashion_mnist_eval.npz") as fresh:
        assert sorted(shipped.files) == sorted(fresh.files) == ["images", "labels", "test_indices"]
        for key in shipped.files:
            assert np.array_equal(shipped[key], fresh[key]) and shipped[key].dtype == fresh[key].dtype
    # the subset is what it says: the first 100 of each class of the full test set
    full_x = bd.read_idx(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz")
    full_y = bd.read_idx(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz")
    images, labels, indices = bd.load_embedded()
    assert torch.equal(labels, full_y[indices].long()) and torch.equal(images[:, 0], full_x[indices].float() / 255)
    for c in range(10):
        assert indices[labels == c].tolist() == torch.nonzero(full_y == c).flatten()[:100].tolist()
    if record["zlib"] != zlib.ZLIB_RUNTIME_VERSION:
        pytest.skip(f"byte comparison needs zlib {record['zlib']} (this one is {zlib.ZLIB_RUNTIME_VERSION})")
    assert (tmp_path / "fashion_mnist_eval.npz").read_bytes() == bd.EMBEDDED_PATH.read_bytes()
    assert rebuilt["sha256"] == record["sha256"]


# ------------------------------------------------------------------------------------------ CLI


def test_cli(tmp_path, capsys):
    assert cli_main(["info", "fashion-mnist-embedded"]) == 0
    out = capsys.readouterr().out
    assert "test: 1000 items" in out and "[100, 100, 100, 100, 100, 100, 100, 100, 100, 100]" in out
    assert cli_main(["info", "no-such-set"]) == 2
    assert "known datasets" in capsys.readouterr().err
    source = tmp_path / "src"
    make_mnist_like(source, n_test=20)
    out_path = tmp_path / "sub.npz"
    assert cli_main(["build-embedded", "--source-dir", str(source), "--out", str(out_path), "--per-class", "2"]) == 0
    assert "20 images" in capsys.readouterr().out and out_path.with_suffix(".json").is_file()
    assert cli_main(["list"]) == 0 and "imagenette" in capsys.readouterr().out


def test_cli_module_bad_input_is_one_line(tmp_path):
    """``python -m bench.data``: a bad name or tree is one ``error:`` line on stderr, exit status 2, no traceback."""
    for args in (["info", "no-such-set"], ["info", "imagefolder", "--data-root", str(tmp_path / "nothing")],
                 ["build-embedded", "--source-dir", str(tmp_path), "--out", str(tmp_path / "x.npz")]):
        done = subprocess.run([sys.executable, "-m", "bench.data", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
        assert done.stdout == ""
    assert not (tmp_path / "x.npz").exists()


def test_paths_relative_to_the_checkout(monkeypatch, tmp_path):
    """The code lives in bench/data/; the shipped data stays in bench/embedded/, the data root is data/."""
    assert bd.EMBEDDED_PATH == REPO / "bench" / "embedded" / "fashion_mnist_eval.npz" and bd.EMBEDDED_PATH.is_file()
    monkeypatch.delenv("FARS_DATA_ROOT", raising=False)
    assert bd.default_data_root() == REPO / "data"
    monkeypatch.setenv("FARS_DATA_ROOT", str(tmp_path))
    assert bd.default_data_root() == tmp_path
