"""Training of the default models (the command is ``python -m bench.train [all|backbone|heads|cnn] ...``).

Two-stage FaRS recipe (as in the paper, scaled to the dataset): an SLL backbone trained with SLL's
margin loss, then frozen; heads trained on its embeddings (``ce``, ``sparsemax``, ``margin``, ``mlp``).
Cohen's baseline: a CNN trained with Gaussian noise augmentation at each sigma (noise on [0, 1] pixels,
no normalisation layer). Every run is seeded, shows progress, and resumes from its last finished epoch
(``NAME.resume.pt`` next to the checkpoint, removed when the checkpoint is written; read with
``weights_only=True``, so a crafted file cannot run code: it is refused with :class:`CheckpointError`).

CIFAR-sized data (3 x 32 x 32: ``cifar10``) gets the usual augmentation for the backbone and the CNNs
(:func:`crop_and_flip`: random 32 x 32 crops of the image zero-padded by 4, random horizontal flips, as
torchvision's ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``) and longer default
schedules (:func:`default_epochs`). After training, the backbone's Lipschitz audit runs on
``audit_images`` test images with ``audit_iterations`` power iterations and ascent steps (its budget),
with a progress bar.
"""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fars import BackboneConfig, SLLBackbone, audit_lipschitz
from fars.audit import LipschitzAudit
from fars.losses import certified_margin_loss, head_sparsemax_loss, sll_loss

from ..data import DatasetSpec, dataset_spec, load_tensors
from . import checkpoints as ckpt
from .networks import HEAD_KINDS, CNNConfig, HeadConfig, SmallCNN, backbone_training_head, build_head

DEFAULT_SIGMAS = (0.12, 0.25, 0.5)
#: default epochs (backbone, head, cnn) for 28 x 28 grey data (the shipped Fashion-MNIST models) and CIFAR-sized data
EPOCHS = {"small": (12, 60, 8), "cifar": (100, 60, 60)}
#: images audited per step of the post-training Lipschitz audit (one progress-bar tick)
AUDIT_CHUNK = 8


def cifar_sized(input_shape: tuple[int, ...]) -> bool:
    """Whether a data set of ``input_shape`` images gets CIFAR's crop-and-flip augmentation (3 x 32 x 32)."""
    return tuple(input_shape) == (3, 32, 32)


def default_epochs(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Default (backbone, head, cnn) epochs: longer schedules for CIFAR-sized data, which is augmented."""
    return EPOCHS["cifar" if cifar_sized(input_shape) else "small"]


def crop_and_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Per image: a random crop of the image zero-padded by ``padding`` on every side, of the image's own size,
    then a horizontal flip with probability 1/2 (torchvision's ``RandomCrop(size, padding)`` and
    ``RandomHorizontalFlip()``, drawn from the global CPU generator, so a resumed run draws the same)."""
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b))
    flips = torch.rand(b) < 0.5
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = (offsets[0][:, None] + torch.arange(h)).to(x.device)           # [B, H]
    cols = (offsets[1][:, None] + torch.arange(w)).to(x.device)           # [B, W]
    cols = torch.where(flips.to(x.device)[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channels, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass
class TrainConfig:
    """Everything that decides a training run besides the architecture (recorded in the sidecar)."""

    dataset: str = "fashion-mnist"
    seed: int = 0
    backbone_epochs: int = 12
    backbone_lr: float = 3e-3
    head_epochs: int = 60
    head_lr: float = 0.2
    head_margin_epsilon: float = 0.1
    head_mlp_sigma: float = 0.25
    cnn_epochs: int = 8
    cnn_lr: float = 0.05
    cnn_sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    batch_size: int = 256
    train_limit: int | None = None
    test_limit: int | None = None
    augment: bool = False
    audit_images: int = 64
    audit_iterations: int = 50
    data_root: str | None = None   # where the data set is read (None: bench.data's default); not recorded
    backbone: BackboneConfig = field(default_factory=BackboneConfig)

    def __post_init__(self) -> None:
        for name in ("backbone_epochs", "head_epochs", "cnn_epochs", "batch_size", "audit_images", "audit_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if any(not math.isfinite(s) or s <= 0 for s in self.cnn_sigmas):
            raise ValueError(f"TrainConfig.cnn_sigmas must be finite and > 0, got {self.cnn_sigmas}")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def fit(name: str, model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
        inputs: torch.Tensor, labels: torch.Tensor, epochs: int, make_optimizer: Callable[[], torch.optim.Optimizer],
        batch_size: int, seed: int, device: torch.device, resume_path: Path, progress: bool = True) -> list[float]:
    """Seeded mini-batch training with a cosine schedule; resumable per epoch.

    ``loss_fn(x, y, step)`` returns the batch loss. The shuffle of epoch e is drawn from
    ``seed`` and ``e`` alone, so a resumed run follows the same path as an uninterrupted one.
    Returns the mean loss of each epoch.
    """
    optimizer = make_optimizer()
    steps_per_epoch = math.ceil(len(inputs) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(1, epochs * steps_per_epoch),
        pct_start=0.15, anneal_strategy="cos")
    history: list[float] = []
    start = 0
    if resume_path.is_file():
        start, history = _resume(resume_path, model, optimizer, scheduler)
        print(f"[{name}] resuming after epoch {start}/{epochs}", file=sys.stderr)
    model.to(device).train()
    for epoch in range(start, epochs):
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        total, count = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, file=sys.stderr)
        for step in bar:
            idx = order[step * batch_size:(step + 1) * batch_size]
            x, y = inputs[idx].to(device, non_blocking=True), labels[idx].to(device, non_blocking=True)
            loss = loss_fn(x, y, epoch * steps_per_epoch + step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{total / count:.4f}")
        history.append(total / count)
        print(f"[{name}] epoch {epoch + 1}/{epochs} loss {history[-1]:.4f}", file=sys.stderr)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                    "rng": torch.get_rng_state()}, resume_path)
    model.eval()
    return history


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[float]]:
    """Restore model, optimizer, scheduler and RNG from a resume file; returns (epochs done, loss history).

    Raises:
        CheckpointError: the file is not a resume file of this training stage (read with ``weights_only``:
            a file holding anything but tensors, numbers and containers is refused, never run).
    """
    try:
        # weights_only: a resume file is data (tensors, numbers, lists), never code to unpickle
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = int(state["epoch"]), [float(v) for v in state["history"]]
        torch.set_rng_state(state["rng"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        reason = " ".join(str(err).split(".")[0].split()) or type(err).__name__
        raise ckpt.CheckpointError(
            f"{path} is not a resume file of this training stage ({type(err).__name__}: {reason}); it was not "
            "loaded as code. Delete it to train this stage from scratch") from None
    return start, history


def audit_backbone(backbone: nn.Module, images: torch.Tensor, iterations: int, seed: int,
                   progress: bool = True) -> LipschitzAudit:
    """The Lipschitz audit of ``backbone`` on ``images``, :data:`AUDIT_CHUNK` images per progress-bar step, with
    ``iterations`` power iterations and pair-ascent steps per image (the largest bounds of all steps)."""
    jacobian, pairs, count = 0.0, 0.0, 0
    chunks = range(0, len(images), AUDIT_CHUNK)
    for step, start in enumerate(tqdm(chunks, desc="Lipschitz audit", disable=not progress, leave=False,
                                      file=sys.stderr)):
        part = audit_lipschitz(backbone, images[start:start + AUDIT_CHUNK], power_iterations=iterations,
                               pair_steps=iterations, seed=seed * 100_003 + step)
        jacobian, pairs, count = max(jacobian, part.jacobian), max(pairs, part.pairs), count + part.inputs
    return LipschitzAudit(jacobian=jacobian, pairs=pairs, inputs=count)


def _spec(cfg: TrainConfig) -> tuple[DatasetSpec, int]:
    """The data set's spec (with the class folders of an ``imagefolder`` tree) and its number of classes."""
    spec = dataset_spec(cfg.dataset, cfg.data_root)
    if spec.num_classes is None:
        raise ValueError(f"dataset {cfg.dataset!r} needs a data root (the folder of its ImageFolder tree)")
    return spec, spec.num_classes


def _tensors(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of the run's data set, refused when a split is empty."""
    x_train, y_train = load_tensors(cfg.dataset, "train", cfg.data_root, limit=cfg.train_limit)
    x_test, y_test = load_tensors(cfg.dataset, "test", cfg.data_root, limit=cfg.test_limit)
    for split, x in (("train", x_train), ("test", x_test)):
        if len(x) == 0:
            raise ValueError(f"dataset {cfg.dataset!r} has no {split} images"
                             + (f" under {cfg.data_root}" if cfg.data_root else ""))
    return x_train, y_train, x_test, y_test


@torch.inference_mode()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device,
             noise_sigma: float = 0.0, seed: int = 0, batch_size: int = 1000) -> float:
    """Top-1 accuracy, optionally under Gaussian noise of std ``noise_sigma`` (seeded, one draw per input)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size]
        if noise_sigma > 0:
            x = x + noise_sigma * torch.randn(x.shape, generator=generator)
        correct += int((model(x.to(device)).argmax(1).cpu() == labels[start:start + batch_size]).sum())
    return correct / len(inputs)


@torch.inference_mode()
def embed(backbone: nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    backbone.eval()
    return torch.cat([backbone(inputs[s:s + batch_size].to(device)).cpu() for s in range(0, len(inputs), batch_size)])


def _training_record(cfg: TrainConfig, stage: str, epochs: int, history: list[float], **extra: object) -> dict:
    """The sidecar's record of how a model was trained: the settings of its ``stage`` and the shared ones."""
    shared = ("batch_size", "train_limit", "test_limit", "augment")
    settings = {k: v for k, v in asdict(cfg).items() if k.startswith(stage + "_") or k in shared}
    return {"dataset": cfg.dataset, "seed": cfg.seed, "epochs": epochs, "loss_history": history,
            "training": settings | extra}


def train_backbone(cfg: TrainConfig, out: Path, device: torch.device, progress: bool = True) -> dict:
    """Train the SLL backbone with a row-normalised training head and SLL's loss; audit; save."""
    _, num_classes = _spec(cfg)
    x_train, y_train, x_test, y_test = _tensors(cfg)
    torch.manual_seed(cfg.seed)
    backbone = SLLBackbone(cfg.backbone)
    train_head = backbone_training_head(cfg.backbone.embedding_dim, num_classes)
    model = nn.Sequential(backbone, train_head).to(device)
    augment = crop_and_flip if cfg.augment else _identity
    history = fit("backbone", model, lambda x, y, _: sll_loss(model(augment(x)), y), x_train, y_train,
                  cfg.backbone_epochs,
                  lambda: torch.optim.Adam(model.parameters(), lr=cfg.backbone_lr, betas=(0.5, 0.9)),
                  cfg.batch_size, cfg.seed, device, out / "sll-backbone.resume.pt", progress)
    acc = accuracy(model, x_test, y_test, device)
    audit = audit_backbone(backbone, x_test[:cfg.audit_images].to(device), cfg.audit_iterations, cfg.seed, progress)
    if not audit.confirms(SLLBackbone.LIPSCHITZ, ckpt.AUDIT_TOLERANCE):
        raise RuntimeError(f"the trained backbone fails its Lipschitz audit: {audit}")
    sidecar = ckpt.save_checkpoint(backbone.cpu(), out / "sll-backbone", {
        "kind": "backbone", "architecture": cfg.backbone.to_dict(),
        **_training_record(cfg, "backbone", cfg.backbone_epochs, history, loss="sll (offset 1.5*sqrt2, T 0.25)",
                          optimizer="adam betas (0.5, 0.9), one-cycle cosine", audit_images=cfg.audit_images,
                          audit_iterations=cfg.audit_iterations),
        "clean_accuracy": acc, "accuracy_note": "with the row-normalised training head",
        "lipschitz": ckpt.audit_record(audit, SLLBackbone.LIPSCHITZ),
    })
    (out / "sll-backbone.resume.pt").unlink(missing_ok=True)
    print(f"[backbone] clean test accuracy {acc:.4f}, audited Lipschitz lower bound {audit.lower_bound:.6f}",
          file=sys.stderr)
    return sidecar


def _head_loss(kind: str, head: nn.Module, cfg: TrainConfig, lipschitz: float
               ) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    if kind == "ce":
        return lambda z, y, _: F.cross_entropy(head(z), y)
    if kind == "sparsemax":
        return lambda z, y, _: head_sparsemax_loss(head(z), y)
    if kind == "margin":
        assert isinstance(head, nn.Linear)  # build_head makes every non-mlp head an nn.Linear
        return lambda z, y, _: certified_margin_loss(head(z), y, head.weight, cfg.head_margin_epsilon, lipschitz)
    # mlp: certified by Monte Carlo in embedding space, so trained under that noise (Cohen's recipe)
    return lambda z, y, _: F.cross_entropy(head(z + cfg.head_mlp_sigma * torch.randn_like(z)), y)


def train_heads(cfg: TrainConfig, out: Path, device: torch.device, kinds: tuple[str, ...] = HEAD_KINDS,
                progress: bool = True) -> list[dict]:
    """Train each head kind on the frozen backbone ``out/sll-backbone``; save ``out/head-KIND``."""
    backbone, bb_meta = ckpt.load_backbone(out / "sll-backbone")
    backbone.to(device)
    _, num_classes = _spec(cfg)
    x_train, y_train, x_test, y_test = _tensors(cfg)
    z_train, z_test = embed(backbone, x_train, device), embed(backbone, x_test, device)
    results = []
    for kind in kinds:
        torch.manual_seed(cfg.seed)
        config = HeadConfig(kind, bb_meta["architecture"]["embedding_dim"], num_classes)
        head = build_head(config).to(device)
        history = fit(f"head-{kind}", head, _head_loss(kind, head, cfg, backbone.lipschitz), z_train, y_train,
                      cfg.head_epochs, partial(torch.optim.SGD, head.parameters(), lr=cfg.head_lr, momentum=0.9),
                      cfg.batch_size, cfg.seed, device, out / f"head-{kind}.resume.pt", progress)
        acc = accuracy(head, z_test, y_test, device)
        sidecar = ckpt.save_checkpoint(head.cpu(), out / f"head-{kind}", {
            "kind": "head", "architecture": config.to_dict(), "backbone": bb_meta["name"],
            "backbone_sha256": bb_meta["state_sha256"],
            **_training_record(cfg, "head", cfg.head_epochs, history, head=kind,
                              optimizer="sgd momentum 0.9, one-cycle cosine"), "clean_accuracy": acc,
        })
        (out / f"head-{kind}.resume.pt").unlink(missing_ok=True)
        print(f"[head-{kind}] clean test accuracy {acc:.4f}", file=sys.stderr)
        results.append(sidecar)
    return results


def cnn_name(sigma: float) -> str:
    return f"cnn-noise{sigma:.2f}"


def train_cnns(cfg: TrainConfig, out: Path, device: torch.device, progress: bool = True) -> list[dict]:
    """Cohen's base classifiers: one CNN per sigma, Gaussian noise augmentation on [0, 1] pixels."""
    spec, num_classes = _spec(cfg)
    c, h, _ = spec.input_shape
    x_train, y_train, x_test, y_test = _tensors(cfg)
    augment = crop_and_flip if cfg.augment else _identity
    results = []
    for sigma in cfg.cnn_sigmas:
        torch.manual_seed(cfg.seed)
        config = CNNConfig(in_channels=c, image_size=h, num_classes=num_classes)
        model = SmallCNN(config).to(device)
        name = cnn_name(sigma)

        def noisy_loss(x: torch.Tensor, y: torch.Tensor, _: int, m: nn.Module = model,
                       s: float = sigma) -> torch.Tensor:
            x = augment(x)
            return F.cross_entropy(m(x + s * torch.randn_like(x)), y)

        def make_optimizer(m: nn.Module = model) -> torch.optim.Optimizer:
            return torch.optim.SGD(m.parameters(), lr=cfg.cnn_lr, momentum=0.9, weight_decay=1e-4)

        history = fit(name, model, noisy_loss, x_train, y_train, cfg.cnn_epochs, make_optimizer,
                      cfg.batch_size, cfg.seed, device, out / f"{name}.resume.pt", progress)
        noisy = accuracy(model, x_test, y_test, device, noise_sigma=sigma, seed=cfg.seed)
        clean = accuracy(model, x_test, y_test, device)
        sidecar = ckpt.save_checkpoint(model.cpu(), out / name, {
            "kind": "cnn", "architecture": config.to_dict(), "noise_sigma": sigma,
            **_training_record(cfg, "cnn", cfg.cnn_epochs, history, noise_sigma=sigma,
                              optimizer="sgd momentum 0.9 weight decay 1e-4, one-cycle cosine"),
            "clean_accuracy": clean, "noisy_accuracy": noisy,
        })
        (out / f"{name}.resume.pt").unlink(missing_ok=True)
        print(f"[{name}] test accuracy clean {clean:.4f}, under its own noise {noisy:.4f}", file=sys.stderr)
        results.append(sidecar)
    return results
