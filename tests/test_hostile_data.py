"""Hostile data files are refused in one line, before anything large is allocated: a decompression-bomb image
in an image folder, a CIFAR pickle that asks for a 2**40-element array."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_datasets_field import dump, make_cifar100, save_image

from bench import data as bd
from bench.data import cifar

REPO = Path(__file__).resolve().parents[1]


def _image_folder(root: Path, side: int) -> None:
    for split in ("train", "test"):
        for name in ("a", "b"):
            save_image(root / split / name / "0.png", np.zeros((side, side, 3), dtype=np.uint8))


@pytest.mark.parametrize(("side", "what"), [(15, "warning"), (20, "error")])
def test_a_decompression_bomb_image_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int,
                                                  what: str) -> None:
    """PIL warns above MAX_IMAGE_PIXELS and raises above twice that: both refuse the file, naming it."""
    _image_folder(tmp_path, side)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)     # 15x15 = 225 pixels: warning; 20x20 = 400: error
    dataset = bd.load_dataset("imagefolder", "test", tmp_path, image_size=8)
    with pytest.raises(bd.CorruptImageError, match=r"0\.png: refused as a possible decompression bomb"):
        dataset[0]
    unsized = bd.load_dataset("imagefolder", "test", tmp_path, image_size=None, resize=None)
    with pytest.raises(bd.CorruptImageError, match="decompression bomb"):
        unsized.input_shape()


def test_a_decompression_bomb_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    _image_folder(tmp_path, 20)
    code = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 100; from bench.data.__main__ import main; "
            "from bench.common.cli import cli_exit; cli_exit(main, sys.argv[1:])")
    done = subprocess.run([sys.executable, "-c", code, "info", "imagefolder", "--data-root", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "decompression bomb" in done.stderr


class _Bomb:
    """Pickles as numpy's own array reconstruction, asked for 2**40 uint8 elements (1 TiB)."""

    def __reduce__(self) -> tuple[object, ...]:
        reconstruct = getattr(np, "_core", np.core).multiarray._reconstruct
        return (reconstruct, (np.ndarray, (2 ** 40,), b"B"))


class _Called:
    """Pickles as a direct call of numpy.ndarray with a 2**40-element shape."""

    def __reduce__(self) -> tuple[object, ...]:
        return (np.ndarray, ((2 ** 40,), np.dtype(np.uint8)))


@pytest.mark.parametrize("payload", [_Bomb(), _Called(), np.array([None, 1], dtype=object)])
def test_a_cifar_pickle_cannot_ask_for_more_than_the_file_holds(tmp_path: Path, payload: object) -> None:
    make_cifar100(tmp_path)
    dump(tmp_path / "cifar-100-python" / "test", {"data": payload, "fine_labels": []})
    with pytest.raises(bd.DatasetFormatError, match="not a readable CIFAR pickle"):
        bd.load_dataset("cifar100", "test", tmp_path, download=False)


def test_real_arrays_still_load_under_the_bound(tmp_path: Path) -> None:
    arrays = {"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "labels": [np.int64(3), 4],
              "scale": np.float32(1.5)}
    for protocol in (2, 4, 5):
        path = tmp_path / f"batch{protocol}"
        path.write_bytes(pickle.dumps(arrays, protocol=protocol))
        content = cifar._unpickle(path)
        assert np.array_equal(content["data"], arrays["data"]) and content["labels"] == [3, 4]
        assert content["scale"] == np.float32(1.5)
