"""Errors of model packaging: a conversion that fails, and an artifact that drifts.

    OrchestratorError
     └── ConvertError          a format could not be produced or run (tool, model, arguments)
          └── VerificationError  the artifact was produced but answers too unlike the SavedModel
"""

from __future__ import annotations

from orchestrator.errors import OrchestratorError


class ConvertError(OrchestratorError):
    """A conversion, or running its artifact, failed; names the format and the tool's words."""

    exit_code = 8

    def __init__(
        self,
        message: str,
        *,
        fix: str | None = None,
        format: str | None = None,
        logs: str | None = None,
    ) -> None:
        self.format = format
        super().__init__(f"{format}: {message}" if format else message, fix=fix, logs=logs)


class VerificationError(ConvertError):
    """An artifact's outputs differ from the SavedModel's beyond the thresholds asked for."""

    exit_code = 9


__all__ = ["ConvertError", "VerificationError"]
