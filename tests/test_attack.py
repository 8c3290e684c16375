"""The l2 attacks of bench.pgd: exact on linear models, per-example success, clipping, at least as strong
as foolbox's L2PGD, and `python -m bench.attack` end to end on a tiny run."""

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from bench import attack as bench_attack
from bench import run as bench_run
from bench.audit import robustness
from bench.audit.pgd import PGDConfig, flat_norm, l2_pgd, min_norm_attack, pgd_attack, rank_targets
from bench.models import checkpoints as ckpt
from bench.report.write import SOUNDNESS_BEGIN


def linear_case(seed=0, batch=40, side=8, classes=10, scale=3.0):
    """A linear classifier on [B, 1, side, side] images near 0.5 and each example's exact boundary distance."""
    torch.manual_seed(seed)
    d = side * side
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, classes))
    with torch.no_grad():
        model[1].weight.mul_(scale)
    x = 0.5 + 0.04 * (torch.rand(batch, 1, side, side) - 0.5)
    with torch.no_grad():
        s = model(x)
    pred = s.argmax(dim=1)
    w = model[1].weight.detach()
    diff = w[None, :, :] - w[pred][:, None, :]                       # [B, K, d]: w_j - w_c
    gap = diff.norm(dim=2)
    margin = s.gather(1, pred[:, None]) - s
    dist = torch.where(gap > 0, margin / gap.clamp_min(1e-30), torch.full_like(margin, math.inf))
    dist.scatter_(1, pred[:, None], math.inf)
    exact, j = dist.min(dim=1)
    # the closest boundary point must lie inside [0, 1] for the unconstrained distance to be the true one
    step = exact[:, None] * diff[torch.arange(batch), j] / gap[torch.arange(batch), j][:, None]
    point = x.flatten(1) + step
    assert bool(((point > 0) & (point < 1)).all())
    return model, x, pred, exact.double()


@pytest.mark.parametrize("config", [PGDConfig(), robustness.RobustnessSettings().pgd])
def test_pgd_finds_the_exact_boundary_of_a_linear_model(config):
    model, x, pred, exact = linear_case()
    above = pgd_attack(model, x, pred, (exact * 1.01).float(), config)
    below = pgd_attack(model, x, pred, (exact * 0.99).float(), config)
    assert bool(above.success.all()), f"missed {int((~above.success).sum())} of {len(x)} at 1.01 d"
    assert not bool(below.success.any())
    assert bool((above.distance <= exact * 1.01 + 1e-6).all())


def test_min_norm_attack_is_within_one_percent_on_a_linear_model():
    model, x, pred, exact = linear_case(seed=1)
    found = min_norm_attack(model, x, pred, steps=100)
    assert bool(found.success.all())
    ratio = found.distance / exact
    assert float(ratio.min()) >= 1 - 1e-5 and float(ratio.max()) <= 1.01


def test_rank_targets_orders_classes_by_exact_distance_on_a_linear_model():
    model, x, pred, exact = linear_case(seed=2, batch=8)
    closest = rank_targets(model, x, pred, k=1)[:, 0]
    w = model[1].weight.detach()
    s = model(x).detach()
    d = (s.gather(1, pred[:, None])[:, 0] - s.gather(1, closest[:, None])[:, 0]) / (w[pred] - w[closest]).norm(dim=1)
    assert torch.allclose(d.double(), exact, rtol=1e-4)
    assert (rank_targets(model, x, pred) != pred[:, None]).all()
    assert rank_targets(model, x, pred).shape == (8, 9)


def test_success_is_counted_per_example_not_per_batch():
    # s_0 = x_0 and s_1 = 0.5: the boundary distance of each example is x_0 - 0.5 (pull coordinate 0 down).
    # Examples 0-3 sit at 0.1, examples 4-7 at 0.45, example 8 is already misclassified (x_0 < 0.5).
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, 0] = 1.0
        model[1].bias.copy_(torch.tensor([0.0, 0.5, -10.0]))
    x = torch.full((9, 1, 8, 8), 0.5)
    x[:, 0, 0, 0] += torch.tensor([0.1] * 4 + [0.45] * 4 + [-0.05])
    labels = torch.zeros(9, dtype=torch.int64)
    eps = 0.3
    config = PGDConfig(steps=20, restarts=2, targets=1)
    result = pgd_attack(model, x, labels, eps, config)
    expected = [True] * 4 + [False] * 4 + [True]
    assert result.success.tolist() == expected          # not "the batch" succeeding or failing as a whole
    assert float(result.distance[8]) == 0.0
    assert bool((result.distance[:4] <= eps + 1e-6).all()) and bool(torch.isinf(result.distance[4:8]).all())
    # the harness's empirical accuracy is computed from these per-example flags: 4 robust out of 9
    frame = robustness.empirical_robustness(model, x, labels, torch.arange(9), [eps], config, min_norm_steps=20)
    robust = ((frame["correct"] == 1) & (frame["distance"] > eps)).tolist()
    assert robust == [not e for e in expected]


def test_iterates_stay_in_the_box_and_the_ball():
    # s_1 = x_0 + 0.01 * sum(other pixels) - 1.2 is at most 1.15 - 1.2 < 0 = s_0 inside [0, 1]: class 1 is
    # unreachable in the box, though only ~0.053 away from x without clipping
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, -1.2]))
        model[1].weight[1, 0] = 1.0
        model[1].weight[1, 1:] = 0.01
    x = torch.ones(4, 1, 4, 4)
    x[:, 0, 0, 1:] = 0.9
    labels = torch.zeros(4, dtype=torch.int64)
    unclipped = nn.Sequential(nn.Flatten(), model[1])  # the same map on x + delta without the box would flip
    with torch.no_grad():
        moved = x + 0.06 * model[1].weight[1].view(1, 1, 4, 4) / model[1].weight[1].norm()
        assert float(unclipped(moved)[0].diff()) > 0
    for eps in (0.05, 0.5, 3.0):
        res = l2_pgd(model, x, labels, eps, steps=30, generator=torch.Generator().manual_seed(0))
        assert not bool(res.success.any())
        assert float(res.adversarial.min()) >= 0.0 and float(res.adversarial.max()) <= 1.0
        assert bool((flat_norm(res.adversarial - x) <= eps * (1 + 1e-5)).all())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd_attack(model, x + 0.5, labels, 0.1)


def _small_mlp():
    from bench.data import load_embedded

    images, labels, _ = load_embedded()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        pick = torch.randint(0, 900, (128,))
        loss = nn.functional.cross_entropy(model(images[pick]), labels[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y = images[900:], labels[900:]
    with torch.no_grad():
        keep = model(x).argmax(dim=1) == y
    return model, x[keep][:60], y[keep][:60]


def test_at_least_as_strong_as_foolbox_l2pgd():
    fb = pytest.importorskip("foolbox")
    model, x, y = _small_mlp()
    assert len(x) >= 40
    steps = robustness.RobustnessSettings().pgd.steps
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    radii = [0.25, 0.5, 1.0]
    _, _, reference = fb.attacks.L2PGD(steps=steps)(fmodel, x, y, epsilons=radii)
    ours = [int(pgd_attack(model, x, y, eps, robustness.RobustnessSettings().pgd).success.sum()) for eps in radii]
    theirs = [int(s.sum()) for s in reference]
    assert all(a >= b for a, b in zip(ours, theirs, strict=True)), (ours, theirs)
    assert ours[-1] > 0  # the comparison is not vacuous


# ------------------------------------------------------------------------------ CLI


def _tiny_certification(zoo, out):
    bench_run.main(["--models", str(zoo), "--out", str(out), "--num-images", "3", "--n", "40", "--n0", "8",
                    "--sigma", "0.25", "--batch-size", "64", "--scaling-ns", "--no-progress", "--heads", "ce", "mlp",
                    "--no-attack"])
    return out


FAST = ["--steps", "8", "--restarts", "2", "--targets", "1", "--audit-targets", "2", "--min-norm-steps", "20",
        "--mc-sample", "2", "--smooth-samples", "4", "--smooth-steps", "3", "--lipschitz-images", "2",
        "--radii", "0.5", "--no-progress"]


def test_cli_on_a_tiny_run_writes_every_output(tiny_zoo, tmp_path, capsys):
    out = _tiny_certification(tiny_zoo, tmp_path / "run")
    assert "Empirical robustness" not in (out / "summary.md").read_text()
    code = bench_attack.main(["--results", str(out), *FAST])
    assert code == 0
    for name in ("robustness.csv", "robustness_examples.csv", "sanity.csv", "sanity_violations.csv", "soundness.csv",
                 "soundness_examples.csv", "paper_criterion.csv", "smoothed_attack.csv", "lipschitz_audit.json",
                 "attack_settings.json", "soundness.md", "certified_accuracy.png"):
        assert (out / name).is_file(), name
    robust = pd.read_csv(out / "robustness.csv")
    assert set(robust["model"]) == {"sll+ce", "sll+mlp", "cnn-noise0.25"}
    at = robust[robust["pgd"]]
    assert {0.0, 0.05, 0.1, 0.2, 0.3, 0.5} <= set(at["radius"])
    soundness = pd.read_csv(out / "soundness.csv")
    assert set(soundness["method"]) == {"fars-closed", "lipschitz-margin", "fars-crown"}   # every deterministic method
    assert (soundness["broken"] == 0).all() and (soundness["min_ratio"] >= 1).all()
    paper = pd.read_csv(out / "paper_criterion.csv")
    assert set(paper["variant"]) == {"logit", "sparsemax"} and set(paper["model"]) == {"sll+ce"}
    assert set(paper["eps"]) == {0.05, 0.1, 0.2, 0.3}
    smoothed = pd.read_csv(out / "smoothed_attack.csv")
    assert set(smoothed["method"]) <= {"cohen", "fars-mc"} and (smoothed["alpha"] == 0.001).all()
    sanity = pd.read_csv(out / "sanity.csv")
    deterministic = sanity[sanity["guaranteed"]]
    assert len(deterministic) and deterministic["holds"].all() and (deterministic["violations"] == 0).all()
    lipschitz = json.loads((out / "lipschitz_audit.json").read_text())
    assert lipschitz["confirms"] and lipschitz["backbone"] == "sll-backbone"   # beside the sidecar's own audit
    assert lipschitz["sidecar_lower_bound"] == ckpt.read_sidecar(tiny_zoo / "sll-backbone")["lipschitz"]["audit"][
        "lower_bound"]
    # the run's report is rewritten from the folder's files: the audit section and Table 2, once
    summary = (out / "summary.md").read_text()
    assert summary.count(SOUNDNESS_BEGIN) == 1 and "Empirical robustness and soundness audit" in summary
    assert "Table 2 skipped" not in (out / "table2.md").read_text()
    # certify.tsv is never touched, and no paper-criterion row enters it
    assert "fars-paper-criterion" not in (out / "certify.tsv").read_text()
    printed = capsys.readouterr().out
    assert "Sanity check" in printed and "PASS" in printed
    # a second run replaces the summary section instead of appending another
    assert bench_attack.main(["--results", str(out), *FAST, "--mc-sample", "0"]) == 0
    assert (out / "summary.md").read_text().count(SOUNDNESS_BEGIN) == 1


def test_cli_finds_the_models_of_the_run_and_refuses_other_ones(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "run"
    bench_run.main(["--models", str(tiny_zoo), "--out", str(out), "--num-images", "2", "--methods", "fars-closed",
                    "--heads", "ce", "--scaling-ns", "--no-progress", "--no-attack"])
    cheap = ["--steps", "2", "--restarts", "1", "--min-norm-steps", "2", "--mc-sample", "0",
             "--lipschitz-images", "2", "--radii", "0.5", "--no-progress"]
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # a manifest of an earlier version: the models' folder in config["models"], no models_dir
    old = {**manifest, "config": {**manifest["config"], "models": str(tiny_zoo)}}
    del old["models_dir"]
    manifest_path.write_text(json.dumps(old))
    assert bench_attack.main(["--results", str(out), *cheap]) == 0
    # models whose content differs from the run's are refused with a clear message
    other = {**manifest, "config": {**manifest["config"], "models": {"sll-backbone": "0" * 64}}}
    manifest_path.write_text(json.dumps(other))
    with pytest.raises(SystemExit) as info:
        bench_attack.main(["--results", str(out), *cheap])
    assert info.value.code == 2 and "not the ones" in capsys.readouterr().err


def test_cli_explains_a_missing_certify_tsv(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        bench_attack.main(["--results", str(tmp_path)])
    assert info.value.code == 2
    assert "no certify.tsv" in capsys.readouterr().err


def test_cli_help_mentions_every_output(capsys):
    with pytest.raises(SystemExit):
        bench_attack.main(["--help"])
    text = capsys.readouterr().out
    for word in ("robustness.csv", "sanity.csv", "soundness.csv", "paper_criterion.csv", "smoothed_attack.csv",
                 "--mc-sample", "--restarts", "--steps"):
        assert word in text
