"""Sharding ``python -m bench.run`` across processes started by ``torchrun``.

How a sharded run works
-----------------------
``torchrun --nproc-per-node N -m bench.run ...`` starts N copies of the run with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. Each rank

1. loads the same models and images and builds the same runs;
2. reads every result already on disk (the merged ``certify.tsv`` and every shard file) and so
   computes the same list of pending (run, example) pairs as every other rank;
3. takes every N-th pair of that list (round-robin, which balances the methods' very different
   costs) and appends its rows, flushed row by row, to its own ``shards/rank{R}.tsv``;
4. waits for the others; rank 0 then merges all rows into ``certify.tsv`` in the order a
   one-process run writes them (run by run, example by example), removes the shard files and writes
   the summary and plots.

An example's noise depends only on the global seed and the example's dataset index (see
:mod:`smoothing.noise`), so which rank certifies it does not change its result: the merged file equals a
one-process run row for row (timing columns aside) when every process uses the same number of intra-op
threads (torchrun sets one per rank: compare with a one-process run under ``OMP_NUM_THREADS=1``). With
other thread counts float32 forward passes round differently: deterministic radii differ in the last
digits (< 1e-5 absolute on the shipped model, see :mod:`fars.closed_form`) and a Monte Carlo count can
differ where a noisy sample lies within round-off of a decision boundary. A rank that dies loses only the example it was
certifying; running the same command again resumes every shard, with any number of processes.

Only Python objects (timings) cross process boundaries, so the process group always uses the gloo
backend, on CPUs and GPUs alike; each rank computes on its own GPU (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..common.cli import UsageError
from ..common.files import FolderInUseError, FolderLock

SHARD_DIR = "shards"


@dataclass(frozen=True)
class Context:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(environ: dict[str, str] | None = None) -> Context:
    """The rank, world size and local rank that ``torchrun`` put in the environment (1 process if none)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise SystemExit(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {err}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise SystemExit(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return Context(rank=rank, world_size=world, local_rank=local)


def init(context: Context, timeout_hours: float) -> None:
    """Join the process group (gloo) of a multi-process run; nothing for a single process."""
    if context.distributed and not dist.is_initialized():
        # ranks that finish their shard early wait at a barrier for the slowest one: allow for long runs
        dist.init_process_group("gloo", timeout=_dt.timedelta(hours=timeout_hours))


def shutdown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def all_gather(context: Context, value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (just ``[value]`` for one process)."""
    if not context.distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def rank_device(device: torch.device, context: Context) -> torch.device:
    """Each rank on its own GPU: an unindexed ``cuda`` device becomes ``cuda:LOCAL_RANK`` (modulo the GPU count)."""
    if device.type == "cuda" and device.index is None and context.distributed:
        return torch.device("cuda", context.local_rank % torch.cuda.device_count())
    return device


def check_shared_folder(out: Path, context: Context) -> None:
    """Fail clearly unless every rank sees the same ``out`` folder (a filesystem shared by all nodes).

    Rank 0 writes a fresh token into ``out``; every rank must read the same token back.
    """
    if not context.distributed:
        return
    token_file = out / SHARD_DIR / ".token"
    token: str | None = None
    if context.is_main:
        token = uuid.uuid4().hex
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token)
    token = all_gather(context, token)[0]
    seen = token_file.read_text() if token_file.is_file() else None
    ok = all(all_gather(context, seen == token))
    if not ok:
        raise SystemExit(f"rank {context.rank}: the output folder {out} is not shared by all ranks; under torchrun "
                         "--out must be on a filesystem every node can read and write (e.g. NFS)")
    barrier(context)
    if context.is_main:
        token_file.unlink()


@contextlib.contextmanager
def output_lock(out: Path, context: Context, command: str = "bench.run") -> Iterator[None]:
    """Own ``out`` for the duration of the block (:class:`bench.common.files.FolderLock`): one run at a time.

    Under torchrun the ranks share one lock: rank 0 takes it for the whole group (the record names the
    launcher's pid and the number of processes) and every rank learns whether it got it.

    Raises:
        UsageError: (rank 0; exit 2) another live process owns ``out``; the message names it.
        SystemExit: (2, other ranks) the same refusal, said once by rank 0.
    """
    lock: FolderLock | None = None
    refusal: str | None = None
    if context.is_main:
        extra = {"processes": context.world_size, "launcher_pid": os.getppid()} if context.distributed else {}
        lock = FolderLock(out, command, extra)
        try:
            lock.acquire()
        except FolderInUseError as err:
            refusal = str(err)
        if lock.stale:
            print(f"note: took over the lock of {lock.stale}, which is no longer running", file=sys.stderr)
    refusal = all_gather(context, refusal)[0]
    if refusal is not None:
        if context.is_main:
            raise UsageError(refusal)
        raise SystemExit(2)
    try:
        try:
            yield
        except SystemExit:   # a refusal every rank makes, or rank 0's soundness verdict: leave together
            barrier(context)
            raise
        # every rank leaves the group together: none tears its process group down while rank 0 still writes
        barrier(context)
    finally:
        if lock is not None:
            lock.release()


def shard_path(out: Path, rank: int) -> Path:
    return out / SHARD_DIR / f"rank{rank}.tsv"


def shard_files(out: Path) -> list[Path]:
    """Every shard file in ``out`` (of this or an earlier run with any number of processes)."""
    folder = out / SHARD_DIR
    return sorted(folder.glob("rank*.tsv")) if folder.is_dir() else []


def my_share(pending: list[Any], context: Context) -> list[Any]:
    """This rank's items of a pending list that every rank computed identically (round-robin)."""
    return pending[context.rank::context.world_size]


def merge_rows(header: str, sources: Iterable[list[str]], order: dict[tuple[str, int], int],
               key_of: Any) -> list[str]:
    """Unique data lines of ``sources`` sorted by ``order[key_of(line)]`` (unknown keys last, in file order).

    The first occurrence of a key wins; ``header`` is not repeated.
    """
    seen: set[tuple[str, int]] = set()
    rows: list[tuple[int, int, str]] = []
    for lines in sources:
        for line in lines:
            if line == header:
                continue
            key = key_of(line)
            if key in seen:
                continue
            seen.add(key)
            rows.append((order.get(key, len(order)), len(rows), line))
    rows.sort()
    return [line for _, _, line in rows]
