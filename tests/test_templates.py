"""Checkpoints a user can produce from the docs: each format's layout (keys and shapes) as the loaders expect it,
``python -m bench.models template`` files that load, ``docs/model-formats.md`` generated from the same code, load
errors that list every missing, unexpected and mis-shaped key with its expected shape, and an audit that states
its budget and shows progress."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import torch

from bench.common.cli import run_cli
from bench.common.experiment import DEFAULT_CONFIG
from bench.models import ModelSpecError, cohen_format, load_model, sll_format, templates
from bench.models import __main__ as models_cli
from bench.models.keys import INLINE_LINES
from bench.models.loaded import split_network

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _template(tmp_path: Path, *flags: str) -> Path:
    out = tmp_path / "template.pt"
    assert run_cli(models_cli.main, ["template", *flags, "--out", str(out)]) == 0
    return out


def test_the_command_offers_the_loaders_archs_sizes_and_datasets() -> None:
    assert tuple(cohen_format.ARCHS) == models_cli.COHEN_ARCHS
    assert tuple(sll_format.SLL_SIZES) == models_cli.SLL_SIZES
    assert tuple(sll_format.SLL_DATASETS) == models_cli.SLL_DATASETS
    assert models_cli.FORMATS == templates.TEMPLATE_FORMATS


def test_docs_list_the_layouts_the_loaders_expect() -> None:
    """docs/model-formats.md is the output of `python -m bench.models layout --all` (regenerate it when this fails)."""
    assert (ROOT / "docs" / "model-formats.md").read_text() == templates.formats_markdown() + "\n"


@pytest.mark.parametrize("arch", ["cifar_resnet20", "cifar_resnet110", "imagenet32_resnet110"])
def test_cohen_template_is_written_and_loaded(tmp_path: Path, arch: str) -> None:
    path = _template(tmp_path, "--format", "cohen", "--arch", arch)
    payload = torch.load(path, weights_only=True)
    assert payload["arch"] == arch and set(payload) == {"epoch", "arch", "state_dict"}
    (expected,) = templates.layout("cohen", arch=arch).values()
    assert {k: tuple(v.shape) for k, v in payload["state_dict"].items()} == expected
    model = load_model({"name": "m", "format": "cohen", "checkpoint": str(path)})
    depth, shape, classes, _, _ = cohen_format.ARCHS[arch]
    assert (model.input_shape, model.num_classes) == (shape, classes)
    with torch.no_grad():
        assert model.network(torch.rand(2, *shape)).shape == (2, classes)


def test_resnet50_layout_is_the_loaders_network_without_allocating() -> None:
    (expected,) = templates.layout("cohen", arch="resnet50").values()
    with torch.device("meta"):
        saved, inner = cohen_format.build_classifier("resnet50")
    assert expected == {f"1.{k}": tuple(v.shape) for k, v in saved.state_dict().items()}
    assert expected["1.module.conv1.weight"] == (64, 3, 7, 7) and expected["1.module.fc.weight"] == (1000, 2048)


def test_sll_small_template_is_written_and_loaded(tmp_path: Path) -> None:
    path = _template(tmp_path, "--format", "sll", "--size", "small")
    payload = torch.load(path, weights_only=True)
    (expected,) = templates.layout("sll", size="small").values()
    assert {k: tuple(v.shape) for k, v in payload["model_state_dict"].items()} == expected
    model = load_model({"name": "m", "format": "sll", "checkpoint": str(path), "size": "small",
                        "dataset": "cifar10"})
    assert model.input_shape == (3, 32, 32) and model.num_classes == 10 and model.lipschitz == 1.0
    with torch.no_grad():
        assert model.network(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("dataset", sorted(sll_format.SLL_DATASETS))
@pytest.mark.parametrize("size", sorted(sll_format.SLL_SIZES))
def test_every_sll_layout_converts_into_the_loaders_network(size: str, dataset: str) -> None:
    """Every size on every dataset, on the meta device: the listed keys map onto the network the loader builds,
    shape for shape (what a real file of that layout goes through, without allocating gigabytes)."""
    layout = sll_format.SLL_SIZES[size]
    (expected,) = templates.layout("sll", size=size, dataset=dataset).values()
    prefix = "module.model.model."
    with torch.device("meta"):
        state = {k[len(prefix):]: torch.empty(s) for k, s in expected.items()}
        converted = sll_format._convert(state, layout, dataset)
        network = split_network(*sll_format._build(layout, dataset))
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in network.state_dict().items()}


def test_torch_template_is_written_and_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))
    path = _template(tmp_path, "--format", "torch", "--factory", "fars_user_model:build", "--kwargs",
                     '{"classes": 7}')
    model = load_model({"name": "m", "format": "torch", "factory": "fars_user_model:build", "kwargs": {"classes": 7},
                        "checkpoint": str(path), "input_shape": [3, 8, 8]})
    assert model.num_classes == 7


def test_fars_bench_layout_is_that_of_the_shipped_checkpoints() -> None:
    from bench.common.env import EMBEDDED_MODELS

    listed = templates.layout("fars-bench")
    for weights in sorted(EMBEDDED_MODELS.glob("*.pt")):
        name = "cnn-noiseS.pt" if weights.name.startswith("cnn-noise") else weights.name
        state = torch.load(weights, weights_only=True)
        assert {k: tuple(v.shape) for k, v in state.items()} == listed[name], weights.name


def test_fars_bench_template_folder_is_written_and_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    assert run_cli(models_cli.main, ["template", "--format", "fars-bench", "--out", str(folder)]) == 0
    listed = templates.layout("fars-bench")
    for weights in sorted(folder.glob("*.pt")):
        name = "cnn-noiseS.pt" if weights.name.startswith("cnn-noise") else weights.name
        state = torch.load(weights, weights_only=True)
        assert {k: tuple(v.shape) for k, v in state.items()} == listed[name], weights.name
    assert {p.name for p in folder.glob("*.pt")} == {*listed} - {"cnn-noiseS.pt"} | {"cnn-noise0.25.pt"}
    head = load_model({"name": "m", "format": "fars-bench", "checkpoint": str(folder), "head": "mlp"})
    cnn = load_model({"name": "c", "format": "fars-bench", "checkpoint": str(folder), "cnn_sigma": 0.25})
    assert head.lipschitz == 1.0 and head.input_shape == cnn.input_shape == (1, 28, 28)


def test_template_and_info_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _template(tmp_path, "--format", "cohen", "--arch", "cifar_resnet20")
    table = capsys.readouterr().err
    assert 'format = "cohen"' in table and 'arch = "cifar_resnet20"' in table
    config = tmp_path / "experiment.toml"
    config.write_text(f'dataset = "cifar10"\n\n[models.mine]\nformat = "cohen"\ncheckpoint = "{path}"\n')
    assert run_cli(models_cli.main, ["info", "--config", str(config), "--images", "0", "--audit-images", "0"]) == 0
    out = capsys.readouterr().out
    assert "mine (cohen)" in out and "input (3, 32, 32); 10 classes" in out
    assert run_cli(models_cli.main, ["layout", "--checkpoint", str(path)]) == 0
    assert "| `1.layer1.{0..2}.conv1.weight` | `[16, 16, 3, 3]` |" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--format", "cohen"], ["--format", "sll"], ["--format", "torch"]])
def test_template_without_its_arch_size_or_factory_is_a_usage_error(tmp_path: Path, flags: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(models_cli.main, ["template", *flags, "--out", str(tmp_path / "x.pt")])
    assert info.value.code == 2 and not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------- load errors list every key with its shape


def test_missing_key_error_lists_each_key_with_its_expected_shape(tmp_path: Path) -> None:
    path = _template(tmp_path, "--format", "cohen", "--arch", "cifar_resnet20")
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["1.fc.weight"], payload["state_dict"]["1.layer3.2.conv2.weight"]
    payload["state_dict"]["1.bn1.bias"] = torch.zeros(17)
    torch.save(payload, path)
    with pytest.raises(ModelSpecError) as err:
        load_model({"name": "m", "format": "cohen", "checkpoint": str(path)})
    message = str(err.value)
    assert "\n" not in message and "2 missing, 1 mis-shaped key(s)" in message
    assert "missing 1.fc.weight [10, 64]" in message and "missing 1.layer3.2.conv2.weight [64, 64, 3, 3]" in message
    assert "mis-shaped 1.bn1.bias: file [17], expected [16]" in message


def test_a_long_listing_goes_to_a_file_named_in_the_one_line_error(tmp_path: Path) -> None:
    path = _template(tmp_path, "--format", "sll", "--size", "small")
    payload = torch.load(path, weights_only=True)
    state = payload["model_state_dict"]
    for key in [k for k in state if k.endswith(".q")]:          # every q (27 keys) missing
        del state[key]
    state["module.model.model.99.extra"] = torch.zeros(3)
    torch.save(payload, path)
    with pytest.raises(ModelSpecError) as err:
        load_model({"name": "m", "format": "sll", "checkpoint": str(path), "size": "small", "dataset": "cifar10"})
    message = str(err.value)
    assert "\n" not in message and "27 missing, 1 unexpected key(s)" in message
    listing = Path(message.split(" in ", 1)[1].split(" (first:", 1)[0])
    try:
        lines = listing.read_text().splitlines()
        assert len([line for line in lines if line.startswith(("missing", "unexpected"))]) == 28 > INLINE_LINES
        assert "missing module.model.model.1.q [5]" in lines and "missing module.model.model.23.q [2048]" in lines
        assert "unexpected module.model.model.99.extra [3]" in lines
    finally:
        listing.unlink()


# ---------------------------------------------------------- the audit of `info` states its budget, shows progress


def test_info_states_the_audit_budget_and_shows_progress(capsys: pytest.CaptureFixture[str]) -> None:
    config = DEFAULT_CONFIG
    assert run_cli(models_cli.main, ["info", "--config", str(config), "--images", "0", "--audit-images", "1",
                                     "--audit-iterations", "2"]) == 0
    captured = capsys.readouterr()
    assert "8 steps (2 power iterations, then 2 pair-ascent steps at each of 3 starting scales)" in captured.err
    assert "audit sll+ce: " in captured.err and "/8 [" in captured.err     # the tqdm bar on stderr
    assert captured.err.count("auditing") == 1       # one backbone under four heads: audited once
    assert "audited lower bound" in captured.out
    assert run_cli(models_cli.main, ["info", "--config", str(config), "--images", "0", "--audit-images", "1",
                                     "--audit-iterations", "2", "--no-progress"]) == 0
    assert "/8 [" not in capsys.readouterr().err


# ---------------------------------------------------------- where a checkpoint goes, which keys a table takes


def test_config_comments_put_the_checkpoint_where_the_table_reads_it() -> None:
    """A path in an experiment file's comments that names its checkpoint (same folder and file name) is, taken
    from the checkout's root as the comments say, the file the table's ``checkpoint`` (relative to the file) is;
    a checkpoint outside the file's folder is not said to lie "next to this file"."""
    checked = 0
    for config in sorted((ROOT / "configs").glob("*.toml")):
        text = config.read_text()
        comments = " ".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
        for table in tomllib.loads(text).get("models", {}).values():
            target = (config.parent / table.get("checkpoint", "")).resolve()
            if not target.is_relative_to(config.parent.resolve()):
                assert "next to this file" not in comments, config.name
            for token in re.findall(r"[\w./-]+", comments):
                named = Path(token)
                if named.name == target.name and named.parent.name == target.parent.name:
                    assert (ROOT / named).resolve() == target, (config.name, token)
                    checked += 1
    assert checked >= 1


def test_docs_cohen_row_names_every_key_of_the_cohen_format() -> None:
    row = next(line for line in (ROOT / "docs" / "models.md").read_text().splitlines()
               if line.startswith("| `cohen` |") and "checkpoint.pth.tar" in line)      # the formats table
    keys_column = row.split("|")[3]
    assert all(f"`{key}`" in keys_column for key in cohen_format.KEYS), keys_column
