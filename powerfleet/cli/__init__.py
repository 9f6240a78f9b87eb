"""The ``powerfleet`` command: one CLI with a subcommand per task.

Errors a user can cause are printed as one line on stderr with a non-zero exit and no
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys

import click
import typer

from powerfleet.cli import device, fleet, predictor, profiling, store, tasks
from powertrain.errors import PowerfleetError

app = typer.Typer(
    name="powerfleet",
    help="Federated-learning fleet scheduler for Jetson boards (PowerTrain predictors).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
profiling.register(app)
predictor.register(app)
store.register(app)
device.register(app)
tasks.register(app)


class _WarningLines(logging.Handler):
    """Warnings of powerfleet's own loggers as ``warning: ...`` lines on (the current) stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().splitlines()[0] if record.getMessage() else record.name
            print(f"{record.levelname.lower()}: {text}", file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never break a command
            self.handleError(record)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    While it runs, warnings of powerfleet's loggers (a damaged index entry, a fallback) are
    printed as one ``warning: ...`` line each.
    """
    logger = logging.getLogger("powerfleet")
    handler = _WarningLines(logging.WARNING)
    logger.addHandler(handler)
    try:
        return _main(argv)
    finally:
        logger.removeHandler(handler)


def _main(argv: list[str] | None) -> int:
    command = typer.main.get_command(app)
    if isinstance(command, click.Group):
        command.add_command(fleet.simulate_command(), "simulate")
    try:
        # In non-standalone mode click returns the code of ``typer.Exit`` instead of exiting.
        code = command.main(args=argv, prog_name="powerfleet", standalone_mode=False)
        if isinstance(code, int):
            return code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except PowerfleetError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
