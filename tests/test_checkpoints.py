"""Checkpoints: round trip, and every kind of mismatch is refused with a clear message."""

import json

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
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch"):
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
    with pytest.raises(ckpt.CheckpointError, match="missing keys"):
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

    from bench.provenance import git_commit

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

    from bench.env import EMBEDDED_MODELS
    from bench.models import load_zoo

    for name in ("sll-backbone", "head-ce", "head-margin"):
        for suffix in (".pt", ".json"):
            shutil.copy(EMBEDDED_MODELS / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    assert sorted(load_zoo(tmp_path).heads) == ["ce", "margin"]
    for suffix in (".pt", ".json"):
        shutil.copy(EMBEDDED_MODELS / f"head-margin{suffix}", tmp_path / f"head-ce{suffix}")
    with pytest.raises(ckpt.CheckpointError, match="renamed or swapped"):
        load_zoo(tmp_path)
