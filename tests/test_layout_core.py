"""Package layout: the method-neutral core lives in ``smoothing``, which ``fars`` and ``baselines`` import;
``smoothing`` and ``baselines`` never import ``fars``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fars
import smoothing

REPO = Path(__file__).resolve().parents[1]

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


def test_import_walk_resolves_relative_imports():
    # the walk itself: a relative import in the core resolves into the core, and fars/__init__ imports smoothing
    assert "smoothing.certificate" in imported_modules(REPO / "smoothing" / "statistics.py", "smoothing")
    assert "smoothing.noise" in imported_modules(REPO / "smoothing" / "__init__.py", "smoothing")
    assert "smoothing" in imported_modules(REPO / "fars" / "__init__.py", "fars")
    assert "fars.memo" in imported_modules(REPO / "fars" / "head_smoothing.py", "fars")
