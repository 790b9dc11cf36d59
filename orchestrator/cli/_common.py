"""What every command shares: JSON or table output, and errors turned into exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
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


# Third-party modules the plain install leaves out, and the extra that brings each one.
_EXTRA_OF = {
    "tensorflow": "serve",
    "tensorflow_serving": "serve",
    "docker": "serve",
    "aiohttp": "serve",
    "orjson": "serve",
    "uvloop": "serve",
    "grpc_health": "serve",
    "matplotlib": "serve",
    "keras": "serve",
    "tf2onnx": "convert",
    "onnx": "convert",
    "onnxruntime": "convert",
    "ai_edge_litert": "convert",
    "tf_keras": "convert",
    "tensorflowjs": "convert",
    "kubernetes": "kubernetes",
}

# Fixes for errors raised without one, by class name (the most specific class wins).
_DEFAULT_FIXES = {
    "ModelNotFound": "check the model name, version or label: `tfsctl status NAME` lists what "
    "is loaded",
    "InvalidInput": "check the request against the model's signature: `tfsctl inspect BASE_PATH`",
    "FailedPrecondition": "wait until the version is AVAILABLE (`tfsctl status NAME`), then retry",
    "ServingUnavailable": "check the server is up: `tfsctl status NAME` and `tfsctl logs NAME`",
    "DeadlineExceeded": "raise --timeout, or check the server's load with `tfsctl logs NAME`",
    "ResourceExhausted": "send smaller requests, or raise the server's limits (README: Limits)",
    "Unimplemented": "use the method the signature was exported for (predict, classify, regress)",
    "Unauthenticated": "check the TLS certificates passed to the client",
    "PermissionDenied": "check the credentials the client sends",
    "Conflict": "retry once the other change has finished",
    "Cancelled": "retry the request",
    "ServerError": "read the server's log (`tfsctl logs NAME`) for the cause",
    "ServingError": "read the server's log (`tfsctl logs NAME`) for the cause",
    "OrchestratorError": "see README.md (Troubleshooting)",
}


def _default_fix(exc: OrchestratorError) -> str:
    for cls in type(exc).__mro__:
        fix = _DEFAULT_FIXES.get(cls.__name__)
        if fix:
            return fix
    return _DEFAULT_FIXES["OrchestratorError"]


def print_error(message: str, fix: str) -> None:
    """The two lines every failing command prints: `error:` and `fix:`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    err_console.print(f"  fix: {escape(fix)}", highlight=False, soft_wrap=True)


def _usage_fix(exc: click.ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "tfsctl"
    return f"see `{path} --help` for the options and arguments it takes"


def run_cli(group: Callable[..., Any]) -> None:
    """Run the click group; every error prints `error:` and `fix:` lines and its exit code."""
    try:
        group(standalone_mode=False)
    except OrchestratorError as exc:
        if os.environ.get("TFSO_LOG_FORMAT") == "json":  # --log-format json
            print(json.dumps({"level": "error", "message": exc.message, "fix": exc.fix,
                              "exit_code": exc.exit_code}), file=sys.stderr)
            sys.exit(exc.exit_code)
        if exc.fix:
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
        else:
            print_error(str(exc), _default_fix(exc))
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        print_error(exc.format_message(), _usage_fix(exc))
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        extra = _EXTRA_OF.get(top)
        if extra is None:
            raise
        print_error(
            f"this command needs the '{extra}' extra: the module {top} is not installed",
            f"pip install 'tfserving-orchestrator[{extra}]'",
        )
        sys.exit(1)
    except OSError as exc:  # a path the user gave that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print_error(
            f"{exc.strerror or exc}{where}",
            "check that the path exists, is of the right kind (file or folder) and that you "
            "may read or write it",
        )
        sys.exit(1)


def write_output(out: Path, files: Mapping[str, str]) -> None:
    """Rendered files into --out, all or nothing; a folder we may not write to is a user error."""
    from orchestrator.state import write_files_atomic

    try:
        write_files_atomic(out, files)
    except OSError as e:
        raise OrchestratorError(
            f"cannot write to {out}: {e.strerror}",
            fix="pass --out a folder you may write to (it is created if missing)",
        ) from None
