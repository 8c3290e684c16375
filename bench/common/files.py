"""File helpers shared by the data and model layers and the commands. Imports nothing from ``bench``."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "FolderInUseError", "FolderLock", "atomic_write_text", "is_within", "sha256_file"]

#: The lock file a command keeps in the output folder it owns (removed when it ends).
LOCK_NAME = ".lock"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it and ``os.replace``: a reader
    sees the old file or the new one, never half of one, and a crash leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".writing")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, however either is spelled.

    Compares real folders, not names: ``path``'s symbolic links and ``..`` are resolved
    (``os.path.realpath``), then the device and inode of it and of each of its existing parents are
    compared with ``folder``'s, so a bind mount of ``folder`` is recognised too. ``path`` need not exist
    (its existing parents decide). False when ``folder`` does not exist.
    """
    try:
        target = os.stat(folder)
    except OSError:
        return False
    real = Path(os.path.realpath(Path(path).expanduser()))
    for candidate in (real, *real.parents):
        try:
            seen = os.stat(candidate)
        except OSError:
            continue
        if (seen.st_dev, seen.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


class FolderInUseError(RuntimeError):
    """Another live process owns the folder (the message says which: pid, host, command, start)."""


class FolderLock:
    """One process at a time owns a folder: ``FOLDER/.lock`` holds the owner's pid, host, command and start
    time, and the owner holds an exclusive ``flock`` on it for as long as it runs.

    The kernel drops the ``flock`` when its process dies (``kill -9`` included), so the lock of a dead
    process is stale by construction: the next process takes it over in one atomic ``flock`` call and
    rewrites the file. A second live process is refused (:class:`FolderInUseError`). On a filesystem
    without ``flock`` the file alone decides: a live pid on this host, or any pid on another host (which
    cannot be checked), holds it; a dead pid on this host is taken over.

    Usage: ``with FolderLock(out, "bench.run") as lock: ...`` (``lock.stale`` describes a lock of a dead
    process taken over, or is None).
    """

    def __init__(self, folder: str | Path, command: str, extra: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "argv": sys.argv[1:], **(extra or {})}
        self.fd: int | None = None
        self.stale: str | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the folder, or raise :class:`FolderInUseError` naming its live owner."""
        import datetime as _dt
        import fcntl

        self.record["started"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read_record(fd))
                os.close(fd)
                raise FolderInUseError(self._busy(holder)) from None
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                self._acquire_without_flock(fd)
                return
            try:   # the file locked must still be the one at the path (a releasing owner unlinks it)
                here, locked = os.stat(self.path), os.fstat(fd)
                same = (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_record(fd)
        self.stale = _describe(previous) if previous else None
        _write_record(fd, self.record)
        self.fd = fd

    def _acquire_without_flock(self, fd: int) -> None:
        previous = _read_record(fd)
        if previous and (previous.get("host") != self.record["host"] or _alive(previous.get("pid"))) \
                and previous.get("pid") != os.getpid():
            os.close(fd)
            raise FolderInUseError(self._busy(_describe(previous)))
        self.stale = _describe(previous) if previous else None
        _write_record(fd, self.record)
        self.fd = fd

    def _busy(self, holder: str) -> str:
        return (f"{self.folder} is in use by {holder}; wait for it to end or use another --out "
                f"(if that process is gone, delete {self.path})")

    def release(self) -> None:
        """Give the folder up: remove the lock file (while still holding it), then close it."""
        if self.fd is None:
            return
        try:
            here, locked = os.stat(self.path), os.fstat(self.fd)
            if (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _read_record(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    try:
        record = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"unreadable": data[:60].decode("utf-8", errors="replace")}
    return record if isinstance(record, dict) else {}


def _write_record(fd: int, record: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
    os.fsync(fd)


def _describe(record: dict[str, Any]) -> str:
    if "pid" not in record:
        return "a process that left an unreadable lock file"
    words = f"pid {record.get('pid')} on host {record.get('host')} ({record.get('command')}"
    if record.get("processes"):
        words += f", {record['processes']} processes"
    return words + f", started {record.get('started')})"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
