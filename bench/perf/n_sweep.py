"""Seconds per image versus the number of Monte Carlo samples n (the command is ``python -m bench.scaling``).

Times ``cohen`` and ``fars-mc`` on one model with a Lipschitz split (a
:class:`~bench.models.loaded.LoadedModel`; ``sll+ce`` for the command: backbone and linear head) at
n = 1e2 ... 1e5, and ``fars-closed`` (no sampling) as the flat floor when its head is one ``nn.Linear``, on
the first images of the evaluation set (certifiers from :func:`bench.certify.certifiers.build_certifier`).
Each certify call is timed with the device synchronised, after a warm-up call; a fast call
is repeated (about 0.25 s of calls, at most 25) and its median kept.
The command writes ``scaling.csv`` and ``scaling.png`` to ``--out`` (default ``runs/fashion-mnist/scaling``),
then the cost model (:mod:`bench.perf.cost_model`: flops, bytes, the machine's floor, measured / floor and the
cost targets) as ``cost_model.csv``, ``cost_targets.csv`` and ``cost_model.md``.

Cohen's batch size can be searched (``--cohen-batch-size auto``: the throughput-best batch of a plain
forward, :func:`best_batch_size`); ``fars-mc`` has its own batch size (``--fars-batch-size``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fars import Certificate, Certifier

from ..certify.batch_size import FARS_BATCH_SIZE, best_batch_size, best_memory_format
from ..certify.certifiers import CohenOptions, MonteCarloSettings, build_certifier, supported_methods
from ..common.env import process_usage
from ..common.methods import SCALING_METHODS
from ..models.loaded import LoadedModel
from . import cost_model as cm

DEFAULT_NS = (100, 1_000, 10_000, 100_000)
#: the noise level of the sweep that ``python -m bench.run`` appends
STAGE_SIGMA = 0.25


#: cohen's opt-in fast modes, each timed as a row of its own beside the fp32 one (``--cohen-modes``): the
#: CohenRS options each sets. They change the computed classifier or its rounding, so each row carries its
#: own certified accuracy and its agreement with the fp32 row's certificates on the same images.
COHEN_MODES: dict[str, dict[str, Any]] = {
    "tf32": {"precision": "tf32"}, "bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"},
    "compiled": {"compile": True}, "channels_last": {"memory_format": "channels_last"},
}


def certify_with_usage(certifier, image: torch.Tensor, index: torch.Tensor) -> tuple[float, float, int, Certificate]:
    """One ``certify`` call on one image: (wall seconds, as the certificate records them; process CPU seconds,
    user + system; minor page faults; the certificate), the CPU time and faults from
    :func:`bench.common.env.process_usage` around the call."""
    cpu, faults = process_usage()
    cert = certifier.certify(image, indices=index)
    cpu_after, faults_after = process_usage()
    return float(cert.seconds), cpu_after - cpu, faults_after - faults, cert


def time_certifier(certifier, images: torch.Tensor, indices: torch.Tensor, min_seconds: float = 0.25,
                   max_repeats: int = 25, usage: list[dict[str, float]] | None = None) -> list[float]:
    """Seconds of one ``certify`` call per image (after one untimed warm-up call).

    A fast call is repeated (until ``min_seconds`` of calls or ``max_repeats`` calls) and its median
    is kept, so a millisecond-scale method is not judged on one call disturbed by the machine; a
    call's noise is decided by the seed and the image's index, so the repeats compute the same thing.
    ``usage``, when given, receives per image the medians over the same calls of the process CPU seconds
    (``cpu_seconds``) and minor page faults (``page_faults``) of one call, and the certificate of the image
    (``prediction``, ``radius``; every call computes the same one).
    """
    certifier.certify(images[:1], indices=indices[:1])
    seconds = []
    for i in range(len(images)):
        calls = [certify_with_usage(certifier, images[i:i + 1], indices[i:i + 1])]
        while sum(c[0] for c in calls) < min_seconds and len(calls) < max_repeats:
            calls.append(certify_with_usage(certifier, images[i:i + 1], indices[i:i + 1]))
        seconds.append(float(np.median([c[0] for c in calls])))
        if usage is not None:
            cert = calls[0][3]
            usage.append({"cpu_seconds": float(np.median([c[1] for c in calls])),
                          "page_faults": float(np.median([c[2] for c in calls])),
                          "prediction": float(cert.prediction[0]), "radius": float(cert.radius[0])})
    return seconds


def scaling_table(model: LoadedModel, images: torch.Tensor, indices: torch.Tensor, ns: tuple[int, ...], sigma: float,
                  n0: int, alpha: float, batch_size: int, seed: int, methods: tuple[str, ...], progress: bool = True, *,
                  cohen_batch_size: int | None = None, fars_batch_size: int | None = None, cohen_compile: bool = False,
                  cohen_precision: str = "fp32", cohen_modes: Sequence[str] = (),
                  cohen_memory_format: str = "contiguous", labels: torch.Tensor | None = None) -> pd.DataFrame:
    """Rows (method, model, n, samples, seconds, seconds_p25, seconds_p75, images, cpu_seconds, page_faults,
    batch_size, precision, compiled) of median seconds per image (wall), with the median process CPU seconds
    (user + system) and minor page faults of one call per image beside them.

    ``batch_size`` is the default of both sampled methods; ``cohen_batch_size`` / ``fars_batch_size`` override it
    per method. ``cohen_compile`` and ``cohen_precision`` are CohenRS's opt-in speed options (off / fp32 by
    default), recorded in the ``compiled`` and ``precision`` columns; ``cohen_memory_format`` the memory format of
    its noisy batches (the ``memory_format`` column; ``-`` for the FaRS methods). ``cohen_modes`` (names of
    :data:`COHEN_MODES`) adds a cohen row per mode and n, its name in the ``mode`` column (``fp32`` for the plain
    rows, ``-`` for the FaRS methods). With ``labels`` every row has its ``certified_accuracy`` at radius 0 on the
    images, and each mode row the fraction of images whose certificate (class and radius) equals the plain cohen
    row's at that n (``same_as_fp32``). ``model`` must support every method of ``methods``
    (:func:`~bench.certify.certifiers.supported_methods`; ``fars-mc`` needs a Lipschitz split, ``fars-closed`` a
    linear head), else :class:`~bench.certify.certifiers.RunError`.
    """
    rows = []
    unknown = sorted(set(cohen_modes) - set(COHEN_MODES))
    if unknown:
        raise ValueError(f"unknown cohen mode(s) {unknown}; choose from {', '.join(COHEN_MODES)}")
    jobs: list[tuple[str, int, str | None]] = [(m, n, None) for n in ns for m in methods if m in ("cohen", "fars-mc")]
    if "cohen" in methods:
        jobs += [("cohen", n, mode) for n in ns for mode in cohen_modes]
    if "fars-closed" in methods:
        jobs.append(("fars-closed", 0, None))
    sizes = {"cohen": cohen_batch_size or batch_size, "fars-mc": fars_batch_size or batch_size, "fars-closed": 1}
    plain_certificates: dict[int, list[tuple[float, float]]] = {}
    for method, n, mode in tqdm(jobs, desc="scaling", disable=not progress, file=sys.stderr):
        precision, compiled, memory_format = "fp32", False, "-"
        certifier: Certifier
        mc = MonteCarloSettings(n0=min(n0, n), n=n, alpha=alpha, batch_size=sizes[method], seed=seed)
        if method == "cohen":
            options = dataclasses.replace(CohenOptions(compile=cohen_compile, precision=cohen_precision,
                                                       memory_format=cohen_memory_format),
                                          **(COHEN_MODES[mode] if mode is not None else {}))
            certifier = build_certifier("cohen", model, sigma, mc, cohen=options)
            precision, compiled, memory_format = options.precision, options.compile, options.memory_format
        else:
            certifier = build_certifier(method, model, sigma, mc)
        usage: list[dict[str, float]] = []
        seconds = np.array(time_certifier(certifier, images, indices, usage=usage))
        certificates = [(u["prediction"], u["radius"]) for u in usage]
        if method == "cohen" and mode is None:
            plain_certificates[n] = certificates
        accuracy = math.nan if labels is None else float(np.mean(
            [p == float(y) for (p, _), y in zip(certificates, labels[:len(certificates)].tolist(), strict=True)]))
        same = (float(np.mean([a == b for a, b in zip(certificates, plain_certificates[n], strict=True)]))
                if mode is not None and n in plain_certificates else math.nan)
        rows.append({"method": method, "mode": mode or ("fp32" if method == "cohen" else "-"), "model": model.name,
                     "n": n, "samples": 0 if n == 0 else min(n0, n) + n,
                     "seconds": float(np.median(seconds)), "seconds_p25": float(np.percentile(seconds, 25)),
                     "seconds_p75": float(np.percentile(seconds, 75)), "images": len(seconds),
                     "cpu_seconds": float(np.median([u["cpu_seconds"] for u in usage])),
                     "page_faults": float(np.median([u["page_faults"] for u in usage])),
                     "batch_size": sizes[method], "precision": precision, "compiled": compiled,
                     "memory_format": memory_format,
                     "certified_accuracy": accuracy, "same_as_fp32": same})
    return pd.DataFrame(rows)


def write_cost_model(model: LoadedModel, images: torch.Tensor, scaling_df: pd.DataFrame, out: Path, *,
                     machine: cm.Machine | None = None, batch_size: int = 1000, plain_repeats: int = 5,
                     echo: bool = True, indices: torch.Tensor | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cost model of a scaling run: writes ``cost_model.csv``, ``cost_targets.csv`` and ``cost_model.md``.

    Counts flops and bytes of ``model`` (its backbone and head: it needs a Lipschitz split), measures the
    machine once (unless ``machine`` is given) and the plain-forward references (batched at cohen's batch
    size from ``scaling_df``, else ``batch_size``; compiled when cohen was; and one single image from
    ``images``), and compares them with ``scaling_df``'s measured seconds. When ``scaling_df`` has
    fars-closed, it and the single-image forward are re-timed side by side (:func:`cost_model.paired_single_image`
    on ``images`` with their dataset ``indices``). Returns (table, targets); prints the markdown when ``echo``.
    """
    backbone, head = model.backbone, model.head
    if backbone is None or head is None:
        raise ValueError(f"model {model.name!r} has no Lipschitz backbone/head split: the cost model counts both")
    network = model.network.eval()
    device = images.device
    costs = cm.network_costs(backbone, head, tuple(images.shape[1:]))
    machine = machine or cm.measure_machine(device)
    cohen_rows = scaling_df[scaling_df["method"] == "cohen"] if "method" in scaling_df else scaling_df.iloc[:0]
    plain_bs, compiled = batch_size, False
    if not cohen_rows.empty:
        if "batch_size" in cohen_rows:
            plain_bs = int(cohen_rows["batch_size"].iloc[-1])
        if "compiled" in cohen_rows:
            compiled = bool(cohen_rows["compiled"].iloc[-1])
    plain = cm.measure_plain_forward(network, images[:1], plain_bs, repeats=plain_repeats,
                                     # torch.compile of an nn.Module returns an OptimizedModule (an nn.Module)
                                     compiled=cast(torch.nn.Module, torch.compile(network)) if compiled else None)
    closed = scaling_df["method"] == "fars-closed" if "method" in scaling_df else None
    if closed is not None and closed.any():
        # fars-closed against the single-image forward: both timed in alternating blocks, same images
        rounds, calls = 5, 21
        indices = torch.arange(len(images)) if indices is None else indices
        closed_form = build_certifier("fars-closed", model)
        single, certify = cm.paired_single_image(network, closed_form, images, indices, rounds=rounds, calls=calls)
        plain = dataclasses.replace(plain, single=single, paired=(
            f"fars-closed and this forward timed in alternating blocks: {rounds} rounds x {len(images)} images x "
            f"{calls} calls each, medians; fars-closed's row uses that median, scaling.csv the sweep's"))
        scaling_df = scaling_df.copy()
        scaling_df.loc[closed, "seconds"] = certify
    table = cm.cost_table(costs, scaling_df, machine, plain, batch_size=batch_size)
    targets = cm.targets_table(table)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "cost_model.csv", index=False)
    targets.to_csv(out / "cost_targets.csv", index=False)
    notes = []
    if "precision" in scaling_df and (scaling_df["precision"].astype(str) != "fp32").any():
        notes.append("LOW PRECISION: cohen ran its forward in "
                     f"{', '.join(sorted(set(scaling_df['precision'].astype(str)) - {'fp32'}))} (explicit opt-in).")
    if compiled:
        notes.append("cohen ran a torch.compile'd network (opt-in); its plain-forward reference is compiled too.")
    text = cm.cost_markdown(table, targets, machine, plain, costs, note=" ".join(notes))
    (out / "cost_model.md").write_text(text)
    (out / "machine.json").write_text(json.dumps({**machine.as_dict(), "plain_forward": vars(plain)}, indent=2) + "\n")
    if echo:
        print(text)
    return table, targets


def scaling_model(models: Sequence[LoadedModel], name: str | None = None) -> tuple[LoadedModel | None, str]:
    """The model the stage's sweep times, and one line naming it and every model it skips, with why.

    With ``name``, that model (``ValueError`` when there is none of that name or it has no Lipschitz split).
    Otherwise the first model in run order with a Lipschitz split and a linear head (``fars-closed`` gives
    the flat floor and the cost model its closed-form row), else the first with a Lipschitz split (timed by
    ``cohen`` and ``fars-mc`` only). One model per sweep: the cost model describes one network, and the heads
    of one backbone cost the same backbone pass. ``None`` when no model has a Lipschitz split.
    """
    split = [m for m in models if m.has_split]
    if name is not None:
        named = [m for m in models if m.name == name]
        if not named:
            raise ValueError(f"no model called {name!r} to time (models: {', '.join(m.name for m in models)})")
        if not named[0].has_split:
            raise ValueError(f"model {name!r} has no Lipschitz backbone/head split: the scaling sweep times "
                             "cohen against fars-mc on one")
        chosen: LoadedModel | None = named[0]
    else:
        linear = [m for m in split if "fars-closed" in supported_methods(m)]
        chosen = (linear or split)[0] if split else None
    skipped = [f"{m.name} ({'one model per sweep' if m.has_split else 'no Lipschitz split'})"
               for m in models if m is not chosen]
    skips = f"; skipped: {', '.join(skipped)}" if skipped else ""
    if chosen is None:
        return None, f"scaling sweep skipped: no model has a Lipschitz backbone/head split{skips}"
    methods = _stage_methods(chosen)
    floor = "" if "fars-closed" in methods else " (no fars-closed floor: its head is not one nn.Linear)"
    return chosen, f"scaling sweep: times {chosen.name} with {', '.join(methods)}{floor}{skips}"


def _stage_methods(model: LoadedModel) -> tuple[str, ...]:
    return tuple(m for m in SCALING_METHODS if m in supported_methods(model))


def scaling_stage(models: Sequence[LoadedModel], images: torch.Tensor, indices: torch.Tensor, ns: Sequence[int],
                  out: Path, *, n0: int, alpha: float, seed: int, batch_size: int | None, progress: bool = True,
                  model: str | None = None) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
    """The sweep ``python -m bench.run`` appends to a run: ``scaling.csv`` and the cost model in ``out``.

    Times the model :func:`scaling_model` picks from ``models`` (``model``: a name that picks it) with cohen,
    fars-mc and, for a linear head, fars-closed, at sigma 0.25 and each n of ``ns`` on ``images`` (with their
    dataset ``indices``); prints :func:`scaling_model`'s line (stderr). ``batch_size``: one batch size for both
    sampled methods, or None ('auto': cohen at the throughput-best batch of a plain forward, fars-mc at
    :data:`FARS_BATCH_SIZE`). Returns the table and the manifest's record of the stage (settings and which
    targets were met), or ``(None, None)`` when no model has a Lipschitz split.
    """
    chosen, line = scaling_model(models, model)
    print(line, file=sys.stderr)
    if chosen is None:
        return None, None
    default_batch = 1000 if batch_size is None else batch_size
    cohen_bs = fars_bs = default_batch
    if batch_size is None:
        cohen_bs, _ = best_batch_size(chosen.network, tuple(images.shape[1:]), images.device,
                                      max_samples=max(ns) + n0)
        fars_bs = FARS_BATCH_SIZE
    memory_format, _ = best_memory_format(chosen.network, tuple(images.shape[1:]), cohen_bs, images.device)
    methods = _stage_methods(chosen)
    table = scaling_table(chosen, images, indices, tuple(sorted(ns)), sigma=STAGE_SIGMA, n0=n0, alpha=alpha,
                          batch_size=default_batch, seed=seed, methods=methods,
                          progress=progress, cohen_batch_size=cohen_bs, fars_batch_size=fars_bs,
                          cohen_memory_format=memory_format)
    table.to_csv(out / "scaling.csv", index=False)
    _, targets = write_cost_model(chosen, images, table, out, batch_size=cohen_bs, indices=indices, echo=False)
    record = {"ns": sorted(ns), "images": len(images), "sigma": STAGE_SIGMA, "model": chosen.name,
              "cohen_batch_size": cohen_bs, "cohen_memory_format": memory_format, "fars_batch_size": fars_bs,
              "targets": {row["target"]: row["met"] for row in targets.to_dict("records")}}
    return table, record
