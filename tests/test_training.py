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
          "--train-limit", "512", "--test-limit", "200", "--sigmas", "0.25", "--audit-images", "8",
          "--audit-iterations", "10", "--no-progress"])
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
    assert zoo.backbone_meta["lipschitz"]["audit"]["inputs"] == 8
    assert zoo.backbone_meta["training"]["audit_iterations"] == 10


class _Payload:
    """Unpickling this object creates a file: the way a crafted ``*.resume.pt`` would run code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_resume_file_cannot_run_code(tmp_path):
    import pytest

    from bench.models import CheckpointError

    marker = tmp_path / "pwned"
    resume = tmp_path / "crafted.resume.pt"
    torch.save({"model": _Payload(marker)}, resume)
    x, y = tiny_problem()
    with pytest.raises(CheckpointError, match="not a resume file .* not loaded as code. Delete it"):
        train(make_model(), 1, resume, x, y)
    assert not marker.exists()


def test_a_foreign_or_empty_resume_file_is_refused_with_a_clear_error(tmp_path):
    import pytest

    from bench.models import CheckpointError

    x, y = tiny_problem()
    for name, content in (("empty", None), ("list", [1, 2]), ("other", {"model": {}})):
        resume = tmp_path / f"{name}.resume.pt"
        if content is None:
            resume.write_bytes(b"")
        else:
            torch.save(content, resume)
        with pytest.raises(CheckpointError, match="not a resume file"):
            train(make_model(), 1, resume, x, y)


def test_crop_and_flip_is_a_padded_crop_then_a_mirror_per_image():
    from bench.models.training import crop_and_flip

    torch.manual_seed(0)
    x = torch.rand(64, 3, 32, 32)
    out = crop_and_flip(x)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for image, source in zip(out, padded, strict=True):
        found = [(i, j, f) for i in range(9) for j in range(9) for f in (False, True)
                 if torch.equal(image, (lambda c: c.flip(-1) if f else c)(source[:, i:i + 32, j:j + 32]))]
        assert found, "not a crop of the padded image"
        flips += found[0][2]
    assert 10 < flips < 54   # about half are mirrored


def test_training_settings_follow_the_data_set():
    from bench.models.training import cifar_sized, default_epochs

    assert cifar_sized((3, 32, 32)) and not cifar_sized((1, 28, 28)) and not cifar_sized((3, 224, 224))
    assert default_epochs((1, 28, 28)) == (12, 60, 8)
    assert default_epochs((3, 32, 32))[0] > 12


def test_train_flags_are_checked_before_any_work(tmp_path, capsys):
    import pytest

    from bench.common.env import EMBEDDED_MODELS
    from bench.train import build_parser, parse_args

    args = parse_args(["--dataset", "CIFAR10", "--out", str(tmp_path / "m"), "--data-root", str(tmp_path)])
    assert args.dataset == "cifar10" and args.backbone_epochs is None and args.out.is_dir()
    for argv, fragment in (
            (["--dataset", "imagefolder"], "needs --data-root"),
            (["--data-root", str(tmp_path / "missing")], "does not exist"),
            (["--out", str(EMBEDDED_MODELS)], "--overwrite-shipped"),
            (["--audit-images", "0"], "--audit-images must be >= 1"),
            (["--sigmas", "nan"], "finite"),
            (["--dataset", "fashion-mnist-embedded"], "evaluation subset")):
        with pytest.raises(SystemExit) as info:
            parse_args(argv)
        assert info.value.code == 2
        assert fragment in capsys.readouterr().err
    for action in build_parser()._actions:
        assert action.help, f"{action.dest} has no help line"
