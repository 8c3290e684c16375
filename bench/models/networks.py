"""The networks the harness certifies: SLL backbone + head, and Cohen's noise-trained CNN."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from fars import NormalizedLinear

from ..common.names import HEAD_KINDS


@dataclass(frozen=True)
class HeadConfig:
    """A head on the frozen embedding: ``kind`` in HEAD_KINDS; ``hidden`` is the MLP head's width."""

    kind: str
    embedding_dim: int
    num_classes: int
    hidden: int = 128

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {self.kind!r}; choose one of {', '.join(HEAD_KINDS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def linear(self) -> bool:
        return self.kind != "mlp"


def build_head(config: HeadConfig) -> nn.Module:
    """A one-layer ``nn.Linear`` head (ce, sparsemax, margin) or a two-layer MLP head (mlp)."""
    if config.linear:
        return nn.Linear(config.embedding_dim, config.num_classes)
    return nn.Sequential(
        nn.Linear(config.embedding_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.num_classes)
    )


def backbone_training_head(embedding_dim: int, num_classes: int) -> nn.Module:
    """The head used while training the backbone: row-normalised, so each logit is 1-Lipschitz,
    which is what SLL's margin offset assumes. It is dropped once the backbone is frozen."""
    return NormalizedLinear(embedding_dim, num_classes)


@dataclass(frozen=True)
class CNNConfig:
    """Cohen's base classifier scaled to small images: two conv blocks (with batch norm) and a small dense part."""

    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    width: int = 32
    hidden: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


class SmallCNN(nn.Sequential):
    """An unconstrained CNN on [0, 1] pixels (no input normalisation layer), for Cohen RS.

    Batch norm uses its running statistics in eval mode, so each input is classified independently
    of the others in a batch (which Monte Carlo certification needs).
    """

    def __init__(self, config: CNNConfig) -> None:
        w, side = config.width, config.image_size // 4
        super().__init__(
            nn.Conv2d(config.in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * w * side * side, config.hidden), nn.ReLU(),
            nn.Linear(config.hidden, config.num_classes),
        )
        self.config = config
