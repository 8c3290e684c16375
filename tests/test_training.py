"""Training loop: a short run lowers the loss, and an interrupted run resumes to the same weights."""

import contextlib

import torch

from bench.models.networks import backbone_training_head
from bench.models.training import fit
from fars import BackboneConfig, SLLBackbone
from fars.losses import sll_loss

CPU = torch.device("cpu")


def tiny_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()  # top half brighter than bottom
    return x, y


def make_model():
    torch.manual_seed(0)
    config = BackboneConfig(image_size=8, conv_width=4, conv_inner=4, conv_depth=1, stages=1, dense_depth=1,
                            dense_inner=16, embedding_dim=8)
    return torch.nn.Sequential(SLLBackbone(config), backbone_training_head(8, 2))


def train(model, epochs, resume_path, x, y):
    return fit("test", model, lambda a, b, _: sll_loss(model(a), b), x, y, epochs,
               lambda: torch.optim.Adam(model.parameters(), lr=1e-2), 32, 0, CPU, resume_path, progress=False)


def test_short_training_lowers_the_loss(tmp_path):
    x, y = tiny_problem()
    model = make_model()
    with torch.no_grad():
        before = float(sll_loss(model(x), y))
    history = train(model, 4, tmp_path / "r.pt", x, y)
    with torch.no_grad():
        after = float(sll_loss(model(x), y))
    assert after < 0.9 * before
    assert history[-1] < history[0]


def test_interrupted_training_resumes_to_identical_weights(tmp_path):
    x, y = tiny_problem()
    full = make_model()
    train(full, 3, tmp_path / "full.pt", x, y)
    assert torch.load(tmp_path / "full.pt", weights_only=False)["epoch"] == 3
    # a crash right after epoch 1 is saved: the resume file holds epoch 1, the run stops there
    import bench.models.training as bt

    interrupted = make_model()

    class Stop(Exception):
        pass

    calls = {"n": 0}
    original = bt.torch.save

    def save_then_maybe_stop(obj, path, *a, **k):
        original(obj, path, *a, **k)
        calls["n"] += 1
        if calls["n"] == 1:
            raise Stop

    bt.torch.save = save_then_maybe_stop
    try:
        with contextlib.suppress(Stop):
            train(interrupted, 3, tmp_path / "int.pt", x, y)
    finally:
        bt.torch.save = original
    assert torch.load(tmp_path / "int.pt", weights_only=False)["epoch"] == 1
    resumed = make_model()
    history = train(resumed, 3, tmp_path / "int.pt", x, y)
    assert len(history) == 3
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_train_command_writes_loadable_checkpoints_with_true_sidecars(tmp_path):
    """`python -m bench.train` on a sliver of Fashion-MNIST: every model is written, loads, and its
    recorded accuracy is what the loaded model scores."""
    import pytest

    from bench.data import DatasetUnavailableError, load_tensors
    from bench.models import load_zoo
    from bench.models.training import accuracy
    from bench.train import main

    try:
        x_test, y_test = load_tensors("fashion-mnist", "test", limit=200, download=False)
    except DatasetUnavailableError:
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    main(["all", "--out", str(tmp_path), "--backbone-epochs", "1", "--head-epochs", "1", "--cnn-epochs", "1",
          "--train-limit", "512", "--test-limit", "200", "--sigmas", "0.25", "--no-progress"])
    zoo = load_zoo(tmp_path)
    assert set(zoo.heads) == {"ce", "sparsemax", "margin", "mlp"} and set(zoo.cnns) == {0.25}
    assert not list(tmp_path.glob("*.resume.pt"))
    z = zoo.backbone(x_test)
    for kind, (head, meta) in zoo.heads.items():
        assert meta["clean_accuracy"] == accuracy(head, z, y_test, CPU), kind
        assert meta["backbone_sha256"] == zoo.backbone_meta["state_sha256"]
    cnn, meta = zoo.cnns[0.25]
    assert meta["clean_accuracy"] == accuracy(cnn, x_test, y_test, CPU)
    assert zoo.backbone_meta["lipschitz"]["audited_lower_bound"] <= 1.0 + 1e-4


class _Payload:
    """Unpickling this object creates a file: the way a crafted ``*.resume.pt`` would run code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_resume_file_cannot_run_code(tmp_path):
    import pickle

    import pytest

    marker = tmp_path / "pwned"
    resume = tmp_path / "crafted.resume.pt"
    torch.save({"model": _Payload(marker)}, resume)
    x, y = tiny_problem()
    with pytest.raises(pickle.UnpicklingError):
        train(make_model(), 1, resume, x, y)
    assert not marker.exists()
