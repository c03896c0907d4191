"""The one ``aetherflow`` command: a thin dispatcher.

Subcommands are registered as entry points in the group
``aetherflow.commands`` (see pyproject.toml). Each entry point names a
:class:`Subcommand` object. The dispatcher imports a subcommand's module only
when that subcommand runs, so ``aetherflow demo`` never imports the relay or
the editor. ``bench`` workloads use the group ``aetherflow.bench`` the same way.

User mistakes end in one clear line on stderr and exit status 2, never a
traceback. Output into a closed pipe (``aetherflow ... | head``) ends quietly,
and SIGTERM is handled like Ctrl-C, so temporary files and storage are cleaned
up and flushed on either.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from types import FrameType

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


def _version() -> str:
    try:
        return version("aetherflow")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def dispatch(
    group: str, prog: str, description: str, argv: Sequence[str], *, with_version: bool = False
) -> int:
    """Parse ``argv`` for the subcommands of entry-point ``group`` and run one."""
    if with_version and argv and argv[0] == "--version":  # answer without loading any subcommand
        print(f"{prog} {_version()}")
        return 0
    available = _group(group)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    # Import only the subcommand that runs; --help alone imports them all to list them.
    to_load = [wanted] if wanted in available else sorted(available)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if with_version:
        parser.add_argument("--version", action="version", version=f"{prog} {_version()}")
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


_terminated = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM becomes SIGINT, which trio and asyncio turn into KeyboardInterrupt at a safe point.

    Raising from this handler directly could land inside the event loop's own code; a SIGINT
    lets the running loop cancel cleanly, so ``finally`` blocks and context managers run.
    """
    global _terminated
    _terminated = True
    os.kill(os.getpid(), signal.SIGINT)


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``| head``): stop writing, and keep the interpreter's final flush quiet."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a tool killed by the pipe would report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aetherflow`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return dispatch(
            "aetherflow.commands",
            "aetherflow",
            "AetherFlow: peer-to-peer real-time collaboration.",
            argv,
            with_version=True,
        )
    except BaseException as raised:  # sorted below; anything unexpected is re-raised
        # trio and anyio wrap errors from tasks in exception groups: look inside them.
        leaves = _leaves(raised)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            if _terminated:
                return 143  # 128 + SIGTERM, after cleaning up
            print("aetherflow: interrupted", file=sys.stderr)
            return 130
        if all(isinstance(leaf, BrokenPipeError) for leaf in leaves):
            return _quiet_broken_pipe()
        user_errors = [leaf for leaf in leaves if isinstance(leaf, AetherFlowError)]
        if user_errors and len(user_errors) == len(leaves):
            for leaf in user_errors:
                print(f"aetherflow: error: {leaf}", file=sys.stderr)
            return 2
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
