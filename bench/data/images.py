"""Datasets read from image files: the size settings (:class:`ImageOptions`), the file reader and the dataset.

Every image-file dataset (``imagenette``, ``imagenet``, ``tiny-imagenet``, ``imagefolder``) is an
:class:`ImageFileDataset`: a list of ``(path, label)`` made by its family module, a class list, and the
:class:`ImageOptions` that turn a decoded RGB image into a float tensor ``[3, H, W]`` in ``[0, 1]``
(optional shorter-side resize, optional centre crop, ``ToTensor``; no mean/std normalisation).

torchvision is imported only when an image is transformed (its import takes over a second).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import torch
from torch.utils.data import Dataset

from .base import CorruptImageError, DatasetFormatError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["IMAGENET_OPTIONS", "IMAGE_EXTENSIONS", "ImageFileDataset", "ImageOptions", "image_files", "open_rgb"]

#: Extensions (lower case) read as images; the same as torchvision's ``IMG_EXTENSIONS``.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _size_setting(name: str, value: object) -> int | None:
    """``value`` as a size in pixels: a positive int, or ``None`` (``0`` too, for config files without a null)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a positive number of pixels or None (0 = none), got {value!r}")
    return value


@dataclass(frozen=True)
class ImageOptions:
    """How a decoded image becomes a tensor: ``Resize(resize)`` then ``CenterCrop(image_size)`` then ``ToTensor``.

    * ``resize``: the shorter side is scaled to ``resize`` pixels (torchvision's ``Resize(int)``, bilinear,
      aspect ratio kept); ``None`` (or ``0``): no resize.
    * ``image_size``: a centre crop of ``image_size`` x ``image_size``; ``None`` (or ``0``): no crop, so the
      images (after the resize, if any) must all have the size of the dataset's first image.

    The ImageNet evaluation transform is ``ImageOptions(224, 256)``. Raises ``ValueError`` for a negative or
    non-integer size and for ``resize < image_size`` (the crop would pad the image with black).
    """

    image_size: int | None = 224
    resize: int | None = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _size_setting("image_size", self.image_size))
        object.__setattr__(self, "resize", _size_setting("resize", self.resize))
        if self.image_size is not None and self.resize is not None and self.resize < self.image_size:
            raise ValueError(f"resize ({self.resize}) must be >= image_size ({self.image_size}): the centre crop "
                             "would pad the resized image")

    def output_hw(self, width: int, height: int) -> tuple[int, int]:
        """``(H, W)`` of the tensor made from a ``width`` x ``height`` image (torchvision's size arithmetic)."""
        if self.resize is not None:
            if width <= height:
                width, height = self.resize, int(self.resize * height / width)
            else:
                width, height = int(self.resize * width / height), self.resize
        if self.image_size is not None:
            return self.image_size, self.image_size
        return height, width

    def describe(self) -> str:
        """E.g. ``"resize 256 + centre crop 224"``, ``"no resize, no crop (images as they are)"``."""
        resize = f"resize {self.resize}" if self.resize is not None else "no resize"
        crop = f"centre crop {self.image_size}" if self.image_size is not None else "no crop (images as they are)"
        return f"{resize} + {crop}" if self.resize is not None else f"{resize}, {crop}"

    def apply(self, image: Image, path: str | Path) -> torch.Tensor:
        """float32 ``[3, H, W]`` in [0, 1] from an RGB PIL image (read from ``path``, named in errors).

        Raises :class:`DatasetFormatError` when the image (after the resize) is smaller than the crop.
        """
        from torchvision.transforms import functional as tf

        if self.resize is not None:
            image = tf.resize(image, self.resize)
        if self.image_size is not None:
            width, height = image.size
            if width < self.image_size or height < self.image_size:
                after = " after the resize" if self.resize else ""
                crop = f"{self.image_size}x{self.image_size}"
                raise DatasetFormatError(f"{path} is {width}x{height} pixels{after}, smaller than the {crop} centre "
                                         "crop; set resize (e.g. resize = image_size)")
            image = tf.center_crop(image, [self.image_size, self.image_size])
        return tf.to_tensor(image)


#: The ImageNet evaluation transform: resize 256, centre crop 224.
IMAGENET_OPTIONS = ImageOptions(224, 256)


def open_rgb(path: str | Path) -> Image:
    """The image file at ``path`` decoded as RGB (as torchvision's ``pil_loader``).

    Raises :class:`CorruptImageError` (a ``ValueError``) naming the file when PIL cannot identify or fully
    decode it (PIL's ``UnidentifiedImageError``, a truncated file) or when its pixel count exceeds PIL's
    decompression-bomb limit ``PIL.Image.MAX_IMAGE_PIXELS`` (PIL's warning and error both refuse it,
    before any pixel is decoded). A file that cannot be opened at all (missing, no permission) raises
    ``OSError`` as ``open`` does.
    """
    with open(path, "rb") as handle:
        image = _open_image(handle, path)
        try:
            return image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:  # truncated data, broken headers
            raise CorruptImageError(path, " ".join(str(exc).split()) or type(exc).__name__) from None


def _open_image(source: str | Path | BinaryIO, path: str | Path) -> Image:
    """``PIL.Image.open(source)`` (lazy: the header only) with every refusal as a :class:`CorruptImageError`."""
    import warnings

    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            return PILImage.open(source)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except UnidentifiedImageError:
        raise CorruptImageError(path, "not an image PIL can identify") from None
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise CorruptImageError(path, f"refused as a possible decompression bomb ({' '.join(str(exc).split())}); "
                                      "PIL.Image.MAX_IMAGE_PIXELS sets the limit") from None
    except (OSError, SyntaxError, ValueError) as exc:  # broken headers
        raise CorruptImageError(path, " ".join(str(exc).split()) or type(exc).__name__) from None


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (any depth), sorted by path; hidden files and folders (``.*``) skipped.

    An image is a file whose name ends with one of :data:`IMAGE_EXTENSIONS` (any case). Symlinked folders
    are followed, as torchvision's ``ImageFolder`` does.
    """
    found: list[Path] = []
    with os.scandir(folder) as entries:  # DirEntry types come from the directory listing: no stat per file
        visible = sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in visible:
        if entry.is_dir():
            found.extend(image_files(Path(entry.path)))
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
            found.append(Path(entry.path))
    return found


class ImageFileDataset(Dataset):
    """``(image float32 [3, H, W] in [0, 1], int label)`` from a list of image files.

    Attributes (as torchvision's ``ImageFolder``): ``root``; ``classes`` (label ``i`` is ``classes[i]``);
    ``class_to_idx``; ``samples`` and ``imgs`` (``[(path str, label int)]``); ``targets`` (``[label]``);
    plus ``options`` (:class:`ImageOptions`).

    Items raise :class:`CorruptImageError` naming an undecodable file, and (with ``options.image_size`` None)
    :class:`DatasetFormatError` for an image whose size differs from the first image's.
    """

    def __init__(self, root: str | Path, samples: Sequence[tuple[str | Path, int]], classes: Sequence[str],
                 options: ImageOptions) -> None:
        self.root = str(root)
        self.classes = list(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples = [(str(path), int(label)) for path, label in samples]
        bad = sorted({label for _, label in self.samples if not 0 <= label < len(self.classes)})
        if bad:
            raise ValueError(f"labels {bad[:5]} out of range for {len(self.classes)} classes under {root}")
        self.imgs = self.samples
        self.targets = [label for _, label in self.samples]
        self.options = options
        self._reference_hw: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def reference_hw(self) -> tuple[int, int]:
        """``(H, W)`` of every item: ``(image_size, image_size)``, else that of the first image (read on first use).

        Raises ``ValueError`` for an empty dataset without ``image_size``.
        """
        if self.options.image_size is not None:
            return self.options.image_size, self.options.image_size
        if self._reference_hw is None:
            if not self.samples:
                raise ValueError(f"{self.root}: no images, so no image size (set image_size)")
            path = self.samples[0][0]
            with _open_image(path, path) as image:  # reads the header only
                width, height = image.size
            self._reference_hw = self.options.output_hw(width, height)
        return self._reference_hw

    def input_shape(self) -> tuple[int, int, int]:
        """``(3, H, W)`` of every item (see :meth:`reference_hw`)."""
        return (3, *self.reference_hw())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        x = self.options.apply(open_rgb(path), path)
        if self.options.image_size is None:
            expected = self.reference_hw()
            if tuple(x.shape[1:]) != expected:
                raise DatasetFormatError(
                    f"{path} gives a {x.shape[2]}x{x.shape[1]} image but the dataset's first image "
                    f"({self.samples[0][0]}) gives {expected[1]}x{expected[0]}; with image_size None the images must "
                    "share a size: set image_size (a centre crop) to use images of several sizes")
        return x, label
