"""Configurable SLL backbones: provably 1-Lipschitz (l2) maps from images to embeddings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from .sll import LipschitzAvgPool2d, PadChannels, SLLConv2d, SLLDense, SpectralLinear


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of an SLL backbone.

    Layout: zero channel padding to ``conv_width`` -> ``stages`` x (``conv_depth`` SLLConv2d layers of
    ``conv_inner`` hidden channels, then 2x2 LipschitzAvgPool2d) -> flatten -> ``dense_depth`` SLLDense
    layers of ``dense_inner`` hidden units -> SpectralLinear projection to ``embedding_dim``.
    Every part is 1-Lipschitz in l2, so the backbone is (``LIPSCHITZ`` = 1).
    """

    in_channels: int = 1
    image_size: int = 28
    conv_width: int = 16
    conv_depth: int = 2
    conv_inner: int = 16
    stages: int = 2
    dense_depth: int = 2
    dense_inner: int = 256
    embedding_dim: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"BackboneConfig.{f.name} must be an int, got {value!r}")
            minimum = 0 if f.name in ("conv_depth", "dense_depth", "stages") else 1
            if value < minimum:
                raise ValueError(f"BackboneConfig.{f.name} must be >= {minimum}, got {value}")
        if self.conv_width < self.in_channels:
            raise ValueError("conv_width must be >= in_channels (channels are zero-padded, never dropped)")
        if self.image_size >> self.stages < 1:
            raise ValueError(f"{self.stages} pooling stages do not fit images of size {self.image_size}")

    @property
    def features(self) -> int:
        """Width of the flattened feature vector entering the dense stack."""
        side = self.image_size >> self.stages
        return self.conv_width * side * side

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BackboneConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown backbone config keys: {sorted(unknown)}")
        return cls(**data)


class SLLBackbone(nn.Sequential):
    """An SLL backbone built from a :class:`BackboneConfig`; ``LIPSCHITZ`` is its proven l2 constant."""

    LIPSCHITZ = 1.0

    def __init__(self, config: BackboneConfig) -> None:
        layers: list[nn.Module] = [PadChannels(config.in_channels, config.conv_width)]
        for _ in range(config.stages):
            layers += [SLLConv2d(config.conv_width, config.conv_inner) for _ in range(config.conv_depth)]
            layers.append(LipschitzAvgPool2d(2))
        if config.stages == 0:
            layers += [SLLConv2d(config.conv_width, config.conv_inner) for _ in range(config.conv_depth)]
        layers.append(nn.Flatten())
        layers += [SLLDense(config.features, config.dense_inner) for _ in range(config.dense_depth)]
        layers.append(SpectralLinear(config.features, config.embedding_dim))
        super().__init__(*layers)
        self.config = config

    @property
    def lipschitz(self) -> float:
        return self.LIPSCHITZ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"backbone expects inputs [B, {c}, {s}, {s}], got {tuple(x.shape)}")
        return super().forward(x)


def build_backbone(config: BackboneConfig | None = None, **overrides: int) -> SLLBackbone:
    """Build an SLL backbone (l2 1-Lipschitz) from a config, or the default config with ``overrides``."""
    if config is None:
        config = BackboneConfig(**overrides)
    elif overrides:
        config = BackboneConfig(**{**config.to_dict(), **overrides})
    return SLLBackbone(config)
