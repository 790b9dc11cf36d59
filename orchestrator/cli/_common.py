"""What every command shares: JSON or table output, and errors turned into exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.errors import OrchestratorError

console = Console()
err_console = Console(stderr=True)

output_option = click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def run_cli(group: Callable[..., Any]) -> None:
    """Run the click group; our errors print as `error: ...` with their exit code, no traceback."""
    try:
        group(standalone_mode=False)
    except OrchestratorError as exc:
        if os.environ.get("TFSO_LOG_FORMAT") == "json":  # --log-format json
            print(json.dumps({"level": "error", "message": exc.message, "fix": exc.fix,
                              "exit_code": exc.exit_code}), file=sys.stderr)
            sys.exit(exc.exit_code)
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
