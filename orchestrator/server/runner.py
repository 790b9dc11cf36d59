"""One loaded model version: a TF1 Graph + Session, its signatures, and the runs on it.

We run models the way TF Serving does: `tf.compat.v1.saved_model.loader.load` into a session
(TF1 graphs and TF2/Keras exports alike), feeding and fetching the SignatureDef's tensor names.
The session does not check a placeholder's declared shape, so `[1.0, 2.0, 5.0]` into half_plus_two's
`[-1, 1]` input works as it does upstream. Every call here blocks: callers run them in a thread pool.

The request logic (signature lookup, input/output checks, classify/regress post-processing) follows
TF Serving's predict_util.cc, classifier.cc and regressor.cc, messages included.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.server.status import ServingStatus, from_tf_error, invalid

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# --enable_signature_method_name_check (set once at start-up, like upstream's global feature flag)
METHOD_NAME_CHECK = False


@dataclass(frozen=True)
class SessionOptions:
    tags: tuple[str, ...] = ("serve",)
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    gpu_memory_fraction: float = 0.0
    # --tensorflow_session_config_file, serialized ConfigProto; the flags above override it
    session_config: bytes = b""
    mixed_precision: str = ""  # --mixed_precision: "bfloat16" turns on oneDNN auto mixed precision


class LoadError(Exception):
    """A version folder could not be loaded; `transient` errors are worth a retry."""

    def __init__(self, code: str, message: str, *, transient: bool = False) -> None:
        self.code = code
        self.message = message
        self.transient = transient
        super().__init__(message)


@dataclass(frozen=True)
class RunKey:
    """What one session call feeds and fetches (tensor names); a callable is cached per key."""

    feeds: tuple[str, ...]
    fetches: tuple[str, ...]


class Servable:
    """A loaded SavedModel version. Thread-safe: sessions accept concurrent runs."""

    def __init__(self, name: str, version: int, path: str, options: SessionOptions) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._callables: dict[RunKey, Any] = {}
        self.inflight = 0  # runs in progress (the manager waits for 0 before closing)
        self.batch_queues: dict[RunKey, Any] = {}  # owned by batching.BatchingRunner
        # --enable_per_model_batching_parameters: this version's own parameters, or no batching
        self.batching_options: Any = None
        self.batching_off = False
        self.run_seconds: dict[RunKey, float] = {}  # typical run time per key (DirectRunner)
        # core.Core's successful lookups: signature name -> input info, (signature, inputs,
        # output filter) -> PredictPlan. Signatures never change while a version is loaded.
        self.plan_cache: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self._tf, self.graph, self.session, meta = _load(path, options)
        self.signatures: dict[str, Any] = dict(meta.signature_def)
        self.inline_run = _is_simple_graph(self.graph)
        self._meta_graph = meta

    # -- running ------------------------------------------------------------------------------
    def run(self, key: RunKey, arrays: list[np.ndarray]) -> list[np.ndarray]:
        fn = self._callables.get(key)
        if fn is None:
            fn = self._make_callable(key)
        try:
            return list(fn(*arrays))
        except self._tf.errors.OpError as e:
            raise from_tf_error(e) from None
        except (ValueError, TypeError) as e:
            raise invalid(str(e)) from None

    def _make_callable(self, key: RunKey) -> Any:
        with self._lock:
            fn = self._callables.get(key)
            if fn is None:
                # A raw CallableOptions callable: no Python-side check of declared shapes,
                # exactly like TF Serving's Session::Run.
                from tensorflow.core.protobuf import config_pb2 as tf_config_pb2

                opts = tf_config_pb2.CallableOptions()
                opts.feed.extend(key.feeds)
                opts.fetch.extend(key.fetches)
                if self.inline_run:
                    # Run the graph's ops in the calling thread (our run pool), not in a hand-off
                    # to TF's inter-op pool: less latency and CPU for the small graphs served here.
                    opts.run_options.inter_op_thread_pool = -1
                try:
                    for name in (*key.feeds, *key.fetches):
                        self.graph.as_graph_element(name)
                    fn = self.session._make_callable_from_options(opts)
                except (KeyError, ValueError, TypeError) as e:
                    raise invalid(str(e)) from None
                except self._tf.errors.OpError as e:  # e.g. fetching __saved_model_init_op's NoOp
                    raise from_tf_error(e) from None
                self._callables[key] = fn
            return fn

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken session
            self.session.close()
        self._callables.clear()
        self.plan_cache.clear()

    # -- metadata -------------------------------------------------------------------------------
    def signature_def_map_dict(self) -> dict[str, Any]:
        """The SignatureDefMap as TF Serving prints it in REST metadata."""
        from google.protobuf import json_format

        return {
            name: json_format.MessageToDict(
                sig,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
            for name, sig in self.signatures.items()
        }

    def signature_def_map_bytes(self) -> bytes:
        """Serialized tensorflow.serving.SignatureDefMap (for GetModelMetadata's Any)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        m = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in self.signatures.items():
            m.signature_def[name].CopyFrom(sig)
        return m.SerializeToString()


_BLOCKING_OPS = (
    "Queue",
    "Barrier",
    "Enter",
    "Exit",
    "While",
    "Recv",
    "Send",
    "Dataset",
    "Iterator",
)


def _is_simple_graph(graph: Any) -> bool:
    """Small graphs without control flow or blocking ops run inline in the calling thread.

    TF's RunOptions.inter_op_thread_pool = -1 saves a thread hand-off per run (a quarter of the CPU
    of a one-row request on a small model) but is only safe for simple graphs.
    TFS_INLINE_RUN=0 turns it off.
    """
    if os.environ.get("TFS_INLINE_RUN", "1") != "1":
        return False
    ops = graph.get_operations()
    if len(ops) > 2000:
        return False
    return not any(any(b in op.type for b in _BLOCKING_OPS) for op in ops)


def _load(path: str, options: SessionOptions) -> tuple[Any, Any, Any, Any]:
    if not os.path.isdir(path):
        raise LoadError("NOT_FOUND", f"Could not find version folder {path}")
    if not any(
        os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")
    ):
        raise LoadError(
            "NOT_FOUND",
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
        )
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    if options.session_config:
        config.ParseFromString(options.session_config)
    else:
        config.allow_soft_placement = True
    # As server.cc: the thread flags and the GPU fraction always override the file.
    config.intra_op_parallelism_threads = options.intra_op_threads
    config.inter_op_parallelism_threads = options.inter_op_threads
    config.gpu_options.per_process_gpu_memory_fraction = options.gpu_memory_fraction
    if options.mixed_precision == "bfloat16":
        from tensorflow.core.protobuf import rewriter_config_pb2

        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
            rewriter_config_pb2.RewriterConfig.ON
        )
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(session, list(options.tags), path)
    except tf.errors.OpError as e:
        session.close()
        st = from_tf_error(e)
        transient = st.code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED")
        raise LoadError(st.code, st.message, transient=transient) from None
    except RuntimeError as e:  # e.g. "MetaGraphDef associated with tags ... could not be found"
        session.close()
        raise LoadError("NOT_FOUND", str(e)) from None
    except OSError as e:
        session.close()
        # Storage hiccups are worth a retry; a file that does not parse is not.
        transient = e.errno in (errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE)
        code = "UNAVAILABLE" if transient else "DATA_LOSS"
        raise LoadError(code, str(e), transient=transient) from None
    except Exception as e:  # corrupt protos (DecodeError) and the like
        session.close()
        raise LoadError("DATA_LOSS", f"Failed to load SavedModel at {path}: {e}") from None
    graph.finalize()
    return tf, graph, session, meta


# -- predict -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PredictPlan:
    signature_name: str
    key: RunKey
    input_aliases: tuple[str, ...]  # in feed order
    input_dtypes: tuple[int, ...]  # DataType enum per feed
    output_aliases: tuple[str, ...]  # in fetch order


def get_signature(servable: Servable, signature_name: str) -> tuple[str, Any]:
    name = signature_name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(name)
    if sig is None:
        raise ServingStatus("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
    if METHOD_NAME_CHECK and sig.method_name not in (
        PREDICT_METHOD,
        CLASSIFY_METHOD,
        REGRESS_METHOD,
    ):
        raise ServingStatus(
            "INTERNAL",
            f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
            f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {sig.method_name}",
        )
    return name, sig


def plan_predict(
    servable: Servable, signature_name: str, input_names: list[str], output_filter: list[str]
) -> PredictPlan:
    name, sig = get_signature(servable, signature_name)
    sig_inputs = sig.inputs
    request = set(input_names)
    expected = set(sig_inputs.keys())
    if request != expected:
        extra = sorted(request - expected)
        missing = sorted(expected - request)
        raise invalid(
            f"input size does not match signature: {len(request)}!={len(expected)} "
            f"len({{{','.join(sorted(request))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )
    aliases = tuple(sorted(request))
    feeds = tuple(sig_inputs[a].name for a in aliases)
    dtypes = tuple(sig_inputs[a].dtype for a in aliases)
    outputs = sig.outputs
    if output_filter:
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in outputs:
                raise invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(outputs.keys()))}}}."
                )
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        out_aliases = tuple(output_filter)
    else:
        out_aliases = tuple(sorted(outputs.keys()))
    fetches = tuple(outputs[a].name for a in out_aliases)
    return PredictPlan(name, RunKey(feeds, fetches), aliases, dtypes, out_aliases)


def signature_input_info(servable: Servable, signature_name: str) -> dict[str, int]:
    """alias -> DataType enum of a predict signature's inputs (REST needs them to parse JSON)."""
    _, sig = get_signature(servable, signature_name)
    return {alias: info.dtype for alias, info in sig.inputs.items()}


# -- classify / regress ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ExamplePlan:
    signature_name: str
    method: str  # CLASSIFY_METHOD | REGRESS_METHOD
    input_name: str
    output_names: tuple[str, ...]
    classes_name: str = ""
    scores_name: str = ""
    outputs_name: str = ""


def _lookup(servable: Servable, signature_name: str) -> tuple[str, Any]:
    name = signature_name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(name)
    if sig is None:
        raise invalid(f"No signature was found with the name: {name}")
    return name, sig


def plan_classify(servable: Servable, signature_name: str, *, multi: bool = False) -> ExamplePlan:
    name, sig = (_lookup if not multi else _lookup_multi)(servable, signature_name)
    if METHOD_NAME_CHECK and sig.method_name != CLASSIFY_METHOD:
        raise invalid(
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {sig.method_name}"
        )
    if len(sig.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if len(sig.outputs) not in (1, 2):
        raise invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if "inputs" not in sig.inputs:
        raise invalid(f"No classification inputs found in SignatureDef: {sig}")
    classes = sig.outputs["classes"].name if "classes" in sig.outputs else ""
    scores = sig.outputs["scores"].name if "scores" in sig.outputs else ""
    if not classes and not scores:
        raise invalid(
            'Expected classification signature outputs to contain at least one of "classes" or '
            f'"scores". Signature was: {sig}'
        )
    outs = tuple(n for n in (classes, scores) if n)
    return ExamplePlan(name, CLASSIFY_METHOD, sig.inputs["inputs"].name, outs, classes, scores)


def plan_regress(servable: Servable, signature_name: str, *, multi: bool = False) -> ExamplePlan:
    name, sig = (_lookup if not multi else _lookup_multi)(servable, signature_name)
    if METHOD_NAME_CHECK and sig.method_name != REGRESS_METHOD:
        raise invalid(
            f"Expected regression signature method_name to be {REGRESS_METHOD}. "
            f"Was: {sig.method_name}"
        )
    if len(sig.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if len(sig.outputs) != 1:
        raise invalid("Expected one output Tensor.")
    if "inputs" not in sig.inputs:
        raise invalid(f"No regression inputs found in SignatureDef: {sig}")
    if "outputs" not in sig.outputs:
        raise invalid(f"No regression outputs found in SignatureDef: {sig}")
    out = sig.outputs["outputs"].name
    return ExamplePlan(name, REGRESS_METHOD, sig.inputs["inputs"].name, (out,), outputs_name=out)


def _lookup_multi(servable: Servable, signature_name: str) -> tuple[str, Any]:
    name = signature_name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(name)
    if sig is None:
        raise invalid(f"Requested signature not found in model graph: {name}")
    return name, sig


def _shape(a: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in a.shape) + "]"


def _dtype_name(a: np.ndarray) -> str:
    if a.dtype == object:
        return "DT_STRING"
    return "DT_" + {"float32": "FLOAT", "float64": "DOUBLE"}.get(a.dtype.name, a.dtype.name.upper())


def classify_result(
    plan: ExamplePlan, num_examples: int, outputs: dict[str, np.ndarray]
) -> list[list[tuple[str | bytes, float]]]:
    """Per example, a list of (label, score); label is b"" when the model has no classes output."""
    classes = outputs.get(plan.classes_name) if plan.classes_name else None
    scores = outputs.get(plan.scores_name) if plan.scores_name else None
    for what, t in (("classes", classes), ("scores", scores)):
        if t is None:
            continue
        if t.ndim != 2:
            raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(t)}")
        if what == "classes" and t.dtype != object:
            raise invalid(f"Expected classes Tensor of DT_STRING. Got: {_dtype_name(t)}")
        if what == "scores" and t.dtype != np.float32:
            raise invalid(f"Expected scores Tensor of DT_FLOAT. Got: {_dtype_name(t)}")
        if t.shape[0] != num_examples:
            raise invalid(f"Expected {what} output batch size of {num_examples}. Got: {t.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    n_classes = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    result = []
    for i in range(num_examples):
        row = []
        for j in range(n_classes):
            label = classes[i, j] if classes is not None else b""
            score = float(scores[i, j]) if scores is not None else 0.0
            row.append((label, score))
        result.append(row)
    return result


def regress_result(
    plan: ExamplePlan, num_examples: int, outputs: dict[str, np.ndarray]
) -> np.ndarray:
    t = outputs[plan.outputs_name]
    if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
        raise invalid(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape(t)}"
        )
    if t.shape[0] != num_examples:
        raise invalid(
            f"Input batch size did not match output batch size: {num_examples} vs. {t.shape[0]}"
        )
    if t.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(t)}")
    return t.reshape(-1)
