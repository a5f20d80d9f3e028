"""The CLI's subcommands (filled in by the engine: ``refine``, ``models``; and ``demo``)."""

from __future__ import annotations

SUBCOMMANDS: list = []
