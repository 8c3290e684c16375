"""A checkpoint's state dict against the layout a model expects: every missing, unexpected and mis-shaped key.

:func:`mismatch_message` is the one wording of that comparison for every loader (``cohen``, ``sll``,
``torch``, ``fars-bench``): each difference on one line with the expected shape; up to :data:`INLINE_LINES`
of them inline, a longer listing written to a text file that the one-line message names.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

#: a listing longer than this goes to a file (the message names it and quotes the first lines)
INLINE_LINES = 20
#: lines quoted from a listing written to a file
QUOTED = 3

Shapes = Mapping[str, tuple[int, ...]]


def _shape(shape: tuple[int, ...]) -> str:
    return f"[{', '.join(str(int(d)) for d in shape)}]"


def differences(expected: Shapes, found: Shapes, may_lack: tuple[str, ...] = ()) -> tuple[int, int, int, list[str]]:
    """(missing, unexpected, mis-shaped, lines): one line per difference, in the expected layout's key order
    (then the unexpected keys in the file's order). Keys ending with one of ``may_lack`` may be absent."""
    missing = [k for k in expected if k not in found and not k.endswith(may_lack)]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    lines = [f"missing {k} {_shape(expected[k])}" for k in missing]
    lines += [f"mis-shaped {k}: file {_shape(found[k])}, expected {_shape(expected[k])}" for k in shapes]
    lines += [f"unexpected {k} {_shape(found[k])}" for k in unexpected]
    return len(missing), len(unexpected), len(shapes), lines


def mismatch_message(path: str | Path, against: str, expected: Shapes, found: Shapes,
                     may_lack: tuple[str, ...] = ()) -> str | None:
    """One line saying how the state dict read from ``path`` (``found``: key -> shape) differs from ``expected``;
    ``None`` when it fits. ``against`` names the layout ("the cifar_resnet20 architecture").

    Up to :data:`INLINE_LINES` differences are listed in the line; more are written, one a line with the
    expected shapes, to a new text file in the temporary folder, which the line names.
    """
    missing, unexpected, shapes, lines = differences(expected, found, may_lack)
    if not lines:
        return None
    counts = ", ".join(f"{n} {what}" for n, what in ((missing, "missing"), (unexpected, "unexpected"),
                                                      (shapes, "mis-shaped")) if n) + " key(s)"
    head = f"{path} does not fit {against}: {counts}"
    if len(lines) <= INLINE_LINES:
        return f"{head}: " + "; ".join(lines)
    with tempfile.NamedTemporaryFile("w", prefix=f"fars-bench-{Path(path).name}-", suffix="-keys.txt",
                                     delete=False) as report:
        report.write(f"{head}\n\n" + "\n".join(lines) + "\n\nthe expected layout:\n"
                     + "\n".join(f"{k} {_shape(s)}" for k, s in expected.items()) + "\n")
    return f"{head}; each listed with its expected shape in {report.name} (first: {'; '.join(lines[:QUOTED])})"
