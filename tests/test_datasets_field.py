"""The field's datasets (CIFAR-100, Tiny-ImageNet, ImageNet), image size settings, metadata, integrity checks.

No dataset is downloadable here: every loader reads fixtures written below in the exact on-disk formats
(CIFAR pickles, the tiny-imagenet-200 tree, an ImageNet class-folder tree), through the code path real files take.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import data as bd
from bench.data.__main__ import main as cli_main
from bench.data.cifar import official_md5_matches, read_cifar_batch
from bench.data.selection import select_images

COARSE = ("aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
          "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
          "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
          "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees", "vehicles_1",
          "vehicles_2")


def dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def save_image(path: Path, array: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def solid(colour: int, height: int = 64, width: int = 64) -> np.ndarray:
    return np.full((height, width, 3), colour, np.uint8)


# ------------------------------------------------------------------------------------------ CIFAR-100


def make_cifar100(root: Path, n_train: int = 12, n_test: int = 8, seed: int = 0, bytes_keys: bool = False) -> dict:
    """cifar-100-python as the official archive has it: pickled dicts train, test, meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    arrays = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        fine[0] = 99
        entry = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} batch 1 of 1",
                 "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": data}
        if bytes_keys:  # what a Python 2 pickle read with encoding="bytes" would hold
            entry = {k.encode(): v for k, v in entry.items()}
        dump(folder / name, entry)
        arrays[name] = (data, fine)
    dump(folder / "meta", {"fine_label_names": list(bd.CIFAR100_CLASSES), "coarse_label_names": list(COARSE)})
    return arrays


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar100_fixture(tmp_path, bytes_keys):
    arrays = make_cifar100(tmp_path, bytes_keys=bytes_keys)
    spec = bd.dataset_spec("CIFAR_100")
    assert (spec.name, spec.num_classes, spec.input_shape, spec.in_memory) == ("cifar100", 100, (3, 32, 32), True)
    assert spec.class_names == bd.CIFAR100_CLASSES and len(set(spec.class_names)) == 100
    assert list(spec.class_names) == sorted(spec.class_names)  # alphabetical, as in the meta file
    test = bd.load_dataset("cifar100", "test", data_root=tmp_path, download=False)
    assert len(test) == 8 and test.classes == list(bd.CIFAR100_CLASSES)
    data, fine = arrays["test"]
    for i in (0, 5):
        x, y = test[i]
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, 32, 32) and isinstance(y, int) and y == fine[i]
        assert torch.equal(x, torch.from_numpy(data[i].reshape(3, 32, 32)).float() / 255)  # no normalisation
    xs, ys = bd.load_tensors("cifar100", "train", data_root=tmp_path, download=False)
    assert xs.shape == (12, 3, 32, 32) and ys.dtype == torch.int64 and ys.tolist() == arrays["train"][1]
    assert int(ys[0]) == 99
    assert bd.load_tensors("cifar100", "test", tmp_path, limit=3, download=False)[0].shape == (3, 3, 32, 32)


def test_cifar100_same_as_torchvision(tmp_path, monkeypatch):
    """Item for item what torchvision's CIFAR100 (+ ToTensor) gives on the same files (its MD5 check off)."""
    import os

    import torchvision.datasets.cifar as tv_cifar
    from torchvision import transforms

    make_cifar100(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    theirs = tv_cifar.CIFAR100(str(tmp_path), train=False, transform=transforms.ToTensor())
    ours = bd.load_dataset("cifar100", "test", tmp_path, download=False)
    assert theirs.classes == ours.classes and len(theirs) == len(ours)
    for i in range(len(ours)):
        assert torch.equal(ours[i][0], theirs[i][0]) and ours[i][1] == theirs[i][1]


def _corrupt(folder: Path, name: str, **changes) -> None:
    entry = pickle.loads((folder / name).read_bytes())
    entry.update(changes)
    dump(folder / name, entry)


@pytest.mark.parametrize("name, changes, message", [
    ("test", {"fine_labels": [100] * 8}, r"test: 'fine_labels' \[100\] out of range for 100 classes"),
    ("test", {"fine_labels": [1] * 7}, r"test: 8 images but 7 'fine_labels'"),
    ("test", {"data": np.zeros((8, 3071), np.uint8)}, r"'data' must be uint8 \[N, 3072\]"),
    ("test", {"data": np.zeros((8, 3072), np.float32)}, r"'data' must be uint8 \[N, 3072\].*float32"),
    ("meta", {"fine_label_names": list(bd.CIFAR100_CLASSES[::-1])}, r"meta: 'fine_label_names' lists 100 classes"),
    ("meta", {"fine_label_names": None}, r"meta: no list of class names 'fine_label_names'"),
])
def test_cifar100_integrity_checks(tmp_path, name, changes, message):
    make_cifar100(tmp_path)
    _corrupt(tmp_path / "cifar-100-python", name, **changes)
    with pytest.raises(bd.DatasetFormatError, match=message):
        bd.load_dataset("cifar100", "test", tmp_path, download=False)


def test_cifar_reader_refuses_foreign_pickles(tmp_path):
    """The restricted unpickler builds numpy arrays only: a pickle that would call a function is refused unrun."""
    make_cifar100(tmp_path)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    dump(tmp_path / "cifar-100-python" / "test", {"data": Evil(), "fine_labels": []})
    with pytest.raises(bd.DatasetFormatError, match=r"not a readable CIFAR pickle \(refusing to load "):
        bd.load_dataset("cifar100", "test", tmp_path, download=False)
    assert not marker.exists()
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle at all")
    with pytest.raises(bd.DatasetFormatError, match="not a readable CIFAR pickle"):
        bd.load_dataset("cifar100", "test", tmp_path, download=False)
    dump(tmp_path / "cifar-100-python" / "test", [1, 2, 3])
    with pytest.raises(bd.DatasetFormatError, match="expected a pickled dict, got list"):
        bd.load_dataset("cifar100", "test", tmp_path, download=False)


def test_cifar_one_reader_and_md5_report(tmp_path):
    """CIFAR-10 and CIFAR-100 share the reader; a variant's batch read with the other's keys is refused."""
    make_cifar100(tmp_path)
    with pytest.raises(bd.DatasetFormatError, match=r"no 'labels' entry .*not a CIFAR batch of this variant"):
        read_cifar_batch(tmp_path / "cifar-100-python" / "test", "labels", 10)
    images, labels = read_cifar_batch(tmp_path / "cifar-100-python" / "test", "fine_labels", 100)
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32) and labels.dtype == torch.int64
    report = official_md5_matches("cifar100", tmp_path)
    assert report == {"train": False, "test": False, "meta": False}  # fixtures are not the official files
    assert set(official_md5_matches("cifar10", tmp_path).values()) == {None}
    with pytest.raises(bd.DatasetUnavailableError, match=r"cifar100 not found .*\(missing train, meta\)"):
        bd.load_dataset("cifar100", "train", tmp_path / "elsewhere", download=False)


# ------------------------------------------------------------------------------------------ Tiny-ImageNet

WNIDS = ("n09999999", "n01443537", "n02124075")  # wnids.txt order; sorted: n01443537, n02124075, n09999999


def make_tiny(root: Path, per_class: int = 2) -> list[tuple[str, str]]:
    """A tiny-imagenet-200 tree; returns the val annotations (file, wnid) in file order."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (folder / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\n"
                                      "n00000001\tentity\n")  # n09999999 has no line: its name is the wnid
    colours = {w: 40 + 80 * i for i, w in enumerate(sorted(WNIDS))}
    for wnid in WNIDS:
        for k in range(per_class):
            save_image(folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", solid(colours[wnid]), "JPEG")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    annotations = [(f"val_{i}.JPEG", WNIDS[(2 * i + 1) % 3]) for i in range(5)]
    for name, wnid in annotations:
        save_image(folder / "val" / "images" / name, solid(colours[wnid]), "JPEG")
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in annotations))
    return annotations


@pytest.mark.parametrize("as_folder", [False, True])
def test_tiny_imagenet_fixture(tmp_path, as_folder):
    annotations = make_tiny(tmp_path)
    root = tmp_path / "tiny-imagenet-200" if as_folder else tmp_path
    classes = sorted(WNIDS)
    spec = bd.dataset_spec("tiny-imagenet", data_root=root)
    assert (spec.num_classes, spec.input_shape, spec.class_names) == (3, (3, 64, 64),
                                                                      ("goldfish", "Egyptian cat", "n09999999"))
    assert bd.dataset_spec("tiny-imagenet").class_names == () and bd.dataset_spec("tiny-imagenet").num_classes == 200
    train = bd.load_dataset("tiny-imagenet", "train", root)
    test = bd.load_dataset("tiny-imagenet", "test", root)  # test = val
    assert train.classes == test.classes == classes and len(train) == 6 and len(test) == 5
    assert train.targets == [0, 0, 1, 1, 2, 2]
    for path, label in train.samples:
        assert Path(path).parent.parent.name == classes[label]  # the label names the image's class folder
    assert [Path(p).name for p, _ in test.samples] == [name for name, _ in annotations]  # annotation order
    assert test.targets == [classes.index(wnid) for _, wnid in annotations]
    x, y = test[1]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 64, 64) and y == test.targets[1]
    assert abs(float(x.mean()) * 255 - (40 + 80 * y)) < 2  # the image coloured for its class
    xs, ys = bd.load_tensors("tiny-imagenet", "test", root, limit=4)
    assert xs.shape == (4, 3, 64, 64) and ys.tolist() == test.targets[:4]
    big = bd.load_dataset("tiny-imagenet", "test", root, image_size=32, resize=40)
    assert tuple(big[0][0].shape) == (3, 32, 32)


@pytest.mark.parametrize("mutate, error, message", [
    (lambda f: (f / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn07777777\t0\t0\t1\t1\n"),
     bd.DatasetFormatError, r"val_annotations.txt:1: 'n07777777' is not in wnids.txt"),
    (lambda f: (f / "val" / "images" / "val_0.JPEG").unlink(), bd.DatasetFormatError, r"val_0.JPEG does not exist"),
    (lambda f: save_image(f / "val" / "images" / "extra.JPEG", solid(0), "JPEG"), bd.DatasetFormatError,
     r"1 image\(s\) of .* have no line in val_annotations.txt \(first: extra.JPEG\)"),
    (lambda f: (f / "wnids.txt").write_text("n01443537\nn01443537\n"), bd.DatasetFormatError, "listed twice"),
])
def test_tiny_imagenet_val_labels_checked(tmp_path, mutate, error, message):
    make_tiny(tmp_path)
    mutate(tmp_path / "tiny-imagenet-200")
    with pytest.raises(error, match=message):
        bd.load_dataset("tiny-imagenet", "test", tmp_path)


def test_tiny_imagenet_train_checked(tmp_path):
    make_tiny(tmp_path)
    folder = tmp_path / "tiny-imagenet-200"
    (folder / "train" / "n05555555" / "images").mkdir(parents=True)
    with pytest.raises(bd.DatasetFormatError, match="class folders not in wnids.txt: n05555555"):
        bd.load_dataset("tiny-imagenet", "train", tmp_path)
    (folder / "train" / "n05555555" / "images").rmdir()
    (folder / "train" / "n05555555").rmdir()
    for image in (folder / "train" / "n02124075" / "images").iterdir():
        image.unlink()
    with pytest.raises(bd.DatasetUnavailableError) as info:
        bd.load_dataset("tiny-imagenet", "train", tmp_path)
    assert "n02124075/images has no image file" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(bd.DatasetUnavailableError, match=r"tiny-imagenet not found.*tiny-imagenet-200.zip"):
        bd.load_dataset("tiny-imagenet", "test", tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------------ ImageNet


def make_imagenet(root: Path, splits=("val",), num_classes: int = 1000, size=(300, 200)) -> list[str]:
    """A class-folder tree with one JPEG per class (wnid n00000000 + index); returns the wnids."""
    wnids = [f"n{10_000_000 + 7 * i:08d}" for i in range(num_classes)]
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(buffer, format="JPEG")
    for split in splits:
        for wnid in wnids:
            (root / split / wnid).mkdir(parents=True)
            (root / split / wnid / f"ILSVRC2012_{split}_{wnid}.JPEG").write_bytes(buffer.getvalue())
    return wnids


def test_imagenet_fixture(tmp_path):
    wnids = make_imagenet(tmp_path / "imagenet")  # found under <data_root>/imagenet
    spec = bd.dataset_spec("imagenet")
    assert (spec.num_classes, spec.input_shape) == (1000, (3, 224, 224)) and spec.class_names == bd.IMAGENET_CLASSES
    test = bd.load_dataset("imagenet", "test", tmp_path)
    assert test.classes == sorted(wnids) and len(test) == 1000 and test.targets == list(range(1000))
    x, y = test[500]
    assert tuple(x.shape) == (3, 224, 224) and y == 500 and abs(float(x.mean()) - 128 / 255) < 0.01
    small = bd.load_dataset("imagenet", "test", tmp_path / "imagenet", image_size=64, resize=72)
    assert tuple(small[0][0].shape) == (3, 64, 64)
    with pytest.raises(bd.DatasetUnavailableError, match=r"imagenet train split not found .*expected <root>/val/"
                       r"<wnid>/\*.JPEG .*devkit tarball is not needed"):
        bd.load_dataset("imagenet", "train", tmp_path)
    # Cohen et al.'s ImageNet selection: every 100th val image
    selection = bd.SELECTIONS["imagenet"]
    images, labels, indices = select_images("imagenet", tmp_path, 10, selection.skip)
    assert images.shape == (10, 3, 224, 224) and indices.tolist() == labels.tolist() == list(range(0, 1000, 100))


def test_imagenet_refuses_other_trees(tmp_path):
    make_imagenet(tmp_path, num_classes=10)
    with pytest.raises(bd.DatasetUnavailableError, match=r"has 10 class folders; expected <root>/val.*'imagefolder'"):
        bd.load_dataset("imagenet", "test", tmp_path)
    for k in range(990):
        (tmp_path / "val" / f"class{k:04d}").mkdir()
    with pytest.raises(bd.DatasetUnavailableError, match="folders not named by WordNet id: class0000"):
        bd.load_dataset("imagenet", "test", tmp_path)


# ------------------------------------------------------------------------------------------ image size settings


def make_tree(root: Path, sizes=((300, 200), (250, 260)), splits=("train", "val")) -> None:
    rng = np.random.default_rng(0)
    for split in splits:
        for name, (w, h) in zip(("cat", "dog"), sizes, strict=True):
            save_image(root / split / name / "0.png", rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def test_imagefolder_image_size_and_resize(tmp_path):
    from torchvision import transforms

    make_tree(tmp_path)
    ds = bd.load_dataset("imagefolder", "test", tmp_path, image_size=64, resize=72)
    reference = transforms.Compose([transforms.Resize(72), transforms.CenterCrop(64), transforms.ToTensor()])
    for i, (path, label) in enumerate(ds.samples):
        x, y = ds[i]
        assert torch.equal(x, reference(Image.open(path).convert("RGB"))) and y == label
    spec = bd.dataset_spec("imagefolder", tmp_path, image_size=64, resize=72)
    assert spec.input_shape == (3, 64, 64) and spec.image_options == bd.ImageOptions(64, 72)
    assert spec.class_names == ("cat", "dog")
    xs, _ = bd.load_tensors("imagefolder", "train", tmp_path, image_size=64, resize=None)  # crop only
    assert xs.shape == (2, 3, 64, 64)
    # defaults unchanged: resize 256 + centre crop 224
    assert bd.dataset_spec("imagefolder").input_shape == (3, 224, 224)
    assert tuple(bd.load_dataset("imagefolder", "test", tmp_path)[0][0].shape) == (3, 224, 224)
    # 0 means none (config files have no null)
    assert bd.image_options("imagefolder", image_size=0, resize=0) == bd.ImageOptions(None, None)


def test_imagefolder_native_size(tmp_path):
    make_tree(tmp_path, sizes=((40, 30), (40, 30)))
    ds = bd.load_dataset("imagefolder", "test", tmp_path, image_size=None, resize=None)
    assert tuple(ds[1][0].shape) == (3, 30, 40)
    assert bd.dataset_spec("imagefolder", tmp_path, image_size=None, resize=None).input_shape == (3, 30, 40)
    assert bd.dataset_spec("imagefolder", tmp_path, image_size=None, resize=60).input_shape == (3, 60, 80)
    with pytest.raises(ValueError, match="image_size=None: the input shape is that of the images; pass data_root"):
        bd.dataset_spec("imagefolder", image_size=None)
    save_image(tmp_path / "val" / "dog" / "1.png", solid(9, 31, 40))
    mixed = bd.load_dataset("imagefolder", "test", tmp_path, image_size=None, resize=None)
    with pytest.raises(bd.DatasetFormatError, match=r"1.png gives a 40x31 image but .* gives 40x30; .*set image_size"):
        mixed[2]
    with pytest.raises(bd.DatasetFormatError, match=r"0.png is 40x30 pixels, smaller than the 64x64 centre crop"):
        bd.load_dataset("imagefolder", "test", tmp_path, image_size=64, resize=None)[0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=64, resize=32), r"resize \(32\) must be >= image_size \(64\)"),
    (dict(image_size=-1), "image_size must be a positive number of pixels or None"),
    (dict(resize=2.5), "resize must be a positive number of pixels"),
])
def test_bad_size_settings(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bd.load_dataset("imagefolder", "test", tmp_path, **kwargs)


def test_fixed_size_datasets_refuse_other_sizes(tmp_path):
    make_cifar100(tmp_path)
    with pytest.raises(ValueError, match=r"'cifar100' always has items of shape \(3, 32, 32\).*imagefolder"):
        bd.load_dataset("cifar100", "test", tmp_path, download=False, image_size=64)
    with pytest.raises(ValueError, match="always has items of shape"):
        bd.dataset_spec("fashion-mnist", resize=32)
    assert len(bd.load_dataset("cifar100", "test", tmp_path, download=False, image_size=32, resize=None)) == 8
    assert set(bd.IMAGE_FILE_DATASETS) == {"tiny-imagenet", "imagenet", "imagenette", "imagefolder"}


# ------------------------------------------------------------------------------------------ labels and files


def test_empty_class_folder_is_one_line_error(tmp_path):
    """An empty class folder would shift every later label if dropped: refused, naming the folder."""
    make_tree(tmp_path)
    (tmp_path / "val" / "ant").mkdir()
    (tmp_path / "train" / "ant").mkdir()
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    for split in ("train", "test"):
        with pytest.raises(bd.DatasetUnavailableError) as info:
            bd.load_dataset("imagefolder", split, tmp_path)
        message = str(info.value)
        assert "\n" not in message and message.startswith("imagefolder: class folder ")
        assert f"{tmp_path / ('train' if split == 'train' else 'val') / 'ant'} has no image file" in message
    for wnid in bd.IMAGENETTE_WNIDS[1:]:
        save_image(tmp_path / "nette" / "val" / wnid / "0.png", solid(1, 8, 8))
    (tmp_path / "nette" / "val" / bd.IMAGENETTE_WNIDS[0]).mkdir()
    with pytest.raises(bd.DatasetUnavailableError, match=f"imagenette: class folder .*{bd.IMAGENETTE_WNIDS[0]} has no"):
        bd.load_dataset("imagenette", "test", tmp_path / "nette", download=False)


def test_hidden_files_inside_class_folders_are_not_read(tmp_path):
    make_tree(tmp_path)
    save_image(tmp_path / "val" / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", solid(255))
    save_image(tmp_path / "val" / "cat" / ".hidden.png", solid(255))
    save_image(tmp_path / "val" / "cat" / "sub" / "1.PNG", solid(3))  # nested, upper-case extension
    ds = bd.load_dataset("imagefolder", "test", tmp_path)
    assert [Path(p).relative_to(tmp_path / "val").as_posix() for p, _ in ds.samples] == [
        "cat/0.png", "cat/sub/1.PNG", "dog/0.png"]
    assert ds.targets == [0, 0, 1]


@pytest.mark.parametrize("content", [b"this is not a png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "truncated"])
def test_corrupt_image_names_the_file(tmp_path, content):
    make_tree(tmp_path)
    bad = tmp_path / "val" / "dog" / "1.png"
    if content == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(solid(7, 300, 300)).save(buffer, format="PNG")
        content = buffer.getvalue()[:200]
    bad.write_bytes(content)
    ds = bd.load_dataset("imagefolder", "test", tmp_path)
    assert len(ds) == 3 and ds[0][1] == 0  # the others still load
    with pytest.raises(bd.CorruptImageError, match=f"corrupt or unreadable image file {bad}") as info:
        ds[2]
    assert isinstance(info.value, ValueError) and info.value.path == bad
    assert info.value.__cause__ is None


# ------------------------------------------------------------------------------------------ metadata


def test_reported_radii_and_selections():
    fars = (0.05, 0.1, 0.2, 0.3)
    sll = (36 / 255, 72 / 255, 108 / 255, 1.0)
    cohen_cifar, cohen_imagenet = (0.25, 0.5, 0.75, 1.0), (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    expected = {
        "fashion-mnist": fars, "fashion-mnist-embedded": fars, "mnist": fars, "imagefolder": fars,
        "cifar10": fars + cohen_cifar + sll, "cifar100": fars + cohen_cifar + sll, "tiny-imagenet": fars + sll,
        "imagenet": fars + cohen_imagenet, "imagenette": fars + cohen_imagenet,
    }
    assert set(expected) == set(bd.DATASETS)
    for name, radii in expected.items():
        got = bd.reported_radii(name)
        assert got == tuple(sorted(set(radii))) and list(got) == sorted(set(got)), name
        assert got == bd.DATASETS[name].reported_radii
    assert bd.reported_radii("CIFAR_10").count(1.0) == 1  # Cohen's and SLL's 1.0 once
    assert dict(bd.DATASETS["cifar10"].radii_by_paper)["SLL"] == sll
    with pytest.raises(ValueError, match="unknown dataset"):
        bd.reported_radii("svhn")
    assert {name: (s.skip, s.num_images) for name, s in bd.SELECTIONS.items()} == {"cifar10": (20, 500),
                                                                                   "imagenet": (100, 500)}
    assert bd.DATASETS["cifar10"].cohen_selection == bd.SELECTIONS["cifar10"]
    for spec in bd.DATASETS.values():
        assert len(spec.mean) == len(spec.std) in (0, spec.input_shape[0]), spec.name
    assert bd.DATASETS["imagenet"].mean == bd.DATASETS["imagenette"].mean == (0.485, 0.456, 0.406)
    assert bd.DATASETS["cifar10"].std == (0.2023, 0.1994, 0.2010)


def test_imagenet_class_names_are_torchvisions():
    from torchvision.models import ResNet50_Weights

    assert tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"]) == bd.IMAGENET_CLASSES
    # Imagenette's ten classes are ImageNet's labels 0, 217, 482, ... (its wnids sorted among ImageNet's)
    assert tuple(bd.IMAGENET_CLASSES[i] for i in (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)) == \
        bd.IMAGENETTE_CLASSES


# ------------------------------------------------------------------------------------------ embedded subset


@pytest.mark.parametrize("verify", [True, False])
def test_embedded_labels_out_of_range_refused(tmp_path, verify):
    path = tmp_path / "bad.npz"
    labels = np.array([0, 10, 3, 255], np.uint8)
    np.savez(path, images=np.zeros((4, 28, 28), np.uint8), labels=labels, test_indices=np.arange(4, dtype=np.uint16))
    path.with_suffix(".json").write_text(json.dumps({"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    with pytest.raises(bd.EmbeddedDataError, match=r"bad.npz: labels \[10, 255\] out of range for 10 classes"):
        bd.load_embedded(path=path, verify=verify)


# ------------------------------------------------------------------------------------------ selection and CLI


def test_select_images_on_new_datasets(tmp_path):
    make_cifar100(tmp_path / "c", n_test=8)
    images, labels, indices = select_images("cifar100", tmp_path / "c", 4, 2)
    test = bd.load_dataset("cifar100", "test", tmp_path / "c", download=False)
    assert indices.tolist() == [0, 2, 4, 6] and labels.tolist() == [test[i][1] for i in (0, 2, 4, 6)]
    assert torch.equal(images[1], test[2][0])
    make_tiny(tmp_path / "t")
    images, labels, indices = select_images("tiny_imagenet", tmp_path / "t", 3, 2)
    assert images.shape == (3, 3, 64, 64) and indices.tolist() == [0, 2, 4]
    assert labels.tolist() == [bd.load_dataset("tiny-imagenet", "test", tmp_path / "t").targets[i] for i in (0, 2, 4)]
    make_tree(tmp_path / "f")
    images, _, _ = select_images("imagefolder", tmp_path / "f", 2, 1, image_size=32, resize=40)
    assert images.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="3 images requested"):
        select_images("cifar100", tmp_path / "c", 3, 4)


def test_cli_shows_the_new_datasets(tmp_path, capsys):
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("cifar100", "tiny-imagenet", "imagenet "):
        assert name in out
    assert "Cohen selection: skip 100, 500" in out and "radii: 0.05, 0.1, 0.2, 0.3, 0.5, 1, 1.5" in out
    make_tiny(tmp_path)
    assert cli_main(["info", "tiny-imagenet", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "class_names: goldfish, Egyptian cat, n09999999" in out and "SLL: 0.1412, 0.2824, 0.4235, 1" in out
    assert "test: 5 items; item 0: (3, 64, 64)" in out and "image settings: no resize, centre crop 64" in out
    make_cifar100(tmp_path)
    assert cli_main(["info", "cifar100", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 12 items" in out and "official MD5: 0 of 3 files present match" in out
    assert "mean / std (informational, not applied): (0.5071, 0.4865, 0.4409)" in out
    make_tree(tmp_path / "tree")
    assert cli_main(["info", "imagefolder", "--data-root", str(tmp_path / "tree"), "--image-size", "48",
                     "--resize", "0"]) == 0
    out = capsys.readouterr().out
    assert "input_shape: (3, 48, 48)" in out and "test: 2 items; item 0: (3, 48, 48)" in out


def test_cli_imagenet_missing_is_reported(tmp_path, capsys):
    assert cli_main(["info", "imagenet", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Cohen et al. selection: skip 100, 500 images" in out and "num_classes: 1000" in out
    assert "test: unavailable - imagenet test split not found" in out and "devkit" in out
    with pytest.raises(SystemExit):
        cli_main(["info", "imagenet", "--image-size", "-3"])
    assert "must be >= 0 (0 = none), got -3" in capsys.readouterr().err
