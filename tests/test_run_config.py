"""``python -m bench.run --config`` end to end on the field's formats: an SLL-authors checkpoint certified by
cohen, fars-mc and fars-closed, and a Cohen et al. ResNet certified by cohen, on a CIFAR-10 fixture written
in torchvision's on-disk format (the path a user's real files take)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import SMALL_ATTACK

from bench import attack
from bench.data.cifar import write_random_cifar10
from bench.models import load_model
from bench.models.cifar_resnet import CifarResNet
from bench.run import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SLL_LAYOUT = 'layout = {n_conv = 2, n_dense = 2, width = 4, conv_inner = 3, dense_inner = 16}'


def write_cohen_resnet20(path: Path, seed: int = 1) -> None:
    """A random-weight CIFAR ResNet-20 saved as Cohen et al.'s checkpoint.pth.tar ({'arch', 'state_dict'},
    keys under '1.' behind their state-free normalisation layer)."""
    torch.manual_seed(seed)
    net = CifarResNet(20, 10)
    state = {f"1.{k}": v for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "arch": "cifar_resnet20", "state_dict": state, "optimizer": {}}, path)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("field")
    write_random_cifar10(root / "data", test_images=6)
    write_cohen_resnet20(root / "models" / "resnet20" / "checkpoint.pth.tar")
    shutil.copy(FIXTURES / "sll_authors" / "model.ckpt-0.pth", root / "models" / "sll.ckpt")
    config = root / "experiment.toml"
    config.write_text(f"""
dataset = "cifar10"
data_root = "data"
methods = ["cohen", "fars-mc", "fars-closed"]
sigma = [0.25]
n0 = 20
n = 200
num_images = 4
skip = 1
scaling_ns = []

[models.sll-tiny]
format = "sll"
checkpoint = "models/sll.ckpt"
{SLL_LAYOUT}

[models.resnet20]
format = "cohen"
checkpoint = "models/resnet20/checkpoint.pth.tar"
arch = "cifar_resnet20"
methods = ["cohen"]
""")
    return config


def test_config_run_certifies_sll_and_cohen_models(experiment: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["--config", str(experiment), "--out", str(out), "--no-attack", "--no-progress", "--batch-size", "64"])
    rows = pd.read_csv(out / "certify.tsv", sep="\t")
    runs = set(zip(rows["method"], rows["model"], strict=True))
    assert runs == {("cohen", "sll-tiny"), ("fars-mc", "sll-tiny"), ("fars-closed", "sll-tiny"),
                    ("cohen", "resnet20")}
    assert rows.groupby(["method", "model"]).size().eq(4).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["config"]["models"]) == {"sll-tiny", "resnet20"}
    assert manifest["experiment_file"] == str(experiment.resolve())
    assert manifest["machine"]["torch_threads"] >= 1
    # fars-closed is the SLL authors' certificate: the pairwise margin of the normalised last layer
    model = load_model({"name": "m", "format": "sll", "dataset": "cifar10",
                        "checkpoint": str(experiment.parent / "models" / "sll.ckpt"),
                        "layout": {"n_conv": 2, "n_dense": 2, "width": 4, "conv_inner": 3, "dense_inner": 16}})
    closed = rows[rows["method"] == "fars-closed"].sort_values("idx")
    assert (closed["radius"] >= 0).all() and closed["predict"].ge(0).all()
    assert model.lipschitz == 1.0
    # resuming the same experiment adds nothing; another sigma is refused
    main(["--config", str(experiment), "--out", str(out), "--no-attack", "--no-progress", "--batch-size", "64"])
    assert len(pd.read_csv(out / "certify.tsv", sep="\t")) == len(rows)
    with pytest.raises(SystemExit, match="differs"):
        main(["--config", str(experiment), "--out", str(out), "--no-attack", "--no-progress", "--sigma", "0.5"])


def test_config_run_with_the_attack_stage_on_field_models(experiment: Path, tmp_path: Path) -> None:
    out = tmp_path / "attacked"
    small = experiment.with_name("small-attack.toml")   # beside the original: its relative paths hold
    small.write_text(experiment.read_text() + "\n" + SMALL_ATTACK)
    main(["--config", str(small), "--out", str(out), "--no-progress", "--num-images", "2", "--n", "100",
          "--batch-size", "64"])
    soundness = pd.read_csv(out / "soundness.csv")
    assert set(soundness["model"]) == {"sll-tiny"} and soundness["broken"].eq(0).all()
    audit = json.loads((out / "lipschitz_audit.json").read_text())
    assert audit["declared"] == 1.0 and audit["confirms"]
    # bench.attack finds the run's models again through the experiment file named in its manifest
    again = tmp_path / "again"
    assert attack.main(["--results", str(out), "--out", str(again), "--no-progress", "--steps", "3", "--restarts", "1",
                        "--min-norm-steps", "3", "--mc-sample", "0", "--lipschitz-images", "1"]) == 0
    assert set(pd.read_csv(again / "soundness.csv")["model"]) == {"sll-tiny"}


@pytest.mark.parametrize(("extra", "flags", "fragment"), [
    ('[models.resnet20]\nformat = "cohen"\ncheckpoint = "models/resnet20/checkpoint.pth.tar"\nmethods = ["fars-mc"]',
     [], "no Lipschitz backbone"),
    ('[models.x]\nformat = "cohen"\ncheckpoint = "nowhere.pth.tar"', [], "cannot load the models"),
    ('[models.x]\nformat = "sll"\ncheckpoint = "models/sll.ckpt"\n' + SLL_LAYOUT, ["--dataset", "fashion-mnist"],
     "dataset"),
    # a 5-class model of the user's on 10-class CIFAR-10: its labels live in another label space
    ('[models.x]\nformat = "torch"\nfactory = "fars_user_model:build"\ninput_shape = [3, 32, 32]\n'
     'kwargs = {side = 32, classes = 5}', [], "has 5"),
    # FaRS only, on a model without a Lipschitz split: the message says what each model can take
    ('methods = ["fars-mc"]\n[models.x]\nformat = "torch"\nfactory = "fars_user_model:build"\n'
     'input_shape = [3, 32, 32]\nkwargs = {side = 32, classes = 10}', [], "x: cohen"),
])
def test_models_that_cannot_run_are_refused_in_one_line(experiment: Path, tmp_path: Path, extra: str,
                                                        flags: list[str], fragment: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))   # the user's model module, importable as on their PYTHONPATH
    config = experiment.parent / f"bad-{abs(hash(extra)) % 10_000}.toml"
    methods, _, tables = extra.rpartition("[models.") if extra.startswith("methods") else ("", "", extra)
    body = f"{methods}[models.{tables}" if methods else tables
    config.write_text(f'dataset = "cifar10"\ndata_root = "data"\nnum_images = 2\nskip = 1\nscaling_ns = []\n{body}\n')
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "--out", str(tmp_path / "o"), "--no-attack", "--no-progress", *flags])
    assert fragment in str(exit_.value) and "\n" not in str(exit_.value).strip()


def test_config_run_times_a_user_torch_model_with_a_lipschitz_split(experiment: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The scaling stage times a user's ``torch``-format model with a Lipschitz split: scaling.csv, the figure,
    the cost model and the manifest's record name it, and one line on stderr says what was timed."""
    monkeypatch.syspath_prepend(str(FIXTURES))   # the user's model module, importable as on their PYTHONPATH
    config = experiment.parent / "user-scaling.toml"
    config.write_text('dataset = "cifar10"\ndata_root = "data"\nskip = 1\nsigma = [0.25]\nscaling_ns = [10, 20]\n'
                      '[models.user-split]\nformat = "torch"\nfactory = "fars_user_model:build"\n'
                      'input_shape = [3, 32, 32]\nkwargs = {side = 32, classes = 10}\n'
                      'backbone = "features"\nhead = "classifier"\nlipschitz = 1.0\n')
    out = tmp_path / "out"
    main(["--config", str(config), "--out", str(out), "--num-images", "2", "--n0", "10", "--n", "20", "--no-attack",
          "--no-progress", "--batch-size", "64"])
    scaling = pd.read_csv(out / "scaling.csv")
    assert set(scaling["model"]) == {"user-split"}
    assert list(zip(scaling["method"], scaling["n"], strict=True)) == [
        ("cohen", 10), ("fars-mc", 10), ("cohen", 20), ("fars-mc", 20), ("fars-closed", 0)]
    assert (scaling["seconds"] > 0).all() and (scaling["images"] == 2).all()
    assert (out / "scaling.png").is_file() and (out / "cost_model.csv").is_file()
    assert json.loads((out / "manifest.json").read_text())["scaling"]["model"] == "user-split"
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("scaling sweep")]
    assert lines == ["scaling sweep: times user-split with cohen, fars-mc, fars-closed"]
