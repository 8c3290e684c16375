"""Test-suite settings shared by every test module."""

import pytest
import torch

from bench.models import checkpoints as ckpt
from bench.models.networks import CNNConfig, HeadConfig, SmallCNN, build_head
from fars import BackboneConfig, SLLBackbone, audit_lipschitz


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Plain `pytest` runs each benchmark body once, as a smoke test, without timing rounds;
    # `pytest --benchmark-only` (or --benchmark-enable) measures them for real.
    option = config.option
    if hasattr(option, "benchmark_disable") and not (option.benchmark_only or option.benchmark_enable):
        option.benchmark_disable = True
    # One intra-op thread: on a 2-core machine shared with other work, OpenMP's spinning threads make
    # small ops 10-1000x slower; one thread keeps the suite fast and its timing stable.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts with one intra-op thread, whatever an earlier in-process command (``--threads``) set."""
    torch.set_num_threads(1)


#: what a torchrun rank prints when it aborts in torch's C++ teardown (std::terminate, SIGABRT) after a tiny run
#: has written every file: an intermittent, known open defect of the torchrun shutdown under a loaded machine,
#: not of the rows or the lock; the torchrun tests that need one successful run retry once, in a fresh folder
TORCH_TEARDOWN_ABORT = "terminate called without an active exception"

TINY = BackboneConfig(image_size=28, conv_width=2, conv_inner=2, conv_depth=1, stages=2, dense_depth=1,
                      dense_inner=8, embedding_dim=8)


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """Random tiny models saved as real checkpoints (the pipeline does not care how well they classify)."""
    out = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    backbone = SLLBackbone(TINY)
    audit = audit_lipschitz(backbone, torch.rand(4, 1, 28, 28), power_iterations=10, pair_steps=10)
    meta = ckpt.save_checkpoint(backbone, out / "sll-backbone", {
        "kind": "backbone", "architecture": TINY.to_dict(), "lipschitz": ckpt.audit_record(audit, 1.0)})
    for kind in ("ce", "mlp"):
        config = HeadConfig(kind, 8, 10, hidden=8)
        ckpt.save_checkpoint(build_head(config), out / f"head-{kind}", {
            "kind": "head", "architecture": config.to_dict(), "backbone_sha256": meta["state_sha256"]})
    config = CNNConfig(width=2, hidden=8)
    ckpt.save_checkpoint(SmallCNN(config), out / "cnn-noise0.25", {
        "kind": "cnn", "architecture": config.to_dict(), "noise_sigma": 0.25})
    return out


#: an attack stage a few seconds long on the tiny models (the experiment file's [attack] table)
SMALL_ATTACK = """[attack]
radii = [0.5]
steps = 4
restarts = 1
min_norm_steps = 10
mc_sample = 1
smooth_samples = 2
smooth_steps = 2
lipschitz_images = 2
"""


@pytest.fixture(scope="session")
def small_attack(tmp_path_factory):
    """``--config FILE``: an experiment file with a small [attack] table and no models (pass ``--models``)."""
    path = tmp_path_factory.mktemp("config") / "small-attack.toml"
    path.write_text(SMALL_ATTACK)
    return ["--config", str(path)]
