"""`model.tflite` versions served with LiteRT (--prefer_tflite_model), as TF Serving's TfLiteSession.

With --prefer_tflite_model, a version folder holding `model.tflite` is served from it instead of
its SavedModel (a folder may hold only the .tflite). Its signatures, in TF Serving's order:
1. the SignatureDefs stored in the model's `signature_defs_metadata` (what
   tensorflow/lite/tools/signature's set_signature_defs writes; TF Serving's test models use it);
2. else the converter's own signatures (`Interpreter.get_signature_list()`), as predict
   signatures with the same keys;
3. else one `serving_default` predict signature over the model's input and output tensors,
   keyed by tensor name.
TensorInfo names are tensor names ("x:0" matches tensor "x"). Predict runs a free interpreter from
a pool of --num_tflite_pools x --num_tflite_interpreters_per_pool (each interpreter serves one
request at a time); an input whose shape differs from the tensor's is resized first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.server import runner as r
from orchestrator.server.status import invalid

log = logging.getLogger("tfs.tflite")
MODEL_FILE = "model.tflite"
MAX_INTERPRETERS = 64


@dataclass(frozen=True)
class TfLiteOptions:
    num_pools: int = 1
    interpreters_per_pool: int = 1


def has_tflite(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_FILE))


def _tensor_key(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def _stored_signature_defs(data: bytes) -> dict[str, bytes]:
    """The `signature_defs_metadata` entry: a flexbuffer map of key -> serialized SignatureDef."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() != b"signature_defs_metadata":
            continue
        buf = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        root = flexbuffers.GetRoot(buf).AsMap
        return {
            k.AsKey: (v.AsBlob if v.IsBlob else v.AsStringBytes)
            for k, v in zip(root.Keys, root.Values, strict=False)
        }
    return {}


class TfLiteServable(r.Servable):
    """A version served from model.tflite; the same surface as a SavedModel Servable."""

    def __init__(self, name: str, version: int, path: str, options: TfLiteOptions) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.inflight = 0
        self.batch_queues: dict[r.RunKey, Any] = {}
        self.batching_options: Any = None
        self.batching_off = True  # interpreters take whole requests, as TfLiteSession's pools do
        self.run_seconds: dict[r.RunKey, float] = {}
        self.plan_cache: dict[Any, Any] = {}
        self.inline_run = False
        self._callables: dict[r.RunKey, Any] = {}
        self._lock = threading.Lock()
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise r.LoadError(
                "FAILED_PRECONDITION",
                f"{path}/{MODEL_FILE}: serving TFLite models needs LiteRT: "
                "pip install 'tfserving-orchestrator[convert]' (ai-edge-litert)",
            ) from None
        try:
            with open(os.path.join(path, MODEL_FILE), "rb") as fh:
                data = fh.read()
            count = max(1, min(MAX_INTERPRETERS, options.num_pools * options.interpreters_per_pool))
            self._pool: queue.SimpleQueue = queue.SimpleQueue()
            first: Any = None
            for _ in range(count):
                interpreter = Interpreter(model_content=data)
                interpreter.allocate_tensors()
                first = first or interpreter
                self._pool.put(interpreter)
            self.signatures = self._signatures(first, data)
        except (OSError, ValueError, RuntimeError) as e:
            raise r.LoadError("INVALID_ARGUMENT", f"{path}/{MODEL_FILE}: {e}") from None
        self._index: dict[str, int] = {}
        for d in (*first.get_input_details(), *first.get_output_details()):
            self._index.setdefault(_tensor_key(d["name"]), d["index"])
        self._inputs = {d["index"]: d for d in first.get_input_details()}
        log.info(
            "Serving %s version %d from %s with LiteRT (%d interpreters)",
            name, version, MODEL_FILE, count,
        )

    def _signatures(self, interpreter: Any, data: bytes) -> dict[str, Any]:
        from tensorflow.core.protobuf import meta_graph_pb2

        stored = _stored_signature_defs(data)
        if stored:
            return {k: meta_graph_pb2.SignatureDef.FromString(v) for k, v in stored.items()}
        sigs: dict[str, Any] = {}
        listed = interpreter.get_signature_list()
        if listed:
            for key in listed:
                runner = interpreter.get_signature_runner(key)
                sigs[key] = self._signature(
                    runner.get_input_details(), runner.get_output_details()
                )
            return sigs
        ins = {_tensor_key(d["name"]): d for d in interpreter.get_input_details()}
        outs = {_tensor_key(d["name"]): d for d in interpreter.get_output_details()}
        return {r.DEFAULT_SIGNATURE: self._signature(ins, outs)}

    @staticmethod
    def _signature(inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
        from tensorflow.core.protobuf import meta_graph_pb2

        from orchestrator.protocol.tensors import numpy_dtype_to_enum

        sig = meta_graph_pb2.SignatureDef(method_name=r.PREDICT_METHOD)
        for target, details in ((sig.inputs, inputs), (sig.outputs, outputs)):
            for alias, d in details.items():
                info = target[alias]
                info.name = d["name"]
                info.dtype = numpy_dtype_to_enum(d["dtype"])
                for size in d.get("shape_signature", d["shape"]):
                    info.tensor_shape.dim.add(size=int(size))
        return sig

    def run(self, key: r.RunKey, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            feeds = [self._index[_tensor_key(n)] for n in key.feeds]
            fetches = [self._index[_tensor_key(n)] for n in key.fetches]
        except KeyError as e:
            raise invalid(f"Tensor {e.args[0]} not found in the TFLite model") from None
        interpreter = self._pool.get()
        try:
            resized = False
            for index, arr in zip(feeds, arrays, strict=False):
                if tuple(self._inputs[index]["shape"]) != arr.shape:
                    interpreter.resize_tensor_input(index, list(arr.shape), strict=False)
                    resized = True
            if resized:
                interpreter.allocate_tensors()
            for index, arr in zip(feeds, arrays, strict=False):
                interpreter.set_tensor(index, arr)
            interpreter.invoke()
            outs = [np.array(interpreter.get_tensor(i)) for i in fetches]
            if resized:  # back to the model's shapes for the next request
                for index in feeds:
                    interpreter.resize_tensor_input(
                        index, list(self._inputs[index]["shape"]), strict=False
                    )
                interpreter.allocate_tensors()
            return outs
        except (ValueError, RuntimeError) as e:
            raise invalid(str(e)) from None
        finally:
            self._pool.put(interpreter)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                self._pool.get_nowait()
        self.plan_cache.clear()


__all__ = ["MODEL_FILE", "TfLiteOptions", "TfLiteServable", "has_tflite"]
