"""The audits of bench.soundness: an unsound certificate is caught, the public FaRS criterion is broken on a
constructed case, the sanity check names the violating examples, the smoothed-classifier check and the
Lipschitz audit run."""

import math

import pandas as pd
import pytest
import torch
from entmax import sparsemax
from torch import nn

from baselines import CohenRS, LipschitzMargin
from bench.audit.pgd import PGDConfig
from bench.audit.soundness import (
    audit_certificates,
    audit_paper_criterion,
    lipschitz_audit,
    paper_criterion_claims,
    sanity_check,
    smoothed_attack_check,
    summarize_audit,
    summarize_smoothed,
)
from fars import FaRSClosedForm
from smoothing.certificate import Certificate

CONFIG = PGDConfig(steps=30, restarts=2, targets=None)


def linear_setup(seed=0, batch=24, classes=5, side=6, scale=2.0):
    """Identity backbone (exactly 1-Lipschitz) + linear head on images near 0.5: the closed form is exact."""
    torch.manual_seed(seed)
    backbone = nn.Flatten()
    head = nn.Linear(side * side, classes)
    with torch.no_grad():
        head.weight.mul_(scale)
    x = 0.5 + 0.04 * (torch.rand(batch, 1, side, side) - 0.5)
    return backbone, head, x


class DoubledRadius:
    """An intentionally unsound certifier: FaRS closed form with every radius multiplied by 2."""

    name = "doubled"

    def __init__(self, inner):
        self.inner = inner

    def certify(self, x, indices=None):
        cert = self.inner.certify(x, indices)
        return Certificate(cert.prediction, cert.radius * 2, cert.samples, cert.seconds)


def test_an_unsound_certificate_is_caught_and_the_sound_one_is_not():
    backbone, head, x = linear_setup()
    network = nn.Sequential(backbone, head)
    sound = FaRSClosedForm(backbone, head).certify(x)
    unsound = DoubledRadius(FaRSClosedForm(backbone, head)).certify(x)
    good = audit_certificates(network, x, sound.prediction, sound.radius, config=CONFIG, min_norm_steps=100)
    bad = audit_certificates(network, x, unsound.prediction, unsound.radius, config=CONFIG)
    assert good["attacked"].all() and not good["broken"].any()
    assert (good["ratio"] >= 1 - 1e-6).all()
    assert bad["broken"].sum() == len(x) and bad["broken_confirmed"].all()
    # the margin certificate (looser than the exact one) is sound too
    head_norm = float(torch.linalg.matrix_norm(head.weight.detach().double(), 2))
    margin = LipschitzMargin(network, lipschitz=math.nextafter(head_norm, math.inf))
    cert = margin.certify(x)
    assert not audit_certificates(network, x, cert.prediction, cert.radius, config=CONFIG)["broken"].any()
    frame = pd.concat([good.assign(method="fars-closed"), bad.assign(method="doubled")]).assign(
        model="linear", idx=list(range(len(x))) * 2)
    summary = summarize_audit(frame).set_index("method")
    assert summary.loc["fars-closed", "broken"] == 0 and summary.loc["doubled", "broken"] == len(x)
    assert 1 - 1e-6 <= summary.loc["fars-closed", "min_ratio"] <= 1.01   # exact certificate: the attack reaches it
    assert summary.loc["doubled", "min_ratio"] < 1


def test_known_adversarial_distances_break_certificates_and_abstentions_are_skipped():
    backbone, head, x = linear_setup(batch=4)
    network = nn.Sequential(backbone, head)
    cert = FaRSClosedForm(backbone, head).certify(x)
    prediction = cert.prediction.clone()
    prediction[3] = -1
    known = cert.radius.clone() * 2
    known[0] = cert.radius[0] * 0.5                   # another attack already found a point inside example 0's ball
    frame = audit_certificates(network, x, prediction, cert.radius, config=PGDConfig(steps=5, restarts=1, targets=0),
                               known_distance=known)
    assert frame["broken"].tolist() == [True, False, False, False]
    assert frame["attacked"].tolist() == [True, True, True, False]


def test_paper_criterion_claims_robustness_the_attack_breaks():
    # s_0 = x_0 + 5 and s_1 = x_1 + 4.9: the true-class logit over ||W|| is ~5.5, the margin only ~0.1
    backbone = nn.Flatten()
    head = nn.Linear(4, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
        head.bias.copy_(torch.tensor([5.0, 4.9, 0.0]))
    x = torch.full((6, 1, 2, 2), 0.5)
    labels = torch.zeros(6, dtype=torch.int64)
    frame = audit_paper_criterion(backbone, head, x, labels, [0.05, 0.1, 0.2, 0.3],
                                  config=PGDConfig(steps=20, restarts=1, targets=1)).set_index(["variant", "eps"])
    # the exact distance is 0.1 / sqrt(2) ~ 0.071: claims at 0.1 and above are false, and the attack shows it
    for eps in (0.1, 0.2, 0.3):
        assert frame.loc[("logit", eps), "claimed"] == 6
        assert frame.loc[("logit", eps), "broken"] == 6
        assert frame.loc[("logit", eps), "sound_certified"] == 0
    assert frame.loc[("logit", 0.05), "broken"] == 0 and frame.loc[("logit", 0.05), "sound_certified"] == 6
    # sparsemax variant: sparsemax(5.5, 5.4, 0.5) = (0.55, 0.45, 0) -> claims up to eps < 0.55
    assert frame.loc[("sparsemax", 0.3), "claimed"] == 6 and frame.loc[("sparsemax", 0.3), "broken"] == 6


def test_paper_criterion_uses_a_correct_sparsemax_and_needs_a_correct_prediction():
    scores = torch.tensor([[3.0, 1.0, 0.2], [0.1, 2.0, 1.9]])
    probs = sparsemax(scores.double(), dim=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, dtype=torch.float64))
    weight = torch.eye(3)
    claims = paper_criterion_claims(scores, torch.tensor([0, 0]), weight, 0.5, "sparsemax")
    assert claims.tolist() == [True, False]            # example 1 is wrong: never claimed
    assert paper_criterion_claims(scores, torch.tensor([0, 1]), weight, 1.95, "logit").tolist() == [True, True]
    with pytest.raises(ValueError):
        paper_criterion_claims(scores, torch.tensor([0, 1]), weight, 0.1, "softmax")


def test_sanity_check_reports_violations_with_example_ids():
    results = pd.DataFrame({
        "method": ["fars-closed"] * 3 + ["cohen"] * 3, "model": ["m"] * 3 + ["c"] * 3,
        "sigma": [math.nan] * 3 + [0.25] * 3, "idx": [5, 7, 9] * 2, "predict": [1, 2, 3] * 2,
        "radius": [0.5, 0.5, 0.1, 0.4, 0.4, 0.0], "correct": [1, 1, 1, 1, 1, 0],
    })
    examples = pd.DataFrame({
        "model": ["m"] * 3 + ["c"] * 3, "idx": [5, 7, 9] * 2, "correct": [1, 1, 1, 1, 0, 1],
        "distance": [0.2, math.inf, 0.3, 0.1, math.inf, 0.05],
    })
    table, violations = sanity_check(results, examples, [0.0, 0.1, 0.2, 0.3, 0.5])
    det = table[table["method"] == "fars-closed"].set_index("radius")
    # at 0.2 the counts tie (example 9 is robust but not certified) while example 5 is a violation:
    # the per-example check catches what the aggregate comparison hides
    assert det.loc[0.2, "violation_ids"] == "5" and det.loc[0.2, "holds"]
    assert det.loc[0.3, "violation_ids"] == "5" and not det.loc[0.3, "holds"]
    assert det.loc[0.1, "violations"] == 0 and det.loc[0.1, "holds"]     # 0.2 > 0.1: not yet inside
    assert det["guaranteed"].all()
    assert violations[violations["guaranteed"]]["idx"].tolist() == [5]
    mc = violations[~violations["guaranteed"]]
    # the base network is wrong at example 7 (distance 0 against the label) and broken at 0.1 < 0.4 at example 5
    assert sorted(mc["idx"].tolist()) == [5, 7]
    assert not table[table["method"] == "cohen"]["guaranteed"].any()


def test_smoothed_attack_check_reestimates_with_fresh_noise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(4, 1, 4, 4)
    certifier = CohenRS(model, sigma=0.25, n0=10, n=200, alpha=0.001, batch_size=400, seed=0)
    cert = certifier.certify(x, torch.arange(4))
    keep = cert.prediction >= 0
    frame = smoothed_attack_check(certifier, x[keep], cert.prediction[keep], cert.radius[keep],
                                  torch.arange(4)[keep], samples=8, steps=5)
    assert len(frame) == int(keep.sum()) > 0
    assert (frame["distance"] <= frame["eps"] + 1e-6).all()
    assert not frame["changed"].any()
    assert certifier.seed == 0  # the fresh-noise copy did not change the run's certifier
    summary = summarize_smoothed(frame.assign(method="cohen", model="lin", sigma=0.25, alpha=0.001))
    assert summary.loc[0, "attacked"] == len(frame) and summary.loc[0, "rate"] == 0.0


def test_lipschitz_audit_reports_sidecar_and_fresh_figures():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 4, bias=False))
    with torch.no_grad():
        u, _, v = torch.linalg.svd(torch.randn(4, 16), full_matrices=False)
        backbone[1].weight.copy_(u @ torch.diag(torch.tensor([0.9, 0.5, 0.2, 0.1])) @ v)
    meta = {"name": "toy", "lipschitz": {"declared": 1.0, "audit": {"jacobian": 0.8, "pairs": 0.85, "inputs": 3,
                                                                    "lower_bound": 0.85}}}
    audit = lipschitz_audit(backbone, torch.rand(3, 1, 4, 4), meta, power_iterations=20, pair_steps=10)
    assert audit["confirms"] and audit["sidecar_lower_bound"] == 0.85
    assert abs(audit["fresh_jacobian"] - 0.9) < 1e-3
    too_small = {"name": "toy", "lipschitz": {"declared": 0.5}}
    assert not lipschitz_audit(backbone, torch.rand(3, 1, 4, 4), too_small, power_iterations=20,
                               pair_steps=10)["confirms"]
