"""Shadow rollouts: every sampled request stable answered is sent again to the canary, whose
answer is logged and compared, never returned.

The mechanism is a mirroring agent in the rollout controller that tails the payload logs: the
stable replicas already write each sampled request and its answer as a PredictionLog record,
so the agent replays the logged PredictRequest to the canary replicas over gRPC and compares
the answers row by row. Clients never wait on it (it runs after their answer was sent), a slow
or failing canary cannot fail a client request, and the router's weights stay at 0 until
promotion. It needs the stable replicas to log, so it runs where our server logs (the local
runtime); the docker runtime's real `tensorflow/serving` image cannot log, and is refused.

The canary's answers are written as PredictionLog records of version N to
`<logging.path>/<NAME>.shadow-<ms>.tfrecord` (kept apart from the served traffic's logs).
Its latency comes from its own TF Serving histogram (only mirrored requests reach it), shown
beside stable's.
"""

from __future__ import annotations

import contextlib
import glob
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.errors import RolloutError
from orchestrator.protocol.tfrecord import frame as tfrecord
from orchestrator.rollout.analysis import Outputs
from orchestrator.rollout.metrics import Snapshot
from orchestrator.rollout.target import RolloutTarget

PREDICT = "/tensorflow.serving.PredictionService/Predict"
POLL_S = 0.1
QUEUE_MAX = 10_000  # mirrored requests waiting: beyond it the oldest are skipped (counted)
LOG_CAP_BYTES = 64 << 20  # the canary's logged answers per rollout; comparison goes on beyond it


def refuse_unless_local(runtime_name: str, flag: str = "--mode shadow") -> None:
    """Output gates read the payload logs on this machine: the local runtime's servers write
    them, and under docker the router's capture agent does (router.capture_agent), which is
    enough for --max-drift; shadow mode mirrors to replicas of our own server only."""
    if runtime_name == "docker" and flag == "--max-drift":
        return
    if runtime_name == "docker":
        raise RolloutError(
            f"{flag} is not available on the docker runtime: its mirror replays logged requests to "
            "canary replicas the router keeps at weight 0, which only the local runtime runs",
            fix="deploy with --runtime local (and `logging:` in the spec), or use --max-drift, "
                "which works on docker (the router captures the logs)")
    if runtime_name != "local":
        raise RolloutError(
            f"{flag} is not available on the {runtime_name} runtime: it reads the requests and answers "
            "the replicas log on this machine, and the real tensorflow/serving image cannot log them",
            fix="deploy with --runtime local (and `logging:` in the spec), or roll out without it")


def row_agreement(stable: dict[str, np.ndarray], canary: dict[str, np.ndarray],
                  tolerance: float) -> tuple[np.ndarray, float]:
    """Per row: does the canary answer like stable? (top-1 for class scores, |diff| <= tolerance
    for other numbers, equality otherwise); and the largest numeric |diff| seen."""
    rows = max((len(a) if a.ndim else 1 for a in stable.values()), default=0)
    agree = np.ones(rows, dtype=bool)
    worst = 0.0
    for name, a in stable.items():
        b = canary.get(name)
        if b is None or b.shape != a.shape:
            return np.zeros(rows, dtype=bool), float("inf")
        a2 = a.reshape(rows, -1) if rows else a
        b2 = b.reshape(rows, -1) if rows else b
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            diff = np.abs(a2.astype(np.float64) - b2.astype(np.float64))
            worst = max(worst, float(diff.max()) if diff.size else 0.0)
            if a2.ndim == 2 and a2.shape[1] >= 2:  # class scores: the top-1 class
                agree &= np.argmax(a2, axis=1) == np.argmax(b2, axis=1)
            else:
                agree &= (diff <= tolerance).all(axis=tuple(range(1, diff.ndim)))
        else:
            same = a2 == b2
            agree &= same.all(axis=tuple(range(1, same.ndim))) if same.ndim > 1 else same
    return agree, worst


@dataclass(frozen=True)
class Mirrored:
    at: float
    rows: int
    agreed: int
    max_abs_diff: float


class ShadowAgent:
    """Tails `prefix`'s logs for version `from_version` records and mirrors them to `canaries`."""

    def __init__(self, prefix: str, from_version: int, to_version: int, *, tolerance: float = 1e-3) -> None:
        self.prefix = prefix
        self.from_version = from_version
        self.to_version = to_version
        self.tolerance = tolerance
        self.results: deque[Mirrored] = deque(maxlen=200_000)
        self.failed = 0
        self.skipped = 0
        self._offsets: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channels: list[Any] = []
        self._writer: Any = None
        self._logged_bytes = 0
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, grpc_addresses: Sequence[str]) -> None:
        import grpc

        self.stop()
        self._stop.clear()
        self._channels = [grpc.insecure_channel(a) for a in grpc_addresses]
        # Mirror what is logged from now on, not the history.
        for f in self._files():
            with contextlib.suppress(OSError):
                self._offsets[f] = os.path.getsize(f)
        self._thread = threading.Thread(target=self._run, name="tfso-shadow", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for ch in self._channels:
            ch.close()
        self._channels = []
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None

    # -- the gate ------------------------------------------------------------------------------------
    def compare(self, since_ts: float) -> Outputs:
        with self._lock:
            window = [m for m in self.results if m.at >= since_ts]
        rows = sum(m.rows for m in window)
        agreed = sum(m.agreed for m in window)
        worst = max((m.max_abs_diff for m in window), default=None)
        return Outputs(canary_rows=rows, stable_rows=rows, agreement=agreed / rows if rows else None,
                       max_abs_diff=worst)

    # -- the loop ------------------------------------------------------------------------------------
    def _files(self) -> list[str]:
        return sorted(glob.glob(glob.escape(self.prefix) + "-*.tfrecord"))

    def _new_records(self) -> list[bytes]:
        out: list[bytes] = []
        for f in self._files():
            pos = self._offsets.get(f, 0)
            try:
                with open(f, "rb") as fh:
                    fh.seek(pos)
                    blob = fh.read()
            except OSError:
                continue
            at = 0
            while at + 12 <= len(blob):
                (length,) = struct.unpack_from("<Q", blob, at)
                if at + 12 + length + 4 > len(blob):
                    break  # still being written
                out.append(blob[at + 12:at + 12 + length])
                at += 12 + length + 4
            self._offsets[f] = pos + at
        if len(out) > QUEUE_MAX:
            self.skipped += len(out) - QUEUE_MAX
            out = out[-QUEUE_MAX:]
        return out

    def _run(self) -> None:
        from orchestrator.protos import prediction_log_pb2

        turn = 0
        while not self._stop.is_set():
            records = self._new_records()
            for raw in records:
                if self._stop.is_set():
                    return
                pl = prediction_log_pb2.PredictionLog.FromString(raw)
                if pl.WhichOneof("log_type") != "predict_log":
                    continue  # Classify/Regress records are not mirrored
                if pl.log_metadata.model_spec.version.value != self.from_version:
                    continue  # the canary's own answers, or another version's
                channel = self._channels[turn % len(self._channels)]
                turn += 1
                self._mirror(channel, pl)
            if not records:
                self._stop.wait(POLL_S)

    def _mirror(self, channel: Any, pl: Any) -> None:
        from orchestrator.protocol.tensors import from_tensor_proto
        from orchestrator.protos import apis_pb2

        request = pl.predict_log.request
        try:
            raw = channel.unary_unary(PREDICT)(request.SerializeToString(), timeout=10)
        except Exception:  # the canary failed it: its own counters show the error
            self.failed += 1
            return
        response = apis_pb2.PredictResponse.FromString(raw)
        stable = {k: from_tensor_proto(v) for k, v in pl.predict_log.response.outputs.items()}
        canary = {k: from_tensor_proto(v) for k, v in response.outputs.items()}
        agree, worst = row_agreement(stable, canary, self.tolerance)
        with self._lock:
            self.results.append(Mirrored(time.time(), len(agree), int(agree.sum()), worst))
        self._log(pl, raw)

    def _log(self, pl: Any, raw_response: bytes) -> None:
        """The canary's answer, as the PredictionLog its own server would have written (TFRecord
        framing written here: importing TensorFlow would stall the mirror for seconds)."""
        try:
            if self._writer is None:
                if self._logged_bytes >= LOG_CAP_BYTES:
                    return
                os.makedirs(os.path.dirname(self.prefix) or ".", exist_ok=True)
                self._writer = open(  # noqa: SIM115 - held open across mirrored requests, closed in stop()
                    f"{self.prefix}.shadow-{int(time.time() * 1000):013d}.tfrecord", "ab")
            pl.log_metadata.model_spec.version.value = self.to_version
            pl.predict_log.response.ParseFromString(raw_response)
            record = tfrecord(pl.SerializeToString())
            self._writer.write(record)
            self._writer.flush()
            self._logged_bytes += len(record)
            if self._logged_bytes >= LOG_CAP_BYTES:
                self._writer.close()
                self._writer = None
        except Exception:  # logging the shadow answer never stops the comparison
            pass


class ShadowTarget(RolloutTarget):
    """A routed target whose canary gets mirrored requests only: its weight stays 0 until
    promotion, which moves the stable replicas themselves to the new version."""

    def __init__(self, inner: Any, agent: ShadowAgent) -> None:
        self.inner = inner
        self.agent = agent

    def _ensure_agent(self) -> None:
        if not self.agent.running:
            canaries = [r for r in self.inner.runtime.replicas(self.inner.name) if r.role == "canary"]
            if canaries:
                self.agent.start([r.grpc_address for r in canaries])

    def start_canary(self, version: int) -> None:
        self.inner.start_canary(version)
        self.inner.set_weight(0)
        self._ensure_agent()

    def canary_alive(self) -> bool:
        alive: bool = self.inner.canary_alive()
        if alive:
            self._ensure_agent()  # a resumed controller mirrors again
        return alive

    def set_weight(self, percent: int) -> None:
        self.inner.set_weight(0)  # clients never reach the canary in shadow mode

    def sample(self) -> dict[str, Snapshot]:
        result: dict[str, Snapshot] = self.inner.sample()
        return result

    def promote(self, version: int) -> None:
        self.agent.stop()
        self.inner.promote(version)

    def remove_canary(self) -> None:
        self.agent.stop()
        self.inner.remove_canary()
