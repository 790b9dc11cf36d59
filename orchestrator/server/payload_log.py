"""Payload logging: sampled Predict request/response pairs as TF Serving PredictionLog records.

Configured per model by TF Serving's own `logging_config` in models.config
(`sampling_config.sampling_rate`, `log_collector_config {type: "tfrecord" filename_prefix}`, and
`max_mb` in a Struct in `custom_logging_config`). Files are TFRecord, named
`PREFIX-<unix ms>.tfrecord` (so names sort by time), rotated at a quarter of the cap and the oldest
deleted when the folder's files for this model pass `max_mb`.

Logging never blocks or fails a prediction: the request path only draws a random number and, when
sampled, appends references to a bounded deque (no lock; the writer is woken once per batch, by
the first sample after it has emptied the deque); a writer thread gathers samples for
WRITE_GATHER_S, builds the records and writes the whole batch, TFRecord framing included
(orchestrator.protocol.tfrecord), with one `write()`. A full deque drops the sample
(`tfso_prediction_log_dropped_total{reason="queue_full"}`); a write that fails (read-only or full
disk) logs one warning per failure streak and counts `reason="write_error"` (the file is cut back
to its last whole record). LogMetadata has no request-id field: the request id goes in
`request_origin`, the timestamp in `timestamp_secs`.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.protocol import tfrecord, wire
from orchestrator.server.config import ConfigError
from orchestrator.server.metrics import CURRENT_CALL, PREFIX

log = logging.getLogger("tfs.payload")


class _Cut(Exception):
    """A write the disk cut short: `kept` whole records made it to the file."""

    def __init__(self, kept: int, error: OSError) -> None:
        super().__init__(str(error))
        self.kept, self.error = kept, error


def queue_size() -> int:
    """Read at each logger's start, not at import: a preloaded launcher imports this module once
    for servers started with different environments."""
    return int(os.environ.get("TFS_PAYLOAD_LOG_QUEUE", "1024") or 1024)


WRITE_GATHER_S = 0.05
WAKE_CHECK_S = 0.5


@dataclass(frozen=True)
class LogOptions:
    rate: float
    prefix: str
    max_bytes: int


def options_from_proto(model: str, lc: Any, *, source: str) -> LogOptions | None:
    """A ModelConfig's logging_config -> LogOptions (None when it asks for no logging)."""
    rate = lc.sampling_config.sampling_rate
    if not (0.0 <= rate <= 1.0):
        raise ConfigError(
            f"{source}: model {model}: sampling_rate {rate} is outside [0, 1]"
        )
    if lc.sampling_config.per_task_sampling_configs:
        raise ConfigError(
            f"{source}: model {model}: per_task_sampling_configs is not supported; "
            "use sampling_rate"
        )
    collector = lc.log_collector_config
    if rate == 0.0 and not collector.filename_prefix:
        return None
    if collector.type not in ("", "tfrecord"):
        raise ConfigError(
            f"{source}: model {model}: log_collector_config type {collector.type!r} is not "
            'supported; use "tfrecord"'
        )
    if not collector.filename_prefix:
        raise ConfigError(
            f"{source}: model {model}: logging_config needs log_collector_config.filename_prefix"
        )
    max_mb = 256.0
    if lc.HasField("custom_logging_config"):
        from google.protobuf.struct_pb2 import Struct

        extra = Struct()
        if not lc.custom_logging_config.Unpack(extra):
            raise ConfigError(
                f"{source}: model {model}: custom_logging_config must be a "
                "google.protobuf.Struct like {max_mb: 256}"
            )
        unknown = set(extra.keys()) - {"max_mb"}
        if unknown:
            raise ConfigError(
                f"{source}: model {model}: custom_logging_config has unknown keys "
                f"{sorted(unknown)}; only max_mb is read"
            )
        if "max_mb" in extra:
            max_mb = float(extra["max_mb"])
            if max_mb <= 0:
                raise ConfigError(f"{source}: model {model}: max_mb must be positive")
    return LogOptions(rate, collector.filename_prefix, int(max_mb * 1024 * 1024))


class Counters:
    """Process-wide counts, rendered with the server's metrics."""

    def __init__(self) -> None:
        self.sampled: dict[str, int] = {}
        self.written: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self.writable: dict[str, int] = {}
        self.lock = threading.Lock()

    def sample(self, model: str) -> None:
        with self.lock:
            self.sampled[model] = self.sampled.get(model, 0) + 1

    def drop(self, model: str, reason: str) -> None:
        with self.lock:
            self.dropped[(model, reason)] = self.dropped.get((model, reason), 0) + 1

    def render(self, out: list[str]) -> None:
        with self.lock:
            sampled, written, dropped, writable = (
                dict(self.sampled),
                dict(self.written),
                dict(self.dropped),
                dict(self.writable),
            )
        if not (written or dropped or writable):
            return
        # Every sample taken ends written or dropped: sampled == records + dropped once the
        # writer has caught up (the writer gathers samples for WRITE_GATHER_S between writes).
        name = PREFIX + "prediction_log_sampled_total"
        out.append(f"# TYPE {name} counter")
        out.extend(f'{name}{{model="{m}"}} {n}' for m, n in sorted(sampled.items()))
        name = PREFIX + "prediction_log_records_total"
        out.append(f"# TYPE {name} counter")
        out.extend(f'{name}{{model="{m}"}} {n}' for m, n in sorted(written.items()))
        name = PREFIX + "prediction_log_dropped_total"
        out.append(f"# TYPE {name} counter")
        out.extend(
            f'{name}{{model="{m}",reason="{r}"}} {n}' for (m, r), n in sorted(dropped.items())
        )
        name = PREFIX + "prediction_log_writable"
        out.append(f"# TYPE {name} gauge")
        out.extend(f'{name}{{model="{m}"}} {n}' for m, n in sorted(writable.items()))


class ModelLogger:
    """One model's sampler, queue and writer thread."""

    def __init__(self, model: str, opts: LogOptions, counters: Counters) -> None:
        self.model = model
        self.opts = opts
        self.rate = opts.rate
        self.counters = counters
        self._pending: deque = deque()
        self._max_pending = queue_size()
        self._wake = threading.Event()
        self._stopping = False
        self._file_cap = max(64 * 1024, opts.max_bytes // 4)
        self._fd: int | None = None
        self._file = ""
        self._file_bytes = 0
        self._failing = False
        self._field_cache: dict[tuple[int, str], tuple[bytes, bytes, bytes]] = {}
        self._ts_sec, self._ts_field = -1, b""
        with counters.lock:
            counters.writable.setdefault(model, 1)
            counters.written.setdefault(model, 0)
        self._thread = threading.Thread(
            target=self._run, name=f"tfs-payload-{model}", daemon=True
        )
        self._thread.start()

    # -- request path (event loop): cheap ---------------------------------------------------------
    def maybe(
        self,
        version: int,
        signature: str,
        inputs: dict[str, np.ndarray] | Any,
        outputs: dict[str, np.ndarray],
    ) -> None:
        """inputs: the request's tensors, or the PredictRequest itself as received (gRPC), which
        the record keeps as it is: the writer serialises the message in one C call instead of
        encoding tensors again, and the log holds what the client sent, as TF Serving's does."""
        if self.rate < 1.0 and random.random() >= self.rate:
            return
        call = CURRENT_CALL.get()
        rid = call.request_id if call is not None else ""
        self.put((version, signature, inputs, outputs, rid, time.time()))

    def maybe_examples(
        self, kind: str, version: int, signature: str, examples: list[bytes], result: Any
    ) -> None:
        """Classify (result: per example [(label, score)]) or Regress (result: values)."""
        if self.rate < 1.0 and random.random() >= self.rate:
            return
        call = CURRENT_CALL.get()
        rid = call.request_id if call is not None else ""
        self.put((kind, version, signature, examples, result, rid, time.time()))

    def put(self, item: tuple) -> None:
        """Queue one sample already chosen (here, or by the router's capture agent):
        (version, signature, inputs, outputs, request_id, ts),
        (kind, version, signature, examples, result, request_id, ts), or
        ("wire", version, signature, request bytes, response bytes, request_id, ts) for a Predict
        pair whose serialised PredictRequest and PredictResponse are at hand (the router's gRPC
        capture): they go into the record as they are, unparsed."""
        self.counters.sample(self.model)
        pending = self._pending
        if len(pending) >= self._max_pending:
            self.counters.drop(self.model, "queue_full")
            return
        pending.append(item)  # deque.append is atomic: no lock shared with the writer
        if len(pending) == 1:  # the writer sleeps on the event only after emptying the deque
            self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is pending, then stop the writer."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)

    # -- writer thread -----------------------------------------------------------------------------
    def _record(self, item: tuple) -> bytes:
        """One PredictionLog record's bytes. Predict records are put together from wire pieces
        (orchestrator.protocol.wire): building them through protobuf messages cost about 150 µs
        a record in the writer thread, which took the GIL from the requests at high rates."""
        head = item[0]
        if head == "wire":
            _, version, signature, req, resp, rid, ts = item
            return self._predict_record(self._fields(version, signature)[0], rid, ts, req, resp)
        if isinstance(head, str):
            return self._example_record(item)
        version, signature, inputs, outputs, rid, ts = item
        md_head, req_spec, resp_spec = self._fields(version, signature)
        if isinstance(inputs, dict):
            req = wire.encode_predict_request_after(req_spec, inputs)
        else:  # the PredictRequest as received (gRPC)
            req = inputs.SerializeToString()
        resp = wire.encode_predict_response(outputs) + resp_spec  # model_spec is field 2, last
        return self._predict_record(md_head, rid, ts, req, resp)

    def _predict_record(self, md_head: bytes, rid: str, ts: float, req: Any, resp: Any) -> bytes:
        """PredictionLog{log_metadata, predict_log: {request: req, response: resp}}, req and
        resp given serialised (bytes or a memoryview). LogMetadata's fields in the order
        protobuf writes them: model_spec, sampling_config, saved_model_tags (md_head),
        timestamp_secs (4), request_origin (6)."""
        sec = int(ts)
        if sec != self._ts_sec:
            self._ts_sec, self._ts_field = sec, b"\x20" + wire.varint(sec) if sec else b""
        if rid:
            origin = rid.encode()
            tail = self._ts_field + wire.len_field(6, len(origin)) + origin
        else:
            tail = self._ts_field
        req_head, resp_head = wire.len_field(1, len(req)), wire.len_field(2, len(resp))
        log_len = len(req_head) + len(req) + len(resp_head) + len(resp)
        return b"".join(
            (wire.len_field(1, len(md_head) + len(tail)), md_head, tail,
             wire.len_field(6, log_len), req_head, req, resp_head, resp)
        )  # fmt: skip

    def _fields(self, version: int, signature: str) -> tuple[bytes, bytes, bytes]:
        """What every Predict record of (version, signature) shares, serialised once:
        LogMetadata's model_spec, sampling_config and saved_model_tags; the request's
        model_spec field (no version, as the request named none); the response's (with it)."""
        key = (version, signature)
        cached = self._field_cache.get(key)
        if cached is None:
            from orchestrator.protos import apis_pb2, prediction_log_pb2

            full = apis_pb2.ModelSpec(name=self.model, signature_name=signature)
            full.version.value = version
            bare = apis_pb2.ModelSpec(name=self.model, signature_name=signature)
            fixed = prediction_log_pb2.LogMetadata(saved_model_tags=["serve"])
            fixed.sampling_config.sampling_rate = self.rate
            f, b = full.SerializeToString(), bare.SerializeToString()
            cached = self._field_cache[key] = (
                wire.len_field(1, len(f)) + f + fixed.SerializeToString(),
                wire.len_field(1, len(b)) + b,
                wire.len_field(2, len(f)) + f,
            )
        return cached

    def _new_log(self, version: int, signature: str, rid: str, ts: float):  # type: ignore[no-untyped-def]
        """A PredictionLog with its metadata filled: what every record kind shares."""
        from tensorflow_serving.apis import prediction_log_pb2

        pl = prediction_log_pb2.PredictionLog()
        md = pl.log_metadata
        md.model_spec.name = self.model
        md.model_spec.version.value = version
        md.model_spec.signature_name = signature
        md.sampling_config.sampling_rate = self.rate
        md.saved_model_tags.append("serve")
        md.timestamp_secs = int(ts)
        md.request_origin = rid
        return pl

    def _example_record(self, item: tuple) -> bytes:
        """A ClassifyLog, RegressLog or MultiInferenceLog record (the request's examples and
        the response); a multi-inference result is [(signature, method, result)] per task."""

        kind, version, signature, examples, result, rid, ts = item
        pl = self._new_log(version, signature, rid, ts)
        md = pl.log_metadata
        if kind == "multi":
            multi = pl.multi_inference_log
            for raw in examples:
                multi.request.input.example_list.examples.add().ParseFromString(raw)
            for sig_name, method, task_result in result:
                task = multi.request.tasks.add(method_name=method)
                task.model_spec.name = self.model
                task.model_spec.signature_name = sig_name
                out = multi.response.results.add()
                out.model_spec.name = self.model
                out.model_spec.version.value = version
                out.model_spec.signature_name = sig_name
                if method.endswith("classify"):
                    _classifications(out.classification_result, task_result)
                else:
                    for value in task_result:
                        out.regression_result.regressions.add(value=float(value))
            return pl.SerializeToString()
        body = pl.classify_log if kind == "classify" else pl.regress_log
        body.request.model_spec.name = self.model
        body.request.model_spec.signature_name = signature
        for raw in examples:
            body.request.input.example_list.examples.add().ParseFromString(raw)
        body.response.model_spec.CopyFrom(md.model_spec)
        if kind == "classify":
            _classifications(body.response.result, result)
        else:
            for value in result:
                body.response.result.regressions.add(value=float(value))
        return pl.SerializeToString()

    def _open(self) -> None:
        directory = os.path.dirname(self.opts.prefix) or "."
        os.makedirs(directory, exist_ok=True)
        # Worker processes (server.workers) write files of their own: `-w<i>` after the time.
        worker = os.environ.get("TFS_WORKER")
        tail = f"-w{worker}.tfrecord" if worker is not None else ".tfrecord"
        ms = int(time.time() * 1000)
        while True:
            self._file = f"{self.opts.prefix}-{ms:013d}{tail}"
            try:
                self._fd = os.open(
                    self._file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
                )
                break
            except FileExistsError:
                ms += 1
        self._file_bytes = 0
        self._trim()

    def _close_file(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:  # a failing disk must not kill the writer
                pass
            self._fd = None

    def _trim(self) -> None:
        """Delete this model's oldest files until the rest fit in max_bytes."""
        files = sorted(glob.glob(glob.escape(self.opts.prefix) + "-*.tfrecord"))
        sizes = []
        for f in files:
            try:
                sizes.append(os.path.getsize(f))
            except OSError:
                sizes.append(0)
        total = sum(sizes)
        for f, size in zip(files, sizes, strict=False):
            if total <= self.opts.max_bytes - self._file_cap or f == self._file:
                break
            try:
                os.remove(f)
            except OSError:
                pass
            total -= size

    def _append(self, parts: list, sizes: list[int]) -> int:
        """Write parts (whole framed records of `sizes` bytes) to the current file with one
        write(). On a failure (a full disk takes what fits, then refuses), keep the records
        that were written whole and cut the file back to the end of the last one, so a reader
        never meets half a record; raises _Cut with how many were kept. Returns the count."""
        assert self._fd is not None
        data = memoryview(b"".join(parts))
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as error:
            whole = [size for size in itertools.accumulate(sizes) if size <= done]
            count, kept = len(whole), (whole[-1] if whole else 0)
            try:
                os.ftruncate(self._fd, self._file_bytes + kept)
            except OSError:
                kept, count = done, 0  # cannot cut: nothing of this write counts as written
            self._file_bytes += kept
            raise _Cut(count, error) from error
        self._file_bytes += done
        return len(sizes)

    def _write(self, items: list) -> None:
        written = 0
        try:
            if self._fd is None:
                self._open()
            parts: list = []
            sizes: list[int] = []
            size = 0
            for item in items:
                data = self._record(item)
                framed = len(data) + tfrecord.OVERHEAD
                if self._file_bytes + size + framed > self._file_cap and self._file_bytes + size:
                    if parts:
                        written += self._append(parts, sizes)
                        parts, sizes, size = [], [], 0
                    self._close_file()
                    self._open()
                head, tail = tfrecord.frame_parts(data)
                parts += (head, data, tail)
                sizes.append(framed)
                size += framed
            if parts:
                written += self._append(parts, sizes)
        except Exception as e:  # disk full, read-only, gone: warn, count, go on
            if isinstance(e, _Cut):
                written += e.kept
                e = e.error
            self._close_file()
            try:
                if self._file and os.path.getsize(self._file) == 0:
                    os.remove(self._file)  # no empty file per failed attempt
            except OSError:
                pass
            for _ in range(len(items) - written):
                self.counters.drop(self.model, "write_error")
            with self.counters.lock:
                self.counters.writable[self.model] = 0
                self.counters.written[self.model] += written
            if not self._failing:
                log.warning(
                    "prediction log for model %s cannot be written to %s: %s; samples are "
                    "dropped (tfso_prediction_log_dropped_total) until it can",
                    self.model,
                    self.opts.prefix,
                    str(e).splitlines()[0] if str(e) else type(e).__name__,
                )
            self._failing = True
            return
        if self._failing:
            log.warning("prediction log for model %s is writable again", self.model)
        self._failing = False
        with self.counters.lock:
            self.counters.writable[self.model] = 1
            self.counters.written[self.model] += written

    def _run(self) -> None:
        pending = self._pending
        while True:
            self._wake.clear()
            if not pending and not self._stopping:
                # Woken by the put that finds the deque empty after its append. Two threads
                # putting at once (the capture agent has two) can both see a length of 2: the
                # timeout bounds how long their samples then wait.
                self._wake.wait(WAKE_CHECK_S)
            if not self._stopping:
                # Gather for a moment before writing: a writer that wakes for every sample
                # (over a thousand times a second at 100 % sampling) trades the GIL with the
                # serving thread at every wake; gRPC at 100 % went from 0.71x to 0.85x of the
                # rps without logging (bench/payload_log.py). Records reach the file <= 50 ms later.
                time.sleep(WRITE_GATHER_S)
            items: list = []
            while pending and len(items) < self._max_pending:
                items.append(pending.popleft())
            if items:
                self._write(items)
            if self._stopping and not pending:
                break
        self._close_file()


def _classifications(target: Any, result: list) -> None:
    """Per example [(label, score)] -> a ClassificationResult."""
    for row in result:
        classes = target.classifications.add()
        for label, score in row:
            text = label.decode("utf-8", "replace") if isinstance(label, bytes) else label
            classes.classes.add(label=text, score=float(score))


class PayloadLogs:
    """Model name -> ModelLogger, replaced whole on each config apply."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.by_model: dict[str, ModelLogger] = {}

    def configure(self, configs: list) -> None:
        old = self.by_model
        new: dict[str, ModelLogger] = {}
        for c in configs:
            opts = getattr(c, "logging", None)
            if opts is None:
                continue
            keep = old.get(c.name)
            if keep is not None and keep.opts == opts:
                new[c.name] = keep
            else:
                new[c.name] = ModelLogger(c.name, opts, self.counters)
        self.by_model = new
        for name, lg in old.items():
            if new.get(name) is not lg:
                threading.Thread(target=lg.close, daemon=True).start()

    def close(self) -> None:
        for lg in self.by_model.values():
            lg.close()
        self.by_model = {}
