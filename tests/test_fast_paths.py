"""The default speed-ups of the timed paths leave every certificate unchanged, bit for bit (cohen and fars-mc,
CPU): the SLL layers' inference path (memo checked by version counters inside a certify call and bit for bit
between calls, the factor 2 in one subtraction, relu and t in place), examples of at least a batch in batches
of their own, the tuned allocator, and Cohen's memory format (channels_last changes the scores' last bits, but not the
certificates of the shipped CNNs or an SLL network at small n; ``bench.run`` picks the faster format per network).
Opt-in modes that change the rounding (tf32 on CUDA, bf16, compile) are rows of their own in the sweeps; tf32 has no
effect on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smoothing.noise as noise
from baselines import CohenRS
from fars import FaRSMonteCarlo, SLLConv2d, SLLDense, build_backbone

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=8, conv_width=4, conv_inner=4, stages=1, conv_depth=2, dense_depth=2,
             dense_inner=16, embedding_dim=8)


class PlainDense(SLLDense):
    """SLLDense as its docstring's formula, recomputed on every forward (no memo, nothing in place)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.rescaling()
        return x - 2 * F.linear(F.relu(F.linear(x, self.weight, self.bias)) * t, self.weight.T)


class PlainConv(SLLConv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        hidden = F.relu(F.conv2d(x, self.weight, self.bias, padding=pad)) * self.rescaling()[None, :, None, None]
        return x - 2 * F.conv_transpose2d(hidden, self.weight, padding=pad)


def plain_copy(module: nn.Module) -> nn.Module:
    """The same network with every SLL layer replaced by its plain-formula twin (same parameters)."""
    import copy

    twin = copy.deepcopy(module)
    for sub in twin.modules():
        kind = {SLLDense: PlainDense, SLLConv2d: PlainConv}.get(type(sub))
        if kind is not None:
            sub.__class__ = kind
    return twin


def network():
    torch.manual_seed(0)
    backbone = build_backbone(**SMALL)
    with torch.no_grad():
        for p in backbone.parameters():   # a spread of weights, so that votes are not unanimous
            p.add_(0.3 * torch.randn_like(p))
    head = nn.Linear(8, 4)
    return backbone, head


def certificates(backbone: nn.Module, head: nn.Module, images: torch.Tensor, batch_size: int):
    cohen = CohenRS(nn.Sequential(backbone, head), 0.5, n0=20, n=300, alpha=0.01, batch_size=batch_size)
    fars = FaRSMonteCarlo(backbone, head, 1.0, n0=20, n=300, alpha=0.01, batch_size=batch_size)
    return [(c.prediction.tolist(), c.radius.tolist()) for c in (cohen.certify(images), fars.certify(images))]


@pytest.mark.parametrize("batch_size", [64, 1000])
def test_sll_inference_path_leaves_certificates_unchanged(batch_size):
    """Same certificates with the layers' inference path as with the plain formula, whether examples share
    batches (n < batch size) or get batches of their own (n >= batch size)."""
    backbone, head = network()
    images = torch.rand(6, 1, 8, 8)
    got = certificates(backbone, head, images, batch_size)
    plain = plain_copy(backbone)
    assert {type(m) for m in plain.modules()} >= {PlainDense, PlainConv}
    assert got == certificates(plain, head, images, batch_size)
    assert len(set(got[0][1])) > 1, "the images should not all get the same radius"


def shared_batches(rows, num_samples, block, batch_size, start=0, stop=None):
    """The batch plan in which examples follow each other in full batches whatever their number of samples
    (an example's last samples share a batch with the next example's first ones)."""
    stop = num_samples if stop is None else stop
    batch, room = [], batch_size
    for row in range(rows):
        at = start
        while at < stop:
            b = at // block
            end, lo = min(block, stop - b * block), at - b * block
            while lo < end:
                take = min(room, end - lo)
                batch.append(noise.Segment(row, b, lo, lo + take))
                lo, room = lo + take, room - take
                if room == 0:
                    yield batch
                    batch, room = [], batch_size
            at = (b + 1) * block
    if batch:
        yield batch


def test_batches_of_their_own_leave_certificates_unchanged(monkeypatch):
    """Examples of at least a batch in batches of their own give the certificates of the shared plan."""
    backbone, head = network()
    images = torch.rand(6, 1, 8, 8)
    own = certificates(backbone, head, images, 64)
    monkeypatch.setattr(noise, "plan_batches", shared_batches)
    assert own == certificates(backbone, head, images, 64)


def test_bytewise_weight_comparison_leaves_certificates_unchanged(monkeypatch):
    """The memo's comparison of the weights between certify calls by memcmp (fars.memo.same_values) gives the
    certificates of torch.equal, call after call, and a write through .data between calls is seen by both."""
    import fars.memo as memo

    backbone, head = network()
    images = torch.rand(4, 1, 8, 8)

    def twice() -> list:
        first = certificates(backbone, head, images, 64)
        return [first, certificates(backbone, head, images, 64)]

    bytewise = twice()
    assert bytewise[0] == bytewise[1]
    monkeypatch.setattr(memo, "_MEMCMP", None)              # torch.equal on every tensor
    assert twice() == bytewise
    monkeypatch.undo()
    conv = next(m for m in backbone.modules() if isinstance(m, SLLConv2d))
    conv.weight.data.mul_(0.5)                               # no version bump: only the value comparison sees it
    changed = certificates(backbone, head, images, 64)
    plain = plain_copy(backbone)
    assert changed == certificates(plain, head, images, 64) and changed != bytewise[0]


def test_tf32_mode_is_fp32_on_a_cpu():
    backbone, head = network()
    images = torch.rand(3, 1, 8, 8)
    model = nn.Sequential(backbone, head)
    fp32 = CohenRS(model, 0.5, n0=20, n=300, alpha=0.01, batch_size=128).certify(images)
    tf32 = CohenRS(model, 0.5, n0=20, n=300, alpha=0.01, batch_size=128, precision="tf32").certify(images)
    assert torch.equal(fp32.prediction, tf32.prediction) and torch.equal(fp32.radius, tf32.radius)


def test_memory_format_is_checked():
    backbone, head = network()
    with pytest.raises(ValueError, match="memory_format"):
        CohenRS(nn.Sequential(backbone, head), 0.5, memory_format="nhwc")



def cohen_certificates(model: nn.Module, images: torch.Tensor, memory_format: str):
    cohen = CohenRS(model, 0.25, n0=20, n=200, alpha=0.01, batch_size=64, memory_format=memory_format)
    certificate = cohen.certify(images)
    return certificate.prediction.tolist(), certificate.radius.tolist()


def shipped_cnns():
    from bench.common.env import EMBEDDED_MODELS
    from bench.models import load_zoo

    return [nets[0] for _, nets in sorted(load_zoo(EMBEDDED_MODELS).cnns.items())]


@pytest.mark.parametrize("which", ["sll", "cnn"])
def test_channels_last_leaves_cohen_certificates_unchanged(which):
    torch.manual_seed(2)
    if which == "sll":
        models, images = [nn.Sequential(*network())], torch.rand(4, 1, 8, 8)
    else:
        models, images = shipped_cnns(), torch.rand(4, 1, 28, 28)
    assert models
    for model in models:
        contiguous = cohen_certificates(model, images, "contiguous")
        assert cohen_certificates(model, images, "channels_last") == contiguous
        assert any(radius > 0 for radius in contiguous[1])   # certificates, not only abstentions


class LayoutProbe(nn.Module):
    """Records the memory format of each input (for a stubbed clock that times a format by name)."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = "channels_last" if x.dim() == 4 and not x.is_contiguous() else "contiguous"
        return x.flatten(1)[:, :3]


@pytest.mark.parametrize("faster", ["contiguous", "channels_last"])
def test_best_memory_format_picks_the_faster_stubbed_timing(faster):
    from bench.certify.batch_size import best_memory_format

    probe = LayoutProbe()

    def clock(call, device):
        call()
        return 1.0 if probe.last == faster else 2.0

    best, seconds = best_memory_format(probe, (3, 4, 4), 8, "cpu", repeats=2, clock=clock)
    assert best == faster and seconds == {faster: 1.0, ({"contiguous", "channels_last"} - {faster}).pop(): 2.0}


def test_best_memory_format_is_contiguous_for_inputs_that_are_not_images():
    from bench.certify.batch_size import best_memory_format, faster_memory_format

    def clock(call, device):
        raise AssertionError("no measurement for 2-d batches")

    assert best_memory_format(nn.Linear(5, 3), (5,), 8, "cpu", clock=clock) == ("contiguous", {})
    assert faster_memory_format({"contiguous": 1.0, "channels_last": 1.0}) == "contiguous"


def test_choose_batch_sizes_sets_and_records_the_memory_format(monkeypatch):
    from bench.certify import runner
    from bench.certify.runs import Run

    model = nn.Sequential(*network())
    runs = [Run("cohen", "sll", s, CohenRS(model, s, batch_size=10)) for s in (0.25, 0.5)]
    calls = []

    def stub(net, shape, batch_size, device):
        calls.append((net, batch_size))
        return "channels_last", {"contiguous": 2.0, "channels_last": 1.0}

    monkeypatch.setattr(runner, "best_memory_format", stub)
    sizes = runner.choose_batch_sizes(runs, "32", (1, 8, 8), torch.device("cpu"), 25, progress=False)
    assert sizes == {"cohen|sll|0.25": 32, "cohen|sll|0.5": 32} and calls == [(model, 25)]   # once per network
    assert runner.memory_formats(runs) == {"cohen|sll|0.25": "channels_last", "cohen|sll|0.5": "channels_last"}
    runner.choose_batch_sizes(runs, "32", (1, 8, 8), torch.device("cpu"), 25, progress=False,
                              memory_format="contiguous")
    assert runner.memory_formats(runs) == {"cohen|sll|0.25": "contiguous", "cohen|sll|0.5": "contiguous"}
    assert len(calls) == 1   # an explicit format is not measured
    with pytest.raises(ValueError, match="memory_format"):
        runner.choose_batch_sizes(runs, "32", (1, 8, 8), torch.device("cpu"), 25, memory_format="nhwc")


def test_kept_choices_replace_the_measurements_and_only_on_the_same_device(monkeypatch):
    from bench.certify import runner
    from bench.certify.runs import Run

    model = nn.Sequential(*network())
    runs = [Run("cohen", "sll", s, CohenRS(model, s, batch_size=10)) for s in (0.25, 0.5)]

    def no_measurement(*a, **k):
        raise AssertionError("kept choices are not measured again")

    monkeypatch.setattr(runner, "best_memory_format", no_measurement)
    monkeypatch.setattr(runner, "best_batch_size", no_measurement)
    kept = runner.Tuning({"cohen|sll|0.25": 48, "cohen|sll|0.5": 64},
                         {"cohen|sll|0.25": "channels_last", "cohen|sll|0.5": "contiguous"})
    sizes = runner.choose_batch_sizes(runs, "auto", (1, 8, 8), torch.device("cpu"), 25, progress=False, kept=kept)
    assert sizes == kept.batch_sizes and runner.memory_formats(runs) == kept.memory_formats
    assert runner.Tuning.of(runs, sizes) == kept
    manifest = {"device": "cpu", "batch_sizes": {"cohen|sll|0.25": 48, "bad": "x"},
                "memory_formats": {"cohen|sll|0.25": "channels_last", "odd": "nhwc"}}
    assert runner.kept_tuning(manifest, torch.device("cpu")) == runner.Tuning({"cohen|sll|0.25": 48},
                                                                              {"cohen|sll|0.25": "channels_last"})
    assert runner.kept_tuning(manifest, torch.device("meta")) is None   # measured on another device
    assert runner.kept_tuning(None, torch.device("cpu")) is None
    assert runner.kept_tuning({"device": "cpu"}, torch.device("cpu")) is None


CERTIFY_IN_A_PROCESS = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from bench.common import env
if sys.argv[1] == "tuned":
    assert env.tune_cpu_allocator()
from test_fast_paths import certificates, network
torch.set_num_threads(1)
torch.manual_seed(1)
images = torch.rand(3, 1, 8, 8)
print(json.dumps(certificates(*network(), images, 256)))
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_tuned_allocator_leaves_certificates_unchanged():
    script = CERTIFY_IN_A_PROCESS.format(tests=str(REPO / "tests"))
    runs = [subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                           cwd=REPO).stdout for mode in ("tuned", "default")]
    assert json.loads(runs[0]) == json.loads(runs[1])
