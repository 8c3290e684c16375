"""CIFAR-10 through torchvision's ``CIFAR10`` (``<data_root>/cifar-10-batches-py``), with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

import numpy as np
import torch

from .base import DatasetUnavailableError, resolve_root, short_reason

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR10

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "load_cifar10_tensors"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_cifar10(split: str, data_root: str | Path | None, download: bool,
                 transform: Callable | None) -> CIFAR10:
    """torchvision's CIFAR10 (which checks every batch file's MD5); missing or corrupted files raise
    :class:`DatasetUnavailableError` saying where to put them."""
    from torchvision import datasets as tvd

    root = resolve_root(data_root)
    folder = root / tvd.CIFAR10.base_folder
    place = (f"extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into {root} so that "
             f"{folder}/data_batch_1..5, test_batch and batches.meta exist")
    try:
        return tvd.CIFAR10(str(root), train=split == "train", download=download, transform=transform)
    except (URLError, OSError, RuntimeError) as exc:
        if download:
            raise DatasetUnavailableError(f"could not download cifar10 into {root}: {short_reason(exc)}. This "
                                          f"machine seems to have no network access; {place}") from None
        raise DatasetUnavailableError(f"cifar10 not found or corrupted under {folder} (torchvision checks the MD5 of "
                                      f"each batch file: {short_reason(exc)}) and download=False; {place}") from None


def load_cifar10_tensors(split: str, data_root: str | Path | None, limit: int | None,
                         download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (default all) images float32 ``[N, 3, 32, 32]`` in [0, 1] and labels int64 ``[N]``,
    straight from the unpickled arrays (no per-item PIL round trip)."""
    ds = load_cifar10(split, data_root, download, None)
    data = torch.from_numpy(np.ascontiguousarray(ds.data[:limit])).permute(0, 3, 1, 2).contiguous()
    return data.to(torch.float32).div_(255), torch.as_tensor(ds.targets[:limit], dtype=torch.int64)
