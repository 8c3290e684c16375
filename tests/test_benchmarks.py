"""pytest-benchmark suite: `pytest --benchmark-only` times each certify method on a fixed batch.

Models: the shipped default checkpoints (SLL backbone + heads, Cohen's CNN). Timing is done by
pytest-benchmark around ``certify``; ``certify`` synchronises CUDA before it returns. Under plain
`pytest` each body runs once as a smoke test (see conftest.py).

The sampler benchmarks (direct noise on the embedding versus logit-space noise ``W z + b + F u``) run
both inside a full certify call and alone (``sample_counts`` on fixed centers); their ``extra_info``
carries the cost model's counts (normals and noise flops per sample), and ``test_plain_forward`` times
the reference of the Cohen target (a plain batched forward of the same network).

``test_fars_mc_per_image`` times fars-mc at n = 100,000 (the batch size ``--batch-size auto`` gives it) on
one image and on a 32-image batch; its ``extra_info`` carries the seconds per image and the cost model's
floor of one image (:func:`bench.perf.cost_model.method_phases` on a once-measured machine: the roofline of
the backbone pass and the head's samples plus the normals at the measured generator rate), and the
process CPU time per image of the timed calls beside their wall time. Targets: a single image within
1.25x of the floor; a batched image cheaper than a single one.
"""

import time

import pytest
import torch

from baselines import CohenRS, LipschitzMargin
from bench.certify.batch_size import fars_batch_size
from bench.common.env import EMBEDDED_MODELS as DEFAULT_DIR
from bench.common.env import device_name, tune_cpu_allocator
from bench.data import load_embedded
from bench.models import load_zoo
from bench.perf import cost_model as cm
from fars import FaRSClosedForm, FaRSMonteCarlo
from smoothing.checks import synchronize
from smoothing.noise import Stage

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIGMA = 0.25


@pytest.fixture(scope="module", autouse=True)
def _allocator():
    """Time as bench.scaling does: freed CPU memory stays in the process (no page-fault churn)."""
    tune_cpu_allocator()


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


@pytest.mark.parametrize("batch_size", [256, 1000])
@pytest.mark.parametrize("n", [1_000])
def test_cohen_on_sll(benchmark, zoo, batch, n, batch_size):
    network = torch.nn.Sequential(zoo.backbone, zoo.heads["ce"][0])
    run(benchmark, CohenRS(network, SIGMA, n0=100, n=n, batch_size=batch_size), batch, n=n, sigma=SIGMA,
        model="sll+ce", batch_size=batch_size, samples_per_image=100 + n)


@pytest.mark.parametrize("batch_size", [256, 1000])
def test_plain_forward(benchmark, zoo, batch_size):
    """The reference of the Cohen target: one plain batched forward of sll+ce (per sample: mean / batch_size)."""
    network = torch.nn.Sequential(zoo.backbone, zoo.heads["ce"][0]).eval()
    inputs = cm.plain_batch((1, 28, 28), batch_size, DEVICE)

    def forward():
        with torch.inference_mode():
            out = network(inputs)
        synchronize(DEVICE)
        return out

    forward()
    benchmark.extra_info.update(device=device_name(DEVICE), batch_size=batch_size, model="sll+ce",
                                method="plain-forward")
    assert benchmark(forward).shape == (batch_size, 10)


@pytest.mark.parametrize("n", [1_000])
def test_cohen_on_cnn(benchmark, zoo, batch, n):
    cnn = zoo.cnns[SIGMA][0]
    run(benchmark, CohenRS(cnn, SIGMA, n0=100, n=n, batch_size=1000), batch, n=n, sigma=SIGMA, model="cnn-noise0.25")


def sampler_info(zoo, sampler: str, n: int) -> dict:
    """The cost model's per-sample counts of a sampler on sll+ce (normals, noise and head flops)."""
    costs = cm.network_costs(zoo.backbone, zoo.heads["ce"][0], (1, 28, 28), sampler=sampler)
    phases = cm.method_phases("fars-mc", costs, n0=0, n=n, batch_size=10_000)
    return {"normals_per_sample": phases["noise"].normals / n, "noise_flops_per_sample": phases["noise"].flops / n,
            "head_flops_per_sample": costs.head.per_sample_flops if sampler == "direct" else 0,
            "embedding_dim": costs.embedding_dim, "noise_dim": costs.noise_dim}


@pytest.mark.parametrize("sampler", ["direct", "projected"])
@pytest.mark.parametrize("n", [100_000])
def test_fars_mc_samplers(benchmark, zoo, batch, sampler, n):
    head = zoo.heads["ce"][0]
    certifier = FaRSMonteCarlo(zoo.backbone, head, SIGMA, lipschitz=zoo.lipschitz, n=n, batch_size=10_000,
                               sampler=sampler)
    run(benchmark, certifier, batch, n=n, sigma=SIGMA, sampler=sampler, model="sll+ce", batch_size=10_000,
        **sampler_info(zoo, sampler, n))


@pytest.mark.parametrize("sampler", ["direct", "projected"])
@pytest.mark.parametrize("n", [100_000])
def test_sampler_alone(benchmark, zoo, batch, sampler, n):
    """Noise, perturbation, head and votes only (the backbone ran once, outside the timing)."""
    images, indices = batch
    head = zoo.heads["ce"][0]
    certifier = FaRSMonteCarlo(zoo.backbone, head, SIGMA, lipschitz=zoo.lipschitz, n=n, batch_size=10_000,
                               sampler=sampler)
    with torch.inference_mode():
        centers = certifier._encode(images)

    def sample():
        with torch.inference_mode():
            counts = certifier.sample_counts(centers, indices, n, Stage.ESTIMATION)
        synchronize(DEVICE)
        return counts

    sample()
    benchmark.extra_info.update(device=device_name(DEVICE), images=len(images), method="fars-mc-sampler", n=n,
                                sigma=SIGMA, sampler=sampler, model="sll+ce", batch_size=10_000,
                                **sampler_info(zoo, sampler, n))
    counts = benchmark(sample)
    assert (counts.sum(dim=1) == n).all()


@pytest.fixture(scope="module")
def mc_floor(zoo):
    """The cost model's floor of one fars-mc image at n = 100,000 on sll+ce (seconds) and the machine's line."""
    head = zoo.heads["ce"][0]
    certifier = FaRSMonteCarlo(zoo.backbone, head, SIGMA, lipschitz=zoo.lipschitz, n=100_000)
    costs = cm.network_costs(zoo.backbone, head, (1, 28, 28))
    machine = cm.measure_machine(DEVICE)
    phases = cm.method_phases("fars-mc", costs, n0=100, n=100_000, batch_size=fars_batch_size(certifier))
    return sum(phase.floor(machine) for phase in phases.values()), machine.describe()


@pytest.mark.parametrize("images", [1, 32])
def test_fars_mc_per_image(benchmark, zoo, mc_floor, images):
    """fars-mc at n = 100,000 on ``images`` images in one call (sll+ce, the auto batch size); per image."""
    head = zoo.heads["ce"][0]
    certifier = FaRSMonteCarlo(zoo.backbone, head, SIGMA, lipschitz=zoo.lipschitz, n=100_000)
    certifier.batch_size = fars_batch_size(certifier)
    x, indices = load_embedded(limit=images)[0].to(DEVICE), load_embedded(limit=images)[2]
    certifier.certify(x[:1], indices=indices[:1])   # warm-up
    cpu: list[float] = []
    walls: list[float] = []

    def call():
        start, wall = time.process_time(), time.perf_counter()
        cert = certifier.certify(x, indices)
        cpu.append(time.process_time() - start)
        walls.append(time.perf_counter() - wall)
        return cert

    cert = benchmark(call)
    floor, machine = mc_floor
    per_image_cpu, per_image_wall = min(cpu) / images, min(walls) / images
    benchmark.extra_info.update(device=device_name(DEVICE), images=images, method="fars-mc", n=100_000, sigma=SIGMA,
                                model="sll+ce", batch_size=certifier.batch_size, floor_seconds=floor, machine=machine,
                                per_image_cpu_seconds=per_image_cpu, per_image_wall_seconds=per_image_wall,
                                cpu_ratio_to_floor=per_image_cpu / floor)
    assert len(cert) == images and ((cert.prediction == -1) <= (cert.radius == 0)).all()


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
