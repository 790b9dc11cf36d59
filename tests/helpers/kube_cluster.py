"""An emulated Kubernetes API server and a test-side node agent, for tests only.

No cluster can run on these machines, so tests talk to `EmulatedApiServer` over real HTTP
with the unmodified official `kubernetes` client. It stores objects and implements the
subset of API semantics the project uses, written to behave as the real server does where
it matters to us (kmock 0.8 ignores label selectors, cannot create through server-side apply
and sets no uid or generation, among other gaps):

- create (409 if present, 404 if the namespace is missing), get, list with equality label
  selectors, replace (PUT), delete; uid, resourceVersion, generation, creationTimestamp;
- PATCH: JSON merge patch (RFC 7386) and server-side apply (needs fieldManager; creates a
  missing object; records managedFields; a field the same manager applied before and no
  longer applies is removed). Strategic merge is treated as a merge patch in which lists are
  replaced whole (no merge keys), and JSON patch is refused with 415;
- 403 Forbidden, in the real server's words, for (verb, resource) pairs in `forbidden` (RBAC);
- watch (`?watch=true`): ADDED/MODIFIED/DELETED events after a resourceVersion, by label
  selector, as JSON lines until `timeoutSeconds` (`can_watch = False` answers a plain list, as
  a server that cannot watch would, so the runtime's fallback to polling is tested too);
- the pod proxy, `/api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH`, forwarded to the pod.

`NodeAgent` plays kubelet and the Deployment controller: it turns every Deployment into pods
that are REAL `tfs-model-server` processes on free loopback ports, keeps each pod's /config
in step with its ConfigMap (so TF Serving's config poll hot-reloads), maps PVC claims to
local folders, marks pods Ready from the container's readiness probe, rolls a changed template
with maxUnavailable 0 (old pods serve until every new one is Ready) and fills the Deployment's
status. Pods poll their config every `config_poll_s` (1 s; the manifests say 10), and a removed
pod's server shuts down beside the sync loop, as kubelet's graceful termination does. Only
scheduling, images and networking are simulated; what is NOT emulated (real RBAC, admission, CEL
rules, watch bookmarks and expiry, kubelet back-off and ConfigMap sync delay, field-ownership
conflicts) is for the real-cluster suite.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.server import SERVER_CMD, ServerProcess

Obj = dict[str, Any]
_CORE = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>.*))?)?$")
_GROUP = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>.*))?)?$"
)
_NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _prune(current: Any, previous: Any, applied: Any) -> Any:
    """Drop what a manager applied last time and no longer applies (server-side apply's removal)."""
    if not (isinstance(current, dict) and isinstance(previous, dict) and isinstance(applied, dict)):
        return current
    out = dict(current)
    for key, value in previous.items():
        if key not in applied:
            out.pop(key, None)
        elif key in out:
            out[key] = _prune(out[key], value, applied[key])
    return out


def _status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _matches(obj: Obj, selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value.lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class EmulatedApiServer:
    """The API server's object store over real HTTP on 127.0.0.1; one per test."""

    def __init__(self, namespaces: tuple[str, ...] = ("default",)) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # watches wait on it
        self.events: list[tuple[int, str, str, str, Obj]] = []  # (rv, kind path, ns, type, object)
        self.watches = 0  # watch requests served
        self.can_watch = True  # False: ?watch is ignored (a plain list), as by a server that cannot watch
        self.objects: dict[tuple[str, str, str], Obj] = {}  # (api-path prefix+plural, ns, name)
        self.namespaces: set[str] = set(namespaces)
        self.pod_ports: dict[tuple[str, str], dict[int, int]] = {}  # (ns, pod) → container→host port
        self.pod_logs: dict[tuple[str, str], Any] = {}  # (ns, pod) → callable returning the log text
        self._rv = 0
        self.requests: list[tuple[float, str, str]] = []  # (monotonic time, method, path)
        # server-side apply: what each field manager applied last, per object
        self.applied: dict[tuple[str, str, str, str], Obj] = {}
        # RBAC stand-in: (verb, plural) pairs this user may not do, answered 403 as the real server does
        self.forbidden: set[tuple[str, str]] = set()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> EmulatedApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def client_configuration(self) -> Any:
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return config

    # -- store ------------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def items(self, kind_path: str, namespace: str, selector: str = "") -> list[Obj]:
        with self.lock:
            return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items())
                    if k == kind_path and ns == namespace and _matches(o, selector)]

    def get(self, kind_path: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.objects.get((kind_path, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def put(self, kind_path: str, namespace: str, obj: Obj, *, create: bool) -> Obj:
        """Store `obj` with server-set metadata; bumps generation when spec changes."""
        with self.lock:
            name = obj["metadata"]["name"]
            old = self.objects.get((kind_path, namespace, name))
            meta = obj.setdefault("metadata", {})
            meta["namespace"] = namespace
            if old is None or create:
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                meta["generation"] = 1
            else:
                for key in ("uid", "creationTimestamp"):
                    meta[key] = old["metadata"][key]
                changed = old.get("spec") != obj.get("spec")
                meta["generation"] = old["metadata"].get("generation", 1) + (1 if changed else 0)
                if "status" in old and "status" not in obj:
                    obj["status"] = old["status"]
            meta["resourceVersion"] = self._next_rv()
            self.objects[(kind_path, namespace, name)] = obj
            self._record(kind_path, namespace, "ADDED" if old is None or create else "MODIFIED", obj)
            return copy.deepcopy(obj)

    def set_status(self, kind_path: str, namespace: str, name: str, status: Obj) -> None:
        """What a controller writes: status only, on the object as it is now."""
        with self.lock:
            obj = self.objects.get((kind_path, namespace, name))
            if obj is not None and obj.get("status") != status:
                obj["status"] = copy.deepcopy(status)
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self._record(kind_path, namespace, "MODIFIED", obj)

    def event(self, namespace: str, pod: str, reason: str, message: str, type_: str = "Warning") -> None:
        """An Event about a pod, as kubelet and the scheduler record them."""
        with self.lock:
            name = f"{pod}.{self._rv + 1}"
            self.put(EVENTS, namespace, {
                "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
                "reason": reason, "message": message, "type": type_, "count": 1}, create=True)

    def delete(self, kind_path: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            for key in [k for k in self.applied if k[:3] == (kind_path, namespace, name)]:
                del self.applied[key]
            gone = self.objects.pop((kind_path, namespace, name), None)
            if gone is not None:
                gone["metadata"]["resourceVersion"] = self._next_rv()
                self._record(kind_path, namespace, "DELETED", gone)
            return gone

    def _record(self, kind_path: str, namespace: str, type_: str, obj: Obj) -> None:
        """A watch event (the lock is held): every change, in resourceVersion order."""
        self.events.append((int(obj["metadata"]["resourceVersion"]), kind_path, namespace, type_,
                            copy.deepcopy(obj)))
        self.changed.notify_all()

    def watch(self, kind_path: str, namespace: str, params: dict[str, str], write: Any) -> None:
        """A watch (`?watch=true`): events after `resourceVersion` as JSON lines, matching the
        label selector, until `timeoutSeconds` (the real server's default is minutes; 60 here)."""
        self.watches += 1
        selector = params.get("labelSelector", "")
        with self.lock:
            since = int(params.get("resourceVersion") or self._rv)
        end = time.monotonic() + min(float(params.get("timeoutSeconds") or 60), 60)
        seen = 0
        while True:
            with self.lock:
                batch = [e for e in self.events[seen:] if e[0] > since and e[1] == kind_path and e[2] == namespace
                         and _matches(e[4], selector)]
                seen = len(self.events)
                remaining = end - time.monotonic()
                if not batch and remaining > 0:
                    self.changed.wait(remaining)
                    continue
            if not batch:
                return
            try:
                write(b"".join(json.dumps({"type": t, "object": o}).encode() + b"\n" for _, _, _, t, o in batch))
            except OSError:
                return  # the client stopped watching

    # -- HTTP -------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _route(self, method: str) -> None:
                raw_path, _, query = self.path.partition("?")
                path = urllib.parse.unquote(raw_path)
                params = dict(urllib.parse.parse_qsl(query))
                server.requests.append((time.monotonic(), method, path))
                try:
                    code, body, ctype = server.handle(method, path, params, self.headers, self._body())
                except Exception as exc:  # a harness bug shows as a 500 with its message
                    code, body, ctype = 500, _status(500, "InternalError", repr(exc)), "application/json"
                if callable(body):  # a watch: JSON lines in HTTP chunks (read as they come) until it ends
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()

                    def write(data: bytes) -> None:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()

                    body(write)
                    try:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                    except OSError:
                        self.close_connection = True
                    return
                self._send(code, body, ctype)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler

    def handle(self, method: str, path: str, params: dict[str, str], headers: Any,
               body: bytes) -> tuple[int, Any, str]:
        js = "application/json"
        m = _NAMESPACES.match(path)
        if m:
            return self._namespaces(method, m.group("name"), body)
        m = _CORE.match(path) or _GROUP.match(path)
        if not m:
            return 404, _status(404, "NotFound", f"no route for {path}"), js
        ns, plural, name, sub = m.group("ns"), m.group("plural"), m.group("name"), m.group("sub")
        prefix = path.split("/namespaces/")[0]
        kind_path = f"{prefix}/{plural}"
        if plural == "pods" and name and sub is not None and sub.startswith("proxy"):
            return self._proxy(method, ns, name, sub[len("proxy"):], body)
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(method, method.lower())
        if (verb, plural) in self.forbidden:
            group = m.groupdict().get("group") or ""
            return 403, _status(403, "Forbidden", (
                f'{plural}{"." + group if group else ""} "{name or ""}" is forbidden: User '
                f'"system:serviceaccount:ci:deployer" cannot {verb} resource "{plural}" in API group '
                f'"{group}" in the namespace "{ns}"')), js
        if ns not in self.namespaces:
            return 404, _status(404, "NotFound", f'namespaces "{ns}" not found'), js
        if plural == "pods" and name and sub == "log" and method == "GET":
            logs = self.pod_logs.get((ns, name))
            if logs is None:
                return 400, _status(400, "BadRequest", f'container in pod "{name}" is waiting to start'), js
            lines = logs().splitlines()
            if "tailLines" in params:
                lines = lines[-int(params["tailLines"]):]
            return 200, ("\n".join(lines) + "\n").encode(), "text/plain"
        if sub:
            return 404, _status(404, "NotFound", f"subresource {sub} is not emulated"), js
        if name is None:
            if method == "GET" and params.get("watch") in ("true", "1", "True") and self.can_watch:
                return 200, lambda write: self.watch(kind_path, ns, params, write), "application/json"
            if method == "GET":
                items = self.items(kind_path, ns, params.get("labelSelector", ""))
                return 200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._rv)},
                             "items": items}, js
            if method == "POST":
                obj = json.loads(body)
                if self.get(kind_path, ns, obj["metadata"]["name"]) is not None:
                    return 409, _status(409, "AlreadyExists",
                                        f'{plural} "{obj["metadata"]["name"]}" already exists'), js
                return 201, self.put(kind_path, ns, obj, create=True), js
            return 405, _status(405, "MethodNotAllowed", method), js
        current = self.get(kind_path, ns, name)
        if method == "GET":
            if current is None:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found'), js
            return 200, current, js
        if method == "DELETE":
            gone = self.delete(kind_path, ns, name)
            if gone is None:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found'), js
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}, js
        if method == "PUT":
            if current is None:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found'), js
            return 200, self.put(kind_path, ns, json.loads(body), create=False), js
        if method == "PATCH":
            ctype = (headers.get("Content-Type") or "").split(";")[0]
            if ctype == "application/apply-patch+yaml":
                manager = params.get("fieldManager")
                if not manager:
                    return 400, _status(400, "BadRequest", "fieldManager is required for apply requests"), js
                applied = yaml.safe_load(body)
                key = (kind_path, ns, name, manager)
                with self.lock:
                    if current:
                        base = _prune(current, self.applied.get(key, {}), applied)
                        merged = _merge(base, applied)
                    else:
                        merged = copy.deepcopy(applied)
                    managers = [f for f in (current or {}).get("metadata", {}).get("managedFields", [])
                                if f.get("manager") != manager]
                    merged.setdefault("metadata", {})["managedFields"] = [
                        *managers, {"manager": manager, "operation": "Apply", "apiVersion": applied.get("apiVersion")}]
                    self.applied[key] = copy.deepcopy(applied)
                    return (200 if current else 201), self.put(kind_path, ns, merged, create=current is None), js
            if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if current is None:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found'), js
                return 200, self.put(kind_path, ns, _merge(current, json.loads(body)), create=False), js
            return 415, _status(415, "UnsupportedMediaType", f"{ctype} is not emulated"), js
        return 405, _status(405, "MethodNotAllowed", method), js

    def _namespaces(self, method: str, name: str | None, body: bytes) -> tuple[int, Any, str]:
        js = "application/json"

        def ns_obj(n: str) -> Obj:
            return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n},
                    "status": {"phase": "Active"}}

        if name is None and method == "GET":
            return 200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {},
                         "items": [ns_obj(n) for n in sorted(self.namespaces)]}, js
        if name is None and method == "POST":
            new = json.loads(body)["metadata"]["name"]
            if new in self.namespaces:
                return 409, _status(409, "AlreadyExists", f'namespaces "{new}" already exists'), js
            self.namespaces.add(new)
            return 201, ns_obj(new), js
        if name is not None and method == "GET":
            if name not in self.namespaces:
                return 404, _status(404, "NotFound", f'namespaces "{name}" not found'), js
            return 200, ns_obj(name), js
        return 405, _status(405, "MethodNotAllowed", method), js

    def _proxy(self, method: str, ns: str, pod_ref: str, rest: str, body: bytes) -> tuple[int, Any, str]:
        """The API server's pod proxy: `POD:PORT/proxy/PATH` to that pod's container port."""
        pod, _, port_text = pod_ref.partition(":")
        ports = self.pod_ports.get((ns, pod))
        if ports is None:
            return 404, _status(404, "NotFound", f'pods "{pod}" not found'), "application/json"
        port = int(port_text) if port_text else next(iter(ports))
        if port not in ports:
            return 503, _status(503, "ServiceUnavailable", f"no endpoint on port {port}"), "application/json"
        url = f"http://127.0.0.1:{ports[port]}{rest or '/'}"
        request = urllib.request.Request(url, data=body or None, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "application/json")
        except OSError as exc:
            return 503, _status(503, "ServiceUnavailable", f"error trying to reach service: {exc}"), \
                "application/json"


class PodProcess(ServerProcess):
    """A pod's server in a session of its own, as a container is (and as the local runtime starts
    its replicas): with the kernel's autogroup scheduling a process shares CPU with its session, so
    a pod left in the test's session would start several times slower than a local replica on a
    busy machine, and the bench would measure that instead of our code."""

    def start(self) -> ServerProcess:
        with open(self._log_path, "wb") as log:
            self.proc = subprocess.Popen(SERVER_CMD + self.args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        return self


DEPLOYMENTS = "/apis/apps/v1/deployments"
PODS = "/api/v1/pods"
CONFIG_MAPS = "/api/v1/configmaps"
EVENTS = "/api/v1/events"


class NodeAgent:
    """kubelet + Deployment controller for the emulator: Deployments become real server pods."""

    def __init__(self, api: EmulatedApiServer, *, claims: dict[str, Path] | None = None,
                 images: set[str] | None = None, gpus: int = 0, interval_s: float = 0.1,
                 crash_images: set[str] = frozenset(),  # type: ignore[assignment]
                 config_poll_s: int | None = 1) -> None:
        """`images`: what the node can pull (None: any); `gpus`: nvidia.com/gpu the node has;
        `crash_images`: images whose server crashes at start (the real server, given a flag it
        refuses, so the log tail is its own); `config_poll_s`: the pods' TF Serving config poll
        (`--model_config_file_poll_wait_seconds`, 10 s in the manifests) is shortened to this, so
        a hot reload's wait is what our code adds, not TF Serving's poll (None keeps the flag)."""
        self.api = api
        self.config_poll_s = config_poll_s
        # (monotonic time, event, pod): "started", "port up" (first HTTP answer), "ready", "stopped"
        self.timeline: list[tuple[float, str, str]] = []
        self._noted: set[tuple[str, str]] = set()
        self._stopping: list[threading.Thread] = []
        self.crash_images = set(crash_images)
        self.images = images
        self.gpus = gpus
        self.blocked: dict[tuple[str, str], str] = {}  # pods that cannot start: the reason
        self.claims = claims or {}  # PVC claim name → local folder
        self.interval_s = interval_s
        self.root = Path(tempfile.mkdtemp(prefix="tfso-node-"))
        self.pods: dict[tuple[str, str], tuple[ServerProcess, Obj]] = {}
        self.owner: dict[tuple[str, str], tuple[str, str]] = {}  # pod → its Deployment (ns, name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> NodeAgent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for proc, _ in self.pods.values():  # all at once, then reap: shutdowns overlap
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.terminate()
        for proc, _ in self.pods.values():
            proc.stop()
        for thread in self._stopping:
            thread.join(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # shown by tests that fail to converge
                self.errors.append(repr(exc))

    def sync(self) -> None:
        wanted: set[tuple[str, str]] = set()
        statuses: list[tuple[str, str, Obj]] = []
        with self.api.lock:
            deployments = [o for (k, _, _), o in self.api.objects.items() if k == DEPLOYMENTS]
            deployments = copy.deepcopy(deployments)
        for dep in deployments:
            ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
            template = dep["spec"]["template"]
            template_hash = str(abs(hash(json.dumps(template, sort_keys=True))) % 10**10)
            replicas = dep["spec"].get("replicas", 1)
            names = [f"{name}-{template_hash}-{i}" for i in range(replicas)]
            wanted.update((ns, n) for n in names)
            ready = 0
            for pod_name in names:
                self.owner[(ns, pod_name)] = (ns, name)
                if (ns, pod_name) in self.blocked:
                    continue
                if (ns, pod_name) not in self.pods:
                    self._start_pod(ns, pod_name, template)
                    if (ns, pod_name) in self.blocked:
                        continue
                self._sync_config(ns, pod_name)
                if self._probe(ns, pod_name):
                    ready += 1
            # maxUnavailable 0: the previous template's pods serve until every new pod is Ready
            old = [k for k, o in self.owner.items() if o == (ns, name) and k[1] not in names]
            kept = [k for k in old if ready < replicas and k in self.pods]
            wanted.update(kept)
            old_ready = 0
            for key in kept:
                self._sync_config(*key)
                old_ready += self._probe(*key)
            statuses.append((ns, name, {
                "observedGeneration": dep["metadata"]["generation"], "replicas": replicas + len(kept),
                "updatedReplicas": replicas, "readyReplicas": ready + old_ready,
                "availableReplicas": ready + old_ready, "unavailableReplicas": replicas - ready}))
        for key in list(self.blocked):
            if key not in wanted:
                del self.blocked[key]
                self.owner.pop(key, None)
                self.api.delete(PODS, *key)
        for key in list(self.pods):
            if key not in wanted:
                proc, _ = self.pods.pop(key)
                self.owner.pop(key, None)
                self.api.pod_ports.pop(key, None)
                self.api.pod_logs.pop(key, None)
                self.api.delete(PODS, *key)
                self._retire(key[1], proc)
        for ns, name, status in statuses:  # after the old pods are gone, as the controller reports
            self.api.set_status(DEPLOYMENTS, ns, name, status)

    def _retire(self, pod_name: str, proc: ServerProcess) -> None:
        """The pod is gone from the API at once; its process gets SIGTERM and is reaped aside
        (as kubelet's graceful termination runs beside everything else), so the sync loop never
        waits on a server's shutdown."""
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.terminate()
        self.timeline.append((time.monotonic(), "stopped", pod_name))
        thread = threading.Thread(target=proc.stop, daemon=True)
        thread.start()
        self._stopping = [t for t in self._stopping if t.is_alive()] + [thread]

    def _paths(self, ns: str, pod_name: str, pod_spec: Obj) -> dict[str, str]:
        """Container mount path → local folder, for the config and model volumes."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        out = {}
        for mount in pod_spec["containers"][0].get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                out[mount["mountPath"]] = str(self.root / ns / pod_name / "config")
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                base = self.claims[claim]
                out[mount["mountPath"]] = str(base / mount.get("subPath", ""))
        return out

    def _unstartable(self, ns: str, pod_name: str, pod_spec: Obj) -> str | None:
        """Why the node cannot run the pod (no GPU, image not pullable), with its event."""
        container = pod_spec["containers"][0]
        wanted_gpus = int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
        if wanted_gpus > self.gpus:
            self.api.event(ns, pod_name, "FailedScheduling",
                           "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
            return "Unschedulable"
        for c in [*pod_spec.get("initContainers", []), container]:
            if self.images is not None and c["image"] not in self.images:
                self.api.event(ns, pod_name, "Failed", f'Failed to pull image "{c["image"]}": '
                               "rpc error: code = NotFound desc = manifest unknown")
                return "ImagePullBackOff"
        return None

    def _start_pod(self, ns: str, pod_name: str, template: Obj) -> None:
        pod_spec = template["spec"]
        container = pod_spec["containers"][0]
        why = self._unstartable(ns, pod_name, pod_spec)
        if why is not None:
            self.blocked[(ns, pod_name)] = why
            status: Obj = {"phase": "Pending"}
            if why == "Unschedulable":
                status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                         "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]
            else:
                status["containerStatuses"] = [{"name": container["name"], "ready": False, "restartCount": 0,
                                                "image": container["image"], "imageID": "",
                                                "state": {"waiting": {"reason": why}}}]
            self.api.put(PODS, ns, {"apiVersion": "v1", "kind": "Pod",
                                    "metadata": {"name": pod_name, "labels": template["metadata"].get("labels", {})},
                                    "spec": pod_spec, "status": status}, create=True)
            return
        paths = self._paths(ns, pod_name, pod_spec)
        args = []
        for arg in container.get("args", []):
            if arg.startswith(("--port=", "--rest_api_port=")):
                continue  # the agent picks free loopback ports
            if arg.startswith("--model_config_file_poll_wait_seconds=") and self.config_poll_s is not None:
                arg = f"--model_config_file_poll_wait_seconds={self.config_poll_s}"
            for inside, outside in paths.items():
                arg = arg.replace(f"={inside}/", f"={outside}/")
            args.append(arg)
        if container["image"] in self.crash_images:
            args.append("--no_such_flag_in_this_image=1")
        pod: Obj = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod_name, "labels": template["metadata"].get("labels", {})},
                    "spec": pod_spec, "status": {"phase": "Pending"}}
        self.api.put(PODS, ns, pod, create=True)
        self.pods[(ns, pod_name)] = (PodProcess(args), pod)
        self._sync_config(ns, pod_name)
        proc = self.pods[(ns, pod_name)][0].start()
        self.timeline.append((time.monotonic(), "started", pod_name))
        self.api.pod_ports[(ns, pod_name)] = {8500: proc.grpc_port, 8501: proc.rest_port}
        self.api.pod_logs[(ns, pod_name)] = proc.logs

    def _sync_config(self, ns: str, pod_name: str) -> None:
        """The kubelet's ConfigMap volume: files follow the ConfigMap, paths rewritten."""
        _, pod = self.pods[(ns, pod_name)]
        pod_spec = pod["spec"]
        paths = self._paths(ns, pod_name, pod_spec)
        for volume in pod_spec.get("volumes", []):
            if "configMap" not in volume:
                continue
            cm = self.api.get(CONFIG_MAPS, ns, volume["configMap"]["name"])
            if cm is None:
                continue  # the real kubelet waits too (ContainerCreating)
            folder = self.root / ns / pod_name / "config"
            folder.mkdir(parents=True, exist_ok=True)
            for file, text in cm.get("data", {}).items():
                for inside, outside in paths.items():
                    text = text.replace(f'"{inside}"', f'"{outside}"')
                target = folder / file
                if not target.exists() or target.read_text() != text:
                    tmp = folder / f".{file}.tmp"
                    tmp.write_text(text)
                    tmp.replace(target)

    def _probe(self, ns: str, pod_name: str) -> bool:
        proc, pod = self.pods[(ns, pod_name)]
        probe = pod["spec"]["containers"][0].get("readinessProbe", {}).get("httpGet")
        ready = False
        if probe is not None and proc.proc is not None and proc.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{proc.rest_url}{probe['path']}", timeout=2) as resp:
                    ready = resp.status == 200
                answered = True
            except urllib.error.HTTPError:
                answered = True
            except OSError:
                answered = False
            self._note(pod_name, "port up", answered)
            self._note(pod_name, "ready", ready)
        current = self.api.get(PODS, ns, pod_name)
        if current is not None:
            code = proc.proc.poll() if proc.proc is not None else None
            state: Obj = {"running": {}} if code is None else {"waiting": {"reason": "CrashLoopBackOff"}}
            container = {"name": pod["spec"]["containers"][0]["name"], "ready": ready, "restartCount": 0,
                         "image": pod["spec"]["containers"][0]["image"], "imageID": "", "state": state}
            if code is not None:
                container["restartCount"] = 1
                container["lastState"] = {"terminated": {"exitCode": code, "reason": "Error"}}
            status = {"phase": "Running", "podIP": "127.0.0.1", "containerStatuses": [container],
                      "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
            if current.get("status") != status:
                self.api.set_status(PODS, ns, pod_name, status)
        return ready

    def _note(self, pod_name: str, event: str, happened: bool) -> None:
        """The first time `event` happened to the pod, on the timeline."""
        if happened and (event, pod_name) not in self._noted:
            self._noted.add((event, pod_name))
            self.timeline.append((time.monotonic(), event, pod_name))

    def wait(self, cond: Any, *, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.1)
        logs = "\n".join(p.logs()[-2000:] for p, _ in self.pods.values())
        raise TimeoutError(f"timed out waiting for {what}; agent errors {self.errors[-3:]}; logs:\n{logs}")
