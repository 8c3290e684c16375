"""Test-suite settings shared by every test module."""

import pytest
import torch


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Plain `pytest` runs each benchmark body once, as a smoke test, without timing rounds;
    # `pytest --benchmark-only` (or --benchmark-enable) measures them for real.
    option = config.option
    if hasattr(option, "benchmark_disable") and not (option.benchmark_only or option.benchmark_enable):
        option.benchmark_disable = True
    # One intra-op thread: on a 2-core machine shared with other work, OpenMP's spinning threads make
    # small ops 10-1000x slower; one thread keeps the suite fast and its timing stable.
    torch.set_num_threads(1)
