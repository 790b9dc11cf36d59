"""A tiny HTTP server for the TF.js page: static files, the vendored tf.min.js, one model.

    GET /                  static/index.html (the page)
    GET /static/<file>     the page's script and style
    GET /vendor/tf.min.js  @tensorflow/tfjs's browser bundle: static/vendor/ (package data, copied
                           from npm by the install script, never a CDN), else node_modules
    GET /model/<file>      model.json and weight shards of the TF.js export
    GET /api/info          model name, version, format and the signature's inputs and outputs

It binds 127.0.0.1 by default, serves only those files (no directory listing, no path outside
the folders), and owns its thread: `start()`/`stop()` or `with WebApp(...) as app:`.
"""

from __future__ import annotations

import json
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from orchestrator.convert.errors import ConvertError
from orchestrator.convert.node import INSTALL_FIX, tfjs_bundle

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDORED_BUNDLE = STATIC_DIR / "vendor" / "tf.min.js"


def model_info(model_dir: Path) -> dict[str, Any]:
    """The signature kept in a TF.js model.json: {inputs|outputs: {key: {dtype, shape}}}."""
    path = Path(model_dir) / "model.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConvertError(
            f"{path} is not a readable TF.js model ({exc})",
            format="tfjs",
            fix="convert first: tfsctl convert NAME --to tfjs",
        ) from exc

    def tensors(group: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, t in group.items():
            dims = t.get("tensorShape", {}).get("dim")
            shape = None if dims is None else [int(d.get("size", -1)) for d in dims]
            dtype = {"DT_FLOAT": "float32", "DT_INT32": "int32", "DT_INT64": "int32",
                     "DT_BOOL": "bool"}.get(t.get("dtype", ""), "float32")
            out[key] = {"dtype": dtype, "shape": shape, "node": t.get("name", key)}
        return out

    signature = data.get("signature") or {}
    return {
        "model_format": data.get("format"),
        "converted_by": data.get("convertedBy"),
        "inputs": tensors(signature.get("inputs", {})),
        "outputs": tensors(signature.get("outputs", {})),
    }


def _safe_child(folder: Path, name: str) -> Path | None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = folder / name
    return path if path.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "tfso-web"
    app: WebApp  # set on the subclass made per app

    def log_message(self, format: str, *args: Any) -> None:
        if self.app.log_requests:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file(self, path: Path | None) -> None:
        if path is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or path.suffix in (".js", ".json"):
            if path.suffix == ".js":
                content_type = "text/javascript"
            content_type += "; charset=utf-8"
        self._send(HTTPStatus.OK, path.read_bytes(), content_type)

    def do_GET(self) -> None:
        route = unquote(urlsplit(self.path).path)
        app = self.app
        if route in ("/", "/index.html"):
            self._file(STATIC_DIR / "index.html")
        elif route.startswith("/static/"):
            self._file(_safe_child(STATIC_DIR, route.removeprefix("/static/")))
        elif route == "/vendor/tf.min.js":
            self._file(app.tfjs_bundle if app.tfjs_bundle.is_file() else None)
        elif route.startswith("/model/"):
            self._file(_safe_child(app.model_dir, route.removeprefix("/model/")))
        elif route == "/api/info":
            body = json.dumps(app.info).encode()
            self._send(HTTPStatus.OK, body, "application/json")
        else:
            self._file(None)

    do_HEAD = do_GET


class WebApp:
    """Serves one TF.js model and the page that runs it; start/stop, or use as a context manager."""

    def __init__(
        self,
        model_dir: Path,
        *,
        model: str,
        version: int | None = None,
        fmt: str = "tfjs",
        host: str = "127.0.0.1",
        port: int = 0,
        bundle: Path | None = None,
        log_requests: bool = False,
    ) -> None:
        self.model_dir = Path(model_dir).resolve()
        self.tfjs_bundle = bundle or (VENDORED_BUNDLE if VENDORED_BUNDLE.is_file() else tfjs_bundle())
        if not self.tfjs_bundle.is_file():
            raise ConvertError(
                f"the TF.js browser bundle {self.tfjs_bundle} is missing", format=fmt, fix=INSTALL_FIX
            )
        self.info = {"model": model, "version": version, "format": fmt, **model_info(self.model_dir)}
        self.host = host
        self.port = port
        self.log_requests = log_requests
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the web app is not started")
        address = self._server.server_address
        host, port = str(address[0]), int(address[1])
        shown = host if ":" not in host else f"[{host}]"
        return f"http://{shown}:{port}/"

    def start(self) -> WebApp:
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise ConvertError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                fix="pick another --port (0 takes a free one)",
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tfso-web", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def serve_forever(self) -> None:
        """Block until interrupted (Ctrl-C), then stop."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> WebApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["STATIC_DIR", "WebApp", "model_info"]
