"""``python -m bench.gpu``: the one-command GPU benchmark (``make gpu-bench``), about 8 minutes on one H100.

Three steps, each a command of this harness run as a subprocess (commands import no other command), each
with a time budget (the subprocess is stopped when it runs over, and the next step still runs):

1. ``paper``: the ``paper`` preset's certification (n0 = 100, n = 100,000, alpha = 0.001, sigma 0.12 /
   0.25 / 0.5, every method and model) on the first ``--paper-images`` images of the evaluation subset,
   without the attack and without the run's own scaling stage (step 2 is that sweep);
2. ``scaling``: seconds per image versus n (100 ... 100,000) on ``sll+ce`` and the cost model;
3. ``sizes``: the model-size sweep (``python -m bench.scaling --sizes default small medium large xlarge``).

Steps 2 and 3 time cohen's opt-in fast modes (:data:`FAST_MODES`: TF32, bf16 autocast, ``torch.compile``) as
rows of their own beside fp32 cohen (TF32 off), each with its own certificates on the same images, so one run
gives the speedup of FaRS against every one of them.

Every step times with the device synchronised after a warm-up (the certificates' own ``seconds``) and in
true fp32: each command calls :func:`bench.common.env.full_fp32` (TF32 off for CUDA matmuls and cuDNN
convolutions); this script sets the same and records it. ``manifest.json`` in ``--out`` records the GPU
(``torch.cuda.get_device_name``; name and driver from ``nvidia-smi`` when it is installed), the plan, and
each step's command, budget, seconds and exit status.

Sizing (from flops; H100 fp32 without tensor cores ~50 TFLOP/s peak, small-channel convolutions far
below): cohen at n = 1e5 on the shipped 20 MFLOP network is 2 TFLOP per image and run, ~0.1-0.3 s; the
paper preset has 15 cohen runs (4 heads x 3 sigma + 3 noise-trained CNNs) and cheaper FaRS runs, so 30
images take ~1-2.5 min. The n sweep is ~1 min. The size sweep counts ~330 TFLOP of cohen samples
(0.33 / 0.65 / 1.3 / 2.5 GFLOP per sample for SLL small / medium / large / xlarge, at n = 4096 and 16384,
rounded up to whole multiples of the batch size searched per size so that its linearity check compares two
n at the same batch size, in two rounds, plus n = 1e5 measured directly on small), ~2-4 min with warm-ups and
references, plus the fast-mode rows (TF32 and bf16 cheaper than fp32; ``torch.compile`` once per size).
The budgets below add to 8 minutes; a step that runs over its budget keeps the sizes it finished.
``--quick`` is a ~1-minute smoke check; ``--dry-run`` prints the plan and the
commands and runs nothing (it works on a machine without CUDA).

Without CUDA (``torch.cuda.is_available()`` false) the command stops at once with exit status 2 and one
line, before any work; ``--device cpu`` runs the same steps on the CPU instead (for tests, on tiny
settings: expect hours at the full ones).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .common.cli import USAGE, checked, cli_exit, writable_dir
from .common.cli_help import DefaultsHelpFormatter

#: the images of the paper preset's certification (see the module doc for the estimate)
PAPER_IMAGES = 30
#: seconds each step may take (paper, scaling, sizes); their sum is the 8-minute target
BUDGETS = {"paper": 180, "scaling": 90, "sizes": 210}
QUICK_BUDGETS = {"paper": 25, "scaling": 15, "sizes": 20}
SIZES = ("default", "small", "medium", "large", "xlarge")
#: cohen's opt-in fast modes timed as rows of their own in the n sweep and the size sweep (beside fp32, TF32 off)
FAST_MODES = ("tf32", "bf16", "compiled")


@dataclass
class Step:
    """One step of the benchmark: a command of the harness and its time budget (seconds)."""

    name: str
    argv: list[str]
    budget_s: float
    seconds: float | None = None
    returncode: int | None = None
    status: str = "planned"

    def command(self) -> str:
        return " ".join(["python", *self.argv])


def plan(out: Path, device: str, quick: bool = False, paper_images: int = PAPER_IMAGES) -> list[Step]:
    """The three steps (paper subset, n sweep, size sweep) with their commands and budgets."""
    budgets = QUICK_BUDGETS if quick else BUDGETS
    common = ["--device", device, "--no-progress"]
    if quick:
        paper = ["-m", "bench.run", "--preset", "paper", "--num-images", "2", "--n", "10000", "--sigma", "0.25",
                 "--scaling-ns", "--out", str(out / "paper"), "--no-attack", "--overwrite", *common]
        scaling = ["-m", "bench.scaling", "--out", str(out / "scaling"), "--ns", "100", "1000", "--images", "1",
                   *common]
        sizes = ["-m", "bench.scaling", "--sizes", "default", "small", "--out", str(out / "sizes"),
                 "--cohen-ns", "100", "1000", "--fars-ns", "1000", "--target-n", "10000", "--cohen-direct",
                 "--rounds", "1", "--throughput-sizes", "small", "--throughput-images", "4",
                 "--memory-ns", "1000", "10000", "--cohen-memory-ns", "100", "1000", *common]
    else:
        paper = ["-m", "bench.run", "--preset", "paper", "--num-images", str(paper_images), "--scaling-ns",
                 "--out", str(out / "paper"), "--no-attack", "--overwrite", *common]
        scaling = ["-m", "bench.scaling", "--out", str(out / "scaling"), "--ns", "100", "1000", "10000", "100000",
                   "--cohen-modes", *FAST_MODES, *common]
        # cohen's batch size searched per size (at most its lower n) and its two n rounded to whole batches of
        # it, so that both run full batches and the linearity check compares like with like; the fast modes as
        # rows of their own (TF32 on in the tf32 rows, off in every other)
        sizes = ["-m", "bench.scaling", "--sizes", *SIZES, "--out", str(out / "sizes"), "--cohen-ns", "4096",
                 "16384", "--cohen-modes", *FAST_MODES, *common]
    return [Step("paper", paper, budgets["paper"]), Step("scaling", scaling, budgets["scaling"]),
            Step("sizes", sizes, budgets["sizes"])]


NO_CUDA = ("error: no CUDA device (torch.cuda.is_available() is false): python -m bench.gpu needs a CUDA GPU; "
           "--dry-run prints the plan, --device cpu runs it on the CPU")


def require_cuda(device: str) -> None:
    """Stop with :data:`NO_CUDA` on stderr and exit status 2 when ``device`` is CUDA and this machine has none."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        raise SystemExit(USAGE)


def gpu_record(device: str) -> dict[str, Any]:
    """The GPU, driver and precision settings for the manifest (TF32 off, as every step sets)."""
    import torch

    from .common.env import full_fp32

    record: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
                              "precision": full_fp32()}
    if device.startswith("cuda") and torch.cuda.is_available():
        record["device_name"] = torch.cuda.get_device_name(torch.device(device))
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, check=False)
        record["nvidia_smi"] = done.stdout.strip().splitlines() if done.returncode == 0 else done.stderr.strip()
    return record


def run_step(step: Step) -> None:
    """Run ``step`` with this Python, stopped at its budget; fills seconds, returncode and status."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *step.argv], timeout=step.budget_s, check=False)
        step.returncode = done.returncode
        step.status = "done" if done.returncode == 0 else f"failed (exit {done.returncode})"
    except subprocess.TimeoutExpired:
        step.status = f"stopped at its budget of {step.budget_s:.0f} s"
    step.seconds = time.perf_counter() - started


def print_plan(steps: list[Step]) -> None:
    total = sum(s.budget_s for s in steps)
    print(f"plan: {len(steps)} steps, budget {total:.0f} s ({total / 60:.1f} min)")
    for s in steps:
        print(f"  {s.name:8s} budget {s.budget_s:4.0f} s: {s.command()}")


def main(argv: list[str] | None = None, runner: Callable[[Step], None] = run_step) -> int:
    """Check CUDA, print the plan, run the steps, write ``manifest.json``; returns 0, or 1 if a step failed.

    ``runner`` runs one step (tests give a fake one). Without CUDA (and without ``--device cpu`` or
    ``--dry-run``) it exits 2 with one line on stderr before any work.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu", formatter_class=DefaultsHelpFormatter,
        description="The GPU benchmark in one command (~8 min on one H100): the paper preset's certification on a "
                    "subset, the scaling sweep in n and the model-size sweep, with the GPU in the manifest.")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu"),
                        help="output folder (make gpu-bench passes results/fashion-mnist/gpu)")
    parser.add_argument("--device", default="cuda",
                        help="cuda or cuda:N; cpu runs the same steps on the CPU (tests, tiny settings)")
    parser.add_argument("--paper-images", type=int, default=PAPER_IMAGES,
                        help="images of the paper preset's certification (n = 100,000, every method)")
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke check (tiny n and images)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands; run nothing")
    args = parser.parse_args(argv)
    if args.paper_images < 1:
        parser.error("--paper-images must be >= 1")
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        parser.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    steps = plan(args.out, args.device, args.quick, args.paper_images)
    if args.dry_run:
        print_plan(steps)
        return 0
    require_cuda(args.device)
    print_plan(steps)
    out = checked(parser, lambda: writable_dir(args.out))
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest: dict[str, Any] = {"gpu": gpu_record(args.device), "quick": args.quick, "started": started,
                                "budget_s": sum(s.budget_s for s in steps)}
    for step in steps:
        print(f"[{step.name}] {step.command()}", flush=True)
        runner(step)
        print(f"[{step.name}] {step.status} in {step.seconds or 0:.1f} s (budget {step.budget_s:.0f} s)", flush=True)
    manifest["steps"] = [asdict(s) | {"command": s.command()} for s in steps]
    manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(s.seconds or 0 for s in steps)
    print(f"total {total:.1f} s; " + ", ".join(f"{s.name} {s.seconds or 0:.1f} s" for s in steps))
    return 0 if all(s.status == "done" for s in steps) else 1


if __name__ == "__main__":
    cli_exit(main)
