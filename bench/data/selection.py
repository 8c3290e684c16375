"""The evaluation images of a run: every ``skip``-th test image, at most ``num_images``, and their identity."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .embedded import load_embedded
from .registry import UNSET, SizeSetting, canonical_name, load_dataset


def select_images(dataset: str, data_root: str | Path | None, num_images: int, skip: int, *,
                  exact: bool = True, image_size: SizeSetting = UNSET,
                  resize: SizeSetting = UNSET) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [N, C, H, W] float32 in [0, 1], labels [N] int64, dataset indices [N] int64) of a run.

    ``fashion-mnist`` without a ``data_root`` (and ``fashion-mnist-embedded``) reads the embedded
    1,000-image subset shipped with the harness; other datasets (any registered name, e.g. ``cifar100``,
    ``tiny-imagenet``, ``imagenet``) are read with :func:`load_dataset`, ``image_size``/``resize`` passed on.
    The images are test images ``0, skip, 2 skip, ...``: ``num_images`` of them, or (``exact=False``)
    at most that many (Cohen et al.'s choices: :data:`~bench.data.registry.SELECTIONS`).

    Raises:
        ValueError: ``exact`` and the test set holds fewer than ``num_images`` images at that spacing
            (a run would otherwise certify fewer images than its configuration says); an unknown name;
            ``skip`` < 1.
    """
    if skip < 1:
        raise ValueError(f"skip must be >= 1, got {skip}")
    dataset = canonical_name(dataset)
    embedded = dataset == "fashion-mnist-embedded" or (dataset == "fashion-mnist" and data_root is None)
    if embedded:
        images, labels, indices = load_embedded()
        available = len(images)
    else:
        test = load_dataset(dataset, "test", data_root=data_root, image_size=image_size, resize=resize)
        available = len(test)
    wanted = list(range(0, available, skip))[:num_images]
    if exact and len(wanted) < num_images:
        raise ValueError(f"{num_images} images requested (one test image in {skip}) but the "
                         f"{'embedded ' if embedded else ''}{dataset} test set of {available} images has only "
                         f"{len(wanted)} at that spacing; lower the number of images or the skip")
    if embedded:
        pick = torch.tensor(wanted, dtype=torch.int64)
        return images[pick], labels[pick], indices[pick]
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
