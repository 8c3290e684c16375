"""Cost model (bench.cost_model), Cohen's batch-size search and speed options, constant memory at
n = 10^6, and the side-by-side with IBM ART. No timing thresholds here: the targets are checked by
the scaling run's cost table and by the benchmarks, never by unit tests."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from baselines import CohenRS
from bench.common import env
from bench.perf import cost_model as cm
from fars import BackboneConfig, Certificate, FaRSMonteCarlo, SLLBackbone
from fars.sll import SLLDense
from smoothing.noise import MAX_BLOCK_SAMPLES, Stage, block_size

FAKE = cm.Machine(device="cpu", name="fake", threads=1, matmul_flops=1e9, bandwidth=1e9, normal_rate=1e6)
TINY = BackboneConfig(image_size=28, conv_width=2, conv_inner=2, conv_depth=1, stages=2, dense_depth=1,
                      dense_inner=8, embedding_dim=8)


# --- counting ------------------------------------------------------------------------------------

def test_flops_and_bytes_of_a_tiny_mlp_are_counted_exactly():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    cost = cm.forward_cost(mlp, torch.rand(1, 4))
    # flops: 2 * 4 * 3 + 2 * 3 * 2 multiply-adds per sample, nothing per call
    assert (cost.per_sample_flops, cost.per_call_flops) == (36, 0)
    # bytes per sample: read x (4 floats), write 3, relu reads 3 writes 3, read 3 write 2 -> 18 floats
    # bytes per call: weights and biases, 12 + 3 + 6 + 2 floats
    assert (cost.per_sample_bytes, cost.per_call_bytes) == (18 * 4, 23 * 4)
    assert cost.flops(samples=10, calls=2) == 360 and cost.bytes(10, 2) == 10 * 72 + 2 * 92


def test_per_call_work_of_an_sll_layer_is_split_from_per_sample_work():
    layer = SLLDense(features=4, inner=3)
    cost = cm.forward_cost(layer, torch.rand(1, 4))
    # steady state: W W^T and the rescaling are memoised for the current weights (no per-call matmul) ...
    assert cost.per_call_flops == 0
    assert cost.per_sample_flops == 2 * 4 * 3 + 2 * 3 * 4  # W x and W^T h per sample
    # ... and the memo's check reads the weights (12 + 3 floats) and its stored copy every call
    assert cost.per_call_bytes >= 2 * (12 + 3) * 4
    with torch.no_grad():
        layer.weight.add_(1.0)                            # new weights: the first call recomputes W W^T
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        layer(torch.rand(1, 4))
    assert counter.get_total_flops() == 2 * 3 * 3 * 4 + 2 * 4 * 3 + 2 * 3 * 4


def test_convolution_flops():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    cost = cm.forward_cost(conv, torch.rand(1, 1, 4, 4))
    assert cost.per_sample_flops == 2 * (2 * 4 * 4) * (1 * 3 * 3)
    assert cost.per_call_bytes == (2 * 9 + 2) * 4        # weight and bias
    assert cost.per_sample_bytes == (16 + 32) * 4        # read the image, write 2 x 4 x 4 outputs


def test_forward_cost_restores_training_mode():
    mlp = nn.Sequential(nn.Linear(4, 3))
    mlp.train()
    cm.forward_cost(mlp, torch.rand(1, 4))
    assert mlp.training


# --- floors, phases, tables ------------------------------------------------------------------------

def test_phase_floor_is_the_roofline_plus_the_generator():
    assert cm.Phase(2e9, 1e9, 1e6).floor(FAKE) == pytest.approx(2 + 1)    # compute-bound + 1 s of normals
    assert cm.Phase(1e9, 3e9).floor(FAKE) == pytest.approx(3)             # memory-bound
    assert cm.Phase(1e9, 3e9).bound(FAKE) == "memory"
    assert cm.Phase(1, 1, 1e7).bound(FAKE) == "rng"


def fake_costs(sampler: str = "projected") -> cm.NetworkCosts:
    return cm.NetworkCosts(
        input_dim=784, embedding_dim=64, classes=10, backbone=cm.ForwardCost(1000, 100, 40, 4),
        head=cm.ForwardCost(0, 1280, 2600, 296), sampler=sampler, noise_dim=10 if sampler == "projected" else 64,
        head_first=cm.ForwardCost(0, 1280, 2600, 296), head_rest=cm.ZERO_COST, closed_head=(1280, 3000),
        factor_flops=12800)


def test_method_phases_count_samples_and_calls():
    costs = fake_costs()
    cohen = cm.method_phases("cohen", costs, n0=10, n=25, batch_size=8)  # 2 + 4 forward calls, 35 samples
    assert cohen["backbone"].flops == 6 * 1000 + 35 * 100
    assert cohen["noise"].normals == 35 * 784 and cohen["noise"].flops == 2 * 35 * 784
    assert cohen["head"].flops == 35 * 1280
    mc = cm.method_phases("fars-mc", costs, n0=10, n=25, batch_size=8)
    assert mc["backbone"].flops == 1000 + 100                              # one image, one call
    assert mc["noise"].normals == 35 * 10 and mc["noise"].flops == 2 * 35 * 10 * 10
    direct = cm.method_phases("fars-mc", fake_costs("direct"), n0=10, n=25, batch_size=8)
    assert direct["noise"].normals == 35 * 64 and direct["head"].flops == 35 * 1280
    closed = cm.method_phases("fars-closed", costs, n0=0, n=0, batch_size=1)
    assert closed["noise"].floor(FAKE) == 0 and closed["head"].flops == 1280
    with pytest.raises(ValueError):
        cm.method_phases("nope", costs, 1, 1, 1)


def scaling_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"method": "cohen", "model": "sll+ce", "n": 100_000, "samples": 100_100, "seconds": 30.0, "batch_size": 256},
        {"method": "fars-mc", "model": "sll+ce", "n": 100_000, "samples": 100_100, "seconds": 0.02,
         "batch_size": 10_000},
        {"method": "fars-closed", "model": "sll+ce", "n": 0, "samples": 0, "seconds": 0.004, "batch_size": 1},
    ])


def test_cost_table_columns_and_ratios():
    plain = cm.PlainForward(batch_size=256, per_sample=2.5e-4, single=0.0038)
    table = cm.cost_table(fake_costs(), scaling_rows(), FAKE, plain)
    for column in ("method", "n", "samples", "batch_size", "flops_backbone", "flops_head", "flops_noise", "normals",
                   "bytes", "floor_s", "bound", "seconds", "ratio_to_floor", "reference_seconds",
                   "ratio_to_reference", "matmul_gflops", "bandwidth_gbs", "mnormals_per_s"):
        assert column in table.columns, column
    assert np.allclose(table["ratio_to_floor"], table["seconds"] / table["floor_s"])
    floors = table[["floor_backbone_s", "floor_noise_s", "floor_head_s"]].sum(axis=1)
    assert np.allclose(table["floor_s"], floors)
    cohen = table[table.method == "cohen"].iloc[0]
    assert cohen["reference_seconds"] == pytest.approx(100_100 * 2.5e-4)
    assert cohen["flops_backbone"] == math.ceil(100 / 256) * 1000 + math.ceil(100_000 / 256) * 1000 + 100_100 * 100
    closed = table[table.method == "fars-closed"].iloc[0]
    assert closed["ratio_to_reference"] == pytest.approx(0.004 / 0.0038)
    assert math.isnan(table[table.method == "fars-mc"].iloc[0]["reference_seconds"])


def test_targets_are_read_at_n_1e5_and_flagged():
    plain = cm.PlainForward(batch_size=256, per_sample=2.5e-4, single=0.0038)
    table = cm.cost_table(fake_costs(), scaling_rows(), FAKE, plain)
    targets = cm.targets_table(table).set_index("target")
    assert len(targets) == 4
    speedup = targets.loc["cohen time / fars-mc time (same network, same n)"]
    assert speedup["value"] == pytest.approx(1500) and speedup["met"]
    assert targets.loc["cohen time / ((n0+n) x plain batched forward per sample)"]["met"]  # 30 / 25.025 = 1.2
    closed = targets.loc["fars-closed time / plain single-image forward"]
    assert closed["value"] == pytest.approx(0.004 / 0.0038) and closed["met"]             # 1.05 <= 1.1
    slow_closed = scaling_rows().replace({0.004: 0.005})
    assert not cm.targets_table(cm.cost_table(fake_costs(), slow_closed, FAKE, plain)).iloc[3]["met"]
    small = cm.targets_table(table[table.method != "cohen"])
    assert small.iloc[0]["met"] is None and "not timed" in small.iloc[0]["note"]
    markdown = cm.cost_markdown(table, cm.targets_table(table), FAKE, plain, fake_costs())
    assert "| method |" in markdown and "## Targets" in markdown and "MET" in markdown


def test_measure_machine_returns_positive_rates():
    machine = cm.measure_machine("cpu", matmul_size=64, copy_elements=1 << 16, normals=1 << 14, repeats=1)
    assert machine.matmul_flops > 0 and machine.bandwidth > 0 and machine.normal_rate > 0
    assert all(math.isfinite(v) for v in (machine.matmul_flops, machine.bandwidth, machine.normal_rate))
    assert machine.threads == torch.get_num_threads()


# --- scaling helpers -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_split():
    """A tiny SLL backbone and linear head, as a model with a Lipschitz split."""
    from bench.models import LoadedModel

    torch.manual_seed(0)
    backbone = SLLBackbone(TINY).eval()
    head = nn.Linear(8, 10)
    return LoadedModel(name="tiny", network=nn.Sequential(backbone, head).eval(), backbone=backbone, head=head,
                       lipschitz=1.0, input_shape=(1, 28, 28), num_classes=10, format="torch", fingerprint="tiny")


def test_best_batch_size_returns_a_candidate(tiny_split):
    from bench.certify.batch_size import best_batch_size

    network = tiny_split.network
    best, frame = best_batch_size(network, (1, 28, 28), "cpu", candidates=(4, 8, 16), repeats=1)
    assert best in (4, 8, 16)
    assert list(frame["batch_size"]) == [4, 8, 16] and (frame["samples_per_second"] > 0).all()
    best, frame = best_batch_size(network, (1, 28, 28), "cpu", candidates=(4, 8, 16), repeats=1, max_samples=5)
    assert list(frame["batch_size"]) == [4]  # candidates above the samples needed are not tried


def test_write_cost_model_writes_table_targets_and_markdown(tiny_split, tmp_path):
    from bench.data import load_embedded
    from bench.perf.n_sweep import scaling_table, write_cost_model

    images, _, indices = load_embedded(limit=1)
    scaling = scaling_table(tiny_split, images, indices, (10, 20), sigma=0.25, n0=5, alpha=0.01, batch_size=8, seed=0,
                            methods=("cohen", "fars-mc", "fars-closed"), progress=False, fars_batch_size=16)
    assert list(scaling.batch_size) == [8, 16, 8, 16, 1]
    assert set(scaling.precision) == {"fp32"} and not scaling.compiled.any()
    table, targets = write_cost_model(tiny_split, images, scaling, tmp_path, machine=FAKE, plain_repeats=1, echo=False)
    for name in ("cost_model.csv", "cost_model.md", "cost_targets.csv", "machine.json"):
        assert (tmp_path / name).is_file(), name
    assert list(zip(table.method, table.n, strict=True)) == list(zip(scaling.method, scaling.n, strict=True))
    assert (table.floor_s > 0).all() and (table.ratio_to_floor > 0).all()
    assert len(targets) == 4
    assert pd.read_csv(tmp_path / "cost_model.csv").shape[0] == len(scaling)
    # fars-closed and the single-image forward are re-timed side by side, and the markdown says so
    closed = table[table.method == "fars-closed"].iloc[0]
    assert closed.reference_seconds > 0 and closed.ratio_to_reference == closed.seconds / closed.reference_seconds
    assert "alternating blocks" in (tmp_path / "cost_model.md").read_text()
    assert json.loads((tmp_path / "machine.json").read_text())["plain_forward"]["paired"]


class CountingCertifier:
    """Records the images it certifies; every call 'takes' 2 ms."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def certify(self, x: torch.Tensor, indices: torch.Tensor):
        self.calls.append(int(indices[0]))
        return Certificate(torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.float64), 0, 0.002)


def test_paired_single_image_alternates_blocks_and_restores_the_mode():
    network = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Dropout(0.5)).train()
    certifier = CountingCertifier()
    plain, certify = cm.paired_single_image(network, certifier, torch.rand(2, 1, 2, 2), torch.tensor([7, 9]),
                                            rounds=3, calls=4)
    assert certify == 0.002 and 0 < plain < 1
    assert certifier.calls == ([7] * 5 + [9] * 5) * 3     # a warm-up call + 4 timed, per image and round
    assert network.training


# --- Cohen's speed options -----------------------------------------------------------------------

def small_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_cohen_precision_is_fp32_by_default_and_checked():
    model = small_classifier()
    assert CohenRS(model, 0.5).precision == "fp32" and not CohenRS(model, 0.5).compile
    with pytest.raises(ValueError, match="precision"):
        CohenRS(model, 0.5, precision="int8")
    x = torch.rand(3, 1, 4, 4)
    cert = CohenRS(model, 0.5, n0=20, n=200, alpha=0.01, batch_size=64, precision="bf16").certify(x)
    assert cert.radius.dtype == torch.float64 and ((cert.prediction == -1) <= (cert.radius == 0)).all()


@pytest.mark.slow
def test_compiled_cohen_gives_the_same_certificates():
    model = small_classifier()
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    kwargs = dict(n0=50, n=500, alpha=0.01, batch_size=128)
    eager = CohenRS(model, 0.5, **kwargs).certify(x)
    compiled = CohenRS(model, 0.5, **kwargs, compile=True).certify(x)
    assert torch.equal(eager.prediction, compiled.prediction) and torch.equal(eager.radius, compiled.radius)


class ConstantScores(nn.Module):
    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.register_buffer("scores", torch.tensor(scores))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


@pytest.mark.parametrize("scores, winner", [([1.0, 1.0, 0.0], 0), ([0.0, 2.0, 2.0], 1), ([-0.0, 0.0, -1.0], 0)])
def test_votes_go_to_the_first_maximal_class_like_argmax(scores, winner):
    """The vote uses max(dim).indices: ties resolve exactly as argmax does."""
    assert int(torch.tensor([scores]).argmax(dim=1)) == winner
    counts = CohenRS(ConstantScores(scores), 0.5, n0=5, n=20, batch_size=8).sample_counts(
        torch.zeros(2, 4), torch.arange(2), 20, Stage.ESTIMATION)
    assert counts[:, winner].tolist() == [20, 20]


def test_nan_scores_do_not_vote():
    """argmax counts NaN as maximal; a NaN score must stop the count instead of voting for its class."""
    from smoothing.checks import NonFiniteScoresError

    certifier = CohenRS(ConstantScores([0.0, float("nan"), float("nan")]), 0.5, n0=5, n=20, batch_size=8)
    with pytest.raises(NonFiniteScoresError):
        certifier.sample_counts(torch.zeros(2, 4), torch.arange(2), 20, Stage.ESTIMATION)
    with pytest.raises(NonFiniteScoresError):
        certifier.class_counts(torch.zeros(2, 4), torch.arange(2), 20, Stage.ESTIMATION, torch.tensor([1, 1]))


# --- memory bounded by the batch, not by n ---------------------------------------------------------

class LargestTensor(TorchDispatchMode):
    """Track the largest tensor any aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


@pytest.mark.parametrize("sampler", ["direct", "projected"])
def test_fars_mc_at_n_1e6_runs_in_memory_bounded_by_the_batch(sampler):
    """No tensor grows with n: the largest one at n = 10^6 is the same as at n = 2 noise blocks (131,072
    samples), and it is a noise block or a batch of samples, not n of them."""
    torch.manual_seed(0)
    head, d, batch = nn.Linear(8, 3), 8, 4096
    x = torch.randn(2, d)

    def largest(n: int) -> int:
        certifier = FaRSMonteCarlo(nn.Identity(), head, 0.5, n0=100, n=n, alpha=0.01, batch_size=batch,
                                   sampler=sampler, check_range=False)   # x: standard normal, not pixels
        with LargestTensor() as probe:
            cert = certifier.certify(x)
        assert len(cert) == 2
        return probe.largest

    small, large = largest(2 * MAX_BLOCK_SAMPLES), largest(1_000_000)
    assert large == small
    noise_dim = 3 if sampler == "projected" else d
    block = block_size(noise_dim)
    assert large <= max(batch, block) * max(d, noise_dim) * 4   # fp32 samples of one block or batch


# --- IBM ART side by side ------------------------------------------------------------------------

class Margin(nn.Module):
    """Two classes with score difference ``gain * (x_0 - 0.5) + offset``: P[class 0 | noise] is known."""

    def __init__(self, gain: float, offset: float) -> None:
        super().__init__()
        self.gain, self.offset = gain, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        s = self.gain * (flat[:, :1] - 0.5) + self.offset
        return torch.cat([s, torch.zeros_like(s)], dim=1)


def test_art_and_ours_agree_on_a_model_with_known_probabilities():
    pytest.importorskip("art")
    from bench.perf.peers import compare

    sigma, n = 0.5, 2000
    images = torch.full((4, 1, 2, 2), 0.5)
    images[:, 0, 0, 0] = torch.tensor([0.5, 0.6, 0.8, 0.45])
    labels, indices = torch.zeros(4, dtype=torch.int64), torch.arange(4)
    frame, summary = compare(Margin(1.0, 0.64), images, labels, indices, sigma, n0=50, n=n, alpha=0.001,
                             batch_size=500, seed=0)
    # P[class 0] = Phi((x0 - 0.5 + 0.64) / sigma): 0.90, 0.92, 0.95, 0.88; radius sd ~0.02 at n = 2000
    assert (frame.ours_prediction == 0).all() and (frame.art_prediction == 0).all()
    assert np.abs(frame.ours_radius - frame.art_radius).max() < 0.1
    assert summary["equal_predictions"] == 1.0 and summary["images"] == 4
    assert summary["ours_seconds_per_image"] > 0 and summary["art_seconds_per_image"] > 0


def test_art_and_ours_return_the_same_capped_radius_when_every_sample_agrees():
    pytest.importorskip("art")
    from bench.perf.peers import compare
    from fars import max_certifiable_radius

    images = torch.full((3, 1, 2, 2), 0.5)
    frame, summary = compare(Margin(1.0, 100.0), images, torch.zeros(3, dtype=torch.int64), torch.arange(3), 0.25,
                             n0=20, n=300, alpha=0.001, batch_size=128, seed=0, memory_format="channels_last")
    cap = max_certifiable_radius(300, 0.25, 0.001)
    assert summary["memory_format"] == "channels_last"   # ours in the layout the harness chose, recorded
    assert np.allclose(frame.ours_radius, cap) and np.allclose(frame.art_radius, cap)
    assert summary["ks_pvalue"] == 1.0 and summary["agree_in_distribution"]


def test_allocator_tuning_is_reported_on_the_machine():
    applied = env.tune_cpu_allocator()
    assert isinstance(applied, bool)
    machine = cm.measure_machine("cpu", matmul_size=32, copy_elements=1 << 12, normals=1 << 10, repeats=1)
    assert machine.allocator_tuned == (applied or env.cpu_allocator_tuned())


ALLOCATION_FAULTS = """
import resource, sys, torch
from bench.common import env
applied = env.tune_cpu_allocator()
elements = (64 << 20) // 4                      # 64 MiB: above glibc's 32 MiB cap on the mmap threshold
for _ in range(10):                             # first uses: the heap grows (faults are expected here)
    torch.empty(elements).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.empty(elements).fill_(1.0)            # freed and allocated again: the same pages, if kept
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, env.cpu_allocator().get("mmap_max"), faults)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_tuned_allocator_reuses_blocks_above_the_mmap_cap():
    """After tune_cpu_allocator a 64 MiB tensor allocated again reuses its pages: no fresh mmap, so no page
    fault per page (16,384 per 64 MiB) on every use. Run in a fresh process: the setting is process-wide.
    (The first uses grow the heap: glibc's aligned allocation leaves a small remainder between a freed block
    and the top of the heap for a few rounds.)"""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", ALLOCATION_FAULTS], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    applied, mmap_max, faults = done.stdout.split()
    assert applied == "True" and mmap_max == "0"
    assert int(faults) < 1000, f"{faults} page faults for 5 x 64 MiB allocated again"


class _CountEqual:
    """Counts the memo's comparisons of a weight with its stored copy (fars.memo.same_values)."""

    def __init__(self, monkeypatch) -> None:
        import fars.memo as memo

        self.calls = 0
        original = memo.same_values

        def counted(a, b):
            self.calls += 1
            return original(a, b)

        monkeypatch.setattr(memo, "same_values", counted)

    def __enter__(self):
        self.calls = 0
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_plain_forward_reference_runs_like_a_certify_calls_forwards(monkeypatch):
    """The plain-forward reference declares the weights fixed, as a certify call does: the memo compares
    the weights' values once (2 tensors), not on each of the 6 forwards."""
    layer = SLLDense(features=4, inner=3)
    with _CountEqual(monkeypatch) as counted:
        cm.plain_forward_seconds(layer, torch.rand(8, 4), repeats=5)
    assert counted.calls <= 2


def test_single_image_references_compare_the_weights_once_per_call_as_a_certify_call_does(monkeypatch):
    """A deterministic certify call is one forward, and compares the weights' values once: the single-image
    references time each forward as such a call (2 tensors compared per forward), not as one block of many."""
    layer = SLLDense(features=4, inner=3)
    with _CountEqual(monkeypatch) as counted:
        cm.plain_forward_seconds(layer, torch.rand(1, 4), repeats=5, per_call=True)
    assert counted.calls == 2 * 5       # each timed call (the warm-up computes the memo: nothing to compare)
