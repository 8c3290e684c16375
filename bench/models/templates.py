"""What a checkpoint of each format holds, key by key, and checkpoints of exactly that layout with random weights.

* :func:`layout`: the state dict keys and shapes a format expects (``cohen`` per ``arch``, ``sll`` per ``size``
  and ``dataset``, ``fars-bench`` per file of a checkpoint folder with the shipped architecture, ``torch`` per
  factory), computed from the loaders' own builders (:func:`~bench.models.cohen_format.state_shapes`,
  :func:`~bench.models.sll_format.authors_state_shapes`, the ``fars-bench`` configs): nothing is allocated;
* :func:`write_template`: a checkpoint file of that layout with random weights, which
  :func:`~bench.models.loaded.load_model` loads (``python -m bench.models template``), to diff one's own file
  against;
* :func:`formats_markdown`: the tables of ``docs/model-formats.md`` (``python -m bench.models layout --all``),
  long runs of numbered layers shown once (``model.{1..20}.kernel``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fars import BackboneConfig, SLLBackbone

from ..common.env import EMBEDDED_MODELS
from . import cohen_format, sll_format
from .networks import HEAD_KINDS, CNNConfig, HeadConfig, SmallCNN, build_head

#: the formats whose layout this module lists and writes (the ``format`` key of a model table)
TEMPLATE_FORMATS = ("cohen", "sll", "fars-bench", "torch")
#: the noise level of the one CNN of a ``fars-bench`` template folder
TEMPLATE_CNN_SIGMA = 0.25
#: the Lipschitz audit recorded in a ``fars-bench`` template's backbone sidecar (random inputs, iterations)
TEMPLATE_AUDIT = (4, 5)
#: the container key of each format's file (``None``: the file is the state dict itself)
CONTAINER = {"cohen": "state_dict", "sll": "model_state_dict", "torch": None}
SEED = 0

Shapes = dict[str, tuple[int, ...]]


def layout(fmt: str, *, arch: str | None = None, size: str | None = None, dataset: str = "cifar10",
           factory: str | None = None, kwargs: Mapping[str, Any] | None = None) -> dict[str, Shapes]:
    """The state dict keys and shapes of a ``fmt`` checkpoint, by file (one file except for ``fars-bench``).

    ``cohen``: ``arch`` (a key of :data:`~bench.models.cohen_format.ARCHS`); ``sll``: ``size`` (a key of
    :data:`~bench.models.sll_format.SLL_SIZES`) and ``dataset`` (``cifar10``, ``cifar100``,
    ``tiny-imagenet``); ``fars-bench``: the files of a ``bench.train`` folder with the architecture of the
    shipped models; ``torch``: the module ``factory(**kwargs)`` returns. Keys are the file's, in file order.

    Raises:
        ValueError: an unknown format, arch, size or dataset, or a missing ``arch`` / ``size`` / ``factory``.
    """
    if fmt == "cohen":
        if arch not in cohen_format.ARCHS:
            raise ValueError(f"--arch must be one of {', '.join(cohen_format.ARCHS)}, got {arch!r}")
        return {"checkpoint.pth.tar": cohen_format.state_shapes(arch)}
    if fmt == "sll":
        if size not in sll_format.SLL_SIZES:
            raise ValueError(f"--size must be one of {', '.join(sll_format.SLL_SIZES)}, got {size!r}")
        if dataset not in sll_format.SLL_DATASETS:
            raise ValueError(f"--dataset must be one of {', '.join(sll_format.SLL_DATASETS)} for the sll format, "
                             f"got {dataset!r}")
        return {"model.ckpt": sll_format.authors_state_shapes(sll_format.SLL_SIZES[size], dataset)}
    if fmt == "fars-bench":
        return _fars_bench_layout()
    if fmt == "torch":
        if not factory:
            raise ValueError("--factory package.module:function is required for the torch format")
        module = _call_factory(factory, kwargs or {})   # the user's module as built (it may draw weights)
        return {"state dict": {k: tuple(v.shape) for k, v in module.state_dict().items()}}
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(TEMPLATE_FORMATS)}")


def _call_factory(spec: str, kwargs: Mapping[str, Any]) -> nn.Module:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--factory must read 'package.module:function', got {spec!r}")
    function: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        function = getattr(function, part)
    network = function(**kwargs)
    if not isinstance(network, nn.Module):
        raise ValueError(f"{spec} returned a {type(network).__name__}, not an nn.Module")
    return network


def _architecture(name: str) -> dict[str, Any]:
    architecture: dict[str, Any] = json.loads((EMBEDDED_MODELS / f"{name}.json").read_text())["architecture"]
    return architecture


def _fars_bench_layout() -> dict[str, Shapes]:
    """Every file of the shipped checkpoint folder, built from its sidecars' architectures on the meta device."""
    files: dict[str, nn.Module] = {}
    with torch.device("meta"):
        files["sll-backbone.pt"] = SLLBackbone(BackboneConfig.from_dict(_architecture("sll-backbone")))
        for kind in HEAD_KINDS:
            files[f"head-{kind}.pt"] = build_head(HeadConfig(**_architecture(f"head-{kind}")))
        noise = sorted(p.stem for p in EMBEDDED_MODELS.glob("cnn-noise*.json"))[0]
        files["cnn-noiseS.pt"] = SmallCNN(CNNConfig(**_architecture(noise)))
    return {name: {k: tuple(v.shape) for k, v in module.state_dict().items()} for name, module in files.items()}


def write_template(fmt: str, out: Path, *, arch: str | None = None, size: str | None = None,
                   dataset: str = "cifar10", factory: str | None = None, kwargs: Mapping[str, Any] | None = None,
                   seed: int = SEED) -> dict[str, Any]:
    """Write a ``fmt`` checkpoint of exactly the :func:`layout` with random weights to ``out``.

    ``cohen``: ``{'epoch': 0, 'arch', 'state_dict'}`` of the arch's network at its initialisation; ``sll``:
    ``{'epoch': 0, 'global_step': 0, 'model_state_dict', 'optimizer_state_dict': {}}`` with normal(0, 0.05)
    tensors (any finite values load: the layers are 1-Lipschitz for every weight); ``torch``: the state dict
    of ``factory(**kwargs)`` at its initialisation; ``fars-bench``: the folder ``out`` with the shipped
    architecture at its initialisation (:func:`_write_fars_bench`). Seeded by ``seed``. Returns the
    ``[models.NAME]`` table that loads it (``checkpoint`` is ``out`` as given).

    Raises:
        ValueError: as :func:`layout`.
    """
    if fmt not in TEMPLATE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(TEMPLATE_FORMATS)}")
    if fmt == "fars-bench":
        return _write_fars_bench(Path(out), seed)
    shapes = layout(fmt, arch=arch, size=size, dataset=dataset, factory=factory, kwargs=kwargs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {"format": fmt, "checkpoint": str(out)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if fmt == "cohen":
            assert arch is not None
            saved, _ = cohen_format.build_classifier(arch)
            state = {f"1.{k}": v for k, v in saved.state_dict().items()}
            payload: Any = {"epoch": 0, "arch": arch, "state_dict": state}
            spec["arch"] = arch
        elif fmt == "sll":
            (expected,) = shapes.values()
            state = {k: torch.randn(shape) * 0.05 for k, shape in expected.items()}
            payload = {"epoch": 0, "global_step": 0, "model_state_dict": state, "optimizer_state_dict": {}}
            spec.update(size=size, dataset=dataset)
        else:
            assert factory is not None
            network = _call_factory(factory, kwargs or {})
            payload = state = dict(network.state_dict())
            spec.update(factory=factory, kwargs=dict(kwargs or {}))
    (expected,) = shapes.values()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected, "a template must have the listed layout"
    torch.save(payload, out)
    return spec


def _write_fars_bench(out: Path, seed: int) -> dict[str, Any]:
    """A ``bench.train`` folder of untrained models with the shipped architecture: ``sll-backbone`` (its
    sidecar records a small audit, :data:`TEMPLATE_AUDIT`, on random inputs: the SLL layers are 1-Lipschitz
    for any weights), every ``head-KIND`` on it and one ``cnn-noiseS`` (S = :data:`TEMPLATE_CNN_SIGMA`)."""
    from fars import audit_lipschitz

    from . import checkpoints as ckpt
    from .training import cnn_name

    backbone_arch = _architecture("sll-backbone")
    dataset = json.loads((EMBEDDED_MODELS / "sll-backbone.json").read_text()).get("dataset")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = SLLBackbone(BackboneConfig.from_dict(backbone_arch)).eval()
        inputs, iterations = TEMPLATE_AUDIT
        shape = (backbone_arch["in_channels"], backbone_arch["image_size"], backbone_arch["image_size"])
        audit = audit_lipschitz(backbone, torch.rand(inputs, *shape), power_iterations=iterations,
                                pair_steps=iterations, seed=seed)
        meta = ckpt.save_checkpoint(backbone, out / "sll-backbone", {
            "kind": "backbone", "architecture": backbone_arch, "dataset": dataset, "template": True,
            "lipschitz": ckpt.audit_record(audit, SLLBackbone.LIPSCHITZ)})
        for kind in HEAD_KINDS:
            config = HeadConfig(**_architecture(f"head-{kind}"))
            ckpt.save_checkpoint(build_head(config), out / f"head-{kind}", {
                "kind": "head", "architecture": config.to_dict(), "backbone": meta["name"],
                "backbone_sha256": meta["state_sha256"], "template": True})
        cnn = CNNConfig(**_architecture(sorted(p.stem for p in EMBEDDED_MODELS.glob("cnn-noise*.json"))[0]))
        ckpt.save_checkpoint(SmallCNN(cnn), out / cnn_name(TEMPLATE_CNN_SIGMA), {
            "kind": "cnn", "architecture": cnn.to_dict(), "noise_sigma": TEMPLATE_CNN_SIGMA, "dataset": dataset,
            "template": True})
    return {"format": "fars-bench", "checkpoint": str(out)}


def toml_table(name: str, spec: Mapping[str, Any]) -> str:
    """``spec`` as the ``[models.NAME]`` table of an experiment file (strings, numbers and inline tables)."""
    def value(v: Any) -> str:
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)
    return "\n".join([f'[models."{name}"]', *(f"{k} = {value(v)}" for k, v in spec.items())])


def grouped(shapes: Shapes) -> list[tuple[str, tuple[int, ...]]]:
    """``shapes`` with the keys that differ only in their last number and share a shape merged into one row:
    ``model.{1..20}.kernel`` (consecutive numbers as ranges, others listed). Rows in order of first key."""
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for key, shape in shapes.items():
        parts = key.split(".")
        numbers = [i for i, part in enumerate(parts) if part.isdigit()]
        if not numbers:
            groups.setdefault((key, shape), [])
            continue
        last = numbers[-1]
        pattern = ".".join(parts[:last] + ["{}"] + parts[last + 1:])
        groups.setdefault((pattern, shape), []).append(int(parts[last]))
    rows = []
    for (pattern, shape), values in groups.items():
        if not values:
            rows.append((pattern, shape))
        elif len(values) == 1:
            rows.append((pattern.replace("{}", str(values[0])), shape))
        else:
            rows.append((pattern.replace("{}", "{" + _ranges(values) + "}"), shape))
    return rows


def _ranges(values: list[int]) -> str:
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(f"{a}..{b}" if b > a else f"{a}" for a, b in runs)


def shapes_markdown(shapes: Shapes) -> str:
    """A Markdown table of :func:`grouped` rows: key, shape (``[]`` for a scalar) and the keys it stands for."""
    lines = ["| key | shape |", "|---|---|"]
    lines += [f"| `{key}` | `[{', '.join(map(str, shape))}]` |" for key, shape in grouped(shapes)]
    return "\n".join(lines)


def _count(shapes: Shapes) -> str:
    params = sum(_numel(s) for s in shapes.values())
    return f"{len(shapes)} keys, {params:,} values"


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def formats_markdown() -> str:
    """``docs/model-formats.md``: per format, arch and size, the keys and shapes its checkpoint must hold."""
    out = ["# Checkpoint layouts of the model formats", "",
           "Generated by `python -m bench.models layout --all > docs/model-formats.md` from the loaders' own "
           "builders (tests/test_templates.py checks that it is current); do not edit by hand. Keys that differ "
           "only in their last number and share a shape are one row (`{1..20}`: 1 to 20). "
           "`python -m bench.models template` writes a checkpoint of any of these layouts with random weights, "
           "which `bench.models info` and `bench.run` load, to compare one's own file with "
           "(`python -m bench.models layout --checkpoint FILE` lists a file's keys the same way).", ""]
    out += ["## `cohen` (Cohen et al., Salman et al.: `checkpoint.pth.tar`)", "",
            "The file is `{'epoch', 'arch', 'state_dict', 'optimizer'}`; `arch` names the network (or the model "
            "table's `arch` key does, when the file has none); `epoch` and `optimizer` are not read. The classes "
            "are the rows of the last layer's weight (the table shows the arch's default).", ""]
    for arch in cohen_format.ARCHS:
        (shapes,) = layout("cohen", arch=arch).values()
        out += [f"### `arch = \"{arch}\"` ({_count(shapes)})", "",
                f"`python -m bench.models template --format cohen --arch {arch} --out FILE`", "",
                shapes_markdown(shapes), ""]
    out += ["## `sll` (Araujo et al. 2023: their `checkpoints/model.ckpt`)", "",
            "The file is `{'epoch', 'global_step', 'model_state_dict', 'optimizer_state_dict'}`; only "
            "`model_state_dict` is read (keys `module.model.model.*`, or `model.model.*` without DataParallel). "
            "Shown on CIFAR-10 (`dataset = \"cifar10\"`); on CIFAR-100 the last layer has 100 rows, on Tiny "
            "ImageNet 200 and the dense layers see 4 times as many features (64 x 64 images).", ""]
    for size in sll_format.SLL_SIZES:
        (shapes,) = layout("sll", size=size).values()
        out += [f"### `size = \"{size}\"` ({_count(shapes)})", "",
                f"`python -m bench.models template --format sll --size {size} --out FILE`", "",
                shapes_markdown(shapes), ""]
    out += ["## `fars-bench` (a `python -m bench.train` folder)", "",
            "One `NAME.pt` (a plain state dict) and `NAME.json` (its sidecar: `format`, `kind`, `name`, "
            "`architecture`, `state_sha256`, for the backbone `lipschitz.declared` and "
            "`lipschitz.audited_lower_bound`, for a head `backbone_sha256`, for a CNN `noise_sigma`) per model. "
            "The shapes follow each sidecar's `architecture`; shown for the shipped models (`bench/embedded/models`, "
            "1 x 28 x 28 Fashion-MNIST). `python -m bench.train` writes such a folder with trained models, "
            "`python -m bench.models template --format fars-bench --out DIR` one with untrained models.", ""]
    for name, shapes in layout("fars-bench").items():
        out += [f"### `{name}` ({_count(shapes)})", "", shapes_markdown(shapes), ""]
    out += ["## `torch` (your own `nn.Module`)", "",
            "`checkpoint` (optional) is the state dict of the module `factory(**kwargs)` returns, alone or "
            "under `state_dict` / `model_state_dict`: its keys are the module's. "
            "`python -m bench.models layout --format torch --factory package.module:function` lists them and "
            "`python -m bench.models template --format torch --factory package.module:function --out FILE` "
            "writes them with the module's initial weights.", ""]
    return "\n".join(out)


def checkpoint_shapes(path: Path) -> Shapes:
    """The state dict keys and shapes of a checkpoint file (read weights-only), whichever container holds them.

    Raises:
        ValueError: a file that is not a weights-only torch checkpoint or holds no state dict.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"{path} cannot be read as a weights-only torch checkpoint ({type(err).__name__})") from None
    candidate = payload
    if isinstance(payload, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(payload.get(key), Mapping):
                candidate = payload[key]
                break
    if not isinstance(candidate, Mapping) or not all(isinstance(v, torch.Tensor) for v in candidate.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of names to tensors)")
    return {str(k): tuple(v.shape) for k, v in candidate.items()}

