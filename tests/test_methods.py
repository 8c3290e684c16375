"""The one method registry (:mod:`bench.common.methods`): every stage's method list is derived from it."""

from __future__ import annotations

import pytest

from bench import scaling as bench_scaling
from bench.audit import soundness
from bench.certify import runs
from bench.common import experiment as bench_experiment
from bench.common import methods as registry
from bench.models import zoo
from bench.report import metrics, paper_tables, plots
from bench.report import read as results


def test_the_registry_lists_each_method_once_with_its_kind() -> None:
    names = [m.name for m in registry.REGISTRY]
    assert len(names) == len(set(names))
    assert registry.METHODS == ("cohen", "fars-mc", "fars-closed", "lipschitz-margin", "fars-crown")
    assert registry.MONTE_CARLO_METHODS == ("cohen", "fars-mc")
    assert registry.DETERMINISTIC_METHODS == ("fars-closed", "lipschitz-margin", "fars-crown")
    assert set(registry.MONTE_CARLO_METHODS) | set(registry.DETERMINISTIC_METHODS) == set(names)
    assert registry.method("fars-crown").needs == "relu-head" and registry.method("fars-crown").fars
    assert registry.methods_needing("linear-head") == ("fars-closed", "lipschitz-margin")
    with pytest.raises(ValueError, match="unknown method 'x'"):
        registry.method("x")
    with pytest.raises(ValueError, match="unknown requirements"):
        registry.methods_needing("gpu")
    with pytest.raises(ValueError, match="needs must be one of"):
        registry.Method("y", False, "gpu", False, "")


def test_every_stage_reads_its_lists_from_the_registry() -> None:
    assert runs.METHODS is registry.METHODS
    assert results.KNOWN_METHODS is registry.METHODS and results.MONTE_CARLO is registry.MONTE_CARLO_METHODS
    assert frozenset(registry.DETERMINISTIC_METHODS) == metrics.DETERMINISTIC_METHODS
    assert soundness.DETERMINISTIC_METHODS is registry.DETERMINISTIC_METHODS
    assert soundness.MONTE_CARLO_METHODS is registry.MONTE_CARLO_METHODS
    assert paper_tables.FARS_METHODS is registry.FARS_METHODS
    assert set(registry.FARS_METHODS) == {"fars-mc", "fars-closed", "fars-crown"}
    assert zoo.FARS_METHODS == registry.SPLIT_METHODS
    assert set(plots.METHOD_COLORS) == set(registry.METHODS)   # every method has its own fixed colour
    assert len(set(plots.METHOD_COLORS.values())) == len(plots.METHOD_COLORS)
    assert not set(plots.METHOD_COLORS.values()) & set(plots._EXTRA_COLORS)


def test_the_commands_offer_the_registry_methods(capsys: pytest.CaptureFixture) -> None:
    run_choices = next(a.choices for a in bench_experiment.build_parser()._actions if a.dest == "methods")
    assert tuple(run_choices) == registry.METHODS
    with pytest.raises(SystemExit) as refused:   # the timing sweep offers its registry subset only
        bench_scaling.main(["--methods", "fars-crown"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fars-crown'" in err and all(repr(m) in err for m in registry.SCALING_METHODS)
