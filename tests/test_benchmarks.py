"""pytest-benchmark suite: `pytest --benchmark-only` times each certify method on a fixed batch.

Models: the shipped default checkpoints (SLL backbone + heads, Cohen's CNN). Timing is done by
pytest-benchmark around ``certify``; ``certify`` synchronises CUDA before it returns. Under plain
`pytest` each body runs once as a smoke test (see conftest.py).
"""

import pytest
import torch

from baselines import CohenRS, LipschitzMargin
from bench.datasets import load_embedded
from bench.run import device_name
from bench.train import DEFAULT_DIR
from bench.zoo import load_zoo
from fars import FaRSClosedForm, FaRSMonteCarlo

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIGMA = 0.25


@pytest.fixture(scope="module")
def zoo():
    if not (DEFAULT_DIR / "sll-backbone.json").is_file():
        pytest.skip("no shipped default checkpoints")
    return load_zoo(DEFAULT_DIR).to(DEVICE)


@pytest.fixture(scope="module")
def batch():
    images, _, indices = load_embedded(limit=4)
    return images.to(DEVICE), indices


def run(benchmark, certifier, batch, **info):
    images, indices = batch
    certifier.certify(images[:1], indices=indices[:1])  # warm-up
    benchmark.extra_info.update(device=device_name(DEVICE), images=len(images), method=certifier.name, **info)
    cert = benchmark(certifier.certify, images, indices)
    assert len(cert) == len(images)
    assert ((cert.prediction == -1) <= (cert.radius == 0)).all()


@pytest.mark.parametrize("n", [1_000])
def test_cohen_on_sll(benchmark, zoo, batch, n):
    network = torch.nn.Sequential(zoo.backbone, zoo.heads["ce"][0])
    run(benchmark, CohenRS(network, SIGMA, n0=100, n=n, batch_size=1000), batch, n=n, sigma=SIGMA, model="sll+ce")


@pytest.mark.parametrize("n", [1_000])
def test_cohen_on_cnn(benchmark, zoo, batch, n):
    cnn = zoo.cnns[SIGMA][0]
    run(benchmark, CohenRS(cnn, SIGMA, n0=100, n=n, batch_size=1000), batch, n=n, sigma=SIGMA, model="cnn-noise0.25")


@pytest.mark.parametrize("sampler", ["direct", "projected"])
@pytest.mark.parametrize("n", [100_000])
def test_fars_mc_samplers(benchmark, zoo, batch, sampler, n):
    head = zoo.heads["ce"][0]
    certifier = FaRSMonteCarlo(zoo.backbone, head, SIGMA, lipschitz=zoo.lipschitz, n=n, batch_size=10_000,
                               sampler=sampler)
    run(benchmark, certifier, batch, n=n, sigma=SIGMA, sampler=sampler, model="sll+ce")


def test_fars_mc_mlp_head(benchmark, zoo, batch):
    certifier = FaRSMonteCarlo(zoo.backbone, zoo.heads["mlp"][0], SIGMA, lipschitz=zoo.lipschitz, n=100_000,
                               batch_size=10_000)
    run(benchmark, certifier, batch, n=100_000, sigma=SIGMA, sampler=certifier.sampler, model="sll+mlp")


def test_fars_closed(benchmark, zoo, batch):
    run(benchmark, FaRSClosedForm(zoo.backbone, zoo.heads["ce"][0], lipschitz=zoo.lipschitz), batch, n=0,
        model="sll+ce")


def test_lipschitz_margin(benchmark, zoo, batch):
    head = zoo.heads["ce"][0]
    constant = zoo.lipschitz * float(torch.linalg.matrix_norm(head.weight.detach().double(), ord=2)) * (1 + 1e-12)
    run(benchmark, LipschitzMargin(torch.nn.Sequential(zoo.backbone, head), lipschitz=constant), batch, n=0,
        model="sll+ce")
