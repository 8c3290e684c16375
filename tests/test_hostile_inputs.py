"""Inputs a hostile or careless user gives: each is refused in one line (or handled soundly), before any
long work starts, and nothing becomes a number that no method can produce.

Groups: sample budgets and machine settings of ``bench.run`` (hangs and crashes), experiment files that
are not files, checkpoints whose tensors cannot be weights (sparse, integer, bool, complex, another
precision), sidecar architectures too big to build, misspelt folder-table keys, Lipschitz constants
whose division overflows, low-precision models given to the certifiers, and result rows that no run of
the experiment (or no Monte Carlo method at its n and alpha) could have written.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from baselines import CohenRS, LipschitzMargin
from bench import run as bench_run
from bench.certify.machine import max_threads, set_threads
from bench.common.cli import UsageError, run_cli
from bench.common.config import ConfigError, load_experiment
from bench.common.env import resolve_device
from bench.common.files import sha256_file
from bench.models import checkpoints as ckpt
from bench.models.experiment_models import load_experiment_models
from bench.models.loaded import ModelSpecError, load_model
from bench.models.zoo import load_zoo
from fars import FaRSClosedForm, FaRSMonteCarlo
from smoothing.certificate import LARGEST_FINITE
from smoothing.checks import check_lipschitz
from smoothing.statistics import radius_from_counts

FIXTURES = Path(__file__).parent / "fixtures"


def _run_usage_error(argv: list[str], capsys) -> str:
    """``bench.run``'s argument parsing of ``argv``: must exit 2 with one ``error:`` line; returns stderr."""
    with pytest.raises(SystemExit) as info:
        run_cli(bench_run.parse_args, argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "error:" in line]) == 1, err
    return err


# ---------------------------------------------------------------- bench.run: budgets and machine settings


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--n", "10000000000000"], "--allow-long-run"),
    (["--num-samples", "10000000000000"], "--allow-long-run"),
    (["--n", str(2 ** 63)], "must not exceed 9223372036854775807"),
    (["--n", str(2 ** 62), "--n0", str(2 ** 62), "--allow-long-run"], "must not exceed 9223372036854775807"),
    (["--scaling-ns", "100", "100000000000"], "--scaling-ns 100,000,000,000"),
    (["--threads", "100000"], "--threads 100000 is more than"),
    (["--threads", "30000"], "--threads 30000 is more than"),
    (["--dist-timeout-hours", "inf"], "--dist-timeout-hours must be > 0 and at most 8760"),
    (["--dist-timeout-hours", "nan"], "--dist-timeout-hours must be > 0"),
    (["--config", "/dev/zero"], "is not a regular file"),
])
def test_run_refuses_hangs_and_crashes_before_sampling(argv, fragment, capsys, tmp_path):
    err = _run_usage_error([*argv, "--out", str(tmp_path / "out")], capsys)
    assert fragment in err


def test_a_long_run_is_allowed_with_its_flag(tmp_path):
    args = bench_run.parse_args(["--n", "10000000000000", "--allow-long-run", "--out", str(tmp_path)])
    assert args.monte_carlo.n == 10_000_000_000_000
    paper = bench_run.parse_args(["--n", "100000", "--out", str(tmp_path)])
    assert paper.monte_carlo.n == 100_000   # the paper's n needs no flag


def test_a_toml_n_beyond_int64_is_refused(tmp_path, capsys):
    config = tmp_path / "huge.toml"
    config.write_text("n = 100000000000000000000000\n\n[models.m]\nformat = \"fars-bench\"\ncheckpoint = \".\"\n")
    assert "must not exceed 9223372036854775807" in _run_usage_error(["--config", str(config), "--out", str(tmp_path)],
                                                             capsys)


def test_an_experiment_file_larger_than_a_config_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_experiment(big)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_experiment(tmp_path)


def test_set_threads_refuses_a_count_the_thread_pool_cannot_take():
    with pytest.raises(UsageError, match="--threads 100000: must be between 1 and"):
        set_threads(100_000)
    with pytest.raises(UsageError):
        set_threads(max_threads() + 1)
    set_threads(1)   # the tests' own setting stays valid


@pytest.mark.parametrize("name", ["meta", "cuda:99" if torch.cuda.is_available() else "cuda"])
def test_devices_that_cannot_certify_are_refused_in_one_line(name):
    with pytest.raises(SystemExit) as info:
        resolve_device(name)
    assert isinstance(info.value.code, str) and f"--device {name}" in info.value.code


# ---------------------------------------------------------------- checkpoints: tensors that cannot be weights


def _copy_zoo(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite(folder: Path, stem: str, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Change STEM.pt's tensors and record the new file's hash (a consistent but bad pair)."""
    path = folder / f"{stem}.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    meta = json.loads((folder / f"{stem}.json").read_text())
    meta["state_sha256"] = sha256_file(path)
    (folder / f"{stem}.json").write_text(json.dumps(meta))


def _head_weight(state: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in state.items() if k.endswith("weight") and v.dim() == 2)


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda w: w.to_sparse(), "is stored as sparse_coo, not as a dense tensor"),
    (lambda w: w.round().to(torch.int64), "is int64, where the model has a float32 weight"),
    (lambda w: w > 0, "is bool, where the model has a float32 weight"),
    (lambda w: w.to(torch.complex64), "is complex64, where the model has a float32 weight"),
    (lambda w: w.to(torch.float16), "is float16; this format stores float32 weights"),
    (lambda w: w.to(torch.float64), "is float64; this format stores float32 weights"),
])
def test_fars_bench_checkpoints_refuse_tensors_that_are_not_its_weights(tiny_zoo, tmp_path, change, fragment):
    folder = _copy_zoo(tiny_zoo, tmp_path / "zoo")

    def edit(state: dict[str, torch.Tensor]) -> None:
        key = _head_weight(state)
        state[key] = change(state[key])

    _rewrite(folder, "head-ce", edit)
    with pytest.raises(ckpt.CheckpointError, match="head-ce.pt") as info:
        load_zoo(folder)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.fixture
def user_module(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    import fars_user_model
    return fars_user_model


def _torch_spec(path: Path) -> dict:
    return {"name": "user", "format": "torch", "factory": "fars_user_model:build", "input_shape": [3, 8, 8],
            "checkpoint": str(path)}


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda w: w.to_sparse(), "'classifier.weight' is stored as sparse_coo"),
    (lambda w: w.round().to(torch.int32), "'classifier.weight' is int32, where the model has a float32 weight"),
    (lambda w: w.to(torch.complex128), "'classifier.weight' is complex128"),
])
def test_other_formats_refuse_tensors_that_cannot_be_weights(user_module, tmp_path, change, fragment):
    state = user_module.build().state_dict()
    state["classifier.weight"] = change(state["classifier.weight"])
    torch.save(state, tmp_path / "user.pt")
    with pytest.raises(ModelSpecError, match="key 'checkpoint'") as info:
        load_model(_torch_spec(tmp_path / "user.pt"))
    assert fragment in str(info.value)


def test_other_formats_cast_another_float_precision_and_record_it(user_module, tmp_path):
    original = user_module.build()
    torch.save({k: v.double() for k, v in original.state_dict().items()}, tmp_path / "user64.pt")
    model = load_model(_torch_spec(tmp_path / "user64.pt"))
    assert all(p.dtype == torch.float32 for p in model.network.parameters())
    cast = model.describe()["weights_cast"]
    assert cast["float64 -> float32"]["tensors"] == len(original.state_dict())
    torch.save(original.state_dict(), tmp_path / "user32.pt")
    assert "weights_cast" not in load_model(_torch_spec(tmp_path / "user32.pt")).describe()


@pytest.mark.parametrize(("key", "value"), [("dense_depth", 10 ** 7), ("embedding_dim", 10 ** 30)])
def test_sidecar_architecture_numbers_are_bounded_before_building(tiny_zoo, tmp_path, key, value):
    folder = _copy_zoo(tiny_zoo, tmp_path / "zoo")
    meta = json.loads((folder / "sll-backbone.json").read_text())
    meta["architecture"][key] = value
    (folder / "sll-backbone.json").write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match=f"'architecture.{key}' must be an integer >= 1 and <= 65536"):
        load_zoo(folder)


def test_head_num_classes_beyond_any_model_is_refused(tiny_zoo, tmp_path):
    folder = _copy_zoo(tiny_zoo, tmp_path / "zoo")
    meta = json.loads((folder / "head-ce.json").read_text())
    meta["architecture"]["num_classes"] = 10 ** 30
    (folder / "head-ce.json").write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="num_classes' must be an integer >= 1 and <= 65536"):
        load_zoo(folder)


def test_an_architecture_too_big_for_memory_is_refused_by_its_parameter_count(tiny_zoo, tmp_path):
    folder = _copy_zoo(tiny_zoo, tmp_path / "zoo")
    meta = json.loads((folder / "head-mlp.json").read_text())
    meta["architecture"].update(embedding_dim=8, hidden=65536, num_classes=65536)   # 4.3e9 parameters
    (folder / "head-mlp.json").write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="parameters, more than"):
        load_zoo(folder)


def test_a_misspelt_key_of_a_folder_table_is_an_error(tiny_zoo, tmp_path):
    (tmp_path / "e.toml").write_text(f'dataset = "fashion-mnist"\n[models.zoo]\nformat = "fars-bench"\n'
                                     f'checkpoint = "{tiny_zoo}"\nhed = "ce"\n')
    experiment = load_experiment(tmp_path / "e.toml")
    with pytest.raises(ModelSpecError, match="key 'hed': unknown key"):
        load_experiment_models(experiment.models, "fashion-mnist")


# ---------------------------------------------------------------- Lipschitz constants and low precision


def _linear_models() -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(0)
    return nn.Flatten(), nn.Linear(4, 3)


@pytest.mark.parametrize("lipschitz", [5e-324, 1e-310, sys.float_info.min / 2])
def test_a_subnormal_lipschitz_constant_is_refused(lipschitz):
    backbone, head = _linear_models()
    for make in (lambda: FaRSClosedForm(backbone, head, lipschitz=lipschitz),
                 lambda: FaRSMonteCarlo(backbone, head, sigma=0.25, lipschitz=lipschitz),
                 lambda: LipschitzMargin(nn.Sequential(backbone, head), lipschitz=lipschitz),
                 lambda: check_lipschitz(lipschitz)):
        with pytest.raises(ValueError, match="lipschitz must be at least"):
            make()


def test_a_tiny_lipschitz_constant_never_gives_an_infinite_radius():
    backbone, head = _linear_models()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1e-3, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
        head.bias.copy_(torch.tensor([1e5, 0.0, 0.0]))   # radius 1e8 in embedding space, 1e315 divided by L
    x = torch.ones(1, 1, 2, 2)
    for certifier in (FaRSClosedForm(backbone, head, lipschitz=1e-307),
                      LipschitzMargin(nn.Sequential(backbone, head), lipschitz=1e-307)):
        radius = certifier.certify(x).radius
        assert bool(torch.isfinite(radius).all()) and float(radius[0]) == pytest.approx(LARGEST_FINITE, rel=1e-10)
    certified, radius = radius_from_counts(np.array([1000]), 1000, sigma=1e300, alpha=0.001, lipschitz=1e-300)
    assert certified[0] and np.isfinite(radius[0]) and radius[0] == LARGEST_FINITE


def test_a_bf16_model_given_to_cohen_raises_the_documented_type_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).to(torch.bfloat16)
    certifier = CohenRS(model, 0.25, n0=10, n=100)
    for call in (certifier.certify, certifier.predict):
        with pytest.raises(TypeError, match="bfloat16 weights: certification runs in float32 or float64"):
            call(torch.rand(1, 1, 2, 2))
    backbone, head = _linear_models()
    with pytest.raises(TypeError, match="float16 weights"):
        FaRSMonteCarlo(backbone, head.half(), sigma=0.25).certify(torch.rand(1, 1, 2, 2))


def test_the_fp32_model_still_certifies_with_an_autocast_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    cert = CohenRS(model, 0.25, n0=10, n=100, precision="bf16").certify(torch.rand(1, 1, 2, 2))
    assert len(cert) == 1 and math.isfinite(float(cert.radius[0]))


# ---------------------------------------------------------------- result rows no run could have written

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\tmethod\tmodel\tsigma\tsamples\tseconds\tcpu_seconds\tpage_faults"
#: n = 1000, alpha = 0.001: the cut-off at sigma 0.25 is 0.25 * Phi^-1(0.001^(1/1000)) = 0.615
MANIFEST = {"runs": ["cohen|m|0.25", "fars-closed|m|-"], "image_indices": [0, 10], "images": 2,
            "monte_carlo": {"n": 1000, "alpha": 0.001}, "models": {"m": {"lipschitz": 1.0}}}


def _row(idx: int, radius: str = "0.5", method: str = "cohen", sigma: str = "0.25", label: str = "3",
         predict: str = "3", correct: str = "1") -> str:
    return "\t".join([str(idx), label, predict, radius, correct, "0:00:00.1", method, "m", sigma, "1100", "0.1", "0.1",
                      "0"])


def _run_dir(tmp_path: Path, rows: list[str], manifest: dict | list | None = None) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "certify.tsv").write_text("\n".join([HEADER, *rows]) + "\n")
    (folder / "manifest.json").write_text(json.dumps(MANIFEST if manifest is None else manifest))
    return folder


GOOD_ROWS = [_row(0), _row(10, "0.61"), _row(0, "2.5", "fars-closed", "-"), _row(10, "inf", "fars-closed", "-")]


def _report(argv: list[str], capsys) -> tuple[int, str]:
    from bench.report.__main__ import main as report_main
    try:
        status = report_main([*argv, "--format", "png"])
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    return status, capsys.readouterr().err


def test_report_keeps_only_the_runs_and_images_of_the_run(tmp_path, capsys):
    import pandas as pd
    rows = [*GOOD_ROWS, _row(20), _row(0, "0.3", "cohen", "0.5"), _row(30, "0.1", "fars-closed", "-")]
    folder = _run_dir(tmp_path, rows)
    status, err = _report([str(folder)], capsys)
    assert status == 0, err
    assert "3 row(s) of runs or images" in err
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["examples"]) == {2} and len(summary) == 2


def test_report_refuses_more_images_than_an_older_manifest_says(tmp_path, capsys):
    manifest = {k: v for k, v in MANIFEST.items() if k != "image_indices"}
    status, err = _report([str(_run_dir(tmp_path, [*GOOD_ROWS, _row(20)], manifest))], capsys)
    assert status == 2 and "has rows for 3 images, but the run certified 2" in err


@pytest.mark.parametrize(("radius", "fragment"), [("50", "radius 50 of cohen m at sigma 0.25"),
                                                  ("inf", "radius inf"), ("1e308", "radius 1e+308")])
def test_report_refuses_monte_carlo_radii_above_the_cut_off(tmp_path, capsys, radius, fragment):
    folder = _run_dir(tmp_path, [GOOD_ROWS[0], _row(10, radius), *GOOD_ROWS[2:]])
    status, err = _report([str(folder)], capsys)
    assert status == 2, err
    assert f"certify.tsv line 3: {fragment}" in err and "above 0.61" in err and len(err.splitlines()) == 1


def test_the_cut_off_uses_the_flags_and_any_n_without_them(tmp_path, capsys):
    folder = _run_dir(tmp_path, [_row(0, "0.9"), _row(10)], {"runs": ["cohen|m|0.25"], "image_indices": [0, 10]})
    assert _report([str(folder)], capsys)[0] == 0   # n unknown: 0.9 < 0.25 * 8.2
    status, err = _report([str(folder), "--n", "1000", "--alpha", "0.001"], capsys)
    assert status == 2 and "line 2: radius 0.9" in err


@pytest.mark.parametrize(("row", "fragment"), [
    ("0\t3\t3\tinf\t1\t0:00:01", "line 2: radius inf of cohen"),
    ("0\t3\t3\t1e308\t1\t0:00:01", "line 2: radius 1e+308 of cohen"),
    ("0\t3\t3\t0.7\t1\t0:00:01", "line 2: radius 0.7 of cohen"),
    ("0\t3\t3\t0.5\t2\t0:00:01", "line 2: column 'correct' is 2, not 0 or 1"),
    ("0\t2.7\t2\t0.5\t1\t0:00:01", "line 2: column 'label' is 2.7, not an integer >= 0"),
    ("1.5\t3\t3\t0.5\t1\t0:00:01", "line 2: column 'idx' is 1.5"),
    ("-4\t3\t3\t0.5\t1\t0:00:01", "line 2: column 'idx' is -4"),
    ("0\t-2\t-1\t0.0\t0\t0:00:01", "line 2: column 'label' is -2"),
])
def test_import_cohen_refuses_rows_certify_cannot_write(tmp_path, capsys, row, fragment):
    cohen = tmp_path / "noise_0.25" / "sigma_0.25"
    cohen.parent.mkdir()
    cohen.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n" + row + "\n")
    status, err = _report([str(tmp_path), "--import-cohen", str(cohen), "--n", "1000", "--alpha", "0.001"], capsys)
    assert status == 2, err
    assert fragment in err and str(cohen) in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", ["sigma_0", "sigma_0.00", "cohen_cnn_sigma0.tsv"])
def test_import_cohen_refuses_a_file_name_with_sigma_zero(tmp_path, capsys, name):
    cohen = tmp_path / name
    cohen.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.5\t1\t0:00:01\n")
    status, err = _report([str(tmp_path), "--import-cohen", str(cohen)], capsys)
    assert status == 2 and "is not a noise level" in err


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--radii", "nan"], "--radii values must be finite and >= 0, got nan"),
    (["--radii", "0.5", "-1"], "got -1.0"), (["--radii", "inf"], "got inf"),
    (["--n", "-5"], "--n must be >= 1, got -5"), (["--alpha", "2"], "--alpha must lie in (0, 1), got 2.0"),
    (["--manifest", "{dir}/absent.json"], "absent.json does not exist"),
    (["--manifest", "{dir}/list.json"], "a JSON object is expected, got a list"),
    (["--empirical", "{dir}/attack.csv"], "attack.csv: missing column(s) ['radius']"),
])
def test_report_flags_no_run_can_have_are_one_line(tmp_path, capsys, argv, fragment):
    folder = _run_dir(tmp_path, GOOD_ROWS)
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "attack.csv").write_text("model,accuracy\nm,0.5\n")
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    status, err = _report([str(folder), *argv, "--attacks"], capsys)
    assert status == 2, err
    assert fragment in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


def _cohen_run(sigma: float = 0.25, n: int = 1000):
    from bench.certify.runs import Run
    return Run("cohen", "m", sigma, CohenRS(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), sigma, n0=10, n=n,
                                            alpha=0.001))


def test_resume_drops_rows_of_other_runs_and_images(tmp_path, capsys):
    from bench.certify.results_file import merge_results
    tsv = tmp_path / "certify.tsv"
    tsv.write_text("\n".join([HEADER, _row(0), _row(10), _row(20), _row(0, sigma="0.5"), _row(0, "1", "fars-closed",
                                                                                            "-")]) + "\n")
    total = merge_results(tmp_path, tsv, [_cohen_run()], torch.tensor([0, 10]))
    assert total == 2
    assert [line.split("\t")[0] for line in tsv.read_text().splitlines()[1:]] == ["0", "10"]
    assert "dropped 3 row(s)" in capsys.readouterr().err


@pytest.mark.parametrize("radius", ["50", "inf", "nan", "0.62"])
def test_resume_refuses_a_monte_carlo_radius_above_the_cut_off(tmp_path, radius):
    from bench.certify.manifest import ResumeError
    from bench.certify.results_file import check_rows, read_lines
    tsv = tmp_path / "certify.tsv"
    tsv.write_text("\n".join([HEADER, _row(0, "0.615"), _row(10, radius)]) + "\n")
    with pytest.raises(ResumeError, match=f"certify.tsv line 3: radius '{radius}' of run cohen\\|m\\|0.25 on image 10"):
        check_rows(tsv, read_lines(tsv), [_cohen_run()])
    tsv.write_text("\n".join([HEADER, _row(0, "0.615"), _row(10, "0.5")]) + "\n")
    check_rows(tsv, read_lines(tsv), [_cohen_run()])   # 0.615 is the cut-off to 3 digits: accepted


@pytest.mark.parametrize("command", ["scaling", "art", "attack"])
def test_other_commands_refuse_a_thread_count_the_pool_cannot_take(command, capsys, tmp_path):
    from bench import art_compare, scaling
    from bench import attack as bench_attack
    main = {"scaling": scaling.main, "art": art_compare.main, "attack": bench_attack.main}[command]
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["--threads", "100000", "--out", str(tmp_path)]
                + (["--results", str(tmp_path)] if command == "attack" else []))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--threads 100000: must be between 1 and" in err and "Traceback" not in err
