"""Models, versions and labels: what is loaded, what should be, and the states in between.

Follows TF Serving's ServerCore + AspiredVersionsManager semantics:
- Version folders (all-digit names) under each base path are rescanned every
  `--file_system_poll_wait_seconds`; the version policy (latest N / all / specific) picks the
  aspired versions; new ones load, the ones no longer aspired unload after the new ones have
  finished loading (availability preserving).
- States: START, LOADING, AVAILABLE, UNLOADING, END. A failed load ends in END with its error
  status and does not disturb the other versions. It is retried only if its folder changes.
- Like TF Serving's file-system poll, a base path that goes missing or unreadable unloads nothing,
  and any all-digit entry counts as a version (a version folder replaced by a file keeps serving).
  The problem is logged once and shown in the model status's error_message (code stays OK).
- A config reload replaces the whole config: models left out are unloaded. A reload naming a base
  path that does not exist is refused (NOT_FOUND) before anything changes. It waits for models new
  to the config (not for new versions of existing ones), then checks labels: a label may point
  only at an AVAILABLE version (FAILED_PRECONDITION otherwise), unless
  --allow_version_labels_for_unavailable_models and the label is new.

All state lives on the event loop; loads and unloads run in a thread pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from orchestrator.server.config import ModelConfig
from orchestrator.server.runner import LoadError
from orchestrator.server.status import ServingStatus

log = logging.getLogger("tfs.manager")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionState:
    version: int
    state: str = START
    error_code: str = "OK"
    error_message: str = ""
    servable: Any = None
    folder_stamp: tuple[float, ...] = ()
    task: asyncio.Task | None = None


@dataclass
class ModelEntry:
    config: ModelConfig
    versions: dict[int, VersionState] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    base_path_error: str = ""
    version_problems: dict[int, str] = field(default_factory=dict)

    def notice(self, version: int) -> str:
        """What is wrong on disk for a version that keeps serving anyway ("" when nothing)."""
        return "; ".join(p for p in (self.base_path_error, self.version_problems.get(version)) if p)

    def latest_available(self) -> VersionState | None:
        best = None
        for v in self.versions.values():
            if v.state == AVAILABLE and (best is None or v.version > best.version):
                best = v
        return best

    def is_available(self) -> bool:
        return self.latest_available() is not None


def scan_versions(base_path: str) -> list[int]:
    """Version numbers of the all-digit entries under base_path; OSError if it is missing.

    Any numbered entry counts, folder or not, as in TF Serving: a version folder swapped for a file
    must not unload the version being served (loading such a version fails on its own).
    """
    return [int(name) for name in os.listdir(base_path) if name.isascii() and name.isdigit()]


def missing_base_paths(configs: list[ModelConfig]) -> list[str]:
    return [
        f"Could not find base path {c.base_path} for servable {c.name}"
        for c in configs
        if not os.path.isdir(c.base_path)
    ]


def _stamp(path: str) -> tuple[float, ...]:
    stamps = []
    for p in (path, os.path.join(path, "saved_model.pb"), os.path.join(path, "variables")):
        try:
            stamps.append(os.stat(p).st_mtime)
        except OSError:
            stamps.append(0.0)
    return tuple(stamps)


def _version_dir(base_path: str, version: int) -> str:
    # Upstream accepts zero-padded folder names (00000123); find the folder that parses to version.
    plain = os.path.join(base_path, str(version))
    if os.path.isdir(plain):
        return plain
    try:
        for name in os.listdir(base_path):
            if name.isdigit() and int(name) == version:
                return os.path.join(base_path, name)
    except OSError:
        pass
    return plain


class Manager:
    def __init__(
        self,
        *,
        load: Callable[[str, int, str], Any],
        executor: Executor,
        poll_wait_s: float = 1.0,
        max_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        allow_labels_for_unavailable: bool = False,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._load = load
        self._executor = executor
        self.poll_wait_s = poll_wait_s
        self.max_load_retries = max_load_retries
        self.load_retry_interval_s = load_retry_interval_s
        self.allow_labels_for_unavailable = allow_labels_for_unavailable
        self._on_change = on_change or (lambda: None)
        self.models: dict[str, ModelEntry] = {}
        self._retired: dict[str, ModelEntry] = {}  # removed by a reload: status shows END
        self._lock = asyncio.Lock()
        self._poll_task: asyncio.Task | None = None
        self._closing = False

    # -- configuration ----------------------------------------------------------------------------
    async def apply_config(self, configs: list[ModelConfig]) -> None:
        """Replace the whole config. Raises ServingStatus when labels cannot be applied."""
        async with self._lock:
            first = not self.models and not self._retired
            changed = [
                c
                for c in configs
                if c.name not in self.models or self.models[c.name].config.base_path != c.base_path
            ]
            missing = missing_base_paths(changed) if not first else []
            if missing:  # nothing changes: what serves now keeps serving, labels included
                raise ServingStatus(
                    "NOT_FOUND",
                    "; ".join(missing) + ". The new config was not applied; the loaded versions "
                    "keep serving",
                )
            wanted = {c.name: c for c in configs}
            for name in list(self.models):
                if name not in wanted:
                    entry = self.models.pop(name)
                    log.info("Unloading model %s: not in the new config", name)
                    for vs in list(entry.versions.values()):
                        if vs.state in (START, LOADING, AVAILABLE):
                            self._start_unload(entry, vs)
                    self._retired[name] = entry
            new_tasks: list[asyncio.Task] = []
            for name, cfg in wanted.items():
                existing = self.models.get(name)
                if existing is not None and existing.config.base_path == cfg.base_path:
                    existing.config = cfg
                    self._sync_model(existing)
                    continue
                if existing is not None:  # same name, new base path: a new model
                    for vs in list(existing.versions.values()):
                        if vs.state in (START, LOADING, AVAILABLE):
                            self._start_unload(existing, vs)
                self._retired.pop(name, None)
                entry = ModelEntry(config=cfg)
                self.models[name] = entry
                new_tasks += self._sync_model(entry)
            if new_tasks or first:
                await asyncio.gather(*new_tasks, return_exceptions=True)
            self._update_labels(configs)
        self._on_change()

    def _update_labels(self, configs: list[ModelConfig]) -> None:
        new_labels: dict[str, dict[str, int]] = {}
        for cfg in configs:
            entry = self.models[cfg.name]
            for label, version in cfg.labels.items():
                allow = False
                if self.allow_labels_for_unavailable:
                    existing = entry.labels.get(label)
                    allow = not (existing is not None and existing != version)
                vs = entry.versions.get(version)
                if not allow and (vs is None or vs.state != AVAILABLE):
                    raise ServingStatus(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model {cfg.name}, "
                        "which is not currently available for inference",
                    )
                new_labels.setdefault(cfg.name, {})[label] = version
        for name, entry in self.models.items():
            entry.labels = new_labels.get(name, {})

    # -- polling ------------------------------------------------------------------------------------
    def start_polling(self) -> None:
        if self._poll_task is None and self.poll_wait_s > 0:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll_wait_s)
            try:
                await self.poll_once()
            except Exception:  # pragma: no cover - a poll must never kill the server
                log.exception("version poll failed")

    async def poll_once(self) -> None:
        async with self._lock:
            for entry in self.models.values():
                self._sync_model(entry)

    def _sync_model(self, entry: ModelEntry) -> list[asyncio.Task]:
        """Start loads/unloads so that the versions on disk match the policy. Returns load tasks."""
        cfg = entry.config
        try:
            found = scan_versions(cfg.base_path)
            if entry.base_path_error:
                log.info("Base path %s for servable %s is back", cfg.base_path, cfg.name)
            entry.base_path_error = ""
        except OSError as e:
            # TF Serving's file-system poll never unloads a model because its base path went away.
            if not entry.base_path_error:
                log.error(
                    "Could not find base path %s for servable %s (%s); the loaded versions keep "
                    "serving",
                    cfg.base_path,
                    cfg.name,
                    e.strerror or e,
                )
            entry.base_path_error = (
                f"Could not find base path {cfg.base_path} for servable {cfg.name}"
            )
            return []
        self._check_version_entries(entry, found)
        if not found and not entry.versions:
            log.warning(
                "No versions of servable %s found under base path %s", cfg.name, cfg.base_path
            )
        aspired = cfg.policy.select(found)
        tasks = []
        for v in sorted(aspired):
            vs = entry.versions.get(v)
            path = _version_dir(cfg.base_path, v)
            if vs is None or (
                vs.state == END and (vs.error_code == "OK" or vs.folder_stamp != _stamp(path))
            ):
                vs = VersionState(v, START)
                entry.versions[v] = vs
                vs.task = asyncio.get_running_loop().create_task(
                    self._load_version(entry, vs, path)
                )
                tasks.append(vs.task)
        unload = [
            vs
            for v, vs in entry.versions.items()
            if v not in aspired and vs.state in (START, LOADING, AVAILABLE)
        ]
        if unload:
            pending = [vs.task for vs in entry.versions.values() if vs.task and not vs.task.done()]
            asyncio.get_running_loop().create_task(self._unload_after(entry, unload, pending))
        if tasks:
            self._on_change()
        return tasks

    def _check_version_entries(self, entry: ModelEntry, found: list[int]) -> None:
        problems = {}
        for v in found:
            path = _version_dir(entry.config.base_path, v)
            if not os.path.isdir(path):
                problems[v] = f"version entry {path} is not a directory"
                if v not in entry.version_problems:
                    log.error(
                        "Servable %s: %s; a loaded version %d keeps serving",
                        entry.config.name,
                        problems[v],
                        v,
                    )
        entry.version_problems = problems

    async def _unload_after(
        self, entry: ModelEntry, versions: list[VersionState], pending: list[asyncio.Task]
    ) -> None:
        """Unload versions no longer aspired once the aspired ones are done loading.

        Availability preserving: while no aspired version is AVAILABLE (say the new one failed to
        load), the newest of the old serving versions keeps serving.
        """
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.models.get(entry.config.name) is not entry:
            return
        try:
            aspired = entry.config.policy.select(scan_versions(entry.config.base_path))
        except OSError:
            return  # the base path went away meanwhile: unload nothing
        candidates = [
            vs
            for vs in versions
            if vs.state in (START, LOADING, AVAILABLE) and vs.version not in aspired
        ]
        aspired_serving = any(
            entry.versions.get(v) is not None and entry.versions[v].state == AVAILABLE
            for v in aspired
        )
        if aspired and not aspired_serving:
            serving = [vs for vs in candidates if vs.state == AVAILABLE]
            if serving:
                keep = max(serving, key=lambda vs: vs.version)
                candidates = [vs for vs in candidates if vs is not keep]
        for vs in candidates:
            self._start_unload(entry, vs)

    async def _load_version(self, entry: ModelEntry, vs: VersionState, path: str) -> None:
        name = entry.config.name
        vs.state = LOADING
        vs.folder_stamp = _stamp(path)
        self._on_change()
        log.info("Loading servable version {name: %s version: %d} from %s", name, vs.version, path)
        loop = asyncio.get_running_loop()
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                servable = await loop.run_in_executor(
                    self._executor, self._load, name, vs.version, path
                )
                break
            except LoadError as e:
                err = e
            except Exception as e:  # pragma: no cover - unexpected loader failure
                err = LoadError("UNKNOWN", f"{type(e).__name__}: {e}")
            if err.transient and attempt < self.max_load_retries and vs.state == LOADING:
                attempt += 1
                log.warning(
                    "Loading %s version %d failed, retry %d: %s",
                    name,
                    vs.version,
                    attempt,
                    err.message,
                )
                await asyncio.sleep(self.load_retry_interval_s)
                continue
            vs.state = END
            vs.error_code = err.code
            vs.error_message = err.message
            vs.folder_stamp = _stamp(path)
            log.error(
                "Loading servable {name: %s version: %d} failed: %s", name, vs.version, err.message
            )
            self._on_change()
            return
        if vs.state != LOADING or self._closing:  # unloaded while loading
            await loop.run_in_executor(self._executor, servable.close)
            return
        vs.servable = servable
        vs.state = AVAILABLE
        log.info(
            "Successfully loaded servable version {name: %s version: %d} in %.2fs",
            name,
            vs.version,
            time.monotonic() - started,
        )
        self._on_change()

    def _start_unload(self, entry: ModelEntry, vs: VersionState) -> None:
        servable = vs.servable
        if vs.state in (START, LOADING):
            vs.state = END  # the load task sees this and closes what it loaded
            self._on_change()
            return
        vs.state = UNLOADING
        vs.servable = None
        self._on_change()
        asyncio.get_running_loop().create_task(self._finish_unload(entry, vs, servable))

    async def _finish_unload(self, entry: ModelEntry, vs: VersionState, servable: Any) -> None:
        log.info("Unloading servable version {name: %s version: %d}", entry.config.name, vs.version)
        deadline = time.monotonic() + 30.0
        while servable is not None and getattr(servable, "inflight", 0) > 0:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        if servable is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, servable.close)
        vs.state = END
        self._on_change()

    async def close(self) -> None:
        self._closing = True
        if self._poll_task:
            self._poll_task.cancel()
        for entry in self.models.values():
            for vs in entry.versions.values():
                if vs.servable is not None:
                    vs.servable.close()

    # -- lookups ------------------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Any:
        """The Servable a request should use; NOT_FOUND / INVALID_ARGUMENT like TF Serving."""
        entry = self.models.get(name)
        if label:
            v = entry.labels.get(label) if entry else None
            if v is None:
                raise ServingStatus(
                    "INVALID_ARGUMENT", f"Unrecognized servable version label: {label}"
                )
            version = v
        if version is not None:
            vs = entry.versions.get(version) if entry else None
            if vs is None or vs.state != AVAILABLE or vs.servable is None:
                raise ServingStatus(
                    "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                )
            return vs.servable
        vs = entry.latest_available() if entry else None
        if vs is None:
            raise ServingStatus("NOT_FOUND", f"Servable not found for request: Latest({name})")
        return vs.servable

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionState]:
        entry = self.models.get(name) or self._retired.get(name)
        if label:
            v = entry.labels.get(label) if entry and name in self.models else None
            if v is None:
                raise ServingStatus(
                    "INVALID_ARGUMENT", f"Unrecognized servable version label: {label}"
                )
            version = v
        if version is not None:
            vs = entry.versions.get(version) if entry else None
            if vs is None:
                raise ServingStatus(
                    "NOT_FOUND", f"Could not find version {version} of model {name}"
                )
            return [self._with_notice(entry, vs) if entry else vs]
        if entry is None or not entry.versions:
            raise ServingStatus("NOT_FOUND", f"Could not find any versions of model {name}")
        return [
            self._with_notice(entry, entry.versions[v])
            for v in sorted(entry.versions, reverse=True)
        ]

    @staticmethod
    def _with_notice(entry: ModelEntry, vs: VersionState) -> VersionState:
        notice = entry.notice(vs.version) if vs.state == AVAILABLE else ""
        return dataclasses.replace(vs, error_message=notice) if notice else vs

    def availability(self) -> dict[str, bool]:
        return {name: entry.is_available() for name, entry in self.models.items()}
