"""Predict records are put together from wire pieces: they must parse, with upstream's protos, to
exactly the PredictionLog that protobuf messages would have built."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorflow_serving.apis import prediction_log_pb2

from orchestrator.protocol.tensors import to_tensor_proto
from orchestrator.server.payload_log import Counters, LogOptions, ModelLogger


def _expected(model, version, signature, rate, rid, ts, inputs, outputs):  # type: ignore[no-untyped-def]
    pl = prediction_log_pb2.PredictionLog()
    md = pl.log_metadata
    md.model_spec.name = model
    md.model_spec.version.value = version
    md.model_spec.signature_name = signature
    md.sampling_config.sampling_rate = rate
    md.saved_model_tags.append("serve")
    md.timestamp_secs = int(ts)
    md.request_origin = rid
    req = pl.predict_log.request
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(
            type(req.inputs[k]).FromString(to_tensor_proto(v).SerializeToString())
        )
    resp = pl.predict_log.response
    resp.model_spec.CopyFrom(md.model_spec)
    for k, v in outputs.items():
        resp.outputs[k].CopyFrom(
            type(resp.outputs[k]).FromString(to_tensor_proto(v).SerializeToString())
        )
    return pl


CASES = [
    (1, "serving_default", "rid-1", 1_796_000_000.7,
     {"x": np.arange(8, dtype=np.float32).reshape(2, 4)},
     {"y": np.ones((2, 3), np.float32)}),
    (7, "sig", "", 0.0,  # no request id, timestamp 0: both fields absent, as protobuf writes
     {"s": np.array([b"a", b"bc"], dtype=object), "i": np.array([[-1, 2**40]], np.int64)},
     {"empty": np.zeros((0, 3), np.float32), "b": np.array([True, False])}),
    (2**40, "x" * 300, "r" * 200, 12.0,  # long fields: multi-byte lengths
     {"big": np.random.default_rng(0).random((3, 100)).astype(np.float64)},
     {"h": np.ones((1, 2), np.float16)}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=["plain", "strings-empty-no-rid", "long-fields"])
def test_predict_record_parses_to_the_protobuf_built_log(tmp_path: Path, case) -> None:  # type: ignore[no-untyped-def]
    version, signature, rid, ts, inputs, outputs = case
    logger = ModelLogger("m", LogOptions(0.25, str(tmp_path / "p"), 1 << 20), Counters())
    try:
        raw = logger._record((version, signature, inputs, outputs, rid, ts))
    finally:
        logger.close()
    got = prediction_log_pb2.PredictionLog.FromString(raw)
    assert got == _expected("m", version, signature, 0.25, rid, ts, inputs, outputs)
    # and byte for byte where protobuf's own output is deterministic (one tensor per map)
    if len(inputs) == 1 and len(outputs) == 1:
        expected = _expected("m", version, signature, 0.25, rid, ts, inputs, outputs)
        assert raw == expected.SerializeToString()


@pytest.mark.parametrize("case", CASES, ids=["plain", "strings-empty-no-rid", "long-fields"])
def test_wire_record_holds_the_messages_as_sent(tmp_path: Path, case) -> None:  # type: ignore[no-untyped-def]
    """The router's gRPC capture hands over the serialised PredictRequest and PredictResponse:
    the record must parse to the log that protobuf would build around those very messages."""
    from orchestrator.protos import apis_pb2

    version, signature, rid, ts, inputs, outputs = case
    req = apis_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.model_spec.version.value = version  # what a client may send: kept as it is
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(to_tensor_proto(v))
    req.output_filter.extend(sorted(outputs))
    res = apis_pb2.PredictResponse()
    res.model_spec.name = "m"
    res.model_spec.version.value = version
    res.model_spec.signature_name = signature
    for k, v in outputs.items():
        res.outputs[k].CopyFrom(to_tensor_proto(v))
    raw_req, raw_res = req.SerializeToString(), res.SerializeToString()
    logger = ModelLogger("m", LogOptions(0.25, str(tmp_path / "p"), 1 << 20), Counters())
    try:
        raw = logger._record(("wire", version, signature, memoryview(raw_req), raw_res, rid, ts))
    finally:
        logger.close()
    expected = _expected("m", version, signature, 0.25, rid, ts, {}, {})
    expected.predict_log.request.ParseFromString(raw_req)
    expected.predict_log.response.ParseFromString(raw_res)
    assert prediction_log_pb2.PredictionLog.FromString(raw) == expected
    if len(inputs) == 1 and len(outputs) == 1:  # byte for byte where map order cannot differ
        assert raw == expected.SerializeToString()


@pytest.mark.parametrize("case", CASES, ids=["plain", "strings-empty-no-rid", "long-fields"])
def test_grpc_record_keeps_the_request_as_received(tmp_path: Path, case) -> None:  # type: ignore[no-untyped-def]
    """Our gRPC front end hands over the PredictRequest it parsed: the record holds that request
    as the client sent it (its version and output_filter too), the response built as for REST."""
    from orchestrator.protos import apis_pb2

    version, signature, rid, ts, inputs, outputs = case
    req = apis_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.model_spec.version.value = version
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(to_tensor_proto(v))
    req.output_filter.extend(sorted(outputs))
    logger = ModelLogger("m", LogOptions(0.25, str(tmp_path / "p"), 1 << 20), Counters())
    try:
        raw = logger._record((version, signature, req, outputs, rid, ts))
    finally:
        logger.close()
    expected = _expected("m", version, signature, 0.25, rid, ts, {}, outputs)
    expected.predict_log.request.ParseFromString(req.SerializeToString())
    assert prediction_log_pb2.PredictionLog.FromString(raw) == expected


def test_tfrecord_framing_is_what_tensorflows_writer_writes(tmp_path: Path) -> None:
    """The logger frames records itself (one write() per batch): byte for byte what
    tf.io.TFRecordWriter writes, empty and multi-byte-length records included."""
    import tensorflow as tf

    from orchestrator.protocol import tfrecord

    rng = np.random.default_rng(1)
    records = [b"", b"x", rng.bytes(3356), rng.bytes(200_000)]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
        for r in records:
            w.write(r)
    ours = b"".join(tfrecord.frame(r) for r in records)
    assert ours == (tmp_path / "tf.tfrecord").read_bytes()
    assert all(len(tfrecord.frame(r)) == len(r) + tfrecord.OVERHEAD for r in records)


def test_writer_batches_rotate_and_parse(tmp_path: Path) -> None:
    """A batch that crosses the file cap is split at a record boundary: every file parses with
    TF's reader (checksums checked) and holds whole records only, none lost or doubled."""
    import tensorflow as tf

    logger = ModelLogger("m", LogOptions(1.0, str(tmp_path / "m"), 256 * 1024), Counters())
    try:
        inputs = {"x": np.zeros((1, 2000), np.float32)}  # ~8 KB a record, files of 64 KiB
        logger._write([(1, "s", inputs, {"y": np.full((1, 1), i, np.float32)}, f"r{i}", 1.0)
                       for i in range(20)])  # fmt: skip
    finally:
        logger.close()
    files = sorted(tmp_path.glob("m-*.tfrecord"))
    assert len(files) >= 2
    seen = []
    for f in files:
        assert f.stat().st_size <= 64 * 1024
        for raw in tf.data.TFRecordDataset(str(f)):
            rec = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            seen.append(rec.log_metadata.request_origin)
    assert seen == [f"r{i}" for i in range(20)]
    assert logger.counters.written["m"] == 20
