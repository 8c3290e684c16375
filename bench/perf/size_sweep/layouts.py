"""The networks of the size sweep: the SLL authors' layouts with random seeded weights, or the shipped network.

Each :class:`SizeSpec` names one network; :func:`build_network` builds it (with the images it certifies),
:func:`estimated_bytes` says roughly how much memory timing it needs so that a size too big for the
machine is skipped with a note rather than swapping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from fars.sll import LipschitzAvgPool2d, PadChannels, SLLConv2d, SLLDense

from ...models.normalization import InputNormalization
from ...models.sll_format import IMAGENET_MEAN, SLL_DATASETS, SLL_SIZES, SLLLayout, build_sll_network

#: the name of the shipped Fashion-MNIST network in ``--sizes``
DEFAULT_NETWORK = "default"
#: SLL small at the FaRS paper's ImageNet input (3x224x224, 1000 classes)
PAPER_INPUT = "small@224"


@dataclass(frozen=True)
class SizeSpec:
    """One network of the sweep: an SLL layout at ``side`` x ``side`` RGB inputs, or the shipped network."""

    name: str
    layout: SLLLayout | None = None   # None: the shipped network (``default``)
    side: int = 32
    classes: int = 10
    seed: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28) if self.layout is None else (3, self.side, self.side)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layout": None if self.layout is None else dataclasses.asdict(self.layout),
                "side": self.side, "classes": self.classes, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SizeSpec:
        layout = None if d["layout"] is None else SLLLayout(**d["layout"])
        return cls(d["name"], layout, int(d["side"]), int(d["classes"]), int(d["seed"]))


def named_spec(name: str, seed: int = 0) -> SizeSpec:
    """``default``, one of :data:`SLL_SIZES` at CIFAR size, or ``small@224`` (the FaRS paper's input)."""
    if name == DEFAULT_NETWORK:
        return SizeSpec(name, None, seed=seed)
    if name == PAPER_INPUT:
        return SizeSpec(name, SLL_SIZES["small"], side=224, classes=1000, seed=seed)
    if name not in SLL_SIZES:
        raise ValueError(f"unknown size {name!r}; choose from {', '.join([DEFAULT_NETWORK, *SLL_SIZES])}")
    return SizeSpec(name, SLL_SIZES[name], seed=seed)


def parse_sizes(names: Sequence[str], paper_input: bool = False, seed: int = 0) -> list[SizeSpec]:
    """The specs of ``--sizes`` (and ``small@224`` with ``--paper-input``); raises ValueError for an unknown name."""
    specs = [named_spec(name, seed) for name in dict.fromkeys(names)]
    if paper_input:
        specs.append(named_spec(PAPER_INPUT, seed))
    return specs


def estimated_bytes(spec: SizeSpec, batch_size: int) -> int:
    """Rough peak bytes of timing ``spec``: parameters three times (weights, the SLL memo's copy, its
    rescaling) plus four activations of the widest layer per sample of a cohen batch."""
    if spec.layout is None:
        return 1 << 30
    lay = spec.layout
    feats = lay.width * (spec.side // 4) ** 2
    params = (lay.n_conv * (lay.conv_inner * lay.width * 9 + 2 * lay.conv_inner)
              + lay.n_dense * (lay.dense_inner * feats + 2 * lay.dense_inner) + spec.classes * (feats + 1))
    activations = 4 * max(lay.width * spec.side ** 2, lay.dense_inner, feats)
    return 4 * (3 * params + batch_size * activations)


def available_bytes(device: torch.device) -> int:
    """Memory available for the sweep: free CUDA memory, or MemAvailable of /proc/meminfo (else 8 GiB)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


@dataclass
class Network:
    """A built network of the sweep: backbone, linear head, Lipschitz constant, the images to certify and,
    for the shipped network, their labels (None for the random-weight layouts: no class is right there)."""

    spec: SizeSpec
    backbone: nn.Module
    head: nn.Linear
    lipschitz: float
    images: torch.Tensor
    indices: torch.Tensor
    labels: torch.Tensor | None = None
    _compiled: nn.Module | None = dataclasses.field(default=None, repr=False)

    @property
    def plain(self) -> nn.Module:
        return nn.Sequential(self.backbone, self.head).eval()

    def compiled(self) -> nn.Module:
        """``torch.compile`` of the plain network, built once per network, so that the certifiers of every n
        share one compiled graph (each compiles on its first batch shapes, once)."""
        if self._compiled is None:
            # torch.compile of an nn.Module returns an OptimizedModule (an nn.Module)
            self._compiled = cast(nn.Module, torch.compile(self.plain))
        return self._compiled

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.plain.parameters())


def _sll_at_side(layout: SLLLayout, side: int, classes: int) -> tuple[nn.Module, nn.Linear]:
    """The SLL authors' architecture (as :func:`build_sll_network`) for an input side that none of their
    datasets has (224: the FaRS paper's ImageNet input, ImageNet mean shift)."""
    feats = layout.width * (side // 4) ** 2
    layers: list[nn.Module] = [InputNormalization(IMAGENET_MEAN), PadChannels(3, layout.width)]
    layers += [SLLConv2d(layout.width, layout.conv_inner, 3) for _ in range(layout.n_conv)]
    layers += [LipschitzAvgPool2d(4), nn.Flatten()]
    layers += [SLLDense(feats, layout.dense_inner) for _ in range(layout.n_dense)]
    return nn.Sequential(*layers), nn.Linear(feats, classes)


def build_network(spec: SizeSpec, device: torch.device, images: int) -> Network:
    """Build ``spec`` (random weights from ``spec.seed``; uniform random pixels) or load the shipped network
    (with the first ``images`` embedded images and their labels)."""
    if spec.layout is None:
        from ...common.env import EMBEDDED_MODELS
        from ...data import load_embedded
        from ...models import load_zoo
        zoo = load_zoo(EMBEDDED_MODELS).to(device)
        x, y, idx = load_embedded(limit=images)
        head = cast(nn.Linear, zoo.heads["ce"][0])   # the ce head is one nn.Linear (build_head)
        return Network(spec, zoo.backbone.eval(), head.eval(), zoo.lipschitz, x.to(device), idx, y)
    torch.manual_seed(spec.seed)
    if spec.side == SLL_DATASETS["cifar10"].side and spec.classes == SLL_DATASETS["cifar10"].num_classes:
        net = build_sll_network(spec.layout, "cifar10")
        backbone, head = cast(nn.Module, net.backbone), cast(nn.Linear, net.head)
    else:
        backbone, head = _sll_at_side(spec.layout, spec.side, spec.classes)
    generator = torch.Generator().manual_seed(spec.seed)
    x = torch.rand(images, *spec.input_shape, generator=generator)
    # the shift (std 1) and the SLL layers are 1-Lipschitz in l2 pixel units
    return Network(spec, backbone.to(device).eval(), head.to(device).eval(), 1.0, x.to(device),
                   torch.arange(images))
