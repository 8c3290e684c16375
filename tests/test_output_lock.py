"""One process at a time owns an output folder: a second run on the same --out (even with --overwrite) is
refused in one line naming the owner and loses no row; the lock of a dead process is taken over, by exactly
one of the processes that race for it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TORCH_TEARDOWN_ABORT

from bench import attack as bench_attack
from bench import run as bench_run
from bench.common.cli import run_cli
from bench.common.files import LOCK_NAME, FolderInUseError, FolderLock

REPO = Path(__file__).resolve().parents[1]
HOLDER = ("import sys; from bench.common.files import FolderLock, FolderInUseError\n"
          "lock = FolderLock(sys.argv[1], 'holder')\n"
          "try:\n    lock.acquire()\nexcept FolderInUseError:\n    print('refused', flush=True); sys.exit(0)\n"
          "print('held', flush=True); sys.stdin.read(); lock.release()\n")


def _holder(folder: Path) -> subprocess.Popen[str]:
    """A separate process that takes ``folder`` and keeps it until its stdin closes; its first line says how it went."""
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _owner(folder: Path) -> int | None:
    """The pid the lock file of ``folder`` names (None while there is none, or while it is being written)."""
    try:
        return int(json.loads((folder / LOCK_NAME).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _argv(zoo: Path, out: Path, *extra: str) -> list[str]:
    return ["--models", str(zoo), "--out", str(out), "--num-images", "2", "--methods", "fars-closed", "--heads", "ce",
            "--scaling-ns", "--no-progress", "--no-attack", "--batch-size", "16", *extra]


def test_a_second_run_on_an_owned_folder_is_refused_and_loses_no_row(tiny_zoo: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    bench_run.main(_argv(tiny_zoo, out))
    assert not (out / LOCK_NAME).exists()          # a finished run leaves no lock behind
    before = (out / "certify.tsv").read_bytes()
    holder = _holder(out)                          # the first run, still certifying
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        for extra in (["--overwrite"], []):
            with pytest.raises(SystemExit) as refused:
                run_cli(bench_run.main, _argv(tiny_zoo, out, *extra))
            assert refused.value.code == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("error: ")
            assert f"in use by pid {holder.pid} on host {socket.gethostname()} (holder" in err
            assert (out / "certify.tsv").read_bytes() == before
        with pytest.raises(SystemExit) as attacked:   # bench.attack writes into a folder it owns too
            bench_attack.main(["--results", str(out), "--no-progress"])
        assert attacked.value.code == 2 and "in use by" in capsys.readouterr().err
    finally:
        holder.communicate("", timeout=60)
    assert not (out / LOCK_NAME).exists()
    bench_run.main(_argv(tiny_zoo, out, "--overwrite"))   # the owner is gone: the folder is free again
    assert len((out / "certify.tsv").read_text().splitlines()) == 1 + 2


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holder = _holder(tmp_path)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderInUseError):
        FolderLock(tmp_path, "second").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    left = json.loads((tmp_path / LOCK_NAME).read_text())       # kill -9 leaves the file behind
    assert left["pid"] == holder.pid and left["host"] == socket.gethostname()
    with FolderLock(tmp_path, "after") as lock:
        assert lock.stale is not None and f"pid {holder.pid}" in lock.stale
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_exactly_one_of_several_processes_takes_a_stale_lock(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname(),
                                                  "command": "bench.run", "started": "earlier"}))
    holders = [_holder(tmp_path) for _ in range(4)]
    try:
        answers = sorted(h.stdout.readline().strip() for h in holders if h.stdout is not None)
    finally:
        for h in holders:
            h.communicate("", timeout=60)
    assert answers == ["held", "refused", "refused", "refused"]


def test_run_takes_over_the_lock_file_a_killed_run_left(tiny_zoo: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname(),
                                             "command": "bench.run", "started": "earlier"}))
    bench_run.main(_argv(tiny_zoo, out))
    assert "took over the lock of pid 4206649" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_torchrun_ranks_share_one_lock_and_a_second_job_is_refused(tiny_zoo: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "bench.run",
               *_argv(tiny_zoo, tmp_path)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and TORCH_TEARDOWN_ABORT in done.stderr:
        # A rank sometimes aborts inside torch's C++ teardown (std::terminate, SIGABRT) when this tiny run ends
        # in the full suite: a known open defect of the torchrun shutdown, not of the lock. One fresh retry;
        # every lock assertion below still applies to the run that finished.
        tmp_path = tmp_path / "retry"
        command = [*command[:command.index("bench.run") + 1], *_argv(tiny_zoo, tmp_path)]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]          # two ranks, one owner: rank 0 for the group
    before = (tmp_path / "certify.tsv").read_bytes()
    assert not (tmp_path / LOCK_NAME).exists()
    holder = _holder(tmp_path)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        again = subprocess.run([*command, "--overwrite"], cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=300)
    finally:
        holder.communicate("", timeout=60)
    assert again.returncode != 0 and f"in use by pid {holder.pid}" in again.stderr
    assert (tmp_path / "certify.tsv").read_bytes() == before


def test_two_runs_on_one_folder_the_second_with_overwrite_lose_no_row(tiny_zoo: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A real first run (a separate process) and a second with --overwrite started while it certifies."""
    out = tmp_path / "run"
    argv = ["--models", str(tiny_zoo), "--out", str(out), "--num-images", "4", "--methods", "cohen", "--heads", "ce",
            "--sigma", "0.25", "--n", "4000", "--n0", "10", "--scaling-ns", "--no-progress", "--no-attack",
            "--batch-size", "500"]
    first = subprocess.Popen([sys.executable, "-m", "bench.run", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        while first.poll() is None and _owner(out) != first.pid:   # until the first run owns the folder
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        with pytest.raises(SystemExit) as refused:
            run_cli(bench_run.main, [*argv, "--overwrite"])
        assert refused.value.code == 2 and f"in use by pid {first.pid}" in capsys.readouterr().err
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    rows = (out / "certify.tsv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 4      # cohen on sll+ce and on cnn-noise0.25, 4 images each: every row kept
