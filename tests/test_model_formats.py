"""load_model: every checkpoint format against an independent forward of the same weights, and bad specs refused.

References: the SLL authors' stored logits (tests/fixtures/sll_authors, made with their code), a functional
CIFAR ResNet and SLL forward written here from the papers' formulas, torchvision's ResNet-50 fed
(x - mean) / std by hand, and the fars-bench zoo's own modules.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50

from bench.common.files import sha256_file
from bench.models import LoadedModel, ModelSpecError, load_model, load_zoo
from bench.models.cifar_resnet import CifarResNet
from bench.models.cohen_format import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from bench.models.normalization import InputNormalization
from bench.models.sll_format import (
    SLL_SIZES,
    SLLLayout,
    authors_parameter_count,
    authors_state_shapes,
    build_sll_network,
)
from fars import FaRSClosedForm, audit_lipschitz

FIXTURES = Path(__file__).parent / "fixtures"
SLL_FIXTURE = FIXTURES / "sll_authors"
FIXTURE_LAYOUT = {"n_conv": 2, "n_dense": 2, "width": 4, "conv_inner": 3, "dense_inner": 16}
EMBEDDED = Path(__file__).resolve().parents[1] / "bench" / "embedded" / "models"
TOL = 1e-5


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def check_split(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.network(x)
        if model.has_split:
            assert model.backbone is not None and model.head is not None
            assert torch.equal(out, model.head(model.backbone(x)))
    json.dumps(model.describe())
    return out


# ---------------------------------------------------------------- sll: the authors' fixture


def sll_spec(path=SLL_FIXTURE / "model.ckpt-0.pth", **extra):
    return {"name": "sll-tiny", "format": "sll", "dataset": "cifar10", "checkpoint": str(path),
            "layout": dict(FIXTURE_LAYOUT), **extra}


def test_sll_authors_fixture_reproduces_their_logits_and_certificate():
    io = torch.load(SLL_FIXTURE / "reference_io.pt", map_location="cpu", weights_only=True)
    model = load_model(sll_spec())
    out = check_split(model, io["inputs"])
    assert max_diff(out, io["logits"]) <= TOL
    assert model.lipschitz == 1.0 and model.input_shape == (3, 32, 32) and model.num_classes == 10
    assert model.fingerprint == sha256_file(SLL_FIXTURE / "model.ckpt-0.pth")
    assert isinstance(model.head, nn.Linear)
    assert torch.allclose(model.head.weight.norm(dim=1), torch.ones(10), atol=1e-6)
    # their certificate: min_j (f_c - f_j) / ||w_c - w_j|| with the row-normalised last layer (core/evaluate.py)
    raw = torch.load(SLL_FIXTURE / "model.ckpt-0.pth", weights_only=True)["model_state_dict"]
    w = F.normalize(raw["module.model.model.7.weight"], dim=1)
    logits = io["logits"]
    pred = logits.argmax(1)
    expected = torch.stack([
        min((logits[i, c] - logits[i, j]) / (w[c] - w[j]).norm() for j in range(10) if j != c)
        for i, c in enumerate(pred.tolist())])
    assert isinstance(model.backbone, nn.Module)
    cert = FaRSClosedForm(model.backbone, model.head, model.lipschitz).certify(io["inputs"])
    assert torch.equal(cert.prediction, pred)
    assert torch.allclose(cert.radius.float(), expected, rtol=1e-4, atol=1e-6)


def test_sll_backbone_passes_a_lipschitz_audit():
    model = load_model(sll_spec())
    assert model.backbone is not None
    audit = audit_lipschitz(model.backbone, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                            power_iterations=10, pair_steps=10)
    assert audit.confirms(1.0)


# ---------------------------------------------------------------- sll: an independent forward from the formulas


def authors_state(layout: SLLLayout, dataset: str, seed: int) -> dict[str, torch.Tensor]:
    """Random weights in the authors' key format (non-trivial q and bias everywhere)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) * (0.3 if k.endswith("bias") else 1.0)
            for k, shape in authors_state_shapes(layout, dataset).items()}


def reference_sll_forward(state, layout: SLLLayout, mean, x: torch.Tensor) -> torch.Tensor:
    """The SLL network written from the paper (Araujo et al. 2023, eq. for SLL layers) with plain torch ops."""
    p = "module.model.model."
    h = x - torch.tensor(mean).view(1, 3, 1, 1)
    h = torch.cat([h, torch.zeros(h.shape[0], layout.width - 3, *h.shape[2:])], dim=1)
    for i in range(1, layout.n_conv + 1):
        k, b = state[f"{p}{i}.kernel"], state[f"{p}{i}.bias"]
        kk = F.conv2d(k, k, padding=2).abs()                 # |K * K|, all offsets: [inner, inner, 5, 5]
        t = 1 / kk.sum(dim=(1, 2, 3))                        # q cancels in their conv t
        h = h - 2 * F.conv_transpose2d(t.view(1, -1, 1, 1) * F.relu(F.conv2d(h, k, padding=1) + b), k, padding=1)
    h = F.avg_pool2d(h, 4, divisor_override=4).flatten(1)
    first = layout.n_conv + 3
    for i in range(first, first + layout.n_dense):
        w, b, q = state[f"{p}{i}.weight"], state[f"{p}{i}.bias"], state[f"{p}{i}.q"]
        gram = (w @ w.T).abs()
        t = 1 / (gram * torch.exp(q[None, :] - q[:, None])).sum(dim=1)     # sum_j |G_ij| q_j / q_i, q = exp(.)
        h = h - 2 * (t * F.relu(h @ w.T + b)) @ w
    w, b = state[f"{p}{first + layout.n_dense}.weight"], state[f"{p}{first + layout.n_dense}.bias"]
    return h @ (w / w.norm(dim=1, keepdim=True)).T + b


@pytest.mark.parametrize("dataset, side, classes", [("cifar100", 32, 100), ("tiny-imagenet", 64, 200)])
def test_sll_custom_layout_matches_reference_forward(tmp_path, dataset, side, classes):
    layout = SLLLayout(n_conv=3, n_dense=2, width=5, conv_inner=2, dense_inner=7)
    state = authors_state(layout, dataset, seed=1)
    path = tmp_path / "model.ckpt-10.pth"
    torch.save({"epoch": 10, "global_step": 100, "model_state_dict": state, "optimizer_state_dict": {}}, path)
    model = load_model({"name": "m", "format": "sll", "dataset": dataset, "checkpoint": str(path),
                        "layout": {"n_conv": 3, "n_dense": 2, "width": 5, "conv_inner": 2, "dense_inner": 7}})
    assert model.input_shape == (3, side, side) and model.num_classes == classes
    x = torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(2))
    mean = (0.5071, 0.4865, 0.4409) if dataset == "cifar100" else IMAGENET_MEAN
    with torch.no_grad():
        reference = reference_sll_forward(state, layout, mean, x)
    assert max_diff(check_split(model, x), reference) <= TOL
    assert model.describe()["layout"]["width"] == 5 and model.describe()["epoch"] == 10


def test_sll_named_sizes_shapes_and_parameter_counts():
    counts = {name: authors_parameter_count(layout) for name, layout in SLL_SIZES.items()}
    assert counts == {"small": 41_385_862, "medium": 78_803_870, "large": 118_266_370, "xlarge": 236_446_550}
    shapes = authors_state_shapes(SLL_SIZES["small"], "cifar10")
    assert shapes["module.model.model.1.kernel"] == (5, 45, 3, 3)
    assert shapes["module.model.model.1.bias"] == (1, 5, 1, 1)
    assert shapes["module.model.model.23.weight"] == (2048, 45 * 64)
    assert shapes["module.model.model.30.weight"] == (10, 2880)
    assert len(shapes) == 20 * 3 + 7 * 3 + 2
    for name, layout in SLL_SIZES.items():             # built on the meta device: no memory, no forward
        with torch.device("meta"):
            network = build_sll_network(layout, "cifar10")
        assert sum(p.numel() for p in network.parameters()) == counts[name]


def test_sll_checkpoint_keys_are_mapped_strictly(tmp_path):
    raw = torch.load(SLL_FIXTURE / "model.ckpt-0.pth", weights_only=True)
    cases = {
        "missing": lambda s: s.pop("module.model.model.6.q"),
        "unexpected": lambda s: s.__setitem__("module.model.model.3.alpha", torch.ones(1)),
        "shape": lambda s: s.__setitem__("module.model.model.5.weight", torch.ones(16, 255)),
    }
    for what, change in cases.items():
        state = dict(raw["model_state_dict"])
        change(state)
        path = tmp_path / f"{what}.pth"
        torch.save({**raw, "model_state_dict": state}, path)
        with pytest.raises(ModelSpecError, match=what if what != "shape" else "mis-shaped") as err:
            load_model(sll_spec(path))
        assert err.value.key == "checkpoint" and err.value.model == "sll-tiny"
    with pytest.raises(ModelSpecError, match=r"\d+ missing") as err:   # the tiny file is no 'small' model
        load_model({k: v for k, v in {**sll_spec(), "size": "small"}.items() if k != "layout"})
    assert "module.model.model.3.kernel" in str(err.value)


def test_sll_bad_specs():
    spec = sll_spec()
    bad: list[tuple[dict, str, str]] = [
        ({**spec, "size": "small"}, "size", "exactly one"),
        ({k: v for k, v in {**spec, "size": "huge"}.items() if k != "layout"}, "size", "unknown value"),
        ({**spec, "dataset": "mnist"}, "dataset", "cifar10"),
        ({**spec, "layout": {**FIXTURE_LAYOUT, "depth": 3}}, "layout", "unknown field"),
        ({**spec, "layout": {**FIXTURE_LAYOUT, "width": 2}}, "layout", "width"),
        ({**spec, "layout": {**FIXTURE_LAYOUT, "width": 4.0}}, "layout", "width"),
    ]
    for case, key, message in bad:
        with pytest.raises(ModelSpecError, match=message) as err:
            load_model(case)
        assert err.value.key == key, case


# ---------------------------------------------------------------- cohen


def randomize_batch_norm(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def reference_cifar_resnet(sd: dict, x: torch.Tensor, blocks: int) -> torch.Tensor:
    """Bearpaw's CIFAR ResNet (He et al. 2016, sec. 4.2) as plain functional ops on Cohen's parameter names."""
    def bn(h, p):
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            training=False, eps=1e-5)

    h = F.relu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), "bn1"))
    for stage in (1, 2, 3):
        for b in range(blocks):
            p, stride = f"layer{stage}.{b}", 2 if stage > 1 and b == 0 else 1
            out = F.relu(bn(F.conv2d(h, sd[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
            out = bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                h = bn(F.conv2d(h, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            h = F.relu(out + h)
    return F.linear(F.avg_pool2d(h, 8).flatten(1), sd["fc.weight"], sd["fc.bias"])


def save_cohen(path: Path, arch: str, inner: nn.Module, prefix: str = "1.", **extra) -> dict:
    state = {prefix + k: v for k, v in inner.state_dict().items()}
    optimizer = torch.optim.SGD(inner.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 90, "arch": arch, "state_dict": state, "optimizer": optimizer.state_dict(), **extra}, path)
    return state


@pytest.fixture(scope="module")
def resnet20_file(tmp_path_factory):
    torch.manual_seed(3)
    inner = CifarResNet(20, 10)
    randomize_batch_norm(inner, 4)
    path = tmp_path_factory.mktemp("cohen") / "checkpoint.pth.tar"
    save_cohen(path, "cifar_resnet20", inner)
    return path, {k: v.clone() for k, v in inner.state_dict().items()}


def test_cifar_resnet_layout_matches_published_parameter_names_and_counts():
    for depth, params in ((20, 272_474), (110, 1_730_714)):   # He et al. 2016, Table 6: 0.27M and 1.7M
        model = CifarResNet(depth)
        assert sum(p.numel() for p in model.parameters()) == params
    names = set(CifarResNet(20).state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.2.conv2.weight", "layer2.0.downsample.0.weight",
            "layer3.0.downsample.1.running_mean", "fc.weight", "fc.bias"} <= names
    assert not any(n.startswith(("layer1.0.downsample", "layer2.1.downsample")) for n in names)


@pytest.mark.parametrize("normalization", ["standardize", "center", "none"])
def test_cohen_cifar_resnet20_matches_functional_forward(resnet20_file, normalization):
    path, sd = resnet20_file
    model = load_model({"name": "cohen-r20", "format": "cohen", "checkpoint": str(path), "dataset": "cifar10",
                        "normalization": normalization})
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    fed = {"standardize": (x - mean) / std, "center": x - mean, "none": x}[normalization]
    with torch.no_grad():
        expected = reference_cifar_resnet(sd, fed, blocks=3)
    assert max_diff(check_split(model, x), expected) <= TOL
    assert (model.backbone, model.head, model.lipschitz) == (None, None, None)
    assert model.input_shape == (3, 32, 32) and model.num_classes == 10 and model.format == "cohen"
    assert model.fingerprint == sha256_file(path)
    assert model.describe()["arch"] == "cifar_resnet20"


def test_cohen_resnet50_dataparallel_keys(tmp_path):
    torch.manual_seed(6)
    inner = resnet50(weights=None)
    randomize_batch_norm(inner, 7)
    inner.eval()
    path = tmp_path / "checkpoint.pth.tar"
    state = {"1.module." + k: v for k, v in inner.state_dict().items()}
    torch.save({"epoch": 90, "arch": "resnet50", "state_dict": state, "optimizer": {}}, path)
    model = load_model({"name": "cohen-r50", "format": "cohen", "checkpoint": str(path)})
    assert model.input_shape == (3, 224, 224) and model.num_classes == 1000
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = inner((x - mean) / std)
        assert max_diff(model.network(x), expected) <= TOL * max(1.0, float(expected.abs().max()))


def test_cohen_imagenet32_uses_salman_statistics_and_missing_bn_counters_are_tolerated(tmp_path):
    torch.manual_seed(9)
    inner = CifarResNet(110, 1000)
    randomize_batch_norm(inner, 10)
    path = tmp_path / "checkpoint.pth.tar"
    state = save_cohen(path, "imagenet32_resnet110", inner)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}   # older PyTorch files
    torch.save({"epoch": 1, "arch": "imagenet32_resnet110", "state_dict": state}, path)
    model = load_model({"name": "salman", "format": "cohen", "checkpoint": str(path)})
    assert model.num_classes == 1000 and model.describe()["mean"] == list(CIFAR10_MEAN)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        expected = inner.eval()((x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
                                / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))
    assert max_diff(check_split(model, x), expected) <= TOL


class Payload:
    """Unpickling this would create the folder named in ``marker`` (a stand-in for running any command)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_pickle_payload_is_refused_and_not_executed(tmp_path, user_module):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"arch": "cifar_resnet20", "state_dict": {"1.fc.weight": torch.zeros(10, 64)},
                "epoch": Payload(str(marker))}, path)
    for fmt, extra in (("cohen", {}), ("sll", {"dataset": "cifar10", "layout": FIXTURE_LAYOUT}),
                       ("torch", {"factory": "fars_user_model:build", "input_shape": [3, 8, 8]})):
        with pytest.raises(ModelSpecError, match="weights-only") as err:
            load_model({"name": "evil", "format": fmt, "checkpoint": str(path), **extra})
        assert err.value.key == "checkpoint"
    plain = tmp_path / "plain.pkl"
    with open(plain, "wb") as handle:
        pickle.dump({"state_dict": Payload(str(marker))}, handle, protocol=2)
    with pytest.raises(ModelSpecError, match="weights-only"):
        load_model({"name": "evil", "format": "cohen", "checkpoint": str(plain)})
    assert not marker.exists()


def test_cohen_bad_specs(resnet20_file, tmp_path):
    path, sd = resnet20_file
    spec = {"name": "r20", "format": "cohen", "checkpoint": str(path)}
    broken = tmp_path / "broken.pth.tar"
    torch.save({"arch": "cifar_resnet20", "state_dict": {"1." + k: v for k, v in sd.items() if k != "fc.bias"}},
               broken)
    vgg = tmp_path / "vgg.pth.tar"
    torch.save({"arch": "vgg16", "state_dict": {"1.fc.weight": torch.zeros(10, 64)}}, vgg)
    bad: list[tuple[dict, str, str]] = [
        ({**spec, "colour": "red"}, "colour", "unknown key"),
        ({**spec, "checkpoint": 3}, "checkpoint", "path string"),
        ({**spec, "checkpoint": str(tmp_path / "absent.pth.tar")}, "checkpoint", "does not exist"),
        ({**spec, "normalization": "whiten"}, "normalization", "unknown value"),
        ({**spec, "normalization": 1}, "normalization", "string"),
        ({**spec, "mean": [0.5, 0.5]}, "mean", "3 finite numbers"),
        ({**spec, "std": [0.5, 0.0, 0.5]}, "std", "positive"),
        ({**spec, "arch": "resnet50"}, "arch", "does not match"),
        ({**spec, "checkpoint": str(broken)}, "checkpoint", r"missing 1\.fc\.bias \[10\]"),
        ({**spec, "checkpoint": str(vgg)}, "checkpoint", "unknown arch 'vgg16'"),
        ({**spec, "dataset": "fashion-mnist"}, "dataset", "expects"),
        ({**spec, "format": "onnx"}, "format", "unknown value"),
        ({**spec, "name": 7}, "name", "non-empty string"),
    ]
    for case, key, message in bad:
        with pytest.raises(ModelSpecError, match=message) as err:
            load_model(case)
        assert err.value.key == key, case
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ModelSpecError, match="weights-only"):
        load_model({**spec, "checkpoint": str(text)})


# ---------------------------------------------------------------- torch (a user's factory)


@pytest.fixture
def user_module(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    import fars_user_model
    return fars_user_model


def torch_spec(**extra):
    return {"name": "user", "format": "torch", "factory": "fars_user_model:build", "input_shape": [3, 8, 8], **extra}


def test_torch_factory_with_checkpoint_and_split(user_module, tmp_path):
    original = user_module.build(seed=5).eval()
    path = tmp_path / "user.pt"
    torch.save(original.state_dict(), path)
    model = load_model(torch_spec(checkpoint=str(path), backbone="features", head="classifier", lipschitz=1.0,
                                  num_classes=5))
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert max_diff(check_split(model, x), original(x)) <= TOL
    assert model.backbone is model.network.features and model.lipschitz == 1.0
    assert model.fingerprint == sha256_file(path)
    assert model.describe()["audit"]["lower_bound"] <= 1.0 + 1e-4


def test_torch_factory_without_checkpoint_infers_classes_and_fingerprints_state(user_module):
    a = load_model(torch_spec(kwargs={"classes": 7, "seed": 1}))
    b = load_model(torch_spec(kwargs={"classes": 7, "seed": 1}))
    c = load_model(torch_spec(kwargs={"classes": 7, "seed": 2}))
    assert a.num_classes == 7 and not a.has_split
    assert a.fingerprint == b.fingerprint != c.fingerprint and len(a.fingerprint) == 64


def test_torch_declared_lipschitz_below_audit_is_refused(user_module):
    split = {"backbone": "features", "head": "classifier"}
    with pytest.raises(ModelSpecError, match="audit found a lower bound of 3") as err:
        load_model(torch_spec(kwargs={"gain": 3.0}, lipschitz=1.0, **split))
    assert err.value.key == "lipschitz"
    assert load_model(torch_spec(kwargs={"gain": 3.0}, lipschitz=3.0, **split)).lipschitz == 3.0


def test_torch_bad_specs(user_module, tmp_path):
    other = tmp_path / "other.pt"
    torch.save(user_module.build(classes=4).state_dict(), other)
    bad: list[tuple[dict, str, str]] = [
        (torch_spec(factory="fars_user_model.build"), "factory", "package.module:function"),
        (torch_spec(factory="no_such_module_xyz:build"), "factory", "cannot import"),
        (torch_spec(factory="fars_user_model:absent"), "factory", "no attribute"),
        (torch_spec(factory="fars_user_model:not_a_module"), "factory", "not an nn.Module"),
        (torch_spec(kwargs={"bogus": 1}), "factory", "failed"),
        (torch_spec(kwargs=[1]), "kwargs", "table"),
        (torch_spec(input_shape=[3, 8]), "input_shape", "3 positive integers"),
        (torch_spec(input_shape=[3, 9, 9]), "input_shape", "forward"),
        (torch_spec(num_classes=3), "num_classes", "returns 5 logits"),
        (torch_spec(num_classes=True), "num_classes", "integer"),
        (torch_spec(checkpoint=str(other)), "checkpoint", "mis-shaped"),
        (torch_spec(backbone="features", head="classifier"), "lipschitz", "required"),
        (torch_spec(lipschitz=1.0), "lipschitz", "needs 'backbone'"),
        (torch_spec(backbone="features", head="classifier", lipschitz=-1), "lipschitz", "positive"),
        (torch_spec(backbone="features", head="missing", lipschitz=1.0), "head", "no attribute"),
        (torch_spec(backbone="features", head="features", lipschitz=1.0), "head", "fails"),
        (torch_spec(kwargs={"skip": True}, backbone="features", head="classifier", lipschitz=1.0), "head",
         "does not reproduce"),
        (torch_spec(backbone="features", head="classifier.weight", lipschitz=1.0), "head", "not an nn.Module"),
    ]
    for case, key, message in bad:
        with pytest.raises(ModelSpecError, match=message) as err:
            load_model(case)
        assert err.value.key == key, case


# ---------------------------------------------------------------- fars-bench


def test_fars_bench_embedded_models_match_the_zoo():
    zoo = load_zoo(EMBEDDED)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(12))
    for kind in ("ce", "mlp"):
        model = load_model({"name": f"sll+{kind}", "format": "fars-bench", "checkpoint": str(EMBEDDED), "head": kind,
                            "dataset": "fashion-mnist-embedded"})
        with torch.no_grad():
            expected = zoo.heads[kind][0](zoo.backbone(x))
        assert max_diff(check_split(model, x), expected) <= TOL
        assert model.lipschitz == zoo.lipschitz == 1.0 and model.input_shape == (1, 28, 28)
        assert model.num_classes == 10 and (kind != "ce" or isinstance(model.head, nn.Linear))
        # the same fingerprint as the zoo's own listing of the folder (ModelZoo.experiment_models)
        assert model.fingerprint == (f"{sha256_file(EMBEDDED / 'sll-backbone.pt')}+"
                                     f"{sha256_file(EMBEDDED / f'head-{kind}.pt')}")
    cnn = load_model({"name": "cnn", "format": "fars-bench", "checkpoint": str(EMBEDDED), "cnn_sigma": 0.25})
    with torch.no_grad():
        assert max_diff(check_split(cnn, x), zoo.cnns[0.25][0](x)) <= TOL
    assert not cnn.has_split and cnn.fingerprint == sha256_file(EMBEDDED / "cnn-noise0.25.pt")


def test_fars_bench_bad_specs(tiny_zoo, tmp_path):
    spec = {"name": "fb", "format": "fars-bench", "checkpoint": str(tiny_zoo)}
    bad: list[tuple[dict, str, str]] = [
        ({**spec, "head": "margin"}, "head", "no head-margin"),
        ({**spec, "head": "softmax"}, "head", "unknown value"),
        ({**spec, "cnn_sigma": 0.5}, "cnn_sigma", "no CNN trained at noise 0.5"),
        ({**spec, "cnn_sigma": "0.25"}, "cnn_sigma", "number"),
        ({**spec, "head": "ce", "cnn_sigma": 0.25}, "head", "exactly one"),
        ({**spec, "checkpoint": str(tmp_path), "head": "ce"}, "checkpoint", "no sll-backbone"),
        ({**spec, "checkpoint": str(tmp_path / "absent"), "head": "ce"}, "checkpoint", "does not exist"),
    ]
    for case, key, message in bad:
        with pytest.raises(ModelSpecError, match=message) as err:
            load_model(case)
        assert err.value.key == key, case
    assert load_model({**spec, "head": "mlp"}).num_classes == 10


# ---------------------------------------------------------------- pieces


def test_input_normalization_is_stateless_and_knows_its_constant():
    norm = InputNormalization(CIFAR10_MEAN, CIFAR10_STD)
    assert norm.state_dict() == OrderedDict()
    assert math.isclose(norm.lipschitz, 1 / 0.1994, rel_tol=1e-6)
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(norm(x), (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
                          / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))
    with pytest.raises(ValueError):
        InputNormalization((0.5,), (0.0,))
    with pytest.raises(ValueError):
        norm(torch.rand(2, 1, 4, 4))


def test_loaded_model_invariants():
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="both"):
        LoadedModel("m", net, net, None, 1.0, (1, 1, 2), 2, "torch", "0" * 64)
    with pytest.raises(ValueError, match="Lipschitz"):
        LoadedModel("m", net, None, None, 1.0, (1, 1, 2), 2, "torch", "0" * 64)
    with pytest.raises(ValueError, match="positive"):
        LoadedModel("m", net, net, net, math.inf, (1, 1, 2), 2, "torch", "0" * 64)
    with pytest.raises(ModelSpecError, match="table"):
        load_model(["not", "a", "table"])  # type: ignore[arg-type]
