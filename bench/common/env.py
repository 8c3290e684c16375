"""Settings shared by every part of the harness: folders, device choice, numeric policy, process tuning.

This module imports nothing from ``bench``; every other module may import it. It imports PyTorch only
inside the functions that use it, so that a command's ``--help`` answers without loading it.

Folders:

* :data:`REPO_ROOT` is the checkout (or the installed tree) the code runs from;
* :data:`EMBEDDED_MODELS` holds the shipped default checkpoints (read-only for commands);
* :data:`REFERENCE_RESULTS` is ``results/`` of the checkout: the committed reference outputs, written
  only when a command is given ``--out results/...`` explicitly (``make results``);
* :func:`runs_dir` is where commands write by default: ``runs/`` under the current directory, which
  git ignores, so a default run never touches a tracked file.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_MODELS = Path(__file__).resolve().parents[1] / "embedded" / "models"
REFERENCE_RESULTS = REPO_ROOT / "results"


def runs_dir(*parts: str) -> Path:
    """Default output folder of a command: ``./runs/<parts...>`` (``runs/`` is git-ignored)."""
    return Path.cwd() / "runs" / Path(*parts)


def portable_path(path: str | Path) -> str:
    """``path`` as it may be stored in a file that travels: relative to :data:`REPO_ROOT` when inside it.

    Paths outside the checkout (a user's own data or models) are returned as given, absolute: they
    are the user's, and stored only in the outputs of the user's own runs, never compared for a
    resume (models and images are identified by their content there).
    """
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(resolved)


def stored_path(text: str | None) -> Path | None:
    """The path :func:`portable_path` stored as ``text`` (relative ones are under :data:`REPO_ROOT`)."""
    if text is None:
        return None
    path = Path(text)
    return path if path.is_absolute() else REPO_ROOT / path


#: the device types a run may certify on
CERTIFY_DEVICES = ("cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; otherwise the named device (checked).

    Raises:
        SystemExit: an unknown device name, a device type outside :data:`CERTIFY_DEVICES` (``meta``, which
            holds no data), or a CUDA device this machine does not have.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name}: not a device name (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type not in CERTIFY_DEVICES:   # meta holds no data; others are not tested here
        raise SystemExit(f"--device {name}: certification runs on {' or '.join(CERTIFY_DEVICES)} "
                         f"(auto, cpu, cuda, cuda:1, ...), not on {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SystemExit(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def device_name(device: torch.device) -> str:
    """Human-readable device: the GPU's name, or the CPU with its core and thread counts."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def full_fp32() -> dict[str, bool]:
    """Certify in true fp32: no TF32 in CUDA matmuls and convolutions (PyTorch enables it for cuDNN convs),
    with cuDNN's fastest fp32 algorithm per input shape (``cudnn.benchmark``: each shape's first call times
    the candidates; every candidate computes the same fp32 convolution, with sums in its own order, so
    scores on CUDA may differ in the last bits from one process to another).

    Returns the settings, for the manifest. Lower precision stays an explicit opt-in (``CohenRS(precision=)``).
    """
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return {"cuda_matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


#: glibc ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4

_ALLOCATOR: dict[str, int | bool] = {"tuned": False}


def tune_cpu_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed tensor memory inside the process (glibc malloc); True when applied.

    By default glibc serves large blocks with fresh ``mmap`` pages and gives freed memory back to the
    system, so every eager op that allocates a large activation pays page faults (the kernel zeroes
    each page): on the 2-core CPU this cost a third of Cohen's time (3.7 M faults, 6 s of system time
    for 3,100 samples) and varied from process to process. Three ``mallopt`` settings (process-wide,
    benchmark processes only) make repeated batches reuse memory: the mmap threshold raised (to
    glibc's cap of 32 MiB), the trim threshold raised, and ``M_MMAP_MAX = 0``, so that no block is
    served by ``mmap`` at all (without it, every tensor above the 32 MiB cap, such as the activations
    of a batch of 256 samples of the SLL networks, is still mapped and zeroed afresh on every use:
    22-48% of Cohen's CPU time on those networks). No effect on results (memory contents are never
    read before they are written); a no-op off glibc. :func:`cpu_allocator` reports what was set.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
                       and libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1
                       and libc.mallopt(M_MMAP_MAX, 0) == 1)
    except (OSError, AttributeError):
        return False
    if applied:
        _ALLOCATOR.update(tuned=True, mmap_threshold=int(mmap_threshold), trim_threshold=int(trim_threshold),
                          mmap_max=0)
    return applied


def cpu_allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` was applied in this process."""
    return bool(_ALLOCATOR["tuned"])


def cpu_allocator() -> dict[str, int | bool]:
    """What :func:`tune_cpu_allocator` set in this process, for a manifest: ``{"tuned": False}`` when
    nothing (not glibc, or not called), else also the glibc ``mallopt`` values (bytes; ``mmap_max`` 0:
    no block is served by ``mmap``)."""
    return dict(_ALLOCATOR)


def process_usage() -> tuple[float, int]:
    """(process CPU seconds, user + system, of every thread; minor page faults) so far, from ``getrusage``.

    Wall time on a shared machine counts the time other processes held the cores; CPU time counts only
    this process's work, and the page faults show the kernel time spent zeroing fresh memory in it.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


#: most torch threads a process may ask for, per CPU of the machine: more only oversubscribes, and far more
#: (``torch.set_num_threads(100000)``) crashes the thread pool with a segmentation fault
THREADS_PER_CPU = 4


def max_threads() -> int:
    """The most CPU threads a process may ask for: :data:`THREADS_PER_CPU` per CPU of the machine."""
    return THREADS_PER_CPU * (os.cpu_count() or 1)
