"""python -m bench.perf.cohen_overhead: its experiment file, its batches and its flags (the timing itself is a
measurement, run by hand: docs/performance.md)."""

from __future__ import annotations

import pytest

from bench.common.config import load_experiment
from bench.data.cifar import load_cifar
from bench.perf import cohen_overhead as co


def test_the_plain_loop_runs_the_batches_of_one_certify_call():
    assert co.batch_sizes(100, 1000, 256) == [100, 256, 256, 256, 232]
    assert co.batch_sizes(100, 1000, 2048) == [100, 1000]
    assert co.batch_sizes(10, 50, 16) == [10, 16, 16, 16, 2]


def test_the_experiment_file_names_a_torch_model_of_the_size_sweep(tmp_path):
    path = co.experiment_file(tmp_path, "small", 3, images=2, n0=20, n=200, sigma=0.5)
    experiment = load_experiment(path)
    settings = experiment.settings
    assert settings["methods"] == ["cohen"] and settings["n"] == 200 and settings["n0"] == 20
    assert settings["sigma"] == [0.5] and settings["num_images"] == 2
    (table,) = experiment.models
    assert table.spec["format"] == "torch" and table.spec["factory"] == "bench.perf.cohen_overhead:sll_network"
    assert table.spec["kwargs"] == {"size": "small", "seed": 3}
    assert len(load_cifar("cifar10", "test", tmp_path / "data", download=False)) == 2


@pytest.mark.parametrize(("flag", "value", "fragment"), [("--images", "0", "--images must be >= 1"),
                                                         ("--sigma", "nan", "--sigma must be a finite number"),
                                                         ("--batch-size", "big", "--batch-size must be 'auto'")])
def test_bad_flags_exit_2_with_one_line(capsys, flag, value, fragment):
    with pytest.raises(SystemExit) as stopped:
        co.main([flag, value])
    assert stopped.value.code == 2
    assert fragment in capsys.readouterr().err
