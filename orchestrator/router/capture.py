"""Payload capture in the router: what HAProxy adds so sampled requests reach the capture agent.

Under the docker runtime the replicas run `tensorflow/serving`, which cannot log payloads, so
the router (HAProxy 2.6) takes the sample instead and hands it to our SPOP agent
(`router.capture_agent`) over SPOE; the agent writes the same PredictionLog records as our
server. Pure: this module renders config text; the router writes it beside haproxy.cfg.

Per request, in HAProxy:
- every request gets an `X-Request-Id` (the caller's when it is 1-128 printable ASCII
  characters, as our server accepts, else a new UUID), sent to the replica and returned;
- a REST predict/classify/regress POST of a logged model is sampled with `rand()` at the
  spec's `logging.sample`; gRPC calls to PredictionService (Predict, Classify, Regress,
  MultiInference) at the largest rate of the logged models (the model is in the body, so the
  agent keeps each model's share of that);
- a sampled request's body is buffered (`wait-for-body`) and kept in a variable; when the
  answer is a 200, its body is buffered too and both go to the agent in one NOTIFY (group
  `capture`, sent by an `http-response send-spoe-group` rule), with the path, the request id
  and the version the answering server is checked for (`srv_name` through versions.map);
- the agent acknowledges at once, so a request waits one loopback round trip at most
  `timeout_ms`. A dead, slow or saturated agent makes SPOE fail that one sample (`option
  set-on-error`, `continue-on-error`): the answer still goes to the client, and the sample is
  counted in the stick table `tfso_capture_drops` (gpc0 per model), which the agent exports
  as `tfso_prediction_log_dropped_total{reason="not_delivered"}` and `tfsctl status` reads
  even while the agent is down.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINE = "tfso-capture"
GROUP = "capture"
MESSAGE = "tfso-capture"
AGENT_BACKEND = "tfso_capture_agent"
DROPS_TABLE = "tfso_capture_drops"
SPOE_FILE = "capture.spoe"
SCALE = 1_000_000  # rand(SCALE) < rate * SCALE
GRPC_PATH = (r"^/tensorflow[.]serving[.]PredictionService/"
             r"(Predict|Classify|Regress|MultiInference)$")


@dataclass(frozen=True)
class CaptureModel:
    name: str
    sample: float


@dataclass(frozen=True)
class CaptureConfig:
    """The router's side of payload capture for one deployment."""

    models: tuple[CaptureModel, ...]
    agent_port: int
    spoe_path: str  # capture.spoe as HAProxy sees it (the router folder, same path in a container)
    timeout_ms: int = 100  # the longest a sampled request waits for the agent's ACK
    body_wait_ms: int = 2000  # the longest HAProxy buffers a sampled body before forwarding it
    # HAProxy's buffer (tune.bufsize); None keeps its default, 16 KiB. Larger bodies are not
    # captured (counted `too_large`). Larger buffers cost every request: measured 256 KiB < 64 KiB
    # < 16 KiB in rps through the router (bench/capture.py's setup, same rounds).
    bufsize: int | None = None

    @property
    def grpc_rate(self) -> float:
        return max((m.sample for m in self.models), default=0.0)

    @property
    def grpc_key(self) -> str:
        """The drop-count key of gRPC samples (the model is only known from the body)."""
        return self.models[0].name if len(self.models) == 1 else "grpc"


def threshold(rate: float) -> int:
    return max(0, min(SCALE, round(rate * SCALE)))


def global_lines(capture: CaptureConfig) -> list[str]:
    return [f"    tune.bufsize {capture.bufsize}"] if capture.bufsize else []


def _common_request_lines() -> list[str]:
    return [
        f"    filter spoe engine {ENGINE} config {{spoe}}",
        "    acl tfso_rid_given req.fhdr(x-request-id) -m reg ^[!-~]{1,128}$",
        "    acl tfso_has_rid var(txn.tfso_rid) -m found",
        "    acl tfso_sampled var(txn.tfso_model) -m found",
        "    acl tfso_failed var(txn.tfso.err) -m found",
        "    acl tfso_ok status 200",
        "    http-request set-var(txn.tfso_rid) req.fhdr(x-request-id) if tfso_rid_given",
        "    http-request set-var(txn.tfso_rid) uuid() unless tfso_has_rid",
        "    http-request set-header X-Request-Id %[var(txn.tfso_rid)]",
    ]


def _capture_lines(capture: CaptureConfig, *, grpc: bool) -> list[str]:
    wait = capture.body_wait_ms
    encoding = "grpc-encoding" if grpc else "content-encoding"
    return [
        "    http-request set-var(txn.tfso_path) path if tfso_sampled",
        f"    http-request wait-for-body time {wait} if tfso_sampled",
        "    http-request set-var(txn.tfso_req) req.body if tfso_sampled",
        f"    http-request set-var(txn.tfso_req_enc) req.fhdr({encoding}) if tfso_sampled",
        "    http-request set-var(txn.tfso_req_size) req.body_size if tfso_sampled",
        f"    http-response set-var(txn.tfso_res_enc) res.fhdr({encoding}) if tfso_sampled",
        f"    http-response wait-for-body time {wait} if tfso_sampled tfso_ok",
        f"    http-response send-spoe-group {ENGINE} {GROUP} if tfso_sampled tfso_ok",
        f"    http-response track-sc2 var(txn.tfso_model) table {DROPS_TABLE} if tfso_sampled tfso_ok tfso_failed",
        "    http-response sc-inc-gpc0(2) if tfso_sampled tfso_ok tfso_failed",
        "    http-response set-header X-Request-Id %[var(txn.tfso_rid)]",
    ]


def rest_frontend_lines(capture: CaptureConfig) -> list[str]:
    lines = [line.replace("{spoe}", capture.spoe_path) for line in _common_request_lines()]
    for i, m in enumerate(capture.models):
        if threshold(m.sample) == 0:
            continue
        lines += [
            f"    acl tfso_m{i} path_reg -i ^/v1/models/{m.name}(/versions/[0-9]+|/labels/[^/:]+)?"
            ":(predict|classify|regress)$",
            f"    http-request set-var(txn.tfso_model) str({m.name}) if METH_POST tfso_m{i} "
            f"{{ rand({SCALE}) lt {threshold(m.sample)} }}",
        ]
    return lines + _capture_lines(capture, grpc=False)


def grpc_frontend_lines(capture: CaptureConfig) -> list[str]:
    lines = [line.replace("{spoe}", capture.spoe_path) for line in _common_request_lines()]
    if threshold(capture.grpc_rate):
        lines += [
            f"    acl tfso_grpc path -m reg {GRPC_PATH}",
            f"    http-request set-var(txn.tfso_model) str({capture.grpc_key}) if METH_POST tfso_grpc "
            f"{{ rand({SCALE}) lt {threshold(capture.grpc_rate)} }}",
        ]
    return lines + _capture_lines(capture, grpc=True)


def backend_lines(capture: CaptureConfig) -> list[str]:
    return [
        f"backend {AGENT_BACKEND}",
        "    mode tcp",
        "    timeout connect 1s",
        "    timeout server 2m",
        f"    server agent 127.0.0.1:{capture.agent_port}",
        "",
        f"backend {DROPS_TABLE}",
        "    stick-table type string len 128 size 256 store gpc0",
        "",
    ]


def render_spoe(capture: CaptureConfig, versions_map: str | None) -> str:
    """capture.spoe: the engine, its one message and the group the response rule sends."""
    version = f"srv_name,map({versions_map},0)" if versions_map else "int(0)"
    return "\n".join([
        f"[{ENGINE}]",
        f"spoe-agent {ENGINE}-agent",
        f"    groups {GROUP}",
        "    option var-prefix tfso",
        "    option set-on-error err",
        "    option continue-on-error",
        "    option dontlog-normal",
        "    timeout hello 500ms",
        "    timeout idle 60s",
        f"    timeout processing {capture.timeout_ms}ms",
        f"    use-backend {AGENT_BACKEND}",
        "",
        f"spoe-message {MESSAGE}",
        "    args model=var(txn.tfso_model) path=var(txn.tfso_path) rid=var(txn.tfso_rid) "
        f"version={version} req=var(txn.tfso_req) req_enc=var(txn.tfso_req_enc) "
        "req_size=var(txn.tfso_req_size) res=res.body res_size=res.body_size res_enc=var(txn.tfso_res_enc)",
        "",
        f"spoe-group {GROUP}",
        f"    messages {MESSAGE}",
        "",
    ])


def parse_drops(table_dump: str) -> dict[str, int]:
    """`show table tfso_capture_drops` -> {key: gpc0}."""
    out: dict[str, int] = {}
    for line in table_dump.splitlines():
        if " key=" not in line or "gpc0=" not in line:
            continue
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        try:
            out[fields["key"]] = int(fields["gpc0"])
        except (KeyError, ValueError):
            continue
    return out
