"""``python -m bench.run``: certify test images with every method, time them, and write the results.

Outputs in ``--out`` (default ``runs/<dataset>/<preset>/`` under the current directory, git-ignored):

* ``certify.tsv``: one row per (run, example) with Cohen's columns ``idx label predict radius correct
  time`` plus ``method model sigma samples seconds``; appended and flushed row by row, so an
  interrupted run loses nothing and re-running the same command resumes where it stopped;
* ``manifest.json``: configuration (models and images identified by content), package versions,
  device, git commit, start and end times;
* ``summary.csv``, ``summary.md``, ``certified_accuracy.csv`` and the plots (see :mod:`bench.report`);
* with the scaling stage, ``scaling.csv/png`` and the cost model; with the attack stage, the audit files.

The settings are one :class:`bench.common.experiment.Experiment` (flags > experiment file > preset > defaults).
The stages run in the order certify, scaling, attack, report, and each file has one writer: the report
(``summary.md``, the tables, the figures) is written last, from every stage's files. A scaling, attack or
report stage whose inputs and settings are unchanged since the last run in ``--out`` (the manifest's
``stages``: a fingerprint of its inputs and the content hashes of its outputs) is skipped with one line.

Several processes or GPUs: ``torchrun --nproc-per-node N -m bench.run ...`` shards the examples across
the N ranks and merges their results into the same files, equal row for row to a one-process run
(see :mod:`bench.certify.distributed`). This module is a command-line leaf: nothing imports it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common.cli import cli_exit
from .common.env import cpu_allocator, device_name, full_fp32, portable_path, resolve_device, tune_cpu_allocator
from .common.experiment import Experiment, parse_args
from .common.provenance import git_commit, package_versions

if TYPE_CHECKING:   # the stages import PyTorch and the pipeline when they run, after the flags are parsed
    import torch

    from .certify import distributed as dist_
    from .certify.runs import MonteCarloSettings, Run
    from .models.experiment_models import ExperimentModels

#: The stages after certification (scaling, attack, report) each record in the manifest's ``stages`` the
#: fingerprint of their inputs and settings and the content hashes of
#: the files whose content hashes a stage's record keeps (another writer, or a deleted file, reruns the stage)
SCALING_OUTPUTS = ("scaling.csv", "cost_model.csv", "cost_model.md", "cost_targets.csv", "machine.json")
REPORT_OUTPUTS = ("summary.md", "summary.csv", "table1.md", "table2.md", "table_certified.md")


def run_config(experiment: Experiment, models: ExperimentModels, images: torch.Tensor, labels: torch.Tensor,
               indices: torch.Tensor) -> dict[str, Any]:
    """What decides the results, and nothing machine-specific (a resumed run must match it exactly).

    Models are identified by the content hashes of their checkpoints, the images by a hash of their
    pixels, labels and dataset indices, so the same run resumes from any folder or clone.
    """
    from .data.selection import images_fingerprint

    config = experiment.run_config()
    config["models"] = models.fingerprint()
    config["images"] = images_fingerprint(images, labels, indices)
    return config


def main(argv: list[str] | None = None) -> Path:
    experiment = parse_args(argv)
    from smoothing.checks import NonFiniteScoresError

    from .certify import distributed as dist_
    from .certify.manifest import ResumeError
    from .models import CheckpointError

    out = experiment.output.out
    context = dist_.context_from_env()
    dist_.init(context, experiment.runtime.dist_timeout_hours)
    try:
        with dist_.output_lock(out, context):   # one run at a time owns --out
            return _run(experiment, context)
    except (ResumeError, CheckpointError, NonFiniteScoresError) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        tsv = out / "certify.tsv"
        kept = f"every finished row is kept in {tsv}" if tsv.is_file() else "no row was finished yet"
        print(f"\ninterrupted: {kept}; re-run the same command to resume where it stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        dist_.shutdown(context)


def _run(experiment: Experiment, context: dist_.Context) -> Path:
    """The stages of a run: inputs, output folder, runs, certification, then (rank 0) scaling, attack and
    report; each file of ``--out`` has one writer, and the report is written last, from every stage's files."""
    from .certify import distributed as dist_
    from .certify.machine import default_threads, machine_state, set_threads
    from .certify.results_file import merge_results
    from .certify.runner import timing_summary

    out = experiment.output.out
    threads = experiment.runtime.threads or default_threads(context.world_size)
    set_threads(threads)   # no effect on results; no oversubscription, so timings mean what they say
    process = {"cpu_allocator_tuned": tune_cpu_allocator(),  # no effect on results; steadier CPU timings
               "precision": full_fp32(), "machine": machine_state(threads)}
    device = dist_.rank_device(resolve_device(experiment.runtime.device), context)
    models, images, labels, indices = _load_inputs(experiment, device)
    config = run_config(experiment, models, images, labels, indices)
    previous = _prepare_output(out, config, experiment.output.overwrite, context)
    runs, mc, batch_sizes = _build_runs(experiment, models, tuple(images.shape[1:]), device, context, previous)
    manifest = _start_manifest(experiment, config, models, runs, mc, batch_sizes, device, context, process,
                               len(images), [int(i) for i in indices], previous)
    timings = _certify_stage(experiment, runs, images, labels, indices, context)
    if not context.is_main:
        return out
    tsv = out / "certify.tsv"
    total = merge_results(out, tsv, runs, indices)
    timing = timing_summary(timings)
    _record_timing(manifest, timing, tsv, previous)
    print(f"certify: wrote {timing['rows']} new rows ({total} in all) to {tsv}", file=sys.stderr)
    tsv_hash = _file_hash(tsv)
    scaling = _scaling_stage(experiment, models, images, indices, manifest, previous)
    problems = _attack_stage(experiment, models, images, labels, indices, mc, manifest, previous, tsv_hash)
    _report_stage(experiment, tsv, scaling, manifest, previous, tsv_hash)
    _finish(out, manifest, timing, total)
    if problems:
        banner = "!" * 100
        print("\n".join([banner, "SOUNDNESS FAILURE: a certificate of a sound method was broken", *problems, banner]),
              file=sys.stderr)
        raise SystemExit(3)
    return out


def _load_inputs(experiment: Experiment, device: torch.device
                 ) -> tuple[ExperimentModels, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The experiment's models (its model tables, or the ``--models`` folder) on ``device`` and the
    selected test images (images on ``device``).

    Models whose input shape or classes are not the dataset's are refused before any image is read or
    downloaded (from the registered shape and classes; an image-file dataset's shape from its ``image_size``),
    and their shape is checked again on the images read (an image folder without a crop).
    """
    from .data.selection import select_images
    from .models.experiment_models import load_experiment_models, models_from_folder

    selection, source = experiment.selection, experiment.models
    try:
        if source.folder is None:
            models = load_experiment_models(list(source.tables), selection.dataset, list(source.heads))
        else:
            models = models_from_folder(source.folder, selection.dataset, list(source.heads))
    except ValueError as err:   # CheckpointError, ModelSpecError: a model that cannot be used as asked
        raise SystemExit(f"error: cannot load the models: {err}") from None
    sizes: dict[str, Any] = selection.sizes()
    shape, classes = _dataset_shape_and_classes(experiment, sizes)
    if shape is not None:
        _refuse_misfits(selection.dataset, models, shape, classes)   # before any image is read or downloaded
    models.to(device)
    try:
        images, labels, indices = select_images(selection.dataset, selection.data_root, selection.num_images,
                                                selection.skip, **sizes)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    _refuse_misfits(selection.dataset, models, tuple(images.shape[1:]), classes)
    return models, images.to(device), labels, indices


def _dataset_shape_and_classes(experiment: Experiment, sizes: dict[str, Any]
                               ) -> tuple[tuple[int, ...] | None, int | None]:
    """The dataset's image shape (None when only its images say: an image folder without a crop) and its
    number of classes (None when the registry does not fix it), read from the registry, not from the data."""
    from .data import dataset_spec

    dataset = experiment.selection.dataset
    root = experiment.selection.data_root if dataset == "imagefolder" else None
    classes = dataset_spec(dataset, root).num_classes
    try:
        shape: tuple[int, ...] | None = tuple(dataset_spec(dataset, None, **sizes).input_shape)
    except ValueError:   # image_size None: the shape is that of the images themselves
        shape = None
    return shape, classes


def _refuse_misfits(dataset: str, models: ExperimentModels, shape: tuple[int, ...], classes: int | None) -> None:
    """``SystemExit`` with one line naming each model whose input shape is not ``shape`` or whose classes are
    not ``classes`` (labels would be compared with the classes of another label space)."""
    wrong = [f"{e.model.name} takes {tuple(e.model.input_shape)}" for e in models.entries
             if tuple(e.model.input_shape) != shape]
    if wrong:
        raise SystemExit(f"error: the {dataset} images are {shape} but {'; '.join(wrong)}: "
                         "certify each model on the dataset it was built for (image_size/resize for image folders)")
    other = [f"{e.model.name} has {e.model.num_classes}" for e in models.entries
             if classes is not None and e.model.num_classes != classes]
    if other:
        raise SystemExit(f"error: {dataset} has {classes} classes but {'; '.join(other)}: certify each model on "
                         "the dataset whose classes it predicts")


def _prepare_output(out: Path, config: dict[str, Any], overwrite: bool, context: dist_.Context
                    ) -> dict[str, Any] | None:
    """Create ``out``; with ``overwrite`` delete its results, else refuse results of another configuration.
    Returns the manifest of the run being resumed (None with ``overwrite`` or without one)."""
    from .certify import distributed as dist_
    from .certify.manifest import check_resumable, read_manifest

    out.mkdir(parents=True, exist_ok=True)
    tsv = out / "certify.tsv"
    if overwrite:
        dist_.barrier(context)  # every rank has parsed its flags before rank 0 deletes anything
        if context.is_main:
            tsv.unlink(missing_ok=True)
            for shard in dist_.shard_files(out):
                shard.unlink()
        return None
    check_resumable(out, config, has_results=tsv.is_file() or bool(dist_.shard_files(out)))
    previous = read_manifest(out)
    return previous if previous is not None and previous.get("config") == config else None


def _build_runs(experiment: Experiment, models: ExperimentModels, image_shape: tuple[int, ...],
                device: torch.device, context: dist_.Context, previous: dict[str, Any] | None,
                ) -> tuple[list[Run], MonteCarloSettings, dict[str, int]]:
    """Every run of the chosen methods, heads and sigmas, with its batch size and memory format set (batch sizes
    returned by run key). Rank 0 chooses them, or keeps those of the run being resumed (``previous``, its
    manifest), and every other rank takes rank 0's, so all rows of a run come from one evaluation of its network."""
    from .certify import distributed as dist_
    from .certify.runner import Tuning, choose_batch_sizes, kept_tuning
    from .certify.runs import MonteCarloSettings, RunError, build_runs

    given, runtime = experiment.monte_carlo, experiment.runtime
    mc = MonteCarloSettings(n0=given.n0, n=given.n, alpha=given.alpha,
                            batch_size=1000 if runtime.batch_size is None else runtime.batch_size, seed=runtime.seed,
                            sequential=given.sequential, radii=tuple(sorted(experiment.radii)))
    try:
        runs = build_runs(models.entries, experiment.methods, experiment.sigmas, mc)
    except RunError as err:
        raise SystemExit(f"error: {err}") from None
    if not runs:
        raise SystemExit(f"error: no run matches: {_why_no_run(experiment, models)}")
    batch_sizes: dict[str, int] = {}
    if context.is_main:
        batch_sizes = choose_batch_sizes(runs, runtime.batch_name, image_shape, device, given.n0 + given.n,
                                         progress=runtime.progress, kept=kept_tuning(previous, device))
    main_choice = dist_.all_gather(context, Tuning.of(runs, batch_sizes) if context.is_main else None)[0]
    if not context.is_main:
        batch_sizes = choose_batch_sizes(runs, runtime.batch_name, image_shape, device, given.n0 + given.n,
                                         progress=False, kept=main_choice)
    return runs, mc, batch_sizes


def _why_no_run(experiment: Experiment, models: ExperimentModels) -> str:
    """Why --methods/--sigma and the models make no run (what each model can be certified by)."""
    from .certify.runs import supported_methods

    able = "; ".join(f"{e.model.name}: {', '.join(e.methods or supported_methods(e.model))}"
                     + ("" if e.sigmas is None else f" at sigma {', '.join(f'{s:g}' for s in e.sigmas)}")
                     for e in models.entries)
    return (f"--methods {' '.join(experiment.methods)} at --sigma {' '.join(f'{s:g}' for s in experiment.sigmas)}, "
            f"but the models take ({able}); FaRS methods need a model with a Lipschitz backbone, head and constant "
            "(see the README's model formats)")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _start_manifest(experiment: Experiment, config: dict[str, Any], models: ExperimentModels, runs: list[Run],
                    mc: MonteCarloSettings, batch_sizes: dict[str, int], device: torch.device,
                    context: dist_.Context, process: dict[str, Any], images: int,
                    image_indices: list[int], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest as the run starts: the experiment's own record plus the machine's facts (rank 0 writes
    it; ``first_started`` and the records of the stages survive resumes). ``runs`` and ``image_indices``
    (the selected images' dataset indices) say which rows belong to the run (``python -m bench.report``
    keeps only those)."""
    import torch

    from .certify.manifest import write_manifest
    from .certify.runner import memory_formats

    source = experiment.models
    manifest: dict[str, Any] = {
        "config": config, "preset": experiment.preset, "experiment": experiment.record(),
        "monte_carlo": asdict(mc), "device": str(device),
        "device_name": device_name(device), "torch_threads": torch.get_num_threads(), "machine": process["machine"],
        "processes": context.world_size, "batch_sizes": batch_sizes, "precision": process["precision"],
        "memory_formats": memory_formats(runs),
        "cpu_allocator_tuned": process["cpu_allocator_tuned"], "cpu_allocator": cpu_allocator(),
        "versions": package_versions(), "git_commit": git_commit(),
        "experiment_file": portable_path(experiment.file),
        "models_dir": None if source.folder is None else portable_path(source.folder),
        "data_root": None if experiment.selection.data_root is None else portable_path(experiment.selection.data_root),
        "models": models.describe(),
        "backbone_lipschitz": None if models.zoo is None else models.zoo.backbone_meta["lipschitz"],
        "runs": [r.key for r in runs], "radii": list(experiment.radii),
        "images": images, "image_indices": image_indices, "started": _now(),
    }
    if previous is not None:
        manifest["first_started"] = previous.get("first_started", previous.get("started"))
        for key in ("stages", "scaling", "attack"):   # a skipped stage's record stays
            if key in previous:
                manifest[key] = previous[key]
    if context.is_main:
        write_manifest(experiment.output.out, manifest)
    return manifest


def _certify_stage(experiment: Experiment, runs: list[Run], images: torch.Tensor, labels: torch.Tensor,
                   indices: torch.Tensor, context: dist_.Context) -> list[Any]:
    """Certify every pending (run, image) pair; returns every rank's timing."""
    from .certify import distributed as dist_
    from .certify.results_file import check_rows, read_done, read_lines
    from .certify.runner import certify_all

    out = experiment.output.out
    tsv = out / "certify.tsv"
    # Every rank must see the same finished rows before any rank appends: repair, barrier, read, barrier.
    target = dist_.shard_path(out, context.rank) if context.distributed else tsv
    dist_.barrier(context)
    dist_.check_shared_folder(out, context)
    read_lines(target, repair=True)
    if context.is_main:
        read_lines(tsv, repair=True)
    dist_.barrier(context)
    done = read_done(tsv, *[s for s in dist_.shard_files(out) if s != tsv])
    for path in (tsv, *dist_.shard_files(out)):   # a resumed row must be one these runs could write
        check_rows(path, read_lines(path), runs)
    dist_.barrier(context)
    mine = certify_all(runs, images, labels, indices, target, progress=experiment.runtime.progress, done=done,
                       context=context)
    return dist_.all_gather(context, mine)


def _record_timing(manifest: dict[str, Any], timing: dict[str, Any], tsv: Path,
                   previous: dict[str, Any] | None) -> None:
    """The certification's timing and the noisy-timing warnings in the manifest (the summary's sources). An
    invocation that certified no row keeps the timing of the one that did (its summary describes that one)."""
    from .certify.machine import noisy_timing_warnings, usage_by_run

    if timing["rows"] == 0 and previous is not None and "timing" in previous:
        manifest["timing"], manifest["timing_warnings"] = previous["timing"], previous.get("timing_warnings", [])
        return
    manifest["timing"] = timing
    manifest["timing_warnings"] = noisy_timing_warnings(manifest["machine"], _seconds_by_run(tsv),
                                                        usage_by_run(tsv, manifest["device"]))


def _file_hash(path: Path) -> str | None:
    from .common.files import sha256_file

    return sha256_file(path) if path.is_file() else None


def _fingerprint(*parts: Any) -> str:
    """A stage's inputs and settings as one hash (JSON of ``parts``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _unchanged(stage: str, fingerprint: str, previous: dict[str, Any] | None, outputs: list[Path]) -> bool:
    """Whether ``stage`` ran before on the same inputs and settings (``fingerprint``) and its ``outputs`` are
    there as it wrote them (content hashes); says so in one line when it is."""
    recorded = ((previous or {}).get("stages") or {}).get(stage) or {}
    if recorded.get("inputs") == fingerprint and recorded.get("outputs") == _hashes(outputs):
        print(f"{stage}: inputs and settings unchanged since the last run; kept its outputs", file=sys.stderr)
        return True
    return False


def _record_stage(manifest: dict[str, Any], stage: str, fingerprint: str, outputs: list[Path]) -> None:
    """What :func:`_unchanged` compares with on the next run: the stage's inputs and its outputs' hashes,
    written at once (a run interrupted in a later stage skips this one when re-run)."""
    from .certify.manifest import write_manifest

    manifest.setdefault("stages", {})[stage] = {"inputs": fingerprint, "outputs": _hashes(outputs)}
    write_manifest(outputs[0].parent, manifest)


def _hashes(paths: list[Path]) -> dict[str, str | None]:
    return {path.name: _file_hash(path) for path in paths}


def _scaling_stage(experiment: Experiment, models: ExperimentModels, images: torch.Tensor, indices: torch.Tensor,
                   manifest: dict[str, Any], previous: dict[str, Any] | None) -> Any:
    """Seconds per image versus n on one model with a Lipschitz split, and the cost model (skipped without
    ``--scaling-ns``; which model, and why each other one is skipped: :func:`bench.perf.n_sweep.scaling_model`).
    Returns the table."""
    import pandas as pd

    from .perf.n_sweep import scaling_stage

    scaling, out = experiment.scaling, experiment.output.out
    if not scaling.ns:
        manifest.setdefault("stages", {}).pop("scaling", None)
        manifest.pop("scaling", None)
        return None
    mc, runtime = experiment.monte_carlo, experiment.runtime
    fingerprint = _fingerprint(manifest["config"], asdict(scaling), mc.n0, mc.alpha, runtime.seed, runtime.batch_size)
    outputs = [out / name for name in SCALING_OUTPUTS]
    if _unchanged("scaling", fingerprint, previous, outputs) and "scaling" in manifest:
        return pd.read_csv(out / "scaling.csv")
    k = scaling.images
    table, record = scaling_stage([e.model for e in models.entries], images[:k], indices[:k], list(scaling.ns), out,
                                  n0=mc.n0, alpha=mc.alpha, seed=runtime.seed, batch_size=runtime.batch_size,
                                  progress=runtime.progress)
    if record is None:   # no model to time (the sweep said why in one line)
        manifest.pop("scaling", None)
        return table
    manifest["scaling"] = record
    _record_stage(manifest, "scaling", fingerprint, outputs)
    return table


def _attack_stage(experiment: Experiment, models: ExperimentModels, images: torch.Tensor, labels: torch.Tensor,
                  indices: torch.Tensor, mc: MonteCarloSettings, manifest: dict[str, Any],
                  previous: dict[str, Any] | None, tsv_hash: str | None) -> list[str]:
    """The attack stage (:func:`bench.audit.robustness.run_robustness`) with the experiment's attack settings;
    returns the soundness failures (of this run, or of the unchanged earlier one)."""
    from .audit.robustness import ATTACK_OUTPUTS, robustness_settings, run_robustness, soundness_failures

    out = experiment.output.out
    if not experiment.attack.enabled:
        manifest.setdefault("stages", {}).pop("attack", None)
        return []
    settings = robustness_settings(experiment.attack, seed=experiment.runtime.seed)
    fingerprint = _fingerprint(tsv_hash, manifest["config"], settings.describe(), asdict(mc))
    outputs = [out / name for name in ATTACK_OUTPUTS]
    if not _unchanged("attack", fingerprint, previous, outputs):
        run_robustness(models, images, labels, indices, out / "certify.tsv", out, mc, settings,
                       progress=experiment.runtime.progress, verbose=False)
        manifest["attack"] = settings.describe()
        _record_stage(manifest, "attack", fingerprint, outputs)
    return soundness_failures(out)


def _report_stage(experiment: Experiment, tsv: Path, scaling: Any, manifest: dict[str, Any],
                  previous: dict[str, Any] | None, tsv_hash: str | None) -> None:
    """summary.csv/md, Tables 1 and 2, certified_accuracy.csv and the plots, from every stage's files
    (``robustness.csv`` and ``soundness.md`` of the attack stage, the scaling table); summary.md carries the
    run's timing and a warning when the machine was too busy for the timings to be trusted, both from the
    manifest (recorded there first, so that ``python -m bench.report`` regenerates the same file)."""
    from .certify.manifest import write_manifest
    from .report import write_reports

    out = experiment.output.out
    stages = manifest.setdefault("stages", {})
    sources = {name: _file_hash(out / name) for name in ("robustness.csv", "soundness.md", "scaling.csv")}
    fingerprint = _fingerprint(tsv_hash, sources, stages.get("scaling"), stages.get("attack"),
                               manifest.get("timing"), manifest.get("timing_warnings"), list(experiment.radii),
                               list(experiment.output.widths))
    outputs = [out / name for name in REPORT_OUTPUTS]
    if _unchanged("report", fingerprint, previous, outputs):
        return
    write_manifest(out, manifest)   # the summary's sources on disk before the summary
    reports = write_reports(tsv, out, radii=sorted({0.0, *experiment.radii}), scaling=scaling, manifest=manifest,
                            widths=experiment.output.widths)
    _record_stage(manifest, "report", fingerprint, outputs)
    for warning in manifest.get("timing_warnings") or []:
        print(f"warning: noisy timings: {warning}", file=sys.stderr)
    written = sorted({p.name for p in reports.values() if p.parent == out} | ({"cohen/"} if (out / "cohen").is_dir()
                                                                              else set()))
    print(f"report: {', '.join(written)}", file=sys.stderr)


def _seconds_by_run(tsv: Path) -> list[tuple[str, Any]]:
    """Per run of fixed work per image (every row the same number of samples): its rows' seconds."""
    from .report import read_results

    frame = read_results(tsv)
    groups = frame.groupby(["method", "model", "sigma"], dropna=False, sort=True)
    return [(f"{m} {model}" + ("" if s != s else f" σ={s:g}"), g["seconds"].to_numpy())
            for (m, model, s), g in groups if g["samples"].nunique() == 1]


def _finish(out: Path, manifest: dict[str, Any], timing: dict[str, Any], total: int) -> None:
    """Complete the manifest and print the summary."""
    from .certify.manifest import write_manifest

    manifest["finished"] = _now()
    manifest["rows_written_by_last_invocation"] = timing["rows"]
    manifest["rows_total"] = total
    write_manifest(out, manifest)
    summary = out / "summary.md"
    if summary.is_file():
        print(summary.read_text())


if __name__ == "__main__":
    cli_exit(main)
