"""Reproducibility of the Monte Carlo certificates: an example's noise depends on (seed, stage, index,
block) only, never on the batch size, the batch composition, the order, the global RNG or the process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from baselines import CohenRS
from fars import FaRSMonteCarlo
from smoothing.noise import BLOCK_ELEMENTS, MAX_BLOCK_SAMPLES, NoiseSource, Stage, block_seed, block_size, plan_batches

D, K = 5, 3


def head(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, K))


def narrow_head(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(D, K)


def examples(count: int = 6) -> torch.Tensor:
    return torch.randn(count, D, generator=torch.Generator().manual_seed(0)) * 0.7


# n spans two noise blocks (MAX_BLOCK_SAMPLES = 65536 samples each for D = 5), so batches cut across block borders.
N0, N = 30, MAX_BLOCK_SAMPLES + 100


def certifier(kind: str, batch_size: int, seed: int = 0):
    # the examples are standard normal vectors, not [0, 1] pixels: the range check is off
    if kind == "cohen":
        return CohenRS(head(), sigma=0.5, n0=N0, n=N, alpha=0.01, batch_size=batch_size, seed=seed, check_range=False)
    if kind == "fars":
        return FaRSMonteCarlo(nn.Identity(), head(), sigma=0.5, n0=N0, n=N, alpha=0.01, batch_size=batch_size,
                              seed=seed, check_range=False)
    return FaRSMonteCarlo(nn.Identity(), narrow_head(), sigma=0.5, n0=N0, n=N, alpha=0.01, batch_size=batch_size,
                          seed=seed, sampler="projected", check_range=False)


KINDS = ["cohen", "fars", "fars-projected"]


def same(a, b) -> bool:
    return torch.equal(a.prediction, b.prediction) and torch.equal(a.radius, b.radius)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_size_does_not_matter(kind):
    x = examples()
    certs = [certifier(kind, bs).certify(x) for bs in (7, 64, 1000, 50_000)]
    for other in certs[1:]:
        assert same(certs[0], other)
    # The radii vary across examples (the test is about more than "everything at the cap").
    assert len(set(certs[0].radius.tolist())) > 2


@pytest.mark.parametrize("kind", KINDS)
def test_batching_and_order_do_not_matter(kind):
    x = examples()
    idx = torch.tensor([3, 10, 11, 42, 7, 1000])
    c = certifier(kind, 500)
    together = c.certify(x, indices=idx)
    alone = [c.certify(x[i:i + 1], indices=idx[i:i + 1]) for i in range(len(x))]
    assert torch.equal(together.prediction, torch.cat([a.prediction for a in alone]))
    assert torch.equal(together.radius, torch.cat([a.radius for a in alone]))
    reverse = c.certify(x.flip(0), indices=idx.flip(0))
    assert torch.equal(reverse.prediction.flip(0), together.prediction)
    assert torch.equal(reverse.radius.flip(0), together.radius)
    # Pairs of examples, in a shuffled order.
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    shuffled = c.certify(x[perm], indices=idx[perm])
    assert torch.equal(shuffled.radius, together.radius[perm])
    # PREDICT too.
    p_all = c.predict(x, indices=idx)
    p_rev = c.predict(x.flip(0), indices=idx.flip(0))
    assert torch.equal(p_rev.prediction.flip(0), p_all.prediction)


@pytest.mark.parametrize("kind", KINDS)
def test_seed_and_index_change_the_noise(kind):
    x = examples()
    a = certifier(kind, 50_000, seed=0).certify(x)
    b = certifier(kind, 50_000, seed=1).certify(x)
    assert not torch.equal(a.radius, b.radius)
    # Same input under another index: other noise, hence (almost surely) other counts.
    c = certifier(kind, 50_000, seed=0).certify(x, indices=torch.arange(100, 106))
    assert not torch.equal(a.radius, c.radius)
    # Same seed and index: identical (a fresh certifier object).
    assert same(a, certifier(kind, 50_000, seed=0).certify(x))


def test_global_rng_neither_used_nor_disturbed():
    x = examples()
    c = certifier("cohen", 1000)
    torch.manual_seed(0)
    a = c.certify(x)
    state = torch.get_rng_state()
    torch.manual_seed(12345)
    np.random.seed(7)
    b = c.certify(x)
    assert same(a, b)
    torch.manual_seed(0)
    c.certify(x)
    assert torch.equal(torch.get_rng_state(), state), "certify must not draw from the global generator"


def test_same_certificates_in_another_process():
    x = examples(3)
    local = certifier("cohen", 999).certify(x)
    code = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_determinism import certifier, examples
        cert = certifier("cohen", 4096).certify(examples(3))
        print(json.dumps([cert.prediction.tolist(), cert.radius.tolist()]))
    """)
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True,
                         timeout=120)
    pred, radius = json.loads(out.stdout.strip().splitlines()[-1])
    assert pred == local.prediction.tolist()
    assert radius == local.radius.tolist()      # floats survive a JSON round trip exactly


# --- the noise plan ------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(rows=st.integers(1, 6), num_samples=st.integers(1, 70), log_block=st.integers(0, 5),
       batch_size=st.integers(1, 45))
def test_plan_batches_covers_every_sample_once(rows, num_samples, log_block, batch_size):
    block = 1 << log_block
    batches = list(plan_batches(rows, num_samples, block, batch_size))
    seen = np.zeros((rows, num_samples), dtype=int)
    order = []
    own = num_samples >= batch_size
    for i, batch in enumerate(batches):
        total = sum(seg.size for seg in batch)
        assert 0 < total <= batch_size
        if own:   # examples of at least a batch: batches of their own, only an example's last one short
            assert len({seg.row for seg in batch}) == 1, "an example that fills a batch shares none"
            last_of_row = i == len(batches) - 1 or batches[i + 1][0].row != batch[0].row
            assert total == batch_size or last_of_row
        elif i < len(batches) - 1:
            assert total == batch_size, "only the last batch may be short"
        for seg in batch:
            assert 0 <= seg.lo < seg.hi <= block
            start = seg.block * block
            assert start + seg.hi <= num_samples
            seen[seg.row, start + seg.lo:start + seg.hi] += 1
            order.append((seg.row, start + seg.lo))
    assert (seen == 1).all()
    assert order == sorted(order), "rows follow each other, samples in order"


@given(dim=st.integers(1, 1 << 24))
def test_block_size_is_a_bounded_power_of_two(dim):
    b = block_size(dim)
    assert b >= 1 and b & (b - 1) == 0
    assert b <= MAX_BLOCK_SAMPLES
    if dim <= BLOCK_ELEMENTS:
        assert b * dim <= BLOCK_ELEMENTS
        assert b == MAX_BLOCK_SAMPLES or 2 * b * dim > BLOCK_ELEMENTS, "the largest power of two that fits"
    else:
        assert b == 1


def test_block_size_rejects_empty_samples():
    with pytest.raises(ValueError, match="dimension"):
        block_size(0)


def test_block_seeds_are_distinct_and_in_range():
    seeds = {block_seed(s, stage, i, b) for s in range(3) for stage in range(3) for i in range(20) for b in range(4)}
    assert len(seeds) == 3 * 3 * 20 * 4
    assert all(0 <= v < 2 ** 63 for v in seeds)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 8, 12, 20, 64])
def test_noise_source_draws_the_documented_blocks(batch_size):
    """Block b of example i is randn from a generator seeded with block_seed(seed, stage, i, b), last block cut,
    whatever the batch size: whole blocks written straight into a batch, split blocks and single-block batches."""
    indices = torch.tensor([5, 2])
    source = NoiseSource(seed=3, stage=Stage.ESTIMATION, indices=indices, num_samples=10, shape=(4,),
                         device=torch.device("cpu"), dtype=torch.float32)
    source.block = 4    # force several blocks (normally 65536 for 4-D samples)
    batches = list(source.batches(batch_size=batch_size))
    for batch in batches:
        assert batch.noise.shape == (sum(s.size for s in batch.segments), 4)
        single = {s.row for s in batch.segments}
        assert batch.row == (single.pop() if len(single) == 1 else None)
    rows, noise = torch.cat([b.rows() for b in batches]), torch.cat([b.noise for b in batches])
    assert rows.tolist() == [0] * 10 + [1] * 10
    for r, i in enumerate(indices.tolist()):
        expected = []
        for b, length in enumerate((4, 4, 2)):
            g = torch.Generator().manual_seed(block_seed(3, int(Stage.ESTIMATION), i, b))
            expected.append(torch.randn((length, 4), generator=g))
        torch.testing.assert_close(noise[rows == r], torch.cat(expected), rtol=0, atol=0)
