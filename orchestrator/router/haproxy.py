"""HAProxy as the router: one REST and one gRPC (h2c) endpoint over a deployment's replicas.

Stable and canary replicas sit in the same backends; the canary share is set by server
weights through HAProxy's runtime API (no reload, no dropped connection). Canary servers are
declared up front as disabled slots whose address is filled in at run time, so a rollout never
needs a config reload. Health checks ask TF Serving's status of the version each server must
serve (`/v1/models/M/versions/N`) and match its `"state": "AVAILABLE"` exactly: N comes from a
map keyed by server name (`versions.map`: stable servers the deployment's newest wanted version,
canary slots the canary's), changed at run time like the weights, so a replica whose wanted
version is loading, failed or missing is taken out even when another version is AVAILABLE.
Per-server counters (`show stat`) feed the canary analysis.

`HAProxyRouter` runs HAProxy as a local process; the Docker runtime subclasses it to run the
same config in a container (host networking, the state folder bind-mounted at the same path),
so everything past `start` (runtime API, weights, counters) is the same code for both.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import RuntimeFailure
from orchestrator.router import capture as capture_cfg
from orchestrator.router.base import Backend, check_weights

REST_BACKEND = "rest_pool"
GRPC_BACKEND = "grpc_pool"
CANARY_SLOTS = 4
MAX_WEIGHT = 256
VERSIONS_MAP = "versions.map"
# The state as TF Serving's status JSON writes it (`"state": "AVAILABLE"`, protobuf's JSON printer
# with whitespace); anchored on the key so error codes such as "UNAVAILABLE" never match.
AVAILABLE_STATE = r'"state" *: *"AVAILABLE"'


@dataclass(frozen=True)
class Upstream:
    """One TF Serving replica as the router reaches it."""

    grpc_port: int
    rest_port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class RouterConfig:
    name: str
    model: str
    rest_port: int
    grpc_port: int
    stable: tuple[Upstream, ...]
    bind_host: str = "127.0.0.1"
    check_interval_ms: int = 500
    extra_global: tuple[str, ...] = field(default=())
    extra_sections: tuple[str, ...] = field(default=())  # e.g. a `resolvers` section (Compose)
    server_options: str = ""  # appended to every stable server line
    # The version every stable replica must have AVAILABLE to take traffic (versions.map); None
    # when unknown at render time (Compose): then any version's exact AVAILABLE state counts.
    stable_version: int | None = None
    metrics_port: int = 0  # HAProxy's built-in Prometheus exporter on 127.0.0.1 (0 = none)
    # Payload capture to the SPOP agent (router.capture), docker runtime with `logging:`.
    capture: capture_cfg.CaptureConfig | None = None


_PROMEX: dict[str, bool] = {}


def supports_prometheus(binary: str) -> bool:
    """Whether this HAProxy was built with its Prometheus exporter (`haproxy -vv` lists it)."""
    if binary not in _PROMEX:
        try:
            out = subprocess.run([binary, "-vv"], capture_output=True, text=True, timeout=30)
            _PROMEX[binary] = "prometheus-exporter" in out.stdout + out.stderr
        except (OSError, subprocess.SubprocessError):
            _PROMEX[binary] = False
    return _PROMEX[binary]


def group_weights(canary_percent: int, n_stable: int, n_canary: int) -> tuple[int, int]:
    """Per-server weights so that canary servers together get `canary_percent` of requests."""
    if not 0 <= canary_percent <= 100:
        raise ValueError("canary_percent must be within 0..100")
    if n_canary == 0 or canary_percent == 0:
        return (1 if n_stable else 0, 0)
    if canary_percent == 100 or n_stable == 0:
        return (0, 1)
    stable_w, canary_w = (100 - canary_percent) * n_canary, canary_percent * n_stable
    scale = max(stable_w, canary_w) / MAX_WEIGHT
    if scale > 1:
        stable_w, canary_w = max(1, round(stable_w / scale)), max(1, round(canary_w / scale))
    return stable_w, canary_w


def render_versions_map(config: RouterConfig) -> str:
    """versions.map: the version each server's health check asks for, by server name (canary
    slots get theirs when a canary is routed)."""
    lines = [f"stable{i} {config.stable_version or 0}" for i in range(len(config.stable))]
    lines += [f"canary{i} 0" for i in range(CANARY_SLOTS)]
    return "\n".join(lines) + "\n"


def health_check_lines(config: RouterConfig, versions_map: str | None) -> list[str]:
    expect = "    http-check expect rstring " + '"' + AVAILABLE_STATE.replace('"', '\\"') + '"'
    if config.stable_version is None or versions_map is None:
        return [f"    option httpchk GET /v1/models/{config.model}", expect]
    return ["    option httpchk",
            f"    http-check send meth GET uri-lf /v1/models/{config.model}/versions/"
            f"%[srv_name,map({versions_map},0)]",
            expect]


def render_config(config: RouterConfig, socket_path: str, versions_map: str | None = None) -> str:
    """The haproxy.cfg for a deployment; pure, so it is checked with `haproxy -c` in tests.

    `versions_map`: the path of versions.map as HAProxy sees it; the checks ask for the wanted
    version of each server when it and `config.stable_version` are given."""
    check = (f"check inter {config.check_interval_ms} fastinter {config.check_interval_ms} "
             "rise 1 fall 2")
    lines = [
        "global",
        f"    stats socket {socket_path} mode 600 level admin",
        "    maxconn 4096",
        "    nbthread 1",
        *(f"    {line}" for line in config.extra_global),
        *(capture_cfg.global_lines(config.capture) if config.capture else []),
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 5m",
        "    timeout server 5m",
        "    timeout http-keep-alive 60s",
        "    option redispatch",
        "    http-reuse always",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "",
        *config.extra_sections,
        "frontend rest",
        f"    bind {config.bind_host}:{config.rest_port}",
        *(capture_cfg.rest_frontend_lines(config.capture) if config.capture else []),
        f"    default_backend {REST_BACKEND}",
        "",
        "frontend grpc",
        f"    bind {config.bind_host}:{config.grpc_port} proto h2",
        *(capture_cfg.grpc_frontend_lines(config.capture) if config.capture else []),
        f"    default_backend {GRPC_BACKEND}",
        "",
    ]
    if config.capture:
        lines += capture_cfg.backend_lines(config.capture)
    if config.metrics_port:
        lines += [
            "frontend metrics",
            f"    bind 127.0.0.1:{config.metrics_port}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    http-request return status 404",
            "",
        ]
    for backend, is_grpc in ((REST_BACKEND, False), (GRPC_BACKEND, True)):
        lines += [
            f"backend {backend}",
            "    balance roundrobin",
            *health_check_lines(config, versions_map),
        ]
        for i, up in enumerate(config.stable):
            port = up.grpc_port if is_grpc else up.rest_port
            extra = f" proto h2 check-proto h1 port {up.rest_port}" if is_grpc else ""
            options = f" {config.server_options}" if config.server_options else ""
            lines.append(f"    server stable{i} {up.host}:{port} weight 1 {check}{extra}{options}")
        for i in range(CANARY_SLOTS):
            extra = " proto h2 check-proto h1 port 1" if is_grpc else ""
            lines.append(f"    server canary{i} 127.0.0.1:1 weight 0 disabled {check}{extra}")
        lines.append("")
    return "\n".join(lines)


class RuntimeApi:
    """HAProxy's runtime API over its admin socket: one command per connection."""

    def __init__(self, socket_path: str, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.socket_path)
            except OSError as exc:
                raise RuntimeFailure(f"router admin socket {self.socket_path} does not answer: {exc}",
                                     fix="is the router running? `tfsctl status NAME` shows it") from exc
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks).decode(errors="replace")
        if any(word in answer for word in ("Unknown command", "No such", "Require", "not found")):
            raise RuntimeFailure(f"router refused `{line}`: {answer.strip()}")
        return answer

    def stats(self) -> list[dict[str, str]]:
        text = self.command("show stat")
        return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


@dataclass(frozen=True)
class ServerCounters:
    requests: int
    errors: int
    responses_4xx: int
    responses_5xx: int
    avg_response_ms: float
    status: str


MAX_SOCKET_PATH = 97  # HAProxy refuses a longer unix socket path (sun_path less its temp suffix)


class HAProxyRouter:
    """A local HAProxy process for one deployment, with its files in `folder`."""

    def __init__(self, folder: Path, binary: str | None = None, *,
                 endpoint: tuple[str, int, int] | None = None) -> None:
        self.folder = Path(folder)
        self._endpoint = endpoint
        self.binary = binary or shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.config_path = self.folder / "haproxy.cfg"
        self.socket_path = str(self.folder / "admin.sock")
        self.pid_path = self.folder / "haproxy.pid"
        self.log_path = self.folder / "haproxy.log"
        self.map_path = self.folder / VERSIONS_MAP
        self.api = RuntimeApi(self.socket_path)
        self._canary: list[Backend] = []

    # -- lifecycle ------------------------------------------------------------------------

    def write_config(self, config: RouterConfig) -> str:
        """Render and write haproxy.cfg (atomically); returns its text."""
        if len(self.socket_path.encode()) > MAX_SOCKET_PATH:
            raise RuntimeFailure(
                f"the router's admin socket path is {len(self.socket_path.encode())} bytes, over "
                f"HAProxy's {MAX_SOCKET_PATH}: {self.socket_path}",
                fix="set TFSO_STATE_DIR to a shorter folder (e.g. /tmp/tfso-NAME), or run tfsctl "
                "from a project path closer to /")
        from orchestrator.state import write_atomic

        text = render_config(config, self.socket_path, str(self.map_path))
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.map_path, render_versions_map(config))
        if config.capture is not None:
            write_atomic(Path(config.capture.spoe_path),
                         capture_cfg.render_spoe(config.capture, str(self.map_path)))
        write_atomic(self.config_path, text)
        return text

    def capture_drops(self) -> dict[str, int]:
        """Samples HAProxy could not hand to the capture agent, per model (router.capture)."""
        try:
            return capture_cfg.parse_drops(self.api.command(f"show table {capture_cfg.DROPS_TABLE}"))
        except RuntimeFailure:
            return {}

    def _set_versions(self, versions: Mapping[str, int]) -> None:
        """Change versions.map entries, on disk (for a restart) and in the running HAProxy."""
        from orchestrator.state import write_atomic

        current = {}
        if self.map_path.exists():
            for line in self.map_path.read_text().splitlines():
                if line.strip():
                    key, value = line.split()
                    current[key] = int(value)
        current.update(versions)
        write_atomic(self.map_path, "".join(f"{k} {v}\n" for k, v in current.items()))
        for key, version in versions.items():
            self.api.command(f"set map {self.map_path} {key} {version}")

    def set_stable_version(self, version: int) -> None:
        """The version the stable servers' checks ask for (after a reload or a promotion)."""
        stable = sorted({r["svname"] for r in self.api.stats()
                         if r["pxname"] == REST_BACKEND and r["svname"].startswith("stable")})
        self._set_versions({server: version for server in stable})

    def start(self, config: RouterConfig, *, deadline_s: float = 15.0) -> int:
        if not Path(self.binary).exists():
            raise RuntimeFailure(f"HAProxy not found at {self.binary}",
                                 fix="install it: apt-get install -y haproxy")
        self.write_config(config)
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(self.config_path)],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeFailure(f"router config rejected by haproxy -c: {check.stderr.strip()}",
                                 logs=check.stderr)
        Path(self.socket_path).unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen([self.binary, "-db", "-f", str(self.config_path)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_path.write_text(str(proc.pid))

        def exited() -> str | None:
            if proc.poll() is None:
                return None
            return f"router exited at start (code {proc.returncode})"

        self.wait_until_answering(deadline_s, exited)
        return proc.pid

    def wait_until_answering(self, deadline_s: float, exited: Callable[[], str | None]) -> None:
        """Wait until the admin socket answers; `exited()` names why the router died, if it did."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if (why := exited()) is not None:
                raise RuntimeFailure(why, fix="a port may be in use, or the config is wrong; see the log",
                                     logs=self._log_tail())
            try:
                self.api.command("show info")
                return
            except RuntimeFailure:
                time.sleep(0.05)
        raise RuntimeFailure(f"router did not open its admin socket within {deadline_s:g} s", logs=self._log_tail())

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except FileNotFoundError:
            return ""

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return b"haproxy" in cmd and state != "Z"

    def stop(self, deadline_s: float = 10.0) -> None:
        pid = self.pid()
        if pid is None or not self.running():
            self.pid_path.unlink(missing_ok=True)
            return
        os.killpg(pid, signal.SIGTERM)
        end = time.monotonic() + deadline_s
        while self.running() and time.monotonic() < end:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        if self.running():
            os.killpg(pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)

    # -- canary ---------------------------------------------------------------------------

    def set_canary(self, upstreams: Sequence[Backend], version: int | None = None) -> None:
        """Point canary slots at these replicas (weight 0 until set_weight) and enable checks,
        which ask for `version` (the one the canary serves) when the checks are per version."""
        if len(upstreams) > CANARY_SLOTS:
            raise RuntimeFailure(f"at most {CANARY_SLOTS} canary replicas", fix="use fewer canary replicas")
        if version is not None:
            self._set_versions({f"canary{i}": version for i in range(len(upstreams))})
        for i in range(CANARY_SLOTS):
            for backend, is_grpc in ((REST_BACKEND, False), (GRPC_BACKEND, True)):
                server = f"{backend}/canary{i}"
                if i < len(upstreams):
                    up = upstreams[i]
                    port = up.grpc_port if is_grpc else up.rest_port
                    self.api.command(f"set weight {server} 0")
                    self.api.command(f"set server {server} addr {up.host} port {port}")
                    if is_grpc:
                        self.api.command(f"set server {server} check-port {up.rest_port}")
                    self.api.command(f"set server {server} state ready")
                    self.api.command(f"enable health {server}")
                else:
                    self.api.command(f"set weight {server} 0")
                    self.api.command(f"set server {server} state maint")
        self._canary = list(upstreams)

    def set_weight(self, canary_percent: int) -> None:
        stats = self.api.stats()
        stable = sorted({r["svname"] for r in stats if r["pxname"] == REST_BACKEND and r["svname"].startswith("stable")})
        n_canary = sum(1 for r in stats if r["pxname"] == REST_BACKEND and r["svname"].startswith("canary")
                       and "MAINT" not in r["status"])
        stable_w, canary_w = group_weights(canary_percent, len(stable), n_canary)
        for backend in (REST_BACKEND, GRPC_BACKEND):
            # Raise the side that grows first, so the total never reaches zero mid-change.
            order = ["canary", "stable"] if canary_percent >= 50 else ["stable", "canary"]
            for group in order:
                for r in stats:
                    if r["pxname"] == backend and r["svname"].startswith(group) and "MAINT" not in r["status"]:
                        self.api.command(f"set weight {backend}/{r['svname']} "
                                         f"{canary_w if group == 'canary' else stable_w}")

    # -- the Router interface (orchestrator.router.base) ----------------------------------

    def set_weights(self, weights: Mapping[str, int]) -> None:
        self.set_weight(check_weights(weights)[1])

    def get_weights(self) -> dict[str, int]:
        """The split HAProxy applies now, from its servers' live weights (REST backend)."""
        totals = {"stable": 0, "canary": 0}
        for r in self.api.stats():
            if r["pxname"] == REST_BACKEND and "MAINT" not in r["status"]:
                for group in totals:
                    if r["svname"].startswith(group):
                        totals[group] += _int(r.get("weight"))
        whole = sum(totals.values())
        canary = round(100 * totals["canary"] / whole) if whole else 0
        return {"stable": 100 - canary, "canary": canary}

    def endpoint(self) -> tuple[str, int, int]:
        if self._endpoint is None:
            raise RuntimeFailure(f"the router in {self.folder} was opened without its ports",
                                 fix="open it through its runtime: `runtime.router(name)`")
        return self._endpoint

    def route_canary(self, replicas: Sequence[Backend], version: int | None = None, *,
                     deadline_s: float = 30.0) -> None:
        """`set_canary`, then wait until HAProxy's checks see every canary UP in both backends."""
        self.set_canary(replicas, version)
        end = time.monotonic() + deadline_s
        states: Mapping[str, str] = {}
        while time.monotonic() < end:
            states = self.server_states()
            if sum(1 for k, v in states.items() if "/canary" in k and v.startswith("UP")) >= 2 * len(replicas):
                return
            time.sleep(0.05)
        raise RuntimeFailure(
            f"the router's checks never saw the canary UP within {deadline_s:g} s: {dict(states)}",
            fix="read the canary's log (local: the deployment's canary/logs/ folder in the state folder; "
            "docker: `docker logs` of the containers labelled io.tfso.role=canary) and the router's "
            f"({self.log_path})")

    def close(self) -> None:
        """Nothing held: the router process belongs to its deployment, not to this handle."""

    def drain_canary(self, *, deadline_s: float = 30.0) -> None:
        """Stable back to full weight, canary slots to weight 0 and maintenance, then wait until
        no request is still in flight to a canary, so stopping it next fails nobody."""
        for r in self.api.stats():
            if r["pxname"] in (REST_BACKEND, GRPC_BACKEND) and r["svname"].startswith("stable"):
                self.api.command(f"set weight {r['pxname']}/{r['svname']} 1")
        for i in range(CANARY_SLOTS):
            for backend in (REST_BACKEND, GRPC_BACKEND):
                self.api.command(f"set weight {backend}/canary{i} 0")
                self.api.command(f"set server {backend}/canary{i} state maint")
        self._canary = []
        end = time.monotonic() + deadline_s
        while self.in_flight_to_canary() and time.monotonic() < end:
            time.sleep(0.02)

    def in_flight_to_canary(self) -> int:
        """Requests currently being served by canary servers (HAProxy's `scur`)."""
        return sum(_int(r.get("scur")) for r in self.api.stats()
                   if r["pxname"] in (REST_BACKEND, GRPC_BACKEND) and r["svname"].startswith("canary"))

    def counters(self) -> dict[str, ServerCounters]:
        """Cumulative per-group counters (`stable`, `canary`) over both backends."""
        groups: dict[str, list[dict[str, str]]] = {"stable": [], "canary": []}
        for r in self.api.stats():
            if r["pxname"] in (REST_BACKEND, GRPC_BACKEND):
                for group in groups:
                    if r["svname"].startswith(group):
                        groups[group].append(r)
        return {g: _sum_counters(rows) for g, rows in groups.items()}

    def server_states(self) -> Mapping[str, str]:
        return {f"{r['pxname']}/{r['svname']}": r["status"] for r in self.api.stats()
                if r["pxname"] in (REST_BACKEND, GRPC_BACKEND) and r["svname"] not in ("BACKEND", "FRONTEND")}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _sum_counters(rows: Sequence[Mapping[str, str]]) -> ServerCounters:
    requests = sum(_int(r.get("hrsp_1xx")) + _int(r.get("hrsp_2xx")) + _int(r.get("hrsp_3xx"))
                   + _int(r.get("hrsp_4xx")) + _int(r.get("hrsp_5xx")) + _int(r.get("hrsp_other"))
                   + _int(r.get("eresp")) for r in rows)
    r4 = sum(_int(r.get("hrsp_4xx")) for r in rows)
    r5 = sum(_int(r.get("hrsp_5xx")) for r in rows)
    errors = r4 + r5 + sum(_int(r.get("eresp")) + _int(r.get("econ")) for r in rows)
    weights = [(_int(r.get("stot")), _int(r.get("rtime"))) for r in rows]
    total = sum(w for w, _ in weights)
    avg = sum(w * t for w, t in weights) / total if total else 0.0
    status = ",".join(sorted({r.get("status", "") for r in rows}))
    return ServerCounters(requests, errors, r4, r5, avg, status)


def wait_until_routed(router: HAProxyRouter, n_stable: int, *, deadline_s: float) -> None:
    """Wait until HAProxy's own checks see every stable replica UP in both backends."""
    end = time.monotonic() + deadline_s
    states: Mapping[str, str] = {}
    while time.monotonic() < end:
        states = router.server_states()
        up = [k for k, v in states.items() if "/stable" in k and v.startswith("UP")]
        if len(up) >= 2 * n_stable:
            return
        time.sleep(0.05)
    raise RuntimeFailure(f"router checks did not see the replicas UP within {deadline_s:g} s: {dict(states)}",
                         fix="see the router log in the state folder", logs=router._log_tail())
