"""The capture agent: turns the router's sampled requests into PredictionLog records.

Under the docker runtime `tensorflow/serving` cannot log payloads, so HAProxy samples them
(`router.capture`) and sends each sampled request and its answer here over SPOP
(`router.spoa`). The agent writes them with the local server's own writer
(`server.payload_log.ModelLogger`: same records, files, names, rotation and size cap), so
`tfsctl logs --predictions`, warmup, drift, feedback and rollout gates read docker
deployments' logs exactly as local ones.

Three stages, so HAProxy never waits on the slow ones: the event loop acknowledges each
NOTIFY and puts it on a bounded queue (full: dropped, `reason="queue_full"`); a decoder thread
turns REST JSON (with the signature's dtypes, read from the SavedModel on disk, as TF Serving
converts it) or gRPC Classify/Regress/MultiInference protobufs into tensors; the logger's writer
thread builds and writes the records. A gRPC Predict pair skips the decoder: its request and
answer go into the record as the wire bytes HAProxy hands over (only the answer's model_spec is
parsed, for the file and the metadata), put together on the event loop in a few µs. Both threads
gather for 50 ms between wakes, so neither takes the GIL from the event loop per sample.
An unwritable folder is `reason="write_error"`, a warning and `tfso_prediction_log_writable 0`.
What the router could not deliver is counted in its stick table, exported here as
`reason="not_delivered"`. Metrics: `http://127.0.0.1:<metrics_port>/metrics`.

Versions: a REST path's `/versions/N`; a label through the deployment's models.config; else
the version the answering server is health-checked for (versions.map: stable or canary), for
the deployment's main model, or the newest version on disk for a model served beside it. gRPC
answers name their version themselves.

Run by the docker runtime as a host process (`python -m orchestrator.router.capture_agent
--settings capture.json`); `start_agent` / `stop_agent` / `agent_info` manage it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import gc
import gzip
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("tfso.capture")

QUEUE_SIZE = 1024
REST_PATH = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?:(predict|classify|regress)$",
    re.IGNORECASE)
GRPC_PREFIX = "/tensorflow.serving.PredictionService/"  # methods.PREDICTION_SERVICE's paths
GRPC_PREDICT = GRPC_PREFIX + "Predict"
DECODE_GATHER_S = 0.05
DEFAULT_SIGNATURE = "serving_default"


@functools.cache
def _logged_grpc() -> dict[str, Any]:
    """The PredictionService calls whose request and answer are logged, by method name (the
    shared method table; imported on first use, as protobuf is)."""
    from orchestrator.protocol import methods as m

    return {x.name: x for x in (m.PREDICT, m.CLASSIFY, m.REGRESS, m.MULTI_INFERENCE)}


SETTINGS_FILE = "capture.json"
PID_FILE = "capture.pid"
LOG_FILE = "capture.log"
MARKER = "orchestrator.router.capture_agent"


class Skip(Exception):
    """A sample that cannot become a record; `reason` labels the drop."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class ModelSettings:
    name: str
    sample: float
    prefix: str
    max_bytes: int
    base_path: str


@dataclass(frozen=True)
class Settings:
    deployment: str
    main: str
    spoa_port: int
    metrics_port: int
    admin_socket: str
    models_config: str
    grpc_rate: float
    models: dict[str, ModelSettings]

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Settings:
        models = {k: ModelSettings(**v) for k, v in doc["models"].items()}
        return cls(**{**doc, "models": models})

    def to_json(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "main": self.main, "spoa_port": self.spoa_port,
                "metrics_port": self.metrics_port, "admin_socket": self.admin_socket,
                "models_config": self.models_config, "grpc_rate": self.grpc_rate,
                "models": {k: vars(v) for k, v in sorted(self.models.items())}}


# -- decoding ---------------------------------------------------------------------------------------
def _decompress(data: bytes, encoding: str | None) -> bytes:
    if not encoding:
        return data
    enc = encoding.strip().lower()
    if enc in ("gzip", "x-gzip"):
        return gzip.decompress(data)
    if enc == "deflate":
        return zlib.decompress(data)
    if enc in ("", "identity"):
        return data
    raise Skip("unparsable", f"content encoding {enc!r}")


def grpc_message(body: bytes, encoding: str | None) -> bytes | None:
    """The one message of a unary gRPC body (5-byte prefix: compressed flag, length)."""
    if len(body) < 5:
        return None
    length = int.from_bytes(body[1:5], "big")
    data = body[5:5 + length]
    if len(data) < length:
        raise Skip("too_large", "gRPC message larger than the router's buffer")
    return _decompress(data, encoding) if body[0] else data


class Decoder:
    """Sampled request/answer pairs -> (model, ModelLogger item); the signatures and labels
    come from the deployment's files, cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._signatures: dict[tuple[str, int], Any] = {}
        self._config_mtime = -1.0
        self._config_checked = -1e9
        self._labels: dict[str, dict[str, int]] = {}
        self._specific: dict[str, list[int]] = {}
        self._dtypes: dict[tuple[str, int, str], tuple[dict[str, int], dict[str, int]]] = {}

    # -- versions and signatures ----------------------------------------------------------------
    def _read_config(self) -> None:
        """Re-read models.config when it changed; looked at once per decoder batch (50 ms), not
        per sample (a stat per sample was 4 % of the agent's time under REST load)."""
        now = time.monotonic()
        if now - self._config_checked < DECODE_GATHER_S:
            return
        self._config_checked = now
        try:
            mtime = os.path.getmtime(self.settings.models_config)
        except OSError:
            return
        if mtime == self._config_mtime:
            return
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2 as msc_pb2

        try:
            text = Path(self.settings.models_config).read_text()
            config = text_format.Parse(text, msc_pb2.ModelServerConfig())
        except Exception:  # mid-rewrite: keep the last good one
            return
        self._config_mtime = mtime
        self._labels = {c.name: dict(c.version_labels) for c in config.model_config_list.config}
        self._specific = {c.name: list(c.model_version_policy.specific.versions)
                          for c in config.model_config_list.config}

    def version(self, model: str, path_version: str | None, label: str | None,
                server_version: Any) -> int:
        if path_version:
            return int(path_version)
        self._read_config()
        if label:
            if label not in self._labels.get(model, {}):
                raise Skip("unknown_version", f"label {label} of {model}")
            return self._labels[model][label]
        if model == self.settings.main:
            with contextlib.suppress(TypeError, ValueError):
                if int(server_version) > 0:
                    return int(server_version)
        from orchestrator.savedmodel import list_versions

        present = list_versions(Path(self.settings.models[model].base_path))
        wanted = self._specific.get(model) or present
        candidates = [v for v in present if v in wanted]
        if not candidates:
            raise Skip("unknown_version", f"no version of {model} on disk")
        return max(candidates)

    def signature(self, model: str, version: int, name: str) -> Any:
        key = (model, version)
        if key not in self._signatures:
            from orchestrator.savedmodel import inspect_version, version_dirs

            folder = version_dirs(Path(self.settings.models[model].base_path)).get(version)
            if folder is None:
                raise Skip("unknown_version", f"{model} version {version} is not on disk")
            self._signatures[key] = inspect_version(folder, version).signatures
        sig = self._signatures[key].get(name)
        if sig is None:
            raise Skip("unknown_signature", f"{model} {version} has no signature {name}")
        return sig

    def dtypes(self, model: str, version: int, name: str) -> tuple[dict[str, int], dict[str, int]]:
        """A signature's input and output dtypes (DataType enums), cached."""
        key = (model, version, name)
        found = self._dtypes.get(key)
        if found is None:
            from orchestrator.protos import tensor_pb2

            sig = self.signature(model, version, name)
            found = self._dtypes[key] = tuple(  # type: ignore[assignment]
                {k: tensor_pb2.DataType.Value(v.dtype) for k, v in tensors.items()}
                for tensors in (sig.inputs, sig.outputs))
        return found  # type: ignore[return-value]

    # -- REST -----------------------------------------------------------------------------------
    def rest(self, args: dict[str, Any], now: float) -> tuple[str, tuple]:
        from orchestrator.server import json_tensor

        m = REST_PATH.match(args.get("path") or "")
        if m is None:
            raise Skip("unparsable", f"path {args.get('path')!r}")
        model, path_version, label, method = m.group(1), m.group(2), m.group(3), m.group(4).lower()
        if model not in self.settings.models:
            raise Skip("not_logged")
        req_body = args.get("req") or b""
        for body, size in ((req_body, args.get("req_size")), (args.get("res") or b"", args.get("res_size"))):
            if isinstance(size, int) and size > len(body):
                raise Skip("too_large", "a body larger than the router's buffer (tune.bufsize)")
        try:
            doc = json_tensor.loads(_decompress(req_body, args.get("req_enc")))
            answer = json_tensor.loads(_decompress(args.get("res") or b"", args.get("res_enc")))
        except Skip:
            raise
        except Exception as exc:
            raise Skip("unparsable", str(exc)) from None
        if not isinstance(doc, dict) or not isinstance(answer, dict):
            raise Skip("unparsable", "not a JSON object")
        version = self.version(model, path_version, label, args.get("version"))
        sig_name = doc.get("signature_name") or DEFAULT_SIGNATURE
        rid = args.get("rid") or ""
        try:
            if method == "predict":
                ins, outs = self.dtypes(model, version, sig_name)
                inputs = _dense_map(doc, "instances", "inputs", ins)
                if inputs is None:
                    _, inputs, _ = json_tensor.parse_predict(doc, lambda _s: ins)
                outputs = _dense_map(answer, "predictions", "outputs", outs)
                if outputs is None:
                    if "predictions" in answer:
                        outputs = json_tensor.instances_to_arrays(answer["predictions"], outs)
                    elif "outputs" in answer:
                        outputs = json_tensor.inputs_to_arrays(answer["outputs"], outs)
                    else:
                        raise Skip("unparsable", "answer has no predictions or outputs")
                return model, (version, sig_name, inputs, outputs, rid, now)
            _, examples = json_tensor.parse_examples(doc, method)
            results = answer.get("results")
            if not isinstance(results, list):
                raise Skip("unparsable", "answer has no results")
            if method == "classify":
                result: Any = [[(str(lab), float(score)) for lab, score in row] for row in results]
            else:
                result = [float(v) for v in results]
            return model, (method, version, sig_name, examples, result, rid, now)
        except Skip:
            raise
        except Exception as exc:  # what TF Serving accepted but we cannot read back
            raise Skip("unparsable", getattr(exc, "message", None) or str(exc)) from None

    # -- gRPC -----------------------------------------------------------------------------------
    def grpc(self, args: dict[str, Any], now: float) -> tuple[str, tuple] | None:
        method = (args.get("path") or "")[len(GRPC_PREFIX):]
        raw_req = grpc_message(args.get("req") or b"", args.get("req_enc"))
        raw_res = grpc_message(args.get("res") or b"", args.get("res_enc"))
        if raw_req is None or raw_res is None:
            return None  # an error answer (grpc-status in the trailers): not logged, as locally
        rid = args.get("rid") or ""
        kind = _logged_grpc().get(method)
        if kind is None:
            raise Skip("unsupported", f"gRPC {method} is not logged")
        if method == "Predict":
            return self._grpc_predict(raw_req, raw_res, rid, now)
        try:
            req = kind.request.FromString(raw_req)
            res = kind.response.FromString(raw_res)
        except Exception as exc:
            raise Skip("unparsable", str(exc)) from None
        if method == "MultiInference":
            if not res.results:
                return None
            spec = res.results[0].model_spec
            model = spec.name or (req.tasks[0].model_spec.name if req.tasks else "")
        else:
            model = res.model_spec.name or req.model_spec.name
        if not self._keep(model):
            return None
        if method == "MultiInference":
            examples = _examples(req.input)
            tasks = [(r.model_spec.signature_name or DEFAULT_SIGNATURE, t.method_name,
                      _classes(r.classification_result)
                      if r.WhichOneof("result") == "classification_result"
                      else [x.value for x in r.regression_result.regressions])
                     for t, r in zip(req.tasks, res.results, strict=False)]
            return model, ("multi", spec.version.value, ",".join(t[0] for t in tasks), examples,
                           tasks, rid, now)
        version = res.model_spec.version.value
        sig_name = res.model_spec.signature_name or req.model_spec.signature_name or DEFAULT_SIGNATURE
        examples = _examples(req.input)
        if method == "Classify":
            return model, ("classify", version, sig_name, examples, _classes(res.result), rid, now)
        return model, ("regress", version, sig_name, examples,
                       [r.value for r in res.result.regressions], rid, now)

    def _keep(self, model: str) -> bool:
        """Whether a gRPC sample of `model` is logged: HAProxy sampled every gRPC call at the
        largest model's rate, so keep this model's share of that."""
        if model not in self.settings.models:
            return False
        share = self.settings.models[model].sample / self.settings.grpc_rate
        return share >= 1.0 or random.random() < share

    def _grpc_predict(self, raw_req: bytes, raw_res: bytes, rid: str, now: float
                      ) -> tuple[str, tuple] | None:
        """A Predict pair as a "wire" item: the request and the answer go into the record as
        the client and the server sent them. Only the answer's model_spec is parsed (the
        request's too when the answer leaves the name or signature out); the tensors never are."""
        try:
            spec = _model_spec(raw_res, 2)
            model, sig_name = spec.name, spec.signature_name
            if not model or not sig_name:
                asked = _model_spec(raw_req, 1)
                model, sig_name = model or asked.name, sig_name or asked.signature_name
        except Exception as exc:
            raise Skip("unparsable", str(exc)) from None
        if not self._keep(model):
            return None
        return model, ("wire", spec.version.value, sig_name or DEFAULT_SIGNATURE, raw_req, raw_res,
                       rid, now)

    def decode(self, args: dict[str, Any], now: float) -> tuple[str, tuple] | None:
        path = args.get("path") or ""
        if path.startswith(GRPC_PREFIX):
            return self.grpc(args, now)
        return self.rest(args, now)


# Signature dtypes (DataType enums) the dense fast path reads, and their numpy types.
_DENSE_TYPES = {1: "float32", 2: "float64", 3: "int32", 9: "int64"}


def _dense(value: Any, dtype: int) -> Any:
    """A JSON tensor of rank 1 or 2 with numbers at the leaves -> its array, or None for anything
    else (rank 0 or 3+, ragged, strings, b64, other dtypes), which the general path
    (server.json_tensor) reads.

    The general path builds an array from the list with numpy's type and shape discovery over
    every element (about 25 µs for a 784-float row, beside orjson's 20 to parse it);
    `np.fromiter` into the signature's dtype takes a third of that. It does not re-check each
    element's JSON type as TF Serving does: a sample is only captured when TF Serving answered
    200, so its body already passed those checks; what fromiter cannot convert falls back."""
    np_type = _DENSE_TYPES.get(dtype)
    if np_type is None or type(value) is not list or not value:
        return None
    import itertools

    import numpy as np

    first = value[0]
    try:
        if type(first) is not list:
            if type(first) is not float and type(first) is not int:
                return None
            return np.fromiter(value, np_type, len(value))
        width = len(first)
        if not width or (type(first[0]) is not float and type(first[0]) is not int):
            return None
        for row in value:
            if type(row) is not list or len(row) != width:
                return None
        flat = np.fromiter(itertools.chain.from_iterable(value), np_type, len(value) * width)
    except (TypeError, ValueError, OverflowError):
        return None
    return flat.reshape(len(value), width)


def _dense_map(doc: dict[str, Any], row_key: str, column_key: str, dtypes: dict[str, int]
               ) -> dict[str, Any] | None:
    """The one tensor of a single-tensor signature in row (`instances`, `predictions`) or
    columnar (`inputs`, `outputs`) form, by `_dense`; None when the general path must read it."""
    if len(dtypes) != 1:
        return None
    ((name, dtype),) = dtypes.items()
    if row_key in doc:
        if column_key in doc:
            return None
        value = doc[row_key]
    elif column_key in doc:
        value = doc[column_key]
        if type(value) is dict:
            if len(value) != 1 or name not in value:
                return None
            value = value[name]
    else:
        return None
    array = _dense(value, dtype)
    return None if array is None else {name: array}


def _model_spec(raw: bytes, number: int) -> Any:
    """The ModelSpec in field `number` of a serialised message, read without the rest of it."""
    from orchestrator.protocol import wire
    from orchestrator.protos import apis_pb2

    spec = apis_pb2.ModelSpec()
    for start, end in wire.field_spans(raw, number):
        spec.MergeFromString(raw[start:end])
    return spec


def _examples(request_input: Any) -> list[bytes]:
    """An Input's tf.Examples serialized, the context merged into each (as our server feeds them)."""
    if request_input.WhichOneof("kind") == "example_list_with_context":
        with_context = request_input.example_list_with_context
        ctx = with_context.context.SerializeToString()
        return [ctx + e.SerializeToString() for e in with_context.examples]
    return [e.SerializeToString() for e in request_input.example_list.examples]


def _classes(result: Any) -> list[list[tuple[str, float]]]:
    return [[(c.label, c.score) for c in row.classes] for row in result.classifications]


# -- the agent --------------------------------------------------------------------------------------
class CaptureAgent:
    def __init__(self, settings: Settings) -> None:
        from orchestrator.server.payload_log import Counters, LogOptions, ModelLogger

        self.settings = settings
        self.counters = Counters()
        self.loggers = {
            name: ModelLogger(name, LogOptions(m.sample, m.prefix, m.max_bytes), self.counters)
            for name, m in settings.models.items()}
        self.decoder = Decoder(settings)
        # The decoder's queue: a deque the loop bounds (QUEUE_SIZE) and an event it sets only
        # when clear, so a sample costs the loop an append, not a queue.Queue's lock and notify.
        self.queue: collections.deque = collections.deque()
        self._ready = threading.Event()
        self.received = 0
        self._thread = threading.Thread(target=self._decode_loop, name="tfso-capture-decode",
                                        daemon=True)
        self._failing: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def on_messages(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """On the event loop: a gRPC Predict pair goes to its logger right here (putting it
        together takes a few µs: nothing is parsed but the answer's model_spec); anything else
        is queued for the decoder thread."""
        now = time.time()
        for _, args in messages:
            self.received += 1
            if args.get("path") == GRPC_PREDICT:
                self._decoded(args, now)
                continue
            if len(self.queue) >= QUEUE_SIZE:
                self.counters.drop(self._model_of(args), "queue_full")
                continue
            self.queue.append((args, now))
            if not self._ready.is_set():
                self._ready.set()

    def _model_of(self, args: dict[str, Any]) -> str:
        model = args.get("model")
        return model if isinstance(model, str) and model in self.settings.models else self.settings.main

    def _decoded(self, args: dict[str, Any], now: float) -> None:
        """Decode one sample and hand its item to the model's logger (or count why not)."""
        try:
            decoded = self.decoder.decode(args, now)
        except Skip as exc:
            if exc.reason != "not_logged":
                self.counters.drop(self._model_of(args), exc.reason)
                if exc.reason not in self._failing:  # one warning per kind of failure
                    self._failing.add(exc.reason)
                    log.warning("a captured sample was not logged (%s): %s", exc.reason, exc)
            return
        except Exception as exc:  # a bug must not stop capture
            self.counters.drop(self._model_of(args), "unparsable")
            log.exception("decoding a captured sample failed: %s", exc)
            return
        if decoded is not None:
            model, record = decoded
            self.loggers[model].put(record)

    def _decode_loop(self) -> None:
        pending = self.queue
        while True:
            self._ready.wait()
            if pending and pending[-1] is not None:
                # Gather for a moment, as the writer does: a thread that wakes for every sample
                # takes the GIL from the event loop each time.
                time.sleep(DECODE_GATHER_S)
            # Cleared before draining: a sample appended from here on sets it again.
            self._ready.clear()
            while pending:
                item = pending.popleft()
                if item is None:
                    return
                self._decoded(*item)

    def router_drops(self) -> None:
        """Copy the router's stick-table counts into the drop counters (absolute values)."""
        from orchestrator.router.capture import DROPS_TABLE, parse_drops
        from orchestrator.router.haproxy import RuntimeApi

        try:
            drops = parse_drops(RuntimeApi(self.settings.admin_socket, timeout_s=2).command(
                f"show table {DROPS_TABLE}"))
        except Exception:  # the router is restarting: keep the last values
            return
        with self.counters.lock:
            for key, n in drops.items():
                model = key if key in self.settings.models else self.settings.main
                self.counters.dropped[(model, "not_delivered")] = n

    def metrics_page(self) -> str:
        self.router_drops()
        out: list[str] = []
        self.counters.render(out)
        out.append("# TYPE tfso_capture_samples_total counter")
        out.append(f'tfso_capture_samples_total{{deployment="{self.settings.deployment}"}} {self.received}')
        out.append("# TYPE tfso_capture_queue_depth gauge")
        out.append(f'tfso_capture_queue_depth{{deployment="{self.settings.deployment}"}} {len(self.queue)}')
        return "\n".join(out) + "\n"

    def close(self) -> None:
        self.queue.append(None)
        self._ready.set()
        self._thread.join(timeout=10)
        for lg in self.loggers.values():
            lg.close()


async def _metrics_server(agent: CaptureAgent, port: int) -> asyncio.base_events.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split()[1].decode() if len(line.split()) > 1 else ""
            if path.split("?")[0] == "/metrics":
                body = (await asyncio.to_thread(agent.metrics_page)).encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            else:
                body, head = b"not found\n", b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def serve(settings: Settings) -> None:
    # Import TensorFlow (the writer's) before taking traffic, so the first samples wait on nothing.
    import tensorflow  # noqa: F401
    from tensorflow_serving.apis import prediction_log_pb2  # noqa: F401

    from orchestrator.protocol import wire  # noqa: F401
    from orchestrator.router.spoa import Agent
    from orchestrator.server import json_tensor  # noqa: F401

    # What the imports leave (about 300,000 objects, TensorFlow's mostly) is never garbage:
    # frozen, the collector's full passes skip it. Unfrozen, one full pass took 0.4-0.7 s with
    # the GIL held, longer than HAProxy waits for an ACK (100 ms), and came round every few
    # tens of seconds at 100 % capture (queued samples live past the young generations).
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(0.001)  # the loop answers HAProxy promptly beside the writer threads
    agent = CaptureAgent(settings)
    agent.start()
    spoa = Agent(agent.on_messages, port=settings.spoa_port)
    await spoa.start()
    metrics = await _metrics_server(agent, settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("capture agent for %s: SPOP on 127.0.0.1:%d, metrics on 127.0.0.1:%d",
             settings.deployment, spoa.port, settings.metrics_port)
    await stop.wait()
    await spoa.close()
    metrics.close()
    await asyncio.to_thread(agent.close)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=MARKER, description="The router's payload capture agent.")
    parser.add_argument("--settings", required=True, help="capture.json written by the docker runtime")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_json(json.loads(Path(ns.settings).read_text()))
    asyncio.run(serve(settings))


# -- managing the process (the docker runtime) -------------------------------------------------------
def agent_info(folder: Path) -> dict[str, Any] | None:
    """capture.pid's record, with `running` checked."""
    from orchestrator.procs import process_alive

    try:
        info: dict[str, Any] = json.loads((folder / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    info["running"] = process_alive(int(info["pid"]), info.get("started"), [MARKER])
    return info


def stop_agent(folder: Path, deadline_s: float = 15.0) -> bool:
    """Stop the agent (it flushes its files first); True when one was running."""
    info = agent_info(folder)
    (folder / PID_FILE).unlink(missing_ok=True)
    if not info or not info["running"]:
        return False
    pid = int(info["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    from orchestrator.procs import process_alive

    end = time.monotonic() + deadline_s
    while process_alive(pid, info.get("started"), [MARKER]) and time.monotonic() < end:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if process_alive(pid, info.get("started"), [MARKER]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def start_agent(folder: Path, settings: Settings, *, deadline_s: float = 120.0) -> dict[str, Any]:
    """Run the agent for `settings` (kept when one with the same settings runs); returns
    capture.pid's record once its metrics answer."""
    import requests

    from orchestrator.errors import RuntimeFailure
    from orchestrator.files import write_atomic
    from orchestrator.procs import start_ticks

    text = json.dumps(settings.to_json(), indent=1, sort_keys=True)
    info = agent_info(folder)
    settings_path = folder / SETTINGS_FILE
    if (info and info["running"] and settings_path.is_file()
            and settings_path.read_text() == text):
        return info
    stop_agent(folder)
    for prefix in {os.path.dirname(m.prefix) for m in settings.models.values()}:
        with contextlib.suppress(OSError):  # an unwritable folder is the agent's warning, not ours
            os.makedirs(prefix, exist_ok=True)
    write_atomic(settings_path, text)
    log_path = folder / LOG_FILE
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", MARKER, "--settings", str(settings_path)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    started = start_ticks(proc.pid)
    end = time.monotonic() + deadline_s
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    while True:
        if proc.poll() is not None:
            raise RuntimeFailure(f"{settings.deployment}: the capture agent exited at start "
                                 f"(code {proc.returncode})", fix=f"read {log_path}",
                                 logs=_tail(log_path))
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                break
        if time.monotonic() > end:
            proc.kill()
            raise RuntimeFailure(f"{settings.deployment}: the capture agent did not answer within "
                                 f"{deadline_s:g} s", fix=f"read {log_path}", logs=_tail(log_path))
        time.sleep(0.1)
    record = {"pid": proc.pid, "started": started, "spoa_port": settings.spoa_port,
              "metrics_port": settings.metrics_port, "log": str(log_path)}
    write_atomic(folder / PID_FILE, json.dumps(record))
    return {**record, "running": True}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    main()
