"""User mistakes give one clear line and a non-zero exit, never a raw traceback.

Each row of :data:`CLI_CASES` runs a command in-process through :func:`bench.common.cli.run_cli` (as its
``__main__`` does) and checks the exit status and a fragment of what it printed on stderr; each row of
:data:`LIBRARY_CASES` calls the library and checks the exception type and message. A few commands run
as real processes to show that nothing but the one line reaches stderr.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bench import art_compare, attack, scaling, train
from bench.common.cli import (
    INTERRUPTED_MESSAGE,
    TRACEBACK_ENV,
    UsageError,
    checked,
    describe,
    is_user_error,
    run_cli,
    writable_dir,
)
from bench.common.env import EMBEDDED_MODELS, REPO_ROOT

COMMANDS = {"train": train.main, "scaling": scaling.main, "art": art_compare.main, "attack": attack.main}


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A scratch folder with: a file, an empty folder, a corrupted copy of the shipped models per case."""
    root = tmp_path_factory.mktemp("cli")
    (root / "a-file").write_text("x")
    (root / "empty").mkdir()
    (root / "no-manifest").mkdir()
    (root / "no-manifest" / "certify.tsv").write_text("")
    (root / "bad-manifest").mkdir()
    (root / "bad-manifest" / "certify.tsv").write_text("")
    (root / "bad-manifest" / "manifest.json").write_text("{ not json")
    (root / "run").mkdir()
    (root / "run" / "certify.tsv").write_text("")
    (root / "run" / "manifest.json").write_text(json.dumps({"config": {}, "models_dir": str(EMBEDDED_MODELS)}))
    for name, corrupt in MODEL_CORRUPTIONS.items():
        folder = root / "models" / name
        folder.mkdir(parents=True)
        for stem in ("sll-backbone", "head-ce"):
            for suffix in (".pt", ".json"):
                shutil.copy(EMBEDDED_MODELS / f"{stem}{suffix}", folder / f"{stem}{suffix}")
        corrupt(folder)
    return root


def _edit(folder: Path, stem: str, edit: Callable[[dict], None]) -> None:
    path = folder / f"{stem}.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _state(folder: Path, stem: str, write: Callable[[Path], None]) -> None:
    """Replace STEM.pt and record its hash (a consistent but bad pair, not a mere hash mismatch)."""
    from bench.common.files import sha256_file

    write(folder / f"{stem}.pt")
    _edit(folder, stem, lambda m: m.update(state_sha256=sha256_file(folder / f"{stem}.pt")))


def _nan_weight(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["weight"][0, 0] = math.nan
    torch.save(state, path)


MODEL_CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "nan-audit": lambda d: _edit(d, "sll-backbone", lambda m: m["lipschitz"].update(audited_lower_bound=math.nan)),
    "text-declared": lambda d: _edit(d, "sll-backbone", lambda m: m["lipschitz"].update(declared="one")),
    "image-size": lambda d: _edit(d, "sll-backbone", lambda m: m["architecture"].update(image_size=30)),
    "empty-pt": lambda d: _state(d, "head-ce", lambda p: p.write_bytes(b"")),
    "list-pt": lambda d: _state(d, "head-ce", lambda p: torch.save([1, 2], p)),
    "nan-head": lambda d: _state(d, "head-ce", _nan_weight),
    "bad-json": lambda d: (d / "head-ce.json").write_text('{"format": 1,'),
}

#: (command, argv with {root} for the scratch folder, exit status, fragment of stderr) (see the module docstring
#: of bench/common/cli.py for the rule)
CLI_CASES = [
    ("train", ["--dataset", "imagefolder"], 2, "--dataset imagefolder needs --data-root"),
    ("train", ["--dataset", "imagefolder", "--data-root", "{root}/empty", "--out", "{root}/o"], 1,
     "error: imagefolder: no class folders found"),
    ("train", ["--data-root", "{root}/missing"], 2, "--data-root {root}/missing does not exist"),
    ("train", ["--data-root", "{root}/a-file"], 2, "is a file, not a folder"),
    ("train", ["--out", "{root}/a-file"], 2, "--out {root}/a-file is a file, not a folder"),
    ("train", ["--out", "/proc"], 2, "--out /proc: cannot write there"),
    ("train", ["--out", str(EMBEDDED_MODELS)], 2, "add --overwrite-shipped"),
    ("train", ["--device", "foo", "--out", "{root}/o"], 2, "--device foo: not a device name"),
    ("train", ["--dataset", "nope"], 2, "unknown dataset 'nope'"),
    ("train", ["--backbone-epochs", "x"], 2, "invalid int value: 'x'"),
    ("scaling", ["--sigma", "nan"], 2, "--sigma must be a finite number > 0, got nan"),
    ("scaling", ["--sigma", "inf"], 2, "--sigma must be a finite number > 0, got inf"),
    ("scaling", ["--sigma", "-0.25"], 2, "--sigma must be a finite number > 0"),
    ("scaling", ["--batch-size", "ten"], 2, "argument --batch-size: invalid int value: 'ten'"),
    ("scaling", ["--out", "{root}/a-file"], 2, "--out {root}/a-file is a file, not a folder"),
    ("scaling", ["--out", "/proc/sys/fars"], 2, "--out /proc/sys/fars: cannot create the folder"),
    ("scaling", ["--device", "foo", "--out", "{root}/o"], 2, "not a device name"),
    ("scaling", ["--models", "{root}/missing", "--out", "{root}/o"], 1, "error: no sll-backbone checkpoint in"),
    ("scaling", ["--models", "{root}/models/nan-audit", "--out", "{root}/o"], 1,
     "'lipschitz.audited_lower_bound' must be a finite number >= 0, got nan"),
    ("scaling", ["--models", "{root}/models/text-declared", "--out", "{root}/o"], 1,
     "'lipschitz.declared' must be a finite number > 0, got 'one'"),
    ("scaling", ["--models", "{root}/models/image-size", "--out", "{root}/o"], 1,
     "say 1x30x30 inputs, but its dataset 'fashion-mnist' has 1x28x28 images"),
    ("scaling", ["--models", "{root}/models/empty-pt", "--out", "{root}/o"], 1,
     "is not a state dict saved by torch.save"),
    ("scaling", ["--models", "{root}/models/list-pt", "--out", "{root}/o"], 1, "must hold a non-empty dict of tensors"),
    ("scaling", ["--models", "{root}/models/nan-head", "--out", "{root}/o"], 1, "tensor 'weight' holds NaN or inf"),
    ("scaling", ["--models", "{root}/models/bad-json", "--out", "{root}/o"], 1, "head-ce.json is not valid JSON"),
    ("art", ["--batch-size", "ten"], 2, "--batch-size must be an integer >= 1 or 'auto'"),
    ("art", ["--sigma", "nan"], 2, "--sigma must be a finite number > 0"),
    ("art", ["--out", "{root}/a-file"], 2, "is a file, not a folder"),
    ("attack", ["--results", "{root}/empty"], 2, "no certify.tsv in"),
    ("attack", ["--results", "{root}/no-manifest"], 2, "no manifest.json in"),
    ("attack", ["--results", "{root}/bad-manifest"], 2, "manifest.json is not valid JSON"),
    ("attack", ["--results", "{root}/run", "--out", "{root}/a-file"], 2, "is a file, not a folder"),
    ("attack", ["--results", "{root}/run", "--device", "foo"], 2, "not a device name"),
    ("attack", ["--results", "{root}/run", "--steps", "0"], 2, "--steps must be >= 1"),
]


@pytest.mark.parametrize(("command", "argv", "status", "fragment"), CLI_CASES,
                         ids=[f"{c[0]} {' '.join(c[1])}"[:70] for c in CLI_CASES])
def test_a_user_mistake_is_one_clear_line(place, capsys, command, argv, status, fragment):
    argv = [a.replace("{root}", str(place)) for a in argv]
    with pytest.raises(SystemExit) as info:
        run_cli(COMMANDS[command], argv)
    err = capsys.readouterr().err
    assert info.value.code == status, err
    assert fragment.replace("{root}", str(place)) in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


def _two_layer() -> tuple[torch.nn.Module, torch.nn.Linear]:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), torch.nn.Linear(3, 2)


def _closed_form(x: torch.Tensor, on_meta: bool = False) -> object:
    from fars import FaRSClosedForm

    backbone, head = _two_layer()
    if on_meta:
        backbone.to("meta")
        head.to("meta")
    return FaRSClosedForm(backbone, head).certify(x)


def _margin(x: torch.Tensor, on_meta: bool = False) -> object:
    from baselines import LipschitzMargin

    model = torch.nn.Sequential(*_two_layer())
    if on_meta:
        model.to("meta")
    return LipschitzMargin(model).certify(x)


#: (call, exception type or None for a result, message fragment)
LIBRARY_CASES = [
    (lambda: _closed_form(torch.rand(2, 4, dtype=torch.float64)), None, ""),
    (lambda: _margin(torch.rand(2, 4, dtype=torch.float64)), None, ""),
    (lambda: _closed_form(torch.rand(2, 4).to("meta")), ValueError, "inputs are on the 'meta' device"),
    (lambda: _margin(torch.rand(2, 4).to("meta")), ValueError, "inputs are on the 'meta' device"),
    (lambda: _closed_form(torch.rand(2, 4), on_meta=True), ValueError, "parameters are on the 'meta' device"),
    (lambda: _margin(torch.rand(2, 4), on_meta=True), ValueError, "parameters are on the 'meta' device"),
    (lambda: _closed_form(torch.rand(2, 4, dtype=torch.float16)), TypeError, "float32 or float64"),
]


@pytest.mark.parametrize(("call", "error", "fragment"), LIBRARY_CASES, ids=[str(i) for i in range(len(LIBRARY_CASES))])
def test_library_inputs_give_a_result_or_a_clear_exception(call, error, fragment):
    if error is None:
        cert = call()
        assert cert.radius.shape == (2,)
        return
    with pytest.raises(error, match=fragment):
        call()


# --- the rule of bench.common.cli ---------------------------------------------------------------------------


def _raises(exc: BaseException) -> Callable[[list[str] | None], int]:
    def main(argv: list[str] | None = None) -> int:
        raise exc
    return main


def test_ctrl_c_says_how_to_resume_and_exits_130(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(_raises(KeyboardInterrupt()), [])
    assert info.value.code == 130
    assert capsys.readouterr().err.strip() == INTERRUPTED_MESSAGE


def test_bugs_keep_their_traceback_and_the_environment_variable_shows_every_one(monkeypatch):
    with pytest.raises(RuntimeError):
        run_cli(_raises(RuntimeError("a bug")), [])
    with pytest.raises(AssertionError):
        run_cli(_raises(AssertionError()), [])
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(ValueError):
        run_cli(_raises(ValueError("bad input")), [])
    with pytest.raises(KeyboardInterrupt):
        run_cli(_raises(KeyboardInterrupt()), [])


def test_what_counts_as_a_user_error():
    from bench.data import DatasetUnavailableError, EmbeddedDataError
    from bench.models import CheckpointError
    from smoothing.checks import NonFiniteScoresError

    for err in (CheckpointError("x"), DatasetUnavailableError("x"), EmbeddedDataError("x"), NonFiniteScoresError("x"),
                json.JSONDecodeError("x", "doc", 0), FileNotFoundError(2, "No such file or directory", "f"),
                PermissionError(13, "Permission denied", "f"), IsADirectoryError(21, "Is a directory", "d"),
                EOFError(), TypeError("x")):
        assert is_user_error(err), err
    for err in (RuntimeError("x"), AssertionError(), KeyError("x"), ZeroDivisionError()):
        assert not is_user_error(err), err
    assert describe(FileNotFoundError(2, "No such file or directory", "/x")) == "No such file or directory: /x"
    assert describe(ValueError("two\nlines")) == "two lines"


def test_return_values_and_usage_errors_pass_through(capsys, tmp_path):
    assert run_cli(lambda argv: 3, []) == 3
    with pytest.raises(SystemExit) as info:
        run_cli(_raises(UsageError("--x must be > 0")), [])
    assert info.value.code == 2 and capsys.readouterr().err == "error: --x must be > 0\n"
    import argparse

    parser = argparse.ArgumentParser(prog="p")
    with pytest.raises(SystemExit) as info:
        checked(parser, lambda: (_ for _ in ()).throw(SystemExit("--device foo: bad")))
    assert info.value.code == 2 and "p: error: --device foo: bad" in capsys.readouterr().err
    assert writable_dir(tmp_path / "new" / "dir").is_dir()


def _subprocess(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TRACEBACK_ENV, None)
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_commands_print_one_line_and_no_traceback_as_processes(place):
    usage = _subprocess(["bench.scaling", "--sigma", "nan"])
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert usage.stderr.strip().splitlines()[-1].endswith("--sigma must be a finite number > 0, got nan")
    model = _subprocess(["bench.scaling", "--models", str(place / "models" / "nan-head"), "--out", str(place / "o")])
    assert model.returncode == 1 and "Traceback" not in model.stderr
    assert model.stderr.strip().startswith("error: ") and len(model.stderr.strip().splitlines()) == 1
    assert "tensor 'weight' holds NaN or inf" in model.stderr
