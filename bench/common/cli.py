"""The one place where a command's errors become messages: one line on stderr and an exit status.

Usage, in a command module whose ``main(argv: list[str] | None = None)`` parses its arguments::

    if __name__ == "__main__":
        cli_exit(main)

:func:`cli_exit` runs ``main`` through :func:`run_cli` and exits with ``main``'s return value when it
is an int (0 otherwise). Tests call ``run_cli(main, argv)`` in-process and catch :class:`SystemExit`.

What becomes a message (``error: ...`` on stderr, no traceback):

* exit 2, usage: :class:`UsageError` (a command's own check of a flag; ``argparse`` errors already
  exit 2 with their own line);
* exit 1, data and model errors: ``ValueError`` and ``TypeError`` (the library's
  :class:`~bench.models.CheckpointError`, ``NonFiniteScoresError``, ``IdxFormatError``,
  ``json.JSONDecodeError``, ...), ``OSError`` (a file that does not exist, a folder given where a file
  is expected, permission denied, a read-only or full disk), ``pickle.UnpicklingError`` and ``EOFError``
  (a corrupt ``.pt`` file), and any other exception class defined by this project (``bench``,
  ``fars``, ``smoothing``, ``baselines``: ``DatasetUnavailableError``, ``EmbeddedDataError``,
  ``ResumeError``, ``ARTMissing``);
* exit 130: ``KeyboardInterrupt`` (Ctrl-C), with a line saying that re-running the same command resumes.

Everything else (an ``AssertionError``, a ``RuntimeError`` from PyTorch, ...) is a bug and keeps its
traceback. Set ``FARS_BENCH_TRACEBACK=1`` to get the traceback of every error (a user error that may
be a bug in disguise). ``SystemExit`` passes through unchanged (``parser.error``, ``--help``).

This module imports nothing heavy (every command imports it) and nothing from ``bench``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

T = TypeVar("T")

#: the environment variable that turns every handled error back into a raised exception (for debugging)
TRACEBACK_ENV = "FARS_BENCH_TRACEBACK"
#: exit status of a usage error (as argparse), of a data or model error, of an interrupted command
USAGE, FAILURE, INTERRUPTED = 2, 1, 130
INTERRUPTED_MESSAGE = "interrupted; re-run the same command to resume (finished rows are kept)"
#: packages whose own exception classes are user-facing errors (their messages say what to fix)
PROJECT_PACKAGES = ("bench", "fars", "smoothing", "baselines")
#: library exceptions that a bad input (a flag, a file, a model) raises
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, pickle.UnpicklingError, EOFError)


class UsageError(ValueError):
    """A command-line value that is not acceptable (exit status 2, like an ``argparse`` error)."""


def traceback_requested() -> bool:
    """Whether ``FARS_BENCH_TRACEBACK`` asks for raw tracebacks (any value but empty or ``0``)."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` reports a bad input (a message suffices) rather than a bug (a traceback is due)."""
    if isinstance(err, USER_ERRORS):
        return True
    return any(cls.__module__.split(".")[0] in PROJECT_PACKAGES for cls in type(err).__mro__
               if issubclass(cls, Exception) and cls is not Exception)


def describe(err: BaseException) -> str:
    """``err`` as one line: an ``OSError`` as "what: path" (``[Errno 2]`` dropped), others by their message
    (the class name when there is none); newlines are folded into spaces."""
    if isinstance(err, OSError) and err.strerror:
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        text = f"{err.strerror}: {where}" if where else err.strerror
    else:
        text = str(err)
        if isinstance(err, (pickle.UnpicklingError, EOFError)):   # torch's advice to unpickle anyway is dropped
            first = text.split(". ")[0] or "empty file"
            text = f"a file could not be read as a PyTorch file of plain tensors ({type(err).__name__}: {first})"
    text = " ".join(text.split())
    return text or type(err).__name__


def exit_status(err: BaseException) -> int:
    """2 for a :class:`UsageError`, 1 for any other user error."""
    return USAGE if isinstance(err, UsageError) else FAILURE


def writable_dir(path: Path, flag: str = "--out") -> Path:
    """``path`` as a folder this process can write to: created when missing, checked with a probe file.

    Call it before the long work, so that a bad ``--out`` fails at once rather than after hours.

    Raises:
        UsageError: ``path`` is a file, cannot be created, or cannot be written (read-only, no permission);
            the message names ``flag``.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot create the folder ({describe(err)})") from None
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot write there ({describe(err)})") from None
    return path


def batch_size_or_auto(text: str) -> int | None:
    """An argparse ``type`` for ``--batch-size``: None for ``auto`` (the command searches the batch size), else
    the integer. Raises ``argparse.ArgumentTypeError`` (argparse's one-line usage error) for anything else."""
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1, got {text!r}")
    return int(text)


def checked(parser: argparse.ArgumentParser, check: Callable[[], T]) -> T:
    """``check()``, with a refusal turned into ``parser.error`` (``PROG: error: MESSAGE``, exit 2).

    For the checks of flag values that live outside the parser (``lambda: resolve_device(args.device)``,
    ``lambda: writable_dir(args.out)``): a ``ValueError`` (:class:`UsageError` included) or a
    ``SystemExit`` carrying a message.
    """
    try:
        return check()
    except ValueError as err:
        parser.error(describe(err))
    except SystemExit as err:
        if isinstance(err.code, str):
            parser.error(err.code)
        raise


def run_cli(main: Callable[[list[str] | None], T], argv: list[str] | None = None) -> T:
    """``main(argv)``, with user errors turned into ``error: MESSAGE`` on stderr and ``SystemExit``.

    Returns what ``main`` returns.

    Raises:
        SystemExit: with :func:`exit_status` after printing a user error's one line; with 130 after
            Ctrl-C; unchanged when ``main`` raised it (``argparse`` errors, ``--help``).
        BaseException: anything :func:`is_user_error` does not recognise (a bug), and every error when
            ``FARS_BENCH_TRACEBACK=1``.
    """
    try:
        return main(argv)
    except KeyboardInterrupt:
        if traceback_requested():
            raise
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    except Exception as err:
        if traceback_requested() or not is_user_error(err):
            raise
        print(f"error: {describe(err)}", file=sys.stderr)
        raise SystemExit(exit_status(err)) from None


def cli_exit(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> NoReturn:
    """Run ``main`` through :func:`run_cli` and exit: with its return value when that is an int, else 0."""
    result = run_cli(main, argv)
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
