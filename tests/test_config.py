"""Experiment files (``bench.common.config``) and how ``bench.run`` reads them: keys checked, paths resolved,
flags over the file over the preset, and the shipped default experiment equal to the former default run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.certify import machine
from bench.common.config import ConfigError, load_experiment
from bench.common.experiment import (
    DEFAULT_CONFIG,
    PRESETS,
    AttackSettings,
    Experiment,
    ExperimentError,
    ModelSource,
    MonteCarlo,
    Output,
    Scaling,
    Selection,
    parse_args,
)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ the file


def test_settings_and_model_tables_are_read_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", """
dataset = "cifar10"
data_root = "../data"
sigma = [0.25, 0.5]
n = 500
out = "runs/x"
[models.resnet]
format = "cohen"
checkpoint = "ckpt/checkpoint.pth.tar"
arch = "cifar_resnet20"
sigma = [0.25]
methods = ["cohen"]
""")
    exp = load_experiment(path)
    assert exp.settings["data_root"] == (tmp_path / "data").resolve()
    assert exp.settings["out"] == Path("runs/x")            # outputs: relative to where the command runs
    assert exp.settings["sigma"] == [0.25, 0.5] and exp.settings["n"] == 500
    (table,) = exp.models
    assert table.name == "resnet" and table.methods == ("cohen",) and table.sigmas == (0.25,)
    assert table.spec["checkpoint"] == str((tmp_path / "sub" / "ckpt" / "checkpoint.pth.tar").resolve())
    assert table.spec["dataset"] == "cifar10" and table.spec["name"] == "resnet"
    assert "sigma" not in table.spec and "methods" not in table.spec   # run restrictions are not format keys


@pytest.mark.parametrize(("text", "fragment"), [
    ("nn = 5", "unknown key 'nn'"),
    ("n = 1.5", "key 'n' must be an integer"),
    ("n = true", "key 'n' must be an integer"),
    ('sigma = 0.25', "key 'sigma' must be a list"),
    ('sigma = ["a"]', "key 'sigma' must be a finite number"),
    ("alpha = nan", "key 'alpha' must be a finite number"),
    ('batch_size = "big"', "key 'batch_size' must be an integer"),
    ("attack = 1", "key 'attack' must be true or false"),
    ("models = 3", "'models' must be a table"),
    ('[models.a]\ncheckpoint = "x"', "[models.a] needs a 'format' key"),
    ('[models.a]\nformat = "cohen"\nsigma = "0.25"', "[models.a] key 'sigma' must be a list"),
    ("n = [", "is not valid TOML"),
])
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "nope.toml")


# ------------------------------------------------------------------------------ bench.run's settings


def test_default_experiment_is_the_default_preset_on_the_shipped_models() -> None:
    exp = parse_args([])
    assert exp.file == DEFAULT_CONFIG.resolve() and exp.preset == "default"
    preset = PRESETS["default"]
    mc, selection = exp.monte_carlo, exp.selection
    assert (mc.n, mc.n0, mc.alpha, selection.num_images, selection.skip) == (
        preset["n"], preset["n0"], preset["alpha"], preset["num_images"], preset["skip"])
    assert list(exp.sigmas) == preset["sigma"] and selection.dataset == "fashion-mnist" and exp.attack.enabled
    assert exp.attack.steps == preset["attack"]["steps"] and exp.attack.mc_sample == preset["attack"]["mc_sample"]
    assert exp.output.out == Path.cwd() / "runs" / "fashion-mnist" / "default"
    (table,) = exp.models.tables
    assert Path(table.spec["checkpoint"]) == REPO / "bench" / "embedded" / "models"


def test_the_quick_preset_is_one_flag_away_with_the_full_attack() -> None:
    exp = parse_args(["--preset", "quick"])
    quick = PRESETS["quick"]
    assert (exp.monte_carlo.n, exp.selection.num_images, exp.selection.skip) == (
        quick["n"], quick["num_images"], quick["skip"])
    assert exp.attack == AttackSettings()   # the attack stage's full defaults (the committed results)
    assert exp.output.out == Path.cwd() / "runs" / "fashion-mnist" / "quick"


def test_an_attack_table_sets_the_attack_stage(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[attack]
steps = 3
radii = [0.5]
audit_targets = "all"
mc_sample = 0
[models.m]
format = "fars-bench"
checkpoint = "{REPO / 'bench' / 'embedded' / 'models'}"
""")
    exp = parse_args(["--config", str(path)])
    assert (exp.attack.steps, exp.attack.radii, exp.attack.audit_targets, exp.attack.mc_sample) == (3, (0.5,), None, 0)
    assert exp.attack.restarts == AttackSettings().restarts and exp.attack.enabled   # the preset's for the rest
    assert not parse_args(["--config", str(path), "--no-attack"]).attack.enabled


@pytest.mark.parametrize(("table", "message"), [
    ("bogus = 1", "unknown key 'bogus' in [attack]"),
    ("steps = 0", "attack steps must be >= 1"),
    ("steps = 1.5", "[attack] key 'steps' must be an integer"),
    ("radii = [-1]", "attack radii must be finite and > 0"),
])
def test_a_bad_attack_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str,
                                        message: str) -> None:
    path = write(tmp_path, f"[attack]\n{table}\n")
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--config", str(path), "--models", str(REPO / "bench" / "embedded" / "models")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()[-1:]) == 1


def test_an_experiment_is_built_directly_and_checks_itself(tmp_path: Path) -> None:
    parts = dict(file=tmp_path / "x.toml", preset="quick", selection=Selection("fashion-mnist", 2, 1),
                 models=ModelSource(folder=tmp_path), methods=("fars-closed",), sigmas=(0.25,), radii=(0.5,),
                 monte_carlo=MonteCarlo(n0=5, n=20, alpha=0.001), output=Output(tmp_path / "out"))
    exp = Experiment(**parts)   # type: ignore[arg-type]
    assert exp.run_config()["n"] == 20 and exp.record()["monte_carlo"]["n0"] == 5
    with pytest.raises(ExperimentError, match="--n0 \\(30\\) must not exceed --n \\(20\\)"):
        MonteCarlo(n0=30, n=20, alpha=0.001)
    with pytest.raises(ExperimentError, match="unknown method"):
        Experiment(**{**parts, "methods": ("nope",)})   # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match="--allow-long-run"):
        Experiment(**{**parts, "scaling": Scaling(ns=(10**9,))})   # type: ignore[arg-type]


def test_flags_override_the_file_which_overrides_the_preset(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
preset = "paper"
n = 777
sigma = [0.5]
[models.m]
format = "fars-bench"
checkpoint = "{REPO / 'bench' / 'embedded' / 'models'}"
""", name="mine.toml")
    exp = parse_args(["--config", str(path), "--sigma", "0.25"])
    assert exp.monte_carlo.n == 777                               # the file over the preset
    assert exp.monte_carlo.n0 == PRESETS["paper"]["n0"]           # the preset for what the file leaves out
    assert exp.sigmas == (0.25,)                                  # the flag over the file
    assert exp.output.out == Path.cwd() / "runs" / "mine" / "paper"
    assert parse_args(["--config", str(path), "--preset", "quick"]).monte_carlo.n0 == PRESETS["quick"]["n0"]


def test_a_bad_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bogus = 1")
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--config", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown key 'bogus'" in err and "Traceback" not in err


def test_a_file_without_models_needs_models_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'dataset = "fashion-mnist"')
    with pytest.raises(SystemExit):
        parse_args(["--config", str(path)])
    assert "names no models" in capsys.readouterr().err
    exp = parse_args(["--config", str(path), "--models", str(REPO / "bench" / "embedded" / "models")])
    assert exp.models.tables == () and exp.models.folder == REPO / "bench" / "embedded" / "models"


# ------------------------------------------------------------------------------ timing you can trust


def test_busy_machine_warning_fires_on_a_faked_high_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    monkeypatch.setattr(machine, "usable_cpus", lambda: 2)
    state = machine.machine_state(threads=2)
    warnings = machine.noisy_timing_warnings(state, [])
    assert len(warnings) == 1 and "busy" in warnings[0] and "6.00" in warnings[0]
    assert "noisy timings" in machine.noisy_timing_markdown(warnings)


def test_quiet_machine_and_steady_timings_give_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (2.1, 2.0, 2.0))   # this run's own 2 threads
    monkeypatch.setattr(machine, "usable_cpus", lambda: 2)
    steady = np.full(50, 0.01) * np.linspace(0.9, 1.1, 50)
    assert machine.noisy_timing_warnings(machine.machine_state(threads=2), [("cohen m", steady)]) == []
    assert machine.noisy_timing_markdown([]) == ""


def test_widely_spread_timings_are_flagged() -> None:
    spread = np.concatenate([np.full(25, 0.003), np.full(25, 0.2)])
    (warning,) = machine.spread_warnings([("fars-closed sll+ce", spread)])
    assert "fars-closed sll+ce" in warning and "10th and 90th" in warning
    assert machine.spread_warnings([("few rows", spread[:5])]) == []


def test_starved_cpu_runs_and_page_fault_bound_runs_are_flagged() -> None:
    wall = np.full(20, 0.010)
    (starved,) = machine.usage_warnings([("cohen sll+ce σ=0.25", wall, wall * 0.5, np.zeros(20))])
    assert "cohen sll+ce" in starved and "50% of its wall time" in starved and "waited for the CPUs" in starved
    (faulting,) = machine.usage_warnings([("cohen big", wall, wall, np.full(20, 5_000.0))])
    assert "5,000 minor page faults per image" in faulting and "tune_cpu_allocator" in faulting
    # a compute-bound run (CPU time at least the wall time on 1+ threads, few faults) and rows without usage pass
    assert machine.usage_warnings([("fars-mc sll+ce", wall, wall * 1.7, np.full(20, 3.0))]) == []
    assert machine.usage_warnings([("old rows", wall, np.full(20, np.nan), np.full(20, np.nan))]) == []


def test_many_starved_runs_make_one_line() -> None:
    """A loaded machine starves every run: one line says how many and the range, naming the worst."""
    wall = np.full(20, 0.010)
    runs = [(f"cohen m σ={s}", wall, wall * share, np.zeros(20)) for s, share in ((0.12, 0.6), (0.25, 0.3), (0.5, 0.7))]
    (line,) = machine.usage_warnings(runs)
    assert line.startswith("3 runs ran 30% to 70% of their wall time") and "lowest: cohen m σ=0.25" in line
    faulting = [(f"cohen {k}", wall, wall, np.full(20, f)) for k, f in (("a", 5_000.0), ("b", 9_000.0))]
    (line,) = machine.usage_warnings(faulting)
    assert line.startswith("2 runs (most: cohen b): 9,000 minor page faults per image")


def test_usage_is_read_from_the_results_file_of_a_cpu_run(tmp_path: Path) -> None:
    from bench.certify import results_file as results

    tsv = tmp_path / "certify.tsv"
    rows = ["\t".join(["0", "1", "1", "0.5", "1", "0:00:00.1", "cohen", "m", "0.25", "1100", "0.1", "0.04", "12"]),
            "\t".join(["0", "1", "1", "0.5", "1", "0:00:00.1", "fars-closed", "m", "-", "0", "0.1", "0.1", "0"])]
    tsv.write_text("\n".join(["\t".join(results.COLUMNS), *rows]) + "\n")
    usage = machine.usage_by_run(tsv, "cpu")
    assert [key for key, *_ in usage] == ["cohen m σ=0.25", "fars-closed m"]
    assert usage[0][2].tolist() == [0.04] and usage[0][3].tolist() == [12.0]
    assert machine.usage_by_run(tsv, "cuda:0") == []   # a process waiting for its GPU is not starved
    state = {"load_average_1min": 0.0, "usable_cpus": 2, "torch_threads": 1}
    (warning,) = machine.noisy_timing_warnings(state, [], usage)
    assert warning.startswith("cohen m σ=0.25: the process ran 40% of its wall time")


def test_default_threads_never_oversubscribe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "usable_cpus", lambda: 4)
    assert machine.default_threads() == 4
    assert machine.default_threads(processes=2) == 2
    assert machine.default_threads(processes=8) == 1


@pytest.mark.parametrize("path", [DEFAULT_CONFIG, *sorted((REPO / "configs").glob("*.toml"))], ids=lambda p: p.name)
def test_shipped_experiment_files_are_valid(path: Path) -> None:
    exp = load_experiment(path)
    assert exp.models, f"{path.name} names no models"
    assert all(t.spec["format"] in ("fars-bench", "cohen", "sll", "torch") for t in exp.models)
