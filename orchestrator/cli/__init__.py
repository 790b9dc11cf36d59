"""`tfsctl`: kubectl-style verbs over specs, runtimes, clients and rollouts.

Each topic lives in its own module and registers its commands here. Heavy imports
(TensorFlow, docker) happen inside commands, so `tfsctl --help` and `tfsctl predict` stay fast.
"""

from __future__ import annotations

import importlib
import os

import click

from orchestrator import __version__
from orchestrator.cli._common import run_cli

# TensorFlow's C++ logging is noise for CLI users; TF_CPP_MIN_LOG_LEVEL=0 brings it back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Modules that define click commands in a module-level list named COMMANDS.
_COMMAND_MODULES = (
    "orchestrator.cli.model",
    "orchestrator.cli.deploy",
    "orchestrator.cli.predict",
    "orchestrator.cli.convert",
    "orchestrator.cli.docker",
    "orchestrator.cli.rollout",
    "orchestrator.cli.monitor",
    "orchestrator.cli.kube",
    "orchestrator.cli.tune",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tfsctl")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="TFSO_LOG_FORMAT",
              default="text", show_default=True,
              help="Logs and errors as text or one JSON object per line (local replicas too).")
def cli(log_format: str) -> None:
    """Deploy TensorFlow models to TF Serving, locally or in Docker, and roll them out safely."""
    if log_format == "json":
        import logging

        from orchestrator.logs import configure

        os.environ["TFSO_LOG_FORMAT"] = "json"  # run_cli prints errors as JSON lines
        os.environ["TFS_LOG_FORMAT"] = "json"  # servers this command starts log JSON too
        configure("json", logging.WARNING)


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(_name).COMMANDS:
        cli.add_command(_command)


def main() -> None:
    run_cli(cli)
