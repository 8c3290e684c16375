"""A results folder is data: ``bench.attack --results`` never imports or calls a factory that its manifest leads
to; a ``torch``-format model is rebuilt only from an experiment file named on the command line, and every
command says which factory it is about to import and call before doing so."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import attack as bench_attack
from bench.certify.results_file import COLUMNS
from bench.models import __main__ as models_cli
from bench.models import load_model

FACTORY = '''
import sys
from pathlib import Path
print("IMPORTED", file=sys.stderr)
Path({marker!r}).write_text("imported")


def build():
    Path({marker!r}).write_text("called")
    raise RuntimeError("a factory that must not run")
'''


def _factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """A module ``name`` on sys.path that leaves a marker file when it is imported or its ``build`` is called."""
    marker = tmp_path / f"{name}.marker"
    (tmp_path / f"{name}.py").write_text(FACTORY.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return marker


def _experiment(tmp_path: Path, factory: str) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(f'dataset = "fashion-mnist-embedded"\n[models.user]\nformat = "torch"\nfactory = "{factory}"\n'
                    'input_shape = [1, 28, 28]\n')
    return path


def _results(tmp_path: Path, experiment: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    (results / "certify.tsv").write_text("\t".join(COLUMNS) + "\n")
    (results / "manifest.json").write_text(json.dumps({"config": {"dataset": "fashion-mnist-embedded"},
                                                       "experiment_file": str(experiment)}))
    return results


def test_attack_never_runs_a_factory_a_results_folder_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    marker = _factory_module(tmp_path, monkeypatch, "results_folder_factory")
    results = _results(tmp_path, _experiment(tmp_path, "results_folder_factory:build"))
    with pytest.raises(SystemExit) as refused:
        bench_attack.main(["--results", str(results), "--no-progress"])
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "results folder never runs code" in err[-1] and "--config" in err[-1]   # argparse: usage, then one line
    assert not marker.exists() and "results_folder_factory" not in sys.modules


def test_attack_rebuilds_a_torch_model_only_from_the_config_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    marker = _factory_module(tmp_path, monkeypatch, "named_factory")
    experiment = _experiment(tmp_path, "named_factory:build")
    results = _results(tmp_path, tmp_path / "elsewhere.toml")
    with pytest.raises(SystemExit) as failed:   # the user's own file is loaded: its factory runs (and fails here)
        bench_attack.main(["--results", str(results), "--config", str(experiment), "--no-progress"])
    assert failed.value.code == 2 and marker.read_text() == "called"
    assert "calling it with {} failed" in capsys.readouterr().err


def test_the_factory_is_named_before_it_is_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _factory_module(tmp_path, monkeypatch, "announced_factory")
    with pytest.raises(ValueError, match="failed"):
        load_model({"name": "user", "format": "torch", "factory": "announced_factory:build", "input_shape": [1, 2, 2]})
    err = capsys.readouterr().err
    announce = err.index("importing 'announced_factory' and calling 'build'")
    assert announce < err.index("IMPORTED")


def test_models_info_names_the_factory_it_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fixtures"))
    experiment = tmp_path / "experiment.toml"
    experiment.write_text('dataset = "cifar10"\n[models.user]\nformat = "torch"\nfactory = "fars_user_model:build"\n'
                          'input_shape = [3, 32, 32]\nkwargs = {side = 32, classes = 10}\n')
    assert models_cli.main(["info", "--config", str(experiment), "--images", "0", "--audit-images", "0",
                            "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "user: format \"torch\": importing 'fars_user_model' and calling 'build'" in captured.err
