"""The evaluation images of a run: every ``skip``-th test image, at most ``num_images``, and their identity."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .embedded import load_embedded
from .registry import load_dataset


def select_images(dataset: str, data_root: str | Path | None, num_images: int, skip: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [N, C, H, W] float32 in [0, 1], labels [N] int64, dataset indices [N] int64) of a run.

    ``fashion-mnist`` without a ``data_root`` (and ``fashion-mnist-embedded``) reads the embedded
    1,000-image subset shipped with the harness; other datasets are read with :func:`load_dataset`.
    The images are test images ``0, skip, 2 skip, ...``, at most ``num_images`` of them.
    """
    if dataset == "fashion-mnist-embedded" or (dataset == "fashion-mnist" and data_root is None):
        images, labels, indices = load_embedded()
        pick = torch.arange(0, len(images), skip)[:num_images]
        return images[pick], labels[pick], indices[pick]
    test = load_dataset(dataset, "test", data_root=data_root)
    wanted = list(range(0, len(test), skip))[:num_images]
    items = [test[i] for i in wanted]
    return (torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items]),
            torch.tensor(wanted, dtype=torch.int64))


def images_fingerprint(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> str:
    """SHA-256 of the selected images, labels and indices (their bytes as float32 / int64, C order).

    Identifies a run's evaluation set by content, wherever the dataset lies on disk.
    """
    digest = hashlib.sha256()
    for tensor, dtype in ((images, np.float32), (labels, np.int64), (indices, np.int64)):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy().astype(dtype, copy=False))
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
