"""The models of one experiment: every ``[models.NAME]`` table of an experiment file, loaded.

Each table becomes one :class:`ExperimentModel` (a :class:`~bench.models.loaded.LoadedModel` and the
runs it takes part in), except a ``fars-bench`` table without ``head`` or ``cnn_sigma``: it stands for
every checkpoint of its folder, expanded by :meth:`ModelZoo.experiment_models` into ``sll+KIND`` (the
backbone with each head) and ``cnn-noiseS`` (Cohen's CNN trained at noise S, certified at S only),
the names ``python -m bench.train`` gives them. The stages see every model as a
:class:`~bench.models.loaded.LoadedModel` (a folder's split models carry the backbone's sidecar Lipschitz
record in ``details``); a single folder is also kept as a :class:`ModelZoo` for what identifies and
describes its checkpoints (:meth:`ExperimentModels.fingerprint`, :meth:`ExperimentModels.describe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.config import ModelTable
from ..data import canonical_name
from . import fars_format
from .checkpoints import CheckpointError
from .loaded import LoadedModel, SpecReader, load_model
from .zoo import ExperimentModel, ModelZoo, load_zoo


@dataclass
class ExperimentModels:
    """The loaded models of an experiment, in run order, and the checkpoint folder they came from when
    there is exactly one (``zoo``; ``None`` otherwise)."""

    entries: list[ExperimentModel] = field(default_factory=list)
    zoo: ModelZoo | None = None

    @property
    def by_name(self) -> dict[str, LoadedModel]:
        return {e.model.name: e.model for e in self.entries}

    def fingerprint(self) -> dict[str, str]:
        """What identifies the models wherever their files lie (compared when a run resumes): the zoo's
        checkpoint hashes for a checkpoint folder, each model's content hash otherwise."""
        prints = {} if self.zoo is None else self.zoo.fingerprint()
        zoo_names = set() if self.zoo is None else {e.model.name for e in self.zoo.experiment_models()}
        prints.update({e.model.name: e.model.fingerprint for e in self.entries if e.model.name not in zoo_names})
        return prints

    def describe(self) -> dict[str, object]:
        """Per model: format, parameters, Lipschitz constant, content hash (for the manifest)."""
        described: dict[str, object] = {} if self.zoo is None else dict(self.zoo.describe())
        for e in self.entries:
            described.setdefault(e.model.name, e.model.describe())
        return described

    def to(self, device: torch.device) -> ExperimentModels:
        for e in self.entries:
            e.model.to(device)
        if self.zoo is not None:
            self.zoo.to(device)
        return self


def is_folder_table(table: ModelTable) -> bool:
    """A ``fars-bench`` table that names a whole checkpoint folder (no ``head``, no ``cnn_sigma``)."""
    return table.spec.get("format") == "fars-bench" and not {"head", "cnn_sigma"} & set(table.spec)


def load_experiment_models(tables: Sequence[ModelTable], dataset: str, heads: Sequence[str] | None = None
                           ) -> ExperimentModels:
    """Load every model table (see the module docstring), in file order.

    ``heads`` limits which heads of a checkpoint folder are expanded (default: all). Every model must
    have been trained on ``dataset`` when its checkpoint says what it was trained on.

    Raises:
        CheckpointError, ModelSpecError (both ``ValueError``): a checkpoint that does not load, a model
            trained on another dataset, two models of the same name, a key a ``fars-bench`` folder table
            does not take (named).
    """
    models = ExperimentModels()
    folders = [t for t in tables if is_folder_table(t)]
    for table in tables:
        if is_folder_table(table):
            # the table's keys are those of one fars-bench model; a misspelt one ('hed') is no folder setting
            SpecReader(table.spec, table.name).check_keys(fars_format.KEYS)
            zoo = load_zoo(Path(table.spec["checkpoint"]))
            _check_dataset(table.name, zoo.backbone_meta.get("dataset"), dataset)
            if len(folders) == 1:
                models.zoo = zoo
            models.entries.extend(_restricted(e, table) for e in zoo.experiment_models(heads))
        else:
            spec = dict(table.spec)
            if isinstance(spec.get("dataset"), str):   # 'CIFAR-10', 'cifar_10': the registry's one name
                spec["dataset"] = _canonical(spec["dataset"])
            model = load_model(spec)
            models.entries.append(ExperimentModel(model, table.methods, table.sigmas))
    names = [e.model.name for e in models.entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CheckpointError(f"two models share the name(s) {', '.join(repeated)}; give each table its own name")
    return models


def models_from_folder(folder: Path, dataset: str, heads: Sequence[str] | None = None) -> ExperimentModels:
    """The models of one checkpoint folder written by ``python -m bench.train`` (``--models DIR``)."""
    table = ModelTable("models", {"format": "fars-bench", "checkpoint": str(folder), "name": "models"})
    return load_experiment_models([table], dataset, heads)


def _restricted(entry: ExperimentModel, table: ModelTable) -> ExperimentModel:
    """A folder's model with the table's ``methods``/``sigma`` restrictions added to its own."""
    methods = entry.methods if table.methods is None else tuple(
        m for m in (entry.methods or table.methods) if m in table.methods)
    sigmas = entry.sigmas if table.sigmas is None else tuple(
        s for s in (entry.sigmas or table.sigmas) if any(abs(s - t) <= 1e-6 * max(s, t) for t in table.sigmas))
    return ExperimentModel(entry.model, methods, sigmas)


def _canonical(dataset: str) -> str:
    try:
        return canonical_name(dataset)
    except ValueError:
        return dataset          # not a registered dataset: the format decides what it accepts


def _check_dataset(name: str, trained_on: object, dataset: str) -> None:
    """Refuse models trained on another dataset (the embedded subset is Fashion-MNIST's test set)."""
    if trained_on is None:
        return
    family = {"fashion-mnist-embedded": "fashion-mnist"}
    want = family.get(canonical_name(dataset), canonical_name(dataset))
    have = family.get(str(trained_on), str(trained_on))
    if have != want:
        raise CheckpointError(f"the models of {name!r} were trained on {have}, not on {want}: certify them on "
                              f"--dataset {have} (or train models for {want} with `python -m bench.train "
                              f"--dataset {want}`)")


__all__ = ["ExperimentModels", "is_folder_table", "load_experiment_models", "models_from_folder"]
