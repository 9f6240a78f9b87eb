"""The ``powerfleet`` command: one CLI with a subcommand per task.

Errors a user can cause are printed as one line on stderr with a non-zero exit and no
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

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
fleet.register(app)
tasks.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    command = typer.main.get_command(app)
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
