"""Package layout: the method-neutral core lives in ``smoothing``, which ``fars`` and ``baselines`` import.

The old homes ``fars.certificate``, ``fars.noise`` and ``fars.smoothing`` remain as deprecated shims
that re-export the core's objects; ``smoothing`` and ``baselines`` never import ``fars``.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

import fars
import smoothing

REPO = Path(__file__).resolve().parents[1]

#: deprecated module -> the public names it offered before the move (all must still be there)
SHIMS = {
    "fars.certificate": [
        "ABSTAIN", "INDEX_MAX", "UNIT", "SMALLEST_NORMAL", "LOW_PRECISION", "Certificate", "Certifier",
        "check_positive", "check_count", "check_alpha", "module_device", "check_inputs", "check_indices",
        "flush_subnormal", "call_model", "synchronize", "timed",
    ],
    "fars.noise": [
        "BLOCK_ELEMENTS", "MAX_BLOCK_SAMPLES", "Stage", "block_size", "block_seed", "check_seed", "Segment",
        "plan_batches", "NoiseBatch", "NoiseSource",
    ],
    "fars.smoothing": [
        "MonteCarloCertifier", "lower_confidence_bound", "radius_from_counts", "max_certifiable_radius",
        "binomial_abstain", "argmax_is", "evaluating", "validate_classifier", "call_model", "BOUND_SLACK",
        "RADIUS_SLACK", "ABSTAIN", "LOW_PRECISION", "SMALLEST_NORMAL", "UNIT", "Certificate", "check_alpha",
        "check_count", "check_indices", "check_inputs", "check_positive", "timed", "NoiseBatch", "NoiseSource",
        "Stage", "check_seed",
    ],
}


@pytest.mark.parametrize("name", sorted(SHIMS))
def test_deprecated_modules_warn_and_reexport_the_core(name):
    with pytest.warns(DeprecationWarning, match=re.escape(f"{name} is deprecated")):
        # reload when some other import got there first: the warning is raised when the module body runs
        module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    assert set(SHIMS[name]) <= set(module.__all__)
    for attr in module.__all__:
        assert getattr(module, attr) is getattr(smoothing, attr), f"{name}.{attr} is not smoothing.{attr}"


def test_fars_reexports_the_core():
    for attr in ("ABSTAIN", "Certificate", "Certifier", "MonteCarloCertifier", "max_certifiable_radius"):
        assert attr in fars.__all__
        assert getattr(fars, attr) is getattr(smoothing, attr)


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of the modules that the source file ``path`` of ``package`` imports (relative
    imports resolved, plus ``importlib.import_module`` / ``__import__`` calls with a literal name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = [package, *path.relative_to(REPO / package).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[:len(parts) - node.level + (path.name == "__init__.py")]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)   # ``from fars import noise``
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def top_level(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("smoothing", {"fars", "baselines", "bench"}),
    ("baselines", {"fars", "bench"}),
])
def test_core_and_baselines_do_not_import_fars(package, forbidden):
    sources = sorted((REPO / package).rglob("*.py"))
    assert sources
    offending = {f"{path.relative_to(REPO)}: {module}" for path in sources
                 for module in imported_modules(path, package) if top_level(module) in forbidden}
    assert not offending, sorted(offending)


def test_fars_does_not_import_its_deprecated_shims():
    shims = set(SHIMS)
    offending = {f"{path.relative_to(REPO)}: {module}" for path in sorted((REPO / "fars").rglob("*.py"))
                 if f"fars.{path.stem}" not in shims
                 for module in imported_modules(path, "fars") if module in shims}
    assert not offending, sorted(offending)


def test_import_walk_resolves_relative_imports():
    # the walk itself: a relative import in the core resolves into the core, and fars/__init__ imports smoothing
    assert "smoothing.certificate" in imported_modules(REPO / "smoothing" / "statistics.py", "smoothing")
    assert "smoothing.noise" in imported_modules(REPO / "smoothing" / "__init__.py", "smoothing")
    assert "smoothing" in imported_modules(REPO / "fars" / "__init__.py", "fars")
    assert "fars.memo" in imported_modules(REPO / "fars" / "monte_carlo.py", "fars")
