"""Commands write into the package's shipped files only behind an explicit flag, whatever path leads there:
the check compares real folders (device and inode), so a symbolic link (or a bind mount) is seen through."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_datasets import make_mnist_like

from bench.common.env import EMBEDDED_MODELS
from bench.common.files import is_within
from bench.data import __main__ as data_cli
from bench.train import parse_args


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for bench/embedded (so that no test can damage the real files), with its subset file."""
    folder = tmp_path / "package" / "embedded"
    folder.mkdir(parents=True)
    (folder / "fashion_mnist_eval.npz").write_bytes(b"shipped")
    (folder / "fashion_mnist_eval.json").write_text("{}")
    monkeypatch.setattr(data_cli, "EMBEDDED_DIR", folder, raising=False)
    monkeypatch.setattr(data_cli, "EMBEDDED_PATH", folder / "fashion_mnist_eval.npz")
    return folder


@pytest.mark.parametrize("spelling", ["default", "direct", "symlink", "symlink-dotdot"])
def test_build_embedded_refuses_the_shipped_folder_without_the_flag(tmp_path: Path, shipped: Path, spelling: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "src"
    make_mnist_like(source, n_test=20)
    link = tmp_path / "elsewhere"
    link.symlink_to(shipped)
    (tmp_path / "dir").mkdir()
    out = {"default": [], "direct": ["--out", str(shipped / "fashion_mnist_eval.npz")],
           "symlink": ["--out", str(link / "fashion_mnist_eval.npz")],
           "symlink-dotdot": ["--out", str(tmp_path / "dir" / ".." / "elsewhere" / "fashion_mnist_eval.npz")]}[spelling]
    argv = ["build-embedded", "--source-dir", str(source), "--per-class", "2", *out]
    with pytest.raises(SystemExit) as refused:
        data_cli.main(argv)
    assert refused.value.code == 2 and "--overwrite-shipped" in capsys.readouterr().err
    assert (shipped / "fashion_mnist_eval.npz").read_bytes() == b"shipped"
    assert (shipped / "fashion_mnist_eval.json").read_text() == "{}"
    assert data_cli.main([*argv, "--overwrite-shipped"]) == 0   # the flag says so: replaced
    assert (shipped / "fashion_mnist_eval.npz").read_bytes() != b"shipped"


def test_build_embedded_writes_elsewhere_without_the_flag(tmp_path: Path, shipped: Path) -> None:
    source = tmp_path / "src"
    make_mnist_like(source, n_test=20)
    out = tmp_path / "mine" / "subset.npz"
    out.parent.mkdir()
    assert data_cli.main(["build-embedded", "--source-dir", str(source), "--per-class", "2", "--out", str(out)]) == 0
    assert out.is_file() and (shipped / "fashion_mnist_eval.npz").read_bytes() == b"shipped"


@pytest.mark.parametrize("below", ["", "sub", "sub/deeper"])
def test_train_refuses_the_shipped_models_through_a_symlink(tmp_path: Path, below: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "models-link"
    link.symlink_to(EMBEDDED_MODELS)
    parent_link = tmp_path / "package-link"
    parent_link.symlink_to(EMBEDDED_MODELS.parent)
    for out in (link / below, parent_link / "models" / below, EMBEDDED_MODELS / below):
        with pytest.raises(SystemExit) as refused:
            parse_args(["--out", str(out), "--data-root", str(tmp_path)])
        assert refused.value.code == 2 and "--overwrite-shipped" in capsys.readouterr().err
        assert not (EMBEDDED_MODELS / "sub").exists()


def test_is_within_compares_real_folders(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (tmp_path / "link").symlink_to(folder)
    assert is_within(folder, folder) and is_within(folder / "not" / "yet", folder)
    assert is_within(tmp_path / "link" / "x", folder) and is_within(tmp_path / "a" / "c" / ".." / "b", folder)
    assert not is_within(tmp_path / "a", folder) and not is_within(tmp_path / "ab", folder)
    assert not is_within(folder, tmp_path / "missing")


def _can_bind_mount(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    (tmp_path / "probe-a").mkdir()
    (tmp_path / "probe-b").mkdir()
    done = subprocess.run(["unshare", "-rm", "mount", "--bind", str(tmp_path / "probe-a"), str(tmp_path / "probe-b")],
                          capture_output=True, timeout=60)
    return done.returncode == 0


def test_train_refuses_the_shipped_models_through_a_bind_mount(tmp_path: Path) -> None:
    """The shipped folder bind-mounted elsewhere (in a private mount namespace): same device and inode."""
    if not _can_bind_mount(tmp_path):
        pytest.skip("no unprivileged mount namespace here (unshare -rm)")
    mount = tmp_path / "mounted"
    mount.mkdir()
    script = (f'mount --bind "{EMBEDDED_MODELS}" "{mount}" && exec "{sys.executable}" -m bench.train '
              f'--out "{mount / "sub"}" --data-root "{tmp_path}"')
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2, done.stderr
    assert "--overwrite-shipped" in done.stderr.splitlines()[-1]
    assert not (EMBEDDED_MODELS / "sub").exists()
