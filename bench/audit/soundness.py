"""Audits of certificates against attacks: what each check guarantees, and what it assumes.

* :func:`audit_certificates` - deterministic certificates (``fars-closed``, ``fars-crown``,
  ``lipschitz-margin``). A
  certificate (prediction c, radius r) claims that the classifier answers c everywhere in the l2 ball
  of radius r around x. The audit attacks c at eps = ``factor`` * r (0.999 r: the slack covers the
  6-digit rounding of radii in ``certify.tsv`` and float32 round-off) with every restart and target of
  the attack; *any* adversarial point found there - or by any other attack, at a distance below
  eps - is a **broken certificate**: a proof that the certificate (or the Lipschitz constant it
  divides by) is wrong. Broken points are re-checked in float64. Finding none proves nothing, but
  the smallest adversarial distance over the certified radius (>= 1 for a sound certificate) says
  how tight the certificate and how strong the attack are.
* :func:`audit_paper_criterion` - the public FaRS code's test, ``correct and logit_y / ||W||_2 > eps``
  (and its sparsemax variant). It is *not* a certificate; the audit counts the examples it claims at
  each eps and how many of them the attack breaks at eps.
* :func:`smoothed_attack_check` - Monte Carlo certificates (``fars-mc``, ``cohen``) certify the
  *smoothed* classifier g, which cannot be evaluated exactly. A SmoothAdv-style attack on g at
  0.999 r, then PREDICT with fresh noise at the attacked point: a changed (non-abstaining, different)
  prediction happens with probability <= alpha if the certificate holds, plus <= alpha for PREDICT
  itself being wrong; the rate is a statistical sanity check, not a proof.
* :func:`sanity_check` - per radius, certified accuracy against empirical robust accuracy, and per
  example, certified radius against the smallest adversarial distance found. For a deterministic
  method attacked on the very classifier it certifies this **must** hold (a violation is a broken
  certificate). For a Monte Carlo method, the attack runs on the *base* network while the certificate
  is for the smoothed classifier - a different classifier - so nothing forces the inequality; those
  rows are reported for information only.
* :func:`lipschitz_audit` - lower bounds on the backbone's l2 Lipschitz constant (power iteration on
  the Jacobian and pair ascent, :func:`fars.audit.audit_lipschitz`) at the evaluated images, next to
  the audit recorded in the checkpoint sidecar.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from entmax import sparsemax
from torch import nn

from baselines import CohenRS
from fars import FaRSMonteCarlo
from fars.audit import audit_lipschitz
from smoothing.certificate import ABSTAIN
from smoothing.monte_carlo import MonteCarloCertifier
from smoothing.noise import check_seed

from ..common.methods import DETERMINISTIC_METHODS, MONTE_CARLO_METHODS
from ..report import markdown_table
from .pgd import PGDConfig, flat_norm, min_norm_attack, pgd_attack, rank_targets, smoothed_pgd

__all__ = [
    "AUDIT_FACTOR",
    "DETERMINISTIC_METHODS",
    "MONTE_CARLO_METHODS",
    "PAPER_VARIANTS",
    "audit_certificates",
    "summarize_audit",
    "paper_criterion_claims",
    "audit_paper_criterion",
    "smoothed_parts",
    "smoothed_attack_check",
    "summarize_smoothed",
    "sanity_check",
    "lipschitz_audit",
    "soundness_markdown",
    "write_soundness_markdown",
]

#: Radius fraction at which certificates are attacked (slack for rounding of the stored radii).
AUDIT_FACTOR = 0.999
PAPER_VARIANTS = ("logit", "sparsemax")


def _ids(values: Iterable[int], limit: int = 50) -> str:
    values = [int(v) for v in values]
    text = ";".join(str(v) for v in values[:limit])
    return text + (f";...(+{len(values) - limit})" if len(values) > limit else "")


# ------------------------------------------------------------------------------ deterministic certificates


def audit_certificates(model: nn.Module, x: torch.Tensor, prediction: torch.Tensor, radius: torch.Tensor, *,
                       config: PGDConfig = PGDConfig(targets=None), factor: float = AUDIT_FACTOR,
                       known_distance: torch.Tensor | None = None, min_norm_steps: int = 0,
                       check_dtype: torch.dtype = torch.float64) -> pd.DataFrame:
    """Attack each deterministic certificate at ``factor`` * its radius; one row per example.

    Args:
        model: the classifier the certificates are about (x -> scores [B, K]).
        x: the certified inputs [B, ...] in [0, 1].
        prediction: int [B], the certified class (-1 = abstained: not attacked).
        radius: float [B], the certified l2 radius (<= 0 or infinite: not attacked).
        config: the attack: every restart runs untargeted and against ``config.targets`` runner-ups
            (None, the default here: every other class).
        known_distance: float [B], the smallest distance of an adversarial point against the model's
            own answer at x, already found by other attacks on the same classifier (inf: none); where
            that answer is the certified class, the certificate is also broken when that distance is
            at most ``factor`` * radius.
        min_norm_steps: when > 0, also run :func:`bench.pgd.min_norm_attack` (untargeted + closest
            runner-up) against the certified class, for the distance ratio (and as one more attack).
        check_dtype: broken points are re-evaluated with a copy of ``model`` in this dtype.

    Returns columns ``prediction, radius, eps, model_prediction, attacked, broken, broken_pgd,
    broken_confirmed, adversarial_distance, ratio`` (ratio = adversarial distance / radius, inf when
    no adversarial point is known).
    Assumes: ``model`` is the deterministic function the certificate was computed for.
    """
    prediction = torch.as_tensor(prediction, dtype=torch.int64, device=x.device)
    radius = torch.as_tensor(radius, dtype=torch.float64, device=x.device)
    batch = x.shape[0]
    attacked = (prediction != ABSTAIN) & (radius > 0) & torch.isfinite(radius)
    eps = torch.where(attacked, radius * factor, torch.zeros_like(radius))
    with torch.no_grad():
        clean = _eval(model, x).argmax(dim=1)
    distance = torch.full((batch,), math.inf, dtype=torch.float64)
    broken_pgd = torch.zeros(batch, dtype=torch.bool)
    adversarial = x.clone()
    rows = attacked.nonzero()[:, 0]
    if rows.numel():
        cfg = config
        label = prediction[rows]
        # runner-ups ranked against the certified class (a class already winning at x ranks first)
        ranked = rank_targets(model, x[rows], label, cfg.targets) if cfg.targets != 0 else None
        result = pgd_attack(model, x[rows], label, eps[rows].to(x.dtype), cfg, targets=ranked)
        distance[rows] = result.distance.cpu()
        broken_pgd[rows] = result.success.cpu()
        adversarial[rows] = result.adversarial
    if min_norm_steps > 0 and rows.numel():
        found = min_norm_attack(model, x[rows], prediction[rows], steps=min_norm_steps, targets=1)
        distance[rows] = torch.minimum(distance[rows], found.distance.cpu())
    # distances against the model's own answer at x: valid where it is the certified class
    if known_distance is not None:
        known = torch.as_tensor(known_distance, dtype=torch.float64).cpu()
        same = clean.cpu() == prediction.cpu()
        distance = torch.where(same, torch.minimum(distance, known), distance)
    broken = attacked.cpu() & (distance <= eps.cpu()) & ~torch.isinf(distance)
    confirmed = broken_pgd.clone()
    if bool(broken_pgd.any()):
        double = copy.deepcopy(model).to(check_dtype)
        with torch.no_grad():
            rows = broken_pgd.nonzero()[:, 0]
            point = adversarial[rows].to(check_dtype)
            again = _eval(double, point).argmax(dim=1).cpu() != prediction[rows].cpu()
            inside = flat_norm(point - x[rows].to(check_dtype)).cpu() <= eps[rows].cpu().to(check_dtype)
            confirmed[rows] = again & inside
    ratio = torch.where(attacked.cpu(), distance / radius.cpu().clamp_min(1e-300), torch.full_like(distance, math.nan))
    return pd.DataFrame({
        "prediction": prediction.cpu().numpy(), "radius": radius.cpu().numpy(), "eps": eps.cpu().numpy(),
        "model_prediction": clean.cpu().numpy(), "attacked": attacked.cpu().numpy(), "broken": broken.numpy(),
        "broken_pgd": broken_pgd.numpy(), "broken_confirmed": (confirmed & broken_pgd).numpy(),
        "adversarial_distance": distance.numpy(), "ratio": ratio.numpy(),
    })


def _eval(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was)


def summarize_audit(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, model) of an :func:`audit_certificates` frame with ``method, model, idx`` added.

    Columns: ``certified`` (non-abstaining, radius > 0: every certificate is audited, right or wrong
    class), ``certified_correct`` (of those, predicting the label; -1 without a ``label`` column),
    ``attacked``, ``broken``, ``broken_confirmed``
    (PGD points re-checked in float64), ``min_ratio`` (smallest adversarial distance / certified
    radius over the examples; >= 1 when sound), ``min_ratio_idx``, ``median_ratio``, ``no_adversarial``
    (examples where no attack found any adversarial point), ``broken_ids``.
    """
    rows = []
    for (method, model), g in frame.groupby(["method", "model"], sort=True):
        att = g[g["attacked"]]
        finite = att[np.isfinite(att["ratio"])]
        best = finite.loc[finite["ratio"].idxmin()] if len(finite) else None
        rows.append({
            "method": method, "model": model, "certified": int(len(att)),
            "certified_correct": int((att["prediction"] == att["label"]).sum()) if "label" in att else -1,
            "attacked": int(len(att)),
            "broken": int(att["broken"].sum()), "broken_confirmed": int(att["broken_confirmed"].sum()),
            "min_ratio": float(best["ratio"]) if best is not None else math.inf,
            "min_ratio_idx": int(best["idx"]) if best is not None else -1,
            "median_ratio": float(finite["ratio"].median()) if len(finite) else math.inf,
            "no_adversarial": int((~np.isfinite(att["ratio"])).sum()),
            "broken_ids": _ids(att.loc[att["broken"], "idx"]),
        })
    return pd.DataFrame(rows, columns=["method", "model", "certified", "certified_correct", "attacked", "broken",
                                       "broken_confirmed",
                                       "min_ratio", "min_ratio_idx", "median_ratio", "no_adversarial", "broken_ids"])


# ------------------------------------------------------------------------------ the public FaRS code's criterion


def _spectral_norm(weight: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(weight.detach().double(), ord=2))


def paper_criterion_claims(scores: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, eps: float,
                           variant: str = "logit") -> torch.Tensor:
    """bool [B]: the public FaRS code's "certified at eps" test on a linear head s = W z + b.

    ``logit``: correct and s_y / ||W||_2 > eps, with s_y the head's output for the true class (bias
    included, as the network outputs it; the bias only enters through s_y, the bound uses ||W||_2
    alone). ``sparsemax``: the same test on sparsemax(s)_y (a correct sparsemax, ``entmax``).
    Not a certificate: a large true-class score says nothing about the gap to the runner-up.
    """
    if variant not in PAPER_VARIANTS:
        raise ValueError(f"variant must be one of {PAPER_VARIANTS}, got {variant!r}")
    scores = scores.detach().double()
    labels = labels.to(scores.device)
    values = scores if variant == "logit" else sparsemax(scores, dim=1)
    value = values.gather(1, labels[:, None])[:, 0]
    return (scores.argmax(dim=1) == labels) & (value / _spectral_norm(weight) > eps)


def audit_paper_criterion(backbone: nn.Module, head: nn.Linear, x: torch.Tensor, labels: torch.Tensor,
                          radii: Sequence[float], *, indices: torch.Tensor | None = None,
                          known_distance: torch.Tensor | None = None, config: PGDConfig = PGDConfig(),
                          lipschitz: float = 1.0) -> pd.DataFrame:
    """Count, per variant and eps, the examples the paper criterion claims and how many the attack breaks.

    An example claimed at eps is broken when an adversarial point within eps of it is known
    (``known_distance`` [B], from attacks that ran at every eps in ``radii`` on the same classifier
    ``head(backbone(x))``) or, without ``known_distance``, found by :func:`pgd_attack` at eps here.
    Also reports ``sound_certified``: examples the exact closed form (FaRS, pairwise margins / L)
    certifies at eps, and ``claimed_unsound``: claims at eps whose exact head radius is below eps.
    """
    from fars.closed_form import linear_head_radius

    network = nn.Sequential(backbone, head)
    indices = torch.arange(x.shape[0]) if indices is None else torch.as_tensor(indices)
    with torch.no_grad():
        z = _eval(backbone, x)
        scores = head(z)
        pred, closed = linear_head_radius(z, head.weight, head.bias)
    closed = closed.cpu() / lipschitz
    correct = (scores.argmax(dim=1) == labels).cpu()
    rows = []
    for variant in PAPER_VARIANTS:
        for eps in radii:
            claims = paper_criterion_claims(scores, labels, head.weight, eps, variant).cpu()
            claimed = claims.nonzero()[:, 0]
            if known_distance is not None:
                broken = claims & (torch.as_tensor(known_distance).cpu() <= eps)
            else:
                broken = torch.zeros_like(claims)
                if claimed.numel():
                    result = pgd_attack(network, x[claimed], labels[claimed], float(eps), config)
                    broken[claimed] = result.success.cpu()
            sound = correct & (pred.cpu() == labels.cpu()) & (closed >= eps)
            rows.append({
                "variant": variant, "eps": float(eps), "examples": int(x.shape[0]), "correct": int(correct.sum()),
                "claimed": int(claims.sum()), "broken": int(broken.sum()),
                "broken_rate": float(broken.sum()) / max(int(claims.sum()), 1),
                "sound_certified": int(sound.sum()), "claimed_unsound": int((claims & ~sound).sum()),
                "broken_ids": _ids(indices[broken]),
            })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ Monte Carlo certificates


def smoothed_parts(certifier: MonteCarloCertifier) -> tuple[Callable, Callable, tuple[nn.Module, ...]]:
    """(encode, classify, modules) of a Monte Carlo certifier's smoothed classifier.

    Cohen RS: encode = identity, classify = the network (noise on pixels). FaRS Monte Carlo:
    encode = the backbone, classify = the head (noise on embeddings, drawn directly; the certifier's
    projected sampler draws the same law).
    """
    if isinstance(certifier, CohenRS):
        return (lambda t: t), certifier.model, (certifier.model,)
    if isinstance(certifier, FaRSMonteCarlo):
        return certifier.backbone, certifier.head, (certifier.backbone, certifier.head)
    raise TypeError(f"no smoothed classifier known for {type(certifier).__name__}")


def smoothed_attack_check(certifier: MonteCarloCertifier, x: torch.Tensor, prediction: torch.Tensor,
                          radius: torch.Tensor, indices: torch.Tensor, *, samples: int = 16, steps: int = 20,
                          factor: float = AUDIT_FACTOR, seed: int = 0, fresh_seed: int | None = None) -> pd.DataFrame:
    """Attack the smoothed classifier of ``certifier`` at ``factor`` * r, then re-estimate it there.

    The attack (:func:`bench.pgd.smoothed_pgd`) maximises -log of the noise-averaged softmax of the
    certified class with ``samples`` draws per step. The prediction at the attacked point is
    re-estimated by PREDICT (``certifier.n`` samples, level ``certifier.alpha``) with noise from
    ``fresh_seed`` (default: the certifier's seed + 1,000,003), never the certification noise.
    ``changed``: PREDICT answers a class other than the certified one. Under a correct certificate
    this happens with probability <= alpha (certificate wrong) + alpha (PREDICT wrong).
    Pixel radii are turned into the smoothed classifier's input space by the certifier itself
    (FaRS: r_x = r_z / L, so the attack at 0.999 r in pixels stays inside the certified ball).
    """
    encode, classify, modules = smoothed_parts(certifier)
    prediction = torch.as_tensor(prediction, dtype=torch.int64)
    radius = torch.as_tensor(radius, dtype=torch.float64)
    eps = (radius * factor).to(x.dtype)
    adversarial = smoothed_pgd(encode, classify, x, prediction.to(x.device), eps.to(x.device), certifier.sigma,
                               samples=samples, steps=steps, seed=seed, modules=modules)
    fresh = copy.copy(certifier)
    fresh.seed = check_seed(certifier.seed + 1_000_003 if fresh_seed is None else fresh_seed)
    new = fresh.predict(adversarial, indices=torch.as_tensor(indices)).prediction.cpu()
    changed = (new != ABSTAIN) & (new != prediction)
    return pd.DataFrame({
        "idx": torch.as_tensor(indices).cpu().numpy(), "prediction": prediction.numpy(), "radius": radius.numpy(),
        "eps": eps.double().cpu().numpy(),
        "distance": flat_norm(adversarial - x).double().cpu().numpy(),
        "new_prediction": new.numpy(), "changed": changed.numpy(), "abstained": (new == ABSTAIN).numpy(),
    })


def summarize_smoothed(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per Monte Carlo run (method, model, sigma) of a :func:`smoothed_attack_check` frame."""
    rows = []
    for (method, model, sigma), g in frame.groupby(["method", "model", "sigma"], sort=True, dropna=False):
        attacked = len(g)
        changed = int(g["changed"].sum())
        rows.append({"method": method, "model": model, "sigma": sigma, "attacked": attacked, "changed": changed,
                     "abstained": int(g["abstained"].sum()), "rate": changed / attacked if attacked else math.nan,
                     "alpha": float(g["alpha"].iloc[0]), "changed_ids": _ids(g.loc[g["changed"], "idx"])})
    return pd.DataFrame(rows, columns=["method", "model", "sigma", "attacked", "changed", "abstained", "rate",
                                       "alpha", "changed_ids"])


# ------------------------------------------------------------------------------ empirical >= certified


def sanity_check(results: pd.DataFrame, examples: pd.DataFrame, radii: Sequence[float],
                 rtol: float = 1 - AUDIT_FACTOR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Certified accuracy against empirical robust accuracy, per run and radius, and per example.

    Args:
        results: certification rows (``method, model, sigma, idx, predict, radius, correct``).
        examples: attack rows (``model, idx, correct, distance``), ``distance`` = the smallest
            adversarial perturbation found against the model's clean prediction (inf: none); rows with
            ``correct`` 0 count as broken at distance 0.
        radii: radii of the per-radius table.
        rtol: an example certified with radius r is a violation when an adversarial point closer
            than (1 - rtol) * r is known (the slack covers stored-radius rounding).

    Returns ``(table, violations)``. ``table``: one row per (run, radius) with
    ``certified_accuracy, empirical_accuracy, holds, violations, violation_ids, guaranteed, compared``.
    ``violations``: one row per (run, example) whose certified ball contains a known adversarial point.
    Guaranteed (``guaranteed`` True) only for deterministic methods, whose certified classifier is
    the attacked one; Monte Carlo rows compare the smoothed classifier's certificate with attacks on
    its base network, which theory does not order.
    """
    attacks = examples[["model", "idx", "correct", "distance"]].rename(
        columns={"correct": "attack_correct", "distance": "attack_distance"})
    # against the label: an example the attacked network already gets wrong is broken at distance 0
    attacks["attack_distance"] = np.where(attacks["attack_correct"] == 1, attacks["attack_distance"], 0.0)
    merged = results.merge(attacks, on=["model", "idx"], how="inner")
    table, bad = [], []
    for (method, model, sigma), g in merged.groupby(["method", "model", "sigma"], sort=True, dropna=False):
        guaranteed = method in DETERMINISTIC_METHODS
        compared = ("deterministic certificate vs attack on the same classifier (must hold)" if guaranteed else
                    "smoothed-classifier certificate vs attack on its base network (not implied by theory)")
        certified_ok = (g["correct"] == 1) & (g["predict"] != ABSTAIN) & (g["radius"] > 0)
        inside = certified_ok & (g["attack_distance"] < (1 - rtol) * g["radius"])
        for _, row in g[inside].iterrows():
            bad.append({"method": method, "model": model, "sigma": sigma, "idx": int(row["idx"]),
                        "certified_radius": float(row["radius"]), "adversarial_distance": float(row["attack_distance"]),
                        "guaranteed": guaranteed})
        for r in radii:
            cert = (g["correct"] == 1) & (g["radius"] >= r)
            emp = (g["attack_correct"] == 1) & (g["attack_distance"] > r)
            viol = cert & (g["attack_distance"] <= r) & (g["attack_distance"] < (1 - rtol) * g["radius"])
            ca, ea = float(cert.mean()), float(emp.mean())
            table.append({"method": method, "model": model, "sigma": sigma, "radius": float(r), "examples": len(g),
                          "certified_accuracy": ca, "empirical_accuracy": ea, "holds": bool(ea >= ca),
                          "violations": int(viol.sum()), "violation_ids": _ids(g.loc[viol, "idx"]),
                          "guaranteed": guaranteed, "compared": compared})
    columns = ["method", "model", "sigma", "idx", "certified_radius", "adversarial_distance", "guaranteed"]
    return pd.DataFrame(table), pd.DataFrame(bad, columns=columns)


# ------------------------------------------------------------------------------ Lipschitz constant


def lipschitz_audit(backbone: nn.Module, images: torch.Tensor, meta: dict[str, Any] | None = None, *,
                    power_iterations: int = 50, pair_steps: int = 100, seed: int = 0) -> dict[str, Any]:
    """Fresh lower bounds on the backbone's l2 Lipschitz constant at ``images``, next to the sidecar's record.

    Returns ``declared`` (the constant every certificate divides by), ``sidecar_*`` (the audit stored
    with the checkpoint), ``fresh_jacobian`` / ``fresh_pairs`` / ``fresh_inputs`` (this audit, float64)
    and ``confirms`` (True when no lower bound exceeds ``declared`` by more than 1e-4 relative).
    Both are lower bounds: they can reveal a wrong constant, never prove a right one.
    """
    record = (meta or {}).get("lipschitz", {})
    declared = float(record.get("declared", 1.0))
    audit = audit_lipschitz(backbone, images, power_iterations=power_iterations, pair_steps=pair_steps, seed=seed)
    stored = record.get("audit", {})
    return {
        "backbone": (meta or {}).get("name", "backbone"), "declared": declared,
        "sidecar_jacobian": stored.get("jacobian"), "sidecar_pairs": stored.get("pairs"),
        "sidecar_inputs": stored.get("inputs"), "sidecar_lower_bound": stored.get("lower_bound"),
        "fresh_jacobian": audit.jacobian, "fresh_pairs": audit.pairs, "fresh_inputs": audit.inputs,
        "fresh_lower_bound": audit.lower_bound, "confirms": bool(audit.confirms(declared)),
        "power_iterations": power_iterations, "pair_steps": pair_steps,
    }


# ------------------------------------------------------------------------------ report


def _table(frame: pd.DataFrame, columns: Sequence[str], formats: dict[str, Callable[[Any], str]] | None = None) -> str:
    formats = formats or {}
    return markdown_table(columns, ([formats.get(c, _cell)(row[c]) for c in columns] for _, row in frame.iterrows()))


def _cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞"
        return f"{value:.4g}"
    text = str(value)
    return text if text else "—"


def _pct(value: Any) -> str:
    return "—" if pd.isna(value) else f"{100 * float(value):.1f}%"


def soundness_markdown(out: str | Path) -> str:
    """The "Empirical robustness and soundness audit" section, built from the files in ``out``.

    Reads whichever of ``robustness.csv``, ``soundness.csv``, ``paper_criterion.csv``,
    ``smoothed_attack.csv``, ``sanity.csv``, ``sanity_violations.csv`` and ``lipschitz_audit.json``
    exist (written by :func:`bench.attack.run_robustness`). Returns markdown text.
    """
    out = Path(out)
    parts = ["## Empirical robustness and soundness audit", ""]
    settings = out / "attack_settings.json"
    if settings.is_file():
        s = json.loads(settings.read_text())
        parts += [f"Attack: {s.get('attack', '')}; minimum-norm search {s.get('min_norm_steps')} steps; "
                  f"audit of deterministic certificates at {s.get('factor')} r with {s.get('audit', '')}.", ""]
    path = out / "robustness.csv"
    if path.is_file():
        rob = pd.read_csv(path)
        rob = rob[rob["pgd"].astype(bool)]
        wide = rob.pivot_table(index="model", columns="radius", values="accuracy").reset_index()
        cols = [c for c in wide.columns if c != "model"]
        wide.columns = ["model"] + [f"@{c:g}" for c in cols]
        parts += ["### Empirical robust accuracy (l2 attack, pixel space)", "",
                  "Fraction of the evaluated images classified correctly and not broken by any attack within "
                  "the radius (SLL models: backbone + head; CNNs: the base network).", "",
                  _table(wide, list(wide.columns), {c: _pct for c in wide.columns if c != "model"}), ""]
    path = out / "soundness.csv"
    if path.is_file():
        snd = pd.read_csv(path, keep_default_na=False, na_values=[""])
        parts += ["### Deterministic certificates attacked at 0.999 r", "",
                  "`broken` must be 0: an adversarial point inside a certified ball disproves the certificate. "
                  "`min ratio`: smallest (adversarial distance found) / (certified radius) over the certified "
                  "examples (>= 1 for a sound certificate; close to 1 = tight certificate and strong attack).", "",
                  _table(snd, ["method", "model", "certified", "certified_correct", "broken", "broken_confirmed",
                               "min_ratio", "min_ratio_idx", "median_ratio", "no_adversarial"]), ""]
    path = out / "paper_criterion.csv"
    if path.is_file():
        pc = pd.read_csv(path, keep_default_na=False, na_values=[""])
        parts += ["### The public FaRS code's criterion (`fars-paper-criterion`, audit only)", "",
                  "\"Certified at eps\" iff correct and s_y / ||W||_2 > eps (s_y the head's true-class output, "
                  "bias included; `sparsemax`: the same on sparsemax(s)_y). Not a certificate and never "
                  "plotted as one. `broken`: claims the attack disproves at eps; `sound`: what the exact closed "
                  "form certifies at eps.", "",
                  _table(pc, ["model", "variant", "eps", "claimed", "broken", "sound_certified", "claimed_unsound"]),
                  ""]
    path = out / "smoothed_attack.csv"
    if path.is_file():
        sm = pd.read_csv(path, keep_default_na=False, na_values=[""])
        parts += ["### Monte Carlo certificates: attack on the smoothed classifier at 0.999 r", "",
                  "SmoothAdv-style PGD on the noise-averaged softmax, then PREDICT with fresh noise at the "
                  "attacked point. A changed prediction is expected with probability <= alpha (certificate "
                  "wrong) + alpha (PREDICT wrong); a statistical check, not a proof.", "",
                  _table(sm, ["method", "model", "sigma", "attacked", "changed", "abstained", "rate", "alpha"]), ""]
    path = out / "sanity.csv"
    if path.is_file():
        san = pd.read_csv(path, keep_default_na=False, na_values=[""])
        guaranteed = san[san["guaranteed"].astype(str).str.lower() == "true"]
        holds = guaranteed["holds"].astype(str).str.lower().eq("true")
        g_bad = int(guaranteed["violations"].sum()) + int((~holds).sum())
        o_bad, o_runs = 0, 0
        viol_path = out / "sanity_violations.csv"
        if viol_path.is_file():
            viol = pd.read_csv(viol_path)
            info = viol[viol["guaranteed"].astype(str).str.lower() != "true"]
            o_bad = len(info)
            o_runs = info.groupby(["method", "model", "sigma"], dropna=False).ngroups if len(info) else 0
        verdict = ("**PASS**: at every radius, empirical robust accuracy >= certified accuracy for every "
                   "deterministic method on its own model, and no certified ball contains an adversarial point."
                   if g_bad == 0 else
                   f"**FAIL**: {g_bad} violation(s) for deterministic methods — see sanity_violations.csv.")
        parts += ["### Sanity check: empirical >= certified", "", verdict, "",
                  f"Monte Carlo methods (the smoothed classifier is certified, its base network attacked — not "
                  f"ordered by theory, information only): {o_bad} certified example(s) in {o_runs} run(s) whose "
                  f"base network has an adversarial point inside the smoothed classifier's certified radius "
                  f"(listed in sanity_violations.csv with guaranteed = False).", ""]
    path = out / "lipschitz_audit.json"
    if path.is_file():
        lip = json.loads(path.read_text())
        parts += ["### Lipschitz audit of the backbone", "",
                  "Lower bounds on the l2 Lipschitz constant (any value above the declared constant would "
                  "break every FaRS certificate):", "",
                  "| backbone | declared | sidecar: Jacobian / pairs (inputs) | fresh: Jacobian / pairs (inputs) "
                  "| confirms |",
                  "| --- | --- | --- | --- | --- |",
                  f"| {lip['backbone']} | {lip['declared']:g} | {_num(lip.get('sidecar_jacobian'))} / "
                  f"{_num(lip.get('sidecar_pairs'))} ({lip.get('sidecar_inputs')}) | {_num(lip['fresh_jacobian'])} / "
                  f"{_num(lip['fresh_pairs'])} ({lip['fresh_inputs']}) | "
                  f"{'yes' if lip['confirms'] else '**NO**'} |", ""]
    return "\n".join(parts).rstrip("\n") + "\n"


def _num(value: Any) -> str:
    return "—" if value is None else f"{float(value):.4f}"


def write_soundness_markdown(out: str | Path) -> Path:
    """Write :func:`soundness_markdown` to ``out/soundness.md`` and return its path."""
    path = Path(out) / "soundness.md"
    path.write_text(soundness_markdown(out))
    return path
