"""End to end: `python -m bench.run` on a tiny configuration, resume after an interruption, bad flags."""


import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY

from bench import run as bench_run
from bench.certify import results_file as bench_results
from bench.certify import runner as bench_runner
from bench.models import checkpoints as ckpt
from fars import SLLBackbone


def args(zoo, out, *extra):
    return ["--models", str(zoo), "--out", str(out), "--num-images", "3", "--n", "20", "--n0", "5",
            "--sigma", "0.25", "--batch-size", "16", "--scaling-ns", "10", "20", "--scaling-images", "1",
            "--no-progress", "--no-attack", *extra]


def test_tiny_run_writes_tsv_summary_and_plots(tiny_zoo, tmp_path, small_attack):
    with_attack = [flag for flag in args(tiny_zoo, tmp_path / "run") if flag != "--no-attack"] + small_attack
    out = bench_run.main(with_attack)
    rows = pd.read_csv(out / "certify.tsv", sep="\t")
    assert list(rows.columns) == list(bench_results.COLUMNS)
    keys = set(zip(rows.method, rows.model, strict=True))
    assert keys == {("cohen", "sll+ce"), ("cohen", "cnn-noise0.25"), ("fars-mc", "sll+ce"), ("fars-mc", "sll+mlp"),
                    ("fars-closed", "sll+ce"), ("lipschitz-margin", "sll+ce"), ("fars-crown", "sll+mlp")}
    assert len(rows) == 7 * 3
    assert set(rows.samples[rows.method.isin(["cohen", "fars-mc"])]) == {25}
    assert set(rows.samples[rows.method.isin(["fars-closed", "lipschitz-margin", "fars-crown"])]) == {0}
    assert (rows.seconds > 0).all()
    # each row: the call's process CPU time (user + system) and minor page faults beside its wall time
    assert (rows.cpu_seconds >= 0).all() and rows.cpu_seconds.sum() > 0 and (rows.page_faults >= 0).all()
    assert ((rows.predict == -1) <= (rows.radius == 0)).all()
    assert (rows.correct == (rows.predict == rows.label)).all()
    for name in ("summary.csv", "summary.md", "manifest.json", "certified_accuracy.png", "speedup.md",
                 "scaling.csv", "scaling.png", "cost_model.csv", "cost_model.md", "cost_targets.csv",
                 "robustness.csv", "soundness.csv", "paper_criterion.csv", "smoothed_attack.csv", "soundness.md"):
        assert (out / name).is_file(), name
    manifest = (out / "manifest.json").read_text()
    # the speed-up figure only when the timings were quiet; a table (speedup.md) always
    assert (out / "speedup.png").is_file() == (not json.loads(manifest)["timing_warnings"])
    assert '"git_commit"' in manifest and '"device_name"' in manifest and '"finished"' in manifest
    assert '"cudnn_tf32": false' in manifest and '"batch_sizes"' in manifest and '"attack"' in manifest
    # each cohen run's memory format (the faster one measured on this device), the certifiers' own
    formats = json.loads(manifest)["memory_formats"]
    assert set(formats) == {"cohen|sll+ce|0.25", "cohen|cnn-noise0.25|0.25"}
    assert set(formats.values()) <= {"contiguous", "channels_last"}
    summary = (out / "summary.md").read_text()
    assert "Run timing" in summary and "Empirical robustness and soundness audit" in summary
    assert json.loads((out / "attack_settings.json").read_text())["pgd"]["steps"] == 4   # the [attack] table's


#: files whose bytes carry the time of the invocation that wrote them
TIMED = {"manifest.json", "output.lock"}


def _snapshot(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in TIMED}


def test_a_second_identical_run_skips_every_stage_and_changes_no_file(tiny_zoo, tmp_path, small_attack, capsys):
    out = tmp_path / "run"
    flags = [flag for flag in args(tiny_zoo, out, "--methods", "cohen", "fars-closed") if flag != "--no-attack"]
    bench_run.main(flags + small_attack)
    first = _snapshot(out)
    capsys.readouterr()
    bench_run.main(flags + small_attack)
    err = capsys.readouterr().err
    for stage in ("scaling", "attack", "report"):
        assert f"{stage}: inputs and settings unchanged since the last run; kept its outputs" in err, err
    assert "wrote 0 new rows" in err
    assert _snapshot(out) == first
    # another attack setting reruns the attack and the report, not the scaling sweep
    other = tmp_path / "other-attack.toml"
    other.write_text(Path(small_attack[1]).read_text().replace("steps = 4", "steps = 5"))
    bench_run.main(flags + ["--config", str(other)])
    err = capsys.readouterr().err
    assert "scaling: inputs and settings unchanged" in err
    assert "attack: inputs" not in err and "report: inputs" not in err
    assert json.loads((out / "attack_settings.json").read_text())["pgd"]["steps"] == 5
    after = _snapshot(out)
    assert after["certify.tsv"] == first["certify.tsv"] and after["scaling.csv"] == first["scaling.csv"]
    # a file of a stage replaced by another writer reruns that stage (here: the report)
    (out / "table2.md").write_text("edited\n")
    bench_run.main(flags + ["--config", str(other)])
    err = capsys.readouterr().err
    assert "attack: inputs and settings unchanged" in err and "report: inputs" not in err
    assert (out / "table2.md").read_bytes() == after["table2.md"]


def test_interrupted_run_resumes_without_redoing_rows(tiny_zoo, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    original = bench_runner.format_row

    def crash_after_four(*a, **k):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(bench_runner, "format_row", crash_after_four)
    with pytest.raises(SystemExit) as interrupted:   # Ctrl-C: one line saying how to resume, exit 130
        bench_run.main(args(tiny_zoo, out, "--methods", "cohen", "fars-closed"))
    assert interrupted.value.code == 130
    partial = pd.read_csv(out / "certify.tsv", sep="\t")
    assert len(partial) == 4
    with open(out / "certify.tsv", "a") as handle:  # a row cut in half by a crash is dropped on resume
        handle.write("7\t3\t3\t0.1")
    monkeypatch.setattr(bench_runner, "format_row", original)
    certified = []
    real_certify_all = bench_runner.certify_all

    def counting(*a, **k):
        certified.append(real_certify_all(*a, **k))
        return certified[-1]

    monkeypatch.setattr(bench_runner, "certify_all", counting)   # bench.run imports it when certifying
    bench_run.main(args(tiny_zoo, out, "--methods", "cohen", "fars-closed"))
    rows = pd.read_csv(out / "certify.tsv", sep="\t")
    assert [c.rows for c in certified] == [3 * 3 - 4]  # cohen sll+ce, cohen cnn, fars-closed: 9 rows, 4 were kept
    assert len(rows) == 9 and not rows.duplicated(["method", "model", "sigma", "idx"]).any()
    fresh = bench_run.main(args(tiny_zoo, tmp_path / "fresh", "--methods", "cohen", "fars-closed"))
    again = pd.read_csv(fresh / "certify.tsv", sep="\t")
    key = ["method", "model", "idx"]
    merged = rows.sort_values(key).reset_index(drop=True)
    again = again.sort_values(key).reset_index(drop=True)
    assert (merged.predict == again.predict).all() and (merged.radius == again.radius).all()


def test_a_resumed_run_keeps_the_memory_formats_it_started_with(tiny_zoo, tmp_path, monkeypatch):
    out = tmp_path / "run"
    flags = args(tiny_zoo, out, "--methods", "cohen")
    bench_run.main(flags)
    manifest = json.loads((out / "manifest.json").read_text())
    # the other format than the one measured: a resume must use what the manifest says, not measure again
    kept = {k: "channels_last" if v == "contiguous" else "contiguous" for k, v in manifest["memory_formats"].items()}
    manifest["memory_formats"] = kept
    (out / "manifest.json").write_text(json.dumps(manifest))
    tsv = out / "certify.tsv"
    lines = tsv.read_text().splitlines(keepends=True)
    tsv.write_text("".join(lines[:3]))   # the header and two rows: the resume certifies the rest

    def no_measurement(*a, **k):
        raise AssertionError("a resumed run keeps its choices instead of measuring them again")

    monkeypatch.setattr(bench_runner, "best_memory_format", no_measurement)
    monkeypatch.setattr(bench_runner, "best_batch_size", no_measurement)
    bench_run.main(flags)
    assert json.loads((out / "manifest.json").read_text())["memory_formats"] == kept
    assert len(pd.read_csv(tsv, sep="\t")) == len(lines) - 1


def test_a_resume_with_nothing_left_shows_no_progress_bars(tiny_zoo, tmp_path, capsys):
    flags = [f for f in args(tiny_zoo, tmp_path / "run", "--methods", "fars-closed") if f != "--no-progress"]
    bench_run.main(flags)
    assert "pilot (one image per run)" in capsys.readouterr().err
    bench_run.main(flags)
    err = capsys.readouterr().err
    assert "pilot" not in err and "estimated time left" not in err and "wrote 0 new rows" in err


def test_changed_configuration_is_not_mixed_into_old_results(tiny_zoo, tmp_path):
    out = tmp_path / "run"
    bench_run.main(args(tiny_zoo, out, "--methods", "fars-closed"))
    with pytest.raises(SystemExit, match="different configuration"):
        bench_run.main(args(tiny_zoo, out, "--methods", "fars-closed", "--seed", "3"))
    bench_run.main(args(tiny_zoo, out, "--methods", "fars-closed", "--seed", "3", "--overwrite"))


def test_resume_identifies_models_by_content_not_by_path(tiny_zoo, tmp_path):
    import json
    import shutil

    out = tmp_path / "run"
    bench_run.main(args(tiny_zoo, out, "--methods", "fars-closed"))
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert str(tmp_path) not in json.dumps(config)       # nothing machine-specific is compared
    assert set(config["models"]) >= {"sll-backbone", "head-ce"} and len(config["images"]) == 64
    # the same checkpoints in another folder: the run resumes
    copy = tmp_path / "copy-of-models"
    shutil.copytree(tiny_zoo, copy)
    bench_run.main(args(copy, out, "--methods", "fars-closed"))
    assert json.loads((out / "manifest.json").read_text())["rows_written_by_last_invocation"] == 0
    # the ce head retrained (other weights, same name) between two invocations: refused, not mixed in
    from bench.models.networks import HeadConfig, build_head

    torch.manual_seed(1)
    config = HeadConfig("ce", 8, 10, hidden=8)
    backbone_sha = ckpt.read_sidecar(copy / "sll-backbone")["state_sha256"]
    ckpt.save_checkpoint(build_head(config), copy / "head-ce", {
        "kind": "head", "architecture": config.to_dict(), "backbone_sha256": backbone_sha})
    with pytest.raises(SystemExit, match=r"different configuration \(differs in: models\)"):
        bench_run.main(args(copy, out, "--methods", "fars-closed"))


def test_a_head_with_a_nan_weight_is_a_clear_error_not_a_certificate(tiny_zoo, tmp_path):
    import math
    import shutil

    from bench.models.networks import HeadConfig, build_head

    models = tmp_path / "models"
    shutil.copytree(tiny_zoo, models)
    config = HeadConfig("ce", 8, 10, hidden=8)
    head = build_head(config)
    with torch.no_grad():
        head.weight[3, 0] = math.nan
    ckpt.save_checkpoint(head, models / "head-ce", {
        "kind": "head", "architecture": config.to_dict(),
        "backbone_sha256": ckpt.read_sidecar(models / "sll-backbone")["state_sha256"]})
    with pytest.raises(SystemExit, match="tensor 'weight' holds NaN or inf"):
        bench_run.main(args(models, tmp_path / "run", "--methods", "fars-mc", "--heads", "ce"))


def test_results_without_a_manifest_are_not_resumed(tiny_zoo, tmp_path):
    out = tmp_path / "run"
    bench_run.main(args(tiny_zoo, out, "--methods", "fars-closed"))
    (out / "manifest.json").unlink()
    with pytest.raises(SystemExit, match="no manifest.json"):
        bench_run.main(args(tiny_zoo, out, "--methods", "fars-closed", "--n", "40"))


@pytest.mark.parametrize("flags, message", [
    (["--n", "0"], "--n must be >= 1"),
    (["--n", "10", "--n0", "20"], "must not exceed"),
    (["--alpha", "1.5"], "alpha"),
    (["--sigma", "-0.1"], "sigma"),
    (["--num-images", "0"], "num-images"),
    (["--scaling-ns", "0"], "scaling-ns"),
    (["--methods", "nope"], "invalid choice"),
    (["--radii", "nan"], "--radii values must be finite"),
    (["--radii", "1/0"], "argument --radii"),
    (["--width", "wide"], "--width wide: use column, full or inches"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--out", "/proc/no-such-folder"], "cannot create the folder"),
    (["--out", __file__], "is a file, not a folder"),
    (["--data-root", "/no/such/folder"], "is not a folder"),
    (["--image-size", "64"], "apply to the image-file datasets"),
])
def test_bad_flags_are_rejected_with_a_clear_message(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench_run.parse_args(flags)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_radii_as_fractions_and_figure_widths():
    args = bench_run.parse_args(["--radii", "36/255", "0.5", "--width", "column", "full"])
    assert args.radii == (36 / 255, 0.5) and args.output.widths == ("column", "full")


def test_models_of_another_dataset_are_refused_in_one_line(tmp_path):
    # the default experiment's models were trained on Fashion-MNIST (their sidecars say so)
    for dataset in ("cifar10", "mnist"):
        with pytest.raises(SystemExit, match="trained on fashion-mnist, not on " + dataset):
            bench_run.main(["--dataset", dataset, "--out", str(tmp_path / dataset), "--no-progress"])


def test_help_explains_every_knob(capsys):
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--methods", "--sigma", "--n", "--n0", "--alpha", "--num-images", "--skip",
                 "--batch-size", "--device", "--seed", "--out", "--preset", "--config", "--threads", "--radii",
                 "--sequential", "--image-size", "--resize"):
        assert flag in text


def test_mismatched_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="cannot load the models"):
        bench_run.main(["--models", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"])


def test_scaling_table_times_each_method_and_n(tiny_zoo):
    from bench.data import load_embedded
    from bench.models import load_zoo
    from bench.perf.n_sweep import scaling_table

    model = load_zoo(tiny_zoo).split_model("ce")
    images, _, indices = load_embedded(limit=2)
    table = scaling_table(model, images, indices, (10, 40), sigma=0.25, n0=5, alpha=0.01, batch_size=16, seed=0,
                          methods=("cohen", "fars-mc", "fars-closed"), progress=False)
    assert list(zip(table.method, table.n, strict=True)) == [("cohen", 10), ("fars-mc", 10), ("cohen", 40),
                                                             ("fars-mc", 40), ("fars-closed", 0)]
    assert list(table.samples) == [15, 15, 45, 45, 0]
    assert (table.seconds > 0).all() and (table.images == 2).all()
    assert (table.seconds_p25 <= table.seconds).all() and (table.seconds <= table.seconds_p75).all()
    # process CPU time (user + system) and minor page faults of a call, beside the wall time
    assert (table.cpu_seconds > 0).all() and (table.page_faults >= 0).all()


def test_scaling_table_times_cohen_fast_modes_as_rows_of_their_own(tiny_zoo):
    from bench.data import load_embedded
    from bench.models import load_zoo
    from bench.perf.n_sweep import scaling_table

    model = load_zoo(tiny_zoo).split_model("ce")
    images, labels, indices = load_embedded(limit=2)
    table = scaling_table(model, images, indices, (20,), sigma=0.25, n0=5, alpha=0.01, batch_size=16, seed=0,
                          methods=("cohen", "fars-mc"), progress=False, cohen_modes=("tf32", "channels_last"),
                          labels=labels)
    assert list(zip(table.method, table["mode"], strict=True)) == [("cohen", "fp32"), ("fars-mc", "-"),
                                                                   ("cohen", "tf32"), ("cohen", "channels_last")]
    assert list(table.precision) == ["fp32", "fp32", "tf32", "fp32"]
    assert table.certified_accuracy.between(0, 1).all()
    assert table.same_as_fp32.isna().tolist() == [True, True, False, False]
    assert table.same_as_fp32.iloc[2] == 1.0          # tf32 does nothing on a CPU: the fp32 certificates
    with pytest.raises(ValueError, match="unknown cohen mode"):
        scaling_table(model, images, indices, (20,), sigma=0.25, n0=5, alpha=0.01, batch_size=16, seed=0,
                      methods=("cohen",), progress=False, cohen_modes=("fast",))


def test_every_cnn_sigma_gets_its_own_cohen_run(tmp_path):
    from bench.certify.runs import MonteCarloSettings, build_runs
    from bench.models import load_zoo
    from bench.models.networks import CNNConfig, SmallCNN

    torch.manual_seed(0)
    backbone = SLLBackbone(TINY)
    ckpt.save_checkpoint(backbone, tmp_path / "sll-backbone", {
        "kind": "backbone", "architecture": TINY.to_dict(), "lipschitz": {"declared": 1.0, "audited_lower_bound": 0.5}})
    for sigma in (0.12, 0.25, 0.5):
        config = CNNConfig(width=2, hidden=4)
        ckpt.save_checkpoint(SmallCNN(config), tmp_path / f"cnn-noise{sigma:.2f}",
                             {"kind": "cnn", "architecture": config.to_dict(), "noise_sigma": sigma})
    zoo = load_zoo(tmp_path)
    assert sorted(zoo.cnns) == [0.12, 0.25, 0.5]
    runs = build_runs(zoo.experiment_models(), ("cohen",), (0.12, 0.25, 0.5), MonteCarloSettings(5, 10, 0.01, 8, 0))
    assert [(r.model, r.sigma) for r in runs] == [("cnn-noise0.12", 0.12), ("cnn-noise0.25", 0.25),
                                                   ("cnn-noise0.50", 0.5)]


def test_an_unknown_device_is_one_clear_line(tiny_zoo, tmp_path):
    with pytest.raises(SystemExit, match="not a device name"):
        bench_run.main(args(tiny_zoo, tmp_path / "run", "--device", "tpu"))


def test_more_images_than_the_test_set_holds_is_refused(tiny_zoo, tmp_path):
    """Silently certifying 100 images while the manifest says 5,000 would misreport the run."""
    with pytest.raises(SystemExit, match="5000 images requested"):
        bench_run.main(args(tiny_zoo, tmp_path / "run", "--num-images", "5000", "--skip", "10"))
    assert not (tmp_path / "run" / "certify.tsv").exists()
