"""Deployment specs: `serving_configs/<name>.yaml` validated into frozen, typed objects.

The smallest valid spec is one line (`base_path: ../models/demo`). Every error names the
file, the field, the line and the fix, because a spec is the thing users edit by hand.
Relative paths are resolved against the spec file's folder, as Docker Compose does.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator import limits
from orchestrator.errors import SpecError
from orchestrator.names import NAME_PATTERN

"""TF Serving's rule for model and label names; it also rules out path tricks."""

DEFAULT_CONFIGS_DIR = Path("serving_configs")
MAX_SPEC_BYTES = 1024 * 1024
DEFAULT_IMAGE = "tensorflow/serving"
DEFAULT_TAG = "2.19.0"
DEFAULT_ROUTER_IMAGE = "haproxy:2.6"
DEFAULT_MONITORING_PATH = "/monitoring/prometheus/metrics"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class VersionPolicy(_Frozen):
    """Which version folders TF Serving loads: `latest` N, `all`, or `specific` versions."""

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = Field(default=1, ge=1)
    versions: tuple[int, ...] = ()

    def select(self, found: Sequence[int]) -> list[int]:
        """The versions TF Serving will try to load, given the folders on disk."""
        ordered = sorted(found)
        if self.kind == "latest":
            return ordered[-self.num_versions :]
        if self.kind == "all":
            return ordered
        return sorted(self.versions)


class Batching(_Frozen):
    enabled: bool = False
    max_batch_size: int = Field(default=32, ge=1)
    batch_timeout_micros: int = Field(default=1000, ge=0)
    max_enqueued_batches: int = Field(default=100, ge=1)
    num_batch_threads: int = Field(default=4, ge=1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @model_validator(mode="after")
    def _allowed_sizes(self) -> Batching:
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be positive and strictly increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    f"the last of allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size "
                    f"({self.max_batch_size}), as TF Serving requires"
                )
        return self


class Monitoring(_Frozen):
    prometheus: bool = True
    path: str = DEFAULT_MONITORING_PATH
    # A Prometheus that scrapes the replicas (labels deployment/role/replica): canary analysis
    # queries it instead of reading each replica itself (orchestrator.rollout.prometheus).
    prometheus_url: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or " " in value:
            raise ValueError("must be a URL path starting with '/', e.g. /monitoring/prometheus/metrics")
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http(s) URL of a Prometheus server, e.g. http://prometheus.monitoring:9090")
        return value.rstrip("/") if value else value


class PayloadLogging(_Frozen):
    """Sampled request/response pairs written as TF Serving PredictionLog TFRecord files.

    Rendered as TF Serving's own `logging_config` in models.config (see orchestrator.plan).
    """

    sample: float = Field(default=0.01, ge=0.0, le=1.0)
    path: Path = Path("prediction_logs")
    max_mb: float = Field(default=256.0, gt=0)


class Ports(_Frozen):
    """Host ports of the first replica; further replicas take the next free ones."""

    grpc: int = Field(default=8500, ge=1, le=65535)
    rest: int = Field(default=8501, ge=1, le=65535)
    host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _distinct(self) -> Ports:
        if self.grpc == self.rest:
            raise ValueError(f"grpc and rest must differ (both are {self.grpc})")
        return self


class Gpu(_Frozen):
    count: int | Literal["all"] = "all"
    memory_fraction: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("count")
    @classmethod
    def _count(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 'all' or a whole number of GPUs ≥ 1")
        return value


class Threads(_Frozen):
    intra_op: int = Field(default=0, ge=0)
    inter_op: int = Field(default=0, ge=0)


class Health(_Frozen):
    deadline_s: float = Field(default=120.0, gt=0)
    poll_interval_s: float = Field(default=0.25, gt=0)


class Resources(_Frozen):
    cpus: float | None = Field(default=None, gt=0)
    memory: str | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9]+[bkmgBKMG]?", value):
            raise ValueError("must look like 512m or 2g")
        return value


RESTART_PATTERN = re.compile(r"^(no|always|unless-stopped|on-failure(:[0-9]+)?)$")


MODEL_URI_SCHEMES = ("gs", "pvc", "image")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IMAGE_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
)


class ModelUri(_Frozen):
    """Where a cluster finds the model: a bucket, a volume claim, or an OCI image (modelcar)."""

    scheme: Literal["gs", "pvc", "image"]
    location: str  # gs: bucket/path; pvc: claim name; image: REPO:TAG
    path: str = ""  # pvc: the folder inside the claim holding the version folders

    @property
    def uri(self) -> str:
        if self.scheme == "pvc":
            return f"pvc://{self.location}/{self.path}" if self.path else f"pvc://{self.location}"
        return f"{self.scheme}://{self.location}"


def parse_model_uri(value: str) -> ModelUri:
    """`gs://BUCKET/PATH`, `pvc://CLAIM/PATH` or `image://REGISTRY/REPO:TAG`; anything else is refused."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError(f"{value!r} has no scheme: use gs://BUCKET/PATH, pvc://CLAIM/PATH or "
                         "image://REPO:TAG")
    if scheme not in MODEL_URI_SCHEMES:
        raise ValueError(f"unknown scheme {scheme + '://'!r}: use gs://, pvc:// or image://")
    if not rest or any(c.isspace() for c in rest) or ".." in rest.split("/"):
        raise ValueError(f"{value!r} is missing its location (or holds spaces or '..')")
    if scheme == "gs":
        bucket = rest.split("/")[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket):
            raise ValueError(f"{bucket!r} is not a valid bucket name")
        return ModelUri(scheme="gs", location=rest.rstrip("/"))
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        if not _DNS_LABEL.fullmatch(claim) or len(claim) > 253:
            raise ValueError(f"{claim!r} is not a valid PersistentVolumeClaim name (lowercase DNS name)")
        return ModelUri(scheme="pvc", location=claim, path=path.strip("/"))
    if not IMAGE_REF.fullmatch(rest):
        raise ValueError(f"{rest!r} is not an image reference with a tag, e.g. "
                         "image://registry.example.com/models/demo:1")
    return ModelUri(scheme="image", location=rest)


class Autoscale(_Frozen):
    """A HorizontalPodAutoscaler on CPU (Kubernetes only)."""

    min: int = Field(default=1, ge=1)
    max: int = Field(ge=1, le=1000)
    target_cpu: int = Field(default=70, ge=1, le=100)

    @model_validator(mode="after")
    def _range(self) -> Autoscale:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class GatewayRouter(_Frozen):
    """Canary traffic split by Gateway API routes attached to a Gateway the user runs."""

    gateway: str
    namespace: str | None = None  # the Gateway's namespace, when not the deployment's

    @field_validator("gateway", "namespace")
    @classmethod
    def _dns(cls, value: str | None) -> str | None:
        if value is not None and (not _DNS_LABEL.fullmatch(value) or len(value) > 63):
            raise ValueError(f"{value!r} is not a Kubernetes object name (lowercase DNS label)")
        return value


class KubernetesOptions(_Frozen):
    """Where on a cluster: a kubeconfig context and a namespace."""

    namespace: str = "default"
    context: str | None = None
    service_monitor: bool = False  # a prometheus-operator ServiceMonitor beside the scrape annotations

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _DNS_LABEL.fullmatch(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a namespace name (lowercase DNS label)")
        return value


class Spec(_Frozen):
    """One model's deployment: what TF Serving loads and how it runs."""

    name: str
    base_path: Path
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict[str, int] = Field(default_factory=dict)
    batching: Batching = Batching()
    monitoring: Monitoring = Monitoring()
    logging: PayloadLogging | None = None
    ports: Ports = Ports()
    runtime: Literal["auto", "local", "docker", "kubernetes"] = "auto"
    device: Literal["cpu", "gpu"] = "cpu"
    gpu: Gpu = Gpu()
    image: str = DEFAULT_IMAGE
    tag: str = DEFAULT_TAG
    pull: Literal["missing", "always", "never"] = "missing"
    restart: str = "unless-stopped"
    replicas: int = Field(default=1, ge=1, le=64)
    # --rest_api_num_threads: worker processes of our server (min(N, CPUs), both ports), REST
    # handler threads of TF Serving's image; unset = one process / TF Serving's 4 x CPUs
    workers: int | None = Field(default=None, ge=1, le=1024)
    threads: Threads = Threads()
    # TF_ENABLE_ONEDNN_OPTS for the server (TensorFlow reads it when it loads; the official image
    # too): false = TF's Eigen kernels, faster for small dense models, slower for convolutions
    # (`tfsctl tune` measures it); unset = TensorFlow's default (oneDNN on, on x86)
    onednn: bool | None = None
    health: Health = Health()
    resources: Resources = Resources()
    file_system_poll_wait_seconds: int = Field(default=1, ge=0)
    rest_api_timeout_ms: int = Field(default=30000, ge=1)
    enable_model_warmup: bool = True
    # --prefer_tflite_model: versions holding model.tflite (tfsctl convert --install) run on LiteRT
    prefer_tflite_model: bool = False
    # true: HAProxy in front (local/docker): spec ports are the router's, replicas get free ones;
    # {gateway: NAME}: Gateway API routes on a cluster (kubernetes manifests only)
    router: bool | GatewayRouter = False
    model_uri: ModelUri | None = None  # where a cluster reads the model (gs://, pvc://, image://)
    autoscale: Autoscale | None = None  # Kubernetes HorizontalPodAutoscaler
    kubernetes: KubernetesOptions = KubernetesOptions()
    router_image: str = DEFAULT_ROUTER_IMAGE  # the router's image under the Docker runtime
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid model name: use letters, digits and _ only")
        _check_length("model name", value)
        return value

    @field_validator("model_uri", mode="before")
    @classmethod
    def _model_uri(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_model_uri(value)
        if value is not None and not isinstance(value, ModelUri):
            raise ValueError("must be a string such as gs://BUCKET/PATH")
        return value

    @field_validator("restart")
    @classmethod
    def _restart(cls, value: str) -> str:
        if not RESTART_PATTERN.fullmatch(value):
            raise ValueError("use no, always, unless-stopped or on-failure[:N] (Docker's policies)")
        return value

    @field_validator("version_policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> Any:
        return _parse_policy(value)

    @field_validator("version_labels")
    @classmethod
    def _labels(cls, value: dict[str, int]) -> dict[str, int]:
        for label, version in value.items():
            if not NAME_PATTERN.fullmatch(label):
                raise ValueError(f"label {label!r} is not valid: use letters, digits and _ only")
            _check_length("label", label)
            if version < 1:
                raise ValueError(f"label {label!r} points at version {version}; versions are ≥ 1")
        return value

    @property
    def image_ref(self) -> str:
        """The image the Docker runtime runs: `<tag>-gpu` for GPU specs, as TF Serving tags them."""
        tag = self.tag
        if self.device == "gpu" and not tag.endswith("-gpu"):
            tag = f"{tag}-gpu" if tag != "latest" else "latest-gpu"
        return f"{self.image}:{tag}"

    def wanted_versions(self) -> list[int]:
        from orchestrator.savedmodel import list_versions

        return self.version_policy.select(list_versions(self.base_path))


def _check_length(what: str, value: str) -> None:
    most = limits.current().max_name_length
    if len(value) > most:
        raise ValueError(f"{what} of {len(value)} characters is longer than {most} (TFS_MAX_NAME_LENGTH)")


def _parse_policy(value: Any) -> Any:
    """Accept the YAML short forms: `latest`, `all`, `{latest: N}`, `{specific: [..]}`."""
    if isinstance(value, VersionPolicy) or value is None:
        return value if value is not None else VersionPolicy()
    if value == "latest":
        return {"kind": "latest", "num_versions": 1}
    if value == "all":
        return {"kind": "all"}
    if isinstance(value, Mapping) and "kind" not in value:
        if len(value) != 1:
            raise ValueError("give exactly one of latest: N, all, specific: [versions]")
        (key, arg), = value.items()
        if key == "latest":
            return {"kind": "latest", "num_versions": arg}
        if key == "all":
            return {"kind": "all"}
        if key == "specific":
            if not isinstance(arg, list) or not arg:
                raise ValueError("specific needs a non-empty list of versions, e.g. [1, 2]")
            return {"kind": "specific", "versions": arg}
        raise ValueError(f"unknown policy {key!r}: use latest: N, all, or specific: [versions]")
    raise ValueError("use latest, all, {latest: N} or {specific: [versions]}")


_FIXES: dict[str, str] = {
    "base_path": "point base_path at the folder holding numbered version folders (models/NAME), "
    "e.g. create one with `tfsctl export model.keras --name NAME`",
    "name": "model names match [A-Za-z0-9_]+ (TF Serving's rule); rename the spec file to match",
    "version_policy": "write `version_policy: latest`, `{latest: 2}`, `all` or `{specific: [1, 2]}`",
    "version_labels": "map label names to versions the policy loads, e.g. `version_labels: {stable: 1}`",
    "runtime": "use auto, local, docker or kubernetes",
    "device": "use cpu or gpu",
    "ports": "choose two different ports between 1 and 65535",
    "replicas": "replicas is a whole number from 1 to 64",
    "workers": "workers is a whole number from 1 to 1024 (our server runs at most one per CPU), "
    "or leave it out for one process",
    "batching": "see TF Serving's batching guide: allowed_batch_sizes increase and end at max_batch_size",
    "logging": "e.g. `logging: {sample: 0.01, path: ../logs, max_mb: 256}` (sample in [0, 1])",
    "monitoring": "e.g. `monitoring: {prometheus: true, path: /monitoring/prometheus/metrics, "
                  "prometheus_url: http://prometheus.monitoring:9090}`",
    "gpu": "e.g. `gpu: {count: all, memory_fraction: 0.5}` (fraction between 0 and 1)",
    "resources": "e.g. `resources: {cpus: 2, memory: 4g}`",
    "threads": "0 lets TensorFlow choose; otherwise a whole number of threads",
    "health": "e.g. `health: {deadline_s: 120}`",
    "pull": "use missing (pull when absent), always or never, as Docker Compose's pull_policy",
    "restart": "use no, always, unless-stopped or on-failure[:N]",
    "router_image": "an HAProxy image (official `haproxy:2.6` or one built the same way), e.g. haproxy:2.6",
    "model_uri": "use gs://BUCKET/PATH, pvc://CLAIM/PATH (a PersistentVolumeClaim) or "
    "image://REGISTRY/REPO:TAG (build one with `tfsctl package NAME --image REPO:TAG`)",
    "autoscale": "e.g. `autoscale: {min: 2, max: 10, target_cpu: 70}` (min ≤ max, target_cpu 1-100)",
    "router": "`router: true` (HAProxy, local/docker) or `router: {gateway: NAME}` (a Kubernetes "
    "Gateway API Gateway)",
    "kubernetes": "e.g. `kubernetes: {namespace: models, context: kind-dev}` (lowercase DNS names)",
}


def _fix_for(field: str, *, unknown: bool = False) -> str:
    if unknown:
        return "remove it or fix its spelling; the fields are listed in README.md (Spec reference)"
    return _FIXES.get(field.split(".")[0]) or (
        f"set {field} to a value of the type shown; see README.md (Spec reference)"
    )


class _LineIndex:
    """Maps a field path in the YAML document to its line number (1-based).

    Each node is walked once: an alias points at a node already seen, so a document of nested
    aliases costs what it is long, not what it would expand to.
    """

    def __init__(self, text: str, node: yaml.Node | None = None) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        if node is None:
            try:
                node = yaml.compose(text, Loader=yaml.SafeLoader)
            except (yaml.YAMLError, RecursionError):
                return
        if node is not None:
            self._walk(node)

    def _walk(self, root: yaml.Node) -> None:
        seen: set[int] = set()
        stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
        while stack:
            node, path = stack.pop()
            self._lines.setdefault(path, node.start_mark.line + 1)
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    sub = (*path, str(key.value))
                    self._lines[sub] = key.start_mark.line + 1
                    stack.append((value, sub))
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    stack.append((item, (*path, str(i))))

    def line(self, path: Sequence[Any]) -> int | None:
        keys = tuple(str(p) for p in path)
        while keys:
            if keys in self._lines:
                return self._lines[keys]
            keys = keys[:-1]
        return None


def parse_spec(text: str, *, file: Path, check_files: bool = True) -> Spec:
    """Validate spec text; `file` names the source in errors and anchors relative paths."""
    label = str(file)
    node = _compose(text, label)
    try:
        data = yaml.SafeLoader(text).construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:  # e.g. a tag no safe constructor knows (`=`, `!!python/...`)
        raise _not_yaml(exc, label, "quote the value, or remove the YAML tag on that line") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(
            "a spec is a mapping of fields, e.g. `base_path: ../models/NAME`",
            file=label,
            line=1,
            fix="start the file with `base_path:`",
        )
    lines = _LineIndex(text, node)
    stem = file.stem
    data.setdefault("name", stem)
    if "base_path" not in data and "model_uri" in data:
        data["base_path"] = f"../models/{data['name']}"  # where `tfsctl package` reads the versions
    if "base_path" not in data:
        raise SpecError(
            "base_path is required",
            file=label,
            field="base_path",
            line=1,
            fix=_FIXES["base_path"],
        )
    raw_base = data["base_path"]
    if isinstance(raw_base, str):
        try:
            base = Path(raw_base).expanduser()
        except RuntimeError:  # ~user that does not exist, or no home directory
            raise SpecError(
                f"cannot expand {raw_base.split('/')[0]!r} in {raw_base!r}: no such user or home "
                "directory",
                file=label,
                field="base_path",
                line=lines.line(["base_path"]),
                fix="write the path in full, or relative to the spec file",
            ) from None
        data["base_path"] = base if base.is_absolute() else (file.parent / base)
    raw_log = data.get("logging")
    if isinstance(raw_log, dict) and isinstance(raw_log.get("path", ""), str):
        log_path = Path(raw_log.get("path") or "prediction_logs").expanduser()
        data["logging"] = {
            **raw_log,
            "path": log_path if log_path.is_absolute() else (file.parent / log_path),
        }
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error_from(exc, label, lines) from None
    except RecursionError:
        raise _too_deep(label) from None
    if spec.name != stem and file.suffix in (".yaml", ".yml"):
        raise SpecError(
            f"name {spec.name!r} differs from the file name {file.name!r}",
            file=label,
            field="name",
            line=lines.line(["name"]),
            fix=f"rename the file to {spec.name}.yaml or drop the name field",
        )
    spec = spec.model_copy(update={"base_path": Path(_normalise(spec.base_path)), "source": file})
    if check_files:
        check_model_files(spec, lines=lines)
    return spec


def _too_deep(label: str) -> SpecError:
    return SpecError(
        "a value is nested too deep to read",
        file=label,
        fix="a spec needs a few levels of nesting at most; flatten or remove that value",
    )


def _flow_depth(text: str) -> int:
    """Deepest nesting of [ ] and { } outside quotes and comments (PyYAML slows down on deep
    flow collections long before it gives up, so they are refused before it reads them)."""
    depth = deepest = 0
    quote = ""
    comment = False
    previous = "\n"
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            if ch == quote and previous != "\\":
                quote = ""
        elif ch in "\"'" and (previous in " \t\n[{,:" ):
            quote = ch
        elif ch == "#" and previous in " \t\n":
            comment = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        previous = ch
    return deepest


def _not_yaml(exc: yaml.YAMLError, label: str, fix: str) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    return SpecError(
        f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
        file=label,
        line=mark.line + 1 if mark else None,
        fix=fix,
    )


def _compose(text: str, label: str) -> yaml.Node | None:
    """The YAML node graph, refused when it is nested too deep or its aliases expand too far."""
    if _flow_depth(text) > limits.SPEC_MAX_DEPTH:
        raise _too_deep(label)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _not_yaml(exc, label, "check indentation and quoting on that line") from exc
    except RecursionError:
        raise _too_deep(label) from None
    if node is not None:
        most = limits.current().max_yaml_alias_nodes
        if _expanded_size(node, most) > most:
            raise SpecError(
                f"YAML aliases expand to more than {most} values",
                file=label,
                fix="write the values out instead of repeating anchors (&name / *name); "
                "TFS_MAX_YAML_ALIAS_NODES raises the limit",
            )
    return node


def _expanded_size(root: yaml.Node, cap: int) -> int:
    """How many nodes the document has once every alias is expanded (stops counting past cap)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        sizes[id(node)] = min(cap + 1, 1 + sum(sizes.get(id(c), 0) for c in children))
    return sizes[id(root)]


def _normalise(path: Path) -> str:
    import os.path

    return os.path.abspath(path)


def _spec_error_from(exc: ValidationError, label: str, lines: _LineIndex) -> SpecError:
    problems = []
    first_field, first_line = None, None
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = ".".join(str(p) for p in loc) or "<root>"
        line = lines.line(loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {loc[-1]!r}"
            if len(loc) == 1:
                msg += f" (known: {', '.join(sorted(Spec.model_fields) )})".replace(", source", "")
        elif "input" in err and err["type"] not in ("missing",):
            msg += f" (got {err['input']!r})"
        problems.append((field, line, msg, err["type"] == "extra_forbidden"))
        if first_field is None:
            first_field, first_line = field, line
    if len(problems) == 1:
        field, line, msg, unknown = problems[0]
        return SpecError(msg, file=label, field=field, line=line, fix=_fix_for(field, unknown=unknown))
    detail = "; ".join(f"{f} (line {ln}): {m}" for f, ln, m, _ in problems)
    return SpecError(
        f"{len(problems)} problems: {detail}",
        file=label,
        field=first_field,
        line=first_line,
        fix=_fix_for(first_field or "", unknown=problems[0][3]),
    )


def check_model_files(spec: Spec, *, lines: _LineIndex | None = None) -> None:
    """Check what needs the disk: the base path, its versions, and labels against the policy."""
    from orchestrator.savedmodel import list_versions

    label = str(spec.source) if spec.source else "<spec>"

    def line(*path: str) -> int | None:
        return lines.line(list(path)) if lines else None

    base = spec.base_path
    if not base.is_dir():
        raise SpecError(
            f"base_path {str(base)!r} does not exist or is not a folder",
            file=label,
            field="base_path",
            line=line("base_path"),
            fix=_FIXES["base_path"] + (" (or run `make demo-model`)" if spec.name == "demo" else ""),
        )
    found = list_versions(base)
    if not found:
        raise SpecError(
            f"base_path {str(base)!r} has no numbered version folder (expected e.g. "
            f"{base}/1/saved_model.pb)",
            file=label,
            field="base_path",
            line=line("base_path"),
            fix="TF Serving loads <base_path>/<version>/; export one with "
            f"`tfsctl export SOURCE --name {spec.name}`",
        )
    policy = spec.version_policy
    if policy.kind == "specific":
        missing = sorted(set(policy.versions) - set(found))
        if missing:
            raise SpecError(
                f"version(s) {missing} have no folder under {base} (found {found})",
                file=label,
                field="version_policy.specific",
                line=line("version_policy"),
                fix="list only versions that exist, or export the missing ones",
            )
    wanted = policy.select(found)
    for name, version in spec.version_labels.items():
        if version not in wanted:
            why = "has no folder" if version not in found else "is not loaded by version_policy"
            raise SpecError(
                f"label {name!r} points at version {version}, which {why} "
                f"(policy loads {wanted}; on disk {found})",
                file=label,
                field=f"version_labels.{name}",
                line=line("version_labels", name),
                fix="TF Serving only labels AVAILABLE versions: point the label at one of "
                f"{wanted}, or widen version_policy (e.g. `{{specific: "
                f"{sorted(set(wanted) | {version})}}}`)",
            )


def spec_path(name_or_path: str, configs_dir: Path = DEFAULT_CONFIGS_DIR) -> Path:
    """Resolve NAME to serving_configs/NAME.yaml; a path to a .yaml file is taken as is."""
    if name_or_path.endswith((".yaml", ".yml")):
        return Path(name_or_path)
    if not NAME_PATTERN.fullmatch(name_or_path):
        raise SpecError(
            f"{name_or_path!r} is not a valid model name (letters, digits and _ only)",
            field="name",
            fix="pass a model name like `demo` or a path to a .yaml spec",
        )
    return configs_dir / f"{name_or_path}.yaml"


def load_spec(
    name_or_path: str, *, configs_dir: Path = DEFAULT_CONFIGS_DIR, check_files: bool = True
) -> Spec:
    """Read and validate one spec by model name or path."""
    path = spec_path(name_or_path, configs_dir)
    if not path.is_file():
        known = sorted(p.stem for p in configs_dir.glob("*.yaml")) if configs_dir.is_dir() else []
        raise SpecError(
            "no such spec file",
            file=str(path),
            fix=f"create {path} with at least `base_path: ...`"
            + (f"; known specs: {', '.join(known)}" if known else ""),
        )
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(
            f"{path.stat().st_size} bytes is too big for a spec (at most {MAX_SPEC_BYTES})",
            file=str(path),
            fix="a spec is a few lines of YAML; check that this is the right file",
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}",
            file=str(path),
            fix="save the spec as UTF-8 (YAML in an editor's default encoding usually is)",
        ) from None
    return parse_spec(text, file=path, check_files=check_files)


def pin_spec_file(spec_file: Path, version: int, labels: dict[str, int]) -> None:
    """Rewrite version_policy (and labels) in the spec file, keeping every other line as written."""
    from orchestrator.files import write_atomic

    text = spec_file.read_text(encoding="utf-8")
    lines = text.splitlines()
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    spans: dict[str, tuple[int, int]] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value in ("version_policy", "version_labels"):
                end = value.end_mark.line + (1 if value.end_mark.column else 0)
                spans[key.value] = (key.start_mark.line, max(end, key.start_mark.line + 1))
    policy_line = f"version_policy: {{specific: [{version}]}}"
    label_line = ("version_labels: {" + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) + "}") if labels else None
    replacements = {"version_policy": policy_line, "version_labels": label_line}
    for key in sorted(spans, key=lambda k: spans[k][0], reverse=True):
        start, end = spans[key]
        new = replacements[key]
        lines[start:end] = [new] if new else []
    for key, new in replacements.items():
        if key not in spans and new:
            lines.append(new)
    write_atomic(spec_file, "\n".join(lines) + "\n")
