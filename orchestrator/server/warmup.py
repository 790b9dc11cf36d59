"""Model warmup: replay `assets.extra/tf_serving_warmup_requests` at load time, like TF Serving.

The file is a TFRecord of PredictionLog protos (at most 1000 records); each predict, classify,
regress or multi-inference request in it is run `num_request_iterations_for_warmup` times before
the version becomes AVAILABLE. A failing warmup request fails the load, as upstream.
"""

from __future__ import annotations

import os

import numpy as np

from orchestrator.server import runner as r

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000


def _examples(inp) -> list[bytes]:  # type: ignore[no-untyped-def]
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in inp.example_list.examples]
    if kind == "example_list_with_context":
        ctx = inp.example_list_with_context.context.SerializeToString()
        return [ctx + e.SerializeToString() for e in inp.example_list_with_context.examples]
    return []


def _run_examples(servable: r.Servable, plan: r.ExamplePlan, examples: list[bytes]) -> None:
    arr = np.empty(len(examples), dtype=object)
    arr[:] = examples
    servable.run(r.RunKey((plan.input_name,), plan.output_names), [arr])


def warmup(servable: r.Servable, iterations: int = 1) -> int:
    """Replay the warmup file if there is one; returns the number of records replayed."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    try:
        for record in tf.compat.v1.io.tf_record_iterator(path):
            count += 1
            if count > MAX_RECORDS:
                raise r.LoadError(
                    "INVALID_ARGUMENT",
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
                )
            log = prediction_log_pb2.PredictionLog.FromString(record)
            kind = log.WhichOneof("log_type")
            for _ in range(iterations):
                if kind == "predict_log":
                    req = log.predict_log.request
                    inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
                    plan = r.plan_predict(
                        servable,
                        req.model_spec.signature_name,
                        list(inputs),
                        list(req.output_filter),
                    )
                    servable.run(plan.key, [inputs[a] for a in plan.input_aliases])
                elif kind == "classify_log":
                    req = log.classify_log.request
                    _run_examples(
                        servable,
                        r.plan_classify(servable, req.model_spec.signature_name),
                        _examples(req.input),
                    )
                elif kind == "regress_log":
                    req = log.regress_log.request
                    _run_examples(
                        servable,
                        r.plan_regress(servable, req.model_spec.signature_name),
                        _examples(req.input),
                    )
                elif kind == "multi_inference_log":
                    req = log.multi_inference_log.request
                    for task in req.tasks:
                        eplan = (
                            r.plan_classify
                            if task.method_name == r.CLASSIFY_METHOD
                            else r.plan_regress
                        )(servable, task.model_spec.signature_name)
                        _run_examples(servable, eplan, _examples(req.input))
                else:
                    raise r.LoadError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
    except r.LoadError:
        servable.close()
        raise
    except Exception as e:
        servable.close()
        raise r.LoadError("INVALID_ARGUMENT", f"Warmup failed for {servable.path}: {e}") from None
    return count
