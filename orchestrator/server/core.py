"""The request core both front ends share: find the servable, check the request, run, post-process.

REST (`rest.py`) and gRPC (`grpc_service.py`) only translate their wire format to the calls here
and the results back, so both answer the same way to the same request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.server import runner as r
from orchestrator.server.manager import Manager
from orchestrator.server.metrics import CURRENT_CALL, Metrics
from orchestrator.server.status import ServingStatus, invalid

_DT_NAMES = {
    1: "float",
    2: "double",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    9: "int64",
    10: "bool",
    14: "bfloat16",
    17: "uint16",
    19: "half",
    22: "uint32",
    23: "uint64",
}


_ENUM_OF_DTYPE: dict[np.dtype, int] = {}
_PLAN_CACHE_MAX = 64  # successful predict plans kept per servable


def _dtype_enum(a: np.ndarray) -> int:
    enum = _ENUM_OF_DTYPE.get(a.dtype)
    if enum is not None:
        return enum
    from orchestrator.protocol.tensors import numpy_dtype_to_enum

    if a.dtype == object or a.dtype.kind in "SU":
        enum = 7
    else:
        try:
            enum = numpy_dtype_to_enum(a.dtype)
        except (ValueError, KeyError, TypeError):
            enum = 0
    _ENUM_OF_DTYPE[a.dtype] = enum
    return enum


@dataclass
class PredictResult:
    servable: r.Servable
    signature_name: str
    outputs: dict[str, np.ndarray]


class Core:
    def __init__(self, manager: Manager, runner: Any, metrics: Metrics) -> None:
        self.manager = manager
        self.runner = runner
        self.metrics = metrics
        from orchestrator.server.payload_log import PayloadLogs

        self.payload = PayloadLogs()

    def servable(self, name: str, version: int | None, label: str | None) -> r.Servable:
        if not name:
            raise invalid("Missing model name in request.")
        servable = self.manager.resolve(name, version, label)
        call = CURRENT_CALL.get()
        if call is not None:
            call.version = str(servable.version)
        return servable

    @staticmethod
    def _note_signature(name: str) -> None:
        call = CURRENT_CALL.get()
        if call is not None:
            call.signature = name

    async def _run(self, servable: r.Servable, key: r.RunKey, arrays: list[np.ndarray], api: str):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        outs = await self.runner.run(servable, key, arrays)
        self.metrics.record_runtime(servable.name, api, (time.perf_counter() - t0) * 1e6)
        return outs

    # -- predict --------------------------------------------------------------------------------
    def predict_inputs(self, servable: r.Servable, signature_name: str) -> dict[str, int]:
        cache = servable.plan_cache
        info = cache.get(signature_name)
        if info is None:
            info = r.signature_input_info(servable, signature_name)
            if len(cache) < _PLAN_CACHE_MAX:
                cache[signature_name] = info
        self._note_signature(signature_name or r.DEFAULT_SIGNATURE)  # a signature that exists
        return info

    def predict_plan(
        self,
        servable: r.Servable,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | None = None,
    ) -> tuple[r.PredictPlan, list[np.ndarray]]:
        """The (cached) plan of a predict and its input arrays in feed order, dtypes checked."""
        cache = servable.plan_cache
        ck = (signature_name, tuple(inputs), tuple(output_filter) if output_filter else ())
        plan = cache.get(ck)
        if plan is None:
            plan = r.plan_predict(servable, signature_name, list(inputs), output_filter or [])
            if len(cache) < _PLAN_CACHE_MAX:
                cache[ck] = plan
        self._note_signature(plan.signature_name)
        arrays = []
        for i, (alias, want) in enumerate(zip(plan.input_aliases, plan.input_dtypes, strict=False)):
            a = inputs[alias]
            got = _dtype_enum(a)
            if got != want:
                raise invalid(
                    f"Expects arg[{i}] to be {_DT_NAMES.get(want, want)} but "
                    f"{_DT_NAMES.get(got, a.dtype.name)} is provided"
                )
            arrays.append(a)
        return plan, arrays

    async def predict(
        self,
        servable: r.Servable,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | None = None,
        request: Any = None,
    ) -> PredictResult:
        """request: the PredictRequest as received (gRPC), for the payload log to keep as it
        is; without it the log encodes `inputs`."""
        plan, arrays = self.predict_plan(servable, signature_name, inputs, output_filter)
        outs = await self._run(servable, plan.key, arrays, "Predict")
        result = PredictResult(
            servable, plan.signature_name, dict(zip(plan.output_aliases, outs, strict=False))
        )
        payload = self.payload.by_model.get(servable.name)
        if payload is not None:
            payload.maybe(
                servable.version,
                plan.signature_name,
                inputs if request is None else request,
                result.outputs,
            )
        return result

    # -- classify / regress ---------------------------------------------------------------------
    async def _examples_run(
        self, servable: r.Servable, plan: r.ExamplePlan, examples: list[bytes], api: str
    ):  # type: ignore[no-untyped-def]
        self._note_signature(plan.signature_name)
        if not examples:
            raise invalid("Input is empty.")
        self.metrics.record_examples(servable.name, len(examples))
        arr = np.empty(len(examples), dtype=object)
        arr[:] = examples
        key = r.RunKey((plan.input_name,), plan.output_names)
        outs = await self._run(servable, key, [arr], api)
        return dict(zip(plan.output_names, outs, strict=False))

    async def classify(
        self, servable: r.Servable, signature_name: str, examples: list[bytes]
    ) -> tuple[str, list[list[tuple[Any, float]]]]:
        plan = r.plan_classify(servable, signature_name)
        outs = await self._examples_run(servable, plan, examples, "Classify")
        result = r.classify_result(plan, len(examples), outs)
        payload = self.payload.by_model.get(servable.name)
        if payload is not None:
            payload.maybe_examples("classify", servable.version, plan.signature_name, examples, result)
        return plan.signature_name, result

    async def regress(
        self, servable: r.Servable, signature_name: str, examples: list[bytes]
    ) -> tuple[str, np.ndarray]:
        plan = r.plan_regress(servable, signature_name)
        outs = await self._examples_run(servable, plan, examples, "Regress")
        result = r.regress_result(plan, len(examples), outs)
        payload = self.payload.by_model.get(servable.name)
        if payload is not None:
            payload.maybe_examples("regress", servable.version, plan.signature_name, examples, result)
        return plan.signature_name, result

    async def multi_inference(
        self, servable: r.Servable, tasks: list[tuple[str, str]], examples: list[bytes]
    ) -> list[tuple[str, str, Any]]:
        """tasks: (signature_name, method_name) -> [(signature_name, method, result)]."""
        seen: set[str] = set()
        plans: list[r.ExamplePlan] = []
        for sig_name, method in tasks:
            name = sig_name or r.DEFAULT_SIGNATURE
            if name in seen:
                raise invalid(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            if method == r.CLASSIFY_METHOD:
                plans.append(r.plan_classify(servable, sig_name, multi=True))
            elif method == r.REGRESS_METHOD:
                plans.append(r.plan_regress(servable, sig_name, multi=True))
            else:
                raise ServingStatus("UNIMPLEMENTED", f"Unsupported signature method_name: {method}")
        # Since TF Serving 2.4 the examples go to every task's own input tensor, so signatures
        # that tf.saved_model.save wrote (one input placeholder each) work together.
        feeds = tuple(sorted({p.input_name for p in plans}))
        fetches = tuple(sorted({n for p in plans for n in p.output_names}))
        self._note_signature(",".join(sorted(p.signature_name for p in plans)))
        if not examples:
            raise invalid("Input is empty.")
        self.metrics.record_examples(servable.name, len(examples))
        arr = np.empty(len(examples), dtype=object)
        arr[:] = examples
        outs = await self._run(
            servable, r.RunKey(feeds, fetches), [arr] * len(feeds), "MultiInference"
        )
        by_name = dict(zip(fetches, outs, strict=False))
        results: list[tuple[str, str, Any]] = []
        for (sig_name, method), plan in zip(tasks, plans, strict=False):
            if method == r.CLASSIFY_METHOD:
                results.append((sig_name, method, r.classify_result(plan, len(examples), by_name)))
            else:
                results.append((sig_name, method, r.regress_result(plan, len(examples), by_name)))
        payload = self.payload.by_model.get(servable.name)
        if payload is not None:
            signatures = ",".join(p.signature_name for p in plans)
            logged = [(p.signature_name, m, res) for p, (_, m, res) in zip(plans, results, strict=False)]
            payload.maybe_examples("multi", servable.version, signatures, examples, logged)
        return results
