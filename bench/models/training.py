"""Training of the default models (the command is ``python -m bench.train [all|backbone|heads|cnn] ...``).

Two-stage FaRS recipe (as in the paper, scaled to the dataset): an SLL backbone trained with SLL's
margin loss, then frozen; heads trained on its embeddings (``ce``, ``sparsemax``, ``margin``, ``mlp``).
Cohen's baseline: a CNN trained with Gaussian noise augmentation at each sigma (noise on [0, 1] pixels,
no normalisation layer). Every run is seeded, shows progress, and resumes from its last finished epoch
(``NAME.resume.pt`` next to the checkpoint, removed when the checkpoint is written).
"""

from __future__ import annotations

import math
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
from fars.losses import certified_margin_loss, head_sparsemax_loss, sll_loss

from ..data import dataset_spec, load_tensors
from . import checkpoints as ckpt
from .networks import HEAD_KINDS, CNNConfig, HeadConfig, SmallCNN, backbone_training_head, build_head

DEFAULT_SIGMAS = (0.12, 0.25, 0.5)


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
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


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
        # weights_only: a resume file is data (tensors, numbers, lists), never code to unpickle
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = state["epoch"], state["history"]
        torch.set_rng_state(state["rng"])
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
    shared = ("batch_size", "train_limit", "test_limit")
    settings = {k: v for k, v in asdict(cfg).items() if k.startswith(stage + "_") or k in shared}
    return {"dataset": cfg.dataset, "seed": cfg.seed, "epochs": epochs, "loss_history": history,
            "training": settings | extra}


def train_backbone(cfg: TrainConfig, out: Path, device: torch.device, progress: bool = True) -> dict:
    """Train the SLL backbone with a row-normalised training head and SLL's loss; audit; save."""
    spec = dataset_spec(cfg.dataset)
    x_train, y_train = load_tensors(cfg.dataset, "train", limit=cfg.train_limit)
    x_test, y_test = load_tensors(cfg.dataset, "test", limit=cfg.test_limit)
    assert spec.num_classes is not None  # only imagefolder lacks it, and load_tensors refuses it without data_root
    torch.manual_seed(cfg.seed)
    backbone = SLLBackbone(cfg.backbone)
    train_head = backbone_training_head(cfg.backbone.embedding_dim, spec.num_classes)
    model = nn.Sequential(backbone, train_head).to(device)
    history = fit("backbone", model, lambda x, y, _: sll_loss(model(x), y), x_train, y_train, cfg.backbone_epochs,
                  lambda: torch.optim.Adam(model.parameters(), lr=cfg.backbone_lr, betas=(0.5, 0.9)),
                  cfg.batch_size, cfg.seed, device, out / "sll-backbone.resume.pt", progress)
    acc = accuracy(model, x_test, y_test, device)
    audit = audit_lipschitz(backbone, x_test[:64].to(device), power_iterations=30, pair_steps=50, seed=cfg.seed)
    if not audit.confirms(SLLBackbone.LIPSCHITZ, ckpt.AUDIT_TOLERANCE):
        raise RuntimeError(f"the trained backbone fails its Lipschitz audit: {audit}")
    sidecar = ckpt.save_checkpoint(backbone.cpu(), out / "sll-backbone", {
        "kind": "backbone", "architecture": cfg.backbone.to_dict(),
        **_training_record(cfg, "backbone", cfg.backbone_epochs, history, loss="sll (offset 1.5*sqrt2, T 0.25)",
                          optimizer="adam betas (0.5, 0.9), one-cycle cosine"),
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
    spec = dataset_spec(cfg.dataset)
    x_train, y_train = load_tensors(cfg.dataset, "train", limit=cfg.train_limit)
    x_test, y_test = load_tensors(cfg.dataset, "test", limit=cfg.test_limit)
    assert spec.num_classes is not None  # only imagefolder lacks it, and load_tensors refuses it without data_root
    z_train, z_test = embed(backbone, x_train, device), embed(backbone, x_test, device)
    results = []
    for kind in kinds:
        torch.manual_seed(cfg.seed)
        config = HeadConfig(kind, bb_meta["architecture"]["embedding_dim"], spec.num_classes)
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
    spec = dataset_spec(cfg.dataset)
    c, h, _ = spec.input_shape
    x_train, y_train = load_tensors(cfg.dataset, "train", limit=cfg.train_limit)
    x_test, y_test = load_tensors(cfg.dataset, "test", limit=cfg.test_limit)
    assert spec.num_classes is not None  # only imagefolder lacks it, and load_tensors refuses it without data_root
    results = []
    for sigma in cfg.cnn_sigmas:
        torch.manual_seed(cfg.seed)
        config = CNNConfig(in_channels=c, image_size=h, num_classes=spec.num_classes)
        model = SmallCNN(config).to(device)
        name = cnn_name(sigma)

        def noisy_loss(x: torch.Tensor, y: torch.Tensor, _: int, m: nn.Module = model,
                       s: float = sigma) -> torch.Tensor:
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
