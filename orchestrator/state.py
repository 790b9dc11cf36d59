"""The state folder: what the orchestrator started, so later commands find it.

Layout (under `.tfso/` in the working directory, or `$TFSO_STATE_DIR`):

    deployments/NAME.json          runtime, replicas (pid or container id, ports), endpoints, hashes
    deployments/NAME/config/       the rendered models.config, batching and monitoring files
    deployments/NAME/logs/         replica-<i>.log (local runtime)
    deployments/NAME.canary.json   a running rollout's canary replicas (`load_canary`), not a deployment

Every file is written atomically (temp file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.files import write_atomic

DEFAULT_STATE_DIR = Path(".tfso")


def write_files_atomic(folder: Path, files: Mapping[str, str]) -> bool:
    """Write each file atomically; returns True when any content changed."""
    changed = False
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_atomic(path, text)
            changed = True
    return changed


class StateStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or os.environ.get("TFSO_STATE_DIR") or DEFAULT_STATE_DIR).absolute()

    def _file(self, name: str) -> Path:
        return self.root / "deployments" / f"{name}.json"

    def folder(self, name: str) -> Path:
        return self.root / "deployments" / name

    def config_dir(self, name: str) -> Path:
        return self.folder(name) / "config"

    def log_path(self, name: str, replica: int) -> Path:
        return self.folder(name) / "logs" / f"replica-{replica}.log"

    def load(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._file(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def save(self, name: str, data: Mapping[str, Any]) -> None:
        write_atomic(self._file(name), json.dumps(data, indent=2, sort_keys=True) + "\n")

    def delete(self, name: str) -> None:
        self._file(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        """Deployments only: a canary record's name has a dot, which no deployment name has."""
        folder = self.root / "deployments"
        return sorted(p.stem for p in folder.glob("*.json") if "." not in p.stem) if folder.is_dir() else []

    # -- a deployment's canary (rollouts) -----------------------------------------------------

    @staticmethod
    def canary_key(name: str) -> str:
        """Where `name`'s canary keeps its config and logs (`deployments/NAME.canary/`)."""
        return f"{name}.canary"

    def load_canary(self, name: str) -> dict[str, Any] | None:
        return self.load(self.canary_key(name))

    def save_canary(self, name: str, data: Mapping[str, Any]) -> None:
        self.save(self.canary_key(name), data)

    def delete_canary(self, name: str) -> None:
        self.delete(self.canary_key(name))
