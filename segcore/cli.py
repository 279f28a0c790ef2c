"""The ``segcore`` command line.

Each subcommand is a function decorated with :func:`command`; it receives the parsed arguments and returns
the exit status. Errors are printed to stderr as one line (``segcore: error: ...``) with exit status 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = ["main", "command", "build_parser"]


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] | None


_COMMANDS: dict[str, _Command] = {}


def command(
    name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register ``segcore NAME``: the decorated ``run(args) -> int`` runs it; ``configure(parser)`` adds
    its arguments."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in _COMMANDS:
            raise ValueError(f"segcore command {name!r} is defined twice")
        _COMMANDS[name] = _Command(name, help, run, configure)
        return run

    return decorate


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


# -- commands ---------------------------------------------------------------------------------------------


def _configure_models(parser: argparse.ArgumentParser) -> None:
    from .registry import TASKS

    parser.add_argument("--task", choices=TASKS, help="only models for this task")


@command("models", "list the models that segcore.build can build", _configure_models)
def _models(args: argparse.Namespace) -> int:
    from .registry import list_models

    specs = list_models(args.task)
    if not specs:
        print("no models registered" + (f" for task {args.task!r}" if args.task else ""))
        return 0
    rows = [(s.name, s.task, s.provider, s.description) for s in specs]
    print(_table(rows, ("NAME", "TASK", "PLUGIN", "DESCRIPTION")))
    return 0


@command("backends", "list the backends, with whether each can run here and, if not, why")
def _backends(args: argparse.Namespace) -> int:
    from .backend import _all_backends

    table = _all_backends()
    width = max(len(name) for name in table)
    for name, (backend, provider) in sorted(table.items()):
        if backend.is_available():
            status = "available"
        else:
            status = f"unavailable: {backend.unavailable_reason}"
            if backend.install_hint:
                status += f" (to use it: {backend.install_hint})"
        print(f"{name.ljust(width)}  {status}  [plugin {provider}]")
    return 0


@command("plugins", "list plugins with version, source and whether they loaded")
def _plugins(args: argparse.Namespace) -> int:
    from .plugins import manager

    infos = manager.plugins(load=True)
    rows = [
        (i.name, i.version or "-", i.source, f"{i.status}: {i.error}" if i.error else i.status) for i in infos
    ]
    print(_table(rows, ("NAME", "VERSION", "SOURCE", "STATUS")))
    return 0


# -- entry point ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="segcore", description="segcore: plugin-based image segmentation. Run `segcore COMMAND --help`."
    )
    parser.add_argument("--version", action="version", version=f"segcore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    # Also accepted after the command; SUPPRESS keeps the subparser from overwriting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS.values():
        cmd_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
        if cmd.configure is not None:
            cmd.configure(cmd_parser)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"segcore: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``segcore`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: argparse has printed what it had to
        return exit_.code if isinstance(exit_.code, int) else 2
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return _COMMANDS[args.command].run(args)
        except KeyboardInterrupt:
            print("segcore: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if args.debug:
                traceback.print_exc()
            else:
                print(f"segcore: error: {exc}", file=sys.stderr)
                print("(run `segcore --debug ...` to see the traceback)", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
