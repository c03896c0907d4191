"""The one ``aetherflow`` command: a thin dispatcher.

Subcommands are registered as entry points in the group
``aetherflow.commands`` (see pyproject.toml). Each entry point names a
:class:`Subcommand` object. The dispatcher imports a subcommand's module only
when that subcommand runs, so ``aetherflow demo`` never imports the relay or
the editor. ``bench`` workloads use the group ``aetherflow.bench`` the same way.

User mistakes end in one clear line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points

import attrs

from aetherflow_sdk import AetherFlowError


@attrs.frozen(kw_only=True)
class Subcommand:
    """One subcommand: its help line, its arguments, and what it runs."""

    help: str
    """One line shown in ``aetherflow --help``."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the subcommand's options to its parser."""
    run: Callable[[argparse.Namespace], int]
    """Runs the subcommand; returns the exit status."""


def _group(name: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=name)}


def _load(ep: EntryPoint) -> Subcommand:
    command = ep.load()
    if not isinstance(command, Subcommand):
        raise TypeError(f"entry point {ep.value!r} is not an aetherflow Subcommand")
    return command


def dispatch(group: str, prog: str, description: str, argv: Sequence[str]) -> int:
    """Parse ``argv`` for the subcommands of entry-point ``group`` and run one."""
    available = _group(group)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    # Import only the subcommand that runs; --help alone imports them all to list them.
    to_load = [wanted] if wanted in available else sorted(available)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for name in to_load:
        assert name is not None
        command = _load(available[name])
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    if wanted is not None and wanted not in available:
        parser.error(f"unknown command {wanted!r}; choose from: {', '.join(sorted(available))}")
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    result: int = args._run(args)
    return result


def _leaves(error: BaseException) -> list[BaseException]:
    """The individual exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aetherflow`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return dispatch(
            "aetherflow.commands",
            "aetherflow",
            "AetherFlow: peer-to-peer real-time collaboration.",
            argv,
        )
    except BaseException as raised:  # sorted below; anything unexpected is re-raised
        # trio and anyio wrap errors from tasks in exception groups: look inside them.
        leaves = _leaves(raised)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            print("aetherflow: interrupted", file=sys.stderr)
            return 130
        user_errors = [leaf for leaf in leaves if isinstance(leaf, AetherFlowError)]
        if user_errors and len(user_errors) == len(leaves):
            for leaf in user_errors:
                print(f"aetherflow: error: {leaf}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
