"""The capture agent's decoder: what HAProxy hands over (bodies, path, version) -> log records.

A real SavedModel (TF1 half_plus_two) gives the signatures; the bodies are the ones TF Serving's
REST API and gRPC framing carry. The records these items become are written by the local
server's own writer (server.payload_log), tested with it.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.protocol.tensors import to_tensor_proto
from orchestrator.protos import apis_pb2
from orchestrator.router.capture_agent import (
    Decoder,
    ModelSettings,
    Settings,
    Skip,
    _dense_map,
    grpc_message,
)
from tests.helpers.models import half_plus_two_tf1


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    root = tmp_path_factory.mktemp("decoder")
    for version in (1, 2):
        half_plus_two_tf1(root / "hpt" / str(version))
    half_plus_two_tf1(root / "other" / "3")
    (root / "models.config").write_text(
        'model_config_list { config { name: "hpt" base_path: "/models/hpt" model_platform: "tensorflow" '
        'model_version_policy { specific { versions: 1 versions: 2 } } '
        'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } } }\n')
    models = {name: ModelSettings(name=name, sample=1.0, prefix=str(root / "logs" / name),
                                  max_bytes=1 << 20, base_path=str(root / name))
              for name in ("hpt", "other")}
    return Decoder(Settings(deployment="hpt", main="hpt", spoa_port=1, metrics_port=2,
                            admin_socket="/nonexistent", models_config=str(root / "models.config"),
                            grpc_rate=1.0, models=models))


def _rest(path: str, req: object, res: object, **extra: object) -> dict[str, object]:
    return {"model": "hpt", "path": path, "rid": "r1", "version": "2",
            "req": json.dumps(req).encode(), "res": json.dumps(res).encode(), **extra}


def test_row_predict_uses_the_signature_dtypes_and_the_answering_servers_version(decoder: Decoder) -> None:
    model, item = decoder.decode(_rest("/v1/models/hpt:predict", {"instances": [[1.0], [2.0]]},
                                       {"predictions": [[2.5], [3.0]]}), 123.0)
    version, signature, inputs, outputs, rid, ts = item
    assert (model, version, signature, rid, ts) == ("hpt", 2, "serving_default", "r1", 123.0)
    assert inputs["x"].dtype == np.float32 and inputs["x"].tolist() == [[1.0], [2.0]]
    assert outputs["y"].dtype == np.float32 and outputs["y"].tolist() == [[2.5], [3.0]]


def test_versions_from_path_label_and_disk(decoder: Decoder) -> None:
    body, answer = {"inputs": {"x": [[1.0]]}}, {"outputs": [[2.5]]}
    assert decoder.decode(_rest("/v1/models/hpt/versions/1:predict", body, answer), 0)[1][0] == 1
    assert decoder.decode(_rest("/v1/models/hpt/labels/canary:predict", body, answer), 0)[1][0] == 2
    assert decoder.decode(_rest("/V1/Models/hpt/LABELS/stable:PREDICT", body, answer), 0)[1][0] == 1
    # Not the deployment's main model: the newest version on disk (what TF Serving serves).
    other = _rest("/v1/models/other:predict", body, answer, model="other", version="0")
    model, item = decoder.decode(other, 0)
    assert (model, item[0]) == ("other", 3)
    with pytest.raises(Skip) as info:
        decoder.decode(_rest("/v1/models/hpt/labels/nope:predict", body, answer), 0)
    assert info.value.reason == "unknown_version"


def test_regress_and_classify_keep_the_examples(decoder: Decoder) -> None:
    _, item = decoder.decode(_rest("/v1/models/hpt:regress",
                                   {"signature_name": "regress_x_to_y", "examples": [{"x": 3.0}]},
                                   {"results": [3.5]}), 0)
    kind, version, signature, examples, result, rid, _ = item
    assert (kind, version, signature, result, rid) == ("regress", 2, "regress_x_to_y", [3.5], "r1")
    from tensorflow.core.example import example_pb2

    assert list(example_pb2.Example.FromString(examples[0]).features.feature["x"].float_list.value) == [3.0]
    _, item = decoder.decode(_rest("/v1/models/hpt:classify",
                                   {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
                                   {"results": [[["", 2.5]]]}), 0)
    assert item[0] == "classify" and item[4] == [[("", 2.5)]]


def test_gzip_bodies_and_what_cannot_be_logged(decoder: Decoder) -> None:
    args = _rest("/v1/models/hpt:predict", {"instances": [[1.0]]}, {"predictions": [[2.5]]})
    zipped = {**args, "req": gzip.compress(args["req"]), "req_enc": "gzip"}  # type: ignore[arg-type]
    assert decoder.decode(zipped, 0)[1][2]["x"].tolist() == [[1.0]]
    cases = {
        "too_large": {**args, "req_size": len(args["req"]) + 10},  # type: ignore[arg-type]
        "unparsable": {**args, "res": b"{not json"},
        "unknown_signature": _rest("/v1/models/hpt:predict",
                                   {"signature_name": "nope", "instances": [[1.0]]}, {"predictions": [[2.5]]}),
        "not_logged": {**args, "path": "/v1/models/unlogged:predict"},
    }
    for reason, bad in cases.items():
        with pytest.raises(Skip) as info:
            decoder.decode(bad, 0)
        assert info.value.reason == reason


def _grpc(message: bytes, *, compressed: bool = False) -> bytes:
    data = gzip.compress(message) if compressed else message
    return bytes((1 if compressed else 0,)) + len(data).to_bytes(4, "big") + data


def test_grpc_predict_takes_the_version_from_the_answer(decoder: Decoder) -> None:
    req = apis_pb2.PredictRequest()
    req.model_spec.name = "hpt"
    req.inputs["x"].CopyFrom(to_tensor_proto(np.array([[4.0]], dtype=np.float32)))
    res = apis_pb2.PredictResponse()
    res.model_spec.name = "hpt"
    res.model_spec.version.value = 1
    res.model_spec.signature_name = "serving_default"
    res.outputs["y"].CopyFrom(to_tensor_proto(np.array([[4.0]], dtype=np.float32)))
    args = {"model": "hpt", "path": "/tensorflow.serving.PredictionService/Predict", "rid": "g",
            "req": _grpc(req.SerializeToString(), compressed=True), "req_enc": "gzip",
            "res": _grpc(res.SerializeToString()), "version": "2"}
    model, (kind, version, signature, raw_req, raw_res, rid, _) = decoder.decode(args, 0)
    assert (model, kind, version, signature, rid) == ("hpt", "wire", 1, "serving_default", "g")
    # The messages go to the record as sent (inflated), never parsed into tensors here.
    assert bytes(raw_req) == req.SerializeToString() and bytes(raw_res) == res.SerializeToString()
    # An answer without a name or signature: the request's (as the client asked).
    req.model_spec.signature_name = "sig"
    bare = apis_pb2.PredictResponse()
    bare.outputs["y"].CopyFrom(res.outputs["y"])
    bare.model_spec.version.value = 3
    model, item = decoder.decode({**args, "req": _grpc(req.SerializeToString()), "req_enc": None,
                                  "res": _grpc(bare.SerializeToString())}, 0)
    assert (model, item[:3]) == ("hpt", ("wire", 3, "sig"))
    # Not a logged model: nothing; a body that is not a PredictResponse: unparsable.
    other = apis_pb2.PredictResponse()
    other.model_spec.name = "unlogged"
    assert decoder.decode({**args, "res": _grpc(other.SerializeToString())}, 0) is None
    with pytest.raises(Skip) as info:
        decoder.decode({**args, "res": _grpc(b"\x12\x50short")}, 0)
    assert info.value.reason == "unparsable"
    # An error answer (grpc-status in the trailers, no message) is not logged.
    assert decoder.decode({**args, "res": b""}, 0) is None
    assert grpc_message(b"", None) is None



# -- the dense fast path: the same arrays as server.json_tensor's rules, or None -------------------
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}


def _general(doc: dict, dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    from orchestrator.server import json_tensor

    return json_tensor.parse_predict(doc, lambda _s: dtypes)[1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(sorted(_DTYPES)), rank=st.sampled_from([1, 2]),
       rows=st.integers(1, 5), width=st.integers(1, 6), form=st.sampled_from(["instances", "inputs", "named"]))
def test_dense_fast_path_gives_the_general_paths_arrays(data: st.DataObject, dtype: int, rank: int,
                                                        rows: int, width: int, form: str) -> None:
    floats = dtype in (1, 2)
    leaf = (st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32 if dtype == 1 else 64),
                      st.integers(-(2**31), 2**31 - 1))
            if floats else st.integers(-(2**31), 2**31 - 1))
    value = (data.draw(st.lists(leaf, min_size=rows, max_size=rows)) if rank == 1 else
             [data.draw(st.lists(leaf, min_size=width, max_size=width)) for _ in range(rows)])
    doc = json.loads(json.dumps({"instances": value} if form == "instances" else
                                {"inputs": value} if form == "inputs" else {"inputs": {"x": value}}))
    dtypes = {"x": dtype}
    fast = _dense_map(doc, "instances", "inputs", dtypes)
    assert fast is not None
    want = _general(doc, dtypes)
    assert fast["x"].dtype == want["x"].dtype == _DTYPES[dtype]
    assert fast["x"].shape == want["x"].shape
    assert fast["x"].tobytes() == want["x"].tobytes()


def test_dense_fast_path_leaves_everything_else_to_the_general_path() -> None:
    for doc, dtypes in [
        ({"instances": [[[1.0]]]}, {"x": 1}),  # rank 3
        ({"instances": [[1.0, 2.0], [3.0]]}, {"x": 1}),  # ragged
        ({"instances": [[1.0], 2.0]}, {"x": 1}),
        ({"instances": [{"b64": "AAA="}]}, {"x": 7}),  # strings
        ({"instances": ["a"]}, {"x": 1}),
        ({"instances": [True]}, {"x": 10}),  # bool: not a fast dtype
        ({"instances": [{"x": 1.0}]}, {"x": 1}),  # objects of inputs
        ({"instances": [[1.0]]}, {"x": 1, "y": 1}),  # two inputs
        ({"instances": []}, {"x": 1}),
        ({"instances": [[]]}, {"x": 1}),
        ({"inputs": 1.0}, {"x": 1}),  # rank 0
        ({"inputs": {"x": [1.0], "y": [2.0]}}, {"x": 1}),
        ({"inputs": {"y": [1.0]}}, {"x": 1}),
        ({"instances": [2**40]}, {"x": 3}),  # out of int32's range
        ({"instances": [[1.0]], "inputs": [[1.0]]}, {"x": 1}),
        ({"signature_name": "s"}, {"x": 1}),
    ]:
        assert _dense_map(doc, "instances", "inputs", dtypes) is None, doc


def test_dense_rows_decode_through_the_decoder_like_the_general_path(decoder: Decoder) -> None:
    rows = [[0.1, 2, -3.5e-7], [1e30, 0.0, -0.0]]
    _, item = decoder.decode(_rest("/v1/models/hpt:predict", {"instances": [[0.1]]},
                                   {"predictions": rows}), 0)
    assert item[2]["x"].dtype == np.float32 and item[2]["x"].tobytes() == np.float32(0.1).tobytes()
    assert item[3]["y"].dtype == np.float32
    assert item[3]["y"].tobytes() == np.asarray(rows).astype(np.float32).tobytes()
