"""Plain GitHub markdown tables for the generated reports (no extra dependency)."""

from __future__ import annotations

from typing import Iterable, Sequence


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table with a header of ``columns`` and one line per row (cells as ``str``; '|' escaped)."""
    header = [str(c) for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)
