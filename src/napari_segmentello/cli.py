"""Command line entry point: ``napari-segmentello``.

Subcommands register themselves through :data:`SUBCOMMANDS`, a list of
``(name, help, add_arguments, run)`` tuples, so each feature keeps its CLI code
next to its own module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from napari_segmentello import __version__

Subcommand = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _subcommands() -> list[Subcommand]:
    from napari_segmentello import cli_commands

    return cli_commands.SUBCOMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-segmentello",
        description="Refine rough strokes into precise masks (napari plugin core).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add_arguments, run in _subcommands():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"napari-segmentello {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
