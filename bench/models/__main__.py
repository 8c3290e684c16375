"""``python -m bench.models info --config FILE``: check that each model of an experiment loaded right.

For each model: parameters, input shape, classes, the declared Lipschitz constant of its backbone and
a fresh audited lower bound (fars.audit), and its clean accuracy on the first test images. The check
to run first with a new checkpoint: a wrong normalisation or a mismatched dataset shows as chance
accuracy, a wrong Lipschitz constant as an audited bound above the declared one.
A command-line leaf: nothing imports it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fars.audit import audit_lipschitz

from ..cli import cli_exit
from ..cli_help import DefaultsHelpFormatter
from ..config import ConfigError, load_experiment
from ..data import canonical_name
from ..data.selection import select_images
from ..env import resolve_device
from .checkpoints import AUDIT_TOLERANCE
from .experiment import ExperimentModels, load_experiment_models


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.models", formatter_class=DefaultsHelpFormatter,
                                     description="Inspect the models of an experiment file.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", formatter_class=DefaultsHelpFormatter,
                          help="parameters, shapes, Lipschitz constants (declared and audited) and clean accuracy",
                          description="For each model of the experiment: parameters, input shape, classes, declared "
                                      "and audited Lipschitz constant of the backbone, clean accuracy on the first "
                                      "test images (chance accuracy means a wrong normalisation or dataset).")
    info.add_argument("--config", type=Path, required=True, help="experiment file (TOML) whose [models.*] to load")
    info.add_argument("--data-root", type=Path, default=None, help="dataset folder (default: the file's data_root)")
    info.add_argument("--images", type=int, default=100, help="test images for the clean accuracy (0: skip it)")
    info.add_argument("--audit-images", type=int, default=4,
                      help="images at which the backbone's Lipschitz constant is audited (0: skip the audit)")
    info.add_argument("--audit-iterations", type=int, default=20,
                      help="power iterations and pair-ascent steps of the audit")
    info.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("images", "audit_images", "audit_iterations"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0")
    try:
        experiment = load_experiment(args.config)
    except ConfigError as err:
        parser.error(str(err))
    dataset = canonical_name(experiment.settings.get("dataset", "fashion-mnist"))
    data_root = args.data_root or experiment.settings.get("data_root")
    if not experiment.models:
        parser.error(f"{args.config} names no models ([models.NAME] tables)")
    device = resolve_device(args.device)
    try:
        models = load_experiment_models(experiment.models, dataset).to(device)
        images, labels = _test_images(dataset, data_root, args.images)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    for line in info_lines(models, images.to(device), labels, args.audit_images, args.audit_iterations):
        print(line)
    return 0


def _test_images(dataset: str, data_root: Path | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    if count == 0:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    images, labels, _ = select_images(dataset, data_root, count, 1, exact=False)
    return images, labels


def info_lines(models: ExperimentModels, images: torch.Tensor, labels: torch.Tensor, audit_images: int,
               audit_iterations: int) -> list[str]:
    """One block of lines per model (what ``info`` prints)."""
    lines = []
    for entry in models.entries:
        model = entry.model
        params = sum(p.numel() for p in model.network.parameters())
        lines += [f"{model.name} ({model.format})",
                  f"  parameters: {params:,}; input {tuple(model.input_shape)}; {model.num_classes} classes",
                  f"  fingerprint: {model.fingerprint[:16]}"]
        if model.backbone is not None and model.lipschitz is not None:
            lines.append("  " + _lipschitz_line(model.backbone, model.lipschitz, images[:audit_images],
                                                audit_iterations))
        else:
            lines.append("  no Lipschitz backbone: certified by cohen only")
        if len(images):
            lines.append("  " + _accuracy_line(model.network, images, labels, model.num_classes))
    return lines


def _lipschitz_line(backbone: torch.nn.Module, declared: float, images: torch.Tensor, iterations: int) -> str:
    if len(images) == 0 or iterations == 0:
        return f"Lipschitz constant of the backbone: declared {declared:g} (not audited)"
    audit = audit_lipschitz(backbone, images, power_iterations=iterations, pair_steps=iterations)
    verdict = "confirms" if audit.confirms(declared, AUDIT_TOLERANCE) else "EXCEEDS THE DECLARED CONSTANT"
    return (f"Lipschitz constant of the backbone: declared {declared:g}, audited lower bound "
            f"{audit.lower_bound:.4f} on {audit.inputs} image(s) ({verdict})")


def _accuracy_line(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int) -> str:
    network.eval()
    with torch.inference_mode():
        predictions = torch.cat([network(batch).argmax(dim=1).cpu() for batch in images.split(256)])
    accuracy = float((predictions == labels).double().mean())
    # below twice chance: a wrong normalisation or dataset, not a weak model
    chance = " - near chance: check the normalisation and the dataset" if accuracy < 2.0 / max(2, classes) else ""
    return f"clean accuracy on the first {len(images)} test images: {accuracy:.1%}{chance}"


if __name__ == "__main__":
    cli_exit(main)
