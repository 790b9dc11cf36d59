"""The one exception tree of the project.

    OrchestratorError
     ├── SpecError            a deployment spec is invalid (file, field, line, fix)
     ├── ModelError           a model folder is missing, corrupt or not servable
     ├── RuntimeFailure        a runtime could not realise a plan (process, container, daemon)
     │    └── HealthTimeout   a wait for AVAILABLE passed its deadline
     ├── ServingError         a server answered with an error (client side; see client.errors)
     └── RolloutError         a canary rollout could not go on

Every error carries what explains it and says how to fix it where we know. This module
imports nothing of ours, so every layer may raise these.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error this project raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None, logs: str | None = None) -> None:
        self.message = message
        self.fix = fix
        self.logs = logs
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.message}\n  fix: {self.fix}" if self.fix else self.message
        if self.logs:
            tail = "\n".join("    " + line for line in self.logs.rstrip().splitlines()[-20:])
            text += f"\n  last log lines:\n{tail}"
        return text


class SpecError(OrchestratorError):
    """A deployment spec is invalid; names the file, the field and (when known) the line."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        field: str | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.file = file
        self.field = field
        self.line = line
        where = file or "<spec>"
        if line is not None:
            where += f":{line}"
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}", fix=fix)


class ModelError(OrchestratorError):
    """A model base path or version folder cannot be served."""

    exit_code = 3


class RuntimeFailure(OrchestratorError):
    """A runtime failed to start, reach or stop replicas (with the replica's last log lines)."""

    exit_code = 4


class HealthTimeout(RuntimeFailure):
    """Waiting for every wanted version to be AVAILABLE passed its deadline."""

    exit_code = 5


class ServingError(OrchestratorError):
    """A TF Serving endpoint answered with an error (refined in orchestrator.client.errors)."""

    exit_code = 6


class RolloutError(OrchestratorError):
    """A rollout could not start or go on."""

    exit_code = 7


__all__ = [
    "HealthTimeout",
    "ModelError",
    "OrchestratorError",
    "RolloutError",
    "RuntimeFailure",
    "ServingError",
    "SpecError",
]
