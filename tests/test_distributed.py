"""Sharded runs (`torchrun -m bench.run`): N ranks give the same rows as one process, and resume per shard."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TORCH_TEARDOWN_ABORT

from bench import run as bench_run
from bench.certify import distributed as dist_
from bench.certify import results_file as bench_results

REPO = Path(__file__).resolve().parent.parent
# everything that decides a row; `time` and `seconds` are measurements
DETERMINED = ["idx", "label", "predict", "radius", "correct", "method", "model", "sigma", "samples"]


def run_args(zoo, out):
    # --num-samples, not --n: torchrun would read --n as an abbreviation of its own flags
    return ["--models", str(zoo), "--out", str(out), "--num-images", "5", "--num-samples", "30", "--n0", "5",
            "--sigma", "0.25", "--batch-size", "16", "--methods", "cohen", "fars-mc", "fars-closed",
            "--heads", "ce", "--scaling-ns", "--no-progress", "--no-attack"]


def torchrun(nproc, args, env_extra=None, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "bench.run", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def rows(out):
    return pd.read_csv(out / "certify.tsv", sep="\t", keep_default_na=False)[DETERMINED]


@pytest.fixture(scope="module")
def reference(tiny_zoo, tmp_path_factory):
    """The one-process run every sharded run must reproduce."""
    out = tmp_path_factory.mktemp("one-process")
    bench_run.main(run_args(tiny_zoo, out))
    frame = rows(out)
    assert len(frame) == 4 * 5  # cohen, fars-mc, fars-closed on sll+ce and cohen on cnn-noise0.25
    return frame


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_row_for_row(tiny_zoo, reference, tmp_path):
    done = torchrun(2, run_args(tiny_zoo, tmp_path))
    if done.returncode != 0 and TORCH_TEARDOWN_ABORT in done.stderr:
        # the known teardown abort (conftest): one retry in a fresh folder; every check below applies to it
        shutil.rmtree(tmp_path)
        tmp_path.mkdir()
        done = torchrun(2, run_args(tiny_zoo, tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(rows(tmp_path), reference)
    assert not (tmp_path / dist_.SHARD_DIR).exists()  # shards merged and removed
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    timing = manifest["timing"]
    assert manifest["processes"] == 2 and timing["processes"] == 2
    assert [r["rank"] for r in timing["ranks"]] == [0, 1]
    assert sum(r["rows"] for r in timing["ranks"]) == len(reference)
    assert abs(sum(r["rows"] for r in timing["ranks"][:1]) - len(reference) / 2) <= 1  # round-robin balance
    assert timing["wall_seconds"] > 0 and timing["per_example_seconds_sum"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "Run timing" in summary and "| rank |" in summary


@pytest.mark.slow
def test_a_killed_rank_loses_only_its_unfinished_example_and_resumes(tiny_zoo, reference, tmp_path):
    crashed = torchrun(2, run_args(tiny_zoo, tmp_path), {"BENCH_RUN_KILL_RANK": "1:2"})
    assert crashed.returncode != 0
    kept = bench_results.read_lines(dist_.shard_path(tmp_path, 1))
    assert len(kept) == 2  # every row written before the kill survives
    survivors = {bench_results.row_key(line)
                 for path in dist_.shard_files(tmp_path) for line in bench_results.read_lines(path)}
    resumed = torchrun(2, run_args(tiny_zoo, tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["rows_written_by_last_invocation"] == len(reference) - len(survivors)
    pd.testing.assert_frame_equal(rows(tmp_path), reference)


def test_one_process_resumes_from_shards_of_any_rank_count(tiny_zoo, reference, tmp_path):
    """Shards left by an interrupted 3-rank run (one with a half-written row) are resumed by one process."""
    source = tmp_path / "source"
    bench_run.main(run_args(tiny_zoo, source))
    out = tmp_path / "resume"
    (out / dist_.SHARD_DIR).mkdir(parents=True)
    shutil.copy(source / "manifest.json", out / "manifest.json")
    header, *lines = (source / "certify.tsv").read_text().splitlines()
    keep = lines[:9]
    for rank in range(3):
        text = "\n".join([header, *keep[rank::3]]) + "\n"
        if rank == 2:
            text += "7\t3\t3\t0.1"  # a rank killed mid-write
        dist_.shard_path(out, rank).write_text(text)
    bench_run.main(run_args(tiny_zoo, out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_written_by_last_invocation"] == len(reference) - 9
    pd.testing.assert_frame_equal(rows(out), reference)
    assert not (out / dist_.SHARD_DIR).exists()


def test_context_comes_from_torchrun_environment():
    assert dist_.context_from_env({}) == dist_.Context(0, 1, 0)
    context = dist_.context_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (context.rank, context.world_size, context.local_rank, context.distributed, context.is_main) == (
        3, 4, 1, True, False)
    with pytest.raises(SystemExit, match="inconsistent"):
        dist_.context_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(SystemExit, match="malformed"):
        dist_.context_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_round_robin_shares_partition_the_pending_work():
    pending = list(range(11))
    shares = [dist_.my_share(pending, dist_.Context(r, 3, r)) for r in range(3)]
    assert sorted(sum(shares, [])) == pending
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_merge_orders_like_one_process_and_keeps_first_duplicate():
    order = {("a", 1): 0, ("a", 2): 1, ("b", 1): 2}

    def key(line):
        return line.split(",")[0], int(line.split(",")[1])

    merged = dist_.merge_rows("h", [["h", "b,1,x"], ["a,2,y", "a,1,z", "b,1,dup"], ["c,9,w"]], order, key)
    assert merged == ["a,1,z", "a,2,y", "b,1,x", "c,9,w"]


def test_each_rank_gets_its_own_gpu_only_for_unindexed_cuda():
    context = dist_.Context(1, 2, 1)
    assert dist_.rank_device(torch.device("cpu"), context) == torch.device("cpu")
    assert dist_.rank_device(torch.device("cuda", 0), context) == torch.device("cuda", 0)


def test_torchrun_safe_alias_for_n():
    assert bench_run.parse_args(["--num-samples", "123", "--n0", "7"]).monte_carlo.n == 123


def test_unshared_output_folder_is_a_clear_error(tmp_path, monkeypatch):
    """On several nodes without a shared --out, rank 0's token is not visible to the others."""
    context = dist_.Context(1, 2, 1)
    monkeypatch.setattr(dist_, "all_gather", lambda ctx, value: ["token-of-rank-0", value])
    monkeypatch.setattr(dist_, "barrier", lambda ctx: None)
    with pytest.raises(SystemExit, match="not shared by all ranks"):
        dist_.check_shared_folder(tmp_path, context)
