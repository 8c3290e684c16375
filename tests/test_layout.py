"""The package layout: the import graph of ``bench`` follows the pipeline and has no cycle.

Walks the source with ``ast`` (nothing is imported), resolves relative imports, and checks:

* no import cycle among the modules of ``bench``;
* the commands (``bench/run.py``, ``attack.py``, ``scaling.py``, ``art_compare.py``, ``train.py`` and
  every ``__main__.py``) are leaves: no module imports them;
* the top of ``bench`` holds the commands alone; the code they share lives in ``bench.common``, which imports
  nothing from the pipeline but the dataset registry (read by the typed experiment); ``bench.common.env``,
  ``cli``, ``cli_help``, ``files`` and ``names`` import nothing from ``bench`` at all;
* ``bench.common.methods`` (the one list of methods, read by every stage) imports only the standard library;
* no two modules of ``bench``, ``fars``, ``baselines`` and ``smoothing`` share a name (``__init__`` and
  ``__main__`` aside), so a module's name says which one it is;
* the pipeline's order: a stage never imports a later stage or a side branch
  (data -> models -> certify -> report; audit and perf may import the stages, not the reverse);
* ``fars``, ``baselines`` and ``smoothing`` never import ``bench``;
* ``bench.common.experiment`` (the typed settings of ``bench.run``, read before any stage) imports no PyTorch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"bench.run", "bench.attack", "bench.scaling", "bench.art_compare", "bench.train", "bench.sequential",
            "bench.gpu", "bench.results_index"}
#: what each part of bench may import from bench (besides itself and SHARED)
ALLOWED = {
    "bench.data": set(),
    "bench.models": {"bench.data"},
    "bench.certify": {"bench.data", "bench.models"},
    "bench.report": {"bench.certify"},
    "bench.audit": {"bench.data", "bench.models", "bench.certify", "bench.report"},
    "bench.perf": {"bench.data", "bench.models", "bench.certify", "bench.report"},
}
#: the part of bench every other part may import
SHARED = "bench.common"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` (at ``path``) imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(target: str) -> None:
        while target and target not in known:   # `from bench.data.registry import X` -> bench.data.registry
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:   # `from . import checkpoints` imports the submodule
                if f"{source}.{alias.name}" in known:
                    found.add(f"{source}.{alias.name}")
                else:
                    resolve(source)
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules("bench")
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def part(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_bench_has_no_import_cycle(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_commands_are_leaves(graph: dict[str, set[str]]) -> None:
    commands = {m for m in graph if m in COMMANDS or m.endswith(".__main__")}
    assert commands >= COMMANDS, f"missing commands: {sorted(COMMANDS - commands)}"
    offenders = {m: sorted(deps & commands) for m, deps in graph.items() if deps & commands}
    assert not offenders, f"modules importing a command-line module: {offenders}"


def test_the_top_of_bench_holds_the_commands_alone(graph: dict[str, set[str]]) -> None:
    top = {m for m in graph if m.count(".") == 1 and (ROOT / Path(*m.split("."))).with_suffix(".py").is_file()}
    assert top == COMMANDS, f"modules at the top of bench that are not commands: {sorted(top - COMMANDS)}"


#: the one import of the pipeline by shared code: the typed experiment reads the dataset registry (names,
#: the radii each dataset reports) when it is built; bench.data imports nothing else from bench
SHARED_READS = {"bench.common.experiment": {"bench.data"}}


def test_the_shared_code_imports_nothing_from_the_pipeline(graph: dict[str, set[str]]) -> None:
    def foreign(module: str, deps: set[str]) -> list[str]:
        return sorted(d for d in deps if part(d) != SHARED and part(d) not in SHARED_READS.get(module, set()))

    offenders = {m: foreign(m, deps) for m, deps in graph.items() if part(m) == SHARED and foreign(m, deps)}
    assert not offenders, offenders
    for leaf in ("env", "cli", "cli_help", "files", "names"):
        assert graph[f"{SHARED}.{leaf}"] == set(), leaf
    assert graph[f"{SHARED}.provenance"] <= {f"{SHARED}.env"}


def test_no_two_modules_share_a_name() -> None:
    seen: dict[str, list[str]] = {}
    for package in ("bench", "fars", "baselines", "smoothing"):
        for name, path in modules(package).items():
            if path.stem not in {"__init__", "__main__"}:
                seen.setdefault(path.stem, []).append(name)
    clashes = {stem: names for stem, names in seen.items() if len(names) > 1}
    assert not clashes, clashes


def test_the_method_registry_imports_only_the_standard_library(graph: dict[str, set[str]]) -> None:
    import sys

    assert graph["bench.common.methods"] == set()
    tree = ast.parse((ROOT / "bench" / "common" / "methods.py").read_text())
    top = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    top |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.level}
    assert top <= set(sys.stdlib_module_names) | {"__future__"}, top


def test_stages_import_only_earlier_stages(graph: dict[str, set[str]]) -> None:
    problems = []
    for module, deps in graph.items():
        owner = part(module)
        if owner not in ALLOWED:
            continue
        for dep in deps:
            target = part(dep)
            if target in (owner, SHARED) or dep == "bench":
                continue
            if target not in ALLOWED[owner]:
                problems.append(f"{module} imports {dep}")
    assert not problems, "imports against the pipeline's order:\n" + "\n".join(sorted(problems))


@pytest.mark.parametrize("package", ["fars", "baselines", "smoothing"])
def test_core_packages_do_not_import_the_harness(package: str) -> None:
    offenders = []
    for name, path in modules(package).items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{name} imports {t}" for t in targets if t == "bench" or t.startswith("bench.")]
    assert not offenders, offenders


def test_the_walker_sees_relative_imports() -> None:
    """The checks above are only as good as the import walk: it must resolve relative imports."""
    mods = modules("bench")
    deps = imports("bench.run", mods["bench.run"], set(mods))
    assert "bench.certify.runner" in deps and "bench.common.env" in deps


def test_the_experiment_settings_import_no_torch() -> None:
    """``bench.run --help`` and building the settings stay fast: the settings module loads no PyTorch."""
    import subprocess
    import sys

    code = "import sys, bench.common.experiment; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
