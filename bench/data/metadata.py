"""What the papers report per dataset: normalisation constants, certified radii, Cohen et al.'s test selections.

Informational constants the registry attaches to each :class:`~bench.data.registry.DatasetSpec`; the loaders
never normalise (the classifiers carry their own normalisation layers, and radii are in [0, 1] pixel units).

Radii (l2, pixel units) by paper:

* FaRS (the seed paper): ``0.05, 0.1, 0.2, 0.3`` (Tables 1-2; used for every dataset here);
* Cohen et al. (2019): ``0.25, 0.5, 0.75, 1.0`` on CIFAR-10 (and CIFAR-100 here), ``0.5, 1.0, ..., 3.0`` on
  ImageNet (and Imagenette here);
* SLL (Araujo et al. 2023): ``36/255, 72/255, 108/255, 1.0`` (= 255/255) on CIFAR-10, CIFAR-100, Tiny-ImageNet.

Cohen et al. certify 500 test images: every 20th of CIFAR-10's test set, every 100th of ImageNet's val set.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "CIFAR10_MEAN", "CIFAR10_STD", "COHEN_CIFAR_RADII",
           "COHEN_IMAGENET_RADII", "FARS_RADII", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "IMAGENET_MEAN",
           "IMAGENET_STD", "MNIST_MEAN", "MNIST_STD", "SLL_RADII", "Selection", "TINY_IMAGENET_MEAN",
           "TINY_IMAGENET_STD", "union_of_radii"]

#: Per-channel mean and std of the training images, in [0, 1] units (the values the public code uses).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
#: Cohen et al.'s (and SLL's, to 4 digits) CIFAR-10 constants.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)

FARS_RADII = (0.05, 0.1, 0.2, 0.3)
COHEN_CIFAR_RADII = (0.25, 0.5, 0.75, 1.0)
COHEN_IMAGENET_RADII = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
SLL_RADII = (36 / 255, 72 / 255, 108 / 255, 1.0)


@dataclass(frozen=True)
class Selection:
    """A published choice of test images: every ``skip``-th test image from index 0, ``num_images`` of them."""

    skip: int
    num_images: int
    source: str


def union_of_radii(by_paper: tuple[tuple[str, tuple[float, ...]], ...]) -> tuple[float, ...]:
    """The radii of all papers, sorted ascending, each value once."""
    return tuple(sorted({float(r) for _, radii in by_paper for r in radii}))
