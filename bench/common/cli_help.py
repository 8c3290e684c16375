"""``--help`` formatting shared by the commands (imports nothing from ``bench``)."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: X)`` after a flag's help, except where there is nothing to show.

    A flag whose default is None (filled in later from a preset, or meaning "off") or whose help
    already states its default gets no ``(default: None)`` tail.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)
