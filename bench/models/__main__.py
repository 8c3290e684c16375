"""``python -m bench.models``: check, list and produce model checkpoints.

* ``info --config FILE``: for each model of an experiment, parameters, input shape, classes, the declared
  Lipschitz constant of its backbone and a fresh audited lower bound (fars.audit, with its budget stated
  first and a progress bar), and its clean accuracy on the first test images. The check to run first with
  a new checkpoint: a wrong normalisation or a mismatched dataset shows as chance accuracy, a wrong
  Lipschitz constant as an audited bound above the declared one.
* ``layout --format F [--arch A | --size S]``: the keys and shapes a checkpoint of that format must hold
  (``--all``: every format, the text of ``docs/model-formats.md``; ``--checkpoint FILE``: a file's own);
* ``template --format F [--arch A | --size S] --out FILE``: a checkpoint of exactly that layout with random
  weights, and the model table that loads it.

PyTorch and the loaders are imported after the flags are parsed (``--help`` answers at once).
A command-line leaf: nothing imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..common.cli import UsageError, cli_exit
from ..common.cli_help import DefaultsHelpFormatter
from ..common.config import ConfigError, load_experiment

if TYPE_CHECKING:
    import torch

    from .experiment_models import ExperimentModels

#: the choices of the layout and template flags (checked against the loaders' tables by the tests)
FORMATS = ("cohen", "sll", "fars-bench", "torch")
COHEN_ARCHS = ("cifar_resnet20", "cifar_resnet110", "imagenet32_resnet110", "resnet50")
SLL_SIZES = ("small", "medium", "large", "xlarge")
SLL_DATASETS = ("cifar10", "cifar100", "tiny-imagenet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.models", formatter_class=DefaultsHelpFormatter,
                                     description="Inspect the models of an experiment file; list and write the "
                                                 "checkpoint layout of each model format.")
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
                      help="power iterations and pair-ascent steps (at each of 3 starting scales) of the audit")
    info.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    info.add_argument("--no-progress", action="store_true", help="no progress bar for the audit")
    for name, helptext in (("layout", "the keys and shapes a checkpoint of a format must hold"),
                           ("template", "write a checkpoint of a format's exact layout with random weights")):
        command = sub.add_parser(name, formatter_class=DefaultsHelpFormatter, help=helptext,
                                 description=helptext[0].upper() + helptext[1:] + " (see docs/model-formats.md).")
        command.add_argument("--format", dest="fmt", choices=FORMATS, required=name == "template",
                             help="the model table's `format`")
        command.add_argument("--arch", choices=COHEN_ARCHS, default=None, help="cohen: the network")
        command.add_argument("--size", choices=SLL_SIZES, default=None, help="sll: the authors' --model-name")
        command.add_argument("--dataset", choices=SLL_DATASETS, default="cifar10", help="sll: the dataset")
        command.add_argument("--factory", default=None, help="torch: package.module:function returning the module")
        command.add_argument("--kwargs", default="{}", help="torch: the factory's keyword arguments (JSON object)")
    layout = sub.choices["layout"]
    layout.add_argument("--all", action="store_true", help="every format, arch and size (docs/model-formats.md)")
    layout.add_argument("--checkpoint", type=Path, default=None, help="list this file's keys and shapes instead")
    template = sub.choices["template"]
    template.add_argument("--out", type=Path, required=True,
                          help="the checkpoint file to write (fars-bench: the checkpoint folder)")
    template.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info(parser, args)
    return _layout_or_template(parser, args)


def _layout_or_template(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from . import templates

    if args.command == "layout" and (args.all or args.checkpoint is not None):
        if args.all:
            print(templates.formats_markdown())
        else:
            print(templates.shapes_markdown(templates.checkpoint_shapes(args.checkpoint)))
        return 0
    if args.fmt is None:
        parser.error("give --format (or --all, or --checkpoint FILE)")
    wanted = {"cohen": ("arch", "--arch"), "sll": ("size", "--size"), "torch": ("factory", "--factory")}
    if args.fmt in wanted and getattr(args, wanted[args.fmt][0]) is None:
        parser.error(f"--format {args.fmt} needs {wanted[args.fmt][1]}")
    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as err:
        raise UsageError(f"--kwargs must be a JSON object: {err}") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"--kwargs must be a JSON object, got {args.kwargs}")
    options = dict(arch=args.arch, size=args.size, dataset=args.dataset, factory=args.factory, kwargs=kwargs)
    if args.command == "layout":
        for name, shapes in templates.layout(args.fmt, **options).items():
            print(f"{name}:\n{templates.shapes_markdown(shapes)}\n")
        return 0
    spec = templates.write_template(args.fmt, args.out, seed=args.seed, **options)
    print(f"wrote {args.out}; an experiment file loads it with\n\n"
          f"{templates.toml_table(args.out.name.split('.')[0] or 'model', spec)}", file=sys.stderr)
    return 0


def _info(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    for flag in ("images", "audit_images", "audit_iterations"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0")
    try:
        experiment = load_experiment(args.config)
    except ConfigError as err:
        parser.error(str(err))
    from ..common.env import resolve_device
    from ..data import canonical_name
    from .experiment_models import load_experiment_models

    dataset = canonical_name(experiment.settings.get("dataset", "fashion-mnist"))
    data_root = args.data_root or experiment.settings.get("data_root")
    if not experiment.models:
        parser.error(f"{args.config} names no models ([models.NAME] tables)")
    device = resolve_device(args.device)
    try:
        models = load_experiment_models(experiment.models, dataset).to(device)
        images, labels = _test_images(dataset, data_root, max(args.images, args.audit_images))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    for line in info_lines(models, images.to(device), labels, args.audit_images, args.audit_iterations,
                           accuracy_images=args.images, progress=not args.no_progress):
        print(line)
    return 0


def _test_images(dataset: str, data_root: Path | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    from ..data.selection import select_images

    if count == 0:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    images, labels, _ = select_images(dataset, data_root, count, 1, exact=False)
    return images, labels


def info_lines(models: ExperimentModels, images: torch.Tensor, labels: torch.Tensor, audit_images: int,
               audit_iterations: int, accuracy_images: int | None = None, progress: bool = False) -> list[str]:
    """One block of lines per model (what ``info`` prints): the audit on the first ``audit_images`` images,
    the clean accuracy on the first ``accuracy_images`` (default: all of ``images``)."""
    accuracy_images = len(images) if accuracy_images is None else accuracy_images
    lines = []
    audits: dict[tuple[int, float], str] = {}   # one audit per backbone (the heads of a folder share theirs)
    for entry in models.entries:
        model = entry.model
        params = sum(p.numel() for p in model.network.parameters())
        lines += [f"{model.name} ({model.format})",
                  f"  parameters: {params:,}; input {tuple(model.input_shape)}; {model.num_classes} classes",
                  f"  fingerprint: {model.fingerprint[:16]}"]
        if model.backbone is not None and model.lipschitz is not None:
            key = (id(model.backbone), model.lipschitz)
            if key not in audits:
                audits[key] = _lipschitz_line(model.name, model.backbone, model.lipschitz, images[:audit_images],
                                              audit_iterations, progress)
            lines.append("  " + audits[key])
        else:
            lines.append("  no Lipschitz backbone: certified by cohen only")
        if accuracy_images and len(images):
            lines.append("  " + _accuracy_line(model.network, images[:accuracy_images], labels[:accuracy_images],
                                               model.num_classes))
    return lines


def _lipschitz_line(name: str, backbone: torch.nn.Module, declared: float, images: torch.Tensor, iterations: int,
                    progress: bool) -> str:
    from tqdm.auto import tqdm

    from fars.audit import audit_lipschitz, audit_steps

    from .checkpoints import AUDIT_TOLERANCE

    if len(images) == 0 or iterations == 0:
        return f"Lipschitz constant of the backbone: declared {declared:g} (not audited)"
    steps = audit_steps(iterations, iterations)
    print(f"{name}: auditing the backbone's Lipschitz constant on {len(images)} image(s): {steps} steps "
          f"({iterations} power iterations, then {iterations} pair-ascent steps at each of 3 starting scales), "
          "each a float64 forward and backward pass (--audit-images/--audit-iterations set the budget)",
          file=sys.stderr)
    with tqdm(total=steps, desc=f"audit {name}", unit="step", disable=not progress, file=sys.stderr,
              leave=False) as bar:
        audit = audit_lipschitz(backbone, images, power_iterations=iterations, pair_steps=iterations,
                                step=lambda: bar.update(1))
    verdict = "confirms" if audit.confirms(declared, AUDIT_TOLERANCE) else "EXCEEDS THE DECLARED CONSTANT"
    return (f"Lipschitz constant of the backbone: declared {declared:g}, audited lower bound "
            f"{audit.lower_bound:.4f} on {audit.inputs} image(s) ({verdict})")


def _accuracy_line(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int) -> str:
    import torch

    network.eval()
    with torch.inference_mode():
        predictions = torch.cat([network(batch).argmax(dim=1).cpu() for batch in images.split(256)])
    accuracy = float((predictions == labels).double().mean())
    # below twice chance: a wrong normalisation or dataset, not a weak model
    chance = " - near chance: check the normalisation and the dataset" if accuracy < 2.0 / max(2, classes) else ""
    return f"clean accuracy on the first {len(images)} test images: {accuracy:.1%}{chance}"


if __name__ == "__main__":
    cli_exit(main)
