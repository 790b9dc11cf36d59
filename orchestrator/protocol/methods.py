"""TF Serving's gRPC methods in one table: the client calls them, our server registers them.

No generated service stubs: `channel.unary_unary(method.path, ...)` with our messages, which
have TF Serving's field numbers, is all the wire needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.protos import apis_pb2

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request: Any  # message class
    response: Any  # message class

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


CLASSIFY = Method(
    PREDICTION_SERVICE, "Classify", apis_pb2.ClassificationRequest, apis_pb2.ClassificationResponse
)
REGRESS = Method(
    PREDICTION_SERVICE, "Regress", apis_pb2.RegressionRequest, apis_pb2.RegressionResponse
)
PREDICT = Method(PREDICTION_SERVICE, "Predict", apis_pb2.PredictRequest, apis_pb2.PredictResponse)
MULTI_INFERENCE = Method(
    PREDICTION_SERVICE,
    "MultiInference",
    apis_pb2.MultiInferenceRequest,
    apis_pb2.MultiInferenceResponse,
)
GET_MODEL_METADATA = Method(
    PREDICTION_SERVICE,
    "GetModelMetadata",
    apis_pb2.GetModelMetadataRequest,
    apis_pb2.GetModelMetadataResponse,
)
GET_MODEL_STATUS = Method(
    MODEL_SERVICE, "GetModelStatus", apis_pb2.GetModelStatusRequest, apis_pb2.GetModelStatusResponse
)
HANDLE_RELOAD_CONFIG = Method(
    MODEL_SERVICE,
    "HandleReloadConfigRequest",
    apis_pb2.ReloadConfigRequest,
    apis_pb2.ReloadConfigResponse,
)

METHODS: tuple[Method, ...] = (
    CLASSIFY,
    REGRESS,
    PREDICT,
    MULTI_INFERENCE,
    GET_MODEL_METADATA,
    GET_MODEL_STATUS,
    HANDLE_RELOAD_CONFIG,
)

# Any.type_url of GetModelMetadataResponse.metadata["signature_def"]: the UPSTREAM full name,
# which our SignatureDefMap (orchestrator.tfs.SignatureDefMap) does not share.
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

# MultiInference / InferenceTask.method_name values.
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
REGRESS_METHOD_NAME = "tensorflow/serving/regress"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
