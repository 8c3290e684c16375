"""Checkpoints: round trip, and every kind of mismatch is refused with a clear message."""

import json
import math
import re

import pytest
import torch

from bench.models import checkpoints as ckpt
from bench.models.networks import CNNConfig, HeadConfig, SmallCNN, build_head
from fars import BackboneConfig, SLLBackbone

TINY = BackboneConfig(image_size=8, conv_width=4, conv_inner=4, conv_depth=1, stages=1, dense_depth=1,
                      dense_inner=8, embedding_dim=6)


def save_backbone(tmp_path, audited=0.5, declared=1.0, name="sll-backbone"):
    torch.manual_seed(0)
    backbone = SLLBackbone(TINY)
    meta = ckpt.save_checkpoint(backbone, tmp_path / name, {
        "kind": "backbone", "architecture": TINY.to_dict(),
        "lipschitz": {"declared": declared, "audited_lower_bound": audited}})
    return backbone, meta


def save_head(tmp_path, backbone_meta, kind="ce", embedding_dim=6):
    config = HeadConfig(kind, embedding_dim, 10)
    head = build_head(config)
    ckpt.save_checkpoint(head, tmp_path / f"head-{kind}", {
        "kind": "head", "architecture": config.to_dict(), "backbone_sha256": backbone_meta["state_sha256"]})
    return head


def test_round_trip_restores_weights_and_sidecar(tmp_path):
    backbone, meta = save_backbone(tmp_path)
    loaded, sidecar = ckpt.load_backbone(tmp_path / "sll-backbone")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), backbone.eval()(x))
    assert sidecar["state_sha256"] == ckpt.sha256_file(tmp_path / "sll-backbone.pt")
    assert {"versions", "git_commit", "created"} <= set(sidecar)
    head = save_head(tmp_path, meta)
    loaded_head, _ = ckpt.load_head(tmp_path / "head-ce", meta)
    z = torch.rand(2, 6)
    assert torch.equal(loaded_head(z), head(z))


def test_architecture_mismatch_is_refused(tmp_path):
    save_backbone(tmp_path)
    meta_path = tmp_path / "sll-backbone.json"
    meta = json.loads(meta_path.read_text())
    meta["architecture"]["dense_inner"] = 9
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match=r"mis-shaped 4\.weight: file \[8, 64\], expected \[9, 64\]"):
        ckpt.load_backbone(tmp_path / "sll-backbone")


def test_swapped_weights_file_is_refused(tmp_path):
    save_backbone(tmp_path, name="a")
    torch.manual_seed(1)
    other = SLLBackbone(TINY)
    torch.save(other.state_dict(), tmp_path / "a.pt")
    with pytest.raises(ckpt.CheckpointError, match="does not match its sidecar"):
        ckpt.load_backbone(tmp_path / "a")


def test_missing_keys_are_refused_never_loaded_loosely(tmp_path):
    _, meta = save_backbone(tmp_path)
    config = HeadConfig("mlp", 6, 10)
    ckpt.save_checkpoint(torch.nn.Linear(6, 10), tmp_path / "head-mlp", {
        "kind": "head", "architecture": config.to_dict(), "backbone_sha256": meta["state_sha256"]})
    with pytest.raises(ckpt.CheckpointError, match=r"4 missing.*: missing 0\.weight \[128, 6\]"):
        ckpt.load_head(tmp_path / "head-mlp", meta)


def test_head_of_another_backbone_is_refused(tmp_path):
    _, meta = save_backbone(tmp_path)
    save_head(tmp_path, {**meta, "state_sha256": "0" * 64})
    with pytest.raises(ckpt.CheckpointError, match="trained on backbone"):
        ckpt.load_head(tmp_path / "head-ce", meta)


def test_backbone_failing_its_audit_is_refused(tmp_path):
    save_backbone(tmp_path, audited=1.01, declared=1.0)
    with pytest.raises(ckpt.CheckpointError, match="exceeds the declared constant"):
        ckpt.load_backbone(tmp_path / "sll-backbone")


def test_declared_constant_below_proof_is_refused(tmp_path):
    save_backbone(tmp_path, audited=0.3, declared=0.5)
    with pytest.raises(ckpt.CheckpointError, match="below the architecture's proven bound"):
        ckpt.load_backbone(tmp_path / "sll-backbone")


def test_wrong_kind_and_missing_files(tmp_path):
    model = SmallCNN(CNNConfig())
    ckpt.save_checkpoint(model, tmp_path / "cnn", {"kind": "cnn", "architecture": CNNConfig().to_dict()})
    with pytest.raises(ckpt.CheckpointError, match="expected 'backbone'"):
        ckpt.load_backbone(tmp_path / "cnn")
    loaded, _ = ckpt.load_cnn(tmp_path / "cnn")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_cnn(tmp_path / "nothing")


def test_names_with_dots_keep_their_own_files(tmp_path):
    """cnn-noise0.12 and cnn-noise0.25 must not both land in cnn-noise0.pt."""
    for sigma in (0.12, 0.25):
        torch.manual_seed(int(sigma * 100))
        ckpt.save_checkpoint(SmallCNN(CNNConfig(width=2, hidden=4)), tmp_path / f"cnn-noise{sigma:.2f}",
                             {"kind": "cnn", "architecture": CNNConfig(width=2, hidden=4).to_dict(),
                              "noise_sigma": sigma})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cnn-noise0.12.json", "cnn-noise0.12.pt", "cnn-noise0.25.json", "cnn-noise0.25.pt"]
    assert ckpt.load_cnn(tmp_path / "cnn-noise0.12")[1]["noise_sigma"] == 0.12
    assert ckpt.load_cnn(tmp_path / "cnn-noise0.25.pt")[1]["noise_sigma"] == 0.25


def test_git_commit_is_dirty_for_code_changes_only(tmp_path):
    """A regeneration rewrites results/ while it runs: that must not mark the code as dirty."""
    import shutil
    import subprocess

    from bench.common.provenance import git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    assert git_commit(tmp_path) == "unknown"
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    clean = git_commit(tmp_path)
    assert clean and clean != "unknown" and not clean.endswith("-dirty")
    (tmp_path / "results" / "table.csv").write_text("b\n")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == clean + "-dirty"


def test_a_head_saved_under_another_kinds_name_is_refused(tmp_path):
    """head-ce.{pt,json} holding the margin head (files copied or swapped) must not run as the ce head."""
    import shutil

    from bench.common.env import EMBEDDED_MODELS
    from bench.models import load_zoo

    for name in ("sll-backbone", "head-ce", "head-margin"):
        for suffix in (".pt", ".json"):
            shutil.copy(EMBEDDED_MODELS / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    assert sorted(load_zoo(tmp_path).heads) == ["ce", "margin"]
    for suffix in (".pt", ".json"):
        shutil.copy(EMBEDDED_MODELS / f"head-margin{suffix}", tmp_path / f"head-ce{suffix}")
    with pytest.raises(ckpt.CheckpointError, match="renamed or swapped"):
        load_zoo(tmp_path)


# --- one validation of every sidecar field, and of the state file ------------------------------------------------


def _edit_sidecar(stem, edit):
    path = stem.with_name(stem.name + ".json")
    meta = json.loads(path.read_text())
    meta = edit(meta)
    path.write_text(json.dumps(meta))   # json.dumps writes NaN / Infinity tokens, which json.loads reads back


def _set(path, value):
    """An edit that sets the dotted ``path`` of the sidecar to ``value``."""
    def edit(meta):
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value
        return meta
    return edit


def _delete(key):
    def edit(meta):
        del meta[key]
        return meta
    return edit


SIDECAR_CASES = [
    # (checkpoint, edit, message fragment)
    ("backbone", _set("lipschitz.audited_lower_bound", math.nan), "'lipschitz.audited_lower_bound' must be a finite"),
    ("backbone", _set("lipschitz.audited_lower_bound", "0.5"), "'lipschitz.audited_lower_bound' must be a finite"),
    ("backbone", _set("lipschitz.audited_lower_bound", -0.1), "'lipschitz.audited_lower_bound' must be a finite"),
    ("backbone", _set("lipschitz.declared", math.inf), "'lipschitz.declared' must be a finite number > 0"),
    ("backbone", _set("lipschitz.declared", True), "'lipschitz.declared' must be a finite number > 0"),
    ("backbone", _set("lipschitz.declared", None), "'lipschitz.declared' must be a finite number > 0"),
    ("backbone", _delete("lipschitz"), "records no declared/audited Lipschitz constant"),
    ("backbone", _set("architecture", [1, 2]), "'architecture' must be an object"),
    ("backbone", _set("architecture.image_size", "8"), "'architecture.image_size' must be an integer >= 1"),
    ("backbone", _set("architecture.embedding_dim", 0), "'architecture.embedding_dim' must be an integer >= 1"),
    ("backbone", _set("dataset", "fashion-mnist"), "its dataset 'fashion-mnist' has 1x28x28 images"),
    ("backbone", _set("dataset", 7), "'dataset' must be a dataset name"),
    ("backbone", _set("format", "1"), "unsupported checkpoint format"),
    ("backbone", _set("format", True), "unsupported checkpoint format"),
    ("backbone", _set("kind", "weights"), "field 'kind' must be one of"),
    ("backbone", _set("name", 3), "field 'name' must be a non-empty string"),
    ("backbone", _set("state_sha256", "xyz"), "'state_sha256' must be a SHA-256"),
    ("backbone", lambda meta: [meta], "a sidecar must be a JSON object"),
    ("head", _set("backbone_sha256", None), "'backbone_sha256' must be a SHA-256"),
    ("head", _set("architecture.num_classes", 2.5), "'architecture.num_classes' must be an integer"),
    ("head", _set("architecture.kind", 3), "'architecture.kind' must be a string"),
    ("cnn", _set("noise_sigma", math.nan), "'noise_sigma' must be a finite number > 0"),
    ("cnn", _set("noise_sigma", -0.25), "'noise_sigma' must be a finite number > 0"),
    ("cnn", _set("noise_sigma", "0.25"), "'noise_sigma' must be a finite number > 0"),
    ("cnn", _set("dataset", "cifar10"), "its dataset 'cifar10' has 3x32x32 images"),
]


def _saved_models(tmp_path):
    _, meta = save_backbone(tmp_path)
    save_head(tmp_path, meta)
    config = CNNConfig(width=2, hidden=4)
    ckpt.save_checkpoint(SmallCNN(config), tmp_path / "cnn-noise0.25", {
        "kind": "cnn", "architecture": config.to_dict(), "noise_sigma": 0.25, "dataset": "fashion-mnist"})
    return {"backbone": (tmp_path / "sll-backbone", ckpt.load_backbone),
            "head": (tmp_path / "head-ce", lambda stem: ckpt.load_head(stem, meta)),
            "cnn": (tmp_path / "cnn-noise0.25", ckpt.load_cnn)}


@pytest.mark.parametrize(("which", "edit", "fragment"), SIDECAR_CASES,
                         ids=[f"{c[0]}-{c[2][:40]}" for c in SIDECAR_CASES])
def test_every_sidecar_field_is_validated(tmp_path, which, edit, fragment):
    stem, load = _saved_models(tmp_path)[which]
    load(stem)   # valid before the edit
    _edit_sidecar(stem, edit)
    with pytest.raises(ckpt.CheckpointError, match=re.escape(fragment)) as info:
        load(stem)
    assert str(stem) in str(info.value)   # the message names the file


def _replace_state(stem, write):
    """Write other content into STEM.pt and record its hash in the sidecar (as a consistent pair would)."""
    weights = stem.with_name(stem.name + ".pt")
    write(weights)
    _edit_sidecar(stem, _set("state_sha256", ckpt.sha256_file(weights)))


def _nan_head(path):
    state = build_head(HeadConfig("ce", 6, 10)).state_dict()
    state["weight"][2, 1] = math.nan
    torch.save(state, path)


STATE_CASES = [
    (lambda p: p.write_bytes(b""), "is not a state dict saved by torch.save"),
    (lambda p: p.write_bytes(b"not a pickle"), "is not a state dict saved by torch.save"),
    (lambda p: torch.save([torch.zeros(2)], p), "must hold a non-empty dict of tensors"),
    (lambda p: torch.save({}, p), "must hold a non-empty dict of tensors (a state dict), got an empty dict"),
    (lambda p: torch.save({"weight": 1.0}, p), "entry 'weight' is not a tensor"),
    (_nan_head, "tensor 'weight' holds NaN or inf"),
]


@pytest.mark.parametrize(("write", "fragment"), STATE_CASES, ids=[c[1][:30] for c in STATE_CASES])
def test_a_state_file_that_is_not_a_finite_state_dict_is_refused(tmp_path, write, fragment):
    stem, load = _saved_models(tmp_path)["head"]
    _replace_state(stem, write)
    with pytest.raises(ckpt.CheckpointError, match=re.escape(fragment)):
        load(stem)


def test_invalid_json_in_a_sidecar_is_refused(tmp_path):
    stem, load = _saved_models(tmp_path)["backbone"]
    stem.with_name(stem.name + ".json").write_text("{ not json")
    with pytest.raises(ckpt.CheckpointError, match="is not valid JSON"):
        load(stem)


def test_the_shipped_sidecars_pass_the_validation():
    from bench.common.env import EMBEDDED_MODELS

    for path in sorted(EMBEDDED_MODELS.glob("*.json")):
        meta = json.loads(path.read_text())
        assert ckpt.validate_sidecar(meta, None, path) is meta
