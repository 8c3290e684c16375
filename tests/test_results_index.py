"""``python -m bench.results_index``: the index of result folders is made of their own files, unchanged."""

from __future__ import annotations

import json

import pytest

from bench import results_index
from bench.common.cli import run_cli


def make_result(folder, manifest, reports):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for name, text in reports.items():
        (folder / name).write_text(text)


@pytest.fixture()
def results(tmp_path):
    root = tmp_path / "results"
    make_result(root / "fashion-mnist" / "quick",
                {"git_commit": "abc123", "started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:10:00",
                 "device_name": "CPU (x86_64, 2 cores)", "torch_threads": 2,
                 "config": {"dataset": "fashion-mnist", "n": 1000, "sigma": [0.25]},
                 "timing_warnings": ["cohen sll+ce: times vary 3.1x"],
                 "memory_formats": {"cohen|sll+ce|0.25": "contiguous", "cohen|cnn-noise0.25|0.25": "channels_last"}},
                {"table1.md": "# Table 1\n\n| a | b |\n| --- | --- |\n| 1.5% | 0.25 |\n",
                 "table_certified.md": "# Certified\n\n```\n# not a heading\n```\n",
                 "summary.md": "# Summary\n", "figure.png": "png"})
    make_result(root / "sizes", {"command": "python -m bench.scaling --sizes small", "git_commit": "def456",
                                 "cohen_per_size": {"default": {"batch_size": 128, "memory_format": "contiguous"},
                                                    "small": {"batch_size": 256, "memory_format": "channels_last"}}},
                {"size_sweep.md": "# Sweep\n\n## Notes\n\n7.5x\n"})
    make_result(root / "torchrun" / "one", {"git_commit": "0f0f"}, {"summary.md": "# Certification summary\n\n42%\n"})
    (root / "art").mkdir()
    (root / "art" / "art_comparison.md").write_text("# ART\n\n0.95\n")
    return root


def test_index_holds_each_folder_with_its_reports_unchanged(results):
    text = results_index.build_index(results, results)
    assert text.startswith(results_index.HEADER)
    art = text.index("## `art`")
    assert "no `manifest.json`: how this result was made is not recorded" in text[art:] and "0.95" in text[art:]
    quick = text.index("## `fashion-mnist/quick`")
    sizes = text.index("## `sizes`")
    torchrun = text.index("## `torchrun/one`")
    assert quick < sizes < torchrun                                   # sorted by path
    section = text[quick:sizes]
    assert "made at commit `abc123`, 2026-01-01T00:00:00 to 2026-01-01T00:10:00" in section
    assert "device: CPU (x86_64, 2 cores); torch threads: 2" in section
    assert "settings: dataset = fashion-mnist, sigma = [0.25], n = 1000" in section
    assert "timing warning: cohen sll+ce: times vary 3.1x" in section
    # the batch size and memory format cohen ran at, as each kind of manifest records them
    assert "cohen memory format per model (measured on the device): sll+ce contiguous; cnn-noise0.25 channels_last" \
        in section
    assert ("cohen per size (batch size, memory format; measured on the device): default 128 contiguous; small 256 "
            "channels_last") in text[sizes:torchrun]
    # reports in the fixed order, headings two levels deeper, tables and code blocks unchanged
    assert section.index("### Certified") < section.index("### Table 1")
    assert "| 1.5% | 0.25 |" in section and "```\n# not a heading\n```" in section
    assert "# Summary" not in section                   # a folder with reports is not shown by its summary
    assert "![figure](fashion-mnist/quick/figure.png)" in section
    assert "command: `python -m bench.scaling --sizes small`" in text[sizes:torchrun]
    assert "#### Notes" in text[sizes:torchrun]
    assert "### Certification summary" in text[torchrun:] and "42%" in text[torchrun:]


def test_command_writes_the_index_and_refuses_bad_folders(results, tmp_path, capsys):
    run_cli(results_index.main, [str(results)])
    assert (results / "README.md").read_text() == results_index.build_index(results, results)
    (results / "sizes" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(results_index.main, [str(results)])
    assert exit_info.value.code == 1
    assert "manifest.json: a manifest is a JSON object, found list" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        run_cli(results_index.main, [str(empty)])
    assert "no result folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_cli(results_index.main, [str(tmp_path / "missing")])
    assert exit_info.value.code == 2
