"""python -m bench.gpu: fails fast without CUDA, prints its plan, runs its steps (faked here)."""

from __future__ import annotations

import json

import pytest
import torch

from bench import gpu


def test_without_cuda_exits_2_with_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ran: list[gpu.Step] = []
    with pytest.raises(SystemExit) as err:
        gpu.main([], runner=ran.append)
    assert err.value.code == 2 and not ran
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "CUDA" in lines[0] and not captured.out


def test_dry_run_prints_every_command(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ran: list[gpu.Step] = []
    assert gpu.main(["--dry-run", "--out", str(tmp_path / "gpu")], runner=ran.append) == 0
    text = capsys.readouterr().out
    assert not ran and not (tmp_path / "gpu").exists()
    for step in gpu.plan(tmp_path / "gpu", "cuda"):
        assert step.command() in text
    assert "bench.run --preset paper" in text and "--ns 100 1000 10000 100000" in text
    assert "--sizes default small medium large xlarge" in text
    # the fast modes as rows of their own; cohen's two n of the size sweep at or above its CUDA batch size
    # (cohen's memory format is chosen by measurement in every step, not a mode of its own)
    assert "--ns 100 1000 10000 100000 --cohen-modes tf32 bf16 compiled --device" in text
    assert "--cohen-ns 4096 16384 --cohen-modes tf32 bf16 compiled" in text
    assert sum(gpu.BUDGETS.values()) <= 8 * 60


def test_quick_plan_is_about_a_minute() -> None:
    steps = gpu.plan(gpu.Path("out"), "cuda", quick=True)
    assert sum(s.budget_s for s in steps) <= 60 and all("--device" in s.argv for s in steps)


def test_steps_run_and_the_manifest_is_written(tmp_path, capsys) -> None:
    def runner(step: gpu.Step) -> None:
        step.seconds, step.returncode, step.status = 0.5, 0, "done"

    assert gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path)], runner=runner) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == ["paper", "scaling", "sizes"]
    assert manifest["gpu"]["precision"] == {"cuda_matmul_tf32": False, "cudnn_tf32": False, "cudnn_benchmark": True}
    assert "sizes done" in capsys.readouterr().out.replace("] ", " ").replace("[", "")


@pytest.mark.parametrize("quick", [False, True])
def test_size_step_parses(quick, monkeypatch, tmp_path) -> None:
    from bench import scaling
    from bench.perf import size_sweep

    seen: dict[str, object] = {}
    monkeypatch.setattr(size_sweep, "run_size_sweep", lambda config, out, **kw: seen.update(config=config))
    step = gpu.plan(tmp_path, "cpu", quick=quick)[2]
    assert step.argv[:2] == ["-m", "bench.scaling"]
    scaling.main(step.argv[2:])
    assert seen["config"].specs   # type: ignore[attr-defined]


def test_size_step_times_the_fast_modes_on_cuda_and_says_tf32_is_cpu_inapplicable(monkeypatch, tmp_path) -> None:
    """The full plan's size sweep keeps tf32, bf16 and compiled on CUDA; the same command on a CPU leaves tf32 out
    with a note (its selection logic, checked without a GPU)."""
    from bench import scaling
    from bench.perf import size_sweep

    seen: dict[str, object] = {}
    monkeypatch.setattr(size_sweep, "run_size_sweep", lambda config, out, **kw: seen.update(config=config))
    step = gpu.plan(tmp_path, "cpu")[2]
    scaling.main(step.argv[2:])
    config = seen["config"]
    assert config.cohen_modes == gpu.FAST_MODES and config.cohen_batch_size == 0   # type: ignore[attr-defined]
    assert size_sweep.applicable_modes(gpu.FAST_MODES, torch.device("cuda"))[0] == gpu.FAST_MODES
    kept, notes = size_sweep.applicable_modes(gpu.FAST_MODES, torch.device("cpu"))
    assert kept == ("bf16", "compiled") and "tf32" in notes[0]
