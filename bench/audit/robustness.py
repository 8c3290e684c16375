"""Empirical robustness (Table 2) and the soundness audits of a certification run (``python -m bench.attack``).

Reads ``RESULTS/certify.tsv`` and ``RESULTS/manifest.json`` (written by ``python -m bench.run``), attacks
the same images with the same models, and writes next to them:

* ``robustness.csv`` - empirical robust accuracy per model and l2 radius (``pgd`` True at the radii
  where the full PGD ran; other rows come from the smallest adversarial points already found), and
  ``robustness_examples.csv`` - per (model, example) the smallest adversarial distance found;
* ``sanity.csv`` / ``sanity_violations.csv`` - certified vs empirical accuracy of every method on
  every radius, and every certified example whose ball contains a known adversarial point;
* ``soundness.csv`` / ``soundness_examples.csv`` - deterministic certificates attacked at 0.999 r;
* ``paper_criterion.csv`` - the public FaRS code's criterion (``fars-paper-criterion``, audit only);
* ``smoothed_attack.csv`` - Monte Carlo certificates: attack on the smoothed classifier, re-estimated;
* ``lipschitz_audit.json`` - the backbone's Lipschitz audit; ``attack_settings.json``;
* ``soundness.md`` - the audit's section of ``summary.md``.

The report (``summary.md``, Table 2 from ``robustness.csv``) is written afterwards by the report stage of
``python -m bench.run`` or by ``python -m bench.attack``, from these files.

See :mod:`bench.audit.pgd` for the attacks and :mod:`bench.audit.soundness` for what each check guarantees.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from smoothing import MonteCarloCertifier

from ..certify.runs import MonteCarloSettings, build_runs
from ..common.env import portable_path
from ..common.experiment import AttackSettings
from ..models.experiment_models import ExperimentModels
from ..models.loaded import LoadedModel
from ..report import PAPER_RADII, read_results
from .pgd import PGDConfig, min_norm_attack, pgd_attack, rank_targets
from .soundness import (
    AUDIT_FACTOR,
    DETERMINISTIC_METHODS,
    MONTE_CARLO_METHODS,
    audit_certificates,
    audit_paper_criterion,
    lipschitz_audit,
    sanity_check,
    smoothed_attack_check,
    summarize_audit,
    summarize_smoothed,
    write_soundness_markdown,
)

__all__ = [
    "DEFAULT_RADII",
    "RobustnessSettings",
    "classifier",
    "empirical_robustness",
    "robustness_curve",
    "robustness_settings",
    "run_robustness",
    "soundness_failures",
]

#: Radii of Table 2 (the paper's), always attacked.
TABLE_RADII: tuple[float, ...] = tuple(r for r in PAPER_RADII if r > 0)
#: Radii where the full PGD runs by default (the paper's plus a grid for the curve).
DEFAULT_RADII: tuple[float, ...] = AttackSettings.radii
#: The files :func:`run_robustness` writes (the CSV files, the audits, its settings and ``soundness.md``).
ATTACK_OUTPUTS: tuple[str, ...] = (
    "robustness.csv", "robustness_examples.csv", "soundness.csv", "soundness_examples.csv", "paper_criterion.csv",
    "smoothed_attack.csv", "smoothed_attack_examples.csv", "sanity.csv", "sanity_violations.csv",
    "attack_settings.json", "soundness.md")


@dataclass(frozen=True)
class RobustnessSettings:
    """What :func:`run_robustness` runs (defaults sized for a CPU: a few minutes on the quick preset).

    Attributes:
        radii: radii where the full PGD runs (the paper radii 0.05/0.1/0.2/0.3 are always added).
        pgd: the attack for empirical robust accuracy.
        audit_targets: runner-up classes attacked per restart in the 0.999 r audit (None: all classes).
        min_norm_steps: steps of the minimum-norm search run first on every example.
        mc_sample: certified examples per Monte Carlo run attacked on the smoothed classifier.
        smooth_samples / smooth_steps: noise draws per step and steps of that attack.
        lipschitz_images: images of the fresh Lipschitz audit of the backbone.
        factor: certificates are attacked at factor * radius.
        seed: seed of the random starts and of the example sample.
    """

    radii: tuple[float, ...] = DEFAULT_RADII
    pgd: PGDConfig = field(default_factory=lambda: PGDConfig(steps=AttackSettings.steps,
                                                             restarts=AttackSettings.restarts,
                                                             targets=AttackSettings.targets))
    audit_targets: int | None = AttackSettings.audit_targets
    min_norm_steps: int = AttackSettings.min_norm_steps
    mc_sample: int = AttackSettings.mc_sample
    smooth_samples: int = AttackSettings.smooth_samples
    smooth_steps: int = AttackSettings.smooth_steps
    lipschitz_images: int = AttackSettings.lipschitz_images
    factor: float = AUDIT_FACTOR
    seed: int = 0

    def attack_radii(self) -> tuple[float, ...]:
        return tuple(sorted(set(float(r) for r in self.radii) | set(TABLE_RADII)))

    def audit_config(self) -> PGDConfig:
        return replace(self.pgd, targets=self.audit_targets)

    def describe(self) -> dict[str, Any]:
        audit = self.audit_config()
        return {"attack": self.pgd.describe(), "audit": audit.describe(), "pgd": asdict(self.pgd),
                "audit_targets": "all" if self.audit_targets is None else self.audit_targets,
                "radii": list(self.attack_radii()), "min_norm_steps": self.min_norm_steps, "factor": self.factor,
                "mc_sample": self.mc_sample, "smooth_samples": self.smooth_samples, "smooth_steps": self.smooth_steps,
                "lipschitz_images": self.lipschitz_images, "seed": self.seed}


def robustness_settings(attack: AttackSettings, seed: int, pgd_seed: int = 0) -> RobustnessSettings:
    """The attack stage's :class:`RobustnessSettings` from an experiment's torch-free ``attack`` settings
    (``seed``: of the example sample and the audits; ``pgd_seed``: of the PGD random starts)."""
    return RobustnessSettings(
        radii=tuple(attack.radii),
        pgd=PGDConfig(steps=attack.steps, restarts=attack.restarts, targets=attack.targets, seed=pgd_seed),
        audit_targets=attack.audit_targets, min_norm_steps=attack.min_norm_steps, mc_sample=attack.mc_sample,
        smooth_samples=attack.smooth_samples, smooth_steps=attack.smooth_steps,
        lipschitz_images=attack.lipschitz_images, seed=seed)


# ------------------------------------------------------------------------------ models and attacks


def classifier(models: dict[str, LoadedModel], model: str) -> nn.Module:
    """The deterministic classifier named ``model`` in ``certify.tsv`` (the whole network: backbone + head
    for ``sll+KIND``; for a Cohen model the base network, on which the smoothed classifier is built)."""
    if model not in models:
        raise KeyError(f"no model {model!r} among the run's models ({', '.join(sorted(models))})")
    return models[model].network.eval()


def empirical_robustness(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                         radii: Sequence[float], config: PGDConfig = PGDConfig(), *, min_norm_steps: int = 100,
                         chunk: int = 512, progress: bool = False, desc: str = "") -> pd.DataFrame:
    """Attack every example of ``x`` and return, per example, the smallest adversarial distance found.

    1. A minimum-norm search (:func:`bench.pgd.min_norm_attack`, untargeted and towards the closest
       runner-up) against the clean prediction of every example (wrong ones included: the distances
       also serve the certificate audit).
    2. For each radius in ``radii`` (ascending), :func:`bench.pgd.pgd_attack` with ``config`` on every
       correctly classified example not yet broken at that radius (an adversarial point within
       eps stays one at any larger radius, so broken examples are not attacked again).

    Columns: ``idx, label, prediction, correct, min_norm_distance, distance, broken_at``. The example is
    empirically robust at r iff ``correct`` and ``distance > r`` (exact at the attacked radii, where
    every surviving example was attacked; elsewhere it counts what the attacks above found).
    """
    with torch.no_grad():
        prediction = torch.cat([model(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)]).argmax(dim=1)
    correct = prediction == labels.to(prediction.device)
    parts = []
    for s in range(0, x.shape[0], chunk):
        parts.append(min_norm_attack(model, x[s:s + chunk], prediction[s:s + chunk], steps=min_norm_steps,
                                     targets=1).distance)
    min_norm = torch.cat(parts).cpu()
    distance = min_norm.clone()
    broken_at = torch.full_like(distance, math.inf)
    targets = None
    if config.targets != 0 and bool(correct.any()):
        rows = correct.nonzero()[:, 0]
        ranked = torch.cat([rank_targets(model, x[rows[s:s + chunk]], prediction[rows[s:s + chunk]], config.targets)
                            for s in range(0, rows.numel(), chunk)])
        targets = torch.zeros(x.shape[0], ranked.shape[1], dtype=torch.int64, device=x.device)
        targets[rows] = ranked
    bar = tqdm(sorted(radii), desc=desc, disable=not progress, file=sys.stderr, leave=False)
    for eps in bar:
        rows = (correct.cpu() & (distance > eps)).nonzero()[:, 0]
        bar.set_postfix(eps=f"{eps:g}", attacked=int(rows.numel()))
        for s in range(0, rows.numel(), chunk):
            sub = rows[s:s + chunk].to(x.device)
            result = pgd_attack(model, x[sub], prediction[sub], float(eps), config,
                                targets=None if targets is None else targets[sub])
            hit = result.success.cpu()
            cpu_sub = sub.cpu()
            distance[cpu_sub] = torch.minimum(distance[cpu_sub], result.distance.cpu())
            broken_at[cpu_sub[hit]] = torch.minimum(broken_at[cpu_sub[hit]],
                                                    torch.tensor(float(eps), dtype=torch.float64))
    bar.close()
    return pd.DataFrame({
        "idx": torch.as_tensor(indices).cpu().numpy(), "label": labels.cpu().numpy(),
        "prediction": prediction.cpu().numpy(), "correct": correct.cpu().numpy().astype(int),
        "min_norm_distance": min_norm.numpy(), "distance": distance.numpy(), "broken_at": broken_at.numpy(),
    })


def robustness_curve(examples: pd.DataFrame, attacked: Sequence[float], upto: float | None = None,
                     settings: str = "") -> pd.DataFrame:
    """Empirical robust accuracy per model as an exact step function of the radius.

    Rows at every radius in ``attacked`` (``pgd`` True: the full PGD ran there on every surviving
    example) and at every smallest adversarial distance found up to ``upto`` (``pgd`` False: the
    curve drops there). Accuracy at r = fraction of examples correct with distance > r; it is
    constant between consecutive rows (draw it with steps-post). Columns ``model, radius, accuracy,
    robust, examples, pgd, attack``.
    """
    attacked = sorted(set(float(r) for r in attacked) | {0.0})
    top = max(attacked) if upto is None else max(upto, max(attacked))
    rows = []
    for model, g in examples.groupby("model", sort=True):
        dist, ok = g["distance"].to_numpy(float), g["correct"].to_numpy() == 1
        drops = sorted(set(float(d) for d in dist[ok & np.isfinite(dist)] if 0 < d <= top) - set(attacked))
        points = [(r, True) for r in attacked] + [(d, False) for d in drops] + [(top, False)] * (top not in attacked)
        for r, pgd in points:
            robust = int((ok & (dist > r)).sum())
            rows.append({"model": model, "radius": r, "accuracy": robust / len(g), "robust": robust,
                         "examples": len(g), "pgd": pgd,
                         "attack": settings if pgd else "adversarial points found at other radii"})
    frame = pd.DataFrame(rows).sort_values(["model", "radius"], kind="mergesort")
    return frame.drop_duplicates(["model", "radius"]).reset_index(drop=True)


# ------------------------------------------------------------------------------ the whole audit


def _select(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, wanted: Sequence[int]
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    position = {int(i): p for p, i in enumerate(torch.as_tensor(indices).tolist())}
    missing = [int(i) for i in wanted if int(i) not in position]
    if missing:
        raise ValueError(f"certify.tsv has examples {missing[:10]} that are not among the given images")
    pick = torch.tensor([position[int(i)] for i in wanted], dtype=torch.int64)
    return images[pick.to(images.device)], labels[pick].to(images.device), torch.as_tensor(indices)[pick]


def _run_key(method: str, model: str, sigma: float) -> str:
    return f"{method}|{model}|{'-' if (sigma is None or math.isnan(sigma)) else f'{sigma:g}'}"


@dataclass
class _Context:
    """What every stage of :func:`run_robustness` reads: the attacked images and the certify results."""

    models: ExperimentModels
    results: pd.DataFrame
    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    where: dict[int, int]
    names: list[str]
    settings: RobustnessSettings
    out: Path
    progress: bool
    paths: dict[str, Path] = field(default_factory=dict)

    def write_csv(self, name: str, frame: pd.DataFrame) -> None:
        self.paths[name.replace(".", "_")] = self.out / name
        frame.to_csv(self.out / name, index=False)


def run_robustness(models: ExperimentModels, images: torch.Tensor, labels: torch.Tensor,
                   indices: torch.Tensor, certify_tsv: str | Path, out: str | Path, mc: MonteCarloSettings,
                   settings: RobustnessSettings | None = None, progress: bool = True,
                   verbose: bool = True) -> dict[str, Path]:
    """Attack the certified examples of ``certify_tsv`` and write every robustness and soundness output to ``out``.

    Args:
        models: the models ``certify_tsv`` was computed with (same device as ``images``).
        images, labels, indices: the evaluation images [N, C, H, W] in [0, 1], their labels and
            dataset indices; every ``idx`` of ``certify_tsv`` must be among ``indices``.
        certify_tsv: per-example certification results (``bench.run``'s format).
        out: output folder (usually the folder of ``certify_tsv``).
        mc: the Monte Carlo settings of the certification run (n0, n, alpha, batch size, seed): the
            smoothed-classifier check re-estimates predictions with ``n`` fresh samples at level ``alpha``.
        settings: attack sizes (see :class:`RobustnessSettings`; default: its defaults).
        progress: tqdm bars on stderr. verbose: print the tables and the verdict.

    Returns the written paths by name (``robustness_csv``, ``sanity_csv``, ``soundness_csv``,
    ``paper_criterion_csv``, ``smoothed_attack_csv``, ``lipschitz_audit_json``, ``soundness_md``,
    ``attack_settings_json``, ...). Does not touch ``certify.tsv``, ``summary.md`` or the tables: the
    report is written afterwards from these files (:func:`bench.report.write_reports`).

    Raises:
        FileNotFoundError: ``certify_tsv`` does not exist.
    """
    settings = RobustnessSettings() if settings is None else settings
    certify_tsv, out = Path(certify_tsv), Path(out)
    if not certify_tsv.is_file():
        raise FileNotFoundError(f"no certification results at {certify_tsv}; run `python -m bench.run` first")
    out.mkdir(parents=True, exist_ok=True)
    results = read_results(certify_tsv)
    started = time.perf_counter()
    wanted = sorted(set(int(i) for i in results["idx"]))
    x, y, idx = _select(images, labels, indices, wanted)
    ctx = _Context(models, results, x, y, idx, {int(i): p for p, i in enumerate(idx.tolist())},
                   sorted(results["model"].unique()), settings, out, progress)
    examples, curve = _empirical_stage(ctx)
    distance_of = {(r.model, int(r.idx)): float(r.distance) for r in examples.itertuples()}
    soundness = _deterministic_audit_stage(ctx, distance_of)
    paper_frame = _paper_criterion_stage(ctx, distance_of)
    smooth_frame = _smoothed_stage(ctx, mc)
    lip = _lipschitz_stage(ctx)
    table, violations = _sanity_stage(ctx, examples)
    _settings_stage(ctx, seconds=time.perf_counter() - started, certify_tsv=certify_tsv)
    if verbose:
        _print_report(out, curve, soundness, paper_frame, summarize_smoothed(smooth_frame), table, violations, lip)
        print(f"\nwrote {', '.join(sorted(p.name for p in ctx.paths.values()))} in {out}")
    return ctx.paths


def _empirical_stage(ctx: _Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """1. Empirical robustness of every model: minimum-norm search + PGD at every radius."""
    radii = ctx.settings.attack_radii()
    frames = []
    for model in tqdm(ctx.names, desc="attack models", disable=not ctx.progress, file=sys.stderr):
        net = classifier(ctx.models.by_name, model)
        frame = empirical_robustness(net, ctx.x, ctx.y, ctx.idx, radii, ctx.settings.pgd,
                                     min_norm_steps=ctx.settings.min_norm_steps, progress=ctx.progress, desc=model)
        frames.append(frame.assign(model=model))
    examples = pd.concat(frames, ignore_index=True)
    examples = examples[["model"] + [c for c in examples.columns if c != "model"]]
    finite = ctx.results["radius"].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    upto = float(finite.max()) if finite.size else None
    curve = robustness_curve(examples, radii, upto=upto, settings=ctx.settings.pgd.describe())
    ctx.write_csv("robustness.csv", curve)
    ctx.write_csv("robustness_examples.csv", examples)
    return examples, curve


def _deterministic_audit_stage(ctx: _Context, distance_of: dict[tuple[str, int], float]) -> pd.DataFrame:
    """2. Deterministic certificates attacked at 0.999 r (every restart, untargeted + audit targets)."""
    audits = []
    det = ctx.results[ctx.results["method"].isin(DETERMINISTIC_METHODS)]
    groups = list(det.groupby(["method", "model"], sort=True))
    for (method, model), g in tqdm(groups, desc="audit 0.999r", disable=not ctx.progress, file=sys.stderr):
        g = g.sort_values("idx")
        rows = torch.tensor([ctx.where[int(i)] for i in g["idx"]], dtype=torch.int64)
        known = torch.tensor([distance_of.get((model, int(i)), math.inf) for i in g["idx"]], dtype=torch.float64)
        frame = audit_certificates(classifier(ctx.models.by_name, model), ctx.x[rows.to(ctx.x.device)],
                                   torch.tensor(g["predict"].to_numpy()), torch.tensor(g["radius"].to_numpy()),
                                   config=ctx.settings.audit_config(), factor=ctx.settings.factor,
                                   known_distance=known)
        audits.append(frame.assign(method=method, model=model, idx=g["idx"].to_numpy(), label=g["label"].to_numpy()))
    audit_frame = pd.concat(audits, ignore_index=True) if audits else pd.DataFrame(
        columns=["method", "model", "idx", "attacked", "broken", "broken_confirmed", "ratio"])
    soundness = summarize_audit(audit_frame)
    ctx.write_csv("soundness.csv", soundness)
    lead = ["method", "model", "idx", "label"]
    ctx.write_csv("soundness_examples.csv", audit_frame[[c for c in lead if c in audit_frame]
                                                        + [c for c in audit_frame.columns if c not in lead]])
    return soundness


def _paper_criterion_stage(ctx: _Context, distance_of: dict[tuple[str, int], float]) -> pd.DataFrame:
    """3. The public FaRS code's criterion on every linear head that was certified."""
    paper = []
    for model in ctx.names:
        loaded = ctx.models.by_name.get(model)
        if loaded is None or loaded.backbone is None or loaded.lipschitz is None:
            continue
        head = loaded.head
        if not isinstance(head, nn.Linear):
            continue
        known = torch.tensor([distance_of[(model, int(i))] for i in ctx.idx.tolist()], dtype=torch.float64)
        frame = audit_paper_criterion(loaded.backbone, head, ctx.x, ctx.y, TABLE_RADII,
                                      indices=ctx.idx, known_distance=known, lipschitz=loaded.lipschitz)
        paper.append(frame.assign(model=model, criterion="fars-paper-criterion"))
    paper_frame = pd.concat(paper, ignore_index=True) if paper else pd.DataFrame(
        columns=["model", "variant", "eps", "claimed", "broken"])
    lead = ["criterion", "model", "variant", "eps"]
    paper_frame = paper_frame[[c for c in lead if c in paper_frame] + [c for c in paper_frame.columns if c not in lead]]
    ctx.write_csv("paper_criterion.csv", paper_frame)
    return paper_frame


def _smoothed_stage(ctx: _Context, mc: MonteCarloSettings) -> pd.DataFrame:
    """4. Monte Carlo certificates: attack on the smoothed classifier, then a fresh PREDICT."""
    smooth = []
    mc_rows = ctx.results[ctx.results["method"].isin(MONTE_CARLO_METHODS)]
    settings = ctx.settings
    if settings.mc_sample > 0 and len(mc_rows):
        sigmas = tuple(sorted(set(float(s) for s in mc_rows["sigma"].dropna())))
        methods = tuple(m for m in MONTE_CARLO_METHODS if m in set(mc_rows["method"]))
        certified = set(mc_rows["model"])
        entries = [e for e in ctx.models.entries if e.model.name in certified]
        runs = {r.key: r for r in build_runs(entries, methods, sigmas, mc)}
        rng = np.random.default_rng(settings.seed)
        groups = list(mc_rows.groupby(["method", "model", "sigma"], sort=True))
        for (method, model, sigma), g in tqdm(groups, desc="smoothed attack", disable=not ctx.progress,
                                              file=sys.stderr):
            run = runs.get(_run_key(method, model, sigma))
            certified = g[(g["predict"] >= 0) & (g["radius"] > 0) & np.isfinite(g["radius"])].sort_values("idx")
            if run is None or certified.empty:
                continue
            take = certified.iloc[np.sort(rng.choice(len(certified), min(settings.mc_sample, len(certified)),
                                                     replace=False))]
            rows = torch.tensor([ctx.where[int(i)] for i in take["idx"]], dtype=torch.int64)
            certifier = run.certifier
            assert isinstance(certifier, MonteCarloCertifier)  # build_runs makes cohen/fars-mc Monte Carlo certifiers
            frame = smoothed_attack_check(certifier, ctx.x[rows.to(ctx.x.device)],
                                          torch.tensor(take["predict"].to_numpy()),
                                          torch.tensor(take["radius"].to_numpy()), torch.tensor(take["idx"].to_numpy()),
                                          samples=settings.smooth_samples, steps=settings.smooth_steps,
                                          factor=settings.factor, seed=settings.seed)
            smooth.append(frame.assign(method=method, model=model, sigma=sigma, alpha=mc.alpha))
    smooth_frame = pd.concat(smooth, ignore_index=True) if smooth else pd.DataFrame(
        columns=["method", "model", "sigma", "idx", "changed", "abstained", "alpha"])
    ctx.write_csv("smoothed_attack.csv", summarize_smoothed(smooth_frame))
    ctx.write_csv("smoothed_attack_examples.csv", smooth_frame)
    return smooth_frame


def _lipschitz_stage(ctx: _Context) -> dict[str, Any]:
    """5. Lipschitz audit of the backbone at the evaluated images: the backbone of the first certified model
    (by name) with a Lipschitz split, against the constant its certificates divide by and, for a checkpoint
    folder's model, the audit recorded in its sidecar (:func:`lipschitz_record`). Skipped when no certified
    model has a split."""
    split = [m for m in (ctx.models.by_name.get(n) for n in ctx.names) if m is not None and m.has_split]
    model = split[0] if split else None
    if model is None or model.backbone is None:
        (ctx.out / "lipschitz_audit.json").unlink(missing_ok=True)   # not one of an earlier run's
        return {}
    if ctx.progress:   # minutes on a large backbone: say what is running
        print(f"Lipschitz audit of the backbone on {min(ctx.settings.lipschitz_images, len(ctx.x))} images ...",
              file=sys.stderr)
    lip = lipschitz_audit(model.backbone, ctx.x[:ctx.settings.lipschitz_images], lipschitz_record(model),
                          seed=ctx.settings.seed)
    ctx.paths["lipschitz_audit_json"] = ctx.out / "lipschitz_audit.json"
    ctx.paths["lipschitz_audit_json"].write_text(json.dumps(lip, indent=2) + "\n")
    return lip


def lipschitz_record(model: LoadedModel) -> dict[str, Any]:
    """What :func:`~bench.audit.soundness.lipschitz_audit` compares a split model's backbone with: its name
    (the checkpoint's, from ``details["backbone"]``, else ``"<model> backbone"``) and its Lipschitz record,
    whose ``declared`` constant is always the model's own (the one its certificates divide by), beside the
    audit a checkpoint folder's sidecar stored (``details["backbone_lipschitz"]``), when there is one."""
    stored = model.details.get("backbone_lipschitz")
    record = dict(stored) if isinstance(stored, dict) else {}
    record["declared"] = model.lipschitz
    return {"name": str(model.details.get("backbone", f"{model.name} backbone")), "lipschitz": record}


def _sanity_stage(ctx: _Context, examples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """6. Sanity check: empirical >= certified accuracy at every radius."""
    table, violations = sanity_check(ctx.results, examples, [0.0, *ctx.settings.attack_radii()],
                                     rtol=1 - ctx.settings.factor)
    ctx.write_csv("sanity.csv", table)
    ctx.write_csv("sanity_violations.csv", violations)
    return table, violations


def _settings_stage(ctx: _Context, seconds: float, certify_tsv: Path) -> None:
    """7. The settings (``attack_settings.json``) and ``soundness.md``, the audit's section of the summary."""
    described = ctx.settings.describe() | {"seconds": round(seconds, 1), "images": int(len(ctx.x)),
                                           "certify_tsv": portable_path(certify_tsv)}
    ctx.paths["attack_settings_json"] = ctx.out / "attack_settings.json"
    ctx.paths["attack_settings_json"].write_text(json.dumps(described, indent=2) + "\n")
    ctx.paths["soundness_md"] = write_soundness_markdown(ctx.out)


def soundness_failures(out: str | Path) -> list[str]:
    """What a run in ``out`` found wrong with the sound methods (empty list: nothing)."""
    out = Path(out)
    problems = []
    snd = pd.read_csv(out / "soundness.csv") if (out / "soundness.csv").is_file() else pd.DataFrame()
    for r in snd.itertuples():
        if r.broken > 0:
            problems.append(f"{r.method} on {r.model}: {r.broken} broken certificate(s), examples {r.broken_ids}")
    viol = pd.read_csv(out / "sanity_violations.csv") if (out / "sanity_violations.csv").is_file() else pd.DataFrame()
    if len(viol):
        g = viol[viol["guaranteed"].astype(bool)]
        for (method, model), h in g.groupby(["method", "model"]):
            problems.append(f"sanity: {method} on {model}: adversarial points inside certified balls for examples "
                            f"{';'.join(str(i) for i in h['idx'])}")
    lip = out / "lipschitz_audit.json"
    if lip.is_file() and not json.loads(lip.read_text())["confirms"]:
        problems.append("Lipschitz audit: a lower bound exceeds the declared constant")
    return problems


def _print_report(out: Path, curve: pd.DataFrame, soundness: pd.DataFrame, paper: pd.DataFrame,
                  smooth: pd.DataFrame, table: pd.DataFrame, violations: pd.DataFrame, lip: dict) -> None:
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    table_radii = curve[curve["pgd"] & curve["radius"].isin((0.0,) + TABLE_RADII)]
    print("\nEmpirical robust accuracy (Table 2 radii):")
    pivot = table_radii.pivot_table(index="model", columns="radius", values="accuracy")
    print(pivot.to_string(float_format="{:.3f}".format))
    print("\nDeterministic certificates attacked at 0.999 r:")
    print(soundness.drop(columns=["broken_ids"]).to_string(index=False) if len(soundness) else "(none)")
    print("\nfars-paper-criterion (public FaRS code's test; audit only):")
    print(paper[["model", "variant", "eps", "claimed", "broken", "sound_certified"]].to_string(index=False)
          if len(paper) else "(no linear head)")
    print("\nMonte Carlo certificates, attack on the smoothed classifier + fresh PREDICT:")
    print(smooth.drop(columns=["changed_ids"]).to_string(index=False) if len(smooth) else "(none)")
    if lip:
        print(f"\nLipschitz audit ({lip['backbone']}, declared {lip['declared']:g}): sidecar lower bound "
              f"{lip.get('sidecar_lower_bound')}, fresh jacobian {lip['fresh_jacobian']:.4f} / "
              f"pairs {lip['fresh_pairs']:.4f} on {lip['fresh_inputs']} images -> "
              f"{'confirms' if lip['confirms'] else 'EXCEEDS THE DECLARED CONSTANT'}")
    guaranteed = table[table["guaranteed"]]
    info = violations[~violations["guaranteed"].astype(bool)] if len(violations) else violations
    bad = violations[violations["guaranteed"].astype(bool)] if len(violations) else violations
    failing = guaranteed[(~guaranteed["holds"]) | (guaranteed["violations"] > 0)]
    print("\nSanity check (empirical >= certified):")
    if failing.empty and bad.empty:
        print("  PASS for every deterministic method on its own model at every radius "
              f"({len(guaranteed)} method x model x radius comparisons).")
    problems = soundness_failures(out)
    if problems or not failing.empty:
        banner = "!" * 100
        print(banner, file=sys.stderr)
        print("!!! SOUNDNESS VIOLATION: a certificate claimed robustness that the attack disproved", file=sys.stderr)
        for p in problems:
            print("!!! " + p, file=sys.stderr)
        for r in failing.itertuples():
            print(f"!!! {r.method} on {r.model} at r={r.radius:g}: certified {r.certified_accuracy:.3f} > empirical "
                  f"{r.empirical_accuracy:.3f}; examples {r.violation_ids}", file=sys.stderr)
        print(banner, file=sys.stderr)
    if len(info):
        print(f"  information only (Monte Carlo certificate of the smoothed classifier vs attack on its base network, "
              f"not ordered by theory): {len(info)} certified example(s) broken on the base network:")
        for (method, model, sigma), h in info.groupby(["method", "model", "sigma"], dropna=False):
            print(f"    {method} {model} sigma={sigma:g}: examples {';'.join(str(i) for i in h['idx'][:20])}"
                  + (" ..." if len(h) > 20 else ""))
