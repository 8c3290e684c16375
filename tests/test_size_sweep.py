"""The model-size sweep (bench.perf.size_sweep, python -m bench.scaling --sizes) on a tiny layout and tiny n."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pandas as pd
import pytest
import torch

from bench import scaling
from bench.common.env import REPO_ROOT
from bench.common.provenance import command_line
from bench.models.sll_format import SLLLayout
from bench.perf import cost_model as cm
from bench.perf import size_sweep as ss
from bench.perf.size_sweep import sweep

TINY = ss.SizeSpec("tiny", SLLLayout(n_conv=2, n_dense=1, width=4, conv_inner=2, dense_inner=16))
MACHINE = cm.Machine("cpu", "test machine", 1, matmul_flops=1e10, bandwidth=1e10, normal_rate=1e8)


def tiny_config(**overrides: Any) -> ss.SweepConfig:
    config = ss.SweepConfig(specs=[TINY], images=1, rounds=2, n0=10, target_n=200, fars_ns=(50, 200),
                            cohen_ns=(50, 100), cohen_direct=(), cohen_batch_size=32, fars_batch_size=64,
                            throughput_sizes=("tiny",), throughput_images=3, memory=False, progress=False)
    return dataclasses.replace(config, **overrides)


def fake_timer(power: float):
    """Seconds proportional to (n0 + n)**power for cohen (its samples) and constant for the FaRS methods."""
    def timer(certifier, images, indices, usage=None):
        cohen = certifier.name == "cohen"
        return [1e-3 * ((certifier.n0 + certifier.n) ** power if cohen else 1.0)] * len(images)
    return timer


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sizes")
    table = ss.run_size_sweep(tiny_config(), out, machine=MACHINE, timer=fake_timer(1.0))
    return table, out


def test_outputs_and_columns(linear_run) -> None:
    table, out = linear_run
    for name in ("speedup_vs_size.csv", "speedup_vs_size.png", "speedup_vs_size.pdf", "size_sweep.md",
                 "throughput.csv", "memory.csv", "manifest.json"):
        assert (out / name).is_file(), name
    csv = pd.read_csv(out / "speedup_vs_size.csv")
    for column in ("size", "parameters", "flops_per_image", "method", "n", "seconds", "source", "extrapolated",
                   "floor_s", "ratio_to_floor", "predicted_speedup", "measured_speedup", "limit"):
        assert column in csv.columns, column
    assert set(csv["method"]) == {"fars-closed", "fars-mc", "cohen"}
    text = (out / "size_sweep.md").read_text()
    assert "extrapolated" in text and ("PASS" in text or "MISS" in text)
    throughput = pd.read_csv(out / "throughput.csv")
    assert set(throughput["method"]) == {"plain-forward", "fars-closed", "fars-mc"}
    assert list(throughput["seconds_per_image"] * throughput["images_per_call"]) == pytest.approx(
        list(throughput["seconds_per_call"]))


def test_linear_times_are_extrapolated_and_labelled(linear_run) -> None:
    table, _ = linear_run
    cohen = table[(table["method"] == "cohen") & (table["n"] == 200)].iloc[0]
    assert cohen["source"] == "extrapolated" and bool(cohen["extrapolated"])
    assert cohen["seconds"] == pytest.approx(1e-3 * (10 + 200))   # n0 = 10 selection samples + n
    mc = table[(table["method"] == "fars-mc") & (table["n"] == 200)].iloc[0]
    assert mc["speedup_source"] == "extrapolated"
    assert mc["measured_speedup"] == pytest.approx(cohen["seconds"] / mc["seconds"])


def test_nonlinear_times_are_not_extrapolated(tmp_path) -> None:
    table = ss.run_size_sweep(tiny_config(throughput_sizes=()), tmp_path, machine=MACHINE, timer=fake_timer(1.5))
    cohen = table[(table["method"] == "cohen") & (table["n"] == 200)].iloc[0]
    assert cohen["source"] == "not-linear" and math.isnan(cohen["seconds"])
    assert table["measured_speedup"].isna().all()
    assert "not linear" in (tmp_path / "size_sweep.md").read_text()


def test_linearity_check() -> None:
    check = ss.linear_in_n(1000, 1.0, 10_000, 10.5, 100_000)
    assert check.linear and check.seconds == pytest.approx(10.5 + 9.5 / 9000 * 90_000)
    assert not ss.linear_in_n(1000, 1.0, 10_000, 12.0, 100_000).linear
    with_n0 = ss.linear_in_n(1000, 1100.0, 10_000, 10_100.0, 100_000, offset=100)
    assert with_n0.ratio == pytest.approx(1.0) and with_n0.ratio_n == pytest.approx(10_100 / 11_000)
    assert with_n0.seconds == pytest.approx(100_100.0)


def test_flops_come_from_the_cost_model(linear_run) -> None:
    table, _ = linear_run
    net = ss.build_network(TINY, torch.device("cpu"), 1)
    costs = cm.network_costs(net.backbone, net.head, TINY.input_shape)
    assert (table["flops_per_image"] == costs.backbone.flops(1, 1) + costs.head.flops(1, 1)).all()
    assert (table["parameters"] == sum(p.numel() for p in net.plain.parameters())).all()


def test_real_timer_and_direct_cohen(tmp_path) -> None:
    config = tiny_config(cohen_direct=("tiny",), rounds=1, throughput_sizes=())
    table = ss.run_size_sweep(config, tmp_path, machine=MACHINE)
    cohen = table[(table["method"] == "cohen") & (table["n"] == 200)].iloc[0]
    assert cohen["source"] == "measured" and cohen["seconds"] > 0


def test_memory_probe_in_a_subprocess() -> None:
    row = ss.measure_memory(TINY, "fars-mc", 100, tiny_config())
    assert row["peak_bytes"] >= 0 and "subprocess" in row["how"]


def test_a_stopped_sweep_says_which_sizes_it_lacks(tmp_path, monkeypatch) -> None:
    """The outputs are rewritten after each size; until the last, they name the sizes not timed yet."""
    seen: list[str] = []
    write = sweep.write_outputs

    def spy(out, tables, throughput, memory, notes, *args):
        seen.append(" ".join(notes))
        return write(out, tables, throughput, memory, notes, *args)

    monkeypatch.setattr(sweep, "write_outputs", spy)
    second = dataclasses.replace(TINY, name="tiny2")
    ss.run_size_sweep(tiny_config(specs=[TINY, second], throughput_sizes=()), tmp_path, machine=MACHINE,
                      timer=fake_timer(1.0))
    assert "sizes not timed yet" in seen[0] and "tiny2" in seen[0] and "not timed yet" not in seen[1]


def test_big_input_is_skipped_with_a_note(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sweep, "available_bytes", lambda device: 1 << 20)
    ss.run_size_sweep(tiny_config(), tmp_path, machine=MACHINE, timer=fake_timer(1.0))
    assert "skipped" in (tmp_path / "size_sweep.md").read_text()


def test_cli_parses_sizes(tmp_path, monkeypatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(ss, "run_size_sweep", lambda config, out, **kw: seen.update(config=config, out=out, **kw))
    out = scaling.main(["--sizes", "small", "xlarge", "--out", str(tmp_path), "--cohen-ns", "100", "1000",
                        "--no-memory", "--threads", "1"])
    assert out == tmp_path
    assert [s.name for s in seen["config"].specs] == ["small", "xlarge"] and seen["config"].cohen_ns == (100, 1000)
    # the manifest's command is the one given to main(), not sys.argv
    assert seen["manifest_extra"]["command"].startswith("python -m bench.scaling --sizes small xlarge --out ")


def test_manifest_command_has_no_machine_paths(monkeypatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(ss, "run_size_sweep", lambda config, out, **kw: seen.update(kw))
    out = REPO_ROOT / "runs" / "test-size-sweep-command"
    try:
        scaling.main(["--sizes", "small", "--out", str(out), "--no-memory", "--threads", "1"])
    finally:
        if out.is_dir():
            out.rmdir()
    command = seen["manifest_extra"]["command"]
    assert command == "python -m bench.scaling --sizes small --out runs/test-size-sweep-command --no-memory --threads 1"
    assert str(REPO_ROOT) not in command


def test_command_line_writes_flag_values_portably() -> None:
    inside = str(REPO_ROOT / "results" / "sizes")
    assert command_line("bench.scaling", [f"--out={inside}", "--sizes", "small"]) == \
        "python -m bench.scaling --out=results/sizes --sizes small"
    assert command_line("bench.scaling", ["--out", "/elsewhere/x"]) == "python -m bench.scaling --out /elsewhere/x"


def test_cli_rejects_unknown_size(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        scaling.main(["--sizes", "huge"])
    assert err.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("python -m bench.scaling: error")]
    assert len(lines) == 1 and "huge" in lines[0]


@pytest.mark.parametrize("flags", [["--rounds", "0"], ["--cohen-ns", "10", "20", "--no-memory"]])
def test_size_sweep_flags_without_sizes_are_refused(capsys, tmp_path, flags) -> None:
    """Flags of the size sweep given to the n sweep would be ignored (an n sweep would start regardless)."""
    with pytest.raises(SystemExit) as err:
        scaling.main(["--out", str(tmp_path / "x"), *flags])
    assert err.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("python -m bench.scaling: error")]
    assert len(lines) == 1 and "add --sizes" in lines[0] and flags[0] in lines[0]
    assert not (tmp_path / "x").exists()


def test_cohen_ns_are_whole_batches_of_one_size(linear_run) -> None:
    """Both n of cohen are rounded up to whole multiples of its batch size, so both run only full batches
    of that size and the ratio of their times tests linearity in n, not a change of batch size."""
    assert ss.same_batch_ns((50, 100), 32) == (64, 128)
    assert ss.same_batch_ns((1000, 1000), 256) == (1024, 1280)
    assert ss.same_batch_ns((10, 20), 256) == (256, 512)
    table, out = linear_run
    measured = table[(table["method"] == "cohen") & (table["source"] == "measured")]
    assert sorted(measured["n"]) == [64, 128]
    manifest = json.loads((out / "manifest.json").read_text())
    chosen = manifest["cohen_per_size"]["tiny"]
    assert chosen.pop("memory_format") in ("contiguous", "channels_last")
    assert chosen == {"batch_size": 32, "ns": [64, 128], "batch_search": []}


def test_two_n_on_different_batch_sizes_are_not_compared() -> None:
    """Two n that are not whole multiples of the batch size ran a short last batch: not extrapolated."""
    measured = pd.DataFrame([{"method": "cohen", "mode": "fp32", "n": n, "seconds": 1e-3 * (10 + n)}
                             for n in (50, 100)])
    row, check = ss.cohen_at_target(measured, tiny_config(cohen_ns=(50, 100)), "fp32")
    assert row["source"] == "not-comparable" and math.isnan(row["seconds"]) and check is None


def test_batch_size_is_searched_per_size(tmp_path) -> None:
    config = tiny_config(cohen_batch_size=0, cohen_batch_candidates=(8, 16), cohen_ns=(20, 40), throughput_sizes=())
    ss.run_size_sweep(config, tmp_path, machine=MACHINE, timer=fake_timer(1.0))
    chosen = json.loads((tmp_path / "manifest.json").read_text())["cohen_per_size"]["tiny"]
    assert chosen["batch_size"] in (8, 16) and [r["batch_size"] for r in chosen["batch_search"]] == [8, 16]
    assert all(n % chosen["batch_size"] == 0 for n in chosen["ns"])
    assert chosen["memory_format"] in ("contiguous", "channels_last")   # measured per size ('auto')
    table = pd.read_csv(tmp_path / "speedup_vs_size.csv")
    assert set(table.loc[table["method"] == "cohen", "batch_size"]) == {chosen["batch_size"]}


def test_cohen_runs_in_the_memory_format_the_size_resolved(monkeypatch) -> None:
    """'auto' takes the faster plain forward's memory format (here stubbed to channels_last) and cohen's
    certifier uses it; a given format is kept without a measurement; a mode row keeps its own format."""
    from bench.perf.size_sweep import builders, timing

    net = ss.build_network(TINY, torch.device("cpu"), 1)
    calls = []

    def faster(model, shape, batch, device, **kwargs):
        calls.append(batch)
        return "channels_last", {"contiguous": 2.0, "channels_last": 1.0}

    monkeypatch.setattr(timing, "best_memory_format", faster)
    resolved, _ = timing.resolve_batch(net, tiny_config(cohen_memory_format="auto"))
    assert resolved.cohen_memory_format == "channels_last" and calls == [resolved.cohen_batch_size]
    assert builders.make_certifier("cohen", net, 64, resolved).memory_format == "channels_last"
    kept, _ = timing.resolve_batch(net, tiny_config(cohen_memory_format="contiguous"))
    assert kept.cohen_memory_format == "contiguous" and len(calls) == 1
    assert builders.make_certifier("cohen", net, 64, kept, mode="channels_last").memory_format == "channels_last"


def test_fast_modes_are_rows_of_their_own(tmp_path) -> None:
    """bf16 cohen is a row beside fp32 at both n and at the target n, with its own certificate compared with
    fp32's; tf32 is not applicable on a CPU and is left out with a note."""
    config = tiny_config(cohen_modes=("tf32", "bf16"), rounds=1, throughput_sizes=())
    table = ss.run_size_sweep(config, tmp_path, machine=MACHINE)
    bf16 = table[(table["method"] == "cohen") & (table["mode"] == "bf16")]
    assert sorted(bf16["n"]) == [64, 128, 200] and "tf32" not in set(table["mode"])
    measured = bf16[bf16["source"] == "measured"]
    assert measured["same_as_fp32"].between(0, 1).all() and measured["prediction"].notna().all()
    assert (measured["speedup_of_mode"] > 0).all()
    at_target = table[(table["method"] == "cohen") & (table["n"] == 200)]
    assert set(at_target["mode"]) == {"fp32", "bf16"}
    text = (tmp_path / "size_sweep.md").read_text()
    assert "cohen bf16" in text and "tf32: not applicable on cpu" in text


def test_applicable_modes_by_device() -> None:
    assert ss.applicable_modes(["tf32", "bf16"], torch.device("cuda")) == (("tf32", "bf16"), [])
    kept, notes = ss.applicable_modes(["tf32", "bf16"], torch.device("cpu"))
    assert kept == ("bf16",) and len(notes) == 1 and "not applicable" in notes[0]
    with pytest.raises(ValueError, match="unknown cohen mode"):
        ss.applicable_modes(["fp8"], torch.device("cpu"))


def test_noisy_machine_warning_uses_cpu_time() -> None:
    row = {"size": "tiny", "method": "cohen", "mode": "fp32", "n": 64, "device": "cpu", "source": "measured",
           "seconds": 1.0, "cpu_seconds": 0.5, "cpu_share": 0.5, "page_faults_per_sample": 1.0}
    quiet = {**row, "n": 128, "cpu_seconds": 0.97, "cpu_share": 0.97}
    warnings = ss.timing_warnings(pd.DataFrame([row, quiet]), None)
    assert len(warnings) == 1 and "1 of 2" in warnings[0] and "n=64 (50%)" in warnings[0]
    assert ss.timing_warnings(pd.DataFrame([quiet]), None) == []
    faults = ss.timing_warnings(pd.DataFrame([{**quiet, "page_faults_per_sample": 500.0}]), None)
    assert len(faults) == 1 and "page faults per sample" in faults[0]


def test_timed_rows_record_cpu_time_and_page_faults(tmp_path) -> None:
    def timer(certifier, images, indices, usage=None):
        assert usage is not None
        usage += [{"cpu_seconds": 2e-3, "page_faults": 7.0}] * len(images)
        return [1e-3 * (certifier.n0 + certifier.n if certifier.name == "cohen" else 1.0)] * len(images)

    net = ss.build_network(ss.named_spec("default"), torch.device("cpu"), 1)
    measured = ss.time_size(net, tiny_config(), timer)
    assert (measured["cpu_seconds"] == 2e-3).all() and (measured["page_faults"] == 7.0).all()


def test_linearity_is_judged_on_cpu_time() -> None:
    """On a shared machine the wall time of one n can be inflated by other processes; the check uses the
    process CPU time when both n have it, and each of wall and CPU seconds is extrapolated on its own line."""
    config = tiny_config(cohen_ns=(64, 128))
    rows = [{"method": "cohen", "mode": "fp32", "n": 64, "seconds": 2e-3 * 74, "cpu_seconds": 1e-3 * 74},
            {"method": "cohen", "mode": "fp32", "n": 128, "seconds": 4e-3 * 138, "cpu_seconds": 1e-3 * 138}]
    row, check = ss.cohen_at_target(pd.DataFrame(rows), config, "fp32")
    assert check is not None and check.linear and row["source"] == "extrapolated"
    assert row["cpu_seconds"] == pytest.approx(1e-3 * 210)
    assert row["seconds"] == pytest.approx(4e-3 * 138 + (4e-3 * 138 - 2e-3 * 74) / 64 * 72)
    rows[1]["cpu_seconds"] = 2e-3 * 138   # CPU time not linear in n: nothing extrapolated
    row, check = ss.cohen_at_target(pd.DataFrame(rows), config, "fp32")
    assert row["source"] == "not-linear" and math.isnan(row["seconds"])


def test_searched_batch_size_leaves_the_certificate_unchanged() -> None:
    """The batch size the sweep searches is a speed-up only: cohen's certificate is the same at any batch size."""
    net = ss.build_network(TINY, torch.device("cpu"), 2)
    certs = []
    for batch in (16, 64):
        config = tiny_config(cohen_batch_size=batch)
        cert = ss.make_certifier("cohen", net, 128, config).certify(net.images, indices=net.indices)
        certs.append((cert.prediction.tolist(), cert.radius.tolist()))
    assert certs[0] == certs[1]


def test_n_sweep_leaves_tf32_out_on_a_cpu_with_a_note(tmp_path, monkeypatch, capsys) -> None:
    """``bench.scaling --cohen-modes tf32 bf16`` on a CPU times bf16 only and says why tf32 is not a row."""
    class Stop(Exception):
        pass

    seen: dict[str, Any] = {}

    def fake_table(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(scaling, "scaling_table", fake_table)
    with pytest.raises(Stop):
        scaling.main(["--cohen-modes", "tf32", "bf16", "--out", str(tmp_path), "--images", "1", "--device", "cpu",
                      "--cohen-batch-size", "64", "--threads", "1", "--no-progress"])
    assert seen["cohen_modes"] == ("bf16",)
    assert "cohen tf32: not applicable on cpu" in capsys.readouterr().err


def test_batch_candidates_by_device() -> None:
    """The search's candidates on a GPU are the CUDA list (checked here without a GPU), on a CPU the CPU list."""
    from bench.certify.batch_size import BATCH_CANDIDATES
    from bench.perf.size_sweep import timing

    config = tiny_config(cohen_batch_size=0)
    assert timing.batch_candidates(config, torch.device("cuda")) == BATCH_CANDIDATES["cuda"]
    assert timing.batch_candidates(config, torch.device("cpu")) == ss.settings.CPU_BATCH_CANDIDATES
    assert timing.batch_candidates(tiny_config(cohen_batch_candidates=(8,)), torch.device("cuda")) == (8,)


def test_n_sweep_manifest_names_the_modes_it_timed(tmp_path) -> None:
    """The n sweep's manifest lists the fast modes it timed as rows (and the rows are in scaling.csv)."""
    scaling.main(["--cohen-modes", "tf32", "bf16", "--out", str(tmp_path), "--images", "1", "--device", "cpu",
                  "--ns", "10", "20", "--n0", "10", "--cohen-batch-size", "16", "--threads", "1", "--no-progress",
                  "--no-cost-model"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["cohen_modes"] == ["bf16"]
    table = pd.read_csv(tmp_path / "scaling.csv")
    assert manifest["cohen_memory_format"] in ("contiguous", "channels_last")   # measured: --cohen-memory-format auto
    assert set(table.loc[table["method"] == "cohen", "memory_format"]) == {manifest["cohen_memory_format"]}
    assert manifest["cohen_mode_notes"] and "tf32" in manifest["cohen_mode_notes"][0]
    assert set(pd.read_csv(tmp_path / "scaling.csv")["mode"]) >= {"fp32", "bf16"}
