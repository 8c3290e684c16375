"""A model and a dataset that do not fit (input shape, classes) are refused in one line before any image is
read or downloaded: offline, with nothing written to the data folder."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torchvision

from bench import run
from bench.common.cli import run_cli
from bench.data import selection
from bench.models import templates


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, no torchvision download, no image read: each raises if reached."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("data was read or downloaded before the model/dataset check")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", refuse)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", refuse)
    monkeypatch.setattr(selection, "select_images", refuse)


def _experiment(tmp_path: Path, dataset: str, arch: str) -> Path:
    checkpoint = tmp_path / "model.pth.tar"
    templates.write_template("cohen", checkpoint, arch=arch)
    config = tmp_path / "experiment.toml"
    config.write_text(f'dataset = "{dataset}"\nmethods = ["cohen"]\n\n[models.mine]\nformat = "cohen"\n'
                      f'checkpoint = "{checkpoint}"\n')
    return config


def _refusal(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        run_cli(run.main, argv)
    message = str(info.value.code)
    assert "\n" not in message and message.startswith("error: ")
    return message


def test_cifar_model_on_fashion_mnist_is_refused_before_any_download(tmp_path: Path, offline: None) -> None:
    config = _experiment(tmp_path, "cifar10", "cifar_resnet20")
    data = tmp_path / "data"
    data.mkdir()
    message = _refusal(["--config", str(config), "--dataset", "fashion-mnist", "--data-root", str(data),
                        "--out", str(tmp_path / "out"), "--no-progress"])
    assert "fashion-mnist images are (1, 28, 28) but mine takes (3, 32, 32)" in message
    assert list(data.iterdir()) == []


def test_model_of_other_classes_is_refused_before_any_image_is_read(tmp_path: Path, offline: None) -> None:
    config = _experiment(tmp_path, "cifar10", "imagenet32_resnet110")      # 3 x 32 x 32 inputs, 1000 classes
    message = _refusal(["--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"])
    assert "cifar10 has 10 classes but mine has 1000" in message
