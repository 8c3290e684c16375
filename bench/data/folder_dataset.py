"""torchvision's ``ImageFolder`` labelling by a class list the caller gives.

A module of its own because importing torchvision takes over a second: :mod:`bench.data.folders`
imports it only when an image-folder dataset is actually loaded. The class list it is given is
:func:`bench.data.folders.class_folders`, the one definition of a tree's classes, so that the labels
always match the class names the registry reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torchvision.datasets import ImageFolder

__all__ = ["ClassListImageFolder"]


class ClassListImageFolder(ImageFolder):
    """``ImageFolder(root, transform)`` whose classes are ``classes`` (label ``i`` = ``root/classes[i]/*``).

    torchvision would list every sub-folder, hidden ones (``.ipynb_checkpoints/``) included, as a class;
    here other folders are simply not read.
    """

    def __init__(self, root: str | Path, classes: Sequence[str], transform: Callable | None = None) -> None:
        self._class_list = list(classes)  # read by find_classes, which ImageFolder.__init__ calls
        super().__init__(str(root), transform=transform)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return list(self._class_list), {name: i for i, name in enumerate(self._class_list)}
