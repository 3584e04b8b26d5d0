"""The ``tryon`` command line.

Subcommands live in their own modules and are imported only when invoked, so ``tryon --help``
is fast and the core package never imports Flask or Celery: the ``serve``/``worker``/``db``/
``accounts``/``keys`` commands are defined in ``web`` and ``workers`` and loaded by name.

Exit codes (stable, for scripts): 0 success, 1 unexpected failure, 2 usage error,
3 invalid input (bad image, pose not usable, ...), 4 weights/engine unavailable,
5 a service (database, broker, storage) unreachable, 6 network unreachable (a download; run
it again to resume), 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INVALID_INPUT = 3
EXIT_UNAVAILABLE = 4
EXIT_SERVICE = 5
EXIT_NETWORK = 6
EXIT_INTERRUPTED = 130

#: command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "render": "tryon.cli.render:render",
    "demo": "tryon.cli.render:demo",
    "compose": "tryon.cli.compose:compose",
    "batch": "tryon.cli.compose:batch",
    "doctor": "tryon.cli.doctor:doctor",
    "weights": "tryon.cli.weights:weights",
    "train": "tryon.cli.train:train",
    "evaluate": "tryon.cli.train:evaluate",
    "db": "web.cli:db",
    "accounts": "web.cli:accounts",
    "keys": "web.cli:keys",
    "serve": "workers.cli:serve",
    "worker": "workers.cli:worker",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # command not built in this install
            raise
        command: click.Command = getattr(module, attr)
        return command


def exit_code_for(exc: BaseException) -> int:
    """Map an exception to the stable exit codes above."""
    from tryon import errors

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, errors.NetworkUnavailableError):
        return EXIT_NETWORK
    if isinstance(exc, errors.InvalidInputError | errors.InvalidImageError | errors.PreflightError):
        return EXIT_INVALID_INPUT
    if isinstance(exc, errors.WeightsError | errors.EngineUnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, errors.ServiceUnavailableError | errors.StorageUnavailableError):
        return EXIT_SERVICE
    return EXIT_FAILURE


def fail(exc: BaseException) -> None:
    """Print a one-line error (code and message) and exit with the mapped code."""
    from tryon.errors import TryOnError

    if isinstance(exc, TryOnError):
        click.echo(f"error [{exc.code}]: {exc.message}", err=True)
    else:
        click.echo(f"error: {exc}", err=True)
    sys.exit(exit_code_for(exc))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tryon")
def cli() -> None:
    """tryon: virtual try-on backend (AnyDoor engine, preview engine, API and workers)."""
    from tryon.logs import configure_from_settings

    # the project's one log format (TRYON_LOG_FORMAT); one-shot commands show warnings and
    # errors, the long-running ones (serve, worker, train) switch to TRYON_LOG_LEVEL
    configure_from_settings(level="WARNING")


def main(argv: list[str] | None = None) -> Any:
    from tryon.cli.quiet import quiet_native_logs

    quiet_native_logs()  # before any command imports MediaPipe (see tryon/cli/quiet.py)
    return cli.main(args=argv, prog_name="tryon")
